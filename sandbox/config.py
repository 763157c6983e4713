"""Server settings: what `perfbox serve` flags set and what tests construct directly."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from perfbox.sandbox.cache import DEFAULT_MAX_BYTES as DEFAULT_CACHE_MAX_BYTES
from perfbox.sandbox.docker_backend import DockerSettings
from perfbox.sandbox.limits import DEFAULT_GRACE_S, DEFAULT_LIMITS, DEFAULT_MAX_QUEUE, JobLimits
from perfbox.sandbox.quota import QuotaConfig

DEFAULT_PRELOAD = ("torch", "triton")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "perfbox" / "results"


@dataclass
class ServerConfig:
    """Everything a tool server needs to start."""

    address: str = "127.0.0.1:50051"  # host:port; port 0 picks a free one
    workers: int = 2  # concurrent jobs (one warm worker each)
    backend: str = "bwrap"  # a name in perfbox.sandbox.backends.BACKENDS
    allow_unsafe_process_backend: bool = False  # the process backend is refused without this
    warm: bool = True  # keep pre-started workers; False starts one worker per job (cold)
    preload: tuple[str, ...] = DEFAULT_PRELOAD  # modules the warm workers import up front
    nice: int = 0  # CPU niceness of workers and jobs (a colocated engine keeps priority)
    cache_dir: Path | None = field(default_factory=default_cache_dir)  # None: no result cache
    # the result cache's size bound: past it, least-recently-used entries are evicted
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES
    max_queue: int = DEFAULT_MAX_QUEUE
    grace_s: float = DEFAULT_GRACE_S
    use_cgroups: bool = True
    rpc_threads: int = 64  # gRPC handler threads (streams hold one each)
    default_limits: JobLimits = DEFAULT_LIMITS  # for requests that leave a limit at zero
    batch_window: int = 256  # calls of one RunBatch stream in the scheduler at once
    tokens_file: Path | None = None  # bearer tokens ("CLIENT_ID TOKEN" lines); None: no auth
    tls_cert: Path | None = None  # PEM certificate chain: serve TLS
    tls_key: Path | None = None  # its PEM private key
    tls_client_ca: Path | None = None  # clients must present a certificate from this CA (mTLS)
    quota: QuotaConfig = field(default_factory=QuotaConfig)  # per client; default unlimited
    # HOST:PORT of the Prometheus /metrics endpoint (no host: 127.0.0.1); None: no endpoint
    metrics_address: str | None = None
    metrics_token_file: Path | None = None  # holds the bearer token /metrics needs; None: open
    docker: DockerSettings = field(default_factory=DockerSettings)  # the docker backend's


class ConfigError(ValueError):
    """A setting that cannot work; the message says which and why."""


def check(config: ServerConfig) -> None:
    from perfbox.sandbox.backends import BACKENDS

    if config.backend not in BACKENDS:
        raise ConfigError(f"backend {config.backend!r} is unknown; use one of "
                          f"{', '.join(BACKENDS)}")
    if not BACKENDS[config.backend].isolated and not config.allow_unsafe_process_backend:
        raise ConfigError(
            f"the {config.backend} backend runs submissions without any isolation; it is for "
            "development only. Pass --allow-unsafe-process-backend to use it anyway"
        )
    if config.workers < 1:
        raise ConfigError(f"workers must be at least 1, got {config.workers}")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise ConfigError("mutual TLS (--tls-client-ca) needs the server's own --tls-cert and "
                          "--tls-key")
    if config.quota.rate_per_s < 0 or config.quota.max_inflight < 0 or config.quota.burst < 0:
        raise ConfigError("quotas are 0 (unlimited) or more")
    if config.cache_max_bytes < 1:
        raise ConfigError(f"cache_max_bytes must be at least 1, got {config.cache_max_bytes}; "
                          "--no-cache turns the cache off")
    if config.metrics_token_file is not None and not config.metrics_address:
        raise ConfigError("a metrics token (--metrics-token-file) needs --metrics-address")
    if config.max_queue < 1:
        raise ConfigError(f"max_queue must be at least 1, got {config.max_queue}")
