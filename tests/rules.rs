//! The rules engine and procedures on every engine: events, facts, topic
//! subscriptions, rule semantics, malformed input, procedures' atomicity,
//! restart survival on file://, and exactly-once evaluation with two
//! evaluator processes, one of them killed with SIGKILL mid-stream.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, Backend, Broker};
use flowmesh::procedures::Procedures;
use flowmesh::rules::Rules;
use flowmesh::store::Store;
use flowmesh::{Client, Options};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `probe` until it returns Some, failing after PATIENCE.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn processed(rules: &Rules) -> u64 {
    rules.stats().await.unwrap()["eventsProcessed"].as_u64().unwrap()
}

/// Every event of the log, in order.
async fn log(client: &Client) -> Vec<Value> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let batch = client.read("rules_events", 0, offset, 1000).await.unwrap_or_default();
        if batch.is_empty() {
            return out;
        }
        offset = batch.last().unwrap().offset + 1;
        out.extend(batch.iter().map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap()));
    }
}

async fn events_facts_and_subscriptions(b: Backend) {
    let f = fixture(b).await;
    let rules = Rules::new(Store::new(f.client.clone()));
    let mut users = rules.subscribe("user.*").await.unwrap();
    let mut all = rules.subscribe(">").await.unwrap();
    let e = rules.emit("order.created", json!({"orderId": "456"}), Some("corr-1"), Some("cause-1")).await.unwrap();
    assert_eq!((e["topic"].as_str(), e["data"]["orderId"].as_str()), (Some("order.created"), Some("456")));
    assert_eq!((e["correlationId"].as_str(), e["causationId"].as_str()), (Some("corr-1"), Some("cause-1")));
    assert!(e["timestamp"].as_i64().unwrap() > 1_600_000_000_000 && e["id"].is_string());
    let u = rules.emit("user.created", json!({"userId": "123"}), None, None).await.unwrap();
    assert!(u.get("correlationId").is_none());
    rules.emit("user.created.eu", json!({}), None, None).await.unwrap();
    async fn next(s: &mut flowmesh::rules::Subscription) -> (String, Value) {
        tokio::time::timeout(PATIENCE, s.next()).await.expect("an event in time").unwrap().unwrap()
    }
    let (topic, got) = next(&mut users).await;
    assert_eq!((topic.as_str(), &got), ("user.created", &u), "user.* skips order.created");
    assert_eq!(next(&mut all).await.1, e);
    assert_eq!(next(&mut all).await.0, "user.created");
    assert_eq!(next(&mut all).await.0, "user.created.eu");

    let set = rules.set_fact("user:1:status", json!("active")).await.unwrap();
    assert_eq!((set["key"].as_str(), set["value"].as_str()), (Some("user:1:status"), Some("active")));
    rules.set_fact("user:2:status", json!("banned")).await.unwrap();
    rules.set_fact("user:2:name", json!({"first": "Bo"})).await.unwrap();
    assert_eq!(rules.get_fact("user:1:status").await.unwrap(), Some(json!("active")));
    assert_eq!(rules.get_fact("nope").await.unwrap(), None);
    let q = rules.query_facts("user:*:status").await.unwrap();
    let keys: Vec<&str> = q.iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["user:1:status", "user:2:status"]);
    assert_eq!(rules.get_all_facts().await.unwrap().len(), 3);
    assert!(rules.delete_fact("user:1:status").await.unwrap());
    assert!(!rules.delete_fact("user:1:status").await.unwrap());
    assert_eq!(rules.set_fact("a*b", json!(1)).await.unwrap_err().code, "INVALID_ARGUMENT");
    assert_eq!(rules.emit("bad..topic", json!({}), None, None).await.unwrap_err().code, "INVALID_ARGUMENT");
    assert_eq!(rules.subscribe("a.>.b").await.err().unwrap().code, "INVALID_ARGUMENT");
}

