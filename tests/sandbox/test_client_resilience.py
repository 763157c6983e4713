"""The client a training job uses, against real servers: calls balanced over several nodes and
a node lost mid-run. (A batch surviving its server's restart: tests/sandbox/test_faults.py.)"""

from __future__ import annotations

from pathlib import Path


from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient, make_request
from tests.conftest import requires_bwrap, start_server

KERNEL = "__global__ void k{n}(float* x) {{ x[threadIdx.x] *= {n}.0f; }}\n"


def _compile(n: int, request_id: str = "") -> pb.ToolRequest:
    return make_request("compile", {f"k{n}.cu": KERNEL.format(n=n)}, archs=["sm_90"],
                        request_id=request_id)


def _rpcs(server) -> float:
    return sum(s.value for f in server.metrics.registry.collect() if f.name == "perfbox_rpcs"
               for s in f.samples if s.name.endswith("_total"))


@requires_bwrap
def test_calls_are_balanced_over_nodes_and_survive_losing_one(tmp_path: Path) -> None:
    a, port_a = start_server(tmp_path / "a", workers=1, preload=())
    b, port_b = start_server(tmp_path / "b", workers=1, preload=())
    try:
        with ToolClient(f"ipv4:127.0.0.1:{port_a},127.0.0.1:{port_b}", timeout_s=120) as c:
            c.wait_ready()
            for n in range(12):
                assert c.run(_compile(n % 3)).status == pb.OK
            assert _rpcs(a) >= 3 and _rpcs(b) >= 3  # both nodes served (round robin)
            a.stop(grace_s=1)
            for n in range(6):  # node a is gone: its share is retried on b
                assert c.run(_compile(n % 3)).status == pb.OK
    finally:
        a.stop(grace_s=1)
        b.stop(grace_s=1)
