"""The plumbing the store, rules and procedures APIs share: one JSON request
through an fm_*_call function, and pull subscriptions whose pump thread
hands each result to a callback on the event loop."""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import itertools
import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from .. import _native as n
from .._core import Call, Core
from .._errors import check, error_for
from .._native import lib
from .errors import NoexClientError, from_native

if TYPE_CHECKING:
    from .client import NoexClient

log = logging.getLogger("flowmesh.noex")

Unsubscribe = Callable[[], None]

# Bounds one wait for a live result, so unsubscribing and closing are prompt.
NEXT_TIMEOUT_MS = 200


def encode(value: Any, what: str) -> bytes:
    try:
        return json.dumps(value, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise NoexClientError("INVALID_ARGUMENT", f"{what} is not JSON: {e}") from None


def json_call_work(fn: str, request: Dict[str, Any], what: Optional[str] = None) -> Callable[[int, Call], Any]:
    """A pool work function running one JSON request through ``fn``
    (fm_store_call, fm_rules_call, fm_procedures_call), returning its result;
    ``what`` names the call in errors (default: ``fn``)."""
    body = encode(request, "the request")

    def work(h: int, _: Call) -> Any:
        out = ctypes.c_void_p()
        check(getattr(lib(), fn)(h, body, ctypes.byref(out)), what or fn)
        return json.loads(n.take_string(out.value))

    return work


def callback_arg(callback: Any) -> None:
    if not callable(callback):
        raise NoexClientError("INVALID_ARGUMENT", "callback must be callable")


def name_arg(value: Any, what: str) -> bytes:
    """A subscription's query name or pattern as a C string."""
    b = value.encode() if isinstance(value, str) else None
    if b is None or b"\0" in b:
        raise NoexClientError("INVALID_ARGUMENT", f"{what} must be a string, got {value!r}")
    return b


def subscribe_work(fn: str, what: str, *args: Any) -> Callable[[int, Call], int]:
    """A pool work function opening a subscription with ``fn(h, *args, &out)``."""

    def work(h: int, _: Call) -> int:
        out = ctypes.c_void_p()
        check(getattr(lib(), fn)(h, *args, ctypes.byref(out)), what)
        assert out.value is not None
        return int(out.value)

    return work


class PullSubscription:
    """One pull subscription: a pump thread takes results from the library
    and hands them to the callback on the event loop. Subclasses name the
    native functions and turn a result into the callback's arguments."""

    id_prefix = "sub"
    what = "subscribe"  # names the subscription in errors
    label = "subscription"  # names it in the log
    _ids: "itertools.count[int]"

    def __init__(
        self,
        client: "NoexClient",
        core: Core,
        handle: int,
        callback: Callable[..., Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.id = f"{self.id_prefix}-{next(self._ids)}"
        self._client = client
        self._core = core
        self._handle: Optional[int] = handle
        self._callback = callback
        self._loop = loop
        self._stopped = threading.Event()
        self._freed = threading.Lock()
        self._tasks: "set[asyncio.Future[Any]]" = set()
        core.register(self)
        core.sub_pool.submit(self._pump)

    # ---- what a subclass says --------------------------------------------------
    def _next(self, handle: int, timeout_ms: int, out: Any) -> int:
        raise NotImplementedError

    def _free(self, handle: int) -> None:
        raise NotImplementedError

    def _args(self, got: Any) -> Tuple[Any, ...]:
        return (got,)

    def _forget(self) -> None:
        raise NotImplementedError

    # ---- pump thread ----------------------------------------------------------
    def _pump(self) -> None:
        handle = self._handle
        while not self._stopped.is_set() and handle is not None:
            out = ctypes.c_void_p()
            status = self._next(handle, NEXT_TIMEOUT_MS, ctypes.byref(out))
            if status == n.FM_OK:
                if out.value:
                    self._post(self._deliver, *self._args(json.loads(n.take_string(out.value))))
                continue
            err = error_for(status, n.last_error(), self.what)
            if err.code == "FM_ERR_CLOSED":
                break
            # A failed result (broker unreachable): reported, delivery goes on.
            self._post(self._client._emit, "error", from_native(err))
        self.release()

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed
            self._stopped.set()

    # ---- loop thread --------------------------------------------------------------
    def _deliver(self, *args: Any) -> None:
        if self._stopped.is_set():
            return
        try:
            result = self._callback(*args)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:
            log.exception("flowmesh.noex: a %s callback raised", self.label)

    def unsubscribe(self) -> None:
        """Stop delivery now (no callback runs after this returns); the native
        subscription is freed in the background."""
        self._stopped.set()
        self._forget()
        try:
            self._core.sub_pool.submit(self.release)
        except RuntimeError:  # the pool is gone: the client closed and freed it
            pass

    # ---- the Core's subscription protocol (client close) ------------------------------
    def stop_local(self) -> None:
        self._stopped.set()

    def final_commit(self, _handle: int) -> None:
        pass

    def release(self) -> None:
        with self._freed:
            handle, self._handle = self._handle, None
        if handle is not None:
            self._free(handle)  # wakes a waiting next (FM_ERR_CLOSED)
            self._core.unregister(self)
