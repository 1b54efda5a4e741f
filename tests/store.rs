//! The document store on every engine: records and metadata, filters,
//! pagination, aggregates, schemas and validation, indexes, transactions and
//! live queries (also across a broker restart).

mod common;

use std::time::{Duration, Instant};

use common::{fixture, Backend, Broker};
use flowmesh::store::{Store, Subscription};
use flowmesh::{Client, Options};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(30);

async fn next(sub: &mut Subscription) -> Value {
    let got = tokio::time::timeout(PATIENCE, sub.next()).await.expect("no live query update in time");
    (*got.expect("subscription ended").expect("evaluation failed")).clone()
}

/// Waits for an update equal to `want` (earlier, intermediate ones allowed).
async fn until(sub: &mut Subscription, want: Value) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = next(sub).await;
        if v == want {
            return;
        }
        assert!(Instant::now() < deadline, "never got {want}, last {v}");
    }
}

fn names(recs: &[Value]) -> Vec<&str> {
    recs.iter().map(|r| r["name"].as_str().unwrap_or("?")).collect()
}

async fn records_crud_and_metadata(b: Backend) {
    let f = fixture(b).await;
    let s = Store::new(f.client.clone());
    let alice = s.insert("users", json!({"name": "Alice", "role": "admin"})).await.unwrap();
    let id = alice["id"].as_str().unwrap().to_owned();
    assert_eq!(alice["_version"], 1);
    assert!(alice["_createdAt"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(alice["_createdAt"], alice["_updatedAt"]);
    assert_eq!(s.get("users", &id).await.unwrap().unwrap(), alice);
    let upd = s.update("users", &id, json!({"role": "user", "_version": 99}), None).await.unwrap();
    assert_eq!(
        (upd["_version"].as_u64(), upd["name"].as_str(), upd["role"].as_str()),
        (Some(2), Some("Alice"), Some("user"))
    );
    let e = s.update("users", &id, json!({"role": "x"}), Some(1)).await.unwrap_err();
    assert_eq!(e.code, "CONFLICT");
    s.update("users", &id, json!({"credits": 5}), Some(2)).await.unwrap();
    assert_eq!(s.update("users", "nobody", json!({}), None).await.unwrap_err().code, "NOT_FOUND");
    let own = s.insert("users", json!({"id": "user-1", "name": "Bob"})).await.unwrap();
    assert_eq!(own["id"], "user-1");
    assert_eq!(s.insert("users", json!({"id": "user-1"})).await.unwrap_err().code, "ALREADY_EXISTS");
    assert_eq!(s.insert("users", json!([1])).await.unwrap_err().code, "VALIDATION_ERROR");
    s.delete("users", "user-1").await.unwrap();
    s.delete("users", "user-1").await.unwrap(); // absent: fine
    assert_eq!(s.get("users", "user-1").await.unwrap(), None);
    assert_eq!(s.all("users").await.unwrap().len(), 1);
    assert_eq!(s.clear("users").await.unwrap(), 1);
    assert!(s.all("users").await.unwrap().is_empty());
    assert_eq!(s.insert("_meta", json!({})).await.unwrap_err().code, "INVALID_ARGUMENT");
}

async fn filters_order_pagination_and_aggregates(b: Backend) {
    let f = fixture(b).await;
    let s = Store::new(f.client.clone());
    for (i, (name, age, role)) in
        [("a", 30, "admin"), ("b", 20, "user"), ("c", 40, "user"), ("d", 25, "guest"), ("e", 35, "user")]
            .iter()
            .enumerate()
    {
        s.insert("people", json!({"id": format!("p{i}"), "name": name, "age": age, "role": role, "tags": [role]}))
            .await
            .unwrap();
    }
    let w = s.where_("people", &json!({"role": "user", "age": {"$gte": 30}})).await.unwrap();
    assert_eq!(names(&w), vec!["c", "e"]);
    let w = s.where_("people", &json!({"$or": [{"role": "guest"}, {"age": {"$lt": 21}}]})).await.unwrap();
    assert_eq!(names(&w), vec!["b", "d"]);
    let w =
        s.where_("people", &json!({"name": {"$in": ["a", "e", "z"]}, "tags": {"$contains": "user"}})).await.unwrap();
    assert_eq!(names(&w), vec!["e"]);
    assert_eq!(s.find_one("people", &json!({"role": "user"})).await.unwrap().unwrap()["name"], "b");
    assert_eq!(s.find_one("people", &json!({"role": "none"})).await.unwrap(), None);
    assert_eq!(s.count("people", &json!({"role": "user"})).await.unwrap(), 3);
    assert_eq!(s.count("people", &Value::Null).await.unwrap(), 5);
    assert_eq!(names(s.first("people", 2).await.unwrap().as_array().unwrap()), vec!["a", "b"]);
    assert_eq!(names(s.last("people", 2).await.unwrap().as_array().unwrap()), vec!["d", "e"]);
    assert_eq!(s.aggregate("people", "sum", "age", &Value::Null).await.unwrap(), json!(150.0));
    assert_eq!(s.aggregate("people", "avg", "age", &json!({"role": "user"})).await.unwrap(), json!(95.0 / 3.0));
    assert_eq!(s.aggregate("people", "min", "age", &Value::Null).await.unwrap(), json!(20.0));
    assert_eq!(s.aggregate("people", "max", "age", &json!({"role": "none"})).await.unwrap(), Value::Null);
    assert_eq!(s.where_("people", &json!({"age": {"$bogus": 1}})).await.unwrap_err().code, "INVALID_ARGUMENT");

    // Pages: stable while records are inserted before and after the cursor.
    let p1 = s.paginate("people", 2, None).await.unwrap();
    assert_eq!((names(p1["records"].as_array().unwrap()), &p1["hasMore"]), (vec!["a", "b"], &json!(true)));
    s.insert("people", json!({"id": "p0a", "name": "early"})).await.unwrap(); // sorts before the cursor
    s.insert("people", json!({"id": "p9", "name": "late"})).await.unwrap();
    let p2 = s.paginate("people", 2, p1["nextCursor"].as_str()).await.unwrap();
    assert_eq!(names(p2["records"].as_array().unwrap()), vec!["c", "d"]);
    let p3 = s.paginate("people", 2, p2["nextCursor"].as_str()).await.unwrap();
    assert_eq!((names(p3["records"].as_array().unwrap()), &p3["hasMore"]), (vec!["e", "late"], &json!(false)));
    assert_eq!(p3["nextCursor"], Value::Null);
}

async fn schemas_validate_and_indexes_answer_where(b: Backend) {
    let f = fixture(b).await;
    let s = Store::new(f.client.clone());
    // Records written before the definition get indexed by it.
    s.insert("accounts", json!({"name": "pre", "role": "admin"})).await.unwrap();
    let def = json!({
        "schema": {
            "name": {"type": "string", "required": true, "minLength": 1},
            "role": {"type": "string", "enum": ["admin", "user"], "default": "user"},
            "credits": {"type": "number", "min": 0},
        },
        "indexes": ["role"],
    });
    s.define_bucket("accounts", &def).await.unwrap();
    assert_eq!(s.define_bucket("accounts", &def).await.unwrap_err().code, "ALREADY_EXISTS");
    let schema = s.get_bucket_schema("accounts").await.unwrap();
    assert_eq!(schema["indexes"], json!(["role"]));
    let e = s.insert("accounts", json!({"name": "", "credits": -1, "role": "root"})).await.unwrap_err();
    assert_eq!(e.code, "VALIDATION_ERROR");
    assert_eq!(e.details.as_ref().unwrap().as_array().unwrap().len(), 3, "{e}");
    assert_eq!(s.count("accounts", &Value::Null).await.unwrap(), 1, "nothing written");
    let u = s.insert("accounts", json!({"name": "u1"})).await.unwrap();
    assert_eq!(u["role"], "user");
    assert_eq!(
        s.update("accounts", u["id"].as_str().unwrap(), json!({"credits": "x"}), None).await.unwrap_err().code,
        "VALIDATION_ERROR"
    );
    s.insert("accounts", json!({"name": "a2", "role": "admin"})).await.unwrap();
    // Indexed equality: the right records, also after an indexed value changes.
    assert_eq!(names(&s.where_("accounts", &json!({"role": "admin"})).await.unwrap()), vec!["pre", "a2"]);
    s.update("accounts", u["id"].as_str().unwrap(), json!({"role": "admin"}), None).await.unwrap();
    let admins = s.where_("accounts", &json!({"role": "admin", "name": {"$ne": "pre"}})).await.unwrap();
    assert_eq!(names(&admins), vec!["u1", "a2"]);
    assert_eq!(s.count("accounts", &json!({"role": "user"})).await.unwrap(), 0);
    s.delete("accounts", u["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(s.count("accounts", &json!({"role": "admin"})).await.unwrap(), 2);
    // The index entries are KV keys of the bucket: one per record per indexed field.
    let idx = f.client.kv_keys("store.accounts", "x:role:").await.unwrap();
    assert_eq!(idx.len(), 2, "{idx:?}");

    s.update_bucket("accounts", &json!({"schema": {"email": {"type": "string"}}, "indexes": ["name"]})).await.unwrap();
    let schema = s.get_bucket_schema("accounts").await.unwrap();
    assert!(schema["schema"]["email"].is_object() && schema["schema"]["name"].is_object());
    assert_eq!(names(&s.where_("accounts", &json!({"name": "a2"})).await.unwrap()), vec!["a2"]);
    assert_eq!(s.buckets().await.unwrap(), vec!["accounts"]);
    s.drop_bucket("accounts").await.unwrap();
    assert_eq!(s.get_bucket_schema("accounts").await.unwrap_err().code, "BUCKET_NOT_DEFINED");
    assert!(s.all("accounts").await.unwrap().is_empty());
    assert_eq!(s.update_bucket("accounts", &json!({})).await.unwrap_err().code, "BUCKET_NOT_DEFINED");
}

async fn store_transactions_are_atomic(b: Backend) {
    let f = fixture(b).await;
    let s = Store::new(f.client.clone());
    s.define_bucket("users", &json!({"schema": {"credits": {"type": "number", "min": 0}}})).await.unwrap();
    s.insert("users", json!({"id": "user-1", "credits": 500})).await.unwrap();
    let r = s
        .transaction(&json!([
            {"op": "get", "bucket": "users", "key": "user-1"},
            {"op": "update", "bucket": "users", "key": "user-1", "data": {"credits": 400}},
            {"op": "insert", "bucket": "logs", "data": {"action": "credit_update"}},
            {"op": "count", "bucket": "logs", "filter": {"action": "credit_update"}},
            {"op": "findOne", "bucket": "users", "filter": {"credits": 400}},
            {"op": "where", "bucket": "logs"},
        ]))
        .await
        .unwrap();
    let res = r["results"].as_array().unwrap();
    assert_eq!(res[0]["credits"], 500);
    assert_eq!(res[1]["credits"], 400);
    assert_eq!(res[2]["action"], "credit_update");
    assert_eq!(res[3], 1, "count sees the insert before it");
    assert_eq!(res[4]["id"], "user-1");
    assert_eq!(res[5].as_array().unwrap().len(), 1);
    // A failing op fails all of it.
    let e = s
        .transaction(&json!([
            {"op": "insert", "bucket": "logs", "data": {"action": "x"}},
            {"op": "update", "bucket": "users", "key": "user-1", "data": {"credits": -5}},
        ]))
        .await
        .unwrap_err();
    assert_eq!(e.code, "VALIDATION_ERROR");
    assert_eq!(s.count("logs", &Value::Null).await.unwrap(), 1);
    assert_eq!(s.get("users", "user-1").await.unwrap().unwrap()["credits"], 400);
    assert_eq!(s.transaction(&json!([{"op": "explode", "bucket": "x"}])).await.unwrap_err().code, "INVALID_ARGUMENT");

    // Concurrent read-modify-write transactions lose no update.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let r = s.transaction(&json!([{"op": "get", "bucket": "users", "key": "user-1"}])).await.unwrap();
                let credits = r["results"][0]["credits"].as_i64().unwrap();
                let v = r["results"][0]["_version"].as_u64().unwrap();
                let upd = json!([{"op": "update", "bucket": "users", "key": "user-1",
                                  "data": {"credits": credits + 1}, "expectedVersion": v}]);
                loop {
                    match s.transaction(&upd).await {
                        Ok(_) => break,
                        Err(e) if e.code == "CONFLICT" => {
                            // Someone else won: read again and retry.
                            let r = s.get("users", "user-1").await.unwrap().unwrap();
                            let upd2 = json!([{"op": "update", "bucket": "users", "key": "user-1",
                                               "data": {"credits": r["credits"].as_i64().unwrap() + 1},
                                               "expectedVersion": r["_version"]}]);
                            if s.transaction(&upd2).await.is_ok() {
                                break;
                            }
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.get("users", "user-1").await.unwrap().unwrap()["credits"], 440);
}

async fn live_queries_follow_changes(b: Backend) {
    let f = fixture(b).await;
    let s = Store::new(f.client.clone());
    s.define_query("by-role", &json!({"type": "where", "bucket": "team", "filter": {"role": {"$param": "role"}}}))
        .await
        .unwrap();
    s.define_query("team-size", &json!({"type": "count", "bucket": "team"})).await.unwrap();
    assert_eq!(s.list_queries().await.unwrap().as_array().unwrap().len(), 2);
    assert_eq!(s.subscribe("nope", Value::Null).await.err().unwrap().code, "QUERY_NOT_DEFINED");
    assert_eq!(s.subscribe("by-role", json!({})).await.err().unwrap().code, "VALIDATION_ERROR");

    let mut admins = s.subscribe("by-role", json!({"role": "admin"})).await.unwrap();
    let mut admins2 = s.subscribe("by-role", json!({"role": "admin"})).await.unwrap();
    let mut size = s.subscribe("team-size", Value::Null).await.unwrap();
    assert_eq!(next(&mut admins).await, json!([]));
    assert_eq!(next(&mut admins2).await, json!([]));
    assert_eq!(next(&mut size).await, json!(0));

    let a = s.insert("team", json!({"id": "t1", "name": "ann", "role": "admin"})).await.unwrap();
    until(&mut admins, json!([a])).await;
    until(&mut size, json!(1)).await;
    // A change that does not alter the admins' result delivers nothing to them.
    s.insert("team", json!({"id": "t2", "name": "bob", "role": "user"})).await.unwrap();
    until(&mut size, json!(2)).await;
    let b2 = s.update("team", "t2", json!({"role": "admin"}), None).await.unwrap();
    until(&mut admins, json!([a, b2])).await;
    s.transaction(&json!([
        {"op": "delete", "bucket": "team", "key": "t1"},
        {"op": "insert", "bucket": "team", "data": {"id": "t3", "name": "cy", "role": "user"}},
    ]))
    .await
    .unwrap();
    until(&mut admins, json!([b2])).await;
    // Many changes in a burst: the last result arrives, in order, no older one after it.
    for i in 0..30 {
        s.insert("team", json!({"id": format!("u{i:02}"), "role": "user"})).await.unwrap();
    }
    let mut last = 0;
    loop {
        let v = next(&mut size).await.as_u64().unwrap();
        assert!(v > last, "a stale result {v} after {last}");
        last = v;
        if v == 32 {
            break;
        }
    }
    until(&mut admins2, json!([b2])).await;
    drop(admins2);
    s.undefine_query("team-size").await.unwrap();
    assert_eq!(s.undefine_query("team-size").await.unwrap_err().code, "QUERY_NOT_DEFINED");
    s.delete("team", "t2").await.unwrap();
    until(&mut admins, json!([])).await;
}

async fn requests_as_json(b: Backend) {
    let f = fixture(b).await;
    let s = Store::new(f.client.clone());
    let rec = s.call(&json!({"type": "store.insert", "bucket": "notes", "data": {"text": "hi"}})).await.unwrap();
    let got = s.call(&json!({"type": "store.get", "bucket": "notes", "key": rec["id"]})).await.unwrap();
    assert_eq!(got, rec);
    assert_eq!(s.call(&json!({"type": "count", "bucket": "notes"})).await.unwrap(), 1);
    assert_eq!(s.call(&json!({"type": "store.nothing"})).await.unwrap_err().code, "INVALID_ARGUMENT");
    assert_eq!(s.call(&json!({"type": "store.get", "bucket": "notes"})).await.unwrap_err().code, "INVALID_ARGUMENT");
    let stats = s.call(&json!({"type": "store.stats"})).await.unwrap();
    assert_eq!(stats["buckets"], 0);
}

contract_tests!(
    records_crud_and_metadata,
    filters_order_pagination_and_aggregates,
    schemas_validate_and_indexes_answer_where,
    store_transactions_are_atomic,
    live_queries_follow_changes,
    requests_as_json,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_queries_resume_with_fresh_data_after_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("file://{}", dir.path().display());
    let addr = common::free_addr();
    let mut broker = Broker::start_on(&data, &addr);
    let opts = Options::new()
        .with("reconnect_initial_ms", "50")
        .unwrap()
        .with("reconnect_max_ms", "500")
        .unwrap()
        .with("request_timeout_ms", "3000")
        .unwrap();
    let client = Client::connect(&broker.url(), &opts).await.unwrap();
    let s = Store::new(client);
    s.define_query("all-items", &json!({"type": "all", "bucket": "items"})).await.unwrap();
    let mut sub = s.subscribe("all-items", Value::Null).await.unwrap();
    assert_eq!(next(&mut sub).await, json!([]));
    s.insert("items", json!({"id": "i1"})).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while next(&mut sub).await.as_array().map(Vec::len) != Some(1) {
        assert!(Instant::now() < deadline);
    }
    broker.kill();
    // While the broker is down another writer would be invisible; after the
    // restart a different client writes, and the subscriber sees it.
    let broker = Broker::start_on(&data, &addr);
    let other = Store::new(Client::connect(&broker.url(), &Options::new()).await.unwrap());
    other.insert("items", json!({"id": "i2"})).await.unwrap();
    loop {
        let got = tokio::time::timeout(PATIENCE, sub.next()).await.expect("no fresh data after the restart");
        match got.expect("subscription ended") {
            Ok(v) if v.as_array().map(Vec::len) == Some(2) => break,
            Ok(_) | Err(_) => assert!(Instant::now() < deadline + PATIENCE, "never saw fresh data"),
        }
    }
}

/// A store request in flight when the link is lost fails with DISCONNECTED
/// at once and is not carried on after the reconnect: its write never lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_request_cut_by_a_lost_link_fails_and_writes_nothing() {
    let broker = Broker::start("mem://");
    let pid = broker.child.id() as libc::pid_t;
    let opts = Options::new()
        .with("heartbeat_ms", "200")
        .unwrap()
        .with("reconnect_initial_ms", "50")
        .unwrap()
        .with("reconnect_max_ms", "300")
        .unwrap()
        .with("request_timeout_ms", "60000")
        .unwrap();
    let s = Store::new(Client::connect(&broker.url(), &opts).await.unwrap());
    s.insert("items", json!({"id": "before"})).await.unwrap();

    // A stopped broker holds the request: only the heartbeat notices.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let request = {
        let s = s.clone();
        tokio::spawn(async move { s.call(&json!({"type": "insert", "bucket": "items", "data": {"id": "cut"}})).await })
    };
    let outcome = tokio::time::timeout(PATIENCE, request).await;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let err = outcome.expect("the request outlived the lost link").unwrap().expect_err("a cut request succeeded");
    assert_eq!(err.code, "DISCONNECTED", "{err:?}");

    // Once the broker answers again, the cut insert is not there, and new
    // requests work.
    let deadline = Instant::now() + PATIENCE;
    let before = loop {
        match s.call(&json!({"type": "get", "bucket": "items", "key": "before"})).await {
            Ok(v) => break v,
            Err(e) => assert!(Instant::now() < deadline, "the store never answered again: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(before["id"], "before");
    assert_eq!(s.get("items", "cut").await.unwrap(), None, "the cut request was carried on after the reconnect");
}
