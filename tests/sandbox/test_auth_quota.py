"""Auth and transport over a real port: bearer tokens (UNAUTHENTICATED without one), TLS and
mutual TLS with certificates made by openssl for the test, per-client quotas answering
RESOURCE_EXHAUSTED with the wait, which the client honours."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient, make_request, server_retry_delay_s, tls_credentials
from perfbox.sandbox.auth import AuthConfigError, Tokens
from perfbox.sandbox.config import ConfigError
from perfbox.sandbox.quota import QuotaConfig, Quotas
from perfbox.samples import VECTOR_ADD_CU
from tests.conftest import requires_bwrap, start_server

TOKEN_A = "token-of-job-a-0123456789"
TOKEN_B = "token-of-job-b-9876543210"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                            ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(extension + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                 "-out", f"{name}.pem", cwd=d)
    return d


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(f"# client token\njob-a {TOKEN_A}\njob-b {TOKEN_B}\n")
    return path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, pki: Path, tokens_file: Path
            ) -> Iterator[int]:
    """A server with mutual TLS, bearer tokens and a quota of 2 calls/s (burst 2) per client."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    server, port = start_server(tmp_path_factory.mktemp("secured"), tokens_file=tokens_file,
                                tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                                tls_client_ca=pki / "ca.pem",
                                quota=QuotaConfig(rate_per_s=2.0, burst=2))
    yield port
    server.stop(grace_s=2)


def _client(port: int, pki: Path, token: str | None, mutual: bool = True) -> ToolClient:
    creds = tls_credentials(pki / "ca.pem", pki / "client.pem" if mutual else None,
                            pki / "client.key" if mutual else None)
    return ToolClient(f"127.0.0.1:{port}", credentials=creds, token=token, timeout_s=60)


@requires_bwrap
def test_bearer_tokens_over_mutual_tls(secured: int, pki: Path) -> None:
    with _client(secured, pki, TOKEN_A) as client:
        assert client.list_tools().tools
        result = client.run(make_request("compile", {"v.cu": VECTOR_ADD_CU.read_text()},
                                         archs=["sm_90"]))
        assert result.status == pb.OK, result.summary
    for token in (None, "not-a-token-of-this-server"):
        with _client(secured, pki, token) as client:
            with pytest.raises(grpc.RpcError) as e:
                client.list_tools()
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "bearer token" in e.value.details()
            assert client.health() == "SERVING"  # probes need no token


@requires_bwrap
def test_mutual_tls_refuses_a_client_without_a_certificate(secured: int, pki: Path) -> None:
    plain = ToolClient(f"127.0.0.1:{secured}", token=TOKEN_A, timeout_s=10)
    for client in (_client(secured, pki, TOKEN_A, mutual=False), plain):
        with client, pytest.raises(grpc.RpcError) as e:  # the TLS handshake fails
            client.stub.ListTools(pb.ListToolsRequest(), timeout=10, metadata=client.metadata,
                                  wait_for_ready=False)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


@requires_bwrap
def test_quota_answers_with_the_wait_and_the_client_honours_it(secured: int, pki: Path
                                                               ) -> None:
    with _client(secured, pki, TOKEN_B) as client:
        refusals = []
        for _ in range(6):  # 6 calls at once against 2/s with a burst of 2
            try:
                client.stub.ListTools(pb.ListToolsRequest(), timeout=10,
                                      metadata=client.metadata)
            except grpc.RpcError as e:
                refusals.append(e)
        assert refusals, "6 immediate calls against a quota of 2/s were all admitted"
        for e in refusals:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            delay = server_retry_delay_s(e)
            assert delay is not None and 0 < delay <= 1.0
            assert "retry in" in e.details()
        # the client's run waits as told and gets through
        started = time.monotonic()
        request = make_request("compile", {"v.cu": VECTOR_ADD_CU.read_text()}, archs=["sm_90"])
        for _ in range(4):
            client.run(request)
        assert time.monotonic() - started >= 0.9  # 4 calls at 2/s cannot all start at once
    with _client(secured, pki, TOKEN_A) as other:  # quotas are per client
        assert other.list_tools().tools


def test_token_bucket_and_inflight_cap() -> None:
    now = [0.0]
    quotas = Quotas(QuotaConfig(rate_per_s=1.0, burst=2, max_inflight=2), clock=lambda: now[0])
    assert quotas.admit("a") == 0 and quotas.admit("a") == 0
    assert quotas.admit("a") > 0  # over the in-flight cap (and the burst)
    quotas.release("a")
    wait = quotas.admit("a")
    assert wait == pytest.approx(1.0)  # the bucket is empty: one token per second
    now[0] += wait
    assert quotas.admit("a") == 0
    assert quotas.admit("b") == 0  # another client has its own bucket


def test_bad_auth_settings_are_clear(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("job abc\n")
    with pytest.raises(AuthConfigError, match="shorter than 16"):
        Tokens.load(short)
    with pytest.raises(AuthConfigError, match="no such file|No such file"):
        Tokens.load(tmp_path / "missing")
    twice = tmp_path / "twice"
    twice.write_text(f"a {TOKEN_A}\na {TOKEN_B}\n")
    with pytest.raises(AuthConfigError, match="appears twice"):
        Tokens.load(twice)
    tokens = Tokens.load(_write(tmp_path / "ok", f"a {TOKEN_A}\n"))
    assert tokens.client_of(f"Bearer {TOKEN_A}") == "a"
    assert tokens.client_of(TOKEN_A) is None and tokens.client_of(None) is None
    with pytest.raises(ConfigError, match="both a certificate"):
        start_server(tmp_path, tls_cert=tmp_path / "c.pem")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
