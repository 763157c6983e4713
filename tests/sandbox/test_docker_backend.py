"""The docker backend against a real Docker API (podman's service, started by the tests/CI):
jobs run in hardened containers, one job per container, and no container outlives its job,
a cancellation, a timeout, the server, or a crashed server."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient
from perfbox.sandbox import docker_backend as D
from tests.conftest import (TEST_IMAGE, cuda_request, docker_url, start_docker_server,
                            start_spinning_job, wait_until)


def _containers(url: str, server_id: str | None = None) -> list:
    client = D.connect(url)
    label = f"{D.LABEL}={server_id}" if server_id else D.LABEL
    return client.containers.list(all=True, filters={"label": label})




def test_jobs_run_in_hardened_containers_removed_after_each_job(tmp_path: Path) -> None:
    url = docker_url()
    server, port = start_docker_server(tmp_path, workers=1, preload=())
    try:
        with ToolClient(f"127.0.0.1:{port}", timeout_s=120) as client:
            running = start_spinning_job(client, server, wall_time_ms=4000)
            (container,) = _containers(url, server.backend.server_id)
            host = container.attrs["HostConfig"]
            assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
            dropped = {c.upper().removeprefix("CAP_") for c in host["CapDrop"] or []}
            added = {c.upper().removeprefix("CAP_") for c in host["CapAdd"] or []}
            # Docker reports ALL; podman lists every default capability instead
            assert "ALL" in dropped or dropped >= {"CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL",
                                                   "NET_RAW", "SYS_CHROOT", "MKNOD"}
            assert added <= {"SETUID", "SETGID", "SETPCAP"}  # for setpriv, dropped by it
            assert any("no-new-privileges" in opt for opt in host["SecurityOpt"])
            assert host["PidsLimit"] > 0 and host["Memory"] > 0 and host["NanoCpus"] > 0
            names = {u["Name"].lower().removeprefix("rlimit_") for u in host["Ulimits"]}
            assert names >= {"nofile", "nproc"}
            assert "/tmp" in host["Tmpfs"]
            first = container.id
            assert running.result().status == pb.TIMEOUT
            # the container that ran the job is gone; a fresh one waits for the next job
            wait_until(lambda: first not in [c.id for c in _containers(url, server.backend.server_id)])
            assert client.run(cuda_request(no_cache=True)).status == pb.OK
            wait_until(lambda: len(_containers(url, server.backend.server_id)) <= 1)
    finally:
        server.stop(grace_s=1)
    assert _containers(url, server.backend.server_id) == []  # none outlives the server


def test_a_cancelled_job_leaves_no_container(tmp_path: Path) -> None:
    url = docker_url()
    server, port = start_docker_server(tmp_path, workers=1, preload=())
    try:
        with ToolClient(f"127.0.0.1:{port}", timeout_s=120) as client:
            future = start_spinning_job(client, server, request_id="to-cancel")
            job_container = _containers(url, server.backend.server_id)[0].id
            assert client.cancel(request_id="to-cancel").cancelled
            assert future.result().status == pb.CANCELLED
            wait_until(lambda: job_container not in [c.id for c in _containers(url, server.backend.server_id)])
    finally:
        server.stop(grace_s=1)
    assert _containers(url, server.backend.server_id) == []


def test_containers_of_a_crashed_server_are_removed_at_the_next_start(tmp_path: Path) -> None:
    url = docker_url()
    client = D.connect(url)
    # what a SIGKILLed server leaves: a container labelled with a pid that no longer runs
    orphan = client.containers.create(TEST_IMAGE, ["/bin/true"], labels={
        D.LABEL: "crashed", D.PID_LABEL: "999999999"}, volumes={"/bin": {"bind": "/bin",
                                                                        "mode": "ro"}})
    server, _ = start_docker_server(tmp_path, workers=1, preload=())
    try:
        assert orphan.id not in [c.id for c in _containers(url)]
    finally:
        server.stop(grace_s=1)


def test_no_docker_api_is_a_clear_error() -> None:
    with pytest.raises(D.DockerUnavailable, match="no Docker API at unix:///nonexistent"):
        D.connect("unix:///nonexistent/docker.sock")


def test_a_container_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    """An image without what the worker needs (the bare test image, not bound to the host):
    the call fails saying why, the server stays up, and nothing is left behind."""
    from perfbox.sandbox.docker_backend import DockerSettings

    url = docker_url()
    server, port = start_server_with(tmp_path, DockerSettings(
        url=url, image=TEST_IMAGE, python="/nonexistent/python", start_timeout_s=5))
    try:
        with ToolClient(f"127.0.0.1:{port}", timeout_s=120) as client:
            result = client.run(cuda_request(no_cache=True))
            assert result.status == pb.INTERNAL_ERROR
            error = result.error.lower()
            assert "did not start" in error, result.error
            assert "not found" in error or "no such file" in error, result.error
            assert client.health() == "SERVING"
    finally:
        server.stop(grace_s=1)
    assert _containers(url, server.backend.server_id) == []


def start_server_with(tmp_path: Path, settings) -> tuple:
    from tests.conftest import start_server

    return start_server(tmp_path, backend="docker", docker=settings, workers=1, preload=())
