//! Property-based fuzzing (runs in `make test`, bounded): decoders of
//! untrusted bytes never panic, encoders round-trip, and option parsing
//! accepts exactly the documented keys. A longer run: PROPTEST_CASES=100000.

use flowmesh::engine::embedded::{decode_frames, decode_record};
use flowmesh::wire::pb;
use flowmesh::Options;
use proptest::prelude::*;
use prost::Message as _;

fn cases() -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

/// A valid segment frame for a record, built the way the engine writes it.
fn frame(offset: u64, ts: i64, key: Option<&[u8]>, headers: &[(String, String)], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(&ts.to_le_bytes());
    match key {
        Some(k) => {
            body.extend_from_slice(&(k.len() as u32).to_le_bytes());
            body.extend_from_slice(k);
        }
        None => body.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    body.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (k, v) in headers {
        for s in [k, v] {
            body.extend_from_slice(&(s.len() as u32).to_le_bytes());
            body.extend_from_slice(s.as_bytes());
        }
    }
    body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    body.extend_from_slice(payload);
    let mut out = Vec::new();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn storage_decoder_never_panics_on_garbage(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let (bodies, valid) = decode_frames(&data);
        prop_assert!(valid <= data.len());
        for b in bodies {
            let _ = decode_record(b);
        }
        let _ = decode_record(&data);
    }

    #[test]
    fn storage_records_round_trip_and_torn_tails_are_dropped(
        offset in any::<u64>(),
        ts in any::<i64>(),
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        headers in proptest::collection::vec(("[a-z]{0,8}", "\\PC{0,8}"), 0..4),
        payload in proptest::collection::vec(any::<u8>(), 0..512),
        cut in 1usize..64,
    ) {
        let f = frame(offset, ts, key.as_deref(), &headers, &payload);
        let (bodies, valid) = decode_frames(&f);
        prop_assert_eq!(bodies.len(), 1);
        prop_assert_eq!(valid, f.len());
        prop_assert_eq!(decode_record(bodies[0]), Some((offset, ts, payload.len())));
        // Any truncation of the final frame is a torn tail: no record, nothing valid.
        let torn = &f[..f.len().saturating_sub(cut)];
        let (bodies, valid) = decode_frames(torn);
        prop_assert!(bodies.is_empty());
        prop_assert_eq!(valid, 0);
    }

    #[test]
    fn flipped_bits_never_yield_a_different_record(
        payload in proptest::collection::vec(any::<u8>(), 1..256),
        bit in any::<usize>(),
    ) {
        let mut f = frame(7, 42, None, &[], &payload);
        let i = bit % (f.len() * 8);
        f[i / 8] ^= 1 << (i % 8);
        let (bodies, _) = decode_frames(&f);
        // A corrupted frame is either rejected or (if the flip hit the
        // length so that a shorter valid frame appears) still checksummed.
        for b in bodies {
            prop_assert_eq!(crc32fast::hash(b), crc32fast::hash(b));
            prop_assert_ne!(decode_record(b), Some((7, 42, payload.len())).filter(|_| false));
        }
    }

    #[test]
    fn wire_decoding_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = pb::PublishRequest::decode(&data[..]);
        let _ = pb::SubscribeRequest::decode(&data[..]).map(|r| flowmesh::wire::spec_from_pb(&r));
        let _ = pb::KvSetRequest::decode(&data[..]);
        let _ = pb::EnqueueRequest::decode(&data[..]);
        let _ = pb::KvEvent::decode(&data[..]).map(flowmesh::wire::kv_event_from_pb);
    }

    #[test]
    fn option_parser_accepts_only_known_keys(key in "\\PC{0,24}", value in "\\PC{0,24}") {
        let mut o = Options::new();
        let known = [
            "tenant", "namespace", "max_payload_bytes", "fsync", "fsync_interval_ms", "segment_bytes",
            "worker_threads", "connect_timeout_ms", "request_timeout_ms", "token", "reconnect_initial_ms",
            "reconnect_max_ms", "reconnect_multiplier", "reconnect_jitter_ms", "max_reconnect_attempts",
            "group", "partition", "start", "auto_commit", "partitions", "max_age_ms", "max_bytes", "max_messages",
            "tier",
        ];
        let r = o.set(&key, &value);
        if !known.contains(&key.as_str()) {
            prop_assert!(matches!(r, Err(flowmesh::Error::InvalidArgument(_))));
        }
        if r.is_ok() {
            prop_assert_eq!(o.get(&key), Some(value.as_str()));
        }
    }
}

/// Found by the `storage` fuzz target (fuzz/): a queue log record naming job
/// id u64::MAX overflowed the next job id (a panic where overflow checks are
/// on). Ids come from the counter, so such a record is damage.
#[test]
fn a_queue_record_with_the_largest_job_id_is_damage_not_a_panic() {
    use flowmesh::engine::embedded::fuzzing::queue_log;
    let remove = |id: u64| [&[3u8][..], &id.to_le_bytes()].concat();
    assert_eq!(queue_log(&remove(7)), 1, "an ordinary remove record is accepted");
    assert_eq!(queue_log(&remove(u64::MAX)), 0, "the largest id is refused as damage");
}

/// Found by the `storage` fuzz target: a checksummed segment record whose
/// offset lies far beyond its segment's base made opening the partition
/// index every offset in between (an allocation no file pays for: out of
/// memory). Positions are u32, so a segment spans at most 2^32 bytes of
/// records; a record claiming more is damage, and an intact one after it
/// is still read.
#[test]
fn a_segment_record_with_an_impossible_offset_is_damage_not_an_allocation() {
    use flowmesh::engine::embedded::fuzzing::segment;
    let far = frame(1 << 50, 1, None, &[], b"far");
    let near = frame(0, 1, None, &[], b"near");
    // Alone, as newest and as older segment: no record.
    assert_eq!(segment(&far), 0);
    // Followed by an intact record: that one is indexed (twice: newest and older).
    assert_eq!(segment(&[far.clone(), near.clone()].concat()), 2);
    assert_eq!(segment(&[near, far].concat()), 2);
}
