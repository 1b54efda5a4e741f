"""From library callback threads to an asyncio async iterator.

The library calls back on its own dispatcher threads. ``Channel`` is a
bounded buffer between such a thread and one event loop:

* the callback appends and wakes the loop (call_soon_threadsafe) only when a
  consumer is actually waiting, so a busy stream costs one wake-up per batch,
  not per message;
* when the buffer is full the callback thread blocks, which stops delivery
  in the library: a slow consumer applies backpressure instead of growing
  memory without bound.

``SubState`` owns the native subscription handle and the ctypes callback;
``Subscription`` is the user-facing iterator. The state never references the
iterator, so a dropped iterator is garbage-collected and its finalizer
unsubscribes.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import weakref
from collections import deque
from typing import Any, Callable, Deque, Generic, List, Optional, TypeVar

from ._core import Call, Core
from ._errors import FlowMeshInvalidArgumentError
from ._native import lib
from ._threadstate import Pin

T = TypeVar("T")


def _wake(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


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
    async def get(self) -> T:
        """Next item; raises StopAsyncIteration once closed."""
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
            try:
                await fut
            finally:
                if fut.cancelled():  # the consumer was cancelled: forget it
                    with self._cond:
                        if fut in self._waiters:
                            self._waiters.remove(fut)


class SubState(Generic[T]):
    """A native subscription (or KV watch) handle and what must outlive it."""

    def __init__(self, core: Core, channel: Channel[T]) -> None:
        self.core = core
        self.channel = channel
        self.callback: Any = None  # the CFUNCTYPE object: must stay referenced
        self.pin = Pin()  # the callback thread's kept Python thread state
        self._lock = threading.Lock()
        self._handle: Optional[int] = None
        self._released = False

    def attach(self, handle: int) -> bool:
        """Store the handle; False if released meanwhile (caller unsubscribes)."""
        with self._lock:
            if self._released:
                return False
            self._handle = handle
            return True

    def release(self) -> None:
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
            lib().fm_unsubscribe(handle)  # joins the callback thread...
            self.pin.release_joined()  # ...so its kept thread state can go
        # self.callback is deliberately kept: release() may run inside this
        # very callback (a GC finalizer on the dispatcher thread), and the
        # ctypes thunk must outlive its running call. The callback closes
        # over this state, so both go together with the cyclic GC.
        self.core.unregister(self)


class Subscription(Generic[T]):
    """Async iterator over a subscription. Subscribes on first use (or on
    ``await sub.start()`` / ``async with``); ``aclose()`` or garbage
    collection unsubscribes. One consumer task at a time."""

    def __init__(
        self,
        core_of: Callable[[], Core],
        subscribe: Callable[[int, Call, SubState[T]], int],
        buffer_size: int,
    ) -> None:
        if not isinstance(buffer_size, int) or buffer_size < 1:
            raise FlowMeshInvalidArgumentError("buffer_size must be an int >= 1")
        self._core_of = core_of
        self._subscribe = subscribe
        self._buffer_size = buffer_size
        self._state: Optional[SubState[T]] = None
        self._finalizer: "Optional[weakref.finalize[[], Subscription[T]]]" = None
        self._closed = False

    async def start(self) -> "Subscription[T]":
        """Subscribe now; messages published after this returns are delivered."""
        if self._closed or self._state is not None:
            return self
        core = self._core_of()
        loop = asyncio.get_running_loop()
        state: SubState[T] = SubState(core, Channel(loop, self._buffer_size))
        core.register(state)
        self._state = state
        self._finalizer = weakref.finalize(self, state.release)
        subscribe = self._subscribe

        def work(handle: int, call: Call) -> None:
            sub = subscribe(handle, call, state)
            if not state.attach(sub):  # released while subscribing
                lib().fm_unsubscribe(sub)
                state.pin.release_joined()

        try:
            await core.run(work)
        except BaseException:
            # Also on cancellation: the call may still succeed later, and
            # attach() then sees the released state and unsubscribes.
            self._finalizer.detach()
            self._state = None
            state.channel.close()
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
        assert self._state is not None
        return await self._state.channel.get()

    async def aclose(self) -> None:
        """Unsubscribe and end the iteration (idempotent)."""
        self._closed = True
        state, self._state = self._state, None
        if state is None:
            return
        if self._finalizer is not None:
            self._finalizer.detach()
        state.channel.close()
        loop = asyncio.get_running_loop()
        # fm_unsubscribe waits for a running callback: not on the loop thread.
        await loop.run_in_executor(None, state.release)

    async def __aenter__(self) -> "Subscription[T]":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def copy_bytes(address: Optional[int], length: int) -> bytes:
    if not address or not length:
        return b""
    return ctypes.string_at(address, length)
