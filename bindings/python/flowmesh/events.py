"""Events to named recipients (``client.events``), see docs/EVENTS.md.

Connect with the option ``app_id`` (and ``app_secret_key`` for end-to-end
sealing, from :func:`generate_key_pair`)::

    async with flowmesh.connect("mem://", options={"app_id": "billing"}) as client:
        event_id = await client.events.publish("orders/created", ["shipping"], b"{...}")

    async with flowmesh.connect("mem://", options={"app_id": "shipping"}) as client:
        async with client.events.subscribe("orders/created") as events:
            async for event in events:
                ...  # handled: acked when the next event is taken (auto_ack)

One event is handled at a time per subscription. The handler of an event
finishes when the iterator is asked for the next one, or at
:meth:`EventSubscription.done` (which can also report a failure); with
``auto_ack`` the library then acks it, unless it was acked, deferred or
discarded meanwhile, and a failed one comes back after ``ack_wait_ms``. That
rule lives in the native core, the same for every binding. Closing the
subscription hands an event whose handler did not finish back to the inbox.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import _native as n
from ._bridge import Channel, Subscription, SubState
from ._core import Call, Core, Options
from ._errors import FlowMeshClosedError, FlowMeshInvalidArgumentError, check, raise_status
from ._native import FM_OK, lib, string_at
from ._util import non_negative, payload_bytes, text

if TYPE_CHECKING:
    from .client import FlowMesh

__all__ = ["Event", "EventsClient", "EventSubscription", "generate_key_pair"]


@dataclass(frozen=True)
class Event:
    """A delivered event."""

    #: Unique within the tenant/namespace.
    id: int
    name: str
    #: The publisher's app id.
    sender: str
    #: Publish time, milliseconds since the Unix epoch (sender's clock).
    timestamp_ms: int
    #: The plaintext payload (decrypted when it was sealed).
    payload: bytes
    #: The metadata JSON object, never encrypted; None if the event has none.
    metadata: Optional[Dict[str, Any]]
    #: Deliveries to this app so far, this one included (0 for a replay result).
    delivery_count: int
    encrypted: bool
    #: The id of the event this one replies to, if it is a reply.
    reply_to: Optional[int]


def _event_from(ev: int) -> Event:
    """Copies a borrowed fm_event."""
    native = lib()
    size = ctypes.c_size_t()
    data = native.fm_event_payload(ev, ctypes.byref(size))
    raw_meta = native.fm_event_metadata(ev)
    try:
        metadata = json.loads(raw_meta.decode()) if raw_meta else None
    except ValueError:  # the library checks it is JSON; keep the text if not
        metadata = {"": raw_meta.decode("utf-8", "replace")}
    has_reply = ctypes.c_bool()
    reply_to = int(native.fm_event_reply_to(ev, ctypes.byref(has_reply)))
    return Event(
        id=int(native.fm_event_id(ev)),
        name=(native.fm_event_name(ev) or b"").decode("utf-8", "replace"),
        sender=(native.fm_event_sender(ev) or b"").decode("utf-8", "replace"),
        timestamp_ms=int(native.fm_event_timestamp_ms(ev)),
        payload=string_at(data, size.value),
        metadata=metadata,
        delivery_count=int(native.fm_event_delivery_count(ev)),
        encrypted=bool(native.fm_event_encrypted(ev)),
        reply_to=reply_to if has_reply.value else None,
    )


def generate_key_pair() -> Tuple[str, str]:
    """A new X25519 key pair ``(secret, public)``, both base64: connect with
    the secret as ``app_secret_key``; the public key is registered for you."""
    native = lib()
    sec, pub = ctypes.c_void_p(), ctypes.c_void_p()
    check(native.fm_event_keygen(ctypes.byref(sec), ctypes.byref(pub)), "generate a key pair")
    try:
        out: List[str] = []
        for buf in (sec, pub):
            size = ctypes.c_size_t()
            out.append(string_at(native.fm_buf_data(buf, ctypes.byref(size)), size.value).decode())
        return out[0], out[1]
    finally:
        native.fm_buf_free(sec)
        native.fm_buf_free(pub)


def _event_id(value: Any) -> int:
    if isinstance(value, Event):
        return value.id
    try:
        return non_negative(int(value), "event id")
    except (TypeError, ValueError):
        raise FlowMeshInvalidArgumentError(f"not an event id: {value!r}") from None


def _metadata(metadata: Optional[Mapping[str, Any]]) -> Optional[bytes]:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise FlowMeshInvalidArgumentError("metadata must be a mapping (a JSON object)")
    return json.dumps(dict(metadata)).encode()


class EventsClient:
    """``client.events``: publish events and subscribe this app to them."""

    def __init__(self, client: "FlowMesh") -> None:
        self._client = client

    async def publish(
        self,
        event_name: str,
        recipients: Sequence[str],
        payload: Any = b"",
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> int:
        """Publishes ``payload`` (bytes or str) under ``event_name`` to the
        recipients' app ids; returns the event id. Sealed for the recipients
        when every one has a registered key, in clear when none has."""
        name = text(event_name, "event_name")
        if isinstance(recipients, str):
            recipients = [recipients]
        ids = [text(r, "recipient") for r in recipients]
        body = payload_bytes(payload)
        meta = _metadata(metadata)
        array = (ctypes.c_char_p * max(len(ids), 1))(*ids)

        def work(h: int, _: Call) -> int:
            out = ctypes.c_uint64()
            status = lib().fm_event_publish(h, name, array, len(ids), body, len(body), meta, ctypes.byref(out))
            check(status, f"publish {event_name}")
            return int(out.value)

        return await self._client._core().run(work)

    def subscribe(
        self, event_name: str, *, auto_ack: bool = True, ack_wait_ms: int = 30000
    ) -> "EventSubscription":
        """An async iterator of the events sent to this app under
        ``event_name``; subscribes on first use (or ``await sub.start()`` /
        ``async with``). Each app has one durable inbox per event name,
        shared by its subscriptions (competing consumers). An event not
        acked, deferred or discarded within ``ack_wait_ms`` comes back."""
        return EventSubscription(self._client, text(event_name, "event_name"), auto_ack, ack_wait_ms)


class _EventState(SubState[Event]):
    """The native event subscription behind one iterator."""

    def unsubscribe_native(self, handle: int) -> None:
        lib().fm_event_unsubscribe(handle)

    def status_sync(self) -> None:
        with self._lock:
            if self._released or not self._handle:
                return
            rejected = ctypes.c_uint64()
            status = lib().fm_event_subscription_status(self._handle, ctypes.byref(rejected))
        # A rejected (tampered) delivery is reported, not fatal: only an
        # error that ended delivery ends the iteration.
        if status != FM_OK and rejected.value == 0:
            raise_status(status, self.operation)

    def call(self, fn: Any, operation: str) -> Any:
        """``fn(subscription handle)`` on this thread, the handle kept alive."""
        with self._lock:
            if self._released or not self._handle:
                raise FlowMeshClosedError("the event subscription is closed")
            return fn(self._handle)

    def rejected_sync(self) -> int:
        def status(h: int) -> int:
            rejected = ctypes.c_uint64()
            st = lib().fm_event_subscription_status(h, ctypes.byref(rejected))
            if st != FM_OK and rejected.value == 0:
                raise_status(st, self.operation)
            return int(rejected.value)

        return int(self.call(status, "status"))


class EventSubscription(Subscription[Event]):
    """Delivery of one event name to this app, one event at a time: iterate
    it, settle events with ack / defer / discard, replay, pause, resume."""

    def __init__(self, client: "FlowMesh", name: bytes, auto_ack: bool, ack_wait_ms: int) -> None:
        if not isinstance(auto_ack, bool):
            raise FlowMeshInvalidArgumentError("auto_ack must be a bool")
        self.event_name = name.decode()
        options = {
            "auto_ack": "true" if auto_ack else "false",
            "ack_wait_ms": str(non_negative(ack_wait_ms, "ack_wait_ms")),
            "async_handler": "true",
        }

        def subscribe(h: int, _: Call, state: _EventState) -> int:
            def on_event(_user: Optional[int], ev: Optional[int]) -> None:
                # A library thread; nothing may raise into C. One event is
                # in flight at a time, so the one-slot channel never blocks.
                state.pin.pin()
                if ev:
                    state.channel.put(_event_from(ev))

            state.callback = n.EVENT_CB(on_event)
            out = ctypes.c_void_p()
            with Options(options) as opts:
                check(lib().fm_event_subscribe(h, name, opts, state.callback, None, ctypes.byref(out)), "subscribe")
            assert out.value is not None
            return int(out.value)

        def make_state(core: Core, loop: Any, size: int) -> _EventState:
            return _EventState(core, Channel(loop, size), f"events.subscribe {self.event_name}")

        super().__init__(client._core, subscribe, 1, make_state)
        self._handling: Optional[int] = None

    async def __anext__(self) -> Event:
        await self._finish(True)  # taking the next event ends the previous one
        event = await super().__anext__()
        self._handling = event.id
        return event

    async def done(self, event: Any, ok: bool = True) -> None:
        """Ends the handling of ``event`` (the one the iterator returned last)
        now, as having succeeded or failed (``ok``); the next one is then
        delivered. With auto_ack a success acks it, a failure leaves it to
        come back after ack_wait_ms."""
        if self._handling != _event_id(event):
            raise FlowMeshInvalidArgumentError(f"event {_event_id(event)} is not the event being handled")
        await self._finish(ok)

    async def _finish(self, ok: bool) -> None:
        event_id, self._handling = self._handling, None
        if event_id is None:
            return
        status = FM_OK if ok else n.status_code("FM_ERR_INTERNAL")
        try:
            await self._sub_call(lambda h: check(lib().fm_event_done(h, event_id, status), "done"), "done")
        except FlowMeshClosedError:
            pass  # closed meanwhile: the event went back to the inbox

    async def aclose(self) -> None:
        """Unsubscribe (idempotent). An event whose handling did not finish
        goes back to the app's inbox at once."""
        self._handling = None
        await super().aclose()

    async def _sub_call(self, fn: Any, operation: str) -> Any:
        state = self._state
        if state is None:
            raise FlowMeshClosedError("the event subscription is closed" if self._closed else "not started")
        return await state.core.run(lambda _h, _c: state.call(fn, operation))

    async def ack(self, event: Any) -> None:
        """Acknowledges a delivered event: never delivered again."""
        i = _event_id(event)
        await self._sub_call(lambda h: check(lib().fm_event_ack(h, i), f"ack {i}"), "ack")

    async def defer(self, event: Any, delay_ms: int = 0, reason: str = "") -> None:
        """Delivers the event again after ``delay_ms``, not before."""
        i, d, r = _event_id(event), non_negative(delay_ms, "delay_ms"), text(reason, "reason")
        await self._sub_call(lambda h: check(lib().fm_event_defer(h, i, d, r), f"defer {i}"), "defer")

    async def discard(self, event: Any, reason: str = "") -> None:
        """Drops the event for good, recording ``reason`` in the discard log."""
        i, r = _event_id(event), text(reason, "reason")
        await self._sub_call(lambda h: check(lib().fm_event_discard(h, i, r), f"discard {i}"), "discard")

    async def replay(self, event: Any) -> Event:
        """Delivers past event ``event`` to this app once more; returns it."""
        i = _event_id(event)

        def replay(h: int) -> Event:
            out = ctypes.c_void_p()
            check(lib().fm_event_replay(h, i, ctypes.byref(out)), f"replay {i}")
            try:
                return _event_from(out.value or 0)
            finally:
                lib().fm_event_free(out)

        return await self._sub_call(replay, "replay")  # type: ignore[no-any-return]

    async def pause(self, reason: str = "") -> None:
        """No delivery until :meth:`resume`; events keep arriving, none is lost."""
        r = text(reason, "reason")
        await self._sub_call(lambda h: check(lib().fm_event_pause(h, r), "pause"), "pause")

    async def resume(self) -> None:
        await self._sub_call(lambda h: check(lib().fm_event_resume(h), "resume"), "resume")

    def rejected(self) -> int:
        """Deliveries rejected so far (tampered ciphertexts, never returned);
        raises the error that ended delivery, if any. A quick local call:
        fine on the event loop."""
        state = self._state
        if state is None:
            raise FlowMeshClosedError("the event subscription is closed" if self._closed else "not started")
        state.core.enter()
        try:
            return int(state.rejected_sync())
        finally:
            state.core.leave()

    async def __aenter__(self) -> "EventSubscription":
        await self.start()
        return self
