//! Client-side encryption of stage files, as Snowflake's drivers do it: the file in
//! AES-CBC (PKCS#7 padding) under a random key of the master key's size, and that key
//! wrapped in AES-ECB under the stage's master key (`queryStageMasterKey`). The
//! wrapped key, the IV and a material descriptor travel as the object's metadata.
//! Every primitive is aws-lc-rs's.

use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, Algorithm, DecryptionContext, EncryptionContext,
    PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use moodbridge_core::{Error, ErrorKind, Result};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::PLATFORM;

/// The stage's master key and what identifies it (`encryptionMaterial` of a PUT or GET
/// answer).
#[derive(Clone)]
pub(crate) struct Material {
    master_key: SecretString,
    pub query_id: String,
    pub smk_id: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("query_id", &self.query_id)
            .field("smk_id", &self.smk_id)
            .finish_non_exhaustive()
    }
}

/// How a file was encrypted: the wrapped file key and the IV (base64), and the material
/// descriptor (JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub key: String,
    pub iv: String,
    pub matdesc: String,
}

fn protocol(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Protocol, message).with_connector(PLATFORM)
}

fn crypto(what: &str) -> Error {
    Error::new(
        ErrorKind::Integrity,
        format!("stage file {what} failed (wrong master key, or a damaged file)"),
    )
    .with_connector(PLATFORM)
    .with_hint("run the transfer again; a file that still fails was not written by a Snowflake client for this stage")
}

fn algorithm(key: &[u8]) -> Result<&'static Algorithm> {
    match key.len() {
        16 => Ok(&AES_128),
        24 => Ok(&AES_192),
        32 => Ok(&AES_256),
        n => Err(protocol(format!(
            "Snowflake sent a stage master key of {n} bytes (AES takes 16, 24 or 32)"
        ))),
    }
}

impl Material {
    /// The material of a JSON object (`queryStageMasterKey`, `queryId`, `smkId`).
    pub(crate) fn from_json(value: &Value) -> Result<Material> {
        let key = value["queryStageMasterKey"]
            .as_str()
            .ok_or_else(|| protocol("Snowflake's encryption material has no master key"))?;
        let smk_id = match &value["smkId"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => String::new(),
        };
        Ok(Material {
            master_key: SecretString::from(key.to_owned()),
            query_id: value["queryId"].as_str().unwrap_or_default().to_owned(),
            smk_id,
        })
    }

    /// The master key in base64, to be scrubbed from errors.
    pub(crate) fn master_key_text(&self) -> &str {
        self.master_key.expose_secret()
    }

    fn master_key(&self) -> Result<Vec<u8>> {
        STANDARD
            .decode(self.master_key.expose_secret())
            .map_err(|_| protocol("Snowflake sent a stage master key that is not base64"))
    }

    /// Encrypt `data` in place; how to decrypt it.
    pub(crate) fn encrypt(&self, data: &mut Vec<u8>) -> Result<Envelope> {
        let master = self.master_key()?;
        let alg = algorithm(&master)?;
        let mut file_key = vec![0u8; master.len()];
        SystemRandom::new()
            .fill(&mut file_key)
            .map_err(|_| crypto("key generation"))?;
        let cipher = UnboundCipherKey::new(alg, &file_key)
            .and_then(PaddedBlockEncryptingKey::cbc_pkcs7)
            .map_err(|_| crypto("encryption"))?;
        let context = cipher.encrypt(data).map_err(|_| crypto("encryption"))?;
        let iv: &[u8] = (&context).try_into().map_err(|_| crypto("encryption"))?;
        let iv = STANDARD.encode(iv);
        let wrapper = UnboundCipherKey::new(alg, &master)
            .and_then(PaddedBlockEncryptingKey::ecb_pkcs7)
            .map_err(|_| crypto("key wrapping"))?;
        let mut wrapped = file_key;
        wrapper
            .less_safe_encrypt(&mut wrapped, EncryptionContext::None)
            .map_err(|_| crypto("key wrapping"))?;
        let matdesc = serde_json::json!({
            "queryId": self.query_id,
            "smkId": self.smk_id,
            "keySize": (master.len() * 8).to_string(),
        })
        .to_string();
        Ok(Envelope {
            key: STANDARD.encode(wrapped),
            iv,
            matdesc,
        })
    }

