//! Entry points for the fuzz targets in `fuzz/`: untrusted bytes into each
//! storage decoder, fed the way recovery feeds it, on in-memory state. Not
//! a supported API. Each returns how many records it accepted.

/// A segment file: indexed as the newest segment (a torn tail allowed) and
/// as an older one, and decoded as one record body.
pub fn segment(data: &[u8]) -> usize {
    super::partition::fuzz_load(data, true)
        + super::partition::fuzz_load(data, false)
        + usize::from(super::partition::decode_record(data).is_some())
}

/// A queue's write-ahead log (jobs, acks, retries, the retry policy).
pub fn queue_log(data: &[u8]) -> usize {
    super::queue::fuzz_replay(data, 1_700_000_000_000)
}

/// A KV bucket's write-ahead log (puts, deletes, expiries).
pub fn kv_log(data: &[u8]) -> usize {
    super::kv::fuzz_replay(data, 1_700_000_000_000)
}

/// The engine's transaction log (staged multi-key writes).
pub fn txn_log(data: &[u8]) -> usize {
    super::txn::fuzz_decode(data)
}
