//! Files to and from stages, as Snowflake's drivers move them: the `PUT` or `GET`
//! statement returns where the stage's files live (S3, GCS or Azure), short-lived
//! credentials or presigned URLs, and the stage's encryption material; the client then
//! compresses, digests, encrypts and transfers each file itself, straight to the cloud
//! storage.
//!
//! - Compression: a name ending in a compressed type (`.gz`, `.bz2`, `.zst`, `.br`,
//!   `.deflate`, `.raw_deflate`) or a Parquet / ORC / zstd file by its first bytes is
//!   sent as it is; anything else is gzipped and named `….gz` (`AUTO_COMPRESS`, on by
//!   default).
//! - Digest: SHA-256 of the file as stored (before encryption), base64, in the
//!   `sfc-digest` metadata. Without `OVERWRITE`, a file already in the stage with the
//!   same digest is not sent again ([`TransferStatus::Skipped`]).
//! - Encryption: see `crypt`; the envelope goes into the object's metadata under the
//!   names each storage uses (`x-amz-meta-x-amz-key` …, `x-goog-meta-encryptiondata`,
//!   `x-ms-meta-encryptiondata`).

use std::collections::HashMap;
use std::io::Write as _;

use aws_lc_rs::digest::{self, SHA256};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use moodbridge_core::resilience::Operation;
use moodbridge_core::{Error, ErrorKind, Result};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::PLATFORM;
use crate::client::SnowflakeClient;
use crate::crypt::{Envelope, Material};
use crate::error;

/// How a [`put`](SnowflakeClient::put_bytes) treats the file.
///
/// ```
/// use connector_snowflake::PutOptions;
/// let options = PutOptions::new().overwrite(true).auto_compress(false);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOptions {
    auto_compress: bool,
    overwrite: bool,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            auto_compress: true,
            overwrite: false,
        }
    }
}

impl PutOptions {
    /// Snowflake's defaults: gzip what is not compressed yet, and do not send a file the
    /// stage already holds with the same content.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gzip a file that is not compressed yet (`AUTO_COMPRESS`; on by default).
    pub fn auto_compress(mut self, on: bool) -> Self {
        self.auto_compress = on;
        self
    }

    /// Replace a file of the same name even when its content is the same (`OVERWRITE`;
    /// off by default).
    pub fn overwrite(mut self, on: bool) -> Self {
        self.overwrite = on;
        self
    }
}

/// What became of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferStatus {
    /// Sent to the stage.
    Uploaded,
    /// Not sent: the stage holds a file of that name with the same digest.
    Skipped,
}

/// One file's `PUT`, as Snowflake's drivers report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The name given.
    pub source: String,
    /// The name in the stage (with `.gz` when it was compressed here).
    pub target: String,
    /// Bytes given.
    pub source_size: u64,
    /// Bytes stored, before encryption.
    pub target_size: u64,
    /// The compression the file came with (`NONE`, `GZIP`, `PARQUET` …).
    pub source_compression: String,
    /// The compression it is stored with.
    pub target_compression: String,
    /// Sent or skipped.
    pub status: TransferStatus,
    /// Whether it was encrypted on the client (an internal stage).
    pub encrypted: bool,
}

/// A file read from a stage by [`get`](SnowflakeClient::get).
#[derive(Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// Its name within the stage location, as Snowflake lists it.
    pub name: String,
    /// Its content, decrypted (still compressed as it was stored).
    pub data: Bytes,
}

impl std::fmt::Debug for StagedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedFile")
            .field("name", &self.name)
            .field("bytes", &self.data.len())
            .finish()
    }
}

fn protocol(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Protocol, message).with_connector(PLATFORM)
}

fn invalid(message: impl Into<std::borrow::Cow<'static, str>>, hint: &'static str) -> Error {
    Error::invalid_input(message)
        .with_connector(PLATFORM)
        .with_hint(hint)
}

/// A stage reference a statement can carry unquoted: `@name`, `@~`, `@%table`,
/// `@db.schema.name`, with an optional `/path/`.
fn check_stage(stage: &str) -> Result<()> {
    let ok = stage.len() > 1
        && stage.starts_with('@')
        && stage[1..].chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.' | '/' | '~' | '%' | '-' | '"')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("{stage:?} is not a stage reference"),
            "name a stage as @name, @~, @%table or @db.schema.name, optionally with /path/",
        ))
    }
}

/// A file name that can stand in a statement's `file://` URL.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | '='));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("{name:?} is not a stage file name"),
            "use letters, digits and _ - . + = only (no path: the stage reference carries it)",
        ))
    }
}