async fn rules_fire_on_events_and_facts(b: Backend) {
    let f = fixture(b).await;
    let rules = Rules::new(Store::new(f.client.clone()));
    let _evaluator = rules.start_evaluator();
    rules
        .register_rule(&json!({"id": "adult", "priority": 10,
            "when": {"topic": "user.created", "data": {"age": {"$gte": 18}},
                     "facts": {"user:${data.id}:banned": {"$exists": false}}},
            "then": [{"type": "setFact", "key": "user:${data.id}:status", "value": "active"},
                     {"type": "deleteFact", "key": "user:${data.id}:pending"},
                     {"type": "emit", "topic": "user.welcomed", "data": {"id": "${data.id}", "age": "${data.age}",
                      "text": "hi ${data.id}"}}]}))
        .await
        .unwrap();
    rules
        .register_rule(&json!({"id": "count-welcomes",
            "when": {"topic": "user.*", "facts": {"welcomes:on": true}},
            "then": {"type": "setFact", "key": "seen:${topic}:${data.id}", "value": "${event.id}"}}))
        .await
        .unwrap();
    rules.set_fact("welcomes:on", json!(true)).await.unwrap();
    rules.set_fact("user:kid:pending", json!(true)).await.unwrap();
    rules.set_fact("user:ann:pending", json!(true)).await.unwrap();
    rules.set_fact("user:bad:banned", json!(true)).await.unwrap();
    let ann = rules.emit("user.created", json!({"id": "ann", "age": 30}), Some("c1"), None).await.unwrap();
    rules.emit("user.created", json!({"id": "kid", "age": 9}), None, None).await.unwrap();
    rules.emit("user.created", json!({"id": "bad", "age": 40}), None, None).await.unwrap();
    // 3 created + 1 welcomed.
    eventually("four events evaluated", || async { (processed(&rules).await >= 4).then_some(()) }).await;
    assert_eq!(rules.get_fact("user:ann:status").await.unwrap(), Some(json!("active")));
    assert_eq!(rules.get_fact("user:ann:pending").await.unwrap(), None);
    assert_eq!(rules.get_fact("user:kid:status").await.unwrap(), None, "the data condition held it back");
    assert_eq!(rules.get_fact("user:kid:pending").await.unwrap(), Some(json!(true)));
    assert_eq!(rules.get_fact("user:bad:status").await.unwrap(), None, "the fact condition held it back");
    let welcomed: Vec<Value> = log(&f.client).await.into_iter().filter(|e| e["topic"] == "user.welcomed").collect();
    assert_eq!(welcomed.len(), 1);
    let w = &welcomed[0];
    assert_eq!(w["data"], json!({"id": "ann", "age": 30, "text": "hi ann"}), "whole placeholders keep their type");
    assert_eq!((&w["causationId"], &w["correlationId"]), (&ann["id"], &json!("c1")));
    assert_eq!(rules.get_fact("seen:user.welcomed:ann").await.unwrap(), Some(w["id"].clone()), "chained");
    assert_eq!(rules.query_facts("seen:user.created:*").await.unwrap().len(), 3);

    // Disabled rules do not fire; updates apply to later events.
    rules.disable_rule("adult").await.unwrap();
    assert_eq!(rules.get_rule("adult").await.unwrap().unwrap()["enabled"], false);
    rules.emit("user.created", json!({"id": "zed", "age": 50}), None, None).await.unwrap();
    eventually("five events", || async { (processed(&rules).await >= 5).then_some(()) }).await;
    assert_eq!(rules.get_fact("user:zed:status").await.unwrap(), None);
    let up = rules.update_rule("count-welcomes", &json!({"when": {"topic": "order.*"}})).await.unwrap();
    assert_eq!(up["version"], 2);
    rules.enable_rule("adult").await.unwrap();
    rules.emit("user.created", json!({"id": "amy", "age": 20}), None, None).await.unwrap();
    eventually("amy welcomed", || async { rules.get_fact("user:amy:status").await.unwrap().is_some().then_some(()) })
        .await;
    eventually("all evaluated", || async { (processed(&rules).await >= 7).then_some(()) }).await;
    assert_eq!(rules.get_fact("seen:user.created:amy").await.unwrap(), None, "the updated trigger no longer matches");
    let stats = rules.stats().await.unwrap();
    assert_eq!((stats["rulesCount"].as_u64(), stats["eventsProcessed"].as_u64()), (Some(2), Some(7)));
    assert_eq!(rules.get_rules().await.unwrap().len(), 2);
    rules.unregister_rule("adult").await.unwrap();
    assert_eq!(rules.unregister_rule("adult").await.unwrap_err().code, "NOT_FOUND");
    assert_eq!(rules.get_rule("adult").await.unwrap(), None);
}

