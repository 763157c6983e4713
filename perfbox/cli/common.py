"""What every `perfbox` command shares: the consoles, the embedded tool service, the client to
a service, and the flags that choose and reach one."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
from google.protobuf import json_format
from rich.console import Console

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


@contextlib.contextmanager
def embedded_server(backend: str, preload: tuple[str, ...], workers: int = 1,
                    allow_unsafe: bool = False, nice: int = 0) -> Iterator[str]:
    """Starts a tool service on a free loopback port for one command; yields its address."""
    from perfbox.sandbox.config import ServerConfig
    from perfbox.sandbox.server import create_server

    config = ServerConfig(address="127.0.0.1:0", workers=workers, backend=backend,
                          allow_unsafe_process_backend=allow_unsafe, preload=preload, grace_s=5,
                          nice=nice)
    server, port = create_server(config)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace_s=5)


@contextlib.contextmanager
def service_target(args: argparse.Namespace, preload: tuple[str, ...], workers: int = 1,
                   nice: int = 0) -> Iterator[str]:
    """--server, or an embedded service started for the command."""
    if args.server:
        yield args.server
        return
    with err_console.status("starting an embedded perfbox service..."):
        stack = contextlib.ExitStack()
        target = stack.enter_context(embedded_server(args.backend, preload, workers,
                                                     allow_unsafe=args.allow_unsafe_process_backend,
                                                     nice=nice))
    with stack:
        yield target


def client_options(args: argparse.Namespace, remote: bool | None = None) -> dict[str, Any]:
    """ToolClient keyword arguments from --token/--tls-*, for a remote service (by default:
    when --server is given; the embedded service is plaintext on loopback, without tokens)."""
    from perfbox.client import tls_credentials

    if not (getattr(args, "server", None) if remote is None else remote):
        return {}
    token = getattr(args, "token", None) or os.environ.get("PERFBOX_TOKEN") or None
    ca, cert, key = (getattr(args, f"tls_{k}", None) for k in ("ca", "cert", "key"))
    for path in (ca, cert, key):
        if path and not Path(path).is_file():
            raise ValueError(f"{path}: no such file (a TLS PEM file)")
    credentials = tls_credentials(ca, cert, key) if (ca or cert or key) else None
    return {"token": token, "credentials": credentials}


def connect(target: str, args: argparse.Namespace | None = None) -> Any:
    """A ToolClient to `target`, connected; ConnectionError when nothing answers in 10 s."""
    from perfbox.client import ToolClient

    client = ToolClient(target, timeout_s=24 * 3600,
                        **(client_options(args) if args is not None else {}))
    try:
        client.wait_ready(timeout_s=10)
    except grpc.FutureTimeoutError:
        client.close()
        raise ConnectionError(f"cannot reach a perfbox service at {target}") from None
    return client


def print_json(message: Any) -> None:
    console.print_json(json_format.MessageToJson(message, preserving_proto_field_name=True,
                                                 indent=None))


def parse_pairs(values: list[str] | None, flag: str, what: str = "NAME=VALUE",
                value: Callable[[str], Any] = str, key: Callable[[str], str] = str
                ) -> dict[str, Any]:
    """Repeatable NAME=VALUE flags as a dict; an error names the flag and the form it takes."""
    out: dict[str, Any] = {}
    for item in values or []:
        name, sep, rest = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} takes {what}, not {item!r}")
        out[key(name)] = value(rest)
    return out


def json_or_text(value: str) -> Any:
    """A flag's value read as JSON where it parses (numbers, booleans, lists), else the text."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def add_backend_flags(p: argparse.ArgumentParser, what: str) -> None:
    from perfbox.sandbox.backends import BACKENDS

    p.add_argument("--backend", default="bwrap", choices=tuple(BACKENDS),
                   help=f"isolation {what} (default: bwrap)")
    p.add_argument("--allow-unsafe-process-backend", action="store_true",
                   help="permit --backend process (no isolation; development only)")


def add_service_flags(p: argparse.ArgumentParser) -> None:
    """--server or an embedded service, how to reach it, and --json."""
    p.add_argument("--server", metavar="HOST:PORT",
                   help="a running perfbox service; without it an embedded one is started")
    add_client_auth_flags(p)
    add_backend_flags(p, "of the embedded service")
    p.add_argument("--json", action="store_true",
                   help="print the response message as JSON (field names as in the .proto)")


def add_client_auth_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", help="bearer token for the service (default: $PERFBOX_TOKEN)")
    p.add_argument("--tls-ca", metavar="PEM", help="TLS to the service, verified with this CA")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", metavar="PEM", help="client certificate's key (mutual TLS)")
