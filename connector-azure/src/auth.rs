//! Azure Storage authorization the official crate leaves out: connection strings, the
//! Shared Key signing policy, service and account SAS tokens signed with the account key,
//! and user delegation SAS tokens signed with a key obtained through Entra ID.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request, Url};
use base64::Engine;
use hmac::{Hmac, Mac};
use moodbridge_core::{Error, Result};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The storage emulator's well-known development account (Azurite), published by
/// Microsoft: not a secret.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// The development account's published key.
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A storage account name and its Shared Key. `Debug` hides the key.
#[derive(Clone)]
pub struct SharedKey {
    /// Account name.
    pub account: String,
    /// The account key (base64, as the portal shows it).
    pub key: SecretString,
}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKey")
            .field("account", &self.account)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl SharedKey {
    /// Checks the key is base64 and returns its bytes.
    fn key_bytes(&self) -> Result<Vec<u8>> {
        B64.decode(self.key.expose_secret().trim()).map_err(|_| {
            Error::config(format!(
                "the account key of storage account {:?} is not valid base64",
                self.account
            ))
            .with_hint("copy the key (key1 or key2) from the storage account's Access keys page")
        })
    }

    /// HMAC-SHA256 of `text` with the account key, base64.
    pub fn sign(&self, text: &str) -> Result<String> {
        hmac_sha256_b64(&self.key_bytes()?, text)
    }
}

/// HMAC-SHA256 of `text` with `key`, base64: the signature of Shared Key requests and of
/// every kind of SAS.
fn hmac_sha256_b64(key: &[u8], text: &str) -> Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|e| Error::internal(format!("HMAC key: {e}")))?;
    mac.update(text.as_bytes());
    Ok(B64.encode(mac.finalize().into_bytes()))
}

/// A parsed Azure Storage connection string. `Debug` hides the key and SAS.
///
/// ```
/// use connector_azure::auth::ConnectionString;
/// let cs = ConnectionString::parse(
///     "DefaultEndpointsProtocol=https;AccountName=moodbridge;AccountKey=a2V5;EndpointSuffix=core.windows.net",
/// )?;
/// assert_eq!(cs.blob_endpoint.as_str(), "https://moodbridge.blob.core.windows.net/");
/// assert_eq!(cs.queue_endpoint.as_str(), "https://moodbridge.queue.core.windows.net/");
/// assert!(!format!("{cs:?}").contains("a2V5"));
/// let dev = ConnectionString::parse("UseDevelopmentStorage=true")?;
/// assert_eq!(dev.blob_endpoint.as_str(), "http://127.0.0.1:10000/devstoreaccount1");
/// assert_eq!(dev.queue_endpoint.as_str(), "http://127.0.0.1:10001/devstoreaccount1");
/// # Ok::<_, moodbridge_core::Error>(())
/// ```
#[derive(Clone)]
pub struct ConnectionString {
    /// Account name.
    pub account: String,
    /// Account key, when given.
    pub key: Option<SecretString>,
    /// SAS token (without `?`), when given.
    pub sas: Option<SecretString>,
    /// The Blob service endpoint.
    pub blob_endpoint: Url,
    /// The Queue service endpoint.
    pub queue_endpoint: Url,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("account", &self.account)
            .field("key", &self.key.as_ref().map(|_| "[REDACTED]"))
            .field("sas", &self.sas.as_ref().map(|_| "[REDACTED]"))
            .field("blob_endpoint", &self.blob_endpoint.as_str())
            .field("queue_endpoint", &self.queue_endpoint.as_str())
            .finish()
    }
}

