"""The EnSync Python SDK's examples on flowmesh.ensync: its examples
run with only the import and the URL changed, on mem:// and on a broker."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import types
import uuid
from typing import Any, Dict, Iterator, List

import pytest

from conftest import start_broker, stop_broker
from flowmesh.ensync import EnSyncEngine, EnSyncError, _Native, generate_key_pair

# The EnSync SDK's examples, verbatim but for the import and the URL (__URL__).
QUICK_START = '''
import asyncio
import os
from dotenv import load_dotenv
from flowmesh.ensync import EnSyncEngine

load_dotenv()

async def quick_start():
    try:
        # 1. Initialize engine and create client
        engine = EnSyncEngine("__URL__")
        client = await engine.create_client(
            os.environ.get("ENSYNC_APP_KEY"),
            {
                "app_secret_key": os.environ.get("ENSYNC_SECRET_KEY")
            }
        )

        # 2. Publish an event
        await client.publish(
            "orders/status/updated",
            ["appId"],  # The appId of the receiving party
            {"order_id": "order-123", "status": "completed"}
        )

        # 3. Subscribe to events
        subscription = await client.subscribe("orders/status/updated")

        # 4. Handle incoming events
        async def handle_event(event):
            print(f"Received order update: {event['payload']['order_id']}")
            # Process event...

        subscription.on(handle_event)

        # 5. Keep the program running
        try:
            await asyncio.Future()  # Run indefinitely
        except KeyboardInterrupt:
            await subscription.unsubscribe()
            await client.close()

    except Exception as e:
        print(f'Error: {e}')
'''

PUBLISHING = '''
import asyncio
import os
from dotenv import load_dotenv
from flowmesh.ensync import EnSyncEngine

load_dotenv()

async def publishing_example():
    # Create client
    engine = EnSyncEngine("__URL__")
    client = await engine.create_client(os.environ.get("ENSYNC_APP_KEY"))

    # Basic publish - returns event ID
    event_id = await client.publish(
        "notifications/email/sent",
        ["appId"],  # The appId of the receiving party
        {"to": "user@example.com", "subject": "Welcome!"}
    )
    print(f"Published event: {event_id}")

    # With metadata
    event_id = await client.publish(
        "notifications/email/sent",
        ["appId"],
        {"to": "user@example.com", "subject": "Welcome!"},
        {"source": "email-service", "priority": "high"}
    )
    print(f"Published event with metadata: {event_id}")

    await client.close()
'''

SUBSCRIBING = '''
import asyncio
import os
from dotenv import load_dotenv
from flowmesh.ensync import EnSyncEngine

load_dotenv()

async def subscribing_example():
    engine = EnSyncEngine("__URL__")
    client = await engine.create_client(os.environ.get("ENSYNC_APP_KEY"))

    # Subscribe to events
    subscription = await client.subscribe("notifications/email/sent")

    # Handle events
    async def handle_email_notification(event):
        email_data = event['payload']
        print(f"Email sent to: {email_data['to']}")
        print(f"Subject: {email_data['subject']}")

        # Event is automatically acknowledged

    subscription.on(handle_email_notification)

    # Keep running
    try:
        await asyncio.Future()
    except KeyboardInterrupt:
        await subscription.unsubscribe()
        await client.close()
'''


@pytest.fixture(params=["mem", "grpc", "ws"])
def ensync_url(request: Any) -> Iterator[str]:
    """mem://<unique> (shared by the clients of one test) or a fresh broker,
    over gRPC or over its WebSocket listener."""
    if request.param == "mem":
        # A named mem:// engine lives while a client holds it: keep one open
        # so data outlives the examples' own clients, as on a broker.
        url = f"mem://ensync-{uuid.uuid4().hex[:8]}"
        keeper = _Native(url, {})
        try:
            yield url
        finally:
            keeper.close()
        return
    proc, url = start_broker(ws=request.param == "ws")
    try:
        yield url
    finally:
        stop_broker(proc)


@pytest.fixture(autouse=True)
def fake_dotenv(monkeypatch: Any) -> None:
    """The examples import python-dotenv; the environment is set by the test."""
    mod = types.ModuleType("dotenv")
    setattr(mod, "load_dotenv", lambda *a, **k: True)
    monkeypatch.setitem(sys.modules, "dotenv", mod)


def load(source: str, url: str) -> Dict[str, Any]:
    scope: Dict[str, Any] = {"__name__": "ensync_example"}
    exec(compile(source.replace("__URL__", url), "ensync_example", "exec"), scope)
    return scope


async def wait_for_text(buf: io.StringIO, text: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while text not in buf.getvalue():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{text!r} not printed; output: {buf.getvalue()!r}")
        await asyncio.sleep(0.02)


async def run_until_printed(coro: Any, buf: io.StringIO, text: str) -> None:
    task = asyncio.ensure_future(coro)
    try:
        await wait_for_text(buf, text)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_ensync_quick_start_encrypted(ensync_url: str, monkeypatch: Any) -> None:
    secret, _ = generate_key_pair()
    monkeypatch.setenv("ENSYNC_APP_KEY", "appId")
    monkeypatch.setenv("ENSYNC_SECRET_KEY", secret)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        await run_until_printed(load(QUICK_START, ensync_url)["quick_start"](), buf, "Received order update: order-123")
    assert "Error" not in buf.getvalue()


async def test_ensync_publishing_and_subscribing_examples(ensync_url: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("ENSYNC_APP_KEY", "email-service")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        await load(PUBLISHING, ensync_url)["publishing_example"]()
    out = buf.getvalue()
    assert "Published event: " in out and "Published event with metadata: " in out
    # The receiving party runs the subscribing example and gets both.
    monkeypatch.setenv("ENSYNC_APP_KEY", "appId")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        task = asyncio.ensure_future(load(SUBSCRIBING, ensync_url)["subscribing_example"]())
        try:
            await wait_for_text(buf, "Subject: Welcome!\nEmail sent to: user@example.com\nSubject: Welcome!")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_ensync_subscription_control_reply_and_errors(ensync_url: str) -> None:
    engine = EnSyncEngine(ensync_url)
    orders = await engine.create_client("orders-app")
    shipping = await engine.create_client("shipping-app")
    subscription = await shipping.subscribe("orders/status/updated", auto_ack=False, ack_wait_ms=60000)
    got: List[Dict[str, Any]] = []
    # A queue, not a flag: events released together (after resume) can all
    # be handled before this task wakes, and each must be seen.
    arrived: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()

    async def handle_event(event: Dict[str, Any]) -> None:
        got.append(event)
        arrived.put_nowait(event)

    subscription.on(handle_event)

    async def next_event() -> Dict[str, Any]:
        return await asyncio.wait_for(arrived.get(), 15)

    first = await orders.publish("orders/status/updated", ["shipping-app"], {"order_id": "1"}, {"k": "v"})
    event = await next_event()
    assert (event["idem"], event["eventName"], event["sender"]) == (first, "orders/status/updated", "orders-app")
    assert event["payload"] == {"order_id": "1"} and event["metadata"] == {"k": "v"}
    assert event["block"] == int(first) and event["timestamp"] > 0
    await subscription.ack(event["idem"], event["block"])
    with pytest.raises(EnSyncError):
        await subscription.ack(event["idem"], event["block"])

    # Defer: back after the delay, not before.
    await orders.publish("orders/status/updated", ["shipping-app"], {"order_id": "2"})
    event = await next_event()
    start = asyncio.get_running_loop().time()
    await subscription.defer(event["idem"], delay_ms=400, reason="Temporary unavailability")
    again = await next_event()
    assert again["idem"] == event["idem"] and again["deliveryCount"] == 2
    assert asyncio.get_running_loop().time() - start >= 0.38
    await subscription.discard(again["idem"], reason="Invalid data")

    # Replay returns the event and delivers it once more.
    replayed_event = await subscription.replay(first)
    assert replayed_event["payload"] == {"order_id": "1"}
    event = await next_event()
    assert event["idem"] == first
    await subscription.ack(event["idem"])

    # Pause holds delivery; resume releases everything.
    await subscription.pause("Maintenance in progress")
    for i in range(3):
        await orders.publish("orders/status/updated", ["shipping-app"], {"order_id": f"p{i}"})
    await asyncio.sleep(0.6)
    assert len(got) == 4
    await subscription.resume()
    for _ in range(3):
        event = await next_event()
        await subscription.ack(event["idem"])
    assert [e["payload"]["order_id"] for e in got[-3:]] == ["p0", "p1", "p2"]

    # Reply to the sender.
    replies = await orders.subscribe("orders/status/updated")
    reply_seen = asyncio.Event()
    reply_payloads: List[Any] = []

    def on_reply(ev: Dict[str, Any]) -> None:  # sync handlers work too
        reply_payloads.append(ev["payload"])
        reply_seen.set()

    replies.on(on_reply)
    await shipping.publish(event.get("eventName"), [event.get("sender")], {"status": "received"})
    await asyncio.wait_for(reply_seen.wait(), 15)
    assert reply_payloads == [{"status": "received"}]

    await subscription.unsubscribe()
    await subscription.unsubscribe()  # idempotent
    with pytest.raises(EnSyncError):
        await subscription.ack("1")
    with pytest.raises(EnSyncError):
        await orders.publish("orders/created", ["not/an/app"], {"order_id": "123"})
    with pytest.raises(EnSyncError):
        await engine.create_client("x", {"app_secret_key": "not-a-key"})
    await shipping.close()
    await orders.close()

    # Context manager form.
    async with engine.create_client("your-app-key") as client:
        await client.publish("event/name", ["appId"], {"data": "value"})
    with pytest.raises(EnSyncError):
        await client.publish("event/name", ["appId"], {"data": "value"})


async def test_unsubscribe_inside_a_handler_and_bytes_payloads(ensync_url: str) -> None:
    engine = EnSyncEngine(ensync_url)
    a = await engine.create_client("a-app")
    b = await engine.create_client("b-app")
    sub = await b.subscribe("raw")
    seen: List[Any] = []

    async def once(event: Dict[str, Any]) -> None:
        seen.append(event["payload"])
        await sub.unsubscribe()

    sub.on(once)
    await a.publish("raw", ["b-app"], b"\x00\xffbinary")
    await a.publish("raw", ["b-app"], b"second")
    for _ in range(300):
        if seen:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert seen == [b"\x00\xffbinary"]
    await b.close()
    await a.close()
