"""The docker isolation backend: every job in a container of its own, through the Docker API
(the `docker` SDK; Docker itself, or podman's Docker-compatible service).

A slot's worker is a container running the zygote (not isolated inside: the container is the
sandbox) that serves exactly one job and is then removed; the slot starts the next container
while nothing waits for it, so a job rarely pays for the start. Each container has no network,
a read-only root filesystem with a size-limited tmpfs workspace, every capability dropped,
no-new-privileges, an unprivileged user, pids/memory/CPU limits, explicit nofile/nproc ulimits
(runc cannot raise them past the service's own) and the node's GPUs through a device request.
The frames travel over a unix socket in a per-container directory the server binds in, since
the Docker attach stream multiplexes stdout and stderr.

Containers carry the label `perfbox.server=<id>`: a server removes its own on stop and, at
start, any a crashed predecessor left behind (`remove_stale`).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfbox.sandbox import bwrap
from perfbox.sandbox.worker import WorkerDied, WorkerProcess
from perfbox.sandbox.worker_protocol import ReadyFrame

log = logging.getLogger(__name__)
LABEL = "perfbox.server"
PID_LABEL = "perfbox.pid"
CONTROL_DIR = "/run/perfbox"  # where a container sees its control socket
SANDBOX_UID = 65534
# The container starts as root only to open its workspace (a tmpfs comes up root-owned 0755:
# podman's Docker API ignores the tmpfs mode option) and then becomes the sandbox user for
# good, with an empty bounding set: the zygote and every job run without any capability.
_DROP = ('chmod 1777 /tmp && exec setpriv --reuid={uid} --regid={uid} --clear-groups '
         '--bounding-set=-all --inh-caps=-all -- "$@"').format(uid=SANDBOX_UID)
_ROOT_PHASE_CAPS = ["SETUID", "SETGID", "SETPCAP"]  # what setpriv needs, gone after it
HOST_SYSTEM_PATHS = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc/alternatives",
                     "/etc/ld.so.cache", "/etc/ssl/certs")


class DockerUnavailable(RuntimeError):
    """The docker SDK or the Docker API endpoint is missing; the message says what to do."""


@dataclass
class DockerSettings:
    """How the server makes job containers."""

    url: str = ""  # the Docker API endpoint; "" reads DOCKER_HOST, else the default socket
    image: str = "ghcr.io/perfbox/perfbox:0.1.0"  # has perfbox and the toolkit (deploy/)
    python: str = "/opt/perfbox/bin/python"  # the interpreter inside the image
    bind_host: bool = False  # run this host's Python and toolkit read-only instead (dev, CI)
    cpus: float = 1.0  # CPU limit per container
    memory_bytes: int = 0  # 0: the job's memory limit plus the worker's own need
    pids: int = 0  # 0: the job's process limit plus slack
    tmpfs_bytes: int = 1 << 30  # the workspace (/tmp) size
    nofile: int = 4096
    start_timeout_s: float = 60.0  # for the container's worker to dial back
    env: dict[str, str] = field(default_factory=dict)


def connect(url: str) -> Any:
    try:
        import docker
    except ImportError as e:
        raise DockerUnavailable("the docker backend needs the docker SDK: "
                                "pip install 'perfbox[docker]'") from e
    try:
        client = docker.DockerClient(base_url=url) if url else docker.from_env()
        client.ping()
    except Exception as e:  # DockerException, requests errors: the endpoint is not there
        raise DockerUnavailable(f"no Docker API at {url or os.environ.get('DOCKER_HOST') or 'the default socket'}: {e}. "
                                "Start Docker, or podman's service (podman system service), "
                                "and pass --docker-url") from e
    return client


def remove_stale(client: Any, server_id: str | None = None) -> int:
    """Removes this server's job containers; with no server_id, those of perfbox servers on
    this host that no longer run (their `perfbox.pid` is gone), as after a crash."""
    label = f"{LABEL}={server_id}" if server_id else LABEL
    removed = 0
    for container in client.containers.list(all=True, filters={"label": label}):
        if server_id is None and _server_alive(container.labels.get(PID_LABEL, "")):
            continue
        try:
            container.remove(force=True)
            removed += 1
        except Exception as e:  # already gone
            log.debug("removing %s: %s", container.id, e)
    return removed


def _server_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class ContainerWorker(WorkerProcess):
    """A WorkerProcess whose process is a container; one job, then it is removed."""

    def __init__(self, slot: int, client: Any, settings: DockerSettings, server_id: str,
                 runtime_dir: Path, preload: list[str], job_memory_bytes: int,
                 job_processes: int, gpus: bool) -> None:
        super().__init__(slot, isolate=False, layout=None, cgroup=None, preload=preload,
                         warm_up=False)
        self.client, self.settings, self.server_id = client, settings, server_id
        self.runtime_dir = runtime_dir
        self.job_memory_bytes, self.job_processes, self.gpus = (job_memory_bytes, job_processes,
                                                                gpus)
        self.container: Any = None
        self._dir: Path | None = None
        self._listener: socket.socket | None = None
        self._channel: socket.socket | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix=f"w{self.slot}-", dir=self.runtime_dir))
        os.chmod(self._dir, 0o755)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self._dir / "ctrl.sock"))
        os.chmod(self._dir / "ctrl.sock", 0o666)  # the container's unprivileged user dials it
        self._listener.listen(1)
        try:
            self.container = self.client.containers.run(**self._spec(), detach=True)
            self._listener.settimeout(self.settings.start_timeout_s)
            self._channel, _ = self._listener.accept()
        except Exception as e:
            said = self._last_words()
            self.kill()
            raise WorkerDied(f"{self.name}: the container did not start: {e}"
                             + (f"; it said: {said}" if said else "")) from e
        self._channel.setblocking(True)
        ready = self.read_frame(timeout_s=120)
        if not isinstance(ready, ReadyFrame):
            raise WorkerDied(f"{self.name} sent {ready.KIND!r} instead of ready")
        self.import_ms = ready.import_ms

    def _spec(self) -> dict[str, Any]:
        from docker.types import DeviceRequest, Ulimit

        s = self.settings
        python = sys.executable if s.bind_host else s.python
        command = ["/bin/sh", "-c", _DROP, "perfbox-worker", python, "-I", "-B", "-m",
                   "perfbox.sandbox.zygote", "--connect", f"{CONTROL_DIR}/ctrl.sock",
                   "--preload", ",".join(self.preload)]
        volumes = {str(self._dir): {"bind": CONTROL_DIR, "mode": "rw"}}
        env = {"HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
               "PYTHONDONTWRITEBYTECODE": "1", "TRITON_CACHE_DIR": "/tmp/.triton"}
        if s.bind_host:
            layout = bwrap.default_layout()
            env.update({k: v for k, v in layout.env.items() if k not in ("HOME",)})
            for path in [*HOST_SYSTEM_PATHS, *layout.ro_paths]:
                if Path(path).exists():
                    volumes[path] = {"bind": path, "mode": "ro"}
        env.update(s.env)
        processes = s.pids or self.job_processes + 64
        memory = s.memory_bytes or self.job_memory_bytes + (1 << 30)
        spec: dict[str, Any] = dict(
            image=s.image, command=command, user="0:0", environment=env, hostname="job",
            volumes=volumes, working_dir="/tmp", network_mode="none", read_only=True,
            tmpfs={"/tmp": f"size={s.tmpfs_bytes},mode=1777"}, cap_drop=["ALL"],
            cap_add=_ROOT_PHASE_CAPS,
            security_opt=["no-new-privileges"], pids_limit=processes, mem_limit=memory,
            memswap_limit=memory, nano_cpus=int(s.cpus * 1e9),
            ulimits=[Ulimit(name="nofile", soft=s.nofile, hard=s.nofile),
                     Ulimit(name="nproc", soft=processes, hard=processes)],
            labels={LABEL: self.server_id, PID_LABEL: str(os.getpid()),
                    "perfbox.slot": str(self.slot)},
            name=f"perfbox-{self.server_id}-w{self.slot}-{Path(str(self._dir)).name}",
        )
        if self.gpus:
            spec["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        return spec

    @property
    def alive(self) -> bool:
        if self.container is None or self._channel is None:
            return False
        try:
            self.container.reload()
        except Exception:  # the API or the container gone, whatever the client raises: dead
            return False
        return bool(self.container.status == "running")

    # -- the channel: a socket instead of pipes ----------------------------------------------

    def _fd_in(self) -> int:
        if self._channel is None:
            raise WorkerDied(f"{self.name} has no channel")
        return self._channel.fileno()

    _fd_out = _fd_in

    def _last_words(self) -> str:
        """The tail of the container's output, for an error that says why it failed."""
        if self.container is None:
            return ""
        try:
            return str(self.container.logs(tail=10).decode(errors="replace").strip())[-800:]
        except Exception:  # best effort: last words for an error message
            return ""

    def _exit_description(self) -> str:
        try:
            self.container.reload()
            code = self.container.attrs["State"].get("ExitCode")
            return f"container {self.container.status}, exit {code}"
        except Exception:  # best effort, for an error message
            return "container gone"

    def kill(self) -> None:
        """Removes the container (whatever state it is in) and its control directory."""
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception as e:
                log.debug("%s: removing container: %s", self.name, e)
            self.container = None
        for sock in (self._channel, self._listener):
            if sock is not None:
                sock.close()
        self._channel = self._listener = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
