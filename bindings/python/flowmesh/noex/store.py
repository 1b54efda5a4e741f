"""StoreAPI and BucketAPI of the noex client API over the core's document
store (fm_store_call), and live queries (fm_store_subscribe) delivered to
callbacks on the event loop."""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from .._core import Call
from .._native import lib
from ._pull import PullSubscription, Unsubscribe, callback_arg, encode, json_call_work, name_arg, subscribe_work
from .errors import NoexClientError

if TYPE_CHECKING:
    from .client import NoexClient

Record = Dict[str, Any]


def store_call_work(request: Dict[str, Any]) -> Callable[[int, Call], Any]:
    """A pool work function running one store request, returning its result."""
    return json_call_work("fm_store_call", request, "store")


class LiveQuery(PullSubscription):
    """One live-query subscription: every result goes to ``callback(data)``."""

    id_prefix = "sub"
    what = "store.subscribe"
    label = "subscription"
    _ids = itertools.count(1)

    def _next(self, handle: int, timeout_ms: int, out: Any) -> int:
        status: int = lib().fm_store_subscription_next(handle, timeout_ms, out)
        return status

    def _free(self, handle: int) -> None:
        lib().fm_store_unsubscribe(handle)

    def _forget(self) -> None:
        self._client.store._forget(self)


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
        callback_arg(callback)
        q = name_arg(query, "query")
        body = encode(params or {}, "params")
        work = subscribe_work("fm_store_subscribe", "store.subscribe", q, body)

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
