"""One publish with a delivery tier (fm_publish_with), shared by
``client.stream.publish`` and ``flowmesh.lax``.

A memory-tier publish without ``require_ack`` only hands the message to the
engine and returns (no round trip), so it runs on the calling thread, the
event loop included: a hop to the thread pool would cost more than the call.
Every other publish waits for an acknowledgement and runs on the pool.

Option handles without a message id are built once per (tier,
require_ack, timeout) combination and reused: the library only reads them during the call.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Dict, Optional, Tuple

from . import _native as n
from ._errors import FlowMeshInvalidArgumentError, check
from ._native import lib

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
    if "fm_publish_with" in lib().missing:  # TEMPORARY until the tier ABI lands
        raw = n.fm_msg()
        msg.fill(raw)
        pos = n.fm_position()
        check(lib().fm_publish(handle, subject, ctypes.byref(raw), ctypes.byref(pos)), operation)
        return int(pos.offset)
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
