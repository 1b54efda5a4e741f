"""Connection state listeners: from the library's listener thread to Python.

The library runs one thread per listener (fm_client_on_state) and calls it
first with the current state, then with every change in order, last with
CLOSED when the client closes (fm_client_close joins that thread). Here each
call is converted to ``(ConnState, FlowMeshError | None)`` on that thread,
then handed to the event loop the listener was added from with
``call_soon_threadsafe`` (FIFO, so the order is kept), or run right there
when there is no loop. A callback that returns an awaitable is scheduled as
a task on the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Callable, Optional, Set

from . import _native as n
from ._errors import FlowMeshError, error_for
from ._threadstate import Pin
from .types import ConnState

log = logging.getLogger("flowmesh")

#: ``callback(state, error)``: ``error`` is the error that caused the change
#: (e.g. FlowMeshDisconnectedError for RECONNECTING), or None.
StateCallback = Callable[[ConnState, Optional[FlowMeshError]], Any]


class StateListener:
    """One registered listener and what must outlive its library thread."""

    __slots__ = ("callback", "loop", "pin", "thunk", "_tasks")

    def __init__(self, callback: StateCallback, loop: Optional[asyncio.AbstractEventLoop]) -> None:
        self.callback = callback
        self.loop = loop
        self.pin = Pin()  # the listener thread's kept Python thread state
        # The CFUNCTYPE object: referenced until the client's close joined the thread.
        self.thunk = n.STATE_CB(self._on_state)
        self._tasks: Set["asyncio.Future[Any]"] = set()

    # ---- library thread -------------------------------------------------------------
    def _on_state(self, _user: Optional[int], state: int, cause: int, detail: Optional[bytes]) -> None:
        # An exception must not reach C.
        self.pin.pin()
        try:
            st = ConnState(state)
            err: Optional[FlowMeshError] = None
            if cause != n.FM_OK:
                text = detail.decode("utf-8", "replace") if detail else ""
                err = error_for(cause, text, "connection")
        except Exception:  # pragma: no cover - an fm_conn_state this binding does not know
            log.exception("flowmesh: could not convert a state change (%r)", state)
            return
        if self.loop is None:
            self._deliver(st, err)
            return
        try:
            self.loop.call_soon_threadsafe(self._deliver, st, err)
        except RuntimeError:  # the loop is closed: nobody to tell
            pass

    # ---- the loop (or the library thread without one) ------------------------------
    def _deliver(self, state: ConnState, error: Optional[FlowMeshError]) -> None:
        try:
            result = self.callback(state, error)
            if inspect.isawaitable(result):
                if self.loop is None:
                    log.warning("flowmesh: a coroutine state callback needs an event loop")
                    return
                task = asyncio.ensure_future(result, loop=self.loop)
                self._tasks.add(task)  # the loop keeps only weak references
                task.add_done_callback(self._task_done)
        except Exception:
            log.exception("flowmesh: state callback raised")

    def _task_done(self, task: "asyncio.Future[Any]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("flowmesh: state callback raised", exc_info=task.exception())
