//! Events to named recipients, on every engine: fan-out, ack,
//! redelivery after ack_wait, defer, discard, replay, pause/resume, and
//! end-to-end encryption with tamper detection.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{fixture, Backend, Fixture};
use flowmesh::events::{generate_key, inbox_queue, EventSubscription, Events, SubscribeOptions, EVENT_LOG};
use flowmesh::{Client, Error, Record};

const PATIENCE: Duration = Duration::from_secs(20);

async fn app(f: &Fixture, id: &str, secret: Option<&str>) -> Events {
    let mut o = f.options.clone();
    o.set("app_id", id).unwrap();
    if let Some(s) = secret {
        o.set("app_secret_key", s).unwrap();
    }
    Events::new(Client::connect(&f.url, &o).await.expect("connect")).expect("events")
}

fn manual(ack_wait_ms: u64) -> SubscribeOptions {
    SubscribeOptions { auto_ack: false, ack_wait_ms, ..SubscribeOptions::default() }
}

async fn next(sub: &EventSubscription) -> flowmesh::events::Event {
    sub.next(PATIENCE).await.expect("next").expect("an event within the patience")
}

async fn nothing_within(sub: &EventSubscription, ms: u64) {
    let got = sub.next(Duration::from_millis(ms)).await.expect("next");
    assert!(got.is_none(), "unexpected delivery: {got:?}");
}

async fn fan_out_each_recipient_acks_independently(b: Backend) {
    let f = fixture(b).await;
    let alice = app(&f, "alice", None).await;
    let names = ["bob", "carol", "dave"];
    let mut subs = Vec::new();
    for n in names {
        subs.push(app(&f, n, None).await.subscribe("orders/status/updated", manual(60_000)).await.unwrap());
    }
    let meta = r#"{"source":"test","priority":"high"}"#;
    let id = alice.publish("orders/status/updated", &names, Bytes::from("order-123"), Some(meta)).await.unwrap();
    let other = alice.publish("orders/other", &names, Bytes::from("elsewhere"), None).await.unwrap();
    assert_ne!(id, other, "event ids are unique");
    for sub in &subs {
        let ev = next(sub).await;
        assert_eq!((ev.id, ev.name.as_str(), ev.sender.as_str()), (id, "orders/status/updated", "alice"));
        assert_eq!(&ev.payload[..], b"order-123");
        assert_eq!(ev.metadata.as_deref(), Some(meta));
        assert_eq!(ev.delivery_count, 1);
        assert!(!ev.encrypted);
        assert!(ev.timestamp_ms > 1_600_000_000_000);
    }
    // bob and dave ack; carol does not: her delivery stays in flight only for her.
    subs[0].ack(id).await.unwrap();
    subs[2].ack(id).await.unwrap();
    let c = alice.client();
    for (n, in_flight) in [("bob", 0), ("carol", 1), ("dave", 0)] {
        let st = c.queue_stats(&inbox_queue(n, "orders/status/updated").unwrap()).await.unwrap();
        assert_eq!((st.pending, st.in_flight), (0, in_flight), "{n}");
    }
    assert!(matches!(subs[0].ack(id).await, Err(Error::NotFound(_))), "double ack");
    // Bad input is a clear error.
    assert!(matches!(alice.publish("e", &[], Bytes::new(), None).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(alice.publish("e", &["a/b"], Bytes::new(), None).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(alice.publish("", &["bob"], Bytes::new(), None).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(alice.publish("e", &["bob"], Bytes::new(), Some("[1]")).await, Err(Error::InvalidArgument(_))));
    assert!(Events::new(f.client.clone()).is_err(), "events need app_id");
}

async fn unacked_events_are_redelivered_after_ack_wait(b: Backend) {
    let f = fixture(b).await;
    let alice = app(&f, "alice", None).await;
    let sub = app(&f, "bob", None).await.subscribe("jobs", manual(300)).await.unwrap();
    let id = alice.publish("jobs", &["bob"], Bytes::from("p"), None).await.unwrap();
    let first = next(&sub).await;
    assert_eq!((first.id, first.delivery_count), (id, 1));
    let t0 = Instant::now();
    let again = next(&sub).await;
    assert!(t0.elapsed() >= Duration::from_millis(250), "redelivered after {:?}", t0.elapsed());
    assert_eq!((again.id, again.delivery_count, &again.payload[..]), (id, 2, &b"p"[..]));
    sub.ack(id).await.unwrap();
    nothing_within(&sub, 800).await;
}

async fn defer_redelivers_after_the_delay_not_before(b: Backend) {
    let f = fixture(b).await;
    let alice = app(&f, "alice", None).await;
    let sub = app(&f, "bob", None).await.subscribe("jobs", manual(60_000)).await.unwrap();
    let id = alice.publish("jobs", &["bob"], Bytes::from("later"), None).await.unwrap();
    let ev = next(&sub).await;
    let t0 = Instant::now();
    sub.defer(ev.id, 800, "temporary unavailability").await.unwrap();
    let again = next(&sub).await;
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(780), "deferred event came back after {waited:?}");
    assert_eq!((again.id, again.delivery_count), (id, 2));
    sub.ack(id).await.unwrap();
    assert!(matches!(sub.defer(id, 10, "x").await, Err(Error::NotFound(_))));
    assert!(matches!(sub.defer(12345, 10, "x").await, Err(Error::NotFound(_))));
}

async fn discarded_events_are_never_redelivered(b: Backend) {
    let f = fixture(b).await;
    let alice = app(&f, "alice", None).await;
    let bob = app(&f, "bob", None).await;
    let sub = bob.subscribe("jobs", manual(300)).await.unwrap();
    let id = alice.publish("jobs", &["bob"], Bytes::from("bad"), None).await.unwrap();
    let keep = alice.publish("jobs", &["bob"], Bytes::from("good"), None).await.unwrap();
    let ev = next(&sub).await;
    assert_eq!(ev.id, id);
    sub.discard(id, "Invalid data").await.unwrap();
    let ev = next(&sub).await;
    assert_eq!(ev.id, keep);
    sub.ack(keep).await.unwrap();
    nothing_within(&sub, 1200).await; // four times ack_wait
    let log = bob.discarded(100).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].event_id, log[0].app_id.as_str()), (id, "bob"));
    assert_eq!((log[0].event.as_str(), log[0].reason.as_str()), ("jobs", "Invalid data"));
    assert!(matches!(sub.ack(id).await, Err(Error::NotFound(_))));
}

