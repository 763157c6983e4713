"""Logging for the service: plain text at a shell, JSON lines (python-json-logger) where a log
pipeline reads them, each record carrying the calling client's id (from the gate)."""

from __future__ import annotations

import logging
import sys

from perfbox.sandbox.gate import current_client

FORMATS = ("text", "json")


class ClientFilter(logging.Filter):
    """Adds `client`: the id the gate admitted the current call under."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "client"):
            record.client = current_client.get()
        return True


def setup(level: str = "WARNING", fmt: str = "text") -> None:
    """Configures the root logger once, for `perfbox serve` and the other commands."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ClientFilter())
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(client)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
