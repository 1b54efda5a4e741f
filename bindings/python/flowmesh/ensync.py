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

Handlers run on the event loop that called ``subscribe``; the library waits
for a handler to finish before it acks (auto_ack) and delivers the next event.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import ctypes
import json
import logging
import threading
from ctypes import CFUNCTYPE, POINTER, c_bool, c_char_p, c_int32, c_int64, c_size_t, c_uint32, c_uint64, c_void_p
from typing import Any, Awaitable, Callable, Dict, Generator, List, Optional, Sequence, Union

from ._errors import FlowMeshClosedError, FlowMeshError, FlowMeshInvalidArgumentError, raise_status
from ._native import FM_OK, lib, string_at

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

# ---- ctypes declarations of the events C ABI (docs/EVENTS.md) -----------------
_P = c_void_p
_S = c_int32
EVENT_CB = CFUNCTYPE(None, c_void_p, c_void_p)

_EVENT_SIGNATURES: Dict[str, Any] = {
    "fm_event_keygen": (_S, [POINTER(_P), POINTER(_P)]),
    "fm_event_publish": (
        _S,
        [_P, c_char_p, POINTER(c_char_p), c_size_t, c_char_p, c_size_t, c_char_p, POINTER(c_uint64)],
    ),
    "fm_event_subscribe": (_S, [_P, c_char_p, _P, EVENT_CB, _P, POINTER(_P)]),
    "fm_event_ack": (_S, [_P, c_uint64]),
    "fm_event_defer": (_S, [_P, c_uint64, c_uint64, c_char_p]),
    "fm_event_discard": (_S, [_P, c_uint64, c_char_p]),
    "fm_event_replay": (_S, [_P, c_uint64, POINTER(_P)]),
    "fm_event_pause": (_S, [_P, c_char_p]),
    "fm_event_resume": (_S, [_P]),
    "fm_event_subscription_status": (_S, [_P, POINTER(c_uint64)]),
    "fm_event_unsubscribe": (_S, [_P]),
    "fm_event_free": (None, [_P]),
    "fm_event_id": (c_uint64, [_P]),
    "fm_event_name": (c_char_p, [_P]),
    "fm_event_sender": (c_char_p, [_P]),
    "fm_event_timestamp_ms": (c_int64, [_P]),
    "fm_event_payload": (c_void_p, [_P, POINTER(c_size_t)]),
    "fm_event_metadata": (c_char_p, [_P]),
    "fm_event_delivery_count": (c_uint32, [_P]),
    "fm_event_encrypted": (c_bool, [_P]),
}

_declared = False
_declare_lock = threading.Lock()


def _lib() -> Any:
    """The library with the event functions declared (once)."""
    global _declared
    native = lib()
    if not _declared:
        with _declare_lock:
            if not _declared:
                dll = native._dll
                for fname, (restype, argtypes) in _EVENT_SIGNATURES.items():
                    fn = getattr(dll, fname)
                    fn.restype = restype
                    fn.argtypes = argtypes
                _declared = True
    return native._dll


def _check(status: int, operation: str) -> None:
    if status != FM_OK:
        raise_status(status, operation)


def generate_key_pair() -> "tuple[str, str]":
    """A new X25519 key pair ``(secret, public)``, both base64: pass the
    secret as ``app_secret_key``; the public key is registered for you."""
    dll = _lib()
    sec, pub = _P(), _P()
    _check(dll.fm_event_keygen(ctypes.byref(sec), ctypes.byref(pub)), "generate a key pair")
    try:
        out = []
        for buf in (sec, pub):
            n = c_size_t()
            addr = lib().fm_buf_data(buf, ctypes.byref(n))
            out.append(string_at(addr, n.value).decode())
        return out[0], out[1]
    finally:
        lib().fm_buf_free(sec)
        lib().fm_buf_free(pub)