/// The compression of a file, by name then by its first bytes, as the drivers detect
/// it; `None` when it is not compressed. Types Snowflake cannot load are refused.
fn detect_compression(name: &str, head: &[u8]) -> Result<Option<&'static str>> {
    let lower = name.to_ascii_lowercase();
    for (suffix, kind) in [
        (".gz", "GZIP"),
        (".bz2", "BZIP2"),
        (".br", "BROTLI"),
        (".zst", "ZSTD"),
        (".raw_deflate", "RAW_DEFLATE"),
        (".deflate", "DEFLATE"),
    ] {
        if lower.ends_with(suffix) {
            return Ok(Some(kind));
        }
    }
    for suffix in [".lz", ".lzma", ".lzo", ".xz", ".z"] {
        if lower.ends_with(suffix) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{name}: Snowflake cannot load files compressed as {suffix}"),
            )
            .with_connector(PLATFORM)
            .with_hint("recompress it as gzip, bzip2, zstd or brotli, or send it uncompressed"));
        }
    }
    Ok(if head.starts_with(b"PAR1") {
        Some("PARQUET")
    } else if head.starts_with(b"ORC") {
        Some("ORC")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("ZSTD")
    } else {
        None
    })
}

/// Where a stage's files live, from a `PUT` / `GET` answer's `stageInfo`.
#[derive(Clone)]
struct StageInfo {
    location_type: String,
    /// `bucket/path/` (S3, GCS) or `container/path/` (Azure).
    location: String,
    region: Option<String>,
    end_point: Option<String>,
    storage_account: Option<String>,
    presigned_url: Option<String>,
    creds: HashMap<String, SecretString>,
}

impl StageInfo {
    fn from_json(value: &Value) -> Result<StageInfo> {
        let text = |name: &str| {
            value[name]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let creds = value["creds"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        v.as_str()
                            .map(|v| (k.clone(), SecretString::from(v.to_owned())))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(StageInfo {
            location_type: text("locationType")
                .ok_or_else(|| protocol("Snowflake's stage info has no locationType"))?,
            location: text("location").unwrap_or_default(),
            region: text("region"),
            end_point: text("endPoint"),
            storage_account: text("storageAccount"),
            presigned_url: text("presignedUrl"),
            creds,
        })
    }

    fn cred(&self, name: &str) -> Option<&str> {
        self.creds
            .get(name)
            .map(|s| s.expose_secret())
            .filter(|s| !s.is_empty())
    }

    /// The bucket (container) and the path prefix, with a trailing `/` when not empty.
    fn bucket_and_prefix(&self) -> (String, String) {
        let (bucket, path) = self
            .location
            .split_once('/')
            .unwrap_or((self.location.as_str(), ""));
        let mut prefix = path.to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        (bucket.to_owned(), prefix)
    }

    /// Whether the end point is a whole URL (a local S3, GCS or Azure emulator), not a
    /// host name.
    fn endpoint_url(&self) -> Option<&str> {
        self.end_point
            .as_deref()
            .filter(|e| e.starts_with("http://") || e.starts_with("https://"))
    }
}

/// A stored file's metadata: its digest and how it was encrypted.
#[derive(Debug, Default)]
struct FileHeader {
    digest: Option<String>,
    envelope: Option<Envelope>,
}

/// Characters escaped in an object path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn quote_path(path: &str) -> String {
    path.split('/')
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The JSON envelope GCS and Azure keep in `encryptiondata`.
fn encryption_data(envelope: &Envelope, algorithm: &str) -> String {
    json!({
        "EncryptionMode": "FullBlob",
        "WrappedContentKey": {
            "KeyId": "symmKey1",
            "EncryptedKey": envelope.key,
            "Algorithm": "AES_CBC_256",
        },
        "EncryptionAgent": {"Protocol": "1.0", "EncryptionAlgorithm": algorithm},
        "ContentEncryptionIV": envelope.iv,
        "KeyWrappingMetadata": {"EncryptionLibrary": "Java 5.3.0"},
    })
    .to_string()
}

fn envelope_from_encryption_data(data: &str, matdesc: Option<String>) -> Result<Envelope> {
    let value: Value = serde_json::from_str(data)
        .map_err(|_| protocol("a stage file's encryptiondata is not JSON"))?;
    let key = value["WrappedContentKey"]["EncryptedKey"].as_str();
    let iv = value["ContentEncryptionIV"].as_str();
    match (key, iv) {
        (Some(key), Some(iv)) => Ok(Envelope {
            key: key.to_owned(),
            iv: iv.to_owned(),
            matdesc: matdesc.unwrap_or_default(),
        }),
        _ => Err(protocol(
            "a stage file's encryptiondata lacks the wrapped key or the IV",
        )),
    }
}

/// The headers a V4 presigned URL signs (`X-Goog-SignedHeaders`), lower-case; `None`
/// for a URL without the list.
fn signed_headers(url: &str) -> Option<Vec<String>> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k.eq_ignore_ascii_case("X-Goog-SignedHeaders"))
        .map(|(_, v)| {
            v.split(';')
                .map(|h| h.trim().to_ascii_lowercase())
                .collect()
        })
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue)> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Error::internal(format!("header name {name}")))?;
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| protocol(format!("a value for {name} that is not a header value")))?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// The SDK's error for a stage transfer, scrubbed, with a kind.
fn s3_error<E>(
    client: &SnowflakeClient,
    what: &str,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    let text = client.secrets().scrub(&format!(
        "Snowflake stage {what} (S3): {}",
        aws_sdk_s3::error::DisplayErrorContext(&err)
    ));
    let kind = match (status, code.as_deref()) {
        (_, Some("ExpiredToken" | "InvalidAccessKeyId" | "SignatureDoesNotMatch")) => {
            ErrorKind::Auth
        }
        (Some(403), _) => ErrorKind::Forbidden,
        (Some(404), _) => ErrorKind::NotFound,
        (Some(429) | Some(503), _) | (_, Some("SlowDown")) => {
            ErrorKind::RateLimited { retry_after: None }
        }
        (Some(s), _) if s >= 500 => ErrorKind::Unavailable,
        (None, _) => ErrorKind::Unavailable,
        _ => ErrorKind::Protocol,
    };
    Error::new(kind, moodbridge_core::redact::cap(&text, 600))
        .with_connector(PLATFORM)
        .with_hint(match kind {
            ErrorKind::Auth | ErrorKind::Forbidden => {
                "the stage credentials Snowflake handed out were refused or expired: run the transfer again"
            }
            _ => "the stage's storage failed the request; it is retried",
        })
}

