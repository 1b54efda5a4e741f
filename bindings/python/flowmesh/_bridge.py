"""From the library to an asyncio async iterator, two ways.

Pull (stream subscriptions): ``PullState`` takes batches with
fm_subscription_next on a worker thread, one batch in flight per
subscription, each native wait at most ``PULL_WAIT_MS`` so unsubscribe and
close stay prompt. The library buffers at most 1024 messages ahead and then
back-pressures the feed; a feed that died returns its error from the call.

Callbacks (KV watches): the library calls back on its own dispatcher thread.
``Channel`` is a bounded buffer between such a thread and one event loop:

* the callback appends and wakes the loop (call_soon_threadsafe) only when a
  consumer is actually waiting, so a busy stream costs one wake-up per batch,
  not per message;
* when the buffer is full the callback thread blocks, which stops delivery
  in the library: a slow consumer applies backpressure instead of growing
  memory without bound;
* a consumer that waited ``IDLE_POLL_S`` for nothing asks the library
  (fm_subscription_status) whether the feed ended with an error.

``Subscription`` is the user-facing iterator over either state; a feed that
ended with an error raises that error (mapped, e.g.
FlowMeshDisconnectedError) once its buffered items are consumed, then the
iteration is over. The state never references the iterator, so a dropped
iterator is garbage-collected and its finalizer unsubscribes.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import weakref
from collections import deque
from typing import Any, Awaitable, Callable, Deque, Dict, Generic, List, Optional, Tuple, TypeVar

from ._core import Call, Core
from ._errors import FlowMeshClosedError, FlowMeshError, FlowMeshInvalidArgumentError, raise_status
from ._native import FM_OK, lib
from ._threadstate import Pin

T = TypeVar("T")
log = logging.getLogger("flowmesh")

# A callback consumer that waited this long asks whether the feed died.
IDLE_POLL_S = 0.25
# Longest native wait of one fm_subscription_next (bounds unsubscribe/close).
PULL_WAIT_MS = 200
# Most messages taken per fm_subscription_next.
PULL_BATCH = 256


def _wake(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


def _retrieve(fut: "asyncio.Future[Any]") -> None:
    # Mark an exception as seen: a fetch nobody awaits any more (iterator
    # dropped) must not log "exception was never retrieved".
    if not fut.cancelled():
        fut.exception()


class Channel(Generic[T]):
    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        self._loop = loop
        self._capacity = capacity
        self._cond = threading.Condition()
        self._items: Deque[T] = deque()
        self._batch: Deque[T] = deque()  # consumer-side, touched by the loop only
        self._waiters: List["asyncio.Future[None]"] = []
        self.closed = False

    # ---- producer side: library thread -----------------------------------------
    def put(self, item: T) -> bool:
        """Append, blocking while full. False once the channel is closed."""
        with self._cond:
            while len(self._items) >= self._capacity and not self.closed:
                self._cond.wait()
            if self.closed:
                return False
            self._items.append(item)
            waiters, self._waiters = self._waiters, []
        self._wake_all(waiters)
        return True

    def close(self) -> None:
        """Stop: unblock producers, end consumers. Any thread, idempotent."""
        with self._cond:
            self.closed = True
            self._items.clear()
            self._cond.notify_all()
            waiters, self._waiters = self._waiters, []
        self._wake_all(waiters)

    def _wake_all(self, waiters: List["asyncio.Future[None]"]) -> None:
        for fut in waiters:
            try:
                self._loop.call_soon_threadsafe(_wake, fut)
            except RuntimeError:  # loop already closed: nobody to wake
                pass

    # ---- consumer side: the event loop ----------------------------------------------
    async def get(self, idle: Optional[Callable[[], Awaitable[None]]] = None) -> T:
        """Next item; raises StopAsyncIteration once closed. With ``idle``,
        awaits it after each ``IDLE_POLL_S`` without items (it may raise)."""
        while True:
            if self.closed:
                self._batch.clear()
                raise StopAsyncIteration
            if self._batch:
                return self._batch.popleft()
            with self._cond:
                if self._items:
                    # Take the whole batch at once: one lock round per batch.
                    self._batch, self._items = self._items, self._batch
                    self._cond.notify_all()
                    continue
                if self.closed:
                    continue
                fut = self._loop.create_future()
                self._waiters.append(fut)
            timer = self._loop.call_later(IDLE_POLL_S, _wake, fut) if idle is not None else None
            try:
                await fut
            finally:
                if timer is not None:
                    timer.cancel()
                if fut.cancelled() or timer is not None:  # forget a stale waiter
                    with self._cond:
                        if fut in self._waiters:
                            self._waiters.remove(fut)
            if idle is not None:
                with self._cond:
                    quiet = not self._items and not self.closed
                if quiet:
                    await idle()


class SubState(Generic[T]):
    """A callback subscription (or KV watch) handle and what must outlive it."""

    def __init__(self, core: Core, channel: Channel[T], operation: str = "subscription") -> None:
        self.core = core
        self.channel = channel
        self.operation = operation
        self.callback: Any = None  # the CFUNCTYPE object: must stay referenced
        self.pin = Pin()  # the callback thread's kept Python thread state
        self._lock = threading.Lock()
        self._handle: Optional[int] = None
        self._released = False

    def attach(self, handle: int) -> bool:
        """Store the handle; False if released meanwhile (caller discards)."""
        with self._lock:
            if self._released:
                return False
            self._handle = handle
            return True

    def unsubscribe_native(self, handle: int) -> None:
        """The native unsubscribe of this kind of subscription (blocking)."""
        lib().fm_unsubscribe(handle)

    def discard(self, handle: int) -> None:
        """Unsubscribe a handle that came back after release (blocking)."""
        self.unsubscribe_native(handle)
        self.pin.release_joined()

    def stop_local(self) -> None:
        """Non-blocking part of closing: end the consumer, unblock the callback."""
        self.channel.close()

    pending_commit = False  # the library auto-commits callback deliveries itself

    def final_commit(self, client: int) -> None:
        pass

    async def get(self) -> T:
        return await self.channel.get(self._check_status)

    async def _check_status(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.core.pool, self.status_sync)
        except RuntimeError:  # pool shut down: the client is closing
            pass

    def status_sync(self) -> None:
        """Raise the error that ended the feed, if any (pool thread)."""
        with self._lock:  # the handle cannot be freed while we hold it
            if self._released or not self._handle:
                return
            status = lib().fm_subscription_status(self._handle)
            if status != FM_OK:
                raise_status(status, self.operation)

    def release(self, wait: bool = True) -> None:
        """Unsubscribe; blocking, idempotent, from any thread (also a
        callback thread or a GC finalizer: fm_unsubscribe allows both)."""
        with self._lock:
            if self._released:
                return
            self._released = True
            handle, self._handle = self._handle, None
        # Close first: a callback blocked on a full buffer must return before
        # fm_unsubscribe (which waits for running callbacks) can.
        self.channel.close()
        if handle:
            self.unsubscribe_native(handle)  # joins the callback thread...
            self.pin.release_joined()  # ...so its kept thread state can go
        # self.callback is deliberately kept: release() may run inside this
        # very callback (a GC finalizer on the dispatcher thread), and the
        # ctypes thunk must outlive its running call. The callback closes
        # over this state, so both go together with the cyclic GC.
        self.core.unregister(self)


class PullState(Generic[T]):
    """A pull subscription: batches taken with fm_subscription_next on a
    worker thread, at most one call in flight, buffered here for the loop."""

    def __init__(
        self,
        core: Core,
        batch: int,
        convert: Callable[[Any], T],
        operation: str,
        auto_commit: Optional[Tuple[bytes, bytes]] = None,
    ) -> None:
        self.core = core
        self.batch = max(1, min(batch, PULL_BATCH))
        self._convert = convert
        self._operation = operation
        self._cond = threading.Condition()
        self._handle: Optional[int] = None
        self._released = False
        self._busy = False  # a fm_subscription_next is running on the handle
        self._free_on_return = False  # released meanwhile: the fetch frees it
        self.items: Deque[T] = deque()  # the loop's side
        self._fetch: "Optional[asyncio.Future[List[T]]]" = None
        # auto_commit: (stream, group). The library commits a batch when the
        # next one is taken; what was handed out since is committed here
        # when the subscription ends, so "returned by the iterator" means
        # committed. partition -> offset of the last message handed out.
        self._auto_commit = auto_commit
        self._handed: Dict[int, int] = {}

    def attach(self, handle: int) -> bool:
        with self._cond:
            if self._released:
                return False
            self._handle = handle
            return True

    def discard(self, handle: int) -> None:
        lib().fm_unsubscribe(handle)

    def stop_local(self) -> None:
        with self._cond:
            self._released = True
        self.items.clear()

    # ---- worker thread ---------------------------------------------------------------
    def _next_sync(self) -> List[T]:
        self.core.enter()  # close waits for this call before freeing the client
        try:
            with self._cond:
                if self._released or not self._handle:
                    raise FlowMeshClosedError("the subscription is closed")
                handle = self._handle
                self._busy = True
            try:
                out = ctypes.c_void_p()
                status = lib().fm_subscription_next(handle, self.batch, PULL_WAIT_MS, ctypes.byref(out))
                if status != FM_OK:
                    raise_status(status, self._operation)
                try:
                    count = lib().fm_messages_len(out)
                    get, convert = lib().fm_messages_get, self._convert
                    return [convert(get(out, i).contents) for i in range(count)]
                finally:
                    lib().fm_messages_free(out)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                    free = None
                    if self._free_on_return:
                        free, self._handle = self._handle, None
                if free:
                    lib().fm_unsubscribe(free)
        finally:
            self.core.leave()

    @property
    def pending_commit(self) -> bool:
        return self._auto_commit is not None and bool(self._handed)

    def final_commit(self, client: int) -> None:
        """Commit what was handed out since the last fetch (auto_commit);
        on a thread that may use the client handle. Best effort."""
        handed, self._handed = self._handed, {}
        if self._auto_commit is None or not handed:
            return
        stream, group = self._auto_commit
        for partition, offset in handed.items():
            status = lib().fm_commit_offset(client, stream, group, partition, offset)
            if status != FM_OK:
                log.warning(
                    "flowmesh: auto-commit of %s/%d@%d failed (%d)", stream, partition, offset, status
                )

    def release(self, wait: bool = True) -> None:
        """Unsubscribe; idempotent, any non-loop thread. The handle is never
        freed under a running fm_subscription_next: ``wait`` waits for it
        (at most PULL_WAIT_MS), else that call frees it when it returns."""
        with self._cond:
            self._released = True
            if self._busy and not wait:
                self._free_on_return = True
                handle = None
            else:
                while self._busy:
                    self._cond.wait()
                handle, self._handle = self._handle, None
        if handle:
            lib().fm_unsubscribe(handle)
        if self.pending_commit:
            # Dropped without aclose (garbage-collected): commit on the pool.
            self.core.submit_quietly(self.final_commit)
        self.core.unregister(self)

    # ---- the loop ----------------------------------------------------------------------
    async def get(self) -> T:
        while True:
            if self.items:
                item = self.items.popleft()
                # Memory-tier messages (offset -1) are never stored: nothing to commit.
                if self._auto_commit is not None and item.offset >= 0:  # type: ignore[attr-defined]
                    self._handed[item.partition] = item.offset  # type: ignore[attr-defined]
                return item
            fut = self._fetch
            if fut is None:
                if self._released:
                    raise StopAsyncIteration
                # The next fm_subscription_next commits everything handed out.
                self._handed.clear()
                loop = asyncio.get_running_loop()
                try:
                    fut = loop.run_in_executor(self.core.sub_pool, self._next_sync)
                except RuntimeError:  # pool shut down: the client is closing
                    raise StopAsyncIteration from None
                fut.add_done_callback(_retrieve)
                self._fetch = fut
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                # The consumer was cancelled; the fetch goes on and its
                # messages are kept for the next call (nothing is lost).
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._fetch = None
                    self.items.extend(fut.result())
                raise
            except Exception:
                pass  # raised below
            self._fetch = None
            self.items.extend(fut.result())  # raises the call's error, if any


class Subscription(Generic[T]):
    """Async iterator over a subscription. Subscribes on first use (or on
    ``await sub.start()`` / ``async with``); ``aclose()`` or garbage
    collection unsubscribes. One consumer task at a time.

    A feed that ends with an error (e.g. the broker stayed unreachable past
    ``max_reconnect_attempts``) raises it, mapped (FlowMeshDisconnectedError,
    ...), after the messages received before it; the iteration is then over.
    Closing the client ends the iteration normally."""

    def __init__(
        self,
        core_of: Callable[[], Core],
        subscribe: Callable[[int, Call, Any], int],
        buffer_size: int,
        make_state: Optional[Callable[[Core, asyncio.AbstractEventLoop, int], Any]] = None,
    ) -> None:
        if not isinstance(buffer_size, int) or isinstance(buffer_size, bool) or buffer_size < 1:
            raise FlowMeshInvalidArgumentError("buffer_size must be an int >= 1")
        self._core_of = core_of
        self._subscribe = subscribe
        self._buffer_size = buffer_size
        self._make_state = make_state or _callback_state
        self._state: Any = None
        self._finalizer: "Optional[weakref.finalize[[bool], Subscription[T]]]" = None
        self._closed = False

    async def start(self) -> "Subscription[T]":
        """Subscribe now; messages published after this returns are delivered."""
        if self._closed or self._state is not None:
            return self
        core = self._core_of()
        loop = asyncio.get_running_loop()
        state = self._make_state(core, loop, self._buffer_size)
        core.register(state)
        self._state = state
        self._finalizer = weakref.finalize(self, state.release, False)
        subscribe = self._subscribe

        def work(handle: int, call: Call) -> None:
            sub = subscribe(handle, call, state)
            if not state.attach(sub):  # released while subscribing
                state.discard(sub)

        try:
            await core.run(work)
        except BaseException:
            # Also on cancellation: the call may still succeed later, and
            # attach() then sees the released state and unsubscribes.
            self._finalizer.detach()
            self._state = None
            state.stop_local()
            loop.run_in_executor(None, state.release)
            raise
        return self

    def __aiter__(self) -> "Subscription[T]":
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        if self._state is None:
            await self.start()
        state = self._state
        if state is None:  # closed while starting
            raise StopAsyncIteration
        try:
            item: T = await state.get()
            return item
        except FlowMeshClosedError:
            await self.aclose()  # the client closed under us: just the end
            raise StopAsyncIteration from None
        except FlowMeshError:
            await self.aclose()  # the feed died: report it once, then the end
            raise

    async def aclose(self) -> None:
        """Unsubscribe and end the iteration (idempotent)."""
        self._closed = True
        state, self._state = self._state, None
        if state is None:
            return
        if self._finalizer is not None:
            self._finalizer.detach()
        state.stop_local()
        if state.pending_commit:  # auto_commit: what the iterator returned is processed
            try:
                await state.core.run(lambda h, _call: state.final_commit(h))
            except FlowMeshClosedError:
                pass
        loop = asyncio.get_running_loop()
        # fm_unsubscribe waits for a running callback (or fetch): not on the loop thread.
        await loop.run_in_executor(None, state.release)

    async def __aenter__(self) -> "Subscription[T]":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _callback_state(core: Core, loop: asyncio.AbstractEventLoop, buffer_size: int) -> "SubState[Any]":
    return SubState(core, Channel(loop, buffer_size))


def copy_bytes(address: Optional[int], length: int) -> bytes:
    if not address or not length:
        return b""
    return ctypes.string_at(address, length)
