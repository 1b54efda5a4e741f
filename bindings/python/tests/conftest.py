"""Shared fixtures: engines to run against, unique names, a real broker.

Async tests run with plain asyncio.run (no plugin), each under a time limit
so a hang fails the test instead of the whole run.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
TEST_TIMEOUT_S = float(os.environ.get("FLOWMESH_TEST_TIMEOUT", "60"))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: Any) -> Any:
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}

    async def limited() -> None:
        await asyncio.wait_for(fn(**kwargs), TEST_TIMEOUT_S)

    asyncio.run(limited())
    return True


# ---- a real broker ----------------------------------------------------------
def _broker_binary() -> Path:
    return Path(os.environ.get("FLOWMESH_BIN", str(REPO / "target" / "release" / "flowmesh")))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: "subprocess.Popen[bytes]", timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flowmesh serve exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"flowmesh serve did not listen on port {port} within {timeout}s")


def start_broker(
    data: str = "mem://", port: int = 0, ws: bool = False, args: "tuple[str, ...]" = ()
) -> "tuple[subprocess.Popen[bytes], str]":
    """Start `flowmesh serve` on a loopback port (a free one unless given)
    with ``data`` (in memory by default). Skips the test when there is no
    binary with a working `serve`. With ``ws`` it also serves WebSocket
    (`--ws`) and the URL returned is its ws:// one."""
    binary = _broker_binary()
    if not binary.is_file():
        pytest.skip(f"no broker: {binary} is not built")
    probe = subprocess.run([str(binary), "serve", "--help"], capture_output=True, timeout=30)
    if probe.returncode != 0 or b"--listen" not in probe.stdout + probe.stderr:
        pytest.skip(f"no broker: {binary} has no `serve --listen` command yet")
    port = port or _free_port()
    ws_port = _free_port() if ws else 0
    extra = ["--ws", f"127.0.0.1:{ws_port}"] if ws else []
    log = open(os.environ.get("FLOWMESH_BROKER_LOG", os.devnull), "ab")
    proc = subprocess.Popen(
        [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--data", data, *extra, *args],
        stdout=log,
        stderr=log,
    )
    log.close()  # the child keeps its own descriptor
    try:
        _wait_listening(port, proc, timeout=20)
        if ws:
            _wait_listening(ws_port, proc, timeout=20)
    except RuntimeError:
        stop_broker(proc)
        if proc.returncode == 0:  # a stub that returns at once
            pytest.skip(f"no broker: `{binary} serve` exits without listening")
        raise
    return proc, f"ws://127.0.0.1:{ws_port}" if ws else f"grpc://127.0.0.1:{port}"


def stop_broker(proc: "subprocess.Popen[bytes]") -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """grpc:// URL of a broker shared by the session, stopped afterwards."""
    proc, url = start_broker()
    try:
        yield url
    finally:
        stop_broker(proc)


@pytest.fixture(scope="session")
def ws_broker_url() -> Iterator[str]:
    """ws:// URL of a broker's WebSocket listener shared by the session."""
    proc, url = start_broker(ws=True)
    try:
        yield url
    finally:
        stop_broker(proc)


@pytest.fixture(scope="session")
def nats_url(nats_server: "NatsServer") -> str:
    """nats:// URL of the session's nats-server (see `nats_server` below)."""
    return nats_server.url


# ---- engines ----------------------------------------------------------------------
ENGINES = ["mem", "file", "grpc", "ws", "nats"]


@pytest.fixture(params=ENGINES)
def url(request: Any, tmp_path: Path) -> str:
    """Every core test runs on the embedded memory engine, the durable file
    engine (fresh directory) and a real broker, over gRPC and over its
    WebSocket listener, and on a nats-server (JetStream)."""
    if request.param == "mem":
        return "mem://"
    if request.param == "file":
        return f"file://{tmp_path / 'data'}"
    if request.param == "ws":
        return str(request.getfixturevalue("ws_broker_url"))
    if request.param == "nats":
        return str(request.getfixturevalue("nats_url"))
    return str(request.getfixturevalue("broker_url"))


@pytest.fixture(params=["file", "grpc"])
def shared_url(request: Any, tmp_path: Path) -> str:
    """Engines whose data outlives one client (mem:// is private to a client):
    for code that opens several clients on the same data."""
    if request.param == "file":
        return f"file://{tmp_path / 'data'}"
    return str(request.getfixturevalue("broker_url"))


@pytest.fixture
def name() -> str:
    """A unique resource name: the broker is shared by the whole session."""
    return f"r-{uuid.uuid4().hex[:12]}"


# ---- a real nats-server -------------------------------------------------------------
def _nats_server_binary() -> str:
    """scripts/nats-server.sh's nats-server v2.15.3 (built and cached once);
    skips the test when it cannot be had."""
    try:
        out = subprocess.run(
            [str(REPO / "scripts" / "nats-server.sh")], capture_output=True, timeout=300, text=True
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"no nats-server: {e}")
    path = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0 or not os.path.isfile(path):
        pytest.skip(f"no nats-server: scripts/nats-server.sh failed: {out.stderr.strip()[-300:]}")
    return path


class NatsServer:
    """A JetStream nats-server on loopback ports, its store in ``store``;
    ``monitor`` is its HTTP monitoring port (``/jsz``)."""

    def __init__(self, store: Path, port: int = 0) -> None:
        self.binary = _nats_server_binary()
        self.store = store
        self.port = port or _free_port()
        self.monitor = _free_port()
        self.proc: "Optional[subprocess.Popen[bytes]]" = None
        self.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(os.environ.get("FLOWMESH_NATS_LOG", os.devnull), "ab")
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor), "-sd", str(self.store)],
            stdout=log,
            stderr=log,
        )
        log.close()
        try:
            _wait_listening(self.port, self.proc, timeout=20)
            _wait_listening(self.monitor, self.proc, timeout=20)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            stop_broker(self.proc)
            self.proc = None

    def jsz(self) -> Any:
        """The server's JetStream report with its streams (``/jsz?streams=true``)."""
        import json
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/jsz?streams=true", timeout=5) as r:
            return json.loads(r.read())

    def stream_names(self) -> "list[str]":
        names: "list[str]" = []
        for account in self.jsz().get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                names.append(stream["name"])
        return names


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: Any) -> Iterator[NatsServer]:
    """One JetStream nats-server shared by the session, stopped afterwards."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()
