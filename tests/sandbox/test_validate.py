"""Bad input gets INVALID_ARGUMENT or RESOURCE_EXHAUSTED with a message that says what to fix,
and the server stays up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient, make_request
from perfbox.sandbox.limits import MAX_SOURCE_BYTES, MiB
from perfbox.sandbox.validate import RequestError, check_file_name, validate_request
from tests.conftest import SAMPLE_CU, cuda_request, triton_request

KERNELBENCH = Path(__file__).parent.parent / "fixtures" / "kernelbench"


def _with(**changes: object) -> pb.ToolRequest:
    request = cuda_request()
    for key, value in changes.items():
        if key == "name":
            request.files[0].name = value
        elif key == "content":
            request.files[0].content = value
        elif key == "archs":
            request.compile.archs[:] = value
        elif key == "wall":
            request.limits.wall_time_ms = value
        elif key in pb.Limits.DESCRIPTOR.fields_by_name:
            setattr(request.limits, key, value)
        else:
            setattr(request, key, value)
    return request


CASES = [
    ("unknown tool", _with(tool="optimize"), grpc.StatusCode.INVALID_ARGUMENT, "compile, disasm"),
    ("no language", _with(language=pb.LANGUAGE_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT,
     "LANGUAGE_CUDA"),
    ("dot-dot name", _with(name="../k.cu"), grpc.StatusCode.INVALID_ARGUMENT, ".."),
    ("absolute name", _with(name="/etc/k.cu"), grpc.StatusCode.INVALID_ARGUMENT, "relative"),
    ("empty name", _with(name=""), grpc.StatusCode.INVALID_ARGUMENT, "empty name"),
    ("unnormalised", _with(name="a//k.cu"), grpc.StatusCode.INVALID_ARGUMENT, "'a/k.cu'"),
    ("empty source", _with(content="  \n"), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("oversized", _with(content="x" * (MAX_SOURCE_BYTES + 1)),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "limit"),
    ("unknown arch", _with(archs=["sm_99"]), grpc.StatusCode.INVALID_ARGUMENT, "sm_90"),
    ("malformed arch", _with(archs=["hopper"]), grpc.StatusCode.INVALID_ARGUMENT, "sm_XY"),
    ("limit too high", _with(wall=10**9), grpc.StatusCode.INVALID_ARGUMENT, "maximum"),
    ("no .cu file", _with(name="k.txt"), grpc.StatusCode.INVALID_ARGUMENT, ".cu"),
]


def _two_files(first: str, second: str) -> pb.ToolRequest:
    return make_request("compile", {first: SAMPLE_CU, second: SAMPLE_CU}, language="cuda")


def _compile_options(language: str = "triton", **options: Any) -> pb.ToolRequest:
    request = triton_request() if language == "triton" else cuda_request()
    for key, value in options.items():
        field = getattr(request.compile, key)
        if isinstance(value, dict):
            field.update(value)
        elif isinstance(value, list):
            field[:] = value
        else:
            setattr(request.compile, key, value)
    return request


def _disasm(**options: Any) -> pb.ToolRequest:
    return make_request("disasm", {"kernel.py": triton_request().files[0].content}, **options)


def _kernelbench(tool: str, **options: Any) -> pb.ToolRequest:
    files = {"reference.py": (KERNELBENCH / "reference.py").read_text(),
             "new.py": (KERNELBENCH / "new.py").read_text()}
    request = make_request(tool, files, language="kernelbench")
    message = getattr(request, tool)
    for key, value in options.items():
        if isinstance(value, dict):
            getattr(message, key).update(value)
        else:
            setattr(message, key, value)
    return request


INVALID = grpc.StatusCode.INVALID_ARGUMENT
# Hardening: each of these once reached a tool (INTERNAL_ERROR) or was accepted.
HARDENING_CASES = [
    # file names: bytes, not characters; a file that is another's directory; invisible or
    # control characters
    ("component over NAME_MAX bytes", _with(name="x" * 253 + ".cu"), INVALID, "255 bytes"),
    (".cu name nvcc cannot extend", _with(name="x" * 220 + ".cu"), INVALID,
     "at most 200 bytes"),
    ("2-byte chars over NAME_MAX", _with(name="\u00e9" * 127 + ".cu"), INVALID,
     "257 bytes in UTF-8"),
    ("name over 1024 bytes", _with(name="/".join(["d" * 200] * 6) + "/k.cu"), INVALID,
     "1024 bytes"),
    ("file beside its own directory", _two_files("a.cu", "a.cu/b.cu"), INVALID,
     "'a.cu' is also a directory of 'a.cu/b.cu'"),
    ("directory before the file", _two_files("a.cu/b.cu", "a.cu"), INVALID,
     "'a.cu' is also a directory of 'a.cu/b.cu'"),
    ("bidi override", _with(name="k\u202eus.cu"), INVALID, "U+202E (Unicode category Cf)"),
    ("bidi isolate", _with(name="k\u2067.cu"), INVALID, "U+2067"),
    ("zero-width space", _with(name="k\u200b.cu"), INVALID, "U+200B"),
    ("line separator", _with(name="k\u2028.cu"), INVALID, "category Zl"),
    ("paragraph separator", _with(name="k\u2029.cu"), INVALID, "category Zp"),
    ("private use", _with(name="k\ue000.cu"), INVALID, "category Co"),
    ("unassigned", _with(name="k\u0378.cu"), INVALID, "category Cn"),
    ("DEL", _with(name="k\x7f.cu"), INVALID, "category Cc"),
    ("no-break space", _with(name="k\u00a0.cu"), INVALID, "U+00A0"),
    ("trailing space", _with(name="k.cu "), INVALID, "whitespace"),
    ("leading space in a directory", _with(name=" src/k.cu"), INVALID, "whitespace"),
    # limits below the server's minimum
    ("tiny memory", _with(memory_bytes=16 * MiB), INVALID,
     "limits.memory_bytes = 16777216 is below this server's minimum 67108864 (64 MiB); "
     "raise it or leave it 0 for the default"),
    ("few processes", _with(max_processes=4), INVALID, "limits.max_processes = 4 is below"),
    ("tiny wall time", _with(wall_time_ms=50), INVALID, "limits.wall_time_ms = 50 is below"),
    ("tiny cpu time", _with(cpu_time_ms=1), INVALID, "limits.cpu_time_ms = 1 is below"),
    ("tiny files", _with(max_file_bytes=1000), INVALID, "minimum 1048576 (1 MiB)"),
    ("tiny output", _with(max_output_bytes=100), INVALID, "minimum 4096 (4 KiB)"),
    # compile and disasm options
    ("num_stages too high", _compile_options(num_stages=17), INVALID, "num_stages must be"),
    ("num_stages huge", _compile_options(num_stages=4294967295), INVALID, "num_stages"),
    ("disasm num_stages", _disasm(num_stages=100), INVALID, "num_stages"),
    ("signature type", _compile_options(signature={"src_ptr": "float*"}), INVALID,
     "signature['src_ptr'] = 'float*' is not a Triton type"),
    ("signature double pointer", _compile_options(signature={"src_ptr": "**fp32"}), INVALID,
     "not a Triton type"),
    ("signature key", _compile_options(signature={"src ptr": "*fp32"}), INVALID,
     "signature: key 'src ptr' is not a Python identifier"),
    ("constants key", _compile_options(constants={"1BLOCK": "128"}), INVALID,
     "constants: key '1BLOCK'"),
    ("constants not a literal", _compile_options(constants={"BLOCK": "__import__('os')"}),
     INVALID, "constants['BLOCK']"),
    ("constants too long", _compile_options(constants={"BLOCK": "1" * 1001}), INVALID,
     "1001 characters"),
    ("kernel not a name", _compile_options(kernel="copy_kernel; import os"), INVALID,
     "kernel 'copy_kernel; import os' is not a Python identifier"),
    ("too many defines", _compile_options("cuda", defines=[f"D{i}" for i in range(300)]),
     INVALID, "at most 256 definitions"),
    # check and bench options
    ("bench min_samples", _kernelbench("bench", min_samples=4294967295), INVALID,
     "min_samples must be"),
    ("bench target_rel_error", _kernelbench("bench", target_rel_error=1e-9), INVALID,
     "target_rel_error must be"),
    ("bench NaN target", _kernelbench("bench", target_rel_error=float("nan")), INVALID,
     "target_rel_error"),
    ("bench tiny budget", _kernelbench("bench", time_budget_s=1e-6), INVALID,
     "time_budget_s must be"),
    ("bench budget", _kernelbench("bench", time_budget_s=1e9), INVALID, "time_budget_s"),
    ("bench threads", _kernelbench("bench", threads=4294967295), INVALID, "threads must be"),
    ("bench infinite speedup", _kernelbench("bench", max_plausible_speedup=float("inf")),
     INVALID, "max_plausible_speedup must be"),
    ("check input sets", _kernelbench("check", num_input_sets=4294967295), INVALID,
     "num_input_sets"),
    ("check NaN tolerance", _kernelbench("check", tolerances={"float32": float("nan")}),
     INVALID, "tolerance"),
]


@pytest.mark.parametrize("case, request_, code, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_rejected_clearly(client: ToolClient, case: str, request_: pb.ToolRequest,
                                         code: grpc.StatusCode, fragment: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.run(request_, timeout_s=30)
    assert info.value.code() == code, info.value.details()
    assert fragment in info.value.details()


@pytest.mark.parametrize("case, request_, code, fragment", HARDENING_CASES,
                         ids=[c[0] for c in HARDENING_CASES])
def test_hostile_input_is_rejected_before_any_sandbox(client: ToolClient, case: str,
                                                     request_: pb.ToolRequest,
                                                     code: grpc.StatusCode, fragment: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.run(request_, timeout_s=30)
    assert info.value.code() == code, info.value.details()
    assert fragment in info.value.details()


def test_surrogates_are_refused() -> None:
    """Protobuf cannot carry a lone surrogate; a name from elsewhere (the CLI) still can."""
    with pytest.raises(RequestError, match="category Cs"):
        check_file_name("k\ud800.cu")


def _including(source: str, headers: list[str]) -> str:
    """SAMPLE_CU with #includes of top-level headers, from wherever `source` lies."""
    up = "../" * source.count("/")
    return "".join(f'#include "{up}{h}"\n' for h in headers) + SAMPLE_CU


