"""RulesAPI of the noex client API over the core's rules engine
(fm_rules_call): events, facts, rules, stats, and topic subscriptions
(fm_rules_subscribe) delivered to ``callback(event, topic)`` on the event
loop. docs/RULES.md describes the semantics."""

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
from .store import NEXT_TIMEOUT_MS, Unsubscribe, _encode

if TYPE_CHECKING:
    from .client import NoexClient

log = logging.getLogger("flowmesh.noex")
_ids = itertools.count(1)


def json_call_work(fn: str, request: Dict[str, Any]) -> Callable[[int, Call], Any]:
    """A pool work function running one JSON request through ``fn``
    (fm_rules_call, fm_procedures_call), returning its result."""
    body = _encode(request, "the request")

    def work(h: int, _: Call) -> Any:
        out = ctypes.c_void_p()
        check(getattr(lib(), fn)(h, body, ctypes.byref(out)), fn)
        return json.loads(n.take_string(out.value))

    return work


class TopicSubscription:
    """One topic subscription: a pump thread takes events from the library
    and hands them to the callback on the event loop."""

    def __init__(
        self,
        client: "NoexClient",
        core: Core,
        handle: int,
        callback: Callable[[Any, str], Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.id = f"rules-sub-{next(_ids)}"
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

    def _pump(self) -> None:
        handle = self._handle
        while not self._stopped.is_set() and handle is not None:
            out = ctypes.c_void_p()
            status = lib().fm_rules_subscription_next(handle, NEXT_TIMEOUT_MS, ctypes.byref(out))
            if status == n.FM_OK:
                if out.value:
                    got = json.loads(n.take_string(out.value))
                    self._post(self._deliver, got["event"], got["topic"])
                continue
            err = error_for(status, n.last_error(), "rules.subscribe")
            if err.code == "FM_ERR_CLOSED":
                break
            self._post(self._client._emit, "error", from_native(err))
        self.release()

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed
            self._stopped.set()

    def _deliver(self, event: Any, topic: str) -> None:
        if self._stopped.is_set():
            return
        try:
            result = self._callback(event, topic)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:
            log.exception("flowmesh.noex: a rules subscription callback raised")

    def unsubscribe(self) -> None:
        """Stop delivery now (no callback runs after this returns); the native
        subscription is freed in the background."""
        self._stopped.set()
        self._client.rules._forget(self)
        try:
            self._core.sub_pool.submit(self.release)
        except RuntimeError:  # the pool is gone: the client closed and freed it
            pass

    # ---- the Core's subscription protocol (client close) ----
    def stop_local(self) -> None:
        self._stopped.set()

    def final_commit(self, _handle: int) -> None:
        pass

    def release(self) -> None:
        with self._freed:
            handle, self._handle = self._handle, None
        if handle is not None:
            lib().fm_rules_unsubscribe(handle)  # wakes a waiting next (FM_ERR_CLOSED)
            self._core.unregister(self)


class RulesAPI:
    """``client.rules``: events, facts, topic subscriptions, rules, stats."""

    def __init__(self, client: "NoexClient") -> None:
        self._client = client
        self._subs: Dict[str, TopicSubscription] = {}

    async def _request(self, request: Dict[str, Any]) -> Any:
        return await self._client._request(json_call_work("fm_rules_call", request))

    # ---- events ----
    async def emit(
        self,
        topic: str,
        data: Optional[Dict[str, Any]] = None,
        correlation_id: Optional[str] = None,
        causation_id: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Append an event: ``{'id', 'topic', 'data', 'timestamp', ...}``."""
        req: Dict[str, Any] = {"type": "rules.emit", "topic": topic, "data": data if data is not None else {}}
        if correlation_id is not None:
            req["correlationId"] = correlation_id
        if causation_id is not None:
            req["causationId"] = causation_id
        result: Dict[str, Any] = await self._request(req)
        return result

    # ---- facts ----
    async def set_fact(self, key: str, value: Any) -> Dict[str, Any]:
        result: Dict[str, Any] = await self._request({"type": "rules.setFact", "key": key, "value": value})
        return result

    async def get_fact(self, key: str) -> Any:
        return await self._request({"type": "rules.getFact", "key": key})

    async def delete_fact(self, key: str) -> bool:
        return bool(await self._request({"type": "rules.deleteFact", "key": key}))

    async def query_facts(self, pattern: str) -> List[Dict[str, Any]]:
        result: List[Dict[str, Any]] = await self._request({"type": "rules.queryFacts", "pattern": pattern})
        return result

    async def get_all_facts(self) -> List[Dict[str, Any]]:
        result: List[Dict[str, Any]] = await self._request({"type": "rules.getAllFacts"})
        return result

    # ---- subscriptions ----
    async def subscribe(self, pattern: str, callback: Callable[[Any, str], Any]) -> Unsubscribe:
        """Call ``callback(event, topic)`` for every event appended from now on
        whose topic matches ``pattern`` (``*`` one segment, ``>`` the rest).
        Returns a synchronous unsubscribe function."""
        if not callable(callback):
            raise NoexClientError("INVALID_ARGUMENT", "callback must be callable")
        p = pattern.encode() if isinstance(pattern, str) else None
        if p is None or b"\0" in p:
            raise NoexClientError("INVALID_ARGUMENT", f"pattern must be a string, got {pattern!r}")

        def work(h: int, _: Call) -> int:
            out = ctypes.c_void_p()
            check(lib().fm_rules_subscribe(h, p, ctypes.byref(out)), "rules.subscribe")
            assert out.value is not None
            return int(out.value)

        handle: int = await self._client._request(work)
        core = self._client._native()._core()
        sub = TopicSubscription(self._client, core, handle, callback, asyncio.get_running_loop())
        self._subs[sub.id] = sub
        return sub.unsubscribe

    def _forget(self, sub: TopicSubscription) -> None:
        self._subs.pop(sub.id, None)

    def _stop_all(self) -> None:
        for sub in list(self._subs.values()):
            sub.unsubscribe()

    # ---- admin ----
    async def register_rule(self, rule: Dict[str, Any]) -> Dict[str, Any]:
        result: Dict[str, Any] = await self._request({"type": "rules.registerRule", "rule": rule})
        return result

    async def unregister_rule(self, rule_id: str) -> None:
        await self._request({"type": "rules.unregisterRule", "id": rule_id})

    async def enable_rule(self, rule_id: str) -> Dict[str, Any]:
        result: Dict[str, Any] = await self._request({"type": "rules.enableRule", "id": rule_id})
        return result

    async def disable_rule(self, rule_id: str) -> Dict[str, Any]:
        result: Dict[str, Any] = await self._request({"type": "rules.disableRule", "id": rule_id})
        return result

    async def get_rule(self, rule_id: str) -> Optional[Dict[str, Any]]:
        result: Optional[Dict[str, Any]] = await self._request({"type": "rules.getRule", "id": rule_id})
        return result

    async def get_rules(self) -> List[Dict[str, Any]]:
        result: List[Dict[str, Any]] = await self._request({"type": "rules.getRules"})
        return result

    async def update_rule(self, rule_id: str, updates: Dict[str, Any]) -> Dict[str, Any]:
        result: Dict[str, Any] = await self._request({"type": "rules.updateRule", "id": rule_id, "updates": updates})
        return result

    async def validate_rule(self, rule: Any) -> Dict[str, Any]:
        """``{'valid': bool, 'errors': [...]}``: every reason the rule is malformed."""
        result: Dict[str, Any] = await self._request({"type": "rules.validateRule", "rule": rule})
        return result

    # ---- stats ----
    async def stats(self) -> Dict[str, Any]:
        """``{'rulesCount', 'factsCount', 'eventsProcessed', 'rulesFired'}``."""
        result: Dict[str, Any] = await self._request({"type": "rules.stats"})
        return result


__all__ = ["RulesAPI"]
