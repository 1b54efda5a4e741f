"""EnSync-compatible events API on the flowmesh core.

Code written for the EnSync Python SDK runs with only the import and the URL
changed::

    from flowmesh.ensync import EnSyncEngine

    engine = EnSyncEngine("grpc://127.0.0.1:7000")      # or "mem://name", "file:///dir"
    client = await engine.create_client("billing", {"app_secret_key": secret})
    event_id = await client.publish("orders/status/updated", ["shipping"], {"order_id": "1"})
    subscription = await client.subscribe("orders/status/updated", auto_ack=False)
    subscription.on(handler)                                # sync or async handler
    await subscription.ack(event["idem"], event["block"])

The app key is the application id (connect option ``app_id``); recipients are
application ids. ``app_secret_key`` is an X25519 secret key in base64
(:func:`generate_key_pair`); payloads to recipients with registered keys are
sealed end to end. Payloads that are not bytes travel as JSON. See
docs/EVENTS.md for the semantics.

Handlers run on the event loop that called ``subscribe``, one event at a
time. This module only adapts :mod:`flowmesh.events` to the EnSync SDK's
shapes (event dicts, string ids, ``on(handler)``); the auto-ack rule is the
core's: with auto_ack an event is acked once its handlers returned without
raising, and one whose handler raised comes back after ``ack_wait_ms``.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from typing import Any, Awaitable, Callable, Dict, Generator, List, Optional, Sequence, Union

from ._core import Core
from ._errors import FlowMeshError, FlowMeshInvalidArgumentError
from .client import FlowMesh
from .events import Event, EventSubscription, generate_key_pair

__all__ = [
    "EnSyncEngine",
    "EnSyncWebSocketEngine",
    "EnSyncClient",
    "EnSyncSubscription",
    "EnSyncError",
    "generate_key_pair",
]

log = logging.getLogger("flowmesh.ensync")

EnSyncError = FlowMeshError

Handler = Callable[[Dict[str, Any]], Union[None, Awaitable[None]]]


def _encode_payload(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    return json.dumps(payload).encode()


def _decode_payload(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return raw


def _event_dict(ev: Event) -> Dict[str, Any]:
    """An event in the EnSync SDK's structure."""
    return {
        "idem": str(ev.id),
        "eventName": ev.name,
        "block": ev.id,
        "timestamp": ev.timestamp_ms,
        "payload": _decode_payload(ev.payload),
        "sender": ev.sender,
        "metadata": ev.metadata if ev.metadata is not None else {},
        "deliveryCount": ev.delivery_count,
        "encrypted": ev.encrypted,
    }


def _url(url: str) -> str:
    """flowmesh URLs pass through; a bare host[:port] means a broker."""
    if "://" in url:
        return url
    host, _, port = url.partition(":")
    return f"grpc://{host}:{port or 50051}"


class _Native:
    """A native client opened and closed synchronously (e.g. to keep a named
    mem:// engine alive while the asynchronous clients come and go)."""

    def __init__(self, url: str, options: Dict[str, str]) -> None:
        self._core = Core(1)
        try:
            self._core.connect_sync(url, options)
        except BaseException:
            self._core.shutdown()
            raise

    def close(self) -> None:
        self._core.shutdown()


class EnSyncEngine:
    """Entry point, as in the EnSync SDK: ``EnSyncEngine(url, options)``.

    ``url``: ``mem://name`` (shared in this process), ``file:///dir``,
    ``grpc://host:port``, or a bare ``host[:port]`` (a broker, port 50051).
    ``options``: ``reconnect_interval`` (ms) and ``max_reconnect_attempts``
    are honoured; ``enableLogging`` and ``disable_tls`` are accepted.
    """

    def __init__(self, url: str, options: Optional[Dict[str, Any]] = None) -> None:
        self.url = _url(url)
        opts = dict(options or {})
        self._connect: Dict[str, str] = {}
        if self.url.startswith(("grpc://", "grpcs://", "ws://", "wss://")):
            if "reconnect_interval" in opts:
                self._connect["reconnect_initial_ms"] = str(int(opts["reconnect_interval"]))
            if "max_reconnect_attempts" in opts:
                self._connect["max_reconnect_attempts"] = str(int(opts["max_reconnect_attempts"]))
        if opts.get("enableLogging"):
            logging.getLogger("flowmesh").setLevel(logging.DEBUG)

    def create_client(self, app_key: str, options: Optional[Dict[str, Any]] = None) -> "_ClientStart":
        """``await engine.create_client(app_key, {"app_secret_key": ...})`` or
        ``async with engine.create_client(app_key) as client``."""
        return _ClientStart(self, app_key, dict(options or {}))

    async def _open(self, app_key: str, secret: Optional[str]) -> FlowMesh:
        opts = dict(self._connect)
        opts["app_id"] = app_key
        if secret:
            opts["app_secret_key"] = secret
        client = FlowMesh(self.url, options=opts)
        await client.connect()
        return client


EnSyncWebSocketEngine = EnSyncEngine


