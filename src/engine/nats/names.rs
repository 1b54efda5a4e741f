//! Reversible encoding of flowmesh names and keys into what NATS accepts.
//! Stream and consumer names and subject tokens may not hold `.`, `*`, `>`,
//! `/`, whitespace; KV keys are limited further. Every byte outside
//! `[A-Za-z0-9-]` becomes `_XX` (upper-case hex), so `_` itself is escaped
//! and decoding is unambiguous. Names too long for a stream name are hashed
//! (the readable name is kept in the stream's metadata).

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// NATS limits stream and consumer names to 255 characters; stay well below
/// so prefixes and partition suffixes fit.
const MAX_TOKEN: usize = 200;

/// Encodes any string into `[A-Za-z0-9_-]+`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// Reverses [`encode`].
pub fn decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| bad(s))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad(s))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(s))
}

fn bad(s: &str) -> Error {
    Error::Internal(format!("not an encoded flowmesh name: {s:?}"))
}

/// A token for a resource name, short enough for a stream name: the encoded
/// name, or `h` + a hash when the encoding is too long.
pub fn token(name: &str) -> String {
    let e = encode(name);
    if e.len() <= MAX_TOKEN {
        return e;
    }
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("h{hex}")
}

/// Priority as a subject token (`p5`, `n3` for -3): subjects cannot hold `-`
/// at the start meaningfully for sorting, and bands are sorted numerically.
pub fn priority_token(p: i32) -> String {
    if p < 0 {
        format!("n{}", p.unsigned_abs())
    } else {
        format!("p{p}")
    }
}

pub fn parse_priority_token(t: &str) -> Option<i32> {
    if let Some(n) = t.strip_prefix('n') {
        n.parse::<u32>().ok().and_then(|v| 0i64.checked_sub(v as i64)).and_then(|v| i32::try_from(v).ok())
    } else {
        t.strip_prefix('p')?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_name_and_key() {
        for s in ["a", "t/n/orders.v1", "user:1", "ü ß", "a_b", "_", "x.y.z", "*>", "\u{1F600}", "-"] {
            let e = encode(s);
            assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{e}");
            assert_eq!(decode(&e).unwrap(), s);
        }
        assert_ne!(encode("a_2E"), encode("a."));
    }

    #[test]
    fn long_names_are_hashed_stably() {
        let long = "x".repeat(300);
        assert_eq!(token(&long), token(&long));
        assert!(token(&long).len() < 64);
        assert_ne!(token(&long), token(&"y".repeat(300)));
        assert_eq!(token("t/n/s"), encode("t/n/s"));
    }

    #[test]
    fn priorities_round_trip() {
        for p in [0, 1, -1, i32::MAX, i32::MIN, 10] {
            assert_eq!(parse_priority_token(&priority_token(p)), Some(p));
        }
    }
}
