"""The bubblewrap sandbox a warm worker lives in.

What the worker (and so every job) can see: /usr and the library symlinks, the Python
installation and the perfbox code, a few files of /etc (no shadow, no credentials), GPU device
nodes when the node has them, an empty /job, tmpfs /tmp, a private /proc and a minimal /dev.
Nothing of the server's environment. No network namespace peers, not even loopback to the host.

Started by root, bubblewrap builds the sandbox with real privileges, then `setpriv` drops to an
unprivileged uid with no capabilities (a root-started bwrap with a user namespace would map host
root into the sandbox, which can read every root-owned file that is bound in). Each job then
gets its own user namespace from the worker (`jobns`). Started by a normal user, bubblewrap
uses an unprivileged user namespace itself and the job runs as that user.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

JOB_DIR = "/job"  # each job mounts a fresh tmpfs here; no bound host path may live below it
SANDBOX_UID_BASE = 61000  # worker slot i runs as uid SANDBOX_UID_BASE + i (when started as root)
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime",
              "nsswitch.conf", "os-release", "ssl/certs")
_GPU_DEVICE_PREFIXES = ("nvidia", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset",
                        "dri")


_NSIGHT_DIRS = (Path("/opt/nvidia"),)  # Nsight Compute/Systems installs outside /usr


class BwrapUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here; the message says how to fix it."""


@dataclass
class BwrapLayout:
    """What a worker sandbox binds in, read-only unless noted."""

    ro_paths: list[str] = field(default_factory=list)  # host paths bound at the same place
    etc_dir: str = ""  # server-made dir whose passwd/group files are bound into /etc
    env: dict[str, str] = field(default_factory=dict)  # the worker's whole environment
    gpu_devices: list[str] = field(default_factory=list)  # /dev/nvidia* to pass through


def find_bwrap() -> str:
    path = shutil.which("bwrap")
    if not path:
        raise BwrapUnavailable(
            "bubblewrap (bwrap) is not installed: apt-get install bubblewrap, or start the "
            "server with --backend process --allow-unsafe-process-backend for development"
        )
    return path


def package_roots() -> list[str]:
    """Directories holding perfbox's code (several for an editable install)."""
    import perfbox
    import perfbox.sandbox
    import perfbox.tools

    roots = {str(Path(str(m.__file__)).resolve().parent)
             for m in (perfbox, perfbox.sandbox, perfbox.tools)}
    return sorted(roots)


def default_layout(extra_ro_paths: list[str] | None = None) -> BwrapLayout:
    """The standard worker sandbox for this Python installation."""
    paths = {sys.prefix, sys.base_prefix, *package_roots(), *(extra_ro_paths or [])}
    paths |= {str(p) for p in _NSIGHT_DIRS if p.is_dir()}
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(name):
            paths.add(os.environ[name])
    paths = {str(Path(p).resolve()) for p in paths if p and Path(p).exists()}
    # drop paths already covered by a parent in the set, or by /usr
    covered = sorted(paths)
    ro_paths = [p for p in covered
                if not p.startswith("/usr/")
                and not any(p != q and p.startswith(q + "/") for q in covered)]
    for path in ro_paths:
        if path == JOB_DIR or path.startswith(JOB_DIR + "/"):
            raise BwrapUnavailable(f"{path} lies under {JOB_DIR}, which jobs mount over")
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {
        "PATH": f"{venv_bin}:/usr/local/cuda/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": JOB_DIR,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
        "TRITON_CACHE_DIR": "/tmp/.triton",
        "TRITON_DEFAULT_FP_FUSION": "1",
    }
    for name in ("CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                 "LD_LIBRARY_PATH"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    gpus = sorted(str(p) for p in Path("/dev").iterdir()
                  if p.name.startswith(_GPU_DEVICE_PREFIXES)) if Path("/dev").exists() else []
    return BwrapLayout(ro_paths=ro_paths, env=env, gpu_devices=gpus)


def _parents(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def worker_argv(layout: BwrapLayout, command: list[str], slot: int) -> list[str]:
    """bwrap (+ setpriv when root) argv that runs `command` in the worker sandbox."""
    privileged = os.geteuid() == 0
    # --as-pid-1: the worker is its namespace's init, so its jobs cannot signal it, and its
    # kill(-1) ends every job process at once.
    argv = [find_bwrap(), "--die-with-parent", "--new-session", "--unshare-pid", "--as-pid-1",
            "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "sandbox"]
    if not privileged:
        argv.append("--unshare-user")
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / name
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), str(host)]
    # /tmp first: a checkout or virtualenv under /tmp is then bound on top of it, not hidden.
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "01777", "--tmpfs", "/tmp"]
    made = {"/usr", "/tmp"}
    for path in layout.ro_paths:
        for parent in _parents(path):
            if parent not in made:
                argv += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        argv += ["--ro-bind", path, path]
    argv += ["--perms", "0755", "--dir", "/etc"]
    for name in _ETC_FILES:
        host = Path("/etc") / name
        if host.exists():
            for parent in _parents(str(host)):
                if parent not in made and parent != "/etc":
                    argv += ["--perms", "0755", "--dir", parent]
                    made.add(parent)
            argv += ["--ro-bind", str(host), str(host)]
    if layout.etc_dir:
        for name in ("passwd", "group"):
            argv += ["--ro-bind", str(Path(layout.etc_dir) / name), f"/etc/{name}"]
    argv += ["--perms", "0755", "--dir", JOB_DIR, "--chdir", JOB_DIR, "--clearenv"]
    for device in layout.gpu_devices:
        argv += ["--dev-bind", device, device]
    if layout.gpu_devices and Path("/sys").is_dir():
        # the CUDA driver and NVML read the GPU's PCI topology from sysfs (read-only, as
        # container runtimes mount it)
        argv += ["--ro-bind", "/sys", "/sys"]
    for key, value in layout.env.items():
        argv += ["--setenv", key, value]
    if privileged:
        uid = SANDBOX_UID_BASE + slot
        argv += ["--cap-add", "CAP_SETUID,CAP_SETGID,CAP_SETPCAP", "--",
                 "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all"]
    else:
        argv.append("--")
    return argv + command


def write_etc(directory: Path, slots: int) -> None:
    """passwd/group naming the sandbox users, so tools that look the user up find one."""
    directory.mkdir(parents=True, exist_ok=True)
    uids = [SANDBOX_UID_BASE + i for i in range(slots)] if os.geteuid() == 0 else [os.getuid()]
    passwd = ["root:x:0:0:root:/root:/usr/sbin/nologin"]
    group = ["root:x:0:"]
    for uid in uids:
        passwd.append(f"sandbox{uid}:x:{uid}:{uid}:perfbox job:{JOB_DIR}:/usr/sbin/nologin")
        group.append(f"sandbox{uid}:x:{uid}:")
    passwd.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
    group.append("nogroup:x:65534:")
    (directory / "passwd").write_text("\n".join(passwd) + "\n")
    (directory / "group").write_text("\n".join(group) + "\n")
    for name in ("passwd", "group"):
        os.chmod(directory / name, 0o644)
    os.chmod(directory, 0o755)
