"""Key-value buckets with TTL, revisions, compare-and-set and watch (``client.kv``)."""

from __future__ import annotations

import ctypes
import logging
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from . import _lifecycle
from . import _native as n
from ._bridge import Channel, Subscription, SubState, copy_bytes
from ._core import Call, Core
from ._errors import check
from ._native import lib
from ._util import Duration, millis, non_negative, payload_bytes, resource, text
from .types import KVEvent

if TYPE_CHECKING:
    from .client import FlowMesh

log = logging.getLogger("flowmesh")

_OPS = {n.FM_KV_PUT: "put", n.FM_KV_DELETE: "delete", n.FM_KV_EXPIRE: "expire"}


def _take_buf(buf: Optional[int]) -> bytes:
    """Copy an fm_buf's bytes and free it."""
    if not buf:
        return b""
    try:
        size = ctypes.c_size_t()
        data = lib().fm_buf_data(buf, ctypes.byref(size))
        return n.string_at(data, size.value)
    finally:
        lib().fm_buf_free(buf)


class KVClient:
    def __init__(self, client: "FlowMesh") -> None:
        self._client = client

    async def set(
        self,
        tenant: str,
        namespace: str,
        store: str,
        key: str,
        value: bytes,
        ttl: Optional[Duration] = None,
    ) -> int:
        """Set a key (expiring after ``ttl`` if given); returns its new revision."""
        bucket = resource(tenant, namespace, store)
        k = text(key, "key")
        data = payload_bytes(value, "value")
        ttl_ms = millis(ttl, label="ttl")

        def work(h: int, _: Call) -> int:
            rev = ctypes.c_uint64()
            check(lib().fm_kv_set(h, bucket, k, data, len(data), ttl_ms, ctypes.byref(rev)), "kv.set")
            return int(rev.value)

        return await self._client._core().run(work)

    async def cas(
        self,
        tenant: str,
        namespace: str,
        store: str,
        key: str,
        value: bytes,
        expected_revision: int,
    ) -> int:
        """Set only if the key's revision is ``expected_revision`` (0: the key
        must not exist); FlowMeshConflictError otherwise. Returns the new revision."""
        bucket = resource(tenant, namespace, store)
        k = text(key, "key")
        data = payload_bytes(value, "value")
        expected = non_negative(expected_revision, "expected_revision")

        def work(h: int, _: Call) -> int:
            rev = ctypes.c_uint64()
            check(lib().fm_kv_cas(h, bucket, k, data, len(data), expected, ctypes.byref(rev)), "kv.cas")
            return int(rev.value)

        return await self._client._core().run(work)

    async def get(self, tenant: str, namespace: str, store: str, key: str) -> bytes:
        """The value; FlowMeshNotFoundError if the key is absent or expired."""
        bucket = resource(tenant, namespace, store)
        k = text(key, "key")

        def work(h: int, _: Call) -> bytes:
            out = ctypes.c_void_p()
            check(lib().fm_kv_get(h, bucket, k, ctypes.byref(out)), "kv.get")
            return _take_buf(out.value)

        return await self._client._core().run(work)

    async def get_entry(self, tenant: str, namespace: str, store: str, key: str) -> Tuple[bytes, int]:
        """(value, revision), for a later ``cas``."""
        bucket = resource(tenant, namespace, store)
        k = text(key, "key")

        def work(h: int, _: Call) -> Tuple[bytes, int]:
            out = ctypes.c_void_p()
            rev = ctypes.c_uint64()
            check(lib().fm_kv_get_entry(h, bucket, k, ctypes.byref(out), ctypes.byref(rev)), "kv.get_entry")
            return _take_buf(out.value), int(rev.value)

        return await self._client._core().run(work)

    async def delete(self, tenant: str, namespace: str, store: str, key: str) -> None:
        """Delete a key (no error if absent)."""
        bucket = resource(tenant, namespace, store)
        k = text(key, "key")

        def work(h: int, _: Call) -> None:
            check(lib().fm_kv_delete(h, bucket, k), "kv.delete")

        await self._client._core().run(work)

    async def exists(self, tenant: str, namespace: str, store: str, key: str) -> bool:
        bucket = resource(tenant, namespace, store)
        k = text(key, "key")

        def work(h: int, _: Call) -> bool:
            out = ctypes.c_bool()
            check(lib().fm_kv_exists(h, bucket, k, ctypes.byref(out)), "kv.exists")
            return bool(out.value)

        return await self._client._core().run(work)

    async def list_keys(self, tenant: str, namespace: str, store: str, prefix: str = "") -> List[str]:
        """Keys starting with ``prefix``, sorted."""
        bucket = resource(tenant, namespace, store)
        p = text(prefix, "prefix")

        def work(h: int, _: Call) -> List[str]:
            out = ctypes.c_void_p()
            check(lib().fm_kv_list_keys(h, bucket, p, ctypes.byref(out)), "kv.list_keys")
            try:
                count = lib().fm_strings_len(out.value)
                return [lib().fm_strings_get(out.value, i).decode() for i in range(count)]
            finally:
                lib().fm_strings_free(out.value)

        return await self._client._core().run(work)

    async def list_buckets(self, tenant: str, namespace: str, prefix: str = "") -> List[str]:
        """Names of the namespace's buckets starting with ``prefix``, sorted."""
        work = _lifecycle.list_names("fm_kv_buckets_list", "kv.list_buckets", tenant, namespace, prefix)
        result: List[str] = await self._client._core().run(work)
        return result

    async def delete_bucket(self, tenant: str, namespace: str, store: str) -> None:
        """Delete a bucket with every key; its watches end with
        FlowMeshNotFoundError. FlowMeshNotFoundError if there is none."""
        work = _lifecycle.delete("fm_kv_bucket_delete", "kv.delete_bucket", tenant, namespace, store)
        await self._client._core().run(work)

    def watch(
        self,
        tenant: str,
        namespace: str,
        store: str,
        prefix: str = "",
        *,
        buffer_size: int = 1024,
    ) -> Subscription[KVEvent]:
        """An async iterator of changes (put, delete, expire) to keys under
        ``prefix``, in order, from the moment the watch starts (first
        iteration, ``await w.start()`` or ``async with``)."""
        bucket = resource(tenant, namespace, store)
        p = text(prefix, "prefix")

        def do_watch(h: int, _: Call, state: SubState[KVEvent]) -> int:
            def on_change(
                _user: Optional[int],
                op: int,
                key: Optional[bytes],
                value: Optional[int],
                length: int,
                revision: int,
            ) -> None:
                # Runs on a library thread; an exception must not reach C.
                # Referencing `state` keeps it (and this thunk) alive while running.
                state.pin.pin()
                try:
                    event = KVEvent(
                        op=_OPS.get(op, str(op)),
                        key=key.decode("utf-8", "replace") if key else "",
                        value=copy_bytes(value, length),
                        revision=int(revision),
                    )
                except Exception:  # pragma: no cover - defensive
                    log.exception("flowmesh: could not convert a KV change")
                    return
                state.channel.put(event)

            state.callback = n.KV_WATCH_CB(on_change)
            out = ctypes.c_void_p()
            check(lib().fm_kv_watch(h, bucket, p, state.callback, None, ctypes.byref(out)), "kv.watch")
            assert out.value is not None
            return int(out.value)

        def make_state(core: Core, loop: Any, size: int) -> SubState[KVEvent]:
            return SubState(core, Channel(loop, size), "kv.watch")

        return Subscription(self._client._core, do_watch, buffer_size, make_state)
