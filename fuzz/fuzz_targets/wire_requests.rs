//! The broker's request decoding: bytes as each request message of proto/
//! (the first byte picks which), decoded as tonic hands them to the server,
//! converted to the data model where the server does, and re-encoded: a
//! decoded message must survive an encode/decode round trip unchanged.
#![no_main]

use flowmesh::wire::{self, pb};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Decodes `data` as `M`; if it decodes, checks the round trip and returns it.
fn decode<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<M> {
    let m = M::decode(data).ok()?;
    let again = M::decode(m.encode_to_vec().as_slice()).expect("a re-encoded message decodes");
    assert_eq!(m, again, "encode/decode round trip changed the message");
    Some(m)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else { return };
    match which % 33 {
        0 => drop(decode::<pb::CheckRequest>(data)),
        1 => drop(decode::<pb::ReadyRequest>(data)),
        2 => {
            if let Some(r) = decode::<pb::CreateStreamRequest>(data) {
                let _ = r.config.map(flowmesh::StreamConfig::from);
            }
        }
        3 => {
            if let Some(r) = decode::<pb::PublishRequest>(data) {
                let _: Vec<flowmesh::engine::Record> = r.records.into_iter().map(Into::into).collect();
            }
        }
        4 => drop(decode::<pb::ReadRequest>(data)),
        5 => drop(decode::<pb::StreamInfoRequest>(data)),
        6 => {
            if let Some(r) = decode::<pb::SubscribeRequest>(data) {
                let _ = wire::spec_from_pb(&r);
            }
        }
        7 => drop(decode::<pb::CommitOffsetRequest>(data)),
        8 => drop(decode::<pb::GetOffsetRequest>(data)),
        9 => drop(decode::<pb::GroupStateRequest>(data)),
        10 => {
            if let Some(r) = decode::<pb::EnqueueRequest>(data) {
                let _ = r.record.map(flowmesh::engine::Record::from);
            }
        }
        11 => drop(decode::<pb::ReserveRequest>(data)),
        12 => drop(decode::<pb::AckRequest>(data)),
        13 => drop(decode::<pb::NackRequest>(data)),
        14 => drop(decode::<pb::StatsRequest>(data)),
        15 => {
            if let Some(r) = decode::<pb::SetRetryPolicyRequest>(data) {
                let _ = r.policy.map(flowmesh::RetryPolicy::from);
            }
        }
        16 => drop(decode::<pb::GetRetryPolicyRequest>(data)),
        17 => drop(decode::<pb::DlqListRequest>(data)),
        18 => drop(decode::<pb::DlqReplayRequest>(data)),
        19 => drop(decode::<pb::DlqReplayAllRequest>(data)),
        20 => drop(decode::<pb::ExtendRequest>(data)),
        21 => drop(decode::<pb::KvSetRequest>(data)),
        22 => drop(decode::<pb::KvGetRequest>(data)),
        23 => drop(decode::<pb::KvDeleteRequest>(data)),
        24 => drop(decode::<pb::KvExistsRequest>(data)),
        25 => drop(decode::<pb::KvKeysRequest>(data)),
        26 => drop(decode::<pb::KvWatchRequest>(data)),
        27 => {
            if let Some(r) = decode::<pb::KvTxnRequest>(data) {
                if let Ok(ops) = wire::txn_ops_from_pb(r.ops) {
                    // What the server checks before it runs a transaction.
                    let _ = flowmesh::txn::validate(&ops, 1 << 20);
                }
            }
        }
        28 => drop(decode::<pb::ListResourcesRequest>(data)),
        29 => drop(decode::<pb::DeleteResourceRequest>(data)),
        30 => drop(decode::<pb::PurgeResourceRequest>(data)),
        31 => drop(decode::<pb::UpdateStreamRequest>(data)),
        _ => {
            if let Some(e) = decode::<pb::KvEvent>(data) {
                let _ = wire::kv_event_from_pb(e);
            }
        }
    }
});
