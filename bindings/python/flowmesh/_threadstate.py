"""Keep a Python thread state alive on a library callback thread.

ctypes runs a callback on a thread Python did not create by creating a
Python thread state, running the callback and destroying the state again,
for every single call. That costs more than the callback itself (measured:
~50k empty callbacks/s, against ~500k/s with the state kept). ``Pin`` takes
one extra PyGILState_Ensure on the first callback, so the state survives
between callbacks, and deletes it once the library has joined the thread
(after fm_unsubscribe), when nothing can use it any more.

CPython only; elsewhere (or with FLOWMESH_PIN_THREADS=0) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from typing import Any, Optional

_api: Any = None
if platform.python_implementation() == "CPython" and os.environ.get("FLOWMESH_PIN_THREADS", "1") != "0":
    _api = ctypes.pythonapi
    _api.PyGILState_Ensure.restype = ctypes.c_int
    _api.PyGILState_Ensure.argtypes = []
    _api.PyGILState_GetThisThreadState.restype = ctypes.c_void_p
    _api.PyGILState_GetThisThreadState.argtypes = []
    _api.PyThreadState_Clear.restype = None
    _api.PyThreadState_Clear.argtypes = [ctypes.c_void_p]
    _api.PyThreadState_Delete.restype = None
    _api.PyThreadState_Delete.argtypes = [ctypes.c_void_p]


class Pin:
    """One callback thread's kept thread state (one dispatcher thread per
    subscription, so one pin per subscription)."""

    __slots__ = ("_thread", "_tstate", "_lock")

    def __init__(self) -> None:
        self._thread: Optional[int] = None
        self._tstate: Optional[int] = None
        self._lock = threading.Lock()

    def pin(self) -> None:
        """Call from inside the callback; cheap after the first call."""
        if _api is None or self._thread is not None:
            return
        with self._lock:
            if self._thread is not None:
                return
            _api.PyGILState_Ensure()  # never released here: see release_joined
            self._tstate = _api.PyGILState_GetThisThreadState()
            self._thread = threading.get_ident()

    def release_joined(self) -> None:
        """Delete the kept state. Only after the library joined the callback
        thread (fm_unsubscribe returned, not called from that thread)."""
        with self._lock:
            tstate, self._tstate = self._tstate, None
            if tstate is None or _api is None:
                return
            if self._thread == threading.get_ident():
                # Unsubscribed from inside the callback: the thread still
                # runs, so its state must stay (a rare, small leak).
                self._tstate = tstate
                return
        _api.PyThreadState_Clear(tstate)
        _api.PyThreadState_Delete(tstate)
