"""Task lines and task checks (no engine): what `perfbox rollout --tasks` reads, what the
worker refuses, how a tool's output is fitted into the context, which kernel is rewarded."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfbox import tools
from perfbox.api.v1 import tools_pb2 as pb
from perfbox.inference import tasks as T
from perfbox.inference.rollout_types import CallRecord, TrajectoryResult
from perfbox.inference.final_kernel import Candidate, final_candidate
from perfbox.inference.task_tools import TRUNCATED, Binding, TaskTools
from perfbox.inference.tool_call_parser import ToolCall

SCHEMAS = {name: tools.function_schema(spec) for name, spec in tools.TOOLS.items()}
LINE = {"id": "t1", "messages": [{"role": "user", "content": "speed it up"}],
        "problem": {"reference": "class Model: ..."}, "tools": ["compile", "check"],
        "sampling": {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64, "max_turns": 3,
                     "seed": 5}, "group_size": 4, "reward": True, "extra": "ignored"}


def test_a_task_line_becomes_a_spec_with_defaults_filled() -> None:
    spec = T.from_proto(T.proto_from_json(LINE))
    assert spec.id == "t1" and spec.group_size == 4 and spec.reward == "default"
    assert spec.sampling.temperature == pytest.approx(0.7)
    assert spec.sampling.top_p == pytest.approx(0.9) and spec.sampling.seed == 5
    assert spec.tool_output_tokens == T.DEFAULT_TOOL_OUTPUT_TOKENS
    assert T.problems(spec, SCHEMAS, ("correct_speedup",)) == []
    bare = T.from_proto(T.proto_from_json({"id": "x", "messages": LINE["messages"]}))
    assert bare.sampling.top_p == 1.0 and bare.sampling.seed is None and bare.reward == ""
    assert bare.sampling.max_new_tokens == T.DEFAULT_MAX_NEW_TOKENS


@pytest.mark.parametrize("line, words", [
    ([], "a task must be dict"),
    ({"id": "x", "messages": "hi"}, "messages must be list"),
    ({"id": "x", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"id": "x", "sampling": {"max_turns": -1}}, "sampling.max_turns must be 0 or more"),
    ({"id": "x", "sampling": {"seed": "7"}}, "sampling.seed must be int"),
    ({"id": "x", "group_size": True}, "group_size must be int"),
    ({"id": "x", "reward": 3}, "reward must be str"),
])
def test_a_malformed_line_names_the_field(line: object, words: str) -> None:
    with pytest.raises(T.TaskFormatError, match=None) as e:
        T.proto_from_json(line, 7)
    assert str(e.value).startswith("line 7: ") and words in str(e.value)


def test_problem_bound_tools_and_rewards_need_the_reference() -> None:
    spec = T.from_proto(T.proto_from_json({**LINE, "problem": {}}))
    found = T.problems(spec, SCHEMAS, ("correct_speedup",))
    assert any(p.startswith("problem.reference: check") for p in found)
    assert any(p.startswith("reward:") for p in found)
    compile_only = T.from_proto(T.proto_from_json({**LINE, "problem": {}, "tools": ["compile"],
                                                   "reward": False}))
    assert T.problems(compile_only, SCHEMAS, ()) == []


class CharTokens:
    """A tokenizer of one token per character: the fitting rule in countable units."""

    @staticmethod
    def tokenize(text: str) -> list[int]:
        return [ord(c) for c in text]

    @staticmethod
    def detokenize(tokens: list[int]) -> str:
        return "".join(map(chr, tokens))


def test_tool_output_puts_the_summary_first_and_cuts_to_the_budget() -> None:
    bridge = TaskTools(None, CharTokens.tokenize, CharTokens.detokenize)  # type: ignore[arg-type]
    result = pb.ToolResult(status=pb.COMPILE_ERROR, summary="kernel.cu:3: expected ';'",
                           error="nvcc failed", stderr="x" * 500)
    roomy = bridge.model_text(result, 2000)
    assert roomy.startswith("COMPILE_ERROR: kernel.cu:3: expected ';'\nerror: nvcc failed\n"
                            "stderr:\n")
    assert roomy.endswith("x" * 500)
    tight = bridge.model_text(result, 120)
    assert tight.startswith("COMPILE_ERROR: kernel.cu:3: expected ';'\nerror: nvcc failed")
    assert tight.endswith(TRUNCATED) and len(tight) <= 120
    tiny = bridge.model_text(result, 60)  # the summary itself is cut, marker kept
    assert tiny.endswith(TRUNCATED) and tiny.startswith("COMPILE")


def test_calls_outside_the_task_or_its_schema_come_back_as_text() -> None:
    bridge = TaskTools(None, CharTokens.tokenize, CharTokens.detokenize)  # type: ignore[arg-type]
    binding = Binding("s", {"check": SCHEMAS["check"]}, {"reference.py": "class Model: ..."},
                      "new.py", 400)
    out = bridge.run(ToolCall("profile", {"submission": "x"}, ""), binding)
    assert out.status == "NOT_ALLOWED" and "tools: check" in out.text
    out = bridge.run(ToolCall("check", {"code": "x"}, ""), binding)
    assert out.status == "BAD_CALL" and "needs 'submission'" in out.text
    out = bridge.run(ToolCall("", {}, "{not json"), binding)
    assert out.status == "NOT_ALLOWED"
    request = bridge.request(ToolCall("check", {"submission": "class ModelNew: ..."}, ""),
                             binding)
    assert isinstance(request, pb.ToolRequest)
    assert {f.name: f.content for f in request.files} == {
        "reference.py": "class Model: ...", "new.py": "class ModelNew: ..."}


def _result(calls: list[CallRecord], text: str) -> TrajectoryResult:
    return TrajectoryResult("t/0", 1.0, 10, 0, 0, 0, "", [], calls, [], text)


def test_the_rewarded_kernel_is_the_last_one_submitted() -> None:
    calls = [CallRecord("check", "WRONG_ANSWER", 1, 1, False, {"submission": "v1"}, "i1"),
             CallRecord("compile", "OK", 1, 1, False, {"source": "k"}, "i2"),
             CallRecord("check", "OK", 1, 1, False, {"submission": "v2"}, "i3")]
    assert final_candidate(_result(calls, "")) == Candidate("v2", 3)
    block = "```python\nclass ModelNew: pass\n```"
    assert final_candidate(_result([], "done:\n" + block)).source == "class ModelNew: pass\n"
    # a code block the worker inserted (a tool output) is not the model's kernel
    inserted = CallRecord("compile", "OK", 1, 1, False, {"source": "k"}, block)
    assert final_candidate(_result([inserted], "x" + block)) is None


GPU_MODE = Path(__file__).resolve().parents[1] / "fixtures" / "gpumode" / "vectoradd"


def test_a_gpu_mode_task_binds_its_files_and_takes_the_submission_beside_them() -> None:
    files = {n: (GPU_MODE / n).read_text() for n in ("reference.py", "task.yml", "task.py",
                                                     "utils.py")}
    line = {**LINE, "problem": {"name": "vectoradd", "files": files}}
    spec = T.from_proto(T.proto_from_json(line))
    assert T.problems(spec, SCHEMAS, ("correct_speedup",)) == []
    bound, submission_file = spec.problem()
    assert bound == files and submission_file == "submission.py"
    bridge = TaskTools(None, CharTokens.tokenize, CharTokens.detokenize)  # type: ignore[arg-type]
    request = bridge.request(ToolCall("check", {"submission": "def custom_kernel(d): ..."}, ""),
                             Binding("s", {"check": SCHEMAS["check"]}, bound, submission_file))
    assert isinstance(request, pb.ToolRequest)
    assert {f.name for f in request.files} == {*files, "submission.py"}
    assert request.check.submission_file == "submission.py"
    both = T.from_proto(T.proto_from_json({**line, "problem": {"reference": "x", "files": files}}))
    assert any("not both" in p for p in T.problems(both, SCHEMAS, ()))
    partial = T.from_proto(T.proto_from_json({**line, "problem": {"files": {
        "task.py": "x", "submission.py": "y"}}}))
    found = " ".join(T.problems(partial, SCHEMAS, ()))
    assert "needs reference.py, task.yml" in found and "'submission.py'" in found
