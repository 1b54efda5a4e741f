"""TLS + token against a real broker: `flowmesh serve` with a
certificate from tests/security/fixture.sh and an access file; the client
connects with grpcs://, tls_ca_file and ``auth_token``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from flowmesh import FlowMesh, FlowMeshUnauthorizedError, FlowMeshUnavailableError

from conftest import REPO, _broker_binary, _free_port, _wait_listening, stop_broker

T, NS = "acme", "secure"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[str, Path]]:
    """(grpcs:// URL by host name, fixture directory) of a TLS broker with tokens."""
    binary = _broker_binary()
    if not binary.is_file():
        pytest.skip(f"no broker: {binary} is not built")
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make test certificates")
    d = tmp_path_factory.mktemp("security")
    subprocess.run([str(REPO / "tests" / "security" / "fixture.sh"), str(binary), str(d)], check=True, timeout=120)
    port = _free_port()
    log = open(os.environ.get("FLOWMESH_BROKER_LOG", os.devnull), "ab")
    proc = subprocess.Popen(
        [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--data", "mem://",
         "--tls-cert", str(d / "server.pem"), "--tls-key", str(d / "server.key"),
         "--access-file", str(d / "access.json")],
        stdout=log,
        stderr=log,
    )
    log.close()
    try:
        _wait_listening(port, proc, timeout=20)
        yield f"grpcs://localhost:{port}", d
    finally:
        stop_broker(proc)


def _client(url: str, d: Path, token: "str | None", **extra: object) -> FlowMesh:
    options = {"tls_ca_file": str(d / "ca.pem"), "connect_timeout_ms": 3000, **extra}
    return FlowMesh(url, auth_token=token, options=options)


async def test_tls_and_token_round_trip(tls_broker: Tuple[str, Path]) -> None:
    url, d = tls_broker
    async with _client(url, d, "test-full-token") as client:
        await client.kv.set(T, NS, "cfg", "k", b"over tls")
        assert await client.kv.get(T, NS, "cfg", "k") == b"over tls"
    async with _client(url, d, "test-read-token") as reader:
        assert await reader.kv.get(T, NS, "cfg", "k") == b"over tls"
        with pytest.raises(FlowMeshUnauthorizedError, match="no kv_write grant"):
            await reader.kv.set(T, NS, "cfg", "k", b"nope")


async def test_missing_wrong_and_foreign_tokens_are_unauthorized(tls_broker: Tuple[str, Path]) -> None:
    url, d = tls_broker
    for token in (None, "wrong-token"):
        async with _client(url, d, token) as client:
            with pytest.raises(FlowMeshUnauthorizedError):
                await client.kv.get(T, NS, "cfg", "k")
    async with _client(url, d, "test-full-token") as client:
        with pytest.raises(FlowMeshUnauthorizedError, match="another tenant"):
            await client.kv.get("globex", NS, "cfg", "k")


async def test_tls_mismatches_fail_fast(tls_broker: Tuple[str, Path]) -> None:
    url, d = tls_broker
    started = time.monotonic()
    plain = url.replace("grpcs://localhost", "grpc://127.0.0.1")
    with pytest.raises(FlowMeshUnavailableError, match="grpcs://"):
        async with _client(plain, d, "test-full-token"):
            pass
    with pytest.raises(FlowMeshUnavailableError, match="certificate"):
        async with _client(url, d, "test-full-token", tls_ca_file=str(d / "other-ca.pem")):
            pass
    assert time.monotonic() - started < 10
