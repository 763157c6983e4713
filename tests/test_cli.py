"""The `perfbox` command as a user runs it: real process, embedded or remote service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from perfbox.exit_codes import ExitCode
from perfbox.samples import SOFTMAX_PY, VECTOR_ADD_CU
from tests.conftest import free_port, required_module, requires_bwrap


def perfbox(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "perfbox.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_help_reads_well() -> None:
    out = perfbox("--help")
    assert out.returncode == 0
    for command in ("serve", "submit", "tools", "device-info", "demo"):
        assert command in out.stdout
    assert "Exit codes" in out.stdout
    assert "--arch" in perfbox("submit", "--help").stdout


@requires_bwrap
def test_submit_json_against_a_server(server) -> None:
    out = perfbox("submit", str(VECTOR_ADD_CU), "--tool", "compile", "--arch", "sm_80",
                  "--server", f"127.0.0.1:{server[1]}", "--json")
    assert out.returncode == ExitCode.OK, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "OK" and result["tool"] == "compile"
    assert result["compile"]["kernels"][0]["arch"] == "sm_80"
    assert "compile_ms" in result["compile"]  # field names as in the .proto


@requires_bwrap
def test_compile_error_exit_code(server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.cu"
    bad.write_text("__global__ void f() { nope; }\n")
    out = perfbox("submit", str(bad), "--tool", "compile", "--server", f"127.0.0.1:{server[1]}")
    assert out.returncode == ExitCode.KERNEL_FAILURE
    assert "COMPILE_ERROR" in out.stdout and "bad.cu:1" in out.stdout


@requires_bwrap
def test_rejected_request_exit_code(server) -> None:
    out = perfbox("submit", str(VECTOR_ADD_CU), "--tool", "compile", "--arch", "sm_99",
                  "--server", f"127.0.0.1:{server[1]}")
    assert out.returncode == ExitCode.USAGE
    assert "INVALID_ARGUMENT" in out.stderr and "sm_90" in out.stderr


def test_unreachable_server_exit_code() -> None:
    out = perfbox("submit", str(VECTOR_ADD_CU), "--tool", "compile", "--server",
                  "127.0.0.1:1", timeout=60)
    assert out.returncode == ExitCode.CONNECTION
    assert "cannot reach" in out.stderr


def test_missing_file_is_a_usage_error() -> None:
    out = perfbox("submit", "nope.cu", "--tool", "compile")
    assert out.returncode == ExitCode.USAGE and "no such file" in out.stderr


@requires_bwrap
def test_submit_with_an_embedded_service_and_cache(tmp_path: Path) -> None:
    env_home = {"XDG_CACHE_HOME": str(tmp_path)}
    import os

    env = {**os.environ, **env_home}
    args = [sys.executable, "-m", "perfbox.cli", "submit", str(SOFTMAX_PY), "--tool", "disasm",
            "--json"]
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert json.loads(first.stdout)["disasm"]["kernels"][0]["name"] == "softmax_kernel"
    assert json.loads(second.stdout).get("cache_hit") is True


@requires_bwrap
def test_tools_and_device_info() -> None:
    tools = perfbox("tools", "--json")  # the OpenAI function schemas, a JSON list
    assert tools.returncode == 0, tools.stderr
    schemas = json.loads(tools.stdout)
    assert {s["function"]["name"] for s in schemas} == {
        "compile", "disasm", "check", "bench", "profile", "sanitize"}
    for schema in schemas:
        assert schema["type"] == "function"
        parameters = schema["function"]["parameters"]
        assert parameters["type"] == "object" and parameters["required"]
        assert all(p["type"] in ("string", "integer", "boolean")  # flat: no nested objects
                   for p in parameters["properties"].values())
    info = perfbox("device-info")
    assert info.returncode == 0 and "nvcc" in info.stdout


@requires_bwrap
@pytest.mark.slow
def test_demo_runs_the_samples() -> None:
    out = perfbox("demo")
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("demo-cuda-compile", "demo-cuda-disasm", "demo-triton-compile",
                 "demo-triton-disasm", "vector_add", "softmax_kernel"):
        assert name in out.stdout


@requires_bwrap
def test_check_from_the_command_line(server, tmp_path: Path) -> None:
    reference = Path(__file__).resolve().parent / "fixtures" / "kernelbench" / "reference.py"
    new = tmp_path / "new.py"
    new.write_text(reference.read_text().replace("class Model(", "class ModelNew("))
    out = perfbox("submit", str(new), "--reference", str(reference), "--tool", "check",
                  "--server", f"127.0.0.1:{server[1]}", "--json")
    assert out.returncode == ExitCode.OK, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "OK" and result["check"]["passed"] is True
    missing = perfbox("submit", str(new), "--tool", "check", "--server", f"127.0.0.1:{server[1]}")
    assert missing.returncode == ExitCode.USAGE and "--reference" in missing.stderr


def test_any_option_field_reaches_the_request_and_a_wrong_one_is_named() -> None:
    from perfbox.cli import build_parser
    from perfbox.cli.submit import build_submit_request

    args = build_parser().parse_args(["submit", str(VECTOR_ADD_CU), "--tool", "disasm",
                                      "--option", "include_ptx=true", "--option",
                                      "archs=[\"sm_80\"]", "--option", "num_warps=8"])
    request = build_submit_request(args)
    assert request.disasm.include_ptx and list(request.disasm.compile.archs) == ["sm_80"]
    assert request.disasm.compile.num_warps == 8
    one = build_submit_request(build_parser().parse_args(
        ["submit", str(VECTOR_ADD_CU), "--tool", "compile", "--option", "archs=sm_80"]))
    assert list(one.compile.archs) == ["sm_80"]  # one value, not its characters
    out = perfbox("submit", str(VECTOR_ADD_CU), "--tool", "compile", "--option", "colour=red",
                  "--server", "127.0.0.1:1")
    assert out.returncode == ExitCode.USAGE
    assert "colour" in out.stderr and "archs" in out.stderr
    wrong = perfbox("submit", str(VECTOR_ADD_CU), "--tool", "compile", "--option", "kernel=123",
                    "--server", "127.0.0.1:1")
    assert wrong.returncode == ExitCode.USAGE and "kernel cannot take 123" in wrong.stderr


@pytest.mark.parametrize("args, message", [
    (["rollout", "--engine", "vllm", "--server", "127.0.0.1:1"], "--engine vllm needs --model"),
    (["rollout", "--engine", "vllm", "--model", "m", "--vllm-arg", "no-equals"], "KEY=VALUE"),
    (["rollout", "--engine", "vllm", "--model", "m", "--draft-alpha", "0.5"], "--draft-alpha"),
    (["rollout", "--group-size", "0"], "--group-size must be at least 1"),
    (["rollout", "--temperature", "-1"], "--temperature must be 0 or more"),
    (["rollout", "--kv-budget", "0"], "--kv-budget must be at least 1 token"),
    (["rollout", "--engine", "vllm", "--model", "m", "--kv-budget", "9"], "num_gpu_blocks"),
    (["bench", "rollout", "--pressure", "1.5"], "give a value in (0, 1]"),
    (["bench", "rollout", "--reps", "0"], "--reps and --trajectories must be at least 1"),
    (["bench", "rollout", "--workload", "nope"], "bundled: kernel-agent, tools"),
    (["worker", "--engine", "vllm"], "--engine vllm needs --model"),
    (["worker", "--engine", "vllm", "--model", "m", "--vllm-arg", "=1"], "KEY=VALUE"),
])
def test_rollout_flags_are_checked(args: list[str], message: str) -> None:
    required_module("llama_cpp", "PERFBOX_REQUIRE_LLAMA")
    out = perfbox(*args, timeout=60)
    assert out.returncode == ExitCode.USAGE, out.stderr
    assert message in out.stderr


@pytest.mark.parametrize("command", ["worker", "rollout"])
def test_the_vllm_engine_without_vllm_is_a_clear_error(command: str) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    out = perfbox(command, "--engine", "vllm", "--model", "m", timeout=60)
    assert out.returncode == ExitCode.USAGE, out.stderr
    assert "pip install vllm" in out.stderr and "Traceback" not in out.stderr


@requires_bwrap
def test_serve_with_tokens_and_submit_with_and_without_one(tmp_path: Path) -> None:
    """`perfbox serve --tokens-file` as a real process: a submit without the token is a usage
    error naming the fix, with --token (or $PERFBOX_TOKEN) it runs."""
    import os
    import time

    tokens = tmp_path / "tokens"
    tokens.write_text("ci-job abcdefghijklmnop0123\n")
    port, metrics_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-m", "perfbox.cli", "serve", "--address",
                               f"127.0.0.1:{port}", "--tokens-file", str(tokens), "--workers",
                               "1", "--no-cache", "--preload", "", "--log-format", "json",
                               "--log-level", "INFO", "--metrics-address",
                               f"127.0.0.1:{metrics_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while perfbox("tools", "--server", f"127.0.0.1:{port}", "--token",
                      "abcdefghijklmnop0123", timeout=30).returncode != 0:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "perfbox serve did not come up"
            time.sleep(0.5)
        args = ("submit", str(VECTOR_ADD_CU), "--tool", "compile", "--server",
                f"127.0.0.1:{port}")
        refused = perfbox(*args)
        assert refused.returncode == ExitCode.USAGE
        assert "UNAUTHENTICATED" in refused.stderr and "bearer token" in refused.stderr
        assert perfbox(*args, "--token", "abcdefghijklmnop0123").returncode == ExitCode.OK
        env = {**os.environ, "PERFBOX_TOKEN": "abcdefghijklmnop0123"}
        by_env = subprocess.run([sys.executable, "-m", "perfbox.cli", *args],
                                capture_output=True, text=True, timeout=300, env=env)
        assert by_env.returncode == ExitCode.OK, by_env.stderr
        metrics = _scrape(metrics_port)
        assert metrics[("perfbox_jobs_total", (("status", "OK"), ("tool", "compile")))] == 2
        assert metrics[("perfbox_rpcs_total", (("client", "anonymous"), ("method", "RunStream"),
                                               ("refused", "UNAUTHENTICATED")))] == 1
        assert metrics[("perfbox_rpcs_total", (("client", "ci-job"), ("method", "RunStream"),
                                               ("refused", "")))] == 2
        assert metrics[("perfbox_job_seconds_count", (("tool", "compile"),))] == 2
        assert ("perfbox_queue_depth", ()) in metrics
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    answered = [r for r in records if r.get("message") == "answered"]
    assert len(answered) == 2 and all(r["tool"] == "compile" and r["status"] == "OK"
                                      and r["job_id"] and "total_ms" in r for r in answered)
    assert {r["level"] for r in records} <= {"INFO", "WARNING", "ERROR"}


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from a /metrics endpoint."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.slow
def test_rollout_tasks_writes_a_result_line_per_trajectory(tmp_path: Path) -> None:
    """`perfbox rollout --tasks`: embedded tool service and worker, the README's example task
    file, one result line per trajectory with the contract's fields, progress on stderr."""
    required_module("llama_cpp", "PERFBOX_REQUIRE_LLAMA")
    tasks = Path(__file__).parent.parent / "examples" / "tasks.jsonl"
    out = tmp_path / "results.jsonl"
    run = perfbox("rollout", "--tasks", str(tasks), "--out", str(out), timeout=900)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    expected = sum(json.loads(t).get("group_size", 1) for t in tasks.read_text().splitlines()
                   if t.strip())
    assert len(lines) == expected
    for line in lines:
        assert {"task_id", "sample", "prompt_ids", "response_ids", "response_mask", "logprobs",
                "turns", "finish_reason", "reward"} <= set(line)
        assert len(line["response_ids"]) == len(line["response_mask"]) == len(line["logprobs"])
        assert "total" in line["reward"] and "refused" in line["reward"]
    assert f"[{expected}/{expected}]" in run.stderr and "done:" in run.stderr


def test_a_bad_task_file_is_a_usage_error(tmp_path: Path) -> None:
    required_module("llama_cpp", "PERFBOX_REQUIRE_LLAMA")
    bad = tmp_path / "tasks.jsonl"
    bad.write_text('{"id": "a", "messages": [{"role": "user", "content": "x"}]}\n{"id": 1,\n')
    out = perfbox("rollout", "--tasks", str(bad), "--out", str(tmp_path / "r.jsonl"), timeout=60)
    assert out.returncode == ExitCode.USAGE
    assert f"{bad}:2: not JSON" in out.stderr.replace("\n", "")
    missing = perfbox("rollout", "--tasks", str(bad), timeout=60)
    assert missing.returncode == ExitCode.USAGE and "--tasks needs --out" in missing.stderr
    absent = perfbox("rollout", "--tasks", str(tmp_path / "none.jsonl"), "--out", "r", timeout=60)
    assert absent.returncode == ExitCode.USAGE and "no such file" in absent.stderr