/// A client for one stage location.
enum Storage {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    },
    /// GCS: presigned URLs, or an access token on the JSON-less XML API.
    Gcs {
        base: String,
        token: Option<SecretString>,
        prefix: String,
    },
    Azure {
        base: String,
        sas: SecretString,
        prefix: String,
    },
}

impl Storage {
    fn of(client: &SnowflakeClient, info: &StageInfo) -> Result<Storage> {
        let (bucket, prefix) = info.bucket_and_prefix();
        client.secrets().remember(
            info.creds
                .values()
                .map(|s| s.expose_secret().to_owned())
                .chain(info.presigned_url.clone()),
        );
        match info.location_type.as_str() {
            "S3" => {
                let credentials = Credentials::new(
                    info.cred("AWS_KEY_ID").unwrap_or_default(),
                    info.cred("AWS_SECRET_KEY").unwrap_or_default(),
                    info.cred("AWS_TOKEN").map(str::to_owned),
                    None,
                    "snowflake-stage",
                );
                let mut config = aws_sdk_s3::config::Builder::new()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new(
                        info.region.clone().unwrap_or_else(|| "us-east-1".into()),
                    ))
                    .credentials_provider(credentials)
                    .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled());
                if let Some(url) = info.endpoint_url() {
                    config = config.endpoint_url(url).force_path_style(true);
                } else if let Some(host) = &info.end_point {
                    config = config.endpoint_url(format!("https://{host}"));
                }
                Ok(Storage::S3 {
                    client: aws_sdk_s3::Client::from_conf(config.build()),
                    bucket,
                    prefix,
                })
            }
            "GCS" => {
                let host = match (info.endpoint_url(), &info.end_point) {
                    (Some(url), _) => url.trim_end_matches('/').to_owned(),
                    (None, Some(host)) => format!("https://{host}"),
                    (None, None) => "https://storage.googleapis.com".to_owned(),
                };
                Ok(Storage::Gcs {
                    base: format!("{host}/{}", quote_path(&bucket)),
                    token: info
                        .cred("GCS_ACCESS_TOKEN")
                        .map(|t| SecretString::from(t.to_owned())),
                    prefix,
                })
            }
            "AZURE" => {
                let account = info.storage_account.clone().ok_or_else(|| {
                    protocol("Snowflake's Azure stage info has no storageAccount")
                })?;
                let base = match (info.endpoint_url(), &info.end_point) {
                    (Some(url), _) => format!("{}/{account}", url.trim_end_matches('/')),
                    (None, host) => {
                        let host = host.as_deref().unwrap_or("blob.core.windows.net");
                        let host = host.strip_prefix("blob.").unwrap_or(host);
                        format!("https://{account}.blob.{host}")
                    }
                };
                let sas = info
                    .cred("AZURE_SAS_TOKEN")
                    .map(|s| s.trim_start_matches('?').to_owned())
                    .ok_or_else(|| protocol("Snowflake's Azure stage info has no SAS token"))?;
                Ok(Storage::Azure {
                    base: format!("{base}/{}", quote_path(&bucket)),
                    sas: SecretString::from(sas),
                    prefix,
                })
            }
            other => Err(Error::new(
                ErrorKind::Unsupported,
                format!("Snowflake put the stage on {other}, which this client cannot reach"),
            )
            .with_connector(PLATFORM)
            .with_hint(
                "a LOCAL_FS stage is a path on the server's machine: use a stage on S3, GCS or Azure",
            )),
        }
    }

    fn url(&self, name: &str) -> String {
        match self {
            Storage::S3 { .. } => String::new(),
            Storage::Gcs { base, prefix, .. } => {
                format!("{base}/{}", quote_path(&format!("{prefix}{name}")))
            }
            Storage::Azure {
                base, prefix, sas, ..
            } => format!(
                "{base}/{}?{}",
                quote_path(&format!("{prefix}{name}")),
                sas.expose_secret()
            ),
        }
    }

    fn auth(&self, request: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder> {
        Ok(match self {
            Storage::Gcs {
                token: Some(token), ..
            } => {
                let (name, value) = header(
                    "authorization",
                    &format!("Bearer {}", token.expose_secret()),
                )?;
                request.header(name, value)
            }
            _ => request,
        })
    }

    /// The stored file's header, `None` when there is none (or it cannot be asked, as
    /// with a presigned URL).
    async fn head(&self, client: &SnowflakeClient, name: &str) -> Result<Option<FileHeader>> {
        match self {
            Storage::S3 {
                client: s3,
                bucket,
                prefix,
            } => {
                let key = format!("{prefix}{name}");
                match s3.head_object().bucket(bucket).key(&key).send().await {
                    Ok(out) => {
                        let meta = out.metadata().cloned().unwrap_or_default();
                        Ok(Some(s3_header(&meta)))
                    }
                    Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
                        Ok(None)
                    }
                    Err(e) => Err(s3_error(client, "HEAD", e)),
                }
            }
            Storage::Gcs { token: None, .. } => Ok(None),
            Storage::Gcs { .. } | Storage::Azure { .. } => {
                let request = self.auth(client.http().head(self.url(name)))?;
                let response = request
                    .send()
                    .await
                    .map_err(|e| error::transport(client.secrets(), "stage HEAD", &e))?;
                let status = response.status().as_u16();
                if status == 404 {
                    return Ok(None);
                }
                if !(200..300).contains(&status) {
                    return Err(error::http(client.secrets(), "stage HEAD", status, ""));
                }
                Ok(Some(self.header_of(response.headers())?))
            }
        }
    }

    fn header_of(&self, headers: &HeaderMap) -> Result<FileHeader> {
        let (meta, digest) = match self {
            Storage::Azure { .. } => ("x-ms-meta-", "x-ms-meta-sfcdigest"),
            _ => ("x-goog-meta-", "x-goog-meta-sfc-digest"),
        };
        let envelope = match header_text(headers, &format!("{meta}encryptiondata")) {
            Some(data) if data != "null" => Some(envelope_from_encryption_data(
                &data,
                header_text(headers, &format!("{meta}matdesc")),
            )?),
            _ => None,
        };
        Ok(FileHeader {
            digest: header_text(headers, digest),
            envelope,
        })
    }

    /// Store `body` as `name` (at `presigned` for a presigned GCS upload). A presigned
    /// URL that signs `x-goog-if-generation-match` makes a non-overwriting upload
    /// create-only, and a file already there is [`TransferStatus::Skipped`].
    #[allow(clippy::too_many_arguments)]
    async fn put(
        &self,
        client: &SnowflakeClient,
        name: &str,
        presigned: Option<&str>,
        body: Bytes,
        digest: &str,
        envelope: Option<&Envelope>,
        compression: &str,
        overwrite: bool,
    ) -> Result<TransferStatus> {
        match self {
            Storage::S3 {
                client: s3,
                bucket,
                prefix,
            } => {
                let mut meta = HashMap::from([("sfc-digest".to_owned(), digest.to_owned())]);
                if let Some(e) = envelope {
                    meta.insert("x-amz-key".into(), e.key.clone());
                    meta.insert("x-amz-iv".into(), e.iv.clone());
                    meta.insert("x-amz-matdesc".into(), e.matdesc.clone());
                }
                s3.put_object()
                    .bucket(bucket)
                    .key(format!("{prefix}{name}"))
                    .content_type("application/octet-stream")
                    .set_metadata(Some(meta))
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(|e| s3_error(client, "PUT", e))?;
                Ok(TransferStatus::Uploaded)
            }
            Storage::Gcs { .. } | Storage::Azure { .. } => {
                let azure = matches!(self, Storage::Azure { .. });
                let mut headers = HeaderMap::new();
                let mut add = |name: &str, value: &str| -> Result<()> {
                    let (n, v) = header(name, value)?;
                    headers.insert(n, v);
                    Ok(())
                };
                if azure {
                    add("x-ms-blob-type", "BlockBlob")?;
                    add("x-ms-meta-sfcdigest", digest)?;
                    if let Some(e) = envelope {
                        add(
                            "x-ms-meta-encryptiondata",
                            &encryption_data(e, "AES_CBC_128"),
                        )?;
                        add("x-ms-meta-matdesc", &e.matdesc)?;
                    }
                } else {
                    // GCS would unzip a gzip-encoded file on download; the drivers leave
                    // Content-Encoding empty for gzip and name the others.
                    if compression != "GZIP" && compression != "NONE" {
                        add("content-encoding", &compression.to_ascii_lowercase())?;
                    }
                    // A V4 presigned URL lists the x-goog-* headers it allows; GCS
                    // refuses any other. A URL without the list allows them all.
                    let signed = presigned.and_then(signed_headers);
                    let allows = |header: &str| {
                        signed
                            .as_ref()
                            .is_none_or(|list| list.iter().any(|h| h == header))
                    };
                    if !overwrite
                        && signed.as_ref().is_some_and(|list| {
                            list.iter().any(|h| h == "x-goog-if-generation-match")
                        })
                    {
                        add("x-goog-if-generation-match", "0")?;
                    }
                    if allows("x-goog-meta-sfc-digest") {
                        add("x-goog-meta-sfc-digest", digest)?;
                    }
                    if let Some(e) = envelope {
                        if !allows("x-goog-meta-encryptiondata") || !allows("x-goog-meta-matdesc") {
                            return Err(Error::new(
                                ErrorKind::Unsupported,
                                "the stage's presigned URL does not allow the encryption metadata, so the file could not be read back",
                            )
                            .with_connector(PLATFORM)
                            .with_hint("ask Snowflake support about GCS access tokens for this stage, or use a stage with server-side encryption (ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE'))"));
                        }
                        add(
                            "x-goog-meta-encryptiondata",
                            &encryption_data(e, "AES_CBC_256"),
                        )?;
                        add("x-goog-meta-matdesc", &e.matdesc)?;
                    }
                }
                let headers_sent_conditional = headers.contains_key("x-goog-if-generation-match");
                let url = presigned.map_or_else(|| self.url(name), str::to_owned);
                let request = self.auth(client.http().put(url))?;
                let response = request
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| error::transport(client.secrets(), "stage upload", &e))?;
                let status = response.status().as_u16();
                if status == 412 && headers_sent_conditional {
                    return Ok(TransferStatus::Skipped);
                }
                if !(200..300).contains(&status) {
                    let text = response.text().await.unwrap_or_default();
                    return Err(error::http(client.secrets(), "stage upload", status, &text));
                }
                Ok(TransferStatus::Uploaded)
            }
        }
    }

    /// Read `name` (from `presigned` when given): its bytes and header.
    async fn get(
        &self,
        client: &SnowflakeClient,
        name: &str,
        presigned: Option<&str>,
    ) -> Result<(Vec<u8>, FileHeader)> {
        match self {
            Storage::S3 {
                client: s3,
                bucket,
                prefix,
            } => {
                let out = s3
                    .get_object()
                    .bucket(bucket)
                    .key(format!("{prefix}{name}"))
                    .send()
                    .await
                    .map_err(|e| s3_error(client, "GET", e))?;
                let header = s3_header(&out.metadata().cloned().unwrap_or_default());
                let body = out.body.collect().await.map_err(|e| {
                    Error::unavailable(client.secrets().scrub(&format!(
                        "Snowflake stage GET (S3): the body broke off: {e}"
                    )))
                    .with_connector(PLATFORM)
                })?;
                Ok((body.to_vec(), header))
            }
            Storage::Gcs { .. } | Storage::Azure { .. } => {
                let url = presigned.map_or_else(|| self.url(name), str::to_owned);
                let response = self
                    .auth(client.http().get(url))?
                    .send()
                    .await
                    .map_err(|e| error::transport(client.secrets(), "stage download", &e))?;
                let status = response.status().as_u16();
                let header = self.header_of(response.headers())?;
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| error::transport(client.secrets(), "stage download", &e))?;
                if !(200..300).contains(&status) {
                    return Err(error::http(
                        client.secrets(),
                        "stage download",
                        status,
                        &String::from_utf8_lossy(&body),
                    ));
                }
                Ok((body.to_vec(), header))
            }
        }
    }
}

