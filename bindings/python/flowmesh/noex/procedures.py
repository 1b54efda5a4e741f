"""ProceduresAPI of the noex client API over the core's procedures
(fm_procedures_call): named step lists run atomically (docs/PROCEDURES.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ._pull import json_call_work

if TYPE_CHECKING:
    from .client import NoexClient


class ProceduresAPI:
    """``client.procedures``: register, call, get, list, update, unregister."""

    def __init__(self, client: "NoexClient") -> None:
        self._client = client

    async def _request(self, request: Dict[str, Any]) -> Any:
        return await self._client._request(json_call_work("fm_procedures_call", request))

    async def register(self, procedure: Dict[str, Any]) -> Dict[str, Any]:
        result: Dict[str, Any] = await self._request({"type": "procedures.register", "procedure": procedure})
        return result

    async def call(self, name: str, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Run the steps atomically: ``{'results': [...]}``, one per step.
        An unknown procedure raises NoexClientError with code NOT_FOUND."""
        result: Dict[str, Any] = await self._request(
            {"type": "procedures.call", "name": name, "params": params if params is not None else {}}
        )
        return result

    async def get(self, name: str) -> Optional[Dict[str, Any]]:
        result: Optional[Dict[str, Any]] = await self._request({"type": "procedures.get", "name": name})
        return result

    async def list(self) -> List[Dict[str, Any]]:
        result: List[Dict[str, Any]] = await self._request({"type": "procedures.list"})
        return result

    async def update(self, name: str, updates: Dict[str, Any]) -> Dict[str, Any]:
        result: Dict[str, Any] = await self._request({"type": "procedures.update", "name": name, "updates": updates})
        return result

    async def unregister(self, name: str) -> None:
        await self._request({"type": "procedures.unregister", "name": name})


__all__ = ["ProceduresAPI"]
