"""StoreAPI and BucketAPI of the noex client API over the core's document
store (fm_store_call), and live queries (fm_store_subscribe) delivered to
callbacks on the event loop."""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import itertools
import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from .. import _native as n
from .._core import Call, Core
from .._errors import check, error_for
from .._native import lib
from .errors import NoexClientError, from_native

if TYPE_CHECKING:
    from .client import NoexClient

log = logging.getLogger("flowmesh.noex")

Unsubscribe = Callable[[], None]
Record = Dict[str, Any]

# Bounds one wait for a live result, so unsubscribing and closing are prompt.
NEXT_TIMEOUT_MS = 200
_ids = itertools.count(1)


def _encode(value: Any, what: str) -> bytes:
    try:
        return json.dumps(value, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise NoexClientError("INVALID_ARGUMENT", f"{what} is not JSON: {e}") from None


def store_call_work(request: Dict[str, Any]) -> Callable[[int, Call], Any]:
    """A pool work function running one store request, returning its result."""
    body = _encode(request, "the request")

    def work(h: int, _: Call) -> Any:
        out = ctypes.c_void_p()
        check(lib().fm_store_call(h, body, ctypes.byref(out)), "store")
        return json.loads(n.take_string(out.value))

    return work


class LiveQuery:
    """One live-query subscription: a pump thread takes results from the
    library and hands them to the callback on the event loop."""

    def __init__(
        self,
        client: "NoexClient",
        core: Core,
        handle: int,
        callback: Callable[[Any], Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.id = f"sub-{next(_ids)}"
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

    # ---- pump thread ----------------------------------------------------------
    def _pump(self) -> None:
        handle = self._handle
        while not self._stopped.is_set() and handle is not None:
            out = ctypes.c_void_p()
            status = lib().fm_store_subscription_next(handle, NEXT_TIMEOUT_MS, ctypes.byref(out))
            if status == n.FM_OK:
                if out.value:
                    self._post(self._deliver, json.loads(n.take_string(out.value)))
                continue
            err = error_for(status, n.last_error(), "store.subscribe")
            if err.code == "FM_ERR_CLOSED":
                break
            # An evaluation failed (broker unreachable): reported, delivery goes on.
            self._post(self._client._emit, "error", from_native(err))
        self.release()

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed
            self._stopped.set()

    # ---- loop thread --------------------------------------------------------------
    def _deliver(self, data: Any) -> None:
        if self._stopped.is_set():
            return
        try:
            result = self._callback(data)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:
            log.exception("flowmesh.noex: a subscription callback raised")

    def unsubscribe(self) -> None:
        """Stop delivery now (no callback runs after this returns); the native
        subscription is freed in the background."""
        self._stopped.set()
        self._client.store._forget(self)
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
            lib().fm_store_unsubscribe(handle)  # wakes a waiting next (FM_ERR_CLOSED)
            self._core.unregister(self)


class BucketAPI:
    """One bucket: a thin handle that adds the bucket name to each request."""

    def __init__(self, store: "StoreAPI", name: str) -> None:
        self._store = store
        self.name = name

    async def _call(self, op: str, **fields: Any) -> Any:
        return await self._store._request({"type": f"store.{op}", "bucket": self.name, **fields})

    # ---- CRUD ----
    async def insert(self, data: Record) -> Record:
        result: Record = await self._call("insert", data=data)
        return result

    async def get(self, key: str) -> Optional[Record]:
        result: Optional[Record] = await self._call("get", key=key)
        return result

    async def update(self, key: str, data: Record, *, expected_version: Optional[int] = None) -> Record:
        fields: Dict[str, Any] = {"key": key, "data": data}
        if expected_version is not None:
            fields["expectedVersion"] = expected_version
        result: Record = await self._call("update", **fields)
        return result

    async def delete(self, key: str) -> None:
        await self._call("delete", key=key)

    # ---- queries ----
    async def all(self) -> List[Record]:
        result: List[Record] = await self._call("all")
        return result

    async def where(self, filter: Dict[str, Any]) -> List[Record]:
        result: List[Record] = await self._call("where", filter=filter)
        return result

    async def find_one(self, filter: Dict[str, Any]) -> Optional[Record]:
        result: Optional[Record] = await self._call("findOne", filter=filter)
        return result

    async def count(self, filter: Optional[Dict[str, Any]] = None) -> int:
        return int(await self._call("count", filter=filter))

    async def first(self, n: int) -> List[Record]:
        result: List[Record] = await self._call("first", n=n)
        return result

    async def last(self, n: int) -> List[Record]:
        result: List[Record] = await self._call("last", n=n)
        return result

    async def paginate(self, limit: int = 10, after: Optional[str] = None) -> Dict[str, Any]:
        """``{"records", "hasMore", "nextCursor"}``; pass nextCursor as ``after``."""
        fields: Dict[str, Any] = {"limit": limit}
        if after is not None:
            fields["after"] = after
        result: Dict[str, Any] = await self._call("paginate", **fields)
        return result

    # ---- aggregation ----
    async def sum(self, field: str, filter: Optional[Dict[str, Any]] = None) -> float:
        return float(await self._call("sum", field=field, filter=filter))

    async def avg(self, field: str, filter: Optional[Dict[str, Any]] = None) -> float:
        return float(await self._call("avg", field=field, filter=filter))

    async def min(self, field: str, filter: Optional[Dict[str, Any]] = None) -> Optional[float]:
        v = await self._call("min", field=field, filter=filter)
        return None if v is None else float(v)

    async def max(self, field: str, filter: Optional[Dict[str, Any]] = None) -> Optional[float]:
        v = await self._call("max", field=field, filter=filter)
        return None if v is None else float(v)

    # ---- bulk ----
    async def clear(self) -> None:
        await self._call("clear")


class StoreAPI:
    """``client.store``: buckets, live queries, transactions, admin."""

    def __init__(self, client: "NoexClient") -> None:
        self._client = client
        self._subs: Dict[str, LiveQuery] = {}

    async def _request(self, request: Dict[str, Any]) -> Any:
        return await self._client._request(store_call_work(request))

    def bucket(self, name: str) -> BucketAPI:
        return BucketAPI(self, name)

    async def subscribe(
        self, query: str, callback: Callable[[Any], Any], params: Optional[Dict[str, Any]] = None
    ) -> Unsubscribe:
        """Subscribe to a named query: ``callback`` gets the current result at
        once and a fresh one whenever it changes (also after a reconnect).
        Returns a synchronous unsubscribe function."""
        if not callable(callback):
            raise NoexClientError("INVALID_ARGUMENT", "callback must be callable")
        q = query.encode() if isinstance(query, str) else None
        if q is None or b"\0" in q:
            raise NoexClientError("INVALID_ARGUMENT", f"query must be a string, got {query!r}")
        body = _encode(params or {}, "params")

        def work(h: int, _: Call) -> int:
            out = ctypes.c_void_p()
            check(lib().fm_store_subscribe(h, q, body, ctypes.byref(out)), "store.subscribe")
            assert out.value is not None
            return int(out.value)

        handle: int = await self._client._request(work)
        core = self._client._native()._core()
        sub = LiveQuery(self._client, core, handle, callback, asyncio.get_running_loop())
        self._subs[sub.id] = sub
        return sub.unsubscribe

    async def unsubscribe(self, subscription_id: str) -> None:
        sub = self._subs.get(subscription_id)
        if sub is None:
            raise NoexClientError("NOT_FOUND", f"no subscription {subscription_id!r}")
        sub.unsubscribe()

    def subscription_ids(self) -> List[str]:
        return list(self._subs)

    def _forget(self, sub: LiveQuery) -> None:
        self._subs.pop(sub.id, None)

    def _stop_all(self) -> None:
        for sub in list(self._subs.values()):
            sub.unsubscribe()

    async def transaction(self, operations: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Run the operations atomically: ``{"results": [...]}``, one per op."""
        result: Dict[str, Any] = await self._request({"type": "store.transaction", "operations": operations})
        return result

    # ---- admin: buckets ----
    async def define_bucket(self, name: str, config: Optional[Dict[str, Any]] = None) -> None:
        await self._request({"type": "store.defineBucket", "name": name, "config": config or {}})

    async def update_bucket(self, name: str, updates: Dict[str, Any]) -> None:
        await self._request({"type": "store.updateBucket", "name": name, "updates": updates})

    async def get_bucket_schema(self, name: str) -> Dict[str, Any]:
        result: Dict[str, Any] = await self._request({"type": "store.getBucketSchema", "name": name})
        return result

    async def drop_bucket(self, name: str) -> None:
        await self._request({"type": "store.dropBucket", "name": name})

    # ---- admin: queries ----
    async def define_query(self, name: str, definition: Dict[str, Any]) -> None:
        await self._request({"type": "store.defineQuery", "name": name, "definition": definition})

    async def undefine_query(self, name: str) -> None:
        await self._request({"type": "store.undefineQuery", "name": name})

    async def list_queries(self) -> List[Dict[str, Any]]:
        result: List[Dict[str, Any]] = await self._request({"type": "store.listQueries"})
        return result

    # ---- metadata ----
    async def buckets(self) -> List[str]:
        result: List[str] = await self._request({"type": "store.buckets"})
        return result

    async def stats(self) -> Dict[str, Any]:
        result: Dict[str, Any] = await self._request({"type": "store.stats"})
        return result


__all__ = ["StoreAPI", "BucketAPI", "Unsubscribe"]
