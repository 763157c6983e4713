"""The `perfbox` command: serve the tool service, submit kernels, inspect a node, run and
benchmark the rollout worker.

One module per command group (`serve`, `submit`, `demo`, `rollout`, `bench`, `worker`), each
with an `add_commands(sub)` (`tasks` is `perfbox rollout --tasks`); what they share is in `common`, how a result is
drawn in `render`. argparse rather than typer: the command tree is small and argparse keeps the
dependency list short; rich draws the progress and the result tables.
"""

from __future__ import annotations

import argparse
import sys

import grpc

from perfbox.cli import bench, demo, rollout, serve, submit, worker
from perfbox.cli.common import embedded_server, err_console
from perfbox.exit_codes import ExitCode

_COMMAND_GROUPS = (serve, submit, demo, worker, rollout, bench)  # each adds its subcommands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfbox",
        description="Compile, disassemble, check, benchmark, profile and sanitize GPU kernels "
                    "in isolated sandboxes, from a shell or through the gRPC service; run the "
                    "rollout worker beside it.",
        epilog="Exit codes: 0 OK, 1 the kernel failed the tool, 2 usage error or rejected "
               "request, 3 service unreachable, 4 internal error.",
    )
    parser.add_argument("--log-level", default="WARNING",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="default: WARNING")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _COMMAND_GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from perfbox.sandbox import logs

    logs.setup(args.log_level, getattr(args, "log_format", "text"))
    try:
        return int(args.func(args))
    except ValueError as e:
        err_console.print(f"[red]error:[/] {e}", soft_wrap=True)
        return ExitCode.USAGE
    except ConnectionError as e:
        err_console.print(f"[red]error:[/] {e}", soft_wrap=True)
        return ExitCode.CONNECTION
    except grpc.RpcError as e:
        return _rpc_error(e)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as e:  # configuration errors (bwrap missing...) read better than a trace
        from perfbox.sandbox.bwrap import BwrapUnavailable
        from perfbox.sandbox.config import ConfigError

        if isinstance(e, (BwrapUnavailable, ConfigError)):
            err_console.print(f"[red]error:[/] {e}", soft_wrap=True)
            return ExitCode.USAGE
        raise


def _rpc_error(e: grpc.RpcError) -> int:
    """The exit code of a failed call: the caller's fault, the connection's, or ours."""
    code = e.code()
    err_console.print(f"[red]error ({code.name}):[/] {e.details()}", soft_wrap=True)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED):
        return ExitCode.USAGE
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ExitCode.CONNECTION
    return ExitCode.INTERNAL


__all__ = ["build_parser", "embedded_server", "main"]

if __name__ == "__main__":
    sys.exit(main())