async fn procedures_run_atomically(b: Backend) {
    let f = fixture(b).await;
    let store = Store::new(f.client.clone());
    let rules = Rules::new(store.clone());
    let procs = Procedures::new(rules.clone());
    store.insert("orders", json!({"id": "o1", "total": 42, "status": "open"})).await.unwrap();
    let def = json!({"name": "checkout", "steps": [
        {"op": "get", "bucket": "orders", "key": "${params.orderId}", "as": "order"},
        {"op": "update", "bucket": "orders", "key": "${params.orderId}", "data": {"status": "closed"}},
        {"op": "insert", "bucket": "ledger", "data": {"order": "${params.orderId}", "amount": "${order.total}"}},
        {"op": "setFact", "key": "order:${params.orderId}:closed", "value": "${steps.0.total}"},
        {"op": "getFact", "key": "order:${params.orderId}:closed"},
        {"op": "emit", "topic": "order.closed", "data": {"orderId": "${params.orderId}"}}]});
    let stored = procs.register(&def).await.unwrap();
    assert_eq!(stored["version"], 1);
    assert_eq!(procs.register(&def).await.unwrap_err().code, "ALREADY_EXISTS");
    let out = procs.call("checkout", &json!({"orderId": "o1"})).await.unwrap();
    let r = out["results"].as_array().unwrap();
    assert_eq!(r.len(), 6);
    assert_eq!(
        (r[0]["total"].as_i64(), r[1]["status"].as_str(), r[2]["amount"].as_i64()),
        (Some(42), Some("closed"), Some(42))
    );
    assert_eq!((&r[4], r[5]["topic"].as_str()), (&json!(42), Some("order.closed")));
    assert_eq!(rules.get_fact("order:o1:closed").await.unwrap(), Some(json!(42)));
    assert_eq!(log(&f.client).await.iter().filter(|e| e["topic"] == "order.closed").count(), 1);

    // A failing step (update of a missing record) writes nothing, emits nothing.
    let err = procs.call("checkout", &json!({"orderId": "nope"})).await.unwrap_err();
    assert_eq!(err.code, "NOT_FOUND");
    assert!(err.message.contains("step 1 (update)"), "{}", err.message);
    assert_eq!(store.all("ledger").await.unwrap().len(), 1);
    assert_eq!(rules.get_fact("order:nope:closed").await.unwrap(), None);
    assert_eq!(log(&f.client).await.iter().filter(|e| e["topic"] == "order.closed").count(), 1);

    assert_eq!(procs.call("missing", &json!({})).await.unwrap_err().code, "NOT_FOUND");
    let up = procs.update("checkout", &json!({"steps": [{"op": "count", "bucket": "ledger"}]})).await.unwrap();
    assert_eq!(up["version"], 2);
    assert_eq!(procs.call("checkout", &Value::Null).await.unwrap(), json!({"results": [1]}));
    assert_eq!(procs.list().await.unwrap().len(), 1);
    assert_eq!(procs.get("checkout").await.unwrap().unwrap()["name"], "checkout");
    procs.unregister("checkout").await.unwrap();
    assert_eq!(procs.unregister("checkout").await.unwrap_err().code, "NOT_FOUND");
    assert_eq!(procs.get("checkout").await.unwrap(), None);
}

contract_tests!(events_facts_and_subscriptions, rules_fire_on_events_and_facts, procedures_run_atomically);

