//! Encryption of private keys at rest: AES-256-GCM under the master key.
//!
//! A sealed blob is `nonce (12 bytes) || ciphertext || tag (16 bytes)`. The associated data
//! binds the blob to the row it belongs to (kid, key set, algorithm), so a blob copied onto
//! another row, or a row whose kid or algorithm was edited, fails to open instead of
//! silently signing with the wrong key.

use std::fmt;

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hmac;
use base64::Engine;
use zeroize::Zeroizing;

/// Length in bytes of the master key.
pub const MASTER_KEY_LEN: usize = 32;

/// The key that encrypts every private key in the store, and (through a key derived from
/// it) authenticates every key row and the audit chain's head.
pub struct MasterKey {
    key: RandomizedNonceKey,
    /// HMAC-SHA256 key derived from the master key, for records stored in the clear.
    integrity: hmac::Key,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([secret key elided])")
    }
}

/// The master key text was not 32 bytes in hex or base64.
#[derive(Debug, thiserror::Error)]
#[error("a master key must be 32 random bytes written as 64 hex digits or as base64")]
pub struct BadMasterKey;

/// A sealed value could not be opened: wrong master key, or the row was altered.
#[derive(Debug, thiserror::Error)]
#[error("sealed data does not open under this master key with this associated data")]
pub struct OpenFailed;

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; MASTER_KEY_LEN]) -> Self {
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes)
            .unwrap_or_else(|_| unreachable!("a 32-byte key always suits AES-256-GCM"));
        // A separate key for MACs, so the AES key is never used for anything else: HMAC as a
        // PRF over a fixed label (the extract step of HKDF is not needed for a uniformly
        // random master key).
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, bytes),
            INTEGRITY_KEY_LABEL,
        );
        let integrity = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
        MasterKey { key, integrity }
    }

    /// Parses the text form (hex, or standard base64) written in a key file or variable.
    pub fn from_text(text: &str) -> Result<Self, BadMasterKey> {
        let text = text.trim();
        let bytes: Zeroizing<Vec<u8>> = Zeroizing::new(if text.len() == 2 * MASTER_KEY_LEN {
            hex::decode(text).map_err(|_| BadMasterKey)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| BadMasterKey)?
        });
        let array: &[u8; MASTER_KEY_LEN] = bytes.as_slice().try_into().map_err(|_| BadMasterKey)?;
        Ok(Self::from_bytes(array))
    }

    /// A fresh random key and its hex text form (to be written to a file with mode 0600).
    pub fn generate() -> (Self, Zeroizing<String>) {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        // The system RNG failing is unrecoverable; aws-lc aborts in that case anyway.
        aws_lc_rs::rand::fill(bytes.as_mut())
            .unwrap_or_else(|_| unreachable!("the system random generator failed"));
        let text = Zeroizing::new(hex::encode(bytes.as_ref()));
        (Self::from_bytes(&bytes), text)
    }

    /// Encrypts `plaintext` bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        buffer.extend_from_slice(&[0u8; NONCE_LEN]);
        buffer.extend_from_slice(plaintext);
        let mut body = buffer.split_off(NONCE_LEN);
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(aad), &mut body)
            .unwrap_or_else(|_| unreachable!("AES-GCM sealing of a short buffer cannot fail"));
        buffer.copy_from_slice(nonce.as_ref());
        buffer.extend_from_slice(&body);
        buffer
    }

    /// Decrypts a blob made by [`MasterKey::seal`] with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenFailed> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(OpenFailed);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenFailed)?;
        let mut buffer = Zeroizing::new(body.to_vec());
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad), buffer.as_mut_slice())
            .map_err(|_| OpenFailed)?
            .len();
        buffer.truncate(plain_len);
        Ok(buffer)
    }
}

const INTEGRITY_KEY_LABEL: &[u8] = b"jwksd/integrity-key/v1";

impl MasterKey {
    /// A MAC over `data` in the domain `purpose` (a fixed label per kind of record), so a tag
    /// made for one kind of record is never valid for another.
    pub fn mac(&self, purpose: &str, data: &[u8]) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.integrity);
        ctx.update(purpose.as_bytes());
        ctx.update(b"\0");
        ctx.update(data);
        ctx.sign().as_ref().to_vec()
    }

    /// Checks a tag made by [`MasterKey::mac`], in constant time.
    pub fn verify_mac(&self, purpose: &str, data: &[u8], tag: &[u8]) -> bool {
        let expected = self.mac(purpose, data);
        aws_lc_rs::constant_time::verify_slices_are_equal(&expected, tag).is_ok()
    }
}

/// The associated data that binds a sealed private key to its row.
pub fn private_key_aad(kid: &str, keyset: &str, alg: &str) -> Vec<u8> {
    format!("jwksd/private-key/v1\0{kid}\0{keyset}\0{alg}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_the_same_key_and_aad() {
        let (key, _) = MasterKey::generate();
        let (other, _) = MasterKey::generate();
        let sealed = key.seal(b"secret", b"row-1");
        assert_eq!(key.open(&sealed, b"row-1").unwrap().as_slice(), b"secret");
        assert!(key.open(&sealed, b"row-2").is_err());
        assert!(other.open(&sealed, b"row-1").is_err());
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(key.open(&flipped, b"row-1").is_err());
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn macs_depend_on_key_purpose_and_data() {
        let (key, _) = MasterKey::generate();
        let (other, _) = MasterKey::generate();
        let tag = key.mac("row", b"data");
        assert!(key.verify_mac("row", b"data", &tag));
        assert!(!key.verify_mac("head", b"data", &tag));
        assert!(!key.verify_mac("row", b"datb", &tag));
        assert!(!other.verify_mac("row", b"data", &tag));
        assert!(!key.verify_mac("row", b"data", &tag[..31]));
    }

    #[test]
    fn text_forms_parse() {
        let (_, hex_text) = MasterKey::generate();
        assert!(MasterKey::from_text(&hex_text).is_ok());
        assert!(MasterKey::from_text(&format!("  {}\n", hex_text.as_str())).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        assert!(MasterKey::from_text(&b64).is_ok());
        assert!(MasterKey::from_text("short").is_err());
        assert!(MasterKey::from_text(&"ab".repeat(31)).is_err());
    }
}
