"""flowmesh.events (client.events): the native events API, on a named
mem:// engine shared by the clients of a test and on a real broker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator, Iterator, Optional

import pytest

from flowmesh import FlowMesh, FlowMeshClosedError, FlowMeshInvalidArgumentError, FlowMeshNotFoundError
from flowmesh.ensync import _Native
from flowmesh.events import Event, EventSubscription, generate_key_pair

# Generous: a loaded 2-core machine can take seconds for one delivery.
WAIT_S = 15.0


@pytest.fixture(params=["mem", "grpc"])
def events_url(request: Any) -> Iterator[str]:
    if request.param == "mem":
        url = f"mem://events-{uuid.uuid4().hex[:8]}"
        keeper = _Native(url, {})  # the named engine lives while a client holds it
        try:
            yield url
        finally:
            keeper.close()
        return
    yield str(request.getfixturevalue("broker_url"))


def app(prefix: str) -> str:
    """A unique app id: the broker is shared by the whole session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def connect(url: str, app_id: Optional[str] = None, secret: Optional[str] = None) -> FlowMesh:
    options = {}
    if app_id is not None:
        options["app_id"] = app_id
    if secret is not None:
        options["app_secret_key"] = secret
    client = FlowMesh(url, options=options)
    await client.connect()
    return client


async def take(sub: EventSubscription) -> Event:
    return await asyncio.wait_for(sub.__anext__(), WAIT_S)


async def nothing_for(sub: EventSubscription, seconds: float) -> None:
    """Asserts that no event arrives within ``seconds`` (cancelling the wait
    keeps a delivery that raced with it for the next call)."""
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(sub.__anext__(), seconds)


async def test_iteration_auto_acks_the_previous_event_and_close_hands_back_the_current(events_url: str) -> None:
    sender, receiver = app("orders"), app("shipping")
    a = await connect(events_url, sender)
    b = await connect(events_url, receiver)
    try:
        ids = [
            await a.events.publish("orders/created", [receiver], f"order-{i}".encode(), {"n": i})
            for i in range(3)
        ]
        sub = b.events.subscribe("orders/created")
        first = await take(sub)
        assert (first.id, first.name, first.sender) == (ids[0], "orders/created", sender)
        assert first.payload == b"order-0" and first.metadata == {"n": 0}
        assert first.delivery_count == 1 and not first.encrypted and first.reply_to is None
        assert first.timestamp_ms > 0
        second = await take(sub)  # taking it ends (and auto-acks) the first
        assert second.id == ids[1]
        await sub.aclose()  # the second's handling never finished: back to the inbox

        async with b.events.subscribe("orders/created") as again:
            # The third may have been reserved (and handed back) too, so the
            # two come in either order.
            one = await take(again)
            last = await take(again)
            got = {one.id: one, last.id: last}
            assert sorted(got) == ids[1:] and got[ids[1]].delivery_count == 2
            await again.done(last)
            await nothing_for(again, 0.5)  # all three were acked
    finally:
        await b.close()
        await a.close()


async def test_a_failed_handler_leaves_the_event_for_redelivery(events_url: str) -> None:
    sender, receiver = app("a"), app("b")
    a = await connect(events_url, sender)
    b = await connect(events_url, receiver)
    try:
        async with b.events.subscribe("jobs/run", ack_wait_ms=300) as sub:
            event_id = await a.events.publish("jobs/run", [receiver], b"x")
            ev = await take(sub)
            await sub.done(ev, ok=False)  # not acked: comes back after ack_wait
            again = await take(sub)
            assert again.id == event_id and again.delivery_count == 2
            await sub.done(again)  # acked: never comes back
            await nothing_for(sub, 0.9)
            with pytest.raises(FlowMeshInvalidArgumentError):
                await sub.done(again)  # its handling is over
    finally:
        await b.close()
        await a.close()


