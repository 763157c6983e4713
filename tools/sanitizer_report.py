"""compute-sanitizer text output → structured errors.

Every record starts with a line `========= <what happened>` and continues with indented
`=========     ...` lines: `at <function>+<pc> in <file>:<line>`, `by thread (x,y,z) in block
(x,y,z)`, `Address 0x...` or `Access to 0x... is out of bounds`, `Device Frame:` lines, host
backtraces. Racecheck prints `Error: Race reported between <access> at <fn> in <file>:<line>`
followed by `and <access> at ...`. The summary line (`ERROR SUMMARY: N errors`, or
`RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)`) gives the true count even when
`--print-limit` cut the records short.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_PREFIX = "========="
_AT = re.compile(r"at (?P<func>.+?)\+0x[0-9a-f]+ in (?P<file>[^\s:]+):(?P<line>\d+)")
_AT_NOLINE = re.compile(r"at (?P<func>.+?)\+0x[0-9a-f]+")
_DEVICE_FRAME = re.compile(r"Device Frame: (?P<func>.+?)\+0x[0-9a-f]+ in "
                           r"(?P<file>[^\s:]+):(?P<line>\d+)")
_THREAD = re.compile(r"by thread \((?P<thread>[\d,]+)\) in block \((?P<block>[\d,]+)\)")
_ADDRESS = re.compile(r"(?:Address|Access to) (?P<address>0x[0-9a-f]+)")
_SIZE = re.compile(r"of size (?P<size>\d+) bytes?")
_ERROR_SUMMARY = re.compile(r"ERROR SUMMARY: (?P<n>\d+) errors?$")
_RACE_SUMMARY = re.compile(r"RACECHECK SUMMARY: (?P<n>\d+) hazards? displayed "
                           r"\((?P<errors>\d+) errors?, (?P<warnings>\d+) warnings?\)")
_HAZARDS = re.compile(r"\[(?P<n>\d+) hazards?\]")


@dataclass
class SanitizerError:
    """One reported problem."""

    tool: str
    kind: str  # the record's first line, e.g. "Invalid __global__ read of size 4 bytes"
    kernel: str = ""
    block: str = ""  # "(3,0,0)"
    thread: str = ""
    address: str = ""
    size: int = 0
    file: str = ""
    line: int = 0
    detail: str = ""  # the rest, e.g. "is 1 bytes after the nearest allocation ..."
    hazards: int = 0  # racecheck: hazards folded into this report

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", 0)}


@dataclass
class SanitizerRun:
    """One tool's verdict on one program run."""

    tool: str
    error_count: int = 0  # from the summary line: the true count, beyond the print limit
    errors: list[SanitizerError] = field(default_factory=list)
    api_errors: list[str] = field(default_factory=list)  # "Program hit cudaError..." lines
    summary_line: str = ""
    complete: bool = False  # the summary line was seen (the run was not cut short)

    def to_json(self, max_errors: int) -> dict[str, Any]:
        return {"tool": self.tool, "error_count": self.error_count,
                "errors": [e.to_json() for e in self.errors[:max_errors]],
                "api_errors": self.api_errors[:max_errors], "summary_line": self.summary_line,
                "complete": self.complete}


def _records(text: str) -> list[list[str]]:
    """Groups the sanitizer's lines into records (program output lines are dropped)."""
    records: list[list[str]] = []
    for raw in text.splitlines():
        if not raw.startswith(_PREFIX):
            continue
        body = raw[len(_PREFIX):]
        if not body.strip():
            continue
        if body.startswith(" ") and not body.startswith("     ") and records is not None:
            records.append([body.strip()])
        elif records:
            records[-1].append(body.strip())
    return records


def parse(text: str, tool: str) -> SanitizerRun:
    run = SanitizerRun(tool=tool)
    for record in _records(text):
        head = record[0]
        if head == "COMPUTE-SANITIZER":
            continue
        if m := _ERROR_SUMMARY.search(head):
            if "were not printed" not in head:
                run.error_count, run.summary_line, run.complete = int(m["n"]), head, True
            continue
        if m := _RACE_SUMMARY.search(head):
            run.error_count = int(m["errors"]) + int(m["warnings"])
            run.summary_line, run.complete = head, True
            continue
        if "were not printed" in head:
            continue
        if head.startswith("Program hit "):
            run.api_errors.append(head)
            continue
        run.errors.append(_error(tool, record))
    return run


def _error(tool: str, record: list[str]) -> SanitizerError:
    head = record[0]
    error = SanitizerError(tool=tool, kind=head)
    if head.startswith("Error: Race reported between"):
        error.kind = "Race"
        error.detail = head.removeprefix("Error: Race reported between ").strip()
    for line in record:
        if (m := _AT.search(line)) and not error.file:
            error.kernel, error.file, error.line = m["func"], m["file"], int(m["line"])
        elif (m := _AT_NOLINE.search(line)) and not error.kernel:
            error.kernel = m["func"]
        if (m := _DEVICE_FRAME.search(line)) and "Device Frame" in line:
            # a barrier inside an intrinsic header: the user's kernel is the device frame
            error.kernel, error.file, error.line = m["func"], m["file"], int(m["line"])
        if m := _THREAD.search(line):
            error.thread, error.block = f"({m['thread']})", f"({m['block']})"
        if (m := _ADDRESS.search(line)) and not error.address:
            error.address = m["address"]
            rest = line[m.end():].strip()
            if rest:
                error.detail = rest
        if line.startswith("and ") and error.kind == "Race":
            error.detail += " " + line
        if m := _HAZARDS.search(line):
            error.hazards = int(m["n"])
    if m := _SIZE.search(head):
        error.size = int(m["size"])
    for line in record[1:]:
        if line.startswith("and is ") or line.startswith("is "):
            error.detail = (error.detail + " " + line).strip()
    return error


def describe(error: SanitizerError) -> str:
    """One line for a model: what, where, who."""
    where = f" in {error.kernel}" if error.kernel else ""
    if error.file:
        where += f" at {error.file}:{error.line}"
    who = f" (thread {error.thread} block {error.block})" if error.thread else ""
    text = f"{error.kind}{where}{who}"
    if error.kind == "Race" and error.detail:
        text = f"shared-memory race between {error.detail}"
    return text
