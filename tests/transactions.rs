//! KV transactions on every engine: atomic, isolated, all or nothing, and
//! all or nothing again after `kill -9` of an embedded writer or the broker.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{fixture, Backend, Broker};
use flowmesh::{Client, Error, KvEntry, KvOp, Options, TxnOp, TxnResult};
use futures::StreamExt;

const PATIENCE: Duration = Duration::from_secs(30);

fn get(bucket: &str, key: &str) -> TxnOp {
    TxnOp::Get { bucket: bucket.into(), key: key.into() }
}

fn put(bucket: &str, key: &str, value: impl Into<Bytes>) -> TxnOp {
    TxnOp::Put { bucket: bucket.into(), key: key.into(), value: value.into(), ttl_ms: 0 }
}

fn check(bucket: &str, key: &str, revision: u64) -> TxnOp {
    TxnOp::Check { bucket: bucket.into(), key: key.into(), revision }
}

fn list(bucket: &str, prefix: &str) -> TxnOp {
    TxnOp::List { bucket: bucket.into(), prefix: prefix.into() }
}

fn entry(r: &TxnResult) -> Option<KvEntry> {
    match r {
        TxnResult::Get(e) => e.clone(),
        other => panic!("expected a get result, got {other:?}"),
    }
}

fn num(e: &KvEntry) -> i64 {
    std::str::from_utf8(&e.value).unwrap().parse().unwrap()
}

async fn reads_writes_and_checks_in_one_call(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let r0 = c.kv_set("users", "u1", Bytes::from("alice"), 0).await.unwrap();
    let results = c
        .kv_txn(vec![
            check("users", "u1", r0),
            get("users", "u1"),
            put("users", "u2", "bob"),
            get("users", "u2"), // sees the write before it
            put("logs", "l1", "created u2"),
            check("logs", "l2", 0),
            TxnOp::Delete { bucket: "users".into(), key: "u1".into() },
            TxnOp::Delete { bucket: "users".into(), key: "nobody".into() },
            list("users", "u"),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 9);
    assert_eq!(results[0], TxnResult::Check);
    assert_eq!(entry(&results[1]).unwrap().value, "alice");
    let TxnResult::Put(r2) = results[2] else { panic!("{:?}", results[2]) };
    assert_eq!(r2, r0 + 1, "revisions follow the bucket's");
    assert_eq!(entry(&results[3]).unwrap().revision, r2);
    assert!(matches!(results[4], TxnResult::Put(_)));
    assert_eq!(results[6], TxnResult::Delete(true));
    assert_eq!(results[7], TxnResult::Delete(false));
    let TxnResult::List(listed) = &results[8] else { panic!("{:?}", results[8]) };
    assert_eq!(listed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), vec!["u2"]);
    assert!(matches!(c.kv_get("users", "u1").await, Err(Error::NotFound(_))));
    assert_eq!(c.kv_get("users", "u2").await.unwrap().revision, r2);
    assert_eq!(c.kv_get("logs", "l1").await.unwrap().value, "created u2");
    // Reads only: nothing changes, still answered.
    let r = c.kv_txn(vec![get("users", "u2"), get("users", "u1")]).await.unwrap();
    assert_eq!(entry(&r[1]), None);
    assert!(c.kv_txn(Vec::new()).await.unwrap().is_empty());
}