async def test_manual_settling_replay_pause_and_resume(events_url: str) -> None:
    sender, receiver = app("a"), app("b")
    a = await connect(events_url, sender)
    b = await connect(events_url, receiver)
    try:
        sub = b.events.subscribe("orders/status", auto_ack=False, ack_wait_ms=60000)
        await sub.start()
        first = await a.events.publish("orders/status", [receiver], b"1")
        ev = await take(sub)
        await sub.ack(ev)
        with pytest.raises(FlowMeshNotFoundError):
            await sub.ack(ev.id)  # already settled

        await a.events.publish("orders/status", [receiver], b"2")
        ev = await take(sub)
        start = asyncio.get_running_loop().time()
        await sub.defer(ev, delay_ms=400, reason="busy")
        again = await take(sub)
        assert again.id == ev.id and again.delivery_count == 2
        assert asyncio.get_running_loop().time() - start >= 0.38
        await sub.discard(again, reason="invalid")

        replayed = await sub.replay(first)
        assert replayed.id == first and replayed.payload == b"1"
        ev = await take(sub)
        assert ev.id == first
        await sub.ack(ev)

        await sub.pause("maintenance")
        await a.events.publish("orders/status", [receiver], b"p")
        await nothing_for(sub, 0.6)
        await sub.resume()
        ev = await take(sub)
        assert ev.payload == b"p"
        await sub.ack(ev)
        assert sub.rejected() == 0
        await sub.aclose()
        with pytest.raises(FlowMeshClosedError):
            await sub.ack(ev)
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
    finally:
        await b.close()
        await a.close()


async def test_sealed_events_arrive_decrypted(events_url: str) -> None:
    sender, receiver = app("a"), app("b")
    a_secret, _ = generate_key_pair()
    b_secret, _ = generate_key_pair()
    a = await connect(events_url, sender, a_secret)
    b = await connect(events_url, receiver, b_secret)
    try:
        async with b.events.subscribe("secret/thing") as sub:  # registers b's key
            await a.events.publish("secret/thing", [receiver], b"\x00\xffsealed")
            ev = await take(sub)
            assert ev.encrypted and ev.payload == b"\x00\xffsealed"
    finally:
        await b.close()
        await a.close()


async def test_bad_input_is_refused_with_clear_errors(events_url: str) -> None:
    receiver = app("b")
    anonymous = await connect(events_url)
    b = await connect(events_url, receiver)
    try:
        with pytest.raises(FlowMeshInvalidArgumentError):
            await anonymous.events.publish("x/y", [receiver], b"")  # no app_id
        with pytest.raises(FlowMeshInvalidArgumentError):
            await b.events.publish("x/y", [], b"")  # no recipient
        with pytest.raises(FlowMeshInvalidArgumentError):
            await b.events.publish("x/y", ["not/an/app"], b"")
        with pytest.raises(FlowMeshInvalidArgumentError):
            await b.events.publish("x/y", [receiver], b"", ["not", "a", "mapping"])  # type: ignore[arg-type]
        with pytest.raises(FlowMeshInvalidArgumentError):
            await b.events.publish("x/y", [receiver], 12)  # not bytes or str
        with pytest.raises(FlowMeshInvalidArgumentError):
            await b.events.publish("x\0y", [receiver], b"")
        with pytest.raises(FlowMeshInvalidArgumentError):
            b.events.subscribe("x/y", ack_wait_ms=-1)
        with pytest.raises(FlowMeshInvalidArgumentError):
            await b.events.subscribe("", ack_wait_ms=1000).start()
        with pytest.raises(FlowMeshInvalidArgumentError):
            await connect(events_url, receiver, "not-a-key")
        sub = b.events.subscribe("x/y")
        with pytest.raises(FlowMeshClosedError):
            await sub.ack(1)  # not started
        await sub.start()
        with pytest.raises(FlowMeshInvalidArgumentError):
            await sub.done(1)  # nothing is being handled
        with pytest.raises(FlowMeshNotFoundError):
            await sub.ack(123456789)
        await sub.aclose()
    finally:
        await b.close()
        await anonymous.close()
    with pytest.raises(FlowMeshClosedError):
        await b.events.publish("x/y", [receiver], b"")


async def test_closing_the_client_ends_the_iteration(events_url: str) -> None:
    b = await connect(events_url, app("b"))
    sub = b.events.subscribe("idle/name")
    await sub.start()

    async def drain(s: AsyncIterator[Event]) -> int:
        return len([e async for e in s])

    task = asyncio.ensure_future(drain(sub))
    await asyncio.sleep(0.1)
    await b.close()
    assert await asyncio.wait_for(task, WAIT_S) == 0
