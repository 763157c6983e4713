"""Who may call the service: bearer tokens, and the server's TLS (optionally mutual) credentials.

Tokens live in a file the operator mounts from a Kubernetes Secret, one client per line:
`CLIENT_ID TOKEN` (blank lines and `#` comments ignored). The client id names the caller in
quotas, metrics and logs; the token is compared in constant time. Health checks stay open so
kubelet probes need no token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

import grpc

MIN_TOKEN_CHARS = 16
OPEN_METHODS = ("/grpc.health.v1.Health/",)  # prefixes callable without a token


class AuthConfigError(ValueError):
    """A tokens or certificate file that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Tokens:
    """Bearer tokens by client id."""

    by_client: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> Tokens:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise AuthConfigError(f"tokens file {path}: {e.strerror}") from e
        by_client: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise AuthConfigError(f"{path}:{number}: expected 'CLIENT_ID TOKEN'")
            client, token = parts
            if len(token) < MIN_TOKEN_CHARS:
                raise AuthConfigError(f"{path}:{number}: the token of {client!r} is shorter "
                                      f"than {MIN_TOKEN_CHARS} characters")
            if client in by_client:
                raise AuthConfigError(f"{path}:{number}: client {client!r} appears twice")
            by_client[client] = token
        if not by_client:
            raise AuthConfigError(f"tokens file {path} holds no tokens")
        return cls(by_client)

    def client_of(self, authorization: str | None) -> str | None:
        """The client id whose token the `authorization` metadata carries, else None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        offered = authorization[len("Bearer "):].strip().encode()
        found = None
        for client, token in self.by_client.items():  # no early exit: constant time in count
            if hmac.compare_digest(offered, token.encode()):
                found = client
        return found


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the server's TLS; client_ca set means clients must present a certificate
    signed by it (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        def read(path: Path, what: str) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as e:
                raise AuthConfigError(f"TLS {what} {path}: {e.strerror}") from e

        pair = [(read(self.key, "key"), read(self.cert, "certificate"))]
        if self.client_ca is None:
            return grpc.ssl_server_credentials(pair)
        return grpc.ssl_server_credentials(pair, root_certificates=read(self.client_ca, "CA"),
                                           require_client_auth=True)


def is_open(method: str) -> bool:
    return method.startswith(OPEN_METHODS)
