"""RulesAPI of the noex client API over the core's rules engine
(fm_rules_call): events, facts, rules, stats, and topic subscriptions
(fm_rules_subscribe) delivered to ``callback(event, topic)`` on the event
loop. docs/RULES.md describes the semantics."""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from .._native import lib
from ._pull import PullSubscription, Unsubscribe, callback_arg, json_call_work, name_arg, subscribe_work

if TYPE_CHECKING:
    from .client import NoexClient


class TopicSubscription(PullSubscription):
    """One topic subscription: every event goes to ``callback(event, topic)``."""

    id_prefix = "rules-sub"
    what = "rules.subscribe"
    label = "rules subscription"
    _ids = itertools.count(1)

    def _next(self, handle: int, timeout_ms: int, out: Any) -> int:
        status: int = lib().fm_rules_subscription_next(handle, timeout_ms, out)
        return status

    def _free(self, handle: int) -> None:
        lib().fm_rules_unsubscribe(handle)

    def _args(self, got: Any) -> Tuple[Any, ...]:
        return (got["event"], got["topic"])

    def _forget(self) -> None:
        self._client.rules._forget(self)


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
        callback_arg(callback)
        p = name_arg(pattern, "pattern")
        work = subscribe_work("fm_rules_subscribe", "rules.subscribe", p)

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
