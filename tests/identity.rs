//! Identity of `flowmesh serve --identity`: users, passwords, sessions,
//! roles, ACL grants, ownership and audit queries, through the real broker
//! binary; a permission matrix over two tenants; revocation closing open
//! watches; state kept across a restart. argon2 runs with tiny parameters
//! here (`--password-hash-memory-kib 8`) so the tests stay fast.

mod common;

use std::time::{Duration, Instant};

use common::{free_addr, Broker};
use flowmesh::{Client, Error, Options, Record};
use futures::StreamExt;
use serde_json::{json, Value};

const SECRET: &str = "the-admin-secret";

fn start(data: &str, extra: &[&str]) -> Broker {
    let mut args = vec![
        "--identity",
        "--admin-secret",
        SECRET,
        "--admin-tenant",
        "acme",
        "--password-hash-memory-kib",
        "8",
        "--password-hash-iterations",
        "1",
    ];
    args.extend_from_slice(extra);
    Broker::start_with(data, &free_addr(), &args)
}

async fn client(b: &Broker, tenant: &str, extra: &[(&str, &str)]) -> Client {
    let mut o = Options::new().with("tenant", tenant).unwrap().with("request_timeout_ms", "5000").unwrap();
    for (k, v) in extra {
        o.set(k, v).unwrap();
    }
    Client::connect(&b.url(), &o).await.expect("connect")
}

async fn call(c: &Client, req: Value) -> Result<Value, Error> {
    c.identity(&req).await
}

async fn ok(c: &Client, req: Value) -> Value {
    let what = req["type"].clone();
    c.identity(&req).await.unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

fn unauthorized<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    assert!(matches!(r, Err(Error::Unauthorized(_))), "{what}: expected UNAUTHORIZED, got {r:?}");
}

async fn admin(b: &Broker) -> Client {
    let c = client(b, "acme", &[]).await;
    ok(&c, json!({"type": "identity.login_with_secret", "secret": SECRET})).await;
    c
}

async fn user(b: &Broker, tenant: &str, name: &str, password: &str) -> Client {
    client(b, tenant, &[("identity_user", name), ("identity_password", password)]).await
}

