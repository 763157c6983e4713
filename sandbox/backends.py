"""The tool server's isolation backends, by name: what a worker runs in, and what a server must
set up and tear down for it. The server picks one from `BACKENDS` (`--backend`); nothing else
in the sandbox tests the backend's name.

- `bwrap` (default): a warm zygote per slot in a bubblewrap sandbox (own user, pid, mount,
  network namespaces, read-only system), each job forked into fresh namespaces of its own;
  host cgroups bound each slot's memory and processes where the host has them.
- `docker`: a container per job through the Docker API (podman's works), hardened (no network,
  read-only root, capabilities dropped); the container bounds memory and processes itself.
- `process`: a bare zygote with no isolation, for development only (refused unless
  `allow_unsafe_process_backend`).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from perfbox.sandbox import bwrap
from perfbox.sandbox.cgroup import WorkerCgroup
from perfbox.sandbox.worker import WorkerProcess

if TYPE_CHECKING:
    from perfbox.sandbox.config import ServerConfig

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str
    isolated: bool  # submissions are sandboxed (False: development only, refused by default)
    host_cgroups: bool  # jobs are bounded by cgroups the server makes on this host
    one_job_per_worker: bool  # a worker serves one job; the slot starts the next as one ends

    def make_worker(self, slot: int, cgroup: WorkerCgroup | None) -> WorkerProcess:
        """An unstarted worker for slot `slot` (in `cgroup` where the backend uses them)."""
        ...

    def close(self) -> None:
        """Removes what the backend's workers may have left behind."""
        ...


class _ZygoteBackend:
    """A warm zygote per slot, sandboxed by bubblewrap or bare."""

    host_cgroups = True
    one_job_per_worker = False
    isolated = False

    def __init__(self, config: ServerConfig, runtime_dir: Path) -> None:
        self.config = config
        self.layout: bwrap.BwrapLayout | None = None

    def make_worker(self, slot: int, cgroup: WorkerCgroup | None) -> WorkerProcess:
        return WorkerProcess(slot, self.isolated, self.layout, cgroup, list(self.config.preload),
                             warm_up=self.config.warm, nice=self.config.nice)

    def close(self) -> None:
        pass


class BwrapBackend(_ZygoteBackend):
    name = "bwrap"
    isolated = True

    def __init__(self, config: ServerConfig, runtime_dir: Path) -> None:
        super().__init__(config, runtime_dir)
        bwrap.find_bwrap()
        self.layout = bwrap.default_layout()
        self.layout.etc_dir = str(runtime_dir / "etc")  # per server: its slots' users
        bwrap.write_etc(Path(self.layout.etc_dir), config.workers)


class ProcessBackend(_ZygoteBackend):
    name = "process"


class DockerBackend:
    """A hardened container per job; leftovers of this server (or of a stopped one) are
    removed at start and stop."""

    name = "docker"
    isolated = True
    host_cgroups = False  # containers have their own
    one_job_per_worker = True

    def __init__(self, config: ServerConfig, runtime_dir: Path) -> None:
        from perfbox.sandbox import docker_backend as D
        from perfbox.sandbox.device import gpu_count

        self.config, self.runtime_dir = config, runtime_dir
        self.docker: Any = D.connect(config.docker.url)
        self.server_id = secrets.token_hex(6)  # labels this server's containers
        removed = D.remove_stale(self.docker)
        if removed:
            log.warning("removed %d job containers a stopped perfbox server left behind", removed)
        self._gpus = gpu_count() > 0

    def make_worker(self, slot: int, cgroup: WorkerCgroup | None) -> WorkerProcess:
        from perfbox.sandbox import docker_backend as D

        limits = self.config.default_limits
        return D.ContainerWorker(slot, self.docker, self.config.docker, self.server_id,
                                 self.runtime_dir, list(self.config.preload),
                                 limits.memory_bytes, limits.max_processes, self._gpus)

    def close(self) -> None:
        from perfbox.sandbox.docker_backend import remove_stale

        remove_stale(self.docker, self.server_id)  # whatever a race left running


BACKENDS: dict[str, type[BwrapBackend] | type[DockerBackend] | type[ProcessBackend]] = {
    "bwrap": BwrapBackend, "docker": DockerBackend, "process": ProcessBackend}
