"""The FlowMesh client: connection lifetime and the three service clients."""

from __future__ import annotations

import asyncio
import ctypes
import weakref
from types import TracebackType
from typing import Any, Dict, Generator, List, Mapping, Optional, Type

from . import _native as n
from ._core import Call, Core
from ._errors import (
    FlowMeshClosedError,
    FlowMeshDisconnectedError,
    FlowMeshInvalidArgumentError,
    FlowMeshTimeoutError,
    FlowMeshUnavailableError,
    check,
)
from ._state import StateCallback, StateListener
from .events import EventsClient
from .kv import KVClient
from .queue import QueueClient
from .stream import StreamClient
from .types import ConnState

DEFAULT_ENDPOINT = "localhost:50051"
_SCHEMES = ("grpc://", "grpcs://", "ws://", "wss://", "nats://", "mem://", "file://")


def endpoint_url(endpoint: str) -> str:
    """``host:port`` means a plaintext gRPC broker; URLs pass through."""
    if not isinstance(endpoint, str) or not endpoint:
        raise FlowMeshInvalidArgumentError("endpoint must be a non-empty str")
    if "://" in endpoint:
        if not endpoint.startswith(_SCHEMES):
            raise FlowMeshInvalidArgumentError(
                f"unsupported endpoint {endpoint!r}: use host:port, grpc://, grpcs://, ws://, wss://, nats://, mem:// or file:///dir"
            )
        return endpoint
    return f"grpc://{endpoint}"