def _encode_payload(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    return json.dumps(payload).encode()


def _decode_payload(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return raw


def _event_dict(ev: int) -> Dict[str, Any]:
    """Copies a borrowed fm_event into the EnSync SDK's event structure."""
    dll = _lib()
    n = c_size_t()
    addr = dll.fm_event_payload(ev, ctypes.byref(n))
    raw_meta = dll.fm_event_metadata(ev)
    event_id = int(dll.fm_event_id(ev))
    return {
        "idem": str(event_id),
        "eventName": (dll.fm_event_name(ev) or b"").decode(),
        "block": event_id,
        "timestamp": int(dll.fm_event_timestamp_ms(ev)),
        "payload": _decode_payload(string_at(addr, n.value)),
        "sender": (dll.fm_event_sender(ev) or b"").decode(),
        "metadata": json.loads(raw_meta.decode()) if raw_meta else {},
        "deliveryCount": int(dll.fm_event_delivery_count(ev)),
        "encrypted": bool(dll.fm_event_encrypted(ev)),
    }


def _event_id(idem: Union[str, int]) -> int:
    try:
        return int(idem)
    except (TypeError, ValueError):
        raise FlowMeshInvalidArgumentError(f"not an event id: {idem!r}") from None


def _url(url: str) -> str:
    """flowmesh URLs pass through; a bare host[:port] means a broker."""
    if "://" in url:
        return url
    host, _, port = url.partition(":")
    return f"grpc://{host}:{port or 50051}"


class _Native:
    """One native client (fm_client), closed once."""

    def __init__(self, url: str, options: Dict[str, str]) -> None:
        native = lib()
        opts = native.fm_options_new()
        try:
            for k, v in options.items():
                _check(native.fm_options_set(opts, k.encode(), str(v).encode()), f"option {k}")
            handle = _P()
            _check(native.fm_client_connect(url.encode(), opts, ctypes.byref(handle)), f"connect to {url}")
        finally:
            native.fm_options_free(opts)
        self.handle: Optional[int] = handle.value
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            handle, self.handle = self.handle, None
        if handle:
            lib().fm_client_close(handle)


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

    def _options(self, app_key: str, secret: Optional[str]) -> Dict[str, str]:
        opts = dict(self._connect)
        opts["app_id"] = app_key
        if secret:
            opts["app_secret_key"] = secret
        return opts


EnSyncWebSocketEngine = EnSyncEngine


class _ClientStart:
    """Awaitable and async context manager for a new client."""

    def __init__(self, engine: EnSyncEngine, app_key: str, options: Dict[str, Any]) -> None:
        self._engine, self._app_key, self._options = engine, app_key, options
        self._client: Optional[EnSyncClient] = None

    async def _open(self) -> "EnSyncClient":
        if not isinstance(self._app_key, str) or not self._app_key:
            raise FlowMeshInvalidArgumentError("app_key must be a non-empty string (the application id)")
        secret = self._options.get("app_secret_key")
        opts = self._engine._options(self._app_key, secret)
        native = await asyncio.to_thread(_Native, self._engine.url, opts)
        return EnSyncClient(self._engine, self._app_key, native)

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

    def __init__(self, engine: EnSyncEngine, app_id: str, native: _Native) -> None:
        self._engine = engine
        self.app_id = app_id
        self._native = native
        self._subscriptions: List[EnSyncSubscription] = []

    def _handle(self) -> int:
        h = self._native.handle
        if not h:
            raise FlowMeshClosedError("client is closed")
        return h

    async def publish(
        self,
        event_name: str,
        recipients: Sequence[str],
        payload: Any,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> str:
        """Publishes to the recipients' app ids; returns the event id."""
        if isinstance(recipients, str):
            recipients = [recipients]
        body = _encode_payload(payload)
        meta = json.dumps(metadata).encode() if metadata is not None else None
        names = (c_char_p * max(len(recipients), 1))(*[str(r).encode() for r in recipients])
        handle = self._handle()
        out = c_uint64()

        def call() -> None:
            st = _lib().fm_event_publish(
                handle, event_name.encode(), names, len(recipients), body, len(body), meta, ctypes.byref(out)
            )
            _check(st, f"publish {event_name}")

        await asyncio.to_thread(call)
        return str(out.value)

    async def subscribe(
        self, event_name: str, auto_ack: bool = True, app_secret_key: Optional[str] = None, ack_wait_ms: int = 30000
    ) -> "EnSyncSubscription":
        """Subscribes this app to ``event_name``; register handlers with ``on``.
        ``app_secret_key`` overrides the client's key for this subscription."""
        native = self._native
        own: Optional[_Native] = None
        if app_secret_key:
            own = await asyncio.to_thread(
                _Native, self._engine.url, self._engine._options(self.app_id, app_secret_key)
            )
            native = own
        sub = EnSyncSubscription(asyncio.get_running_loop(), event_name, own)
        try:
            await asyncio.to_thread(sub._start, native, auto_ack, ack_wait_ms)
        except BaseException:
            if own is not None:
                own.close()
            raise
        self._subscriptions.append(sub)
        return sub

    async def close(self) -> None:
        for sub in self._subscriptions:
            await sub.unsubscribe()
        self._subscriptions.clear()
        await asyncio.to_thread(self._native.close)

    async def __aenter__(self) -> "EnSyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


# The subscription whose handler is running in this task: unsubscribe from
# inside a handler must not wait for that handler.
_in_handler: "contextvars.ContextVar[Optional[EnSyncSubscription]]" = contextvars.ContextVar(
    "ensync_handler", default=None
)


class EnSyncSubscription:
    """Delivery of one event name to this app: ``on(handler)``, ack, defer,
    discard, replay, pause, resume, unsubscribe."""

    def __init__(self, loop: asyncio.AbstractEventLoop, event_name: str, own: Optional[_Native]) -> None:
        self.event_name = event_name
        self._loop = loop
        self._own = own
        self._handlers: List[Handler] = []
        self._has_handler = threading.Event()
        self._closed = threading.Event()
        self._handle: Optional[int] = None
        self._unsub_after_handler = False
        self._lock = threading.Lock()
        self._cb = EVENT_CB(self._on_native_event)  # kept alive as long as the subscription

    def _start(self, native: _Native, auto_ack: bool, ack_wait_ms: int) -> None:
        n = lib()
        opts = n.fm_options_new()
        try:
            _check(n.fm_options_set(opts, b"auto_ack", b"true" if auto_ack else b"false"), "auto_ack")
            _check(n.fm_options_set(opts, b"ack_wait_ms", str(int(ack_wait_ms)).encode()), "ack_wait_ms")
            out = _P()
            client = native.handle
            if not client:
                raise FlowMeshClosedError("client is closed")
            st = _lib().fm_event_subscribe(client, self.event_name.encode(), opts, self._cb, None, ctypes.byref(out))
            _check(st, f"subscribe to {self.event_name}")
            self._handle = out.value
        finally:
            n.fm_options_free(opts)

    # ---- delivery: runs on the library's dispatcher thread ----------------------
    def _on_native_event(self, _ud: Optional[int], ev: Optional[int]) -> None:
        try:
            if ev is None:
                return
            event = _event_dict(ev)
            # Events that arrive before the first handler wait for it.
            while not self._has_handler.wait(0.1):
                if self._closed.is_set() or self._loop.is_closed():
                    return
            for handler in list(self._handlers):
                self._run_handler(handler, event)
        except Exception:  # never let an exception unwind into the library
            log.exception("event handler failed")
        finally:
            if self._unsub_after_handler:
                self._unsub_after_handler = False
                self._release_native()

    def _run_handler(self, handler: Handler, event: Dict[str, Any]) -> None:
        async def run() -> None:
            _in_handler.set(self)
            result = handler(event)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await result

        fut = asyncio.run_coroutine_threadsafe(run(), self._loop)
        while True:
            try:
                fut.result(timeout=0.1)
                return
            except concurrent.futures.TimeoutError:
                if self._loop.is_closed():
                    fut.cancel()
                    return
            except Exception:
                log.exception("event handler for %s raised", self.event_name)
                return

    # ---- control ----------------------------------------------------------------------
    def on(self, handler: Handler) -> Callable[[], None]:
        """Calls ``handler(event)`` (sync or async) for every event; returns a
        function that removes it."""
        self._handlers.append(handler)
        self._has_handler.set()

        def remove() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)
            if not self._handlers:
                self._has_handler.clear()

        return remove

    def _sub(self) -> int:
        h = self._handle
        if not h:
            raise FlowMeshClosedError("subscription is closed")
        return h

    async def _call(self, fn: Callable[[], int], what: str) -> None:
        # Checked on the calling thread: fm_last_error is per thread.
        await asyncio.to_thread(lambda: _check(fn(), what))

    async def ack(self, idem: Union[str, int], block: Optional[int] = None) -> None:
        """Acknowledges an event (``block`` is accepted for compatibility)."""
        h, i = self._sub(), _event_id(idem)
        await self._call(lambda: int(_lib().fm_event_ack(h, i)), f"ack {idem}")

    async def defer(self, idem: Union[str, int], delay_ms: int = 0, reason: str = "") -> None:
        """Delivers the event again after ``delay_ms``."""
        h, i = self._sub(), _event_id(idem)
        await self._call(lambda: int(_lib().fm_event_defer(h, i, int(delay_ms), reason.encode())), f"defer {idem}")

    async def discard(self, idem: Union[str, int], reason: str = "") -> None:
        """Drops the event for good (recorded with ``reason``)."""
        h, i = self._sub(), _event_id(idem)
        await self._call(lambda: int(_lib().fm_event_discard(h, i, reason.encode())), f"discard {idem}")

    async def replay(self, idem: Union[str, int]) -> Dict[str, Any]:
        """Delivers a past event once more; returns it."""
        h, i = self._sub(), _event_id(idem)

        def call() -> Dict[str, Any]:
            out = _P()
            _check(_lib().fm_event_replay(h, i, ctypes.byref(out)), f"replay {idem}")
            try:
                return _event_dict(out.value or 0)
            finally:
                _lib().fm_event_free(out)

        return await asyncio.to_thread(call)

    async def pause(self, reason: str = "") -> None:
        """No delivery until ``resume``; nothing is lost."""
        h = self._sub()
        await self._call(lambda: int(_lib().fm_event_pause(h, reason.encode())), "pause")

    async def resume(self) -> None:
        h = self._sub()
        await self._call(lambda: int(_lib().fm_event_resume(h)), "resume")

    def status(self) -> int:
        """Deliveries rejected so far (tampered ciphertexts); raises the error
        that ended delivery or the last rejection, if any."""
        h = self._sub()
        n = c_uint64()
        st = _lib().fm_event_subscription_status(h, ctypes.byref(n))
        if st != FM_OK and n.value == 0:
            raise_status(st, "event subscription")
        return int(n.value)

    def _release_native(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle:
            _lib().fm_event_unsubscribe(handle)
        if self._own is not None:
            self._own.close()
            self._own = None

    async def unsubscribe(self) -> None:
        """Stops delivery; unsettled events go back to the app's inbox."""
        self._closed.set()
        if self._handle is None:
            return
        if _in_handler.get() is self:
            # From a handler of this subscription: the dispatcher thread waits
            # for the handler, so release once it has returned.
            self._unsub_after_handler = True
            return
        await asyncio.to_thread(self._release_native)
