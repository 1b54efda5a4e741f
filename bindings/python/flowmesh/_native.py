"""ctypes declarations for libflowmesh (the C ABI in include/flowmesh.h).

Everything that touches ctypes types lives here, so the rest of the package
reads as plain Python. Every function used is declared with argtypes and
restype: without them ctypes would truncate 64-bit values and pointers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any, Dict, List, Optional

LIB_NAME = "libflowmesh.so"

# ---- status codes -------------------------------------------------------------
# Success is 0 by the C convention; the error codes and their names come from
# the library itself (fm_status_str), see status_code().
FM_OK = 0

FM_STATE_CONNECTING = 1
FM_STATE_CONNECTED = 2
FM_STATE_RECONNECTING = 3
FM_STATE_DISCONNECTED = 4
FM_STATE_CLOSED = 5

# fm_position/fm_message offset of a memory-tier message (never stored).
FM_OFFSET_NONE = 0xFFFF_FFFF_FFFF_FFFF
# The header carrying a dotted subject ("orders.created").
FM_SUBJECT_HEADER = "fm-subject"

FM_KV_PUT = 1
FM_KV_DELETE = 2
FM_KV_EXPIRE = 3


# ---- structs -----------------------------------------------------------------
class fm_header(Structure):
    _fields_ = [("key", c_char_p), ("value", c_char_p)]


class fm_msg(Structure):
    # Outgoing message: every pointer is borrowed for the duration of the call.
    _fields_ = [
        ("payload", c_char_p),
        ("payload_len", c_size_t),
        ("key", c_char_p),
        ("key_len", c_size_t),
        ("headers", POINTER(fm_header)),
        ("headers_len", c_size_t),
    ]


class fm_position(Structure):
    _fields_ = [("partition", c_uint32), ("offset", c_uint64)]


class fm_message(Structure):
    # Incoming message: borrowed; byte fields are void* so ctypes does not
    # stop at the first NUL. Copied with string_at before the call returns.
    _fields_ = [
        ("stream", c_char_p),
        ("partition", c_uint32),
        ("offset", c_uint64),
        ("timestamp_ms", c_int64),
        ("key", c_void_p),
        ("key_len", c_size_t),
        ("payload", c_void_p),
        ("payload_len", c_size_t),
        ("headers", POINTER(fm_header)),
        ("headers_len", c_size_t),
    ]


class fm_queue_stats(Structure):
    _fields_ = [
        ("pending", c_uint64),
        ("in_flight", c_uint64),
        ("delayed", c_uint64),
        ("dead", c_uint64),
    ]


class fm_retry_policy(Structure):
    _fields_ = [
        ("max_attempts", c_uint32),
        ("initial_backoff_ms", c_uint64),
        ("max_backoff_ms", c_uint64),
        ("multiplier", c_double),
    ]


# ---- callback types ------------------------------------------------------------
MESSAGE_CB = CFUNCTYPE(None, c_void_p, POINTER(fm_message))
# value is void* (may be NULL on delete/expire), key is a C string.
KV_WATCH_CB = CFUNCTYPE(None, c_void_p, c_int, c_char_p, c_void_p, c_size_t, c_uint64)

# (user_data, status, position)
PUBLISH_CB = CFUNCTYPE(None, c_void_p, c_int32, fm_position)
# (user_data, fm_conn_state, cause status, detail or NULL)
STATE_CB = CFUNCTYPE(None, c_void_p, c_int, c_int32, c_char_p)
# (user_data, borrowed fm_event)
EVENT_CB = CFUNCTYPE(None, c_void_p, c_void_p)

_P = c_void_p  # opaque handles are passed around as plain addresses
_S = c_int32  # fm_status

# name: (restype, argtypes)
_SIGNATURES: dict[str, tuple[Any, List[Any]]] = {
    "fm_version": (c_char_p, []),
    "fm_status_str": (c_char_p, [_S]),
    "fm_last_error": (c_char_p, []),
    "fm_options_new": (_P, []),
    "fm_options_set": (_S, [_P, c_char_p, c_char_p]),
    "fm_options_free": (None, [_P]),
    "fm_client_connect": (_S, [c_char_p, _P, POINTER(_P)]),
    "fm_client_health": (_S, [_P]),
    "fm_client_readiness": (_S, [_P]),
    "fm_client_close": (None, [_P]),
    "fm_client_on_state": (_S, [_P, STATE_CB, _P]),
    "fm_client_state": (_S, [_P, POINTER(c_int)]),
    # streams
    "fm_stream_create": (_S, [_P, c_char_p, _P]),
    "fm_stream_partitions": (_S, [_P, c_char_p, POINTER(c_uint32)]),
    "fm_publish": (_S, [_P, c_char_p, POINTER(fm_msg), POINTER(fm_position)]),
    "fm_publish_batch": (_S, [_P, c_char_p, POINTER(fm_msg), c_size_t, POINTER(fm_position)]),
    "fm_publish_with": (_S, [_P, c_char_p, POINTER(fm_msg), _P, POINTER(fm_position)]),
    "fm_publish_with_async": (_S, [_P, c_char_p, POINTER(fm_msg), _P, PUBLISH_CB, _P]),
    "fm_read": (_S, [_P, c_char_p, c_uint32, c_uint64, c_size_t, POINTER(_P)]),
    "fm_messages_len": (c_size_t, [_P]),
    "fm_messages_get": (POINTER(fm_message), [_P, c_size_t]),
    "fm_messages_free": (None, [_P]),
    "fm_subscribe": (_S, [_P, c_char_p, _P, MESSAGE_CB, _P, POINTER(_P)]),
    "fm_subscribe_pull": (_S, [_P, c_char_p, _P, POINTER(_P)]),
    "fm_subscription_next": (_S, [_P, c_size_t, c_uint64, POINTER(_P)]),
    "fm_subscription_status": (_S, [_P]),
    "fm_unsubscribe": (_S, [_P]),
    "fm_commit_offset": (_S, [_P, c_char_p, c_char_p, c_uint32, c_uint64]),
    "fm_get_offset": (_S, [_P, c_char_p, c_char_p, c_uint32, POINTER(c_uint64)]),
    "fm_get_latest_offset": (_S, [_P, c_char_p, c_uint32, POINTER(c_uint64)]),
    # queues
    "fm_queue_enqueue": (_S, [_P, c_char_p, POINTER(fm_msg), c_uint64, c_int32, POINTER(c_uint64)]),
    "fm_queue_reserve": (_S, [_P, c_char_p, c_uint64, c_uint64, POINTER(_P)]),
    "fm_queue_receive": (_S, [_P, c_char_p, c_size_t, c_uint64, c_uint64, POINTER(_P)]),
    "fm_job_id": (c_uint64, [_P]),
    "fm_job_attempt": (c_uint32, [_P]),
    "fm_job_priority": (c_int32, [_P]),
    "fm_job_payload": (c_void_p, [_P, POINTER(c_size_t)]),
    "fm_job_headers_len": (c_size_t, [_P]),
    "fm_job_headers": (POINTER(fm_header), [_P]),
    "fm_job_free": (None, [_P]),
    "fm_queue_ack": (_S, [_P, c_char_p, c_uint64]),
    "fm_queue_nack": (_S, [_P, c_char_p, c_uint64, c_uint64]),
    "fm_queue_get_stats": (_S, [_P, c_char_p, POINTER(fm_queue_stats)]),
    "fm_queue_set_retry_policy": (_S, [_P, c_char_p, c_uint32, c_uint64, c_uint64, c_double]),
    "fm_queue_get_retry_policy": (_S, [_P, c_char_p, POINTER(fm_retry_policy)]),
    "fm_queue_dlq_list": (_S, [_P, c_char_p, c_size_t, POINTER(_P)]),
    "fm_queue_dlq_replay": (_S, [_P, c_char_p, c_uint64]),
    "fm_queue_dlq_replay_all": (_S, [_P, c_char_p, c_char_p, c_char_p, POINTER(c_uint64)]),
    "fm_jobs_len": (c_size_t, [_P]),
    "fm_jobs_get": (_P, [_P, c_size_t]),
    "fm_jobs_free": (None, [_P]),
    # key-value
    "fm_buf_data": (c_void_p, [_P, POINTER(c_size_t)]),
    "fm_buf_free": (None, [_P]),
    "fm_client_metrics": (_S, [_P, POINTER(_P)]),
    "fm_kv_set": (_S, [_P, c_char_p, c_char_p, c_char_p, c_size_t, c_uint64, POINTER(c_uint64)]),
    "fm_kv_cas": (_S, [_P, c_char_p, c_char_p, c_char_p, c_size_t, c_uint64, POINTER(c_uint64)]),
    "fm_kv_get": (_S, [_P, c_char_p, c_char_p, POINTER(_P)]),
    "fm_kv_get_entry": (_S, [_P, c_char_p, c_char_p, POINTER(_P), POINTER(c_uint64)]),
    "fm_kv_delete": (_S, [_P, c_char_p, c_char_p]),
    "fm_kv_exists": (_S, [_P, c_char_p, c_char_p, POINTER(c_bool)]),
    "fm_kv_list_keys": (_S, [_P, c_char_p, c_char_p, POINTER(_P)]),
    "fm_strings_len": (c_size_t, [_P]),
    "fm_strings_get": (c_char_p, [_P, c_size_t]),
    "fm_strings_free": (None, [_P]),
    "fm_kv_watch": (_S, [_P, c_char_p, c_char_p, KV_WATCH_CB, _P, POINTER(_P)]),
    # events
    "fm_event_keygen": (_S, [POINTER(_P), POINTER(_P)]),
    "fm_event_publish": (
        _S,
        [_P, c_char_p, POINTER(c_char_p), c_size_t, c_char_p, c_size_t, c_char_p, POINTER(c_uint64)],
    ),
    "fm_event_subscribe": (_S, [_P, c_char_p, _P, EVENT_CB, _P, POINTER(_P)]),
    "fm_event_ack": (_S, [_P, c_uint64]),
    "fm_event_defer": (_S, [_P, c_uint64, c_uint64, c_char_p]),
    "fm_event_discard": (_S, [_P, c_uint64, c_char_p]),
    "fm_event_replay": (_S, [_P, c_uint64, POINTER(_P)]),
    "fm_event_pause": (_S, [_P, c_char_p]),
    "fm_event_resume": (_S, [_P]),
    "fm_event_done": (_S, [_P, c_uint64, _S]),
    "fm_event_subscription_status": (_S, [_P, POINTER(c_uint64)]),
    "fm_event_unsubscribe": (_S, [_P]),
    "fm_event_free": (None, [_P]),
    "fm_event_id": (c_uint64, [_P]),
    "fm_event_name": (c_char_p, [_P]),
    "fm_event_sender": (c_char_p, [_P]),
    "fm_event_timestamp_ms": (c_int64, [_P]),
    "fm_event_payload": (c_void_p, [_P, POINTER(c_size_t)]),
    "fm_event_metadata": (c_char_p, [_P]),
    "fm_event_delivery_count": (c_uint32, [_P]),
    "fm_event_encrypted": (c_bool, [_P]),
    "fm_event_reply_to": (c_uint64, [_P, POINTER(c_bool)]),
    # resource lifecycle
    "fm_streams_list": (_S, [_P, c_char_p, POINTER(_P)]),
    "fm_queues_list": (_S, [_P, c_char_p, POINTER(_P)]),
    "fm_kv_buckets_list": (_S, [_P, c_char_p, POINTER(_P)]),
    "fm_stream_delete": (_S, [_P, c_char_p]),
    "fm_queue_delete": (_S, [_P, c_char_p]),
    "fm_kv_bucket_delete": (_S, [_P, c_char_p]),
    "fm_stream_purge": (_S, [_P, c_char_p, POINTER(c_uint64)]),
    "fm_queue_purge": (_S, [_P, c_char_p, POINTER(c_uint64)]),
    "fm_queue_extend": (_S, [_P, c_char_p, c_uint64, c_uint64]),
    "fm_stream_update": (_S, [_P, c_char_p, _P]),
    # document store: owned strings come back as addresses (fm_string_free)
    "fm_store_call": (_S, [_P, c_char_p, POINTER(_P)]),
    "fm_string_free": (None, [_P]),
    "fm_store_subscribe": (_S, [_P, c_char_p, c_char_p, POINTER(_P)]),
    "fm_store_subscription_next": (_S, [_P, c_uint64, POINTER(_P)]),
    "fm_store_unsubscribe": (_S, [_P]),
    # rules engine and procedures (JSON strings, as the store)
    "fm_rules_call": (_S, [_P, c_char_p, POINTER(_P)]),
    "fm_procedures_call": (_S, [_P, c_char_p, POINTER(_P)]),
    "fm_rules_subscribe": (_S, [_P, c_char_p, POINTER(_P)]),
    "fm_rules_subscription_next": (_S, [_P, c_uint64, POINTER(_P)]),
    "fm_rules_unsubscribe": (_S, [_P]),
    # identity of a broker with --identity (JSON in, owned JSON string out)
    "fm_identity_call": (_S, [_P, c_char_p, POINTER(_P)]),
    "fm_client_set_token": (_S, [_P, c_char_p]),
}


def _candidates() -> List[str]:
    """Where to look for the library, in order (see README)."""
    found: List[str] = []
    env = os.environ.get("FLOWMESH_LIB")
    if env:
        found.append(env)
    here = Path(__file__).resolve().parent
    found.append(str(here / "_native" / LIB_NAME))
    # Repo checkout: bindings/python/flowmesh -> <root>/target/release.
    for parent in list(here.parents)[:4]:
        found.append(str(parent / "target" / "release" / LIB_NAME))
    return found


def find_library() -> str:
    env = os.environ.get("FLOWMESH_LIB")
    if env and not os.path.isfile(env):
        raise OSError(f"FLOWMESH_LIB={env!r} does not name a file")
    for path in _candidates():
        if os.path.isfile(path):
            return path
    system = ctypes.util.find_library("flowmesh")
    if system:
        return system
    raise OSError(
        f"{LIB_NAME} not found: set FLOWMESH_LIB to its path, or build it with "
        "`cargo build --release` in the flowmesh repository"
    )


class _Lib:
    """The loaded library with every used function declared.

    A function missing from the library (an older build) only fails when it
    is called, so the rest of the package keeps working.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._dll = ctypes.CDLL(path)
        self.missing: List[str] = []
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = getattr(self._dll, name)
            except AttributeError:
                self.missing.append(name)
                continue
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not set in __init__, i.e. missing symbols.
        if name in _SIGNATURES:
            raise NotImplementedError(f"{name} is not exported by {self.path}")
        raise AttributeError(name)