class FlowMesh:
    """Async client for streams, queues and KV over the native core.

    ``endpoint``: ``host:port`` (gRPC broker), ``grpc://host:port`` (a
    comma-separated list of brokers fails over between them),
    ``grpcs://host:port``, ``ws://``/``wss://host:port`` (a broker's
    WebSocket listener), ``nats://host:port`` (a NATS JetStream server or
    cluster), ``mem://`` (embedded, in memory) or
    ``file:///dir`` (embedded, durable). ``options`` are native connect
    options (``tenant``, ``namespace``, ``max_payload_bytes``, ``fsync``,
    ``connect_timeout_ms``, ``request_timeout_ms``, ...). Blocking native
    calls run on a pool of ``max_workers`` threads, never on the event loop.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        auth_token: Optional[str] = None,
        *,
        options: Optional[Mapping[str, object]] = None,
        max_workers: Optional[int] = None,
    ) -> None:
        self.endpoint = endpoint
        self.auth_token = auth_token
        self.url = endpoint_url(endpoint)
        self._options: Dict[str, str] = {k: str(v) for k, v in (options or {}).items()}
        if auth_token is not None:
            self._options["token"] = auth_token
        self._max_workers = max_workers
        self._state: Optional[Core] = None
        self._finalizer: "Optional[weakref.finalize[[], FlowMesh]]" = None
        self._closed = False
        self._pending_listeners: List[StateListener] = []
        self.stream = StreamClient(self)
        self.queue = QueueClient(self)
        self.kv = KVClient(self)
        self.events = EventsClient(self)

    # ---- lifetime -------------------------------------------------------------
    async def connect(self) -> None:
        """Open the engine (embedded) or the connection (remote). Idempotent."""
        if self._closed:
            raise FlowMeshClosedError("the client is closed")
        if self._state is not None:
            return
        core = Core(self._max_workers)
        url, options = self.url, dict(self._options)
        try:
            await core.run_unlocked(lambda: core.connect_sync(url, options))
        except BaseException:
            core.shutdown()  # no handle yet: only stops the pool
            raise
        if self._closed or self._state is not None:  # raced with close/connect
            await core.aclose()
            if self._closed:
                raise FlowMeshClosedError("the client was closed while connecting")
            return
        self._state = core
        # Free the native client if the object is dropped without close().
        self._finalizer = weakref.finalize(self, core.shutdown)
        pending, self._pending_listeners = self._pending_listeners, []
        for listener in pending:  # added with on_state() before connect()
            core.add_state_listener(listener)

    async def close(self) -> None:
        """End subscriptions, wait for calls in flight, free the native client.
        Idempotent; the client cannot be reused."""
        self._closed = True
        core, self._state = self._state, None
        if core is None:
            return
        if self._finalizer is not None:
            self._finalizer.detach()
        await core.aclose()

    @property
    def is_connected(self) -> bool:
        return self._state is not None

    def _core(self) -> Core:
        if self._state is None:
            raise FlowMeshClosedError(
                "the client is closed"
                if self._closed
                else "the client is not connected: call connect() or use async with"
            )
        return self._state

    # ---- connection state ------------------------------------------------------
    @property
    def state(self) -> ConnState:
        """The current connection state (ConnState.CLOSED once closed).
        Raises FlowMeshClosedError before connect()."""
        if self._closed:
            return ConnState.CLOSED
        return self._core().state_sync()

    def on_state(
        self,
        callback: StateCallback,
        *,
        loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> None:
        """Call ``callback(state, error)`` with the current state, then with
        every change in order, last with ``ConnState.CLOSED`` when the client
        closes (before ``close()`` returns). ``error`` is the FlowMeshError
        that caused the change (e.g. FlowMeshDisconnectedError with
        RECONNECTING) or None.

        The callback runs on ``loop``, by default the event loop running
        when on_state is called (via call_soon_threadsafe); a coroutine
        function's coroutine is scheduled as a task there. Called outside a
        running loop without ``loop``, it runs on the library's listener
        thread and must not block for long. May be called before
        ``connect()`` (the listener is added when the client connects). At
        most 16 listeners per client; they cannot be removed.
        """
        if not callable(callback):
            raise FlowMeshInvalidArgumentError("callback must be callable")
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        if self._closed:
            raise FlowMeshClosedError("the client is closed")
        listener = StateListener(callback, loop)
        if self._state is None:
            if len(self._pending_listeners) >= 16:
                raise FlowMeshInvalidArgumentError("at most 16 state listeners per client")
            self._pending_listeners.append(listener)
            return
        self._state.add_state_listener(listener)

    async def __aenter__(self) -> "FlowMesh":
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    # ---- health ---------------------------------------------------------------
    async def health_check(self) -> bool:
        """True when the engine answers; False when it is unreachable."""
        return await self._probe("fm_client_health", "health_check")

    async def readiness_check(self) -> bool:
        """True when the engine is ready to serve requests."""
        return await self._probe("fm_client_readiness", "readiness_check")

    async def _probe(self, function: str, operation: str) -> bool:
        def work(h: int, _: Call) -> bool:
            try:
                check(getattr(n.lib(), function)(h), operation)
            except (FlowMeshDisconnectedError, FlowMeshUnavailableError, FlowMeshTimeoutError):
                return False
            return True

        return await self._core().run(work)

    def metrics(self) -> str:
        """This client's metrics in the Prometheus text format (operations by
        kind and outcome, latency histograms, in flight, messages and bytes
        published and delivered). Cheap and non-blocking: callable from the
        event loop or any thread (e.g. an exporter's)."""
        core = self._core()
        handle = core.enter()
        try:
            out = ctypes.c_void_p()
            check(n.lib().fm_client_metrics(handle, ctypes.byref(out)), "metrics")
            try:
                size = ctypes.c_size_t()
                data = n.lib().fm_buf_data(out.value, ctypes.byref(size))
                return n.string_at(data, size.value).decode("utf-8")
            finally:
                n.lib().fm_buf_free(out.value)
        finally:
            core.leave()

    @staticmethod
    def native_version() -> str:
        """Version of the loaded libflowmesh."""
        return n.version()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self._state else "not connected"
        return f"FlowMesh({self.endpoint!r}, {state})"


class _Connecting:
    """What ``flowmesh.connect`` returns: ``await`` it for a connected client,
    or ``async with`` it to have the client closed at the end."""

    def __init__(self, client: FlowMesh) -> None:
        self._client = client

    def __await__(self) -> Generator[Any, None, FlowMesh]:
        return self._connected().__await__()

    async def _connected(self) -> FlowMesh:
        await self._client.connect()
        return self._client

    async def __aenter__(self) -> FlowMesh:
        return await self._client.__aenter__()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self._client.__aexit__(exc_type, exc, tb)


def connect(
    endpoint: str = DEFAULT_ENDPOINT,
    auth_token: Optional[str] = None,
    *,
    options: Optional[Mapping[str, object]] = None,
    max_workers: Optional[int] = None,
) -> _Connecting:
    """``async with flowmesh.connect("mem://") as client:`` or
    ``client = await flowmesh.connect(url)`` (then ``await client.close()``)."""
    return _Connecting(FlowMesh(endpoint, auth_token, options=options, max_workers=max_workers))
