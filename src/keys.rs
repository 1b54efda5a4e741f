//! End-to-end keys: X25519 key pairs and sealed boxes (RustCrypto
//! `crypto_box`: an ephemeral X25519 key + XSalsa20-Poly1305 per recipient),
//! so only the recipient's secret key opens a payload and any change to the
//! ciphertext fails authentication.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use crypto_box::aead::OsRng;
use crypto_box::{PublicKey, SecretKey};

use crate::error::{Error, Result};

/// An application's X25519 secret key (connect option `app_secret_key`,
/// 32 bytes in standard base64). Debug output never shows the key.
#[derive(Clone)]
pub struct AppKey {
    secret: SecretKey,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AppKey(public={})", self.public_base64())
    }
}

impl AppKey {
    /// The key pair of a base64 X25519 secret key (option `app_secret_key`).
    pub fn from_base64(text: &str) -> Result<AppKey> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            Error::invalid("option app_secret_key: expected 32 bytes in standard base64 (fm_event_keygen makes one)")
        })?;
        let secret = SecretKey::from_slice(&bytes).map_err(|_| {
            Error::invalid(format!(
                "option app_secret_key: expected 32 bytes, got {} after base64 decoding",
                bytes.len()
            ))
        })?;
        Ok(AppKey { secret })
    }

    /// A new random key pair.
    pub fn generate() -> AppKey {
        AppKey { secret: SecretKey::generate(&mut OsRng) }
    }

    /// The secret key in base64, as option `app_secret_key` takes it.
    pub fn secret_base64(&self) -> String {
        STANDARD.encode(self.secret.to_bytes())
    }

    /// The public key in base64, which senders seal events to.
    pub fn public_base64(&self) -> String {
        STANDARD.encode(self.secret.public_key().as_bytes())
    }

    /// Opens a sealed box; any tampering (or a box for another key) fails.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        self.secret.unseal(sealed).map_err(|_| {
            Error::Unauthorized("encrypted payload failed authentication (tampered, or sealed for another key)".into())
        })
    }
}

/// Parses a registered public key (standard base64, 32 bytes).
pub fn public_key(text: &[u8], owner: &str) -> Result<PublicKey> {
    let bytes = STANDARD.decode(text).map_err(|_| Error::Internal(format!("public key of {owner} is not base64")))?;
    PublicKey::from_slice(&bytes).map_err(|_| Error::Internal(format!("public key of {owner} is not 32 bytes")))
}

/// Seals `payload` so only the holder of `to`'s secret key can open it.
pub fn seal(to: &PublicKey, payload: &[u8]) -> Result<Vec<u8>> {
    to.seal(&mut OsRng, payload).map_err(|_| Error::Internal("sealing the payload failed".into()))
}

/// Standard base64 of `bytes`.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard base64; an error when malformed.
pub fn unb64(text: &str) -> Result<Vec<u8>> {
    STANDARD.decode(text).map_err(|_| Error::Unauthorized("stored ciphertext is not valid base64".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper_detection() {
        let k = AppKey::generate();
        let again = AppKey::from_base64(&k.secret_base64()).unwrap();
        assert_eq!(again.public_base64(), k.public_base64());
        let pk = public_key(k.public_base64().as_bytes(), "a").unwrap();
        let mut sealed = seal(&pk, b"secret payload").unwrap();
        assert_eq!(k.open(&sealed).unwrap(), b"secret payload");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(k.open(&sealed), Err(Error::Unauthorized(_))));
        assert!(AppKey::generate().open(&seal(&pk, b"x").unwrap()).is_err());
        assert!(AppKey::from_base64("not base64!").is_err());
        assert!(AppKey::from_base64(&b64(&[1u8; 31])).is_err());
        assert!(!format!("{k:?}").contains(&k.secret_base64()));
    }
}
