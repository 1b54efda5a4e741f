"""NoexClient: the noex client API (connect, state, lifecycle events,
``client.store``) on a flowmesh client, for every URL flowmesh takes
(mem://, file:///dir, grpc://host:port, ws://host:port, nats://host:port)."""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any, Callable, Dict, List, Literal, Optional, Set, Type, TypeVar

from .. import _native as n
from .._core import Call
from .._errors import FlowMeshError
from ..client import FlowMesh
from ..types import ConnState
from .errors import DisconnectedError, NoexClientError, RequestTimeoutError, from_native
from .options import ClientOptions, WelcomeInfo, native_options
from .procedures import ProceduresAPI
from .rules import RulesAPI
from .identity import AuditAPI, AuthAPI, IdentityAPI
from .store import StoreAPI, Unsubscribe

log = logging.getLogger("flowmesh.noex")

ConnectionState = Literal["connecting", "connected", "reconnecting", "disconnected"]
EVENTS = ("connected", "disconnected", "reconnecting", "reconnected", "error", "welcome", "session_revoked")
T = TypeVar("T")


class NoexClient:
    """A client of the reactive store. Creating it opens nothing: call
    ``connect()`` or use ``async with``."""

    def __init__(self, url: str, options: Optional[ClientOptions] = None) -> None:
        self.url = url
        self.options = options or ClientOptions()
        self._fm: Optional[FlowMesh] = None
        self._state: ConnectionState = "disconnected"
        self._handlers: Dict[str, List[Callable[..., Any]]] = {e: [] for e in EVENTS}
        self._pending: Set["asyncio.Future[Any]"] = set()
        self._attempt = 0
        self.store = StoreAPI(self)
        self.rules = RulesAPI(self)
        self.procedures = ProceduresAPI(self)
        self.auth = AuthAPI(self)
        self.identity = IdentityAPI(self)
        self.audit = AuditAPI(self)

    # ---- connection -------------------------------------------------------------
    async def connect(self) -> WelcomeInfo:
        """Connect (embedded engines: open them); returns the WelcomeInfo."""
        if self._fm is not None:
            raise NoexClientError("ALREADY_CONNECTED", "the client is already connected")
        auth = self.options.auth
        token = auth.token if auth is not None else None
        remote = self.url.startswith(("grpc://", "grpcs://", "ws://", "wss://", "nats://"))
        native = native_options(self.options, remote)
        if auth is not None and auth.credentials is not None:
            # The core logs in after connect and after every reconnect.
            native["identity_user"] = auth.credentials.username
            native["identity_password"] = auth.credentials.password
        fm = FlowMesh(self.url, token, options=native)
        self._state = "connecting"
        try:
            await asyncio.wait_for(fm.connect(), self.options.connect_timeout_ms / 1000 + 5)
        except FlowMeshError as e:
            self._state = "disconnected"
            self._emit("error", from_native(e))
            raise from_native(e) from None
        except asyncio.TimeoutError:
            self._state = "disconnected"
            await fm.close()
            raise RequestTimeoutError("connect timed out") from None
        self._fm = fm
        self._state = "connected"
        fm.on_state(self._on_native_state)
        info = WelcomeInfo(
            version=n.version(),
            server_time=int(time.time() * 1000),
            requires_auth=token is not None or (auth is not None and auth.credentials is not None),
        )
        self._emit("welcome", info)
        self._emit("connected")
        return info

    async def disconnect(self) -> None:
        """Close: rejects pending requests (DisconnectedError), ends the
        subscriptions and stops reconnecting. Idempotent."""
        fm, self._fm = self._fm, None
        if fm is None:
            return
        was = self._state
        self._state = "disconnected"
        self._reject_pending("the client disconnected")
        self.store._stop_all()
        self.rules._stop_all()
        await fm.close()
        if was != "disconnected":
            self._emit("disconnected", "client disconnect")

    async def __aenter__(self) -> "NoexClient":
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.disconnect()

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def is_connected(self) -> bool:
        return self._state == "connected"

    # ---- events -------------------------------------------------------------------
    def on(self, event: str, handler: Callable[..., Any]) -> Unsubscribe:
        """Call ``handler`` on a lifecycle event (see EVENTS); returns a
        function that removes it."""
        if event not in self._handlers:
            raise NoexClientError("INVALID_ARGUMENT", f"unknown event {event!r}: one of {', '.join(EVENTS)}")
        if not callable(handler):
            raise NoexClientError("INVALID_ARGUMENT", "handler must be callable")
        self._handlers[event].append(handler)

        def off() -> None:
            if handler in self._handlers[event]:
                self._handlers[event].remove(handler)

        return off

    def _emit(self, event: str, *args: Any) -> None:
        for handler in list(self._handlers[event]):
            try:
                handler(*args)
            except Exception:
                log.exception("flowmesh.noex: a %r handler raised", event)

    def _on_native_state(self, state: ConnState, error: Optional[FlowMeshError]) -> None:
        # Runs on the loop (FlowMesh.on_state). The core reconnects by itself,
        # and live queries re-evaluate once it is back.
        if self._fm is None:
            return
        if state == ConnState.RECONNECTING and self._state == "connected":
            self._state = "reconnecting"
            self._attempt += 1
            reason = error.details if error is not None else "connection lost"
            self._reject_pending(f"connection lost: {reason}")
            self._emit("disconnected", reason)
            if error is not None:
                self._emit("error", from_native(error))
            self._emit("reconnecting", self._attempt)
        elif state == ConnState.CONNECTED and self._state == "reconnecting":
            self._state = "connected"
            self._attempt = 0
            self._emit("connected")
            self._emit("reconnected")
        elif state == ConnState.DISCONNECTED and self._state != "disconnected":
            self._state = "disconnected"
            self._reject_pending("the connection is lost and reconnecting gave up")
            self._emit("disconnected", "reconnect gave up")
            if error is not None:
                self._emit("error", from_native(error))

    # ---- requests -----------------------------------------------------------------
    def _native(self) -> FlowMesh:
        if self._fm is None:
            raise DisconnectedError("the client is not connected: call connect()")
        return self._fm

    async def _request(self, work: Callable[[int, Call], T]) -> T:
        """Run one native call. Only while connected; rejected with
        DisconnectedError if the link goes while it waits (never retried),
        RequestTimeoutError after request_timeout_ms."""
        if self._state != "connected":
            raise DisconnectedError(f"not connected ({self._state})")
        fm = self._native()
        loop = asyncio.get_running_loop()
        waiter: "asyncio.Future[T]" = loop.create_future()
        self._pending.add(waiter)
        call = asyncio.ensure_future(fm._core().run(work))

        def settle(f: "asyncio.Future[T]") -> None:
            if waiter.done():
                if not f.cancelled():
                    f.exception()  # retrieved: the waiter was rejected already
                return
            if f.cancelled():
                waiter.cancel()
            elif f.exception() is not None:
                exc = f.exception()
                waiter.set_exception(from_native(exc) if isinstance(exc, FlowMeshError) else exc)  # type: ignore[arg-type]
            else:
                waiter.set_result(f.result())

        call.add_done_callback(settle)
        try:
            return await asyncio.wait_for(waiter, self.options.request_timeout_ms / 1000)
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"no answer within {self.options.request_timeout_ms} ms") from None
        finally:
            self._pending.discard(waiter)

    def _reject_pending(self, why: str) -> None:
        pending, self._pending = self._pending, set()
        for w in pending:
            if not w.done():
                w.set_exception(DisconnectedError(why))
