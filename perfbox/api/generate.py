"""Regenerates the checked-in gRPC stubs from proto/ (and checks them for drift).

protoc writes `from perfbox.v1 import tools_pb2` because the .proto lives at
`perfbox/v1/tools.proto` (the package path clients see through reflection); the stubs live in
`perfbox.api.v1`, so the import lines are rewritten after generation.

    python -m perfbox.api.generate          # rewrite perfbox/api/v1/*
    python -m perfbox.api.generate --check  # exit 1 when the checked-in stubs differ
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
OUT_DIR = Path(__file__).resolve().parent / "v1"
PROTOS = ["perfbox/v1/tools.proto", "perfbox/v1/rollout.proto"]
_IMPORT_RE = re.compile(r"^from perfbox\.v1 import (\w+_pb2)", re.MULTILINE)


def generate() -> dict[str, str]:
    """Runs protoc (from grpcio-tools) and returns {file name: rewritten content}."""
    from grpc_tools import protoc  # dev/test dependency only
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *PROTOS,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        out: dict[str, str] = {}
        for path in sorted((Path(tmp) / "perfbox" / "v1").glob("*")):
            text = path.read_text()
            out[path.name] = _IMPORT_RE.sub(r"from perfbox.api.v1 import \1", text)
        return out


def drift() -> list[str]:
    """Names of stub files that differ from what the .proto generates now."""
    fresh = generate()
    stale = []
    for name, content in fresh.items():
        current = OUT_DIR / name
        if not current.exists() or current.read_text() != content:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report drift")
    args = parser.parse_args(argv)
    if args.check:
        stale = drift()
        if stale:
            print(f"stale stubs: {', '.join(stale)}; run python -m perfbox.api.generate")
            return 1
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, content in generate().items():
        (OUT_DIR / name).write_text(content)
    (OUT_DIR / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
