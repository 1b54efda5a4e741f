//! Password hashes: argon2id in the PHC string format (the parameters travel
//! with each hash, so changing them affects only new hashes). Verifying an
//! unknown user runs against a dummy hash made with the same parameters, so
//! "no such user" and "wrong password" take the same time.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::{Error, Result};

/// Cost of new hashes. The default is OWASP's argon2id minimum (19 MiB,
/// two passes, one lane); tests lower it to stay fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory per hash, in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        HashCost { memory_kib: 19 * 1024, iterations: 2 }
    }
}

/// Longest password accepted (argon2 takes any length; this bounds the work).
pub(crate) const MAX_PASSWORD: usize = 1024;
pub(crate) const MIN_PASSWORD: usize = 8;

pub(crate) struct Hasher {
    cost: HashCost,
    dummy: String,
}

impl Hasher {
    pub fn new(cost: HashCost) -> Result<Hasher> {
        let mut h = Hasher { cost, dummy: String::new() };
        h.dummy = h.hash("not the password of anyone")?;
        Ok(h)
    }

    fn argon(&self) -> Result<Argon2<'static>> {
        let params = Params::new(self.cost.memory_kib, self.cost.iterations, 1, None)
            .map_err(|e| Error::invalid(format!("argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// A new salted hash of `password`, as a PHC string.
    pub fn hash(&self, password: &str) -> Result<String> {
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).map_err(|e| Error::Internal(format!("no randomness for a salt: {e}")))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(format!("salt: {e}")))?;
        let hash = self
            .argon()?
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| Error::Internal(format!("hashing a password: {e}")))?;
        Ok(hash.to_string())
    }

    /// Whether `password` matches `stored`; with `None` (unknown user) the
    /// dummy hash is checked, for the same time, and the answer is false.
    pub fn verify(&self, stored: Option<&str>, password: &str) -> bool {
        let target = stored.unwrap_or(&self.dummy);
        let Ok(parsed) = PasswordHash::new(target) else {
            return false;
        };
        let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        ok && stored.is_some()
    }
}

/// Checks a new password's length.
pub fn check_new(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        return Err(Error::invalid(format!(
            "a password needs at least {MIN_PASSWORD} characters and at most {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = Hasher::new(HashCost { memory_kib: 8, iterations: 1 }).unwrap();
        let stored = h.hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(h.verify(Some(&stored), "correct horse"));
        assert!(!h.verify(Some(&stored), "wrong horse"));
        assert!(!h.verify(None, "not the password of anyone"), "the dummy never admits");
        assert!(!h.verify(Some("garbage"), "x"));
    }
}
