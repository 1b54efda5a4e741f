"""The noex client API's auth, identity and audit calls through
flowmesh.noex against a broker started with --identity: the document's
examples, auto-login with AuthOptions(credentials=...) after connect and
after a broker restart, refusals (UNAUTHORIZED, nothing written, audited)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, Iterator, Tuple

import pytest

from conftest import start_broker, stop_broker
from flowmesh.noex import (
    AuthOptions,
    ClientOptions,
    CredentialOptions,
    NoexClient,
    NoexClientError,
    ReconnectOptions,
)

SECRET = "the-admin-secret"
FAST = ("--password-hash-memory-kib", "8", "--password-hash-iterations", "1")


def _args() -> Tuple[str, ...]:
    return ("--identity", "--admin-secret", SECRET, *FAST)


@pytest.fixture
def identity_url() -> Iterator[str]:
    proc, url = start_broker(args=_args())
    yield url
    stop_broker(proc)


async def _until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("timed out waiting for the client state")
        await asyncio.sleep(0.01)


async def _refused(coro: Any) -> NoexClientError:
    with pytest.raises(NoexClientError) as info:
        await coro
    assert info.value.code == "UNAUTHORIZED", info.value
    return info.value


async def test_document_examples(identity_url: str) -> None:
    client = NoexClient(identity_url)
    await client.connect()
    result = await client.identity.login_with_secret(SECRET)
    assert result["userId"] == "admin" and "token" in result
    me = await client.identity.whoami()
    assert me["roles"] == ["superadmin"]
    session = await client.identity.refresh_session()
    assert session["expiresAt"] >= me["expiresAt"]

    user = await client.identity.create_user({"username": "alice", "password": "s3cret-pass"})
    user_id = user["id"]
    assert (await client.identity.get_user(user_id))["username"] == "alice"
    await client.identity.update_user(user_id, {"displayName": "Alice"})
    users = await client.identity.list_users(page=1, page_size=20)
    assert {u["username"] for u in users["users"]} == {"admin", "alice"}
    await client.identity.disable_user(user_id)
    await client.identity.enable_user(user_id)
    await client.identity.reset_password(user_id, "new-pass-1")

    role = await client.identity.create_role({"name": "editor", "permissions": ["kv_read", "kv_write"]})
    assert role["name"] == "editor"
    await client.identity.assign_role(user_id, "editor")
    roles = await client.identity.get_user_roles(user_id)
    assert [r["name"] for r in roles] == ["editor"]
    all_roles = await client.identity.list_roles()
    assert {r["name"] for r in all_roles} >= {"editor", "superadmin"}
    await client.identity.update_role("editor", {"permissions": ["kv_read", "kv_write", "read"]})

    # The user: auto-login with credentials, a store bucket, ownership, ACL.
    alice_auth = AuthOptions(credentials=CredentialOptions("alice", "new-pass-1"))
    alice = NoexClient(identity_url, ClientOptions(auth=alice_auth))
    welcome = await alice.connect()
    assert welcome.requires_auth
    await alice.identity.change_password(user_id, "new-pass-1", "new-pass-2")
    users_bucket = alice.store.bucket("users")
    await users_bucket.insert({"name": "Ann"})
    owner = await alice.identity.get_owner("bucket", "users")
    assert owner is not None and owner["userId"] == user_id
    bob = await client.identity.create_user({"username": "bob", "password": "bob-pass-1"})
    await alice.identity.grant({"userId": bob["id"], "resource": "bucket:users", "permission": "read"})
    acl = await alice.identity.get_acl("bucket", "users")
    assert acl[0]["userId"] == bob["id"] and acl[0]["permission"] == "read"
    access = await alice.identity.my_access()
    assert "kv_write" in access["permissions"]
    await alice.identity.revoke({"userId": bob["id"], "resource": "bucket:users", "permission": "read"})
    await alice.identity.transfer_owner("bucket", "users", bob["id"])
    assert (await client.identity.get_owner("bucket", "users"))["userId"] == bob["id"]

    # A user without the permission: UNAUTHORIZED, nothing written, audited.
    await client.identity.remove_role(user_id, "editor")
    await _refused(alice.store.bucket("users").insert({"name": "Eve"}))
    await _refused(alice.identity.create_user({"username": "mallory", "password": "mallory-1"}))
    await _refused(alice.identity.list_users())
    await _refused(alice.audit.query({"limit": 5}))
    names = [u["username"] for u in (await client.identity.list_users(page_size=100))["users"]]
    assert "mallory" not in names
    entries = await client.audit.query({"userId": user_id, "result": "error", "limit": 50})
    ops = {e["operation"] for e in entries}
    assert {"create_user", "list_users", "audit.query"} <= ops, ops
    assert all(e["userId"] == user_id for e in entries)
    admin_entries = await client.audit.query({"userId": "admin", "limit": 50})
    assert any(e["operation"] == "create_user" and e["result"] == "ok" for e in admin_entries)

    await client.identity.delete_role("editor")
    await client.identity.delete_user(bob["id"])
    await client.identity.logout()
    await _refused(client.identity.whoami())
    await alice.identity.logout()
    await alice.disconnect()
    await client.disconnect()


async def test_bad_input(identity_url: str) -> None:
    async with NoexClient(identity_url) as client:
        await _refused(client.identity.login("nobody", "whatever-1"))
        await _refused(client.identity.login_with_secret("not-the-secret"))
        await _refused(client.identity.whoami())
        await client.identity.login_with_secret(SECRET)
        user = await client.identity.create_user({"username": "carol", "password": "carol-pass"})
        wrong = await _refused(client.identity.login("carol", "wrong-pass"))
        unknown = await _refused(client.identity.login("nobody", "wrong-pass"))
        assert wrong.message == unknown.message
        with pytest.raises(NoexClientError) as info:
            await client.identity.create_user({"username": "bad name", "password": "carol-pass"})
        assert info.value.code == "INVALID_ARGUMENT"
        await client.identity.disable_user(user["id"])
    with pytest.raises(NoexClientError) as refused:
        carol = AuthOptions(credentials=CredentialOptions("carol", "carol-pass"))
        await NoexClient(identity_url, ClientOptions(auth=carol)).connect()
    assert refused.value.code == "UNAUTHORIZED"


async def test_token_login_and_relogin_after_restart(tmp_path: Path) -> None:
    proc, url = start_broker(data=f"file://{tmp_path}", args=_args())
    port = int(url.rsplit(":", 1)[1])
    try:
        async with NoexClient(url) as admin:
            await admin.identity.login_with_secret(SECRET)
            await admin.identity.create_role({"name": "rw", "permissions": ["*"]})
            dave = {"username": "dave", "password": "dave-pass", "roles": ["rw"]}
            user = await admin.identity.create_user(dave)
            session = await admin.identity.login("dave", "dave-pass")
        token = session["token"]
        # auth.login with a session token: the document's session shape.
        async with NoexClient(url) as c:
            got = await c.auth.login(token)
            assert got["userId"] == user["id"] and got["roles"] == ["rw"] and got["expiresAt"] > 0
            assert (await c.auth.whoami())["userId"] == user["id"]
        opts = ClientOptions(
            auth=AuthOptions(credentials=CredentialOptions("dave", "dave-pass")),
            reconnect=ReconnectOptions(initial_delay_ms=100, max_delay_ms=300, jitter_ms=50),
        )
        client = NoexClient(url, opts)
        await client.connect()
        await client.store.bucket("notes").insert({"text": "before"})
        # End dave's session: only a new login after the reconnect lets the
        # client write again.
        async with NoexClient(url) as admin:
            await admin.identity.login_with_secret(SECRET)
            await admin.identity.disable_user(user["id"])
            await admin.identity.enable_user(user["id"])
        await _refused(client.store.bucket("notes").insert({"text": "no session"}))
        proc.kill()
        proc.wait(10)
        await _until(lambda: client.state == "reconnecting")
        proc, _ = start_broker(data=f"file://{tmp_path}", port=port, args=_args())
        await _until(lambda: client.state == "connected", timeout=30)
        await client.store.bucket("notes").insert({"text": "after"})
        assert (await client.identity.whoami())["username"] == "dave"
        await client.disconnect()
    finally:
        stop_broker(proc)