impl ConnectionString {
    /// Parses `Name=value;…` (names case-insensitive). Errors never repeat the string
    /// (it holds a secret); they name the missing or bad part.
    pub fn parse(text: &str) -> Result<Self> {
        let mut account = None;
        let mut key = None;
        let mut sas = None;
        let mut protocol = "https".to_owned();
        let mut suffix = "core.windows.net".to_owned();
        let mut blob_endpoint = None;
        let mut queue_endpoint = None;
        let mut dev = false;
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = part.split_once('=') else {
                return Err(Error::config("connection string has a part without '='")
                    .with_hint("use Name=value pairs separated by ';' as the portal shows them"));
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "accountname" => account = Some(value.trim().to_owned()),
                "accountkey" => key = Some(SecretString::from(value.trim().to_owned())),
                "sharedaccesssignature" => {
                    sas = Some(SecretString::from(
                        value.trim().trim_start_matches('?').to_owned(),
                    ))
                }
                "defaultendpointsprotocol" => protocol = value.trim().to_owned(),
                "endpointsuffix" => suffix = value.trim().to_owned(),
                "blobendpoint" => blob_endpoint = Some(value.trim().to_owned()),
                "queueendpoint" => queue_endpoint = Some(value.trim().to_owned()),
                "usedevelopmentstorage" => dev = value.trim().eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        if dev {
            return Ok(ConnectionString {
                account: DEV_ACCOUNT.to_owned(),
                key: Some(SecretString::from(DEV_ACCOUNT_KEY.to_owned())),
                sas: None,
                blob_endpoint: Url::parse("http://127.0.0.1:10000/devstoreaccount1")
                    .map_err(|e| Error::internal(e.to_string()))?,
                queue_endpoint: Url::parse("http://127.0.0.1:10001/devstoreaccount1")
                    .map_err(|e| Error::internal(e.to_string()))?,
            });
        }
        let account = account.ok_or_else(|| {
            Error::config("connection string has no AccountName")
                .with_hint("copy the whole connection string from the portal")
        })?;
        if key.is_none() && sas.is_none() {
            return Err(Error::config(format!("connection string of account {account:?} has neither AccountKey nor SharedAccessSignature"))
                .with_hint("copy a connection string with a key, or use Entra ID credentials instead"));
        }
        let endpoint = |service: &str, given: Option<String>| {
            let endpoint =
                given.unwrap_or_else(|| format!("{protocol}://{account}.{service}.{suffix}/"));
            Url::parse(&endpoint).map_err(|e| {
                Error::config(format!("connection string of account {account:?}: {service} endpoint {endpoint:?} is not a URL: {e}"))
            })
        };
        let blob_endpoint = endpoint("blob", blob_endpoint)?;
        let queue_endpoint = endpoint("queue", queue_endpoint)?;
        Ok(ConnectionString {
            account,
            key,
            sas,
            blob_endpoint,
            queue_endpoint,
        })
    }
}

/// Signs every try with Shared Key (`Authorization: SharedKey account:signature`), as a
/// per-try policy of the official client's pipeline.
#[derive(Debug)]
pub struct SharedKeyPolicy {
    key: SharedKey,
}

impl SharedKeyPolicy {
    /// A policy signing with `key`.
    pub fn new(key: SharedKey) -> Arc<Self> {
        Arc::new(SharedKeyPolicy { key })
    }
}

/// RFC 1123 date, as `x-ms-date` wants it.
fn http_date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// The Shared Key string to sign for a request (the documented 2009-09-19+ format).
pub fn string_to_sign(account: &str, request: &Request) -> String {
    let headers = request.headers();
    let get = |name: &'static str| {
        headers
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))
            .unwrap_or("")
            .to_owned()
    };
    let mut length = get("content-length");
    if length.is_empty()
        && let Some(len) = request.body().len()
    {
        length = len.to_string();
    }
    if length == "0" {
        length.clear();
    }
    let mut canonical_headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-ms-"))
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                value.as_str().trim().to_owned(),
            )
        })
        .collect();
    canonical_headers.sort();
    let url = request.url();
    let mut resource = format!("/{account}{}", url.path());
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    params.sort();
    let mut i = 0;
    while i < params.len() {
        let name = params[i].0.clone();
        let mut values = Vec::new();
        while i < params.len() && params[i].0 == name {
            values.push(params[i].1.clone());
            i += 1;
        }
        values.sort();
        resource.push_str(&format!("\n{name}:{}", values.join(",")));
    }
    let mut out = String::new();
    out.push_str(request.method().as_str());
    out.push('\n');
    for part in [
        get("content-encoding"),
        get("content-language"),
        length,
        get("content-md5"),
        get("content-type"),
        String::new(), // Date: x-ms-date is used instead
        get("if-modified-since"),
        get("if-match"),
        get("if-none-match"),
        get("if-unmodified-since"),
        get("range"),
    ] {
        out.push_str(&part);
        out.push('\n');
    }
    for (name, value) in canonical_headers {
        out.push_str(&format!("{name}:{value}\n"));
    }
    out.push_str(&resource);
    out
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        request.insert_header("x-ms-date", http_date(SystemTime::now()));
        let signature = self
            .key
            .sign(&string_to_sign(&self.key.account, request))
            .map_err(|e| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    e.to_string(),
                )
            })?;
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{signature}", self.key.account),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// Permissions of a service SAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SasPermission {
    /// Read (download, properties).
    Read,
    /// Create and write (upload).
    Write,
}

