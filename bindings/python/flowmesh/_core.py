"""Running blocking native calls off the event loop, and closing safely.

A ``Core`` owns the native client handle and a thread pool. Every native
call runs on the pool (never on the loop thread) between ``enter`` and
``leave``, so ``shutdown`` can wait for calls in flight before it frees the
handle: a cancelled task's call may still be running, and freeing the handle
under it would be a use-after-free.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Optional, Set, Type, TypeVar

from ._errors import FlowMeshClosedError, check
from ._native import lib
from .types import ConnState

if TYPE_CHECKING:
    from ._state import StateListener

T = TypeVar("T")

# Threads for pull subscriptions waiting at the same time (created on demand).
SUB_WORKERS = 256


class Options:
    """An fm_options handle filled from a dict, freed on exit (the library
    copies options, so they never need to outlive the call)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values
        self.handle: Optional[int] = None

    def __enter__(self) -> Optional[int]:
        if not self._values:
            return None
        self.handle = lib().fm_options_new()
        try:
            for key, value in self._values.items():
                status = lib().fm_options_set(self.handle, key.encode(), str(value).encode())
                check(status, f"option {key!r}")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.handle

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self.handle is not None:
            lib().fm_options_free(self.handle)
            self.handle = None


class Call:
    """Handed to the function running on the pool, so long operations can
    stop early once nobody waits for them (task cancelled or client closing)."""

    __slots__ = ("_core", "_abandoned")

    def __init__(self, core: "Core") -> None:
        self._core = core
        self._abandoned = threading.Event()

    def abandon(self) -> None:
        self._abandoned.set()

    @property
    def abandoned(self) -> bool:
        return self._abandoned.is_set()

    @property
    def closing(self) -> bool:
        return self._core.closing


