"""The shared driver (Rollout.serve) on the real embedded engine: batches from many callers in
the same forward passes, and one caller's failure confined to that caller."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.conftest import required_module

from perfbox.inference.rollout import Rollout
from perfbox.inference.rollout_types import Mode, RolloutConfig, TaskSample
from perfbox.inference.task_tools import Binding
from perfbox.inference.tool_call_parser import parse_call
from perfbox.inference.workload import Trajectory

required_module("llama_cpp", "PERFBOX_REQUIRE_LLAMA")
from perfbox.inference.engines.llama_cpp import LlamaCppEngine  # noqa: E402


@pytest.fixture(scope="module")
def served() -> Iterator[Rollout]:
    engine = LlamaCppEngine(num_slots=4, ctx_per_seq=1024, threads=2)
    rollout = Rollout(engine, lambda call: None, RolloutConfig(mode=Mode.RESIDENT, forced=False),
                      template=engine.chat_format())
    thread = threading.Thread(target=rollout.serve, daemon=True)
    thread.start()
    yield rollout
    rollout.cancel()
    thread.join(timeout=30)
    engine.close()


def trajectories(rollout: Rollout, name: str, count: int) -> list[Trajectory]:
    prompt = rollout.engine.tokenize(rollout.template.render(
        [{"role": "user", "content": f"Say something about {name}."}]))
    return [Trajectory(f"{name}/{k}", "", [], "", task=TaskSample(
        f"{name}/{k}", prompt, Binding(name), max_new_tokens=16, max_turns=1, seed=k))
        for k in range(count)]


def test_a_failing_trajectory_fails_its_own_batch_only(served: Rollout,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injected (a fake: no model output reaches this on demand): the bookkeeping of
    one caller's sequence raises. That caller's batch fails with the error; the other
    caller's batch, in the same forward passes, finishes; the driver serves on."""
    real = served._after_decode

    def faulty(seq, predicted, logprob):  # type: ignore[no-untyped-def]
        if seq.public_id == "bad/0" and len(seq.response_ids) == 3:
            raise RecursionError("injected")
        return real(seq, predicted, logprob)

    monkeypatch.setattr(served, "_after_decode", faulty)
    good = served.submit(trajectories(served, "good", 2), lambda kind, data: None)
    bad = served.submit(trajectories(served, "bad", 2), lambda kind, data: None)
    with pytest.raises(RecursionError, match="injected"):
        bad.result(timeout=300)
    stats = good.result(timeout=300)
    assert len(stats.results) == 2 and all(r.response_ids for r in stats.results)
    monkeypatch.setattr(served, "_after_decode", real)
    again = served.submit(trajectories(served, "again", 1), lambda kind, data: None)
    assert len(again.result(timeout=300).results) == 1
    assert served.live_sequences() == 0 and served.kv_slots_in_use() == 0


def test_a_batch_reusing_running_ids_is_refused_alone(served: Rollout) -> None:
    """KV is held and evicted by trajectory id: a batch repeating an id, or reusing one that
    is running, is refused (the first at submit, the second by the driver), and the running
    batch finishes untouched."""
    with pytest.raises(ValueError, match="repeat in one batch"):
        served.submit(trajectories(served, "twin", 1) * 2, lambda kind, data: None)
    first = served.submit(trajectories(served, "same", 2), lambda kind, data: None)
    second = served.submit(trajectories(served, "same", 2), lambda kind, data: None)
    with pytest.raises(ValueError, match="already running: same/0"):
        second.result(timeout=300)
    assert len(first.result(timeout=300).results) == 2
    assert served.live_sequences() == 0 and served.kv_slots_in_use() == 0


def test_hostile_call_bodies_are_malformed_calls_not_errors() -> None:
    deep = '{"name": "check", "arguments": ' + '{"a": ' * 1000 + "1" + "}" * 1001
    huge_int = '{"name": "check", "arguments": {"n": ' + "9" * 5000 + "}}"
    surrogate = '{"name": "check\\ud800", "arguments": {}}'
    for body in (deep, huge_int, surrogate, "[" * 100000):
        assert parse_call(body) is None
    assert parse_call('{"name": "check", "arguments": {"submission": "x"}}') is not None
