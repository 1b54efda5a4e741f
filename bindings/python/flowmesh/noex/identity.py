"""AuthAPI, IdentityAPI and AuditAPI of the noex client API over the core's
identity requests (fm_identity_call) to a broker started with --identity
(docs/SECURITY.md, "Identity"). A successful login makes the core send the
session token on every later call; AuthOptions(credentials=...) makes the
core log in again after every reconnect."""

from __future__ import annotations

import ctypes
import json
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from .. import _native as n
from .._core import Call
from .._errors import check
from .._native import lib
from .errors import NoexClientError

if TYPE_CHECKING:
    from .client import NoexClient


def identity_call_work(request: Dict[str, Any]) -> Callable[[int, Call], Any]:
    """A pool work function running one identity request, returning its answer."""
    try:
        body = json.dumps(request, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise NoexClientError("INVALID_ARGUMENT", f"the request is not JSON: {e}") from None

    def work(h: int, _: Call) -> Any:
        out = ctypes.c_void_p()
        check(lib().fm_identity_call(h, body, ctypes.byref(out)), "identity")
        return json.loads(n.take_string(out.value))

    return work


class _Requests:
    def __init__(self, client: "NoexClient") -> None:
        self._client = client

    async def _call(self, type_: str, **fields: Any) -> Any:
        req: Dict[str, Any] = {"type": type_}
        req.update({k: v for k, v in fields.items() if v is not None})
        return await self._client._request(identity_call_work(req))


class AuthAPI(_Requests):
    """``client.auth``: log in with a token (an access-file token or a session)."""

    async def login(self, token: str) -> Any:
        """Checks ``token`` and sends it from then on: ``{userId, roles, expiresAt}``."""
        return await self._call("auth.login", token=token)

    async def whoami(self) -> Any:
        return await self._call("auth.whoami")

    async def logout(self) -> None:
        await self._call("auth.logout")


class IdentityAPI(_Requests):
    """``client.identity``: users, sessions, roles, ACL and ownership."""

    # ---- auth ----
    async def login(self, username: str, password: str) -> Any:
        return await self._call("identity.login", username=username, password=password)

    async def login_with_secret(self, secret: str) -> Any:
        return await self._call("identity.login_with_secret", secret=secret)

    async def whoami(self) -> Any:
        return await self._call("identity.whoami")

    async def refresh_session(self) -> Any:
        return await self._call("identity.refresh_session")

    async def logout(self) -> None:
        await self._call("identity.logout")

    # ---- users ----
    async def create_user(self, data: Dict[str, Any]) -> Any:
        return await self._call("identity.create_user", **data)

    async def get_user(self, user_id: str) -> Any:
        return await self._call("identity.get_user", userId=user_id)

    async def update_user(self, user_id: str, changes: Dict[str, Any]) -> Any:
        return await self._call("identity.update_user", userId=user_id, changes=changes)

    async def list_users(
        self, page: int = 1, page_size: int = 20, tenant: Optional[str] = None
    ) -> Any:
        return await self._call("identity.list_users", page=page, pageSize=page_size, tenant=tenant)

    async def enable_user(self, user_id: str) -> Any:
        return await self._call("identity.enable_user", userId=user_id)

    async def disable_user(self, user_id: str) -> Any:
        return await self._call("identity.disable_user", userId=user_id)

    async def delete_user(self, user_id: str) -> None:
        await self._call("identity.delete_user", userId=user_id)

    # ---- passwords ----
    async def change_password(self, user_id: str, current_password: str, new_password: str) -> None:
        await self._call(
            "identity.change_password",
            userId=user_id,
            currentPassword=current_password,
            newPassword=new_password,
        )

    async def reset_password(self, user_id: str, new_password: str) -> None:
        await self._call("identity.reset_password", userId=user_id, newPassword=new_password)

    # ---- roles ----
    async def create_role(self, data: Dict[str, Any]) -> Any:
        return await self._call("identity.create_role", **data)

    async def assign_role(self, user_id: str, role_name: str) -> Any:
        return await self._call("identity.assign_role", userId=user_id, roleName=role_name)

    async def remove_role(self, user_id: str, role_name: str) -> Any:
        return await self._call("identity.remove_role", userId=user_id, roleName=role_name)

    async def get_user_roles(self, user_id: str) -> Any:
        return await self._call("identity.get_user_roles", userId=user_id)

    async def list_roles(self) -> Any:
        return await self._call("identity.list_roles")

    async def update_role(self, role_id: str, changes: Dict[str, Any]) -> Any:
        return await self._call("identity.update_role", roleId=role_id, changes=changes)

    async def delete_role(self, role_id: str) -> None:
        await self._call("identity.delete_role", roleId=role_id)

    # ---- ACL ----
    async def grant(self, data: Dict[str, Any]) -> Any:
        return await self._call("identity.grant", **data)

    async def revoke(self, data: Dict[str, Any]) -> Any:
        return await self._call("identity.revoke", **data)

    async def get_acl(self, resource_type: str, resource_name: str) -> Any:
        return await self._call("identity.get_acl", resourceType=resource_type, resourceName=resource_name)

    async def my_access(self) -> Any:
        return await self._call("identity.my_access")

    # ---- ownership ----
    async def get_owner(self, resource_type: str, resource_name: str) -> Any:
        return await self._call("identity.get_owner", resourceType=resource_type, resourceName=resource_name)

    async def transfer_owner(self, resource_type: str, resource_name: str, new_owner_id: str) -> Any:
        return await self._call(
            "identity.transfer_owner",
            resourceType=resource_type,
            resourceName=resource_name,
            newOwnerId=new_owner_id,
        )


class AuditAPI(_Requests):
    """``client.audit``: the tenant's audit trail."""

    async def query(self, filter: Optional[Dict[str, Any]] = None) -> Any:
        """Entries newest first; filter keys: userId, operation, result, from, to, limit."""
        return await self._call("audit.query", **(filter or {}))