def test_edge_names_still_compile(client: ToolClient) -> None:
    """At the limits, not over: 255-byte components (ASCII, and 2-byte characters), a
    200-byte .cu name, a name of 1024 bytes, spaces inside a name, non-ASCII letters. The
    headers are included, so the sandbox must have written them."""
    headers = ["h" * 253 + ".h", "\u00e9" * 126 + ".h"]  # 255 bytes; 128 characters, 254 bytes
    sources = ["d" * 255 + "/k.cu",
               "x" * 197 + ".cu",
               "/".join(["d" * 250] * 4) + "/" + "k" * 17 + ".cu",
               "my kernels/k.cu",
               "\u00fcber/\u6838.cu"]
    assert len(sources[2].encode()) == 1024
    for source in sources:
        files = {h: "#pragma once\n" for h in headers}
        files[source] = _including(source, headers)
        result = client.run(make_request("compile", files, language="cuda"), timeout_s=120)
        assert result.status == pb.OK, (source[:40], result.summary, result.error)


def test_minimum_limits_are_accepted(client: ToolClient) -> None:
    """The minimums themselves are valid: a compile fits the process and output minimums; at
    the time, memory and file-size minimums the job still runs and answers a result (a
    timeout, the memory limit or the compiler's own failure, by the machine's load), never a
    refusal or an internal error."""
    fits = _with(max_processes=8, max_output_bytes=4096)
    assert client.run(fits, timeout_s=120).status == pb.OK
    tight = _with(wall_time_ms=100, cpu_time_ms=100, memory_bytes=64 * MiB,
                  max_file_bytes=1 * MiB)
    assert client.run(tight, timeout_s=120).status not in (pb.INTERNAL_ERROR, pb.REJECTED)


