"""Nsight Systems kernel and memory-operation summaries (`nsys stats --format csv` of the
`cuda_gpu_kern_sum` and `cuda_gpu_mem_time_sum` reports).

Only where nsys can make a report: on the GPU machines this project was measured on, the nsys
shipped inside Nsight Compute writes a .qdstrm it cannot import (tests/fixtures/nsys records
that failure, which the tool turns into `available: false` and a note). No real `nsys stats`
CSV has been recorded yet, so the column names below follow NVIDIA's documented report layout
and are matched loosely (by prefix) rather than exactly.
"""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path
from typing import Any

from perfbox.tools.toolkit import find_binary

REPORTS = {"kernels": "cuda_gpu_kern_sum", "memory_operations": "cuda_gpu_mem_time_sum"}


def _column(row: dict[str, str], prefix: str) -> str:
    for key, value in row.items():
        if key and key.strip().startswith(prefix):
            return value or ""
    return ""


def _float(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def parse_summary_csv(text: str) -> list[dict[str, Any]]:
    """NsysRow JSON from one `nsys stats --format csv` report."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "Time (%)" in line), None)
    if start is None:
        return []
    rows = []
    for row in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
        name = _column(row, "Name") or _column(row, "Operation")
        if not name:
            continue
        calls = _column(row, "Instances") or _column(row, "Count")
        rows.append({"name": name, "calls": int(_float(calls)),
                     "total_us": _float(_column(row, "Total Time")) / 1e3,
                     "average_us": _float(_column(row, "Avg")) / 1e3,
                     "percent": _float(_column(row, "Time (%)"))})
    return rows


def summarize(argv: list[str], workdir: Path, env: dict[str, str], timeout_s: float
              ) -> dict[str, Any]:
    """NsysSummary JSON for running argv under nsys; `available: false` with a note when nsys
    is missing or cannot make a report on this node."""
    nsys = find_binary("nsys")
    if not nsys:
        return {"available": False, "note": "nsys (Nsight Systems) is not installed here"}
    report = workdir / "perfbox_nsys"
    done = subprocess.run([nsys, "profile", "--force-overwrite", "true", "-o", str(report),
                           *argv], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout_s, env=env)
    rep = report.with_suffix(".nsys-rep")
    if not rep.exists():
        last = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return {"available": False, "note": "nsys could not make a report here: "
                + " / ".join(last)}
    out: dict[str, Any] = {"available": True}
    for field, name in REPORTS.items():
        prefix = workdir / "perfbox_nsys_stats"
        subprocess.run([nsys, "stats", "--force-export", "true", "--format", "csv", "--report",
                        name, "--output", str(prefix), str(rep)], cwd=workdir,
                       capture_output=True, text=True, timeout=timeout_s, env=env)
        csv_path = Path(f"{prefix}_{name}.csv")
        out[field] = parse_summary_csv(csv_path.read_text()) if csv_path.exists() else []
    return out