fn s3_header(meta: &HashMap<String, String>) -> FileHeader {
    let envelope = match (meta.get("x-amz-key"), meta.get("x-amz-iv")) {
        (Some(key), Some(iv)) => Some(Envelope {
            key: key.clone(),
            iv: iv.clone(),
            matdesc: meta.get("x-amz-matdesc").cloned().unwrap_or_default(),
        }),
        _ => None,
    };
    FileHeader {
        digest: meta.get("sfc-digest").cloned(),
        envelope,
    }
}

/// The statement that asks where to put `name` in `stage`.
fn put_sql(name: &str, stage: &str, options: &PutOptions) -> String {
    let mut sql = format!("PUT 'file:///{name}' {stage}");
    if !options.auto_compress {
        sql.push_str(" AUTO_COMPRESS=FALSE");
    }
    if options.overwrite {
        sql.push_str(" OVERWRITE=TRUE");
    }
    sql
}

/// The file as stored: its name, compression and bytes (gzipped here when asked).
fn prepare(
    name: &str,
    data: Vec<u8>,
    auto_compress: bool,
) -> Result<(String, &'static str, &'static str, Vec<u8>)> {
    match detect_compression(name, &data[..data.len().min(4)])? {
        Some(kind) => Ok((name.to_owned(), kind, kind, data)),
        None if auto_compress => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder
                .write_all(&data)
                .and_then(|()| encoder.finish())
                .map(|gz| (format!("{name}.gz"), "NONE", "GZIP", gz))
                .map_err(|e| Error::internal(format!("gzip of {name}: {e}")))
        }
        None => Ok((name.to_owned(), "NONE", "NONE", data)),
    }
}