class Core:
    def __init__(self, max_workers: Optional[int] = None) -> None:
        self.handle: Optional[int] = None
        self.closing = False
        self._cond = threading.Condition()
        self._inflight = 0
        self._pool = ThreadPoolExecutor(max_workers=max_workers or 16, thread_name_prefix="flowmesh")
        # Pull subscriptions wait here (up to 200 ms per call), not on the
        # pool above, so idle subscriptions never hold up ordinary calls.
        self.sub_pool = ThreadPoolExecutor(max_workers=SUB_WORKERS, thread_name_prefix="flowmesh-sub")
        self.subs: Set[Any] = set()
        # Connection state listeners: their ctypes thunks and kept thread
        # states must outlive the library's listener threads (joined by
        # fm_client_close).
        self.state_listeners: List["StateListener"] = []
        # Run once fm_client_close joined the library's threads (e.g. to
        # delete a callback thread's kept Python thread state).
        self.after_close: List[Callable[[], None]] = []
        self.async_publisher: Any = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        return self._pool

    # ---- in-flight accounting (runs on pool threads) ----------------------
    def enter(self) -> int:
        with self._cond:
            if self.closing or self.handle is None:
                raise FlowMeshClosedError("the client is closed or not connected")
            self._inflight += 1
            return self.handle

    def leave(self) -> None:
        with self._cond:
            self._inflight -= 1
            if self._inflight == 0:
                self._cond.notify_all()

    def check_open(self) -> None:
        """Fail fast on the loop thread, before queueing work."""
        if self.closing or self.handle is None:
            raise FlowMeshClosedError("the client is closed or not connected")

    def register(self, sub: Any) -> None:
        with self._cond:
            if self.closing:
                raise FlowMeshClosedError("the client is closed")
            self.subs.add(sub)

    def unregister(self, sub: Any) -> None:
        with self._cond:
            self.subs.discard(sub)

    # ---- running calls ---------------------------------------------------------
    async def run(
        self,
        fn: Callable[[int, Call], T],
        on_abandoned: Optional[Callable[[int, T], None]] = None,
    ) -> T:
        """Run ``fn(handle, call)`` on the pool and await its result.

        If the awaiting task is cancelled the call is abandoned: it finishes
        on its thread, and ``on_abandoned`` receives a result nobody will
        read (e.g. to hand back a job that was reserved meanwhile); it runs
        on the pool with a live handle, or not at all once the client closed.
        """
        self.check_open()
        call = Call(self)

        def work() -> T:
            handle = self.enter()
            try:
                return fn(handle, call)
            finally:
                self.leave()

        try:
            cf = self._pool.submit(work)
        except RuntimeError:  # pool shut down: the client was closed
            raise FlowMeshClosedError("the client is closed") from None
        try:
            return await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            call.abandon()
            if on_abandoned is not None:
                cf.add_done_callback(lambda f: self._hand_back(on_abandoned, f))
            raise

    def _hand_back(self, fn: Callable[[int, T], None], f: "concurrent.futures.Future[T]") -> None:
        # May run on the loop thread (if f was already done): only queue work.
        if f.cancelled() or f.exception() is not None:
            return
        result = f.result()

        def work() -> None:
            try:
                handle = self.enter()
            except FlowMeshClosedError:
                return
            try:
                fn(handle, result)
            except Exception:  # best effort: the result is dropped either way
                pass
            finally:
                self.leave()

        try:
            self._pool.submit(work)
        except RuntimeError:
            pass

    def submit_quietly(self, fn: Callable[[int], None]) -> None:
        """Run ``fn(handle)`` on the pool, best effort: skipped once closing,
        errors dropped. From any thread (e.g. a GC finalizer)."""

        def work() -> None:
            try:
                handle = self.enter()
            except FlowMeshClosedError:
                return
            try:
                fn(handle)
            except Exception:
                pass
            finally:
                self.leave()

        try:
            self._pool.submit(work)
        except RuntimeError:  # pool shut down
            pass

    def connect_sync(self, url: str, options: Mapping[str, str]) -> None:
        out = ctypes.c_void_p()
        with Options(options) as opts:
            check(lib().fm_client_connect(url.encode(), opts, ctypes.byref(out)), "connect")
        with self._cond:
            if self.closing:  # closed while connecting: do not leak the handle
                lib().fm_client_close(out.value)
                raise FlowMeshClosedError("the client was closed while connecting")
            self.handle = out.value

    # ---- connection state (quick native calls: fine on any thread) -------------
    def add_state_listener(self, listener: "StateListener") -> None:
        handle = self.enter()
        try:
            with self._cond:
                self.state_listeners.append(listener)
            status = lib().fm_client_on_state(handle, listener.thunk, None)
            if status != 0:
                with self._cond:
                    self.state_listeners.remove(listener)
                check(status, "on_state")
        finally:
            self.leave()

    def state_sync(self) -> ConnState:
        try:
            handle = self.enter()
        except FlowMeshClosedError:
            return ConnState.CLOSED
        try:
            out = ctypes.c_int()
            check(lib().fm_client_state(handle, ctypes.byref(out)), "state")
            return ConnState(out.value)
        finally:
            self.leave()

    async def run_unlocked(self, fn: Callable[[], T]) -> T:
        """Run on the pool without a handle (connect)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn)

    # ---- closing -------------------------------------------------------------------
    def shutdown(self) -> None:
        """Close everything; blocking, idempotent, safe from any non-loop thread.

        Order matters: subscriptions first (their callbacks may be blocked on
        a full buffer, and fm_client_close waits for running callbacks; a
        pull subscription's handle must not be freed under a running
        fm_subscription_next), then wait for calls in flight, then free the
        handle.
        """
        with self._cond:
            self.closing = True
            subs = list(self.subs)
        for sub in subs:  # all at once: no new fetches, blocked callbacks return
            sub.stop_local()
        handle = self.handle
        if handle:  # auto_commit of what iterators returned (pull subscriptions)
            for sub in subs:
                try:
                    sub.final_commit(handle)
                except Exception:  # pragma: no cover - best effort
                    pass
        for sub in subs:
            sub.release()
        with self._cond:
            while self._inflight:
                self._cond.wait()
            handle, self.handle = self.handle, None
        if handle:
            # Joins the state listener threads (each got CLOSED last)...
            lib().fm_client_close(handle)
            for listener in self.state_listeners:
                listener.pin.release_joined()  # ...so their thread states can go
            for fn in self.after_close:
                fn()
        self._pool.shutdown(wait=False)
        self.sub_pool.shutdown(wait=False)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        # A fresh thread, not the pool: every pool thread may be busy.
        done: asyncio.Future[None] = loop.create_future()

        def target() -> None:
            error: Optional[BaseException] = None
            try:
                self.shutdown()
            except BaseException as exc:  # pragma: no cover - defensive
                error = exc
            try:
                if error is None:
                    loop.call_soon_threadsafe(_set_result, done, None)
                else:
                    loop.call_soon_threadsafe(_set_exception, done, error)
            except RuntimeError:  # the loop is gone; nobody waits any more
                pass

        threading.Thread(target=target, name="flowmesh-close", daemon=True).start()
        await asyncio.shield(done)


def _set_result(fut: "asyncio.Future[None]", value: None) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: "asyncio.Future[None]", exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