_lib: Optional[_Lib] = None
_lib_lock = threading.Lock()


def lib() -> Any:
    """The library, loaded on first use (so importing flowmesh never fails)."""
    global _lib
    if _lib is None:
        with _lib_lock:
            if _lib is None:
                _lib = _Lib(find_library())
    return _lib


def version() -> str:
    raw = lib().fm_version()
    return raw.decode() if raw else ""


def status_name(status: int) -> str:
    raw = lib().fm_status_str(status)
    return raw.decode() if raw else f"FM_STATUS_{status}"


_status_codes: Optional[Dict[str, int]] = None


def status_code(name: str) -> int:
    """The number of a status name ("FM_ERR_NOT_FOUND"), read from the library."""
    global _status_codes
    if _status_codes is None:
        codes: Dict[str, int] = {}
        for code in range(256):  # codes are dense from FM_OK = 0
            found = status_name(code)
            if found == "FM_ERR_UNKNOWN":
                break
            codes[found] = code
        _status_codes = codes
    try:
        return _status_codes[name]
    except KeyError:
        raise ValueError(f"{name} is not a status of {lib().path}") from None


def last_error() -> str:
    raw = lib().fm_last_error()
    return raw.decode("utf-8", "replace") if raw else ""


def take_string(address: Optional[int]) -> str:
    """Copy an owned NUL-terminated string returned by the library and free it."""
    if not address:
        return ""
    try:
        return ctypes.string_at(address).decode("utf-8")
    finally:
        lib().fm_string_free(address)


