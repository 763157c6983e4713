"""The compute-sanitizer parser on real output (tests/fixtures/sanitizer, recorded by
tests/fixtures/record.sh on an H100 from the planted bugs in tests/fixtures/programs)."""

from __future__ import annotations

from pathlib import Path

from perfbox.tools import sanitizer_report as sr

SANITIZER = Path(__file__).resolve().parents[1] / "fixtures" / "sanitizer"


def _parse(tool: str, name: str | None = None) -> sr.SanitizerRun:
    return sr.parse((SANITIZER / f"{name or tool}.txt").read_text(), tool)


def test_memcheck_out_of_bounds_with_source_line() -> None:
    run = _parse("memcheck")
    assert run.complete and run.error_count == 3  # the access and two failed API calls
    [error] = run.errors
    assert error.kind == "Invalid __global__ read of size 4 bytes" and error.size == 4
    assert error.kernel == "scale(float *, int)"
    assert (error.file, error.line) == ("bug_memcheck.cu", 8)
    assert (error.thread, error.block) == ("(232,0,0)", "(3,0,0)")
    assert error.address.startswith("0x") and "out of bounds" in error.detail
    assert len(run.api_errors) == 2 and "cudaErrorLaunchFailure" in run.api_errors[0]


def test_racecheck_hazard_names_both_accesses() -> None:
    run = _parse("racecheck")
    assert run.complete and run.error_count == 1
    [race] = run.errors
    assert race.kind == "Race" and race.hazards == 4096
    assert "bug_racecheck.cu:9" in race.detail and "bug_racecheck.cu:11" in race.detail
    assert sr.describe(race).startswith("shared-memory race between Write access")


def test_initcheck_counts_beyond_the_print_limit() -> None:
    run = _parse("initcheck")
    assert run.error_count == 256 and len(run.errors) == 100  # --print-limit 100
    assert all(e.kind.startswith("Uninitialized __global__ memory read") for e in run.errors)
    assert {e.line for e in run.errors} == {8}


def test_synccheck_points_at_the_user_kernel_not_the_intrinsic_header() -> None:
    run = _parse("synccheck")
    assert run.error_count == 32 and run.errors
    error = run.errors[0]
    assert error.kind.startswith("Barrier error detected")
    assert (error.kernel, error.file, error.line) == ("divergent_barrier(float *)",
                                                      "bug_synccheck.cu", 13)


def test_clean_run_has_no_errors() -> None:
    run = _parse("memcheck", "clean")
    assert run.complete and run.error_count == 0 and not run.errors


def test_output_cut_short_is_incomplete() -> None:
    text = (SANITIZER / "memcheck.txt").read_text().split("ERROR SUMMARY")[0]
    assert not sr.parse(text, "memcheck").complete