#[tokio::test]
async fn malformed_rules_and_procedures_say_why() {
    let f = fixture(Backend::Mem).await;
    let rules = Rules::new(Store::new(f.client.clone()));
    let procs = Procedures::new(rules.clone());
    let bad = json!({"id": "x", "when": {"topic": "a..b", "data": {"n": {"$bogus": 1}}},
                     "then": [{"type": "setFact", "key": "k"}, {"type": "shout"}], "colour": "red"});
    let v = rules.validate_rule(&bad);
    assert_eq!(v["valid"], false);
    let errors: Vec<&str> = v["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    for want in
        ["unknown field \"colour\"", "when.topic", "when.data", "then[0]: setFact needs", "then[1]: unknown action"]
    {
        assert!(errors.iter().any(|e| e.contains(want)), "{errors:?} lacks {want}");
    }
    let e = rules.register_rule(&bad).await.unwrap_err();
    assert_eq!((e.code, e.details.as_ref().unwrap().as_array().unwrap().len()), ("VALIDATION_ERROR", 5));
    assert_eq!(rules.get_rules().await.unwrap().len(), 0, "nothing stored");
    let good = json!({"id": "ok", "when": {"topic": "a"}, "then": {"type": "emit", "topic": "b"}});
    assert_eq!(rules.validate_rule(&good), json!({"valid": true, "errors": []}));
    rules.register_rule(&good).await.unwrap();
    assert_eq!(rules.register_rule(&good).await.unwrap_err().code, "ALREADY_EXISTS");
    let e = rules.update_rule("ok", &json!({"then": []})).await.unwrap_err();
    assert_eq!(e.code, "VALIDATION_ERROR");
    assert_eq!(rules.update_rule("ghost", &json!({})).await.unwrap_err().code, "NOT_FOUND");
    assert_eq!(rules.call(&json!({"type": "rules.nope"})).await.unwrap_err().code, "INVALID_ARGUMENT");
    assert_eq!(rules.call(&json!({"type": "rules.getFact"})).await.unwrap_err().code, "INVALID_ARGUMENT");

    let e = procs
        .register(&json!({"name": "p", "steps": [{"op": "explode"}, {"op": "get", "bucket": "b"},
            {"op": "setFact", "key": "${parms.x}", "value": 1}]}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "VALIDATION_ERROR");
    for want in ["steps[0]: unknown op", "steps[1]: op get on b needs a key", "steps[2]: ${parms.x} names nothing"] {
        assert!(e.message.contains(want), "{} lacks {want}", e.message);
    }
    assert_eq!(procs.register(&json!({"name": "p", "steps": []})).await.unwrap_err().code, "VALIDATION_ERROR");
    assert_eq!(procs.call("ghost", &json!({})).await.unwrap_err().code, "NOT_FOUND");
    assert_eq!(
        procs.request(&json!({"type": "procedures.call", "name": "ghost"})).await.unwrap_err().code,
        "NOT_FOUND"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_facts_and_progress_survive_a_restart_on_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let rule = json!({"id": "r", "when": {"topic": "t"}, "then": {"type": "setFact", "key": "f:${data.n}", "value": "${data.n}"}});
    {
        let client = Client::connect(&url, &Options::new()).await.unwrap();
        let rules = Rules::new(Store::new(client));
        let _ev = rules.start_evaluator();
        rules.register_rule(&rule).await.unwrap();
        rules.emit("t", json!({"n": 1}), None, None).await.unwrap();
        eventually("evaluated", || async { (processed(&rules).await == 1).then_some(()) }).await;
    }
    // Give the dropped evaluator's tasks a moment to release the directory.
    let client = eventually("reopen", || async { Client::connect(&url, &Options::new()).await.ok() }).await;
    let rules = Rules::new(Store::new(client));
    assert_eq!(rules.get_rule("r").await.unwrap().unwrap()["when"], rule["when"]);
    assert_eq!(rules.get_fact("f:1").await.unwrap(), Some(json!(1)));
    rules.emit("t", json!({"n": 2}), None, None).await.unwrap();
    let _ev = rules.start_evaluator();
    eventually("the new event evaluated", || async { (processed(&rules).await == 2).then_some(()) }).await;
    assert_eq!(rules.get_fact("f:2").await.unwrap(), Some(json!(2)));
    assert_eq!(rules.stats().await.unwrap()["rulesFired"], 2, "the first event was not evaluated again");
}

/// An evaluator process for the exactly-once test: runs only when the
/// parent test sets FM_RULES_CHILD_URL, prints "ready", evaluates until
/// killed (at most 60 s).
#[test]
fn evaluator_child() {
    let Ok(url) = std::env::var("FM_RULES_CHILD_URL") else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::connect(&url, &Options::new()).await.unwrap();
        let rules = Rules::new(Store::new(client));
        let _ev = rules.start_evaluator();
        println!("ready");
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

fn spawn_evaluator(url: &str) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "evaluator_child", "--nocapture", "--test-threads", "1"])
        .env("FM_RULES_CHILD_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("ready") => break,
            Some(Ok(_)) => {}
            _ => panic!("the evaluator child did not start"),
        }
        assert!(Instant::now() < deadline, "the evaluator child did not start in time");
    }
    std::thread::spawn(move || lines.for_each(drop));
    child
}