impl SnowflakeClient {
    /// Upload `data` to `stage` as a file named `name`, as `PUT` does: compressed with
    /// gzip unless it already is (see [`PutOptions`]), digested, encrypted on the
    /// client for an internal stage, and sent straight to the stage's storage (S3, GCS
    /// or Azure) with the short-lived credentials Snowflake hands out. Without
    /// `overwrite`, a file the stage already holds with the same content is skipped.
    ///
    /// ```no_run
    /// use connector_snowflake::{PutOptions, TransferStatus};
    /// # async fn run(client: connector_snowflake::SnowflakeClient) -> moodbridge_core::Result<()> {
    /// let outcome = client
    ///     .put_bytes("accounts-0001.csv", b"1,Acme\n".to_vec(), "@load/accounts/", PutOptions::new())
    ///     .await?;
    /// assert_eq!(outcome.target, "accounts-0001.csv.gz");
    /// assert_eq!(outcome.status, TransferStatus::Uploaded);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A name or stage reference that cannot stand in a statement
    /// ([`InvalidInput`](ErrorKind::InvalidInput)); a compression Snowflake cannot load,
    /// or a stage on a storage this client cannot reach
    /// ([`Unsupported`](ErrorKind::Unsupported)); Snowflake's error for the statement (an
    /// unknown stage is [`NotFound`](ErrorKind::NotFound)); the storage's refusal
    /// (expired credentials are [`Auth`](ErrorKind::Auth)).
    pub async fn put_bytes(
        &self,
        name: &str,
        data: Vec<u8>,
        stage: &str,
        options: PutOptions,
    ) -> Result<PutOutcome> {
        check_name(name)?;
        check_stage(stage)?;
        let source_size = data.len() as u64;
        let (target, source_compression, target_compression, stored) =
            prepare(name, data, options.auto_compress)?;
        let sql = put_sql(name, stage, &options);
        let mut answer = self.transfer_command(&sql, "UPLOAD").await?;
        let info = StageInfo::from_json(&answer["stageInfo"])?;
        let material = match &answer["encryptionMaterial"] {
            Value::Object(_) => Some(Material::from_json(&answer["encryptionMaterial"])?),
            Value::Array(list) => list.first().map(Material::from_json).transpose()?,
            _ => None,
        };
        if let Some(m) = &material {
            self.secrets().remember([m.master_key_text()]);
        }
        let overwrite = answer["overwrite"].as_bool().unwrap_or(options.overwrite);
        let storage = Storage::of(self, &info)?;
        // A presigned URL names one object: the file asked about. A file renamed here
        // (gzipped) needs the URL of its new name, asked for as the drivers do.
        let mut presigned = info.presigned_url.clone();
        let names_target = presigned.as_deref().is_some_and(|url| {
            url::Url::parse(url).is_ok_and(|u| u.path().ends_with(&format!("/{target}")))
        });
        if presigned.is_some() && !names_target {
            answer = self
                .transfer_command(&put_sql(&target, stage, &options), "UPLOAD")
                .await?;
            presigned = StageInfo::from_json(&answer["stageInfo"])?.presigned_url;
            self.secrets().remember(presigned.iter());
        }
        let target_size = stored.len() as u64;
        let digest = STANDARD.encode(digest::digest(&SHA256, &stored));
        let mut outcome = PutOutcome {
            source: name.to_owned(),
            target: target.clone(),
            source_size,
            target_size,
            source_compression: source_compression.to_owned(),
            target_compression: target_compression.to_owned(),
            status: TransferStatus::Uploaded,
            encrypted: material.is_some(),
        };
        if !overwrite
            && let Some(existing) = storage.head(self, &target).await?
            && existing.digest.as_deref() == Some(digest.as_str())
        {
            outcome.status = TransferStatus::Skipped;
            return Ok(outcome);
        }
        let mut payload = stored;
        let envelope = material
            .as_ref()
            .map(|m| m.encrypt(&mut payload))
            .transpose()?;
        let payload = Bytes::from(payload);
        outcome.status = self
            .policy()
            .call_as(Operation::new("snowflake.stage_put"), || {
                storage.put(
                    self,
                    &target,
                    presigned.as_deref(),
                    payload.clone(),
                    &digest,
                    envelope.as_ref(),
                    target_compression,
                    overwrite,
                )
            })
            .await?;
        Ok(outcome)
    }

