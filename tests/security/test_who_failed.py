"""Statuses say who failed: the submission (RUNTIME_ERROR, WRONG_ANSWER), the caller's problem
(REJECTED, naming the reference), the node (UNAVAILABLE_HERE), the tool's own memory
(MEMORY_LIMIT naming the tool); INTERNAL_ERROR is never the answer to any of them."""

from __future__ import annotations

from pathlib import Path

from perfbox.tools.types import Status
from tests.security.problems import honest, model_new, run, variant


def test_a_tensor_subclass_output_is_the_submissions_runtime_error(tmp_path: Path) -> None:
    source = honest("relu.py", prelude="class Lazy(torch.Tensor):\n    pass",
                    forward="return torch.relu(x).as_subclass(Lazy)")
    out = run(tmp_path, "check", "relu.py", source)
    assert out.status == Status.RUNTIME_ERROR and "plain tensors" in out.error


def test_a_cuda_only_reference_on_a_cpu_node_is_unavailable_here(tmp_path: Path) -> None:
    ref = variant("relu.py", "return [x]", "return [x.cuda()]")
    out = run(tmp_path, "check", ref, model_new("", "return torch.relu(x)"))
    assert out.status == Status.UNAVAILABLE_HERE and "CUDA" in out.error


def test_the_tool_running_out_of_memory_building_inputs_names_the_tool(tmp_path: Path) -> None:
    # fault injection: a real allocation failure of this kind cannot be produced on demand
    # without starving the test machine, so get_inputs raises the MemoryError it would raise
    ref = variant("relu.py", "x = torch.rand(batch_size, dim)", "raise MemoryError()")
    out = run(tmp_path, "check", ref, model_new("", "return torch.relu(x)"))
    assert out.status == Status.MEMORY_LIMIT and "tool" in out.error


def test_a_reference_that_raises_is_the_callers_bad_request(tmp_path: Path) -> None:
    ref = variant("relu.py", "return torch.relu(x)", "return undefined_name")
    out = run(tmp_path, "check", ref, model_new("", "return torch.relu(x)"))
    assert out.status == Status.REJECTED and "the reference raised NameError" in out.error
