//! AES-256-GCM sealing of secret values, with the secret's name and version (or a purpose
//! label) bound as associated data, so a ciphertext copied to another row fails to open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use moodbridge_core::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

use super::master_key::MasterKey;

/// A master key ready to seal and open.
pub(crate) struct Cipher {
    key: RandomizedNonceKey,
}

/// Associated data of a secret version.
pub(crate) fn secret_aad(name: &str, version: i64) -> Vec<u8> {
    format!("moodbridge-secret/v1\0{name}\0{version}").into_bytes()
}

/// Associated data of a master key's check value.
pub(crate) const CHECK_AAD: &[u8] = b"moodbridge-key-check/v1";
const CHECK_PLAINTEXT: &[u8] = b"moodbridge encrypted credential store";

impl Cipher {
    pub(crate) fn new(key: &MasterKey) -> Result<Self> {
        let key = RandomizedNonceKey::new(&AES_256_GCM, key.bytes())
            .map_err(|_| Error::internal("AES-256-GCM refused a 32-byte key"))?;
        Ok(Cipher { key })
    }

    /// Encrypt `plaintext` under a fresh random nonce; returns (nonce, ciphertext‖tag).
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut buffer = plaintext.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(aad), &mut buffer)
            .map_err(|_| Error::internal("AES-256-GCM encryption failed"))?;
        Ok((nonce.as_ref().to_vec(), buffer))
    }

    /// Decrypt and authenticate; any tampering, a moved ciphertext or a wrong key is an
    /// [`ErrorKind::Integrity`] error described by `what`.
    pub(crate) fn open(
        &self,
        aad: &[u8],
        nonce: &[u8],
        ciphertext: &[u8],
        what: &str,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let integrity = || {
            Error::new(
                ErrorKind::Integrity,
                format!(
                    "{what} failed authentication: it was altered, moved, or sealed with another key"
                ),
            )
        };
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| integrity())?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buffer,
            )
            .map_err(|_| integrity())?
            .len();
        buffer.truncate(len);
        Ok(buffer)
    }

    /// A check value proving a key is the one a store was created with.
    pub(crate) fn check_value(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        self.seal(CHECK_AAD, CHECK_PLAINTEXT)
    }

    /// Whether `(nonce, value)` is this key's check value.
    pub(crate) fn verifies(&self, nonce: &[u8], value: &[u8]) -> bool {
        self.open(CHECK_AAD, nonce, value, "key check")
            .is_ok_and(|p| p.as_slice() == CHECK_PLAINTEXT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Cipher {
        Cipher::new(&MasterKey::generate().unwrap()).unwrap()
    }

    #[test]
    fn round_trips_with_a_fresh_nonce_each_time() {
        let c = cipher();
        let aad = secret_aad("a/b", 1);
        let (n1, c1) = c.seal(&aad, b"hunter2").unwrap();
        let (n2, c2) = c.seal(&aad, b"hunter2").unwrap();
        assert_ne!(n1, n2);
        assert_ne!(c1, c2);
        assert_eq!(c.open(&aad, &n1, &c1, "x").unwrap().as_slice(), b"hunter2");
    }

    #[test]
    fn a_ciphertext_moved_to_another_name_or_version_fails() {
        let c = cipher();
        let (n, ct) = c.seal(&secret_aad("a/b", 1), b"v").unwrap();
        for aad in [secret_aad("a/c", 1), secret_aad("a/b", 2)] {
            let err = c.open(&aad, &n, &ct, "secret").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Integrity);
        }
    }

    #[test]
    fn a_flipped_bit_or_truncation_fails() {
        let c = cipher();
        let aad = secret_aad("a", 1);
        let (n, mut ct) = c.seal(&aad, b"value").unwrap();
        ct[0] ^= 1;
        assert!(c.open(&aad, &n, &ct, "x").is_err());
        ct[0] ^= 1;
        assert!(c.open(&aad, &n, &ct[..ct.len() - 1], "x").is_err());
        assert!(c.open(&aad, &n[..4], &ct, "x").is_err());
    }

    #[test]
    fn another_key_fails_and_check_values_tell_keys_apart() {
        let (a, b) = (cipher(), cipher());
        let (n, v) = a.check_value().unwrap();
        assert!(a.verifies(&n, &v));
        assert!(!b.verifies(&n, &v));
    }
}