    /// Upload the file at `path` to `stage`, as [`put_bytes`](Self::put_bytes) does (it
    /// is read whole into memory; the name in the stage is the file's own).
    ///
    /// # Errors
    /// The file cannot be read ([`InvalidInput`](ErrorKind::InvalidInput)); as
    /// [`put_bytes`](Self::put_bytes).
    pub async fn put_file(
        &self,
        path: &std::path::Path,
        stage: &str,
        options: PutOptions,
    ) -> Result<PutOutcome> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                invalid(
                    format!("{} has no file name", path.display()),
                    "give the path of a file",
                )
            })?
            .to_owned();
        let data = tokio::fs::read(path).await.map_err(|e| {
            invalid(
                format!("reading {}: {e}", path.display()),
                "check that the file exists and is readable",
            )
        })?;
        self.put_bytes(&name, data, stage, options).await
    }

    /// Download the files under `stage` (a stage reference, optionally with a path), as
    /// `GET` does, decrypted, into memory.
    ///
    /// ```no_run
    /// # async fn run(client: connector_snowflake::SnowflakeClient) -> moodbridge_core::Result<()> {
    /// for file in client.get("@load/accounts/").await? {
    ///     println!("{} ({} bytes)", file.name, file.data.len());
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`put_bytes`](Self::put_bytes); a file that does not decrypt with the stage's
    /// key ([`Integrity`](ErrorKind::Integrity)).
    pub async fn get(&self, stage: &str) -> Result<Vec<StagedFile>> {
        check_stage(stage)?;
        let answer = self
            .transfer_command(
                &format!("GET {stage} 'file:///moodbridge-get/'"),
                "DOWNLOAD",
            )
            .await?;
        let info = StageInfo::from_json(&answer["stageInfo"])?;
        let storage = Storage::of(self, &info)?;
        let names: Vec<String> = answer["src_locations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let urls: Vec<Option<String>> = answer["presignedUrls"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        self.secrets().remember(urls.iter().flatten());
        let materials: Vec<Option<Material>> = match &answer["encryptionMaterial"] {
            Value::Array(list) => list
                .iter()
                .map(|m| (!m.is_null()).then(|| Material::from_json(m)).transpose())
                .collect::<Result<_>>()?,
            Value::Object(_) => vec![Some(Material::from_json(&answer["encryptionMaterial"])?)],
            _ => Vec::new(),
        };
        self.secrets()
            .remember(materials.iter().flatten().map(Material::master_key_text));
        let mut files = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let url = urls.get(i).cloned().flatten();
            let (mut data, header) = self
                .policy()
                .call_as(Operation::new("snowflake.stage_get"), || {
                    storage.get(self, name, url.as_deref())
                })
                .await?;
            let material = materials.get(i).or(materials.first()).cloned().flatten();
            match (&header.envelope, material) {
                (Some(envelope), Some(material)) => material.decrypt(envelope, &mut data)?,
                (Some(_), None) => {
                    return Err(protocol(format!(
                        "{name} is encrypted, and Snowflake sent no key for it"
                    )));
                }
                (None, _) => {}
            }
            files.push(StagedFile {
                name: name.clone(),
                data: Bytes::from(data),
            });
        }
        Ok(files)
    }

    /// Run a `PUT` / `GET` and check it is the transfer expected; its answer's data.
    async fn transfer_command(&self, sql: &str, command: &str) -> Result<Value> {
        let reply = self.run(sql, &[], Map::new()).await?;
        let data = reply.data;
        if data["command"].as_str() != Some(command) {
            return Err(protocol(format!(
                "Snowflake answered a {command} statement without the transfer it asks for"
            )));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_detected_by_name_then_by_magic() {
        assert_eq!(detect_compression("a.csv.gz", b"").unwrap(), Some("GZIP"));
        assert_eq!(detect_compression("a.json.zst", b"").unwrap(), Some("ZSTD"));
        assert_eq!(detect_compression("a", b"PAR1").unwrap(), Some("PARQUET"));
        assert_eq!(detect_compression("a", b"ORC\0").unwrap(), Some("ORC"));
        assert_eq!(detect_compression("a.csv", b"1,2\n").unwrap(), None);
        let err = detect_compression("a.csv.xz", b"").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    }

    #[test]
    fn files_are_gzipped_unless_compressed_or_asked_not_to() {
        let (name, from, to, body) = prepare("a.csv", b"1,2\n".to_vec(), true).unwrap();
        assert_eq!((name.as_str(), from, to), ("a.csv.gz", "NONE", "GZIP"));
        assert_eq!(&body[..2], &[0x1f, 0x8b]);
        let (name, _, to, body) = prepare("a.csv", b"1,2\n".to_vec(), false).unwrap();
        assert_eq!(
            (name.as_str(), to, body.as_slice()),
            ("a.csv", "NONE", &b"1,2\n"[..])
        );
        let (name, _, to, _) = prepare("a.parquet", b"PAR1....".to_vec(), true).unwrap();
        assert_eq!((name.as_str(), to), ("a.parquet", "PARQUET"));
    }

    #[test]
    fn names_and_stages_that_would_break_the_statement_are_refused() {
        for bad in ["", "a'b", "a b", "dir/a.csv", "..", "a;drop"] {
            assert_eq!(
                check_name(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
        check_name("accounts-0001.parquet").unwrap();
        for bad in ["load", "@", "@a b", "@a';--"] {
            assert!(check_stage(bad).is_err(), "{bad:?}");
        }
        for good in ["@~", "@%ACCOUNT", "@load/accounts/", "@CASES.PUBLIC.LOAD"] {
            check_stage(good).unwrap();
        }
        assert_eq!(
            put_sql(
                "a.csv",
                "@s/p/",
                &PutOptions::new().overwrite(true).auto_compress(false)
            ),
            "PUT 'file:///a.csv' @s/p/ AUTO_COMPRESS=FALSE OVERWRITE=TRUE"
        );
    }

    #[test]
    fn a_v4_presigned_url_names_the_headers_it_signs() {
        assert_eq!(
            signed_headers(
                "https://storage.googleapis.com/b/o?X-Goog-SignedHeaders=host%3Bx-goog-meta-sfc-digest&X-Goog-Signature=ab"
            ),
            Some(vec!["host".to_owned(), "x-goog-meta-sfc-digest".to_owned()])
        );
        assert_eq!(
            signed_headers("http://127.0.0.1:1/fs_bucket/a.csv.gz"),
            None
        );
    }

    #[test]
    fn stage_locations_split_into_bucket_and_prefix() {
        let info = StageInfo::from_json(&json!({
            "locationType": "S3",
            "location": "sfc-bucket/stages/abc",
            "creds": {"AWS_KEY_ID": "AKIA", "AWS_SECRET_KEY": "s", "AWS_TOKEN": ""},
            "endPoint": "s3-fips.us-east-1.amazonaws.com",
        }))
        .unwrap();
        assert_eq!(
            info.bucket_and_prefix(),
            ("sfc-bucket".to_owned(), "stages/abc/".to_owned())
        );
        assert_eq!(info.cred("AWS_TOKEN"), None);
        assert_eq!(info.endpoint_url(), None);
        assert_eq!(quote_path("a b/c+d.csv"), "a%20b/c%2Bd.csv");
    }

    #[test]
    fn encryption_data_round_trips_in_the_drivers_json() {
        let envelope = Envelope {
            key: "a2V5".into(),
            iv: "aXY=".into(),
            matdesc: "{}".into(),
        };
        let data = encryption_data(&envelope, "AES_CBC_256");
        let value: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(value["EncryptionMode"], "FullBlob");
        assert_eq!(
            envelope_from_encryption_data(&data, Some("{}".into())).unwrap(),
            envelope
        );
    }
}