/// Two evaluator processes on one broker race over the same log; one is
/// killed with SIGKILL mid-stream; afterwards every event fired each
/// matching rule exactly once.
async fn exactly_once_with_two_evaluators_and_a_kill(urls: [String; 2], client: Client) {
    let rules = Rules::new(Store::new(client.clone()));
    rules
        .register_rule(&json!({"id": "tick", "when": {"topic": "tick"},
            "then": [{"type": "setFact", "key": "tick:${data.n}", "value": "${event.id}"},
                     {"type": "emit", "topic": "tock", "data": {"n": "${data.n}"}}]}))
        .await
        .unwrap();
    rules
        .register_rule(&json!({"id": "tock", "when": {"topic": "tock"},
            "then": {"type": "setFact", "key": "tock:${data.n}", "value": "${event.id}"}}))
        .await
        .unwrap();
    let mut a = spawn_evaluator(&urls[0]);
    let mut b = spawn_evaluator(&urls[1]);
    const N: u64 = 150;
    for n in 0..N {
        rules.emit("tick", json!({"n": n}), None, None).await.unwrap();
    }
    eventually("a third evaluated", || async { (processed(&rules).await >= N / 3).then_some(()) }).await;
    a.kill().unwrap(); // SIGKILL, mid-stream
    a.wait().unwrap();
    eventually("everything evaluated", || async { (processed(&rules).await >= 2 * N).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a double firing would show by now
    b.kill().unwrap();
    b.wait().unwrap();

    let stats = rules.stats().await.unwrap();
    assert_eq!((stats["eventsProcessed"].as_u64(), stats["rulesFired"].as_u64()), (Some(2 * N), Some(2 * N)));
    let events = log(&client).await;
    let mut tocks: BTreeMap<u64, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e["topic"] == "tock") {
        *tocks.entry(e["data"]["n"].as_u64().unwrap()).or_default() += 1;
    }
    assert_eq!(events.len() as u64, 2 * N, "each tick emitted exactly one tock");
    assert!(tocks.len() as u64 == N && tocks.values().all(|c| *c == 1), "{tocks:?}");
    assert_eq!(rules.query_facts("tick:*").await.unwrap().len() as u64, N);
    assert_eq!(rules.query_facts("tock:*").await.unwrap().len() as u64, N);
    for f in rules.query_facts("tock:*").await.unwrap() {
        let id = f["value"].as_str().unwrap();
        assert!(events.iter().any(|e| e["id"] == id && e["topic"] == "tock"), "tock fact {f} names a logged tock");
    }
    assert_eq!(rules.store().client().kv_keys("rules.outbox", "").await.unwrap().len(), 0, "the outbox drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_on_one_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&format!("file://{}", dir.path().display()));
    let client = Client::connect(&broker.url(), &Options::new()).await.unwrap();
    exactly_once_with_two_evaluators_and_a_kill([broker.url(), broker.url()], client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_with_two_brokers_in_front_of_one_nats_server() {
    let nats = common::shared_nats(1);
    let account = nats.account();
    let opts: Vec<String> = account.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut extra = Vec::new();
    for o in &opts {
        extra.extend(["--data-option", o.as_str()]);
    }
    let a = Broker::start_with(&nats.url, &common::free_addr(), &extra);
    let b = Broker::start_with(&nats.url, &common::free_addr(), &extra);
    let client = Client::connect(&a.url(), &Options::new()).await.unwrap();
    exactly_once_with_two_evaluators_and_a_kill([a.url(), b.url()], client).await;
}