class _ClientStart:
    """Awaitable and async context manager for a new client."""

    def __init__(self, engine: EnSyncEngine, app_key: str, options: Dict[str, Any]) -> None:
        self._engine, self._app_key, self._options = engine, app_key, options
        self._client: Optional[EnSyncClient] = None

    async def _open(self) -> "EnSyncClient":
        if not isinstance(self._app_key, str) or not self._app_key:
            raise FlowMeshInvalidArgumentError("app_key must be a non-empty string (the application id)")
        client = await self._engine._open(self._app_key, self._options.get("app_secret_key"))
        return EnSyncClient(self._engine, self._app_key, client)

    def __await__(self) -> Generator[Any, None, "EnSyncClient"]:
        return self._open().__await__()

    async def __aenter__(self) -> "EnSyncClient":
        self._client = await self._open()
        return self._client

    async def __aexit__(self, *exc: Any) -> None:
        if self._client is not None:
            await self._client.close()


class EnSyncClient:
    """A connected application (``app_key`` = its app id)."""

    def __init__(self, engine: EnSyncEngine, app_id: str, client: FlowMesh) -> None:
        self._engine = engine
        self.app_id = app_id
        self._client = client
        self._subscriptions: List[EnSyncSubscription] = []

    async def publish(
        self,
        event_name: str,
        recipients: Sequence[str],
        payload: Any,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> str:
        """Publishes to the recipients' app ids; returns the event id."""
        event_id = await self._client.events.publish(event_name, recipients, _encode_payload(payload), metadata)
        return str(event_id)

    async def subscribe(
        self, event_name: str, auto_ack: bool = True, app_secret_key: Optional[str] = None, ack_wait_ms: int = 30000
    ) -> "EnSyncSubscription":
        """Subscribes this app to ``event_name``; register handlers with ``on``.
        ``app_secret_key`` overrides the client's key for this subscription."""
        client, own = self._client, None
        if app_secret_key:
            client = own = await self._engine._open(self.app_id, app_secret_key)
        try:
            sub = client.events.subscribe(event_name, auto_ack=auto_ack, ack_wait_ms=ack_wait_ms)
            await sub.start()
        except BaseException:
            if own is not None:
                await own.close()
            raise
        wrapper = EnSyncSubscription(event_name, sub, own)
        self._subscriptions.append(wrapper)
        return wrapper

    async def close(self) -> None:
        for sub in self._subscriptions:
            await sub.unsubscribe()
        self._subscriptions.clear()
        await self._client.close()

    async def __aenter__(self) -> "EnSyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


# The subscription whose handler is running in this task: unsubscribe from
# inside a handler ends the subscription once that handler has returned.
_in_handler: "contextvars.ContextVar[Optional[EnSyncSubscription]]" = contextvars.ContextVar(
    "ensync_handler", default=None
)


class EnSyncSubscription:
    """Delivery of one event name to this app: ``on(handler)``, ack, defer,
    discard, replay, pause, resume, unsubscribe."""

    def __init__(self, event_name: str, sub: EventSubscription, own: Optional[FlowMesh]) -> None:
        self.event_name = event_name
        self._sub = sub
        self._own = own
        self._handlers: List[Handler] = []
        self._task: "Optional[asyncio.Task[None]]" = None
        self._closed = False

    def on(self, handler: Handler) -> Callable[[], None]:
        """Calls ``handler(event)`` (sync or async) for every event; returns a
        function that removes it. Events wait for the first handler."""
        self._handlers.append(handler)
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._deliver())

        def remove() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return remove

    async def _deliver(self) -> None:
        """Takes events one at a time and runs the handlers on each."""
        _in_handler.set(self)
        try:
            async for event in self._sub:
                ok = True
                as_dict = _event_dict(event)
                for handler in list(self._handlers):
                    try:
                        result = handler(as_dict)
                        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                            await result
                    except Exception:
                        ok = False
                        log.exception("event handler for %s raised", self.event_name)
                await self._sub.done(event, ok)
                if self._closed:  # unsubscribed by a handler
                    break
        except FlowMeshError:
            log.exception("event delivery for %s ended", self.event_name)
        finally:
            if self._closed:
                await self._release()

    def _check(self) -> EventSubscription:
        if self._closed:
            raise FlowMeshError("subscription is closed")
        return self._sub

    async def ack(self, idem: Union[str, int], block: Optional[int] = None) -> None:
        """Acknowledges an event (``block`` is accepted for compatibility)."""
        await self._check().ack(idem)

    async def defer(self, idem: Union[str, int], delay_ms: int = 0, reason: str = "") -> None:
        """Delivers the event again after ``delay_ms``."""
        await self._check().defer(idem, delay_ms, reason)

    async def discard(self, idem: Union[str, int], reason: str = "") -> None:
        """Drops the event for good (recorded with ``reason``)."""
        await self._check().discard(idem, reason)

    async def replay(self, idem: Union[str, int]) -> Dict[str, Any]:
        """Delivers a past event once more; returns it."""
        return _event_dict(await self._check().replay(idem))

    async def pause(self, reason: str = "") -> None:
        """No delivery until ``resume``; nothing is lost."""
        await self._check().pause(reason)

    async def resume(self) -> None:
        await self._check().resume()

    def status(self) -> int:
        """Deliveries rejected so far (tampered ciphertexts); raises the error
        that ended delivery, if any."""
        return self._check().rejected()

    async def _release(self) -> None:
        await self._sub.aclose()
        own, self._own = self._own, None
        if own is not None:
            await own.close()

    async def unsubscribe(self) -> None:
        """Stops delivery; unsettled events go back to the app's inbox."""
        if self._closed:
            return
        self._closed = True
        if _in_handler.get() is self:
            return  # from a handler: _deliver releases once the handler returned
        # Ends the delivery task once its running handler (if any) returned;
        # an event whose handler did not finish goes back to the inbox.
        self._task = None
        await self._release()
