"""The tool server: gRPC endpoint, health and reflection, worker pool, graceful shutdown."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from perfbox.api import MAX_MESSAGE_BYTES
from perfbox.api.v1 import tools_pb2, tools_pb2_grpc
from perfbox.sandbox.backends import BACKENDS
from perfbox.sandbox.auth import TlsFiles, Tokens
from perfbox.sandbox.cache import ResultCache
from perfbox.sandbox.cgroup import CgroupManager
from perfbox.sandbox.config import ServerConfig, check
from perfbox.sandbox.gate import Gate
from perfbox.sandbox.metrics import Metrics, MetricsEndpoint, load_token
from perfbox.sandbox.quota import Quotas
from perfbox.sandbox.scheduler import Scheduler, WorkerSlot
from perfbox.sandbox.service import ToolService

log = logging.getLogger(__name__)
SERVICE_NAME = tools_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name


class ToolServer:
    """A started-or-startable server; `stop()` is graceful and idempotent."""

    def __init__(self, config: ServerConfig) -> None:
        check(config)
        self.config = config
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="perfbox-server-"))
        os.chmod(self.runtime_dir, 0o755)
        self.backend = BACKENDS[config.backend](config, self.runtime_dir)
        self.cgroups = CgroupManager(f"perfbox-{os.getpid()}-{secrets.token_hex(6)}") \
            if config.use_cgroups and self.backend.host_cgroups else None
        slots = [WorkerSlot(i, self.backend.make_worker, self.cgroups, config.warm,
                            self.backend.one_job_per_worker)
                 for i in range(config.workers)]
        self.scheduler = Scheduler(slots, config.max_queue)
        self.cache = ResultCache(config.cache_dir, config.cache_max_bytes)
        self.metrics = Metrics(lambda: self.scheduler.queue_depth,
                               lambda: len(self.scheduler.running_jobs()))
        self.service = ToolService(self.scheduler, self.cache, config.backend,
                                   config.default_limits, config.batch_window, self.metrics)
        self.metrics_endpoint: MetricsEndpoint | None = None
        self.health = health.HealthServicer()
        tokens = Tokens.load(config.tokens_file) if config.tokens_file else None
        self.quotas = Quotas(config.quota)
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.rpc_threads, thread_name_prefix="rpc"),
            interceptors=[Gate(tokens, self.quotas, self.metrics.observe_rpc)],
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.so_reuseport", 0)],
        )
        tools_pb2_grpc.add_ToolServiceServicer_to_server(self.service, self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc)
        if config.tls_cert is not None and config.tls_key is not None:
            tls = TlsFiles(config.tls_cert, config.tls_key, config.tls_client_ca)
            self.port = self.grpc.add_secure_port(config.address, tls.server_credentials())
        else:
            self.port = self.grpc.add_insecure_port(config.address)
        if self.port == 0:
            raise OSError(f"cannot listen on {config.address}")

    def start(self) -> None:
        self.scheduler.start(prestart=self.config.warm)
        if self.config.metrics_address:
            token_file = self.config.metrics_token_file
            token = load_token(token_file) if token_file is not None else None
            self.metrics_endpoint = self.metrics.serve(self.config.metrics_address, token)
            log.info("metrics on port %d (/metrics)", self.metrics_endpoint.port)
        self.grpc.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("perfbox serving on port %d (backend %s, %d workers, %s, %s, %s)", self.port,
                 self.config.backend, self.config.workers, "warm" if self.config.warm else "cold",
                 "mutual TLS" if self.config.tls_client_ca else
                 "TLS" if self.config.tls_cert else "plaintext",
                 "bearer tokens" if self.config.tokens_file else "no auth")

    def stop(self, grace_s: float | None = None) -> None:
        """Stops accepting calls, lets running jobs finish within the grace period, cancels the
        rest, then stops every worker: no job outlives the server."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.config.grace_s if grace_s is None else grace_s
            self.health.enter_graceful_shutdown()
            self.scheduler.stop_accepting()
            stopping = self.grpc.stop(grace)
            self.scheduler.shutdown(grace)
            stopping.wait()
            if self.cgroups is not None:
                self.cgroups.close()
            if self.metrics_endpoint is not None:
                self.metrics_endpoint.close()
            self.backend.close()
            _remove_tree(self.runtime_dir)
            self._stopped.set()
            log.info("perfbox stopped")

    def wait_for_termination(self) -> None:
        self._stopped.wait()


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def create_server(config: ServerConfig) -> tuple[ToolServer, int]:
    """Builds a server bound to `config.address` (port 0 picks one) and starts it."""
    server = ToolServer(config)
    try:
        server.start()
    except BaseException:
        server.stop(0)
        raise
    return server, server.port


def serve(config: ServerConfig) -> None:
    """Runs until SIGTERM/SIGINT, then shuts down gracefully."""
    server, port = create_server(config)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s; shutting down (grace %.0f s)", signal.Signals(signum).name,
                 config.grace_s)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(1.0):
        pass
    server.stop()
