//! Key-pair authentication: a JWT signed with the user's RSA private key (RS256), whose
//! issuer names the public key by its fingerprint, as Snowflake's drivers make it.
//!
//! - `iss` = `ACCOUNT.USER.SHA256:<base64 of SHA-256 of the public key's DER
//!   SubjectPublicKeyInfo>`, `sub` = `ACCOUNT.USER`, `iat` = now, `exp` = now + 60 s;
//! - the account is the identifier up to its first `.` (a region or cloud suffix is left
//!   out; with `.global`, up to its first `-`), upper-cased, and so is the user;
//! - the key is PKCS#8 PEM (`BEGIN PRIVATE KEY`), or encrypted PKCS#8 (`BEGIN
//!   ENCRYPTED PRIVATE KEY`, PBES2) with its passphrase.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use moodbridge_core::{Error, Result};
use pkcs8::der::pem::LineEnding;
use pkcs8::{EncryptedPrivateKeyInfo, SecretDocument};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::PLATFORM;

/// How long a token is valid (the drivers' default).
const LIFETIME_SECS: u64 = 60;

#[derive(Serialize)]
struct Claims {
    iss: String,
    sub: String,
    iat: u64,
    exp: u64,
}

fn bad_key(what: &str) -> Error {
    Error::config(format!("the Snowflake private key {what}"))
        .with_connector(PLATFORM)
        .with_hint("give an RSA key in PKCS#8 PEM (`openssl genpkey -algorithm RSA -out key.pem`), encrypted or not; for an encrypted key, its passphrase")
}

/// The account part of `iss` and `sub`.
pub(crate) fn account_name(account: &str) -> String {
    let part = if account.contains(".global") {
        account.split('-').next()
    } else {
        account.split('.').next()
    };
    part.unwrap_or(account).to_ascii_uppercase()
}

/// The unencrypted PKCS#8 PEM and DER of `pem`.
fn plain_pkcs8(pem: &SecretString, passphrase: Option<&SecretString>) -> Result<SecretDocument> {
    let text = pem.expose_secret().trim();
    if text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        let Some(passphrase) = passphrase else {
            return Err(bad_key("is encrypted and no passphrase was given"));
        };
        let (label, der) =
            pkcs8::der::pem::decode_vec(text.as_bytes()).map_err(|_| bad_key("is not PEM"))?;
        if label != "ENCRYPTED PRIVATE KEY" {
            return Err(bad_key("is not an encrypted PKCS#8 key"));
        }
        let info = EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|_| bad_key("is not an encrypted PKCS#8 key"))?;
        return info
            .decrypt(passphrase.expose_secret())
            .map_err(|_| bad_key("does not decrypt with the passphrase given"));
    }
    if text.contains("BEGIN RSA PRIVATE KEY") {
        return Err(bad_key(
            "is PKCS#1: convert it with `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.p8`",
        ));
    }
    let (label, doc) = SecretDocument::from_pem(text).map_err(|_| bad_key("is not PEM"))?;
    if label != "PRIVATE KEY" {
        return Err(bad_key("is not a PKCS#8 private key"));
    }
    Ok(doc)
}

/// The key's public fingerprint, `SHA256:<base64>`, as Snowflake stores it for the user
/// (`RSA_PUBLIC_KEY_FP`).
pub(crate) fn fingerprint(der: &[u8]) -> Result<String> {
    let pair =
        aws_lc_rs::rsa::KeyPair::from_pkcs8(der).map_err(|_| bad_key("is not an RSA key"))?;
    let public = pair
        .public_key()
        .as_der()
        .map_err(|_| bad_key("has no public key to derive"))?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public.as_ref());
    Ok(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    ))
}

/// The login JWT of key-pair authentication for `user` of `account`, signed with the
/// RSA key `pem` (PKCS#8 PEM; with `passphrase`, encrypted PKCS#8): what
/// [`SnowflakeConfig::key_pair`](crate::SnowflakeConfig::key_pair) logs in with, for tools
/// that need the token itself.
///
/// ```no_run
/// use secrecy::SecretString;
/// let pem = SecretString::from(std::fs::read_to_string("rsa_key.p8").unwrap());
/// let jwt = connector_snowflake::key_pair_token("acme-prod", "LOADER", &pem, None).unwrap();
/// assert_eq!(jwt.split('.').count(), 3);
/// ```
///
/// # Errors
/// A key that is not an RSA PKCS#8 key, or does not decrypt with `passphrase`
/// ([`Config`](moodbridge_core::ErrorKind::Config), naming the fix).
pub fn token(
    account: &str,
    user: &str,
    pem: &SecretString,
    passphrase: Option<&SecretString>,
) -> Result<String> {
    let der = plain_pkcs8(pem, passphrase)?;
    let fingerprint = fingerprint(der.as_bytes())?;
    let pem = der
        .to_pem("PRIVATE KEY", LineEnding::LF)
        .map_err(|_| bad_key("could not be re-encoded"))?;
    let key =
        EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| bad_key("is not an RSA key"))?;
    let account = account_name(account);
    let user = user.to_ascii_uppercase();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let claims = Claims {
        iss: format!("{account}.{user}.{fingerprint}"),
        sub: format!("{account}.{user}"),
        iat: now,
        exp: now + LIFETIME_SECS,
    };
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).map_err(|e| {
        Error::internal(format!("signing the Snowflake login token: {e}")).with_connector(PLATFORM)
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]
    use super::*;

    #[test]
    fn the_account_is_cut_as_the_drivers_cut_it() {
        assert_eq!(account_name("acme-prod"), "ACME-PROD");
        assert_eq!(account_name("xy12345.eu-west-1.aws"), "XY12345");
        assert_eq!(account_name("acme-prod.global"), "ACME");
    }

    #[test]
    fn keys_that_will_not_do_say_what_to_give() {
        for (pem, says) in [
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----",
                "PKCS#1",
            ),
            ("not a key", "not PEM"),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----",
                "no passphrase",
            ),
        ] {
            let err = token("acme", "loader", &SecretString::from(pem), None).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
            assert!(err.hint().contains("PKCS#8"), "{err:?}");
        }
    }
}