def test_edge_triton_options_compile(client: ToolClient) -> None:
    request = _compile_options(num_stages=4, num_warps=8, kernel="copy_kernel",
                               signature={"src_ptr": "*fp16", "dst_ptr": "*fp16", "n": "i64"},
                               constants={"BLOCK": "256"})
    result = client.run(request, timeout_s=300)
    assert result.status == pb.OK, (result.summary, result.error)
    assert all(k.num_stages == 4 for k in result.compile.kernels)


@pytest.mark.parametrize("tool, options", [
    ("bench", {}), ("check", {}),
    ("bench", {"min_samples": 10_000, "target_rel_error": 1e-4, "time_budget_s": 600.0,
               "max_plausible_speedup": 1e6, "threads": 1}),
    ("check", {"num_input_sets": 100, "tolerances": {"float32": 0.5}}),
])
def test_default_and_edge_check_bench_options_validate(tool: str, options: dict[str, Any]
                                                       ) -> None:
    """Validation only: running a bench here would take the CPUs other tests need."""
    valid = validate_request(_kernelbench(tool, **options))
    assert valid.spec.name == tool


def test_options_of_another_tool_are_rejected(client: ToolClient) -> None:
    request = cuda_request(tool="compile")
    request.disasm.include_sass = True
    with pytest.raises(grpc.RpcError) as info:
        client.run(request)
    assert "disasm options" in info.value.details()


def test_duplicate_file_names(client: ToolClient) -> None:
    request = cuda_request()
    request.files.add(name="k.cu", content=SAMPLE_CU)
    with pytest.raises(grpc.RpcError, match="twice"):
        client.run(request)


def test_server_still_serves_after_bad_requests(client: ToolClient) -> None:
    for _, request, _, _ in CASES + HARDENING_CASES:
        with pytest.raises(grpc.RpcError):
            client.run(request, timeout_s=30)
    assert client.health() == "SERVING"
    assert client.run(cuda_request()).status == pb.OK
