"""check and bench run the confined, frozen submission inside each isolation backend's job
(bubblewrap, and a container through the Docker API): the harness's seccomp filter, pidfds,
/proc/PID/mem reads and memfd regions must work there, and an attack must end the same way."""

from __future__ import annotations

from typing import Iterator

import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient, make_request
from tests.security.problems import LEVEL1, honest


@pytest.fixture(params=["bwrap", "docker"])
def backend_client(request: pytest.FixtureRequest) -> Iterator[ToolClient]:
    target = request.getfixturevalue("server" if request.param == "bwrap" else "docker_server")
    with ToolClient(f"127.0.0.1:{target[1]}", timeout_s=300) as c:
        yield c


def _request(tool: str, forward: str | None = None, **options: object) -> pb.ToolRequest:
    files = {"new.py": honest("relu.py", forward=forward),
             "reference.py": (LEVEL1 / "relu.py").read_text()}
    request = make_request(tool, files, language="kernelbench", reference_file="reference.py",
                           submission_file="new.py", **options)
    request.limits.wall_time_ms = 120_000
    return request


def test_check_and_bench_in_each_backend(backend_client: ToolClient) -> None:
    result = backend_client.run(_request("check"), timeout_s=300)
    assert result.status == pb.OK, result.summary + result.stderr[-800:]
    result = backend_client.run(_request("bench", time_budget_s=1.0), timeout_s=300)
    assert result.status == pb.OK, result.summary + result.stderr[-800:]
    assert result.bench.verified_outputs >= 8 and result.bench.speedup_ci_high > 0


def test_a_skipped_call_is_caught_in_each_backend(backend_client: ToolClient) -> None:
    forward = ("self.n = getattr(self, 'n', 0) + 1\n"
               "return torch.relu(x) if self.n < 12 else torch.zeros_like(x)")
    result = backend_client.run(_request("bench", forward, time_budget_s=1.0), timeout_s=300)
    assert result.status == pb.WRONG_ANSWER, result.summary
