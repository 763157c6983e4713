"""Prometheus metrics of one tool server (prometheus-client), served over HTTP for scraping.

Each server has its own registry, so several servers in one process (tests, the embedded
service beside a remote one) never mix their counts. What an operator watches: the queue, jobs
by tool and status, latencies, the wait for a worker slot (on GPU nodes, the GPU lease: a
worker holds its GPU), the result cache's hit rate, and RPCs by client with refusals.

The endpoint listens on 127.0.0.1 unless given a host, and may require a bearer token:
prometheus_client's own server has no authentication, so its WSGI app is served by wsgiref behind
a check of the Authorization header. Label values are tool names, statuses, method names and
client ids, never tokens.
"""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from perfbox.api.v1 import tools_pb2 as pb

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class MetricsEndpoint:
    """A running /metrics HTTP server; close() stops it."""

    port: int
    _server: object
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()  # type: ignore[attr-defined]
        self._server.server_close()  # type: ignore[attr-defined]


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], running: Callable[[], float]) -> None:
        self.registry = r = CollectorRegistry()
        self.jobs = Counter("perfbox_jobs", "Tool calls answered, by tool and result status",
                            ["tool", "status"], registry=r)
        self.job_seconds = Histogram("perfbox_job_seconds", "Tool call latency, queue included",
                                     ["tool"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.lease_wait = Histogram("perfbox_lease_wait_seconds",
                                    "Time a job waited for a worker slot (and its GPU)",
                                    ["tool"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.cache = Counter("perfbox_cache_lookups", "Result cache lookups by outcome",
                             ["result"], registry=r)
        self.rpcs = Counter("perfbox_rpcs", "RPCs by method and client; refused names the code "
                            "of a refusal at the door ('' when admitted)",
                            ["method", "client", "refused"], registry=r)
        Gauge("perfbox_queue_depth", "Jobs waiting for a worker", registry=r
              ).set_function(queue_depth)
        Gauge("perfbox_jobs_running", "Jobs on a worker now", registry=r).set_function(running)

    def observe_result(self, result: pb.ToolResult) -> None:
        tool = result.tool or "unknown"
        self.jobs.labels(tool, pb.Status.Name(result.status)).inc()
        if result.timings.total_ms:
            self.job_seconds.labels(tool).observe(result.timings.total_ms / 1000)
        if not result.cache_hit and result.job_id:
            self.lease_wait.labels(tool).observe(result.timings.queue_ms / 1000)

    def observe_cache(self, hit: bool) -> None:
        self.cache.labels("hit" if hit else "miss").inc()

    def observe_rpc(self, method: str, client: str, refused: grpc.StatusCode | None) -> None:
        self.rpcs.labels(method.rsplit("/", 1)[-1], client,
                         refused.name if refused is not None else "").inc()

    def serve(self, address: str, token: str | None = None) -> MetricsEndpoint:
        return serve_metrics(self.registry, address, token)


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def load_token(path: Path) -> str:
    """The bearer token held in `path` (surrounding whitespace dropped); it must not be empty."""
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"the metrics token file {path} is empty")
    return token


def _require_bearer(app: WsgiApp, token: str) -> WsgiApp:
    """`app` behind `Authorization: Bearer <token>`; anything else gets 401. The comparison
    takes the same time however much of the token matches."""
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # WSGI hands headers over as latin-1 strings: encoding back gives the bytes sent
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if hmac.compare_digest(given, expected):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                            ("WWW-Authenticate", 'Bearer realm="metrics"')])
        return [b"missing or invalid bearer token\n"]

    return guarded


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per scrape, so a slow scraper cannot stall another."""

    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are frequent and uninteresting: no line per request on stderr."""


def serve_metrics(registry: CollectorRegistry, address: str, token: str | None = None
                  ) -> MetricsEndpoint:
    """Starts /metrics for `registry` on HOST:PORT (port 0 picks one; no host means
    127.0.0.1, so exposing it is a choice); with `token`, scrapes need it as a bearer token.
    The tool server's and the rollout worker's endpoints both come from here."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    app: WsgiApp = make_wsgi_app(registry)
    if token:
        app = _require_bearer(app, token)
    server = make_server(host, int(port), app, _Server6 if ":" in host else _Server,
                         _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="metrics")
    thread.start()
    return MetricsEndpoint(server.server_port, server, thread)