impl SasPermission {
    /// The `sp` letters it grants.
    fn letters(self) -> &'static str {
        match self {
            SasPermission::Read => "r",
            SasPermission::Write => "cw",
        }
    }
}

/// A service SAS query string (no leading `?`) for one blob, signed with the account
/// key, valid until `expiry`. It is a bearer secret: log it never.
pub fn blob_sas(
    key: &SharedKey,
    container: &str,
    blob: &str,
    permission: SasPermission,
    expiry: SystemTime,
    version: &str,
) -> Result<SecretString> {
    let permissions = permission.letters();
    let expiry = sas_time(expiry);
    let resource = format!("/blob/{}/{container}/{blob}", key.account);
    // signedPermissions, signedStart, signedExpiry, canonicalizedResource, signedIdentifier,
    // signedIP, signedProtocol, signedVersion, signedResource, signedSnapshotTime,
    // signedEncryptionScope, rscc, rscd, rsce, rscl, rsct
    let to_sign = [
        permissions,
        "",
        &expiry,
        &resource,
        "",
        "",
        "",
        version,
        "b",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let signature = key.sign(&to_sign)?;
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", version)
        .append_pair("se", &expiry)
        .append_pair("sr", "b")
        .append_pair("sp", permissions)
        .append_pair("sig", &signature)
        .finish();
    Ok(SecretString::from(query))
}

/// An account SAS query string (no leading `?`) for the Blob service, signed with the
/// account key: `permissions` from `racwdl` (read, add, create, write, delete, list) over
/// service, container and object resources, valid until `expiry`, https only unless
/// `allow_http`. Hand it to whoever needs access without the key (it is a bearer secret).
///
/// ```
/// use connector_azure::auth::{account_sas, SharedKey, DEV_ACCOUNT, DEV_ACCOUNT_KEY};
/// use secrecy::{ExposeSecret, SecretString};
/// let key = SharedKey { account: DEV_ACCOUNT.into(), key: SecretString::from(DEV_ACCOUNT_KEY.to_owned()) };
/// let expiry = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
/// let sas = account_sas(&key, "rl", expiry, false, "2025-11-05")?;
/// assert!(sas.expose_secret().contains("ss=b") && sas.expose_secret().contains("sig="));
/// assert!(account_sas(&key, "rx", expiry, false, "2025-11-05").is_err());
/// # Ok::<_, moodbridge_core::Error>(())
/// ```
pub fn account_sas(
    key: &SharedKey,
    permissions: &str,
    expiry: SystemTime,
    allow_http: bool,
    version: &str,
) -> Result<SecretString> {
    if permissions.is_empty() || !permissions.chars().all(|c| "racwdl".contains(c)) {
        return Err(Error::invalid_input(format!(
            "account SAS permissions {permissions:?} are not valid"
        ))
        .with_hint(
            "use letters from \"racwdl\" (read, add, create, write, delete, list), in that order",
        ));
    }
    // Azure wants the permission letters in this order.
    let permissions: String = "racwdl"
        .chars()
        .filter(|c| permissions.contains(*c))
        .collect();
    let expiry = sas_time(expiry);
    let protocol = if allow_http { "https,http" } else { "https" };
    // accountname, signedpermissions, signedservice, signedresourcetype, signedstart,
    // signedexpiry, signedIP, signedProtocol, signedversion, signedEncryptionScope, and a
    // final newline (version 2020-12-06 and later).
    let to_sign = [
        key.account.as_str(),
        &permissions,
        "b",
        "sco",
        "",
        &expiry,
        "",
        protocol,
        version,
        "",
        "",
    ]
    .join("\n");
    let signature = key.sign(&to_sign)?;
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", version)
        .append_pair("ss", "b")
        .append_pair("srt", "sco")
        .append_pair("sp", &permissions)
        .append_pair("se", &expiry)
        .append_pair("spr", protocol)
        .append_pair("sig", &signature)
        .finish();
    Ok(SecretString::from(query))
}

/// A user delegation key: fetched from the Blob service with Entra ID credentials
/// (`Get User Delegation Key`), it signs SAS tokens in place of the account key, and
/// is valid at most 7 days. The `sk*` fields are copied into every SAS it signs exactly as
/// given (times as `YYYY-MM-DDThh:mm:ssZ`). `Debug` hides the key value.
#[derive(Clone)]
pub struct UserDelegationKey {
    /// Entra ID object id of the principal the key was issued to (`skoid`).
    pub object_id: String,
    /// Entra ID tenant id (`sktid`).
    pub tenant_id: String,
    /// Start of the key's validity (`skt`).
    pub start: String,
    /// End of the key's validity (`ske`).
    pub expiry: String,
    /// The service the key is for, `b` (`sks`).
    pub service: String,
    /// The service version that issued it (`skv`).
    pub version: String,
    /// The key (base64).
    pub value: SecretString,
}

impl fmt::Debug for UserDelegationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserDelegationKey")
            .field("object_id", &self.object_id)
            .field("tenant_id", &self.tenant_id)
            .field("start", &self.start)
            .field("expiry", &self.expiry)
            .field("value", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// The SAS time format: UTC to the second.
pub(crate) fn sas_time(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A user delegation SAS query string (no leading `?`) for one blob, signed with `key`
/// (string-to-sign of service version 2025-07-05 and later, which `version` must be),
/// valid until `expiry` — which must not be after the key's own expiry. A bearer secret:
/// log it never.
///
/// ```
/// use connector_azure::auth::{user_delegation_sas, SasPermission, UserDelegationKey};
/// use secrecy::{ExposeSecret, SecretString};
/// let key = UserDelegationKey {
///     object_id: "11111111-2222-3333-4444-555555555555".into(),
///     tenant_id: "66666666-7777-8888-9999-000000000000".into(),
///     start: "2026-11-22T10:00:00Z".into(),
///     expiry: "2026-11-23T10:00:00Z".into(),
///     service: "b".into(),
///     version: "2025-11-05".into(),
///     value: SecretString::from("a2V5LWJ5dGVzLWZyb20tdGhlLXNlcnZpY2U=".to_owned()),
/// };
/// let expiry = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_428_000);
/// let sas = user_delegation_sas(&key, "acct", "docs", "a.pdf", SasPermission::Read, expiry, "2025-11-05")?;
/// assert!(sas.expose_secret().contains("skoid=11111111-2222-3333-4444-555555555555"));
/// assert!(sas.expose_secret().contains("sp=r") && sas.expose_secret().contains("sig="));
/// // A SAS may not outlive its key.
/// let late = expiry + std::time::Duration::from_secs(86_400);
/// assert!(user_delegation_sas(&key, "acct", "docs", "a.pdf", SasPermission::Read, late, "2025-11-05").is_err());
/// # Ok::<_, moodbridge_core::Error>(())
/// ```
pub fn user_delegation_sas(
    key: &UserDelegationKey,
    account: &str,
    container: &str,
    blob: &str,
    permission: SasPermission,
    expiry: SystemTime,
    version: &str,
) -> Result<SecretString> {
    if version < "2025-07-05" {
        return Err(Error::config(format!(
            "user delegation SAS with service version {version} is not supported"
        ))
        .with_hint("use service version 2025-07-05 or later (the default is)"));
    }
    let expiry = sas_time(expiry);
    // Both are `YYYY-MM-DDThh:mm:ssZ`, so they compare as text.
    if expiry > key.expiry {
        return Err(Error::invalid_input(format!(
            "a SAS valid until {expiry} outlives its user delegation key (valid until {})",
            key.expiry
        ))
        .with_hint(
            "ask for a shorter expiry, or a user delegation key valid longer (7 days at most)",
        ));
    }
    let permissions = permission.letters();
    let resource = format!("/blob/{account}/{container}/{blob}");
    // signedPermissions, signedStart, signedExpiry, canonicalizedResource,
    // signedKeyObjectId, signedKeyTenantId, signedKeyStart, signedKeyExpiry,
    // signedKeyService, signedKeyVersion, signedAuthorizedUserObjectId,
    // signedUnauthorizedUserObjectId, signedCorrelationId, signedKeyDelegatedUserTenantId,
    // signedDelegatedUserObjectId, signedIP, signedProtocol, signedVersion,
    // signedResource, signedSnapshotTime, signedEncryptionScope, rscc, rscd, rsce, rscl,
    // rsct
    let to_sign = [
        permissions,
        "",
        &expiry,
        &resource,
        &key.object_id,
        &key.tenant_id,
        &key.start,
        &key.expiry,
        &key.service,
        &key.version,
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        version,
        "b",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let bytes = B64.decode(key.value.expose_secret().trim()).map_err(|_| {
        Error::invalid_input("the user delegation key's value is not valid base64")
            .with_hint("pass the Value the service returned, unchanged")
    })?;
    let signature = hmac_sha256_b64(&bytes, &to_sign)?;
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", version)
        .append_pair("se", &expiry)
        .append_pair("sr", "b")
        .append_pair("sp", permissions)
        .append_pair("skoid", &key.object_id)
        .append_pair("sktid", &key.tenant_id)
        .append_pair("skt", &key.start)
        .append_pair("ske", &key.expiry)
        .append_pair("sks", &key.service)
        .append_pair("skv", &key.version)
        .append_pair("sig", &signature)
        .finish();
    Ok(SecretString::from(query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_parse_and_hide_secrets() {
        let cs = ConnectionString::parse(
            "AccountName=acct;AccountKey=c2VjcmV0;BlobEndpoint=http://127.0.0.1:10000/acct",
        )
        .unwrap();
        assert_eq!(cs.account, "acct");
        assert_eq!(cs.blob_endpoint.as_str(), "http://127.0.0.1:10000/acct");
        assert!(!format!("{cs:?}").contains("c2VjcmV0"));
        let err = ConnectionString::parse("AccountKey=c2VjcmV0").unwrap_err();
        assert!(err.to_string().contains("AccountName"));
        assert!(!err.to_string().contains("c2VjcmV0"));
        let err = ConnectionString::parse("AccountName=a").unwrap_err();
        assert!(err.to_string().contains("AccountKey"));
    }

    #[test]
    fn a_bad_key_is_a_config_error_without_the_key() {
        let key = SharedKey {
            account: "a".into(),
            key: SecretString::from("not base64!!".to_owned()),
        };
        let err = key.sign("x").unwrap_err();
        assert_eq!(err.kind(), moodbridge_core::ErrorKind::Config);
        assert!(!err.to_string().contains("not base64"));
    }
}
