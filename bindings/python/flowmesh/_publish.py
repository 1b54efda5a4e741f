"""One publish with a delivery tier (fm_publish_with), shared by
``client.stream.publish`` and ``flowmesh.lax``.

A memory-tier publish without ``require_ack`` only hands the message to the
engine and returns (no round trip), so it runs on the calling thread, the
event loop included: a hop to the thread pool would cost more than the call.
Every other publish waits for an acknowledgement: with
fm_publish_with_async it is started on the loop thread and completes
through a callback (``AsyncPublisher``), so many are in flight without a
thread each.

Option handles without a message id are built once per (tier,
require_ack, timeout) combination and reused: the library only reads them during the call.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import threading
from collections import deque
from typing import Any, Deque, Dict, Optional, Tuple

from . import _native as n
from ._errors import FlowMeshInvalidArgumentError, check, error_for
from ._native import lib
from ._threadstate import Pin

TIERS = ("memory", "persistent", "replicated")

# Distinct option sets kept; beyond this a call builds and frees its own.
_CACHE_MAX = 256
_cache: Dict[Tuple[str, bool, int], int] = {}
_cache_lock = threading.Lock()


def tier_name(tier: object) -> str:
    """``"memory"``, ``"persistent"`` or ``"replicated"`` from a str or an
    enum whose value is one of them."""
    value = getattr(tier, "value", tier)
    if not isinstance(value, str) or value not in TIERS:
        raise FlowMeshInvalidArgumentError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
    return value


def inline(url: str) -> bool:
    """Engines whose fire-and-forget publish never waits on the network
    (embedded; nats:// buffers in its client), so it may run on the loop."""
    return url.startswith(("nats://", "mem://", "file://"))


def is_direct(tier: str, require_ack: bool) -> bool:
    """Fire-and-forget: no acknowledgement is awaited."""
    return tier == "memory" and not require_ack


def _build(tier: str, require_ack: bool, timeout_ms: int, msg_id: Optional[bytes]) -> int:
    handle = int(lib().fm_options_new())
    try:
        check(lib().fm_options_set(handle, b"tier", tier.encode()), "option 'tier'")
        if require_ack:
            check(lib().fm_options_set(handle, b"require_ack", b"true"), "option 'require_ack'")
        if timeout_ms > 0:
            check(lib().fm_options_set(handle, b"timeout_ms", str(timeout_ms).encode()), "option 'timeout_ms'")
        if msg_id is not None:
            check(lib().fm_options_set(handle, b"msg_id", msg_id), "option 'msg_id'")
    except BaseException:
        lib().fm_options_free(handle)
        raise
    return handle


def _options(tier: str, require_ack: bool, timeout_ms: int) -> Tuple[int, bool]:
    """(handle, owned): owned handles are freed by the caller."""
    key = (tier, require_ack, timeout_ms)
    handle = _cache.get(key)
    if handle is not None:
        return handle, False
    with _cache_lock:
        handle = _cache.get(key)
        if handle is not None:
            return handle, False
        handle = _build(tier, require_ack, timeout_ms, None)
        if len(_cache) < _CACHE_MAX:
            _cache[key] = handle
            return handle, False
    return handle, True


def publish_sync(
    handle: int,
    subject: bytes,
    msg: "n.OutMsg",
    tier: str,
    require_ack: bool,
    timeout_ms: int,
    msg_id: Optional[bytes] = None,
    operation: str = "publish",
) -> Optional[int]:
    """Publish once on this thread; the stored offset, or None for the
    memory tier (nothing stored)."""
    if msg_id is None:
        opts, owned = _options(tier, require_ack, timeout_ms)
    else:
        opts, owned = _build(tier, require_ack, timeout_ms, msg_id), True
    try:
        raw = n.fm_msg()
        msg.fill(raw)
        pos = n.fm_position()
        check(lib().fm_publish_with(handle, subject, ctypes.byref(raw), opts, ctypes.byref(pos)), operation)
    finally:
        if owned:
            lib().fm_options_free(opts)
    if tier == "memory" or pos.offset == n.FM_OFFSET_NONE:
        return None  # memory tier: nothing stored, no offset
    return int(pos.offset)


class AsyncPublisher:
    """Acknowledged publishes without a thread per publish: each is started
    with fm_publish_with_async on the event loop thread (it returns at once)
    and resolves a future when the library calls back. Callbacks arrive on
    the client's publish completion thread; they queue the outcome and wake
    the loop once per burst, not once per message."""

    def __init__(self, core: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._core = core
        self.loop = loop
        self._pending: Dict[int, "asyncio.Future[Optional[int]]"] = {}
        self._tokens = itertools.count(1)
        self._done: Deque[Tuple[int, int, int, str]] = deque()
        self._scheduled = False
        self._pin = Pin()
        self._thunk = n.PUBLISH_CB(self._on_done)
        core.after_close.append(self._pin.release_joined)

    def publish(
        self,
        subject: bytes,
        msg: "n.OutMsg",
        tier: str,
        require_ack: bool,
        timeout_ms: int,
        msg_id: Optional[bytes],
        operation: str = "publish",
    ) -> "asyncio.Future[Optional[int]]":
        """Start the publish (on the loop thread); the future gets the offset
        (None for the memory tier) or the error."""
        if msg_id is None:
            opts, owned = _options(tier, require_ack, timeout_ms)
        else:
            opts, owned = _build(tier, require_ack, timeout_ms, msg_id), True
        token = next(self._tokens)
        fut: "asyncio.Future[Optional[int]]" = self.loop.create_future()
        self._pending[token] = fut
        handle = self._core.enter()
        try:
            raw = n.fm_msg()
            msg.fill(raw)
            status = lib().fm_publish_with_async(handle, subject, ctypes.byref(raw), opts, self._thunk, token)
            if status != n.FM_OK:
                del self._pending[token]
                check(status, operation)
        finally:
            self._core.leave()
            if owned:
                lib().fm_options_free(opts)
        fut.operation = operation  # type: ignore[attr-defined]
        return fut

    # ---- the library's completion thread ------------------------------------------
    def _on_done(self, token: Optional[int], status: int, pos: "n.fm_position") -> None:
        self._pin.pin()
        detail = n.last_error() if status != n.FM_OK else ""
        self._done.append((int(token or 0), int(status), int(pos.offset), detail))
        if not self._scheduled:
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    # ---- the loop ---------------------------------------------------------------------
    def _drain(self) -> None:
        self._scheduled = False
        done = self._done
        while done:
            token, status, offset, detail = done.popleft()
            fut = self._pending.pop(token, None)
            if fut is None or fut.done():
                continue
            if status != n.FM_OK:
                fut.set_exception(error_for(status, detail, getattr(fut, "operation", "publish")))
            else:
                fut.set_result(None if offset == n.FM_OFFSET_NONE else offset)


def async_publisher(core: Any) -> Optional[AsyncPublisher]:
    """The core's AsyncPublisher for the running loop, made on first use;
    None when the library has no fm_publish_with_async or the client is
    used from another loop (then the thread pool serves)."""
    if "fm_publish_with_async" in lib().missing:
        return None
    loop = asyncio.get_running_loop()
    pub: Optional[AsyncPublisher] = getattr(core, "async_publisher", None)
    if pub is None:
        pub = AsyncPublisher(core, loop)
        core.async_publisher = pub
    return pub if pub.loop is loop else None