    /// Decrypt `data` (encrypted as `envelope` says) in place.
    pub(crate) fn decrypt(&self, envelope: &Envelope, data: &mut Vec<u8>) -> Result<()> {
        let master = self.master_key()?;
        let alg = algorithm(&master)?;
        let mut wrapped = STANDARD
            .decode(&envelope.key)
            .map_err(|_| protocol("a stage file's wrapped key is not base64"))?;
        let unwrapper = UnboundCipherKey::new(alg, &master)
            .and_then(PaddedBlockDecryptingKey::ecb_pkcs7)
            .map_err(|_| crypto("key unwrapping"))?;
        let file_key = unwrapper
            .decrypt(&mut wrapped, DecryptionContext::None)
            .map_err(|_| crypto("key unwrapping"))?
            .to_vec();
        // A key unwrapped with another master key fails its padding, or (rarely) leaves
        // a key of another length.
        if file_key.len() != master.len() {
            return Err(crypto("key unwrapping"));
        }
        let iv = STANDARD
            .decode(&envelope.iv)
            .map_err(|_| protocol("a stage file's IV is not base64"))?;
        let iv = FixedLength::<16>::try_from(iv.as_slice())
            .map_err(|_| protocol("a stage file's IV is not 16 bytes"))?;
        let cipher = UnboundCipherKey::new(algorithm(&file_key)?, &file_key)
            .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
            .map_err(|_| crypto("decryption"))?;
        let plain = cipher
            .decrypt(data, DecryptionContext::Iv128(iv))
            .map_err(|_| crypto("decryption"))?
            .len();
        data.truncate(plain);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn material(key: &[u8]) -> Material {
        Material::from_json(&json!({
            "queryStageMasterKey": STANDARD.encode(key),
            "queryId": "01b2-q",
            "smkId": 4711,
        }))
        .unwrap()
    }

    #[test]
    fn a_file_round_trips_and_its_envelope_is_the_drivers_shape() {
        for size in [16usize, 32] {
            let m = material(&vec![7u8; size]);
            for len in [0usize, 1, 15, 16, 17, 100_000] {
                let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let mut data = plain.clone();
                let envelope = m.encrypt(&mut data).unwrap();
                assert_eq!(data.len(), (len / 16 + 1) * 16, "PKCS#7 always pads");
                if len > 0 {
                    assert_ne!(&data[..len.min(16)], &plain[..len.min(16)]);
                }
                // The wrapped key is the file key padded to the next block: one block more.
                assert_eq!(STANDARD.decode(&envelope.key).unwrap().len(), size + 16);
                assert_eq!(STANDARD.decode(&envelope.iv).unwrap().len(), 16);
                let matdesc: Value = serde_json::from_str(&envelope.matdesc).unwrap();
                assert_eq!(
                    matdesc,
                    json!({"queryId": "01b2-q", "smkId": "4711", "keySize": (size * 8).to_string()})
                );
                m.decrypt(&envelope, &mut data).unwrap();
                assert_eq!(data, plain);
            }
        }
    }

    #[test]
    fn another_master_key_or_a_damaged_file_is_an_integrity_error() {
        let mut data = b"case 00042".to_vec();
        let envelope = material(&[1; 16]).encrypt(&mut data).unwrap();
        let mut copy = data.clone();
        let err = material(&[2; 16])
            .decrypt(&envelope, &mut copy)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
        data.truncate(data.len() - 1);
        let err = material(&[1; 16])
            .decrypt(&envelope, &mut data)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    }

    #[test]
    fn the_material_never_shows_its_key() {
        let m = material(&[9; 16]);
        assert!(!format!("{m:?}").contains(&STANDARD.encode([9u8; 16])));
    }
}