async fn create(admin: &Client, tenant: &str, name: &str, roles: &[&str]) -> String {
    let u = ok(
        admin,
        json!({"type": "identity.create_user", "tenant": tenant, "username": name, "password": "password-1", "roles": roles}),
    )
    .await;
    u["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_passwords_sessions_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("file://{}", dir.path().display());
    let mut b = start(&data, &[]);
    let a = admin(&b).await;
    let me = ok(&a, json!({"type": "identity.whoami"})).await;
    assert_eq!(me["userId"], "admin");
    assert_eq!(me["roles"], json!(["superadmin"]));
    assert!(me["expiresAt"].as_u64().unwrap() > 0);
    unauthorized(call(&a, json!({"type": "identity.login_with_secret", "secret": "wrong-secret"})).await, "bad secret");

    let alice = create(&a, "acme", "alice", &[]).await;
    for n in ["bob", "carol", "dave"] {
        create(&a, "acme", n, &[]).await;
    }
    let dup = call(&a, json!({"type": "identity.create_user", "username": "alice", "password": "password-1"})).await;
    assert!(matches!(dup, Err(Error::AlreadyExists(_))), "{dup:?}");
    let short = call(&a, json!({"type": "identity.create_user", "username": "eve", "password": "short"})).await;
    assert!(matches!(short, Err(Error::InvalidArgument(_))), "{short:?}");
    let page = ok(&a, json!({"type": "identity.list_users", "page": 2, "pageSize": 2})).await;
    assert_eq!(page["total"], 5);
    let names: Vec<&str> = page["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["bob", "carol"]);
    let upd = ok(&a, json!({"type": "identity.update_user", "userId": alice, "displayName": "Alice"})).await;
    assert_eq!(upd["displayName"], "Alice");
    assert!(upd.get("passwordHash").is_none() && upd.get("password_hash").is_none());

    // Wrong password and unknown user: the same refusal.
    let anon = client(&b, "acme", &[]).await;
    let wrong = call(&anon, json!({"type": "identity.login", "username": "alice", "password": "password-2"})).await;
    let unknown = call(&anon, json!({"type": "identity.login", "username": "nobody", "password": "password-1"})).await;
    assert_eq!(format!("{wrong:?}"), format!("{unknown:?}"));
    unauthorized(wrong, "wrong password");
    unauthorized(call(&anon, json!({"type": "identity.whoami"})).await, "whoami without a session");

    // Password change by the user, reset by the admin.
    let u = user(&b, "acme", "alice", "password-1").await;
    ok(&u, json!({"type": "identity.change_password", "userId": alice, "currentPassword": "password-1", "newPassword": "password-2"})).await;
    unauthorized(
        call(&u, json!({"type": "identity.change_password", "userId": alice, "currentPassword": "nope-nope", "newPassword": "password-3"})).await,
        "change_password with a wrong current password",
    );
    let refreshed = ok(&u, json!({"type": "identity.refresh_session"})).await;
    assert_eq!(refreshed["userId"].as_str(), Some(alice.as_str()));
    ok(&a, json!({"type": "identity.reset_password", "userId": alice, "newPassword": "password-9"})).await;
    unauthorized(call(&u, json!({"type": "identity.whoami"})).await, "session after reset_password");
    let u = user(&b, "acme", "alice", "password-9").await;

    // Logout ends the session; disable refuses the login.
    ok(&u, json!({"type": "identity.logout"})).await;
    unauthorized(u.kv_set("b", "k", "v", 0).await, "data call after logout");
    ok(&a, json!({"type": "identity.disable_user", "userId": alice})).await;
    let disabled = Client::connect(
        &b.url(),
        &Options::new().with("identity_user", "alice").unwrap().with("identity_password", "password-9").unwrap(),
    )
    .await;
    unauthorized(disabled.map(|_| ()), "login of a disabled user");
    ok(&a, json!({"type": "identity.enable_user", "userId": alice})).await;

    // A restart keeps users, passwords and sessions.
    b.kill();
    let b =
        Broker::start_with(&data, &b.addr.clone(), &["--identity", "--admin-secret", SECRET, "--admin-tenant", "acme"]);
    let u = user(&b, "acme", "alice", "password-9").await;
    assert_eq!(ok(&u, json!({"type": "identity.whoami"})).await["username"], "alice");
    let a2 = admin(&b).await;
    ok(&a2, json!({"type": "identity.delete_user", "userId": alice})).await;
    unauthorized(call(&u, json!({"type": "identity.whoami"})).await, "session of a deleted user");
    let gone = call(&a2, json!({"type": "identity.get_user", "userId": alice})).await;
    assert!(matches!(gone, Err(Error::NotFound(_))), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire() {
    let b = start("mem://", &["--session-ttl-secs", "1"]);
    let a = admin(&b).await;
    create(&a, "acme", "alice", &[]).await;
    let u = user(&b, "acme", "alice", "password-1").await;
    ok(&u, json!({"type": "identity.whoami"})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call(&u, json!({"type": "identity.whoami"})).await {
            Err(Error::Unauthorized(_)) => break,
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("session did not expire: {other:?}"),
        }
    }
}

/// Every refusal: UNAUTHORIZED, nothing written, and in the audit query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix_across_two_tenants() {
    let b = start("mem://", &[]);
    let a = admin(&b).await;
    let all_data = json!(["publish", "subscribe", "read", "queue_produce", "queue_consume", "kv_read", "kv_write"]);
    for t in ["acme", "globex"] {
        ok(&a, json!({"type": "identity.create_role", "tenant": t, "name": "writer", "permissions": all_data})).await;
        ok(
            &a,
            json!({"type": "identity.create_role", "tenant": t, "name": "manager",
            "permissions": ["users.manage", "roles.manage", "acl.manage", "audit.read"]}),
        )
        .await;
    }
    let bad = call(&a, json!({"type": "identity.create_role", "name": "typo", "permissions": ["publsh"]})).await;
    assert!(matches!(bad.err(), Some(Error::InvalidArgument(_))));
    let alice_id = create(&a, "acme", "alice", &["writer"]).await;
    let carol_id = create(&a, "acme", "carol", &[]).await;
    create(&a, "acme", "mia", &["manager"]).await;
    create(&a, "globex", "bob", &["writer", "manager"]).await;
    let alice = user(&b, "acme", "alice", "password-1").await;
    let carol = user(&b, "acme", "carol", "password-1").await;
    let mia = user(&b, "acme", "mia", "password-1").await;
    // bob's client names acme's resources: his tenant is globex.
    let bob = user(&b, "acme", "bob", "password-1").await;

    // Data operations: alice (role) may, carol (nothing) and bob (other tenant) may not.
    alice.kv_set("orders", "k", "v", 0).await.unwrap();
    alice.publish("events", Record::new("e1")).await.unwrap();
    alice.enqueue("jobs", Record::new("j1"), 0, 0).await.unwrap();
    let mut refusals = 0;
    for (who, c) in [("carol", &carol), ("bob", &bob)] {
        unauthorized(c.kv_set("orders", "k", "evil", 0).await, &format!("{who} kv_set"));
        unauthorized(c.kv_get("orders", "k").await, &format!("{who} kv_get"));
        unauthorized(c.publish("events", Record::new("evil")).await, &format!("{who} publish"));
        unauthorized(c.read("events", 0, 0, 10).await, &format!("{who} read"));
        unauthorized(c.enqueue("jobs", Record::new("evil"), 0, 0).await, &format!("{who} enqueue"));
        unauthorized(c.reserve("jobs", 1000, 0).await, &format!("{who} reserve"));
        refusals += 6;
    }
    // Nothing was written.
    assert_eq!(&alice.kv_get("orders", "k").await.unwrap().value[..], b"v");
    let msgs = alice.read("events", 0, 0, 10).await.unwrap();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(alice.queue_stats("jobs").await.unwrap().pending, 1);

    // Identity operations: carol has no permission, mia (manager of acme)
    // may, bob (manager of globex) may not in acme.
    let mia_made =
        ok(&mia, json!({"type": "identity.create_user", "username": "nina", "password": "password-1"})).await;
    assert_eq!(mia_made["tenant"], "acme");
    for (who, c) in [("carol", &carol), ("bob", &bob)] {
        let reqs = [
            json!({"type": "identity.create_user", "tenant": "acme", "username": format!("x-{who}"), "password": "password-1"}),
            json!({"type": "identity.list_users", "tenant": "acme"}),
            json!({"type": "identity.get_user", "userId": alice_id}),
            json!({"type": "identity.update_user", "userId": alice_id, "displayName": "hacked"}),
            json!({"type": "identity.disable_user", "userId": alice_id}),
            json!({"type": "identity.reset_password", "userId": alice_id, "newPassword": "password-x"}),
            json!({"type": "identity.create_role", "tenant": "acme", "name": format!("r-{who}"), "permissions": ["*"]}),
            json!({"type": "identity.update_role", "tenant": "acme", "roleId": "writer", "permissions": ["*"]}),
            json!({"type": "identity.delete_role", "tenant": "acme", "roleId": "writer"}),
            json!({"type": "identity.assign_role", "userId": carol_id, "roleName": "writer"}),
            json!({"type": "identity.grant", "userId": carol_id, "resource": "bucket:orders", "permission": "write"}),
            json!({"type": "identity.get_acl", "tenant": "acme", "resourceType": "bucket", "resourceName": "orders"}),
            json!({"type": "identity.transfer_owner", "tenant": "acme", "resourceType": "bucket", "resourceName": "orders", "newOwnerId": carol_id}),
            json!({"type": "audit.query", "tenant": "acme"}),
        ];
        for r in reqs {
            unauthorized(call(c, r.clone()).await, &format!("{who} {}", r["type"]));
            refusals += 1;
        }
    }
    unauthorized(
        call(&mia, json!({"type": "identity.assign_role", "userId": carol_id, "roleName": "superadmin"})).await,
        "superadmin given by a tenant manager",
    );
    // Nothing changed.
    let alice_now = ok(&a, json!({"type": "identity.get_user", "userId": alice_id})).await;
    assert_eq!(alice_now["displayName"], Value::Null);
    assert_eq!(alice_now["enabled"], true);
    let roles = ok(&a, json!({"type": "identity.list_roles", "tenant": "acme"})).await;
    assert_eq!(roles.as_array().unwrap().len(), 3, "{roles}"); // superadmin, manager, writer
    let users = ok(&a, json!({"type": "identity.list_users", "tenant": "acme", "pageSize": 100})).await;
    assert_eq!(users["total"], 5); // admin, alice, carol, mia, nina

    // ACL: a read grant lets carol read, not write; revoke takes it back.
    ok(&mia, json!({"type": "identity.grant", "userId": carol_id, "resource": "bucket:orders", "permission": "read"}))
        .await;
    assert_eq!(&carol.kv_get("orders", "k").await.unwrap().value[..], b"v");
    unauthorized(carol.kv_set("orders", "k", "evil", 0).await, "carol kv_set with a read grant");
    refusals += 1;
    let acl = ok(&mia, json!({"type": "identity.get_acl", "resourceType": "bucket", "resourceName": "orders"})).await;
    assert_eq!(acl[0]["userId"].as_str(), Some(carol_id.as_str()));
    ok(&mia, json!({"type": "identity.revoke", "userId": carol_id, "resource": "bucket:orders", "permission": "read"}))
        .await;
    unauthorized(carol.kv_get("orders", "k").await, "carol kv_get after revoke");
    refusals += 1;

    // Ownership: alice created "orders"; she may grant on it and hand it over.
    let owner =
        ok(&alice, json!({"type": "identity.get_owner", "resourceType": "bucket", "resourceName": "orders"})).await;
    assert_eq!(owner["userId"].as_str(), Some(alice_id.as_str()));
    ok(
        &alice,
        json!({"type": "identity.grant", "userId": carol_id, "resource": "bucket:orders", "permission": "write"}),
    )
    .await;
    carol.kv_set("orders", "k2", "by carol", 0).await.unwrap();
    ok(&alice, json!({"type": "identity.transfer_owner", "resourceType": "bucket", "resourceName": "orders", "newOwnerId": carol_id})).await;
    let owner =
        ok(&carol, json!({"type": "identity.get_owner", "resourceType": "bucket", "resourceName": "orders"})).await;
    assert_eq!(owner["userId"].as_str(), Some(carol_id.as_str()));
    let access = ok(&carol, json!({"type": "identity.my_access"})).await;
    assert_eq!(access["owned"].as_array().unwrap().len(), 1, "{access}");

    // Every refusal is in the audit query (mia may read acme's trail).
    let entries = ok(&mia, json!({"type": "audit.query", "result": "error", "limit": 1000})).await;
    let entries = entries.as_array().unwrap();
    let carol_refusals = entries.iter().filter(|e| e["userId"].as_str() == Some(carol_id.as_str())).count();
    let bob_refusals =
        entries.iter().filter(|e| e["userId"].as_str().is_some_and(|u| u != carol_id && u != alice_id)).count();
    assert!(carol_refusals + bob_refusals >= refusals, "{} refusals audited of {refusals}: {entries:?}", entries.len());
    let by_carol = ok(&mia, json!({"type": "audit.query", "userId": carol_id, "operation": "kv_set"})).await;
    assert!(by_carol.as_array().unwrap().iter().all(|e| e["operation"] == "kv_set"));
    let changes = ok(&a, json!({"type": "audit.query", "operation": "create_user", "result": "success"})).await;
    assert!(changes.as_array().unwrap().len() >= 3, "{changes}");
    let from = ok(&a, json!({"type": "audit.query", "from": u64::MAX / 2})).await;
    assert_eq!(from, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_closes_watches_and_subscriptions() {
    let b = start("mem://", &[]);
    let a = admin(&b).await;
    ok(&a, json!({"type": "identity.create_role", "name": "writer", "permissions": ["*"]})).await;
    let alice_id = create(&a, "acme", "alice", &["writer"]).await;
    create(&a, "acme", "bob", &["writer"]).await;
    let alice = user(&b, "acme", "alice", "password-1").await;
    let bob = user(&b, "acme", "bob", "password-1").await;
    alice.kv_set("b", "k", "v", 0).await.unwrap();
    let mut watch = alice.kv_watch("b", "").await.unwrap();
    let mut bob_watch = bob.kv_watch("b", "").await.unwrap();
    ok(&a, json!({"type": "identity.disable_user", "userId": alice_id})).await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch of a disabled user ends");
    assert!(matches!(end, Some(Err(Error::Unauthorized(_)))), "{end:?}");
    // bob's watch goes on.
    bob.kv_set("b", "k2", "v2", 0).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), bob_watch.next()).await.unwrap();
    assert!(matches!(ev, Some(Ok(_))), "{ev:?}");
    // Logout closes the caller's own watch too.
    ok(&bob, json!({"type": "identity.logout"})).await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match bob_watch.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch of a logged-out session ends");
    assert!(matches!(end, Some(Err(Error::Unauthorized(_)))), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_identity_nothing_changes() {
    let b = Broker::start("mem://");
    let c = client(&b, "acme", &[]).await;
    c.kv_set("b", "k", "v", 0).await.unwrap();
    let r = call(&c, json!({"type": "identity.whoami"})).await;
    assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
    let embedded = Client::connect("mem://", &Options::new()).await.unwrap();
    let r = call(&embedded, json!({"type": "identity.whoami"})).await;
    assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
    let bad = Client::connect("mem://", &Options::new().with("identity_user", "x").unwrap()).await;
    assert!(matches!(bad.err(), Some(Error::InvalidArgument(_))));
}