async fn replay_redelivers_exactly_once(b: Backend) {
    let f = fixture(b).await;
    let alice = app(&f, "alice", None).await;
    let sub = app(&f, "bob", None).await.subscribe("jobs", manual(300)).await.unwrap();
    let id = alice.publish("jobs", &["bob"], Bytes::from("again"), Some(r#"{"n":1}"#)).await.unwrap();
    let for_carol = alice.publish("jobs", &["carol"], Bytes::from("not yours"), None).await.unwrap();
    let other_name = alice.publish("other", &["bob"], Bytes::from("x"), None).await.unwrap();
    let ev = next(&sub).await;
    sub.ack(ev.id).await.unwrap();
    let replayed = sub.replay(id).await.unwrap();
    assert_eq!(
        (replayed.id, &replayed.payload[..], replayed.metadata.as_deref()),
        (id, &b"again"[..], Some(r#"{"n":1}"#))
    );
    let ev = next(&sub).await;
    assert_eq!((ev.id, &ev.payload[..], ev.sender.as_str()), (id, &b"again"[..], "alice"));
    sub.ack(id).await.unwrap();
    nothing_within(&sub, 1200).await;
    assert!(matches!(sub.replay(for_carol).await, Err(Error::NotFound(_))));
    assert!(matches!(sub.replay(other_name).await, Err(Error::NotFound(_))));
    assert!(matches!(sub.replay(999_999).await, Err(Error::NotFound(_))));
}

async fn pause_holds_delivery_and_resume_releases_everything(b: Backend) {
    let f = fixture(b).await;
    let alice = app(&f, "alice", None).await;
    let sub = app(&f, "bob", None).await.subscribe("jobs", manual(60_000)).await.unwrap();
    sub.pause("Maintenance in progress");
    assert_eq!(sub.paused().as_deref(), Some("Maintenance in progress"));
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(alice.publish("jobs", &["bob"], Bytes::from(format!("e{i}")), None).await.unwrap());
    }
    nothing_within(&sub, 800).await;
    let st = alice.client().queue_stats(&inbox_queue("bob", "jobs").unwrap()).await.unwrap();
    assert_eq!((st.pending, st.in_flight), (5, 0), "held in the queue while paused");
    sub.resume();
    let mut got = Vec::new();
    for _ in 0..5 {
        let ev = next(&sub).await;
        assert_eq!(ev.delivery_count, 1);
        got.push(ev.id);
        sub.ack(ev.id).await.unwrap();
    }
    assert_eq!(got, ids, "everything held is delivered, in order");
    nothing_within(&sub, 300).await;
}

async fn a_pause_that_begins_during_a_wait_keeps_order_and_attempts(b: Backend) {
    let f = fixture(b).await;
    let alice = app(&f, "alice", None).await;
    let sub = app(&f, "bob", None).await.subscribe("jobs", manual(60_000)).await.unwrap();
    let mut ids = Vec::new();
    // The first wait is already polling the inbox when the pause begins, so
    // it can reserve e0 after the pause: e0 must still come first, once.
    let (first, ()) = tokio::join!(next(&sub), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sub.pause("deploy");
        for i in 0..3 {
            ids.push(alice.publish("jobs", &["bob"], Bytes::from(format!("e{i}")), None).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        sub.resume();
    });
    let mut got = vec![(first.id, first.delivery_count)];
    for _ in 0..2 {
        let ev = next(&sub).await;
        got.push((ev.id, ev.delivery_count));
    }
    let want: Vec<(u64, u32)> = ids.iter().map(|id| (*id, 1)).collect();
    assert_eq!(got, want, "held events come in order, on their first attempt");
    for (id, _) in got {
        sub.ack(id).await.unwrap();
    }
    nothing_within(&sub, 300).await;
}

fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).unwrap_or_default().windows(needle.len()).any(|w| w == needle) {
                return true;
            }
        }
    }
    false
}

