"""Running a tool in a fresh interpreter from a test.

Tools fork (check and bench fork the submission's process; compile forks the process that
imports a Triton module); forking pytest itself, which runs gRPC servers for other tests, is
unreliable (gRPC's fork handlers can abort the child), so tests that fork run the tool here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from perfbox.tools.types import ToolOutcome

_RUN = """
import json, sys, pathlib
from perfbox import tools
from perfbox.tools.types import ToolRequest
workdir, files, options = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
tool = options.pop("tool", "check")
language = options.pop("language", "kernelbench")
out = tools.run(ToolRequest(tool, language, files, workdir, options))
print("OUTCOME" + json.dumps(out.to_json()))
"""


def run_tool_isolated(workdir: Path, files: list[str], options: dict) -> ToolOutcome:
    proc = subprocess.run([sys.executable, "-c", _RUN, str(workdir), json.dumps(files),
                           json.dumps(options)], capture_output=True, text=True, timeout=300,
                          cwd=workdir)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("OUTCOME")), None)
    assert line is not None, proc.stderr[-2000:]
    return ToolOutcome.from_json(json.loads(line[len("OUTCOME"):]))