async fn a_failed_check_writes_nothing(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let rev = c.kv_set("acct", "a", Bytes::from("10"), 0).await.unwrap();
    let mut watch = c.kv_watch("acct", "").await.unwrap();
    let err = c
        .kv_txn(vec![put("acct", "a", "0"), put("other", "x", "1"), check("acct", "b", 0), check("acct", "a", rev)])
        .await
        .unwrap_err();
    // The check on `a` sees the transaction's own write, so check 3 fails.
    let Error::Conflict(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains("check 3") && msg.contains("key a"), "{msg}");
    assert_eq!(c.kv_get("acct", "a").await.unwrap().value, "10");
    assert!(matches!(c.kv_get("other", "x").await, Err(Error::NotFound(_))));
    // The watch saw nothing of it: the next event is this later write.
    c.kv_set("acct", "later", Bytes::from("1"), 0).await.unwrap();
    let ev = tokio::time::timeout(PATIENCE, watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((ev.op, ev.key.as_str()), (KvOp::Put, "later"));
    assert_eq!(ev.revision, rev + 1, "the failed transaction took no revision");
}

async fn bad_transactions_are_refused_whole(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let across = vec![put("t1/n/b", "k", "v"), put("t2/n/b", "k", "v")];
    assert!(matches!(c.kv_txn(across).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(c.kv_txn(vec![put("b", "", "v")]).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(c.kv_txn(vec![put("bad name", "k", "v")]).await, Err(Error::InvalidArgument(_))));
    let big = vec![put("b", "ok", "v"), put("b", "k", vec![0u8; 8 * 1024 * 1024 + 1])];
    assert!(matches!(c.kv_txn(big).await, Err(Error::TooLarge(_))));
    assert!(matches!(c.kv_get("b", "ok").await, Err(Error::NotFound(_))));
}

const ACCOUNTS: usize = 6;
const START: i64 = 100;

/// 8 writers move money between accounts in two buckets with
/// read-check-write transactions while a reader sums every account in one
/// transaction: the sum never changes, so no one sees half a transfer.
async fn concurrent_transfers_never_interleave(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let bucket = |i: usize| if i.is_multiple_of(2) { "even" } else { "odd" };
    for i in 0..ACCOUNTS {
        c.kv_set(bucket(i), &format!("acct-{i}"), Bytes::from(START.to_string()), 0).await.unwrap();
    }
    let total = START * ACCOUNTS as i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut writers = Vec::new();
    for w in 0..8usize {
        let c = c.clone();
        writers.push(tokio::spawn(async move {
            let (mut done, mut conflicts) = (0, 0);
            let mut n = 0usize;
            while done < 15 {
                assert!(Instant::now() < deadline, "writer {w} made no progress");
                n += 1;
                let (from, to) = ((w + n) % ACCOUNTS, (w + 2 * n + 1) % ACCOUNTS);
                if from == to {
                    continue;
                }
                let (kf, kt) = (format!("acct-{from}"), format!("acct-{to}"));
                let read = c.kv_txn(vec![get(bucket(from), &kf), get(bucket(to), &kt)]).await.unwrap();
                let (ef, et) = (entry(&read[0]).unwrap(), entry(&read[1]).unwrap());
                let moved = (n % 7 + 1) as i64;
                let ops = vec![
                    check(bucket(from), &kf, ef.revision),
                    check(bucket(to), &kt, et.revision),
                    put(bucket(from), &kf, (num(&ef) - moved).to_string()),
                    put(bucket(to), &kt, (num(&et) + moved).to_string()),
                ];
                match c.kv_txn(ops).await {
                    Ok(_) => done += 1,
                    Err(Error::Conflict(_)) => conflicts += 1,
                    Err(e) => panic!("transfer failed: {e}"),
                }
            }
            conflicts
        }));
    }
    let reader = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut sums = 0;
            loop {
                let r = c.kv_txn(vec![list("even", "acct-"), list("odd", "acct-")]).await.unwrap();
                let mut sum = 0;
                for res in &r {
                    let TxnResult::List(entries) = res else { panic!("{res:?}") };
                    sum += entries.iter().map(num).sum::<i64>();
                }
                assert_eq!(sum, total, "a reader saw half of a transfer");
                sums += 1;
                if sums >= 20 {
                    return sums;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    assert!(reader.await.unwrap() >= 20);
    let mut sum = 0;
    for i in 0..ACCOUNTS {
        sum += num(&c.kv_get(bucket(i), &format!("acct-{i}")).await.unwrap());
    }
    assert_eq!(sum, total);
}

async fn committed_transactions_survive_a_restart(b: Backend) {
    let f = fixture(b).await;
    let results = f.client.kv_txn(vec![put("cfg", "a", "1"), put("cfg2", "b", "2")]).await.unwrap();
    let Some(dir) = f.dir.as_ref() else { return };
    let data = format!("file://{}", dir.path().display());
    let (client, _broker) = if let Some(mut broker) = f.broker {
        broker.kill();
        let restarted = Broker::start_on(&data, &broker.addr);
        (Client::connect(&restarted.url(), &Options::new()).await.unwrap(), Some(restarted))
    } else {
        drop(f.client);
        (Client::connect(&data, &Options::new()).await.unwrap(), None)
    };
    let TxnResult::Put(rev) = results[0] else { panic!() };
    assert_eq!(client.kv_get("cfg", "a").await.unwrap().revision, rev);
    assert_eq!(client.kv_get("cfg2", "b").await.unwrap().value, "2");
    // Revisions go on from where they were.
    let again = client.kv_txn(vec![put("cfg", "a", "3")]).await.unwrap();
    assert_eq!(again[0], TxnResult::Put(rev + 1));
}

contract_tests!(
    reads_writes_and_checks_in_one_call,
    a_failed_check_writes_nothing,
    bad_transactions_are_refused_whole,
    concurrent_transfers_never_interleave,
    committed_transactions_survive_a_restart,
);

// ---- crash tests ----

/// Transfer `i` moves one unit from account i % 4 to (i + 1) % 4 (bucket
/// `acct`) and records `tx-i` (bucket `ledger`), in one transaction.
fn transfer_ops(i: u64, balances: &mut [i64; 4]) -> Vec<TxnOp> {
    let (from, to) = ((i % 4) as usize, ((i + 1) % 4) as usize);
    balances[from] -= 1;
    balances[to] += 1;
    vec![
        put("acct", &format!("a{from}"), balances[from].to_string()),
        put("acct", &format!("a{to}"), balances[to].to_string()),
        put("ledger", &format!("tx-{i:08}"), i.to_string()),
    ]
}

/// The balances after the first `m` transfers.
fn balances_after(m: u64) -> [i64; 4] {
    let mut b = [START; 4];
    for i in 0..m {
        transfer_ops(i, &mut b);
    }
    b
}

/// Checks that exactly a prefix of the transfers is stored, each whole,
/// and that it holds every acknowledged one.
async fn assert_whole_prefix(c: &Client, acked: u64) {
    let ledger = c.kv_keys("ledger", "tx-").await.unwrap();
    let m = ledger.len() as u64;
    assert!(m >= acked, "{acked} acknowledged transactions, {m} stored");
    for (i, k) in ledger.iter().enumerate() {
        assert_eq!(k, &format!("tx-{i:08}"), "the stored transactions are not a prefix");
    }
    let expect = balances_after(m);
    let mut got = BTreeMap::new();
    for a in 0..4 {
        got.insert(a, num(&c.kv_get("acct", &format!("a{a}")).await.unwrap()));
    }
    for (a, want) in expect.iter().enumerate() {
        assert_eq!(got[&a], *want, "account a{a} after {m} transfers: half a transaction survived");
    }
}

async fn write_transfers(c: &Client, until: Option<u64>) -> u64 {
    let mut balances = [START; 4];
    c.kv_txn((0..4).map(|a| put("acct", &format!("a{a}"), START.to_string())).collect()).await.unwrap();
    let mut i = 0;
    loop {
        if until == Some(i) {
            return i;
        }
        if c.kv_txn(transfer_ops(i, &mut balances)).await.is_err() {
            return i;
        }
        println!("ack {i}");
        i += 1;
    }
}

/// Run by the parent test as a child process (see below); does nothing
/// when run directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started as a child process by transactions_survive_kill_9_of_an_embedded_writer"]
async fn crash_child_writer() {
    let Ok(url) = std::env::var("FLOWMESH_TXN_CHILD_URL") else { return };
    let fsync = std::env::var("FLOWMESH_TXN_CHILD_FSYNC").unwrap_or_else(|_| "batch".into());
    let c = Client::connect(&url, &Options::new().with("fsync", &fsync).unwrap()).await.unwrap();
    write_transfers(&c, Some(1_000_000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_survive_kill_9_of_an_embedded_writer() {
    for (round, fsync) in ["batch", "none"].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "crash_child_writer", "--ignored", "--nocapture", "--test-threads=1"])
            .env("FLOWMESH_TXN_CHILD_URL", &url)
            .env("FLOWMESH_TXN_CHILD_FSYNC", fsync);
        let want = 150 + 100 * round;
        // SIGKILL, mid-transaction more often than not.
        let acked = common::crash::acks_then_kill(&mut cmd, want, Duration::from_secs(90), |l| l.starts_with("ack "))
            .len() as u64;
        let c = Client::connect(&url, &Options::new()).await.expect("reopen after kill -9");
        assert_whole_prefix(&c, acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_survive_kill_9_of_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("file://{}", dir.path().display());
    let addr = common::free_addr();
    let mut broker = Broker::start_on(&data, &addr);
    let opts = Options::new().with("request_timeout_ms", "3000").unwrap();
    let client = Client::connect(&broker.url(), &opts).await.unwrap();
    let writer = {
        let client = client.clone();
        tokio::spawn(async move { write_transfers(&client, None).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    broker.kill();
    let acked = tokio::time::timeout(PATIENCE, writer).await.expect("writer hung").unwrap();
    assert!(acked > 0);
    let broker = Broker::start_on(&data, &addr);
    let again = Client::connect(&broker.url(), &Options::new()).await.unwrap();
    assert_whole_prefix(&again, acked).await;
}