async fn encrypted_payloads_are_unreadable_in_storage_and_intact_for_the_recipient(b: Backend) {
    let f = fixture(b).await;
    let (alice_key, _) = generate_key();
    let (bob_key, bob_public) = generate_key();
    let alice = app(&f, "alice", Some(&alice_key)).await;
    let bob = app(&f, "bob", Some(&bob_key)).await;
    let sub = bob.subscribe("secrets", manual(60_000)).await.unwrap(); // registers bob's key
    assert_eq!(alice.public_key_of("bob").await.unwrap().as_deref(), Some(bob_public.as_str()));
    let secret = b"TOP-SECRET-PAYLOAD-4242";
    let id = alice.publish("secrets", &["bob"], Bytes::from_static(secret), Some(r#"{"routing":"x"}"#)).await.unwrap();
    let c = &f.client;
    let found = |hay: &[u8]| hay.windows(secret.len()).any(|w| w == secret);
    for m in c.read(EVENT_LOG, 0, 0, 100).await.unwrap() {
        assert!(!found(&m.payload), "event log holds the payload in clear");
        assert!(m.headers.iter().all(|(k, v)| !found(k.as_bytes()) && !found(v.as_bytes())));
    }
    let queue = inbox_queue("bob", "secrets").unwrap();
    let raw = c.reserve(&queue, 60_000, 5_000).await.unwrap().expect("the delivery is queued");
    assert!(!found(&raw.payload), "inbox holds the payload in clear");
    c.nack(&queue, raw.id, 0).await.unwrap();
    if let Some(dir) = &f.dir {
        assert!(!files_contain(dir.path(), secret), "the payload is on disk in clear");
        // The scan does see stored data: the (unencrypted) metadata is there.
        assert!(files_contain(dir.path(), br#"{"routing":"x"}"#), "scan found no stored data");
    }
    let ev = next(&sub).await;
    assert_eq!((ev.id, &ev.payload[..], ev.encrypted), (id, &secret[..], true));
    assert_eq!(ev.metadata.as_deref(), Some(r#"{"routing":"x"}"#), "metadata is not encrypted");
    sub.ack(id).await.unwrap();

    // Replies are sealed for the original sender (alice registered her key).
    let alice_sub = alice.subscribe("secrets", manual(60_000)).await.unwrap();
    let reply_id = bob.reply(&ev, Bytes::from("got it"), None).await.unwrap();
    let reply = next(&alice_sub).await;
    assert_eq!((reply.id, &reply.payload[..], reply.encrypted), (reply_id, &b"got it"[..], true));
    assert_eq!((reply.sender.as_str(), reply.reply_to), ("bob", Some(id)));
    alice_sub.ack(reply_id).await.unwrap();

    // A recipient without a key among keyed ones: refused, not stored in clear.
    let carol = app(&f, "carol", None).await;
    let mixed = alice.publish("secrets", &["bob", "carol"], Bytes::from_static(secret), None).await;
    assert!(matches!(mixed, Err(Error::InvalidArgument(_))), "{mixed:?}");
    // A bob client without the secret key reports it and leaves the event queued.
    let id2 = alice.publish("secrets", &["bob"], Bytes::from("second"), None).await.unwrap();
    drop(carol);
    let keyless = app(&f, "bob", None).await.subscribe("secrets", manual(60_000)).await.unwrap();
    assert!(matches!(keyless.next(PATIENCE).await, Err(Error::Unauthorized(_))));
    let ev = next(&sub).await;
    assert_eq!((ev.id, &ev.payload[..]), (id2, &b"second"[..]));
    sub.ack(id2).await.unwrap();
}

async fn tampered_ciphertext_is_rejected_and_reported(b: Backend) {
    let f = fixture(b).await;
    let (alice_key, _) = generate_key();
    let (bob_key, _) = generate_key();
    let alice = app(&f, "alice", Some(&alice_key)).await;
    let bob = app(&f, "bob", Some(&bob_key)).await;
    let sub = bob.subscribe("secrets", manual(60_000)).await.unwrap();
    let id = alice.publish("secrets", &["bob"], Bytes::from("pay 10 EUR"), None).await.unwrap();
    // Someone with access to the storage flips one ciphertext bit.
    let c = &f.client;
    let queue = inbox_queue("bob", "secrets").unwrap();
    let job = c.reserve(&queue, 60_000, 5_000).await.unwrap().expect("queued");
    let mut bytes = job.payload.to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    c.enqueue(
        &queue,
        Record { key: None, payload: Bytes::from(bytes), headers: job.headers.clone(), msg_id: None },
        0,
        0,
    )
    .await
    .unwrap();
    c.ack(&queue, job.id).await.unwrap();

    nothing_within(&sub, 1000).await;
    let (count, last) = sub.rejected();
    assert_eq!(count, 1);
    assert!(matches!(last, Some(Error::Unauthorized(_))), "{last:?}");
    let log = bob.discarded(10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].event_id, id);
    assert!(log[0].reason.starts_with("rejected:"), "{}", log[0].reason);
    // Later events still flow.
    let id2 = alice.publish("secrets", &["bob"], Bytes::from("pay 20 EUR"), None).await.unwrap();
    let ev = next(&sub).await;
    assert_eq!((ev.id, &ev.payload[..]), (id2, &b"pay 20 EUR"[..]));
}

contract_tests!(
    fan_out_each_recipient_acks_independently,
    unacked_events_are_redelivered_after_ack_wait,
    defer_redelivers_after_the_delay_not_before,
    discarded_events_are_never_redelivered,
    replay_redelivers_exactly_once,
    pause_holds_delivery_and_resume_releases_everything,
    a_pause_that_begins_during_a_wait_keeps_order_and_attempts,
    encrypted_payloads_are_unreadable_in_storage_and_intact_for_the_recipient,
    tampered_ciphertext_is_rejected_and_reported,
);