def string_at(address: Optional[int], length: int) -> bytes:
    if not address or length == 0:
        return b""
    return ctypes.string_at(address, length)


def headers_dict(ptr: Any, count: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(count):
        h = ptr[i]
        key = h.key.decode("utf-8", "replace") if h.key else ""
        out[key] = h.value.decode("utf-8", "replace") if h.value else ""
    return out


class OutMsg:
    """The Python objects an fm_msg borrows from; keep it alive during the call."""

    def __init__(
        self,
        payload: bytes,
        key: Optional[bytes] = None,
        headers: Optional[dict[str, str]] = None,
    ) -> None:
        self.headers_len = len(headers) if headers else 0
        self.headers: Any = None
        if headers:
            self.headers = (fm_header * len(headers))()
            for i, (k, v) in enumerate(headers.items()):
                self.headers[i].key = str(k).encode()
                self.headers[i].value = str(v).encode()
        self.payload = payload if type(payload) is bytes else bytes(payload)
        self.key = bytes(key) if key is not None else None

    def fill(self, msg: fm_msg) -> fm_msg:
        msg.payload = self.payload
        msg.payload_len = len(self.payload)
        msg.key = self.key
        msg.key_len = len(self.key) if self.key is not None else 0
        msg.headers = self.headers if self.headers_len else None
        msg.headers_len = self.headers_len
        return msg
