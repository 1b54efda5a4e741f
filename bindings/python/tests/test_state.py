"""Connection state: ConnState, client.state and client.on_state, embedded
and against a broker that is killed and restarted on the same port."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import List, Optional, Tuple

import pytest
from conftest import start_broker, stop_broker

from flowmesh import (
    ConnState,
    FlowMesh,
    FlowMeshClosedError,
    FlowMeshDisconnectedError,
    FlowMeshError,
    FlowMeshInvalidArgumentError,
)

Seen = List[Tuple[ConnState, Optional[FlowMeshError]]]

FAST = {
    "heartbeat_ms": "100",
    "reconnect_initial_ms": "50",
    "reconnect_max_ms": "200",
    "reconnect_jitter_ms": "0",
    "connect_timeout_ms": "500",
    "request_timeout_ms": "1000",
}


async def wait_for_state(seen: Seen, state: ConnState, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(s == state for s, _ in seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {state.name} within {timeout}s; saw {[s.name for s, _ in seen]}")
        await asyncio.sleep(0.01)


def test_conn_state_values_match_the_header() -> None:
    assert [(s.name, int(s)) for s in ConnState] == [
        ("CONNECTING", 1),
        ("CONNECTED", 2),
        ("RECONNECTING", 3),
        ("DISCONNECTED", 4),
        ("CLOSED", 5),
    ]


async def test_embedded_reports_connected_then_closed() -> None:
    seen: Seen = []
    loop_thread: List[bool] = []
    client = FlowMesh("mem://")
    with pytest.raises(FlowMeshClosedError):
        client.state  # not connected yet
    await client.connect()
    assert client.state is ConnState.CONNECTED

    def on_state(state: ConnState, error: Optional[FlowMeshError]) -> None:
        loop_thread.append(threading.current_thread() is threading.main_thread())
        seen.append((state, error))

    client.on_state(on_state)
    await wait_for_state(seen, ConnState.CONNECTED)
    await client.close()
    # CLOSED arrives before close() returns (close joins the listener thread).
    await asyncio.sleep(0)
    assert [s for s, _ in seen] == [ConnState.CONNECTED, ConnState.CLOSED]
    assert all(e is None for _, e in seen)
    assert all(loop_thread), "callbacks run on the event loop's thread"
    assert client.state is ConnState.CLOSED
    with pytest.raises(FlowMeshClosedError):
        client.on_state(on_state)


async def test_listener_added_before_connect_and_coroutine_callbacks() -> None:
    seen: Seen = []

    async def on_state(state: ConnState, error: Optional[FlowMeshError]) -> None:
        await asyncio.sleep(0)
        seen.append((state, error))

    client = FlowMesh("mem://")
    client.on_state(on_state)
    async with client:
        await wait_for_state(seen, ConnState.CONNECTED)
    await wait_for_state(seen, ConnState.CLOSED)
    assert [s for s, _ in seen] == [ConnState.CONNECTED, ConnState.CLOSED]


async def test_callback_without_loop_runs_on_the_library_thread() -> None:
    seen: Seen = []
    threads: List[str] = []

    def on_state(state: ConnState, error: Optional[FlowMeshError]) -> None:
        threads.append(threading.current_thread().name)
        seen.append((state, error))

    async with FlowMesh("mem://") as client:
        # A thread without a running loop: delivered on the library thread.
        t = threading.Thread(target=client.on_state, args=(on_state,))
        t.start()
        t.join()
        await wait_for_state(seen, ConnState.CONNECTED)
        # A callback that raises is logged, not fatal.
        client.on_state(lambda s, e: 1 / 0)
        assert await client.health_check()
    assert [s for s, _ in seen] == [ConnState.CONNECTED, ConnState.CLOSED]
    assert threading.main_thread().name not in threads


async def test_bad_callback_and_too_many_listeners() -> None:
    async with FlowMesh("mem://") as client:
        with pytest.raises(FlowMeshInvalidArgumentError):
            client.on_state("nope")  # type: ignore[arg-type]
        for _ in range(16):
            client.on_state(lambda s, e: None)
        with pytest.raises(FlowMeshInvalidArgumentError):
            client.on_state(lambda s, e: None)


async def test_unknown_option_rejected_new_options_accepted() -> None:
    with pytest.raises(FlowMeshInvalidArgumentError):
        await FlowMesh("mem://", options={"heartbeat_msec": "100"}).connect()
    options = {
        "heartbeat_ms": 0,
        "max_retries": 5,
        "breaker_threshold": 0,
        "breaker_timeout_ms": 1000,
        "max_in_flight": 8,
        "nonblocking": "true",
    }
    async with FlowMesh("mem://", options=options) as client:
        assert client.state is ConnState.CONNECTED
    with pytest.raises(FlowMeshInvalidArgumentError):
        await FlowMesh("mem://", options={"nonblocking": "maybe"}).connect()


async def test_broker_killed_and_restarted_reports_reconnecting_then_connected() -> None:
    proc, url = start_broker()
    port = int(url.rsplit(":", 1)[1])
    try:
        seen: Seen = []
        async with FlowMesh(url, options=FAST) as client:
            client.on_state(lambda s, e: seen.append((s, e)))
            await wait_for_state(seen, ConnState.CONNECTED)
            assert client.state is ConnState.CONNECTED
            proc.kill()  # SIGKILL
            proc.wait(10)
            await wait_for_state(seen, ConnState.RECONNECTING)
            assert client.state in (ConnState.RECONNECTING, ConnState.CONNECTING)
            reconnecting = next(e for s, e in seen if s == ConnState.RECONNECTING)
            assert reconnecting is None or isinstance(reconnecting, FlowMeshError)
            proc, _ = start_broker(port=port)
            deadline = time.monotonic() + 5
            while [s for s, _ in seen].count(ConnState.CONNECTED) < 2:
                assert time.monotonic() < deadline, f"no reconnect: {[s.name for s, _ in seen]}"
                await asyncio.sleep(0.01)
            assert client.state is ConnState.CONNECTED
            assert await client.health_check()
        states = [s for s, _ in seen]
        assert states[0] == ConnState.CONNECTED and states[-1] == ConnState.CLOSED
        first_reconnecting = states.index(ConnState.RECONNECTING)
        assert ConnState.CONNECTED in states[first_reconnecting:]
        assert ConnState.DISCONNECTED not in states
        # Every change is a change: no state is reported twice in a row.
        assert all(a != b for a, b in zip(states, states[1:])), states
    finally:
        stop_broker(proc)


async def test_disconnected_after_max_reconnect_attempts() -> None:
    proc, url = start_broker()
    try:
        seen: Seen = []
        options = {**FAST, "max_reconnect_attempts": "1"}
        async with FlowMesh(url, options=options) as client:
            client.on_state(lambda s, e: seen.append((s, e)))
            await wait_for_state(seen, ConnState.CONNECTED)
            proc.kill()
            proc.wait(10)
            await wait_for_state(seen, ConnState.DISCONNECTED, timeout=10)
            error = next(e for s, e in seen if s == ConnState.DISCONNECTED)
            assert error is None or isinstance(error, FlowMeshError)
            assert client.state is ConnState.DISCONNECTED
            with pytest.raises(FlowMeshDisconnectedError):
                await client.kv.get("t", "ns", "b", "k")
        assert [s for s, _ in seen][-1] == ConnState.CLOSED
    finally:
        stop_broker(proc)
