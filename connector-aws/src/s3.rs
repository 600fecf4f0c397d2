//! Amazon S3 (and S3-compatible stores) as an [`ObjectStore`].
//!
//! - **Uploads**: a body that fits in one part goes up in one `PutObject`; a larger one as
//!   a multipart upload whose parts (default 8 MiB, at most 10,000 — the part size grows
//!   with a known length) are uploaded by `concurrency` tasks in parallel. Memory is
//!   bounded by part size × (concurrency + 1), whatever the object's size. Every request
//!   carries the SHA-256 of its bytes (`x-amz-checksum-sha256`), which S3 verifies; on any
//!   failure — or when the upload future is dropped — the multipart upload is aborted so
//!   no parts are left behind.
//! - **Downloads**: a whole object larger than one part is read as parallel ranged `GET`s
//!   of the same version (`If-Match` on its ETag), yielded in order. The ranges in flight
//!   start at 4 and grow (up to `download_concurrency`, default 16) while they bring more
//!   throughput; the bytes held for ranges ahead of the reader never exceed
//!   `download_buffer` (default 24 MiB), and a range whose body breaks off is resumed
//!   from the byte it reached.
//! - Server-side encryption (SSE-S3, SSE-KMS with a key id), storage class, path-style or
//!   virtual-host addressing, custom endpoints (MinIO, Ceph, moto …).
//! - Credentials: the standard AWS chain (environment, profile, SSO, web identity, ECS,
//!   IMDS) by default, static keys, or keys held in a MoodBridge
//!   [`CredentialStore`](moodbridge_core::CredentialStore) (re-read as they rotate).
//!
//! Errors map to core kinds: `NoSuchKey`/404 → NotFound, `SlowDown`/503 → RateLimited
//! (temporary), `AccessDenied` → Forbidden, `InvalidAccessKeyId`/`SignatureDoesNotMatch` →
//! Auth, `PreconditionFailed`/412 → Conflict, `BadDigest` and checksum mismatches →
//! Integrity. Every request goes through the store's [`Policy`] (the integration's, when
//! built from config): the SDK's own retries are off, so retries, the circuit breaker, the
//! rate limiter, the `remote_call` span and the call metrics are the SDK-wide ones.
//! Operation names are `s3.<operation>` (`s3.put_object`, `s3.upload_part` …). The
//! default policy ([`default_policy_config`]) retries temporary errors up to 3 attempts.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier,
    ServerSideEncryption, StorageClass,
};
use base64::Engine;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use moodbridge_core::integration::{Capabilities, Capability, HealthReport, PlatformIntegration};
use moodbridge_core::raw::{
    DownloadPlan, PartReader, kind_of_status, ranged_download, upload_parts, with_progress,
};
use moodbridge_core::redact::Secrets;
use moodbridge_core::resilience::{Operation, Policy, PolicyConfig};
use moodbridge_core::storage::{
    ByteRange, ByteStream, DeleteFailure, GetOptions, GetResult, ObjectKey, ObjectMeta,
    ObjectStore, PresignMethod, PresignedRequest, PutOptions, PutResult, TransferProgress,
    byte_stream, sha256,
};
use moodbridge_core::{Error, ErrorKind, Result};
use secrecy::SecretString;

/// Sets the store's storage class and server-side encryption on a write request (the
/// SDK's request builders share these method names but no trait).
macro_rules! write_settings {
    ($req:expr, $settings:expr) => {{
        let req = $req.set_storage_class($settings.storage_class.clone());
        match &$settings.encryption {
            None => req,
            Some(Encryption::S3Managed) => req.server_side_encryption(ServerSideEncryption::Aes256),
            Some(Encryption::Kms { key_id }) => req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(key_id.clone()),
        }
    }};
}

/// S3's smallest part (all parts but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts per upload.
pub const MAX_PARTS: u64 = 10_000;
/// S3's largest object (5 TiB).
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// Default part size (8 MiB) for uploads and ranged downloads.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// Default number of parts in flight per upload.
pub const DEFAULT_CONCURRENCY: usize = 4;
pub use moodbridge_core::raw::{
    DEFAULT_DOWNLOAD_BUFFER, DEFAULT_DOWNLOAD_CONCURRENCY, MIN_DOWNLOAD_BUFFER,
};
/// Largest single `CopyObject` (5 GiB); larger copies go part by part.
pub const MAX_COPY_OBJECT: u64 = 5 * 1024 * 1024 * 1024;

/// The connector kind, the `connector` of every error.
const PLATFORM: &str = "s3";

/// Operation names: `s3.<operation>`, the `operation` of spans, metrics and errors.
pub use moodbridge_core::observe::op::s3 as op;

/// Server-side encryption of written objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// SSE-S3 (`AES256`, keys managed by S3).
    S3Managed,
    /// SSE-KMS, with a key id or ARN (the account's default `aws/s3` key when `None`).
    Kms {
        /// The KMS key.
        key_id: Option<String>,
    },
}

/// Where the store's AWS credentials come from (the crate's
/// [`AwsCredentials`](crate::sdk::AwsCredentials)).
pub use crate::sdk::AwsCredentials as S3Credentials;

/// Settings of an [`S3ObjectStore`]; made by [`S3ObjectStore::builder`].
#[derive(Debug, Clone)]
pub struct S3Builder {
    id: Option<String>,
    bucket: String,
    region: Option<String>,
    endpoint: Option<String>,
    path_style: bool,
    credentials: S3Credentials,
    part_size: u64,
    concurrency: usize,
    download_concurrency: usize,
    download_buffer: u64,
    encryption: Option<Encryption>,
    storage_class: Option<StorageClass>,
    max_attempts: u32,
    copy_threshold: u64,
    parallel_downloads: bool,
    policy: Option<Policy>,
}

impl S3Builder {
    /// The integration id (`s3:<name>`); `s3:<bucket>` by default.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The AWS region (otherwise from the environment / profile; `us-east-1` for a custom
    /// endpoint without one).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// A custom endpoint (`http://127.0.0.1:9000` for MinIO or moto).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-host style
    /// (`bucket.endpoint/key`); most S3-compatible stores need it.
    pub fn path_style(mut self, yes: bool) -> Self {
        self.path_style = yes;
        self
    }

    /// Where credentials come from.
    pub fn credentials(mut self, credentials: S3Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Fixed keys.
    pub fn static_credentials(
        self,
        access_key_id: impl Into<String>,
        secret_access_key: SecretString,
    ) -> Self {
        self.credentials(S3Credentials::Static {
            access_key_id: access_key_id.into(),
            secret_access_key,
            session_token: None,
        })
    }

    /// Part size of multipart uploads and ranged downloads (at least 5 MiB; raised for
    /// objects of known size that would need more than 10,000 parts). Default 8 MiB.
    pub fn part_size(mut self, bytes: u64) -> Self {
        self.part_size = bytes;
        self
    }

    /// Parts in flight per upload. Default 4.
    pub fn concurrency(mut self, parts: usize) -> Self {
        self.concurrency = parts;
        self
    }

    /// Ranged `GET`s in flight at most per download. A download starts with up to 4
    /// and adds more while they bring more throughput. Default 16; 1 reads one stream.
    pub fn download_concurrency(mut self, ranges: usize) -> Self {
        self.download_concurrency = ranges;
        self
    }

    /// Bytes a download holds at most, in blocks of its own, for the ranges ahead of the
    /// one being read (at least 1 MiB). Default 24 MiB. See
    /// [`ranged_download`] for what else is held.
    pub fn download_buffer(mut self, bytes: u64) -> Self {
        self.download_buffer = bytes;
        self
    }

    /// Server-side encryption of written objects.
    pub fn encryption(mut self, encryption: Encryption) -> Self {
        self.encryption = Some(encryption);
        self
    }

    /// Storage class of written objects (`STANDARD_IA`, `GLACIER_IR`, …).
    pub fn storage_class(mut self, class: impl AsRef<str>) -> Self {
        self.storage_class = Some(StorageClass::from(class.as_ref()));
        self
    }

    /// Whether whole objects larger than one part are downloaded as parallel ranged
    /// `GET`s (default, and what S3 recommends for throughput) or as one stream.
    /// Turn off for servers whose ranged reads cost as much as whole ones (moto reads the
    /// whole object for every range).
    pub fn parallel_downloads(mut self, yes: bool) -> Self {
        self.parallel_downloads = yes;
        self
    }

    /// Objects larger than this are copied part by part (`UploadPartCopy`, server side,
    /// parts of this size); default and largest 5 GiB, S3's `CopyObject` limit.
    pub fn multipart_copy_threshold(mut self, bytes: u64) -> Self {
        self.copy_threshold = bytes.clamp(MIN_PART_SIZE, MAX_COPY_OBJECT);
        self
    }

    /// Attempts per request of the default policy's retry (default 3); ignored when a
    /// [`policy`](Self::policy) is given.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The policy every request goes through (default: [`default_policy_config`] with
    /// [`max_attempts`](Self::max_attempts), under the store's id).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    fn check(&self) -> Result<()> {
        check_bucket_name(&self.bucket)?;
        if self.part_size < MIN_PART_SIZE || self.part_size > MAX_PART_SIZE {
            return Err(Error::config(format!(
                "S3 part size {} is outside S3's limits (5 MiB to 5 GiB)",
                self.part_size
            ))
            .with_hint("use a part size of at least 5 MiB (8 MiB is the default)"));
        }
        if self.concurrency == 0 {
            return Err(Error::config("S3 concurrency is 0")
                .with_hint("use at least 1 part in flight (default 4)"));
        }
        moodbridge_core::raw::check_download_settings(
            "S3",
            self.download_concurrency,
            self.download_buffer,
        )?;
        if self.max_attempts == 0 {
            return Err(Error::config("S3 max_attempts is 0").with_hint("use 1 for no retries"));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(Error::config(format!("S3 endpoint {endpoint:?} is not an http(s) URL"))
                .with_hint("give a URL such as \"https://s3.eu-west-1.amazonaws.com\" or \"http://127.0.0.1:9000\""));
        }
        Ok(())
    }

    /// Checks the settings (bucket name, part size …) and builds the store. No request
    /// is made; credentials are resolved on first use.
    pub async fn build(self) -> Result<S3ObjectStore> {
        self.check()?;
        let id = self
            .id
            .clone()
            .unwrap_or_else(|| format!("s3:{}", self.bucket));
        moodbridge_core::integration::check_id(&id, PLATFORM)?;
        let sdk = crate::sdk::load_config(
            self.region.as_deref(),
            self.endpoint.is_some(),
            &self.credentials,
        )
        .await;
        // Retries are the policy's: one attempt per SDK call.
        let mut config = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(self.path_style)
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled());
        // Whatever the provider hands the signer is remembered, so that no error made of
        // an answer can repeat it.
        let secrets = Secrets::new();
        if let Some(provider) = crate::sdk::remembering(&sdk, &secrets) {
            config = config.credentials_provider(provider);
        }
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint.clone());
        }
        let client = Client::from_conf(config.build());
        let name = format!("s3:{}", self.bucket);
        let policy = match &self.policy {
            Some(policy) => policy.clone(),
            None => Policy::from_config(
                id.clone(),
                &moodbridge_core::raw::transfer_policy_config(self.max_attempts),
            )?,
        };
        Ok(S3ObjectStore {
            inner: Arc::new(Inner {
                id,
                name,
                client,
                policy,
                settings: self,
                secrets,
            }),
        })
    }
}

/// The default policy of S3 requests: up to 3 attempts (S3's own SDK default) with
/// backoff from 100 ms within 30 s, temporary errors only (5xx, `SlowDown`, timeouts,
/// connection failures); 5 minutes per attempt (a part of up to 5 GiB).
pub fn default_policy_config() -> PolicyConfig {
    moodbridge_core::raw::transfer_policy_config(3)
}

/// Checks an S3 bucket name against S3's naming rules (general purpose buckets), so a
/// bad name fails before any request.
///
/// ```
/// use connector_aws::s3::check_bucket_name;
/// assert!(check_bucket_name("moodbridge-documents").is_ok());
/// let err = check_bucket_name("MoodBridge_Docs").unwrap_err();
/// assert!(err.to_string().contains("MoodBridge_Docs"));
/// ```
pub fn check_bucket_name(name: &str) -> Result<()> {
    let problem = if !(3..=63).contains(&name.len()) {
        Some("must be 3 to 63 characters long")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        Some("may hold only lower-case letters, digits, '.' and '-'")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric()
        || !name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
    {
        Some("must start and end with a letter or digit")
    } else if name.contains("..") || name.contains(".-") || name.contains("-.") {
        Some("may not hold '..', '.-' or '-.'")
    } else if name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok()) {
        Some("may not be formatted as an IP address")
    } else if name.starts_with("xn--")
        || name.starts_with("sthree-")
        || name.ends_with("-s3alias")
        || name.ends_with("--ol-s3")
    {
        Some("uses a prefix or suffix S3 reserves (xn--, sthree-, -s3alias, --ol-s3)")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(Error::config(format!("S3 bucket name {name:?} {why}"))
            .with_connector(PLATFORM)
            .with_hint("see S3's bucket naming rules; e.g. \"moodbridge-documents\"")),
    }
}

/// S3 as an [`ObjectStore`] (and a [`PlatformIntegration`] with the object-storage
/// capability). Cheap to clone.
#[derive(Clone)]
pub struct S3ObjectStore {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    name: String,
    client: Client,
    policy: Policy,
    settings: S3Builder,
    /// The credentials the client has signed with, scrubbed from every error.
    secrets: Secrets,
}

impl fmt::Debug for S3ObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ObjectStore")
            .field("id", &self.inner.id)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// Maps an SDK error to a core [`Error`] naming the operation and key.
fn map_err<E>(
    secrets: &Secrets,
    operation: &'static str,
    key: Option<&str>,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let what = match key {
        Some(key) => format!("S3 {operation} of {key:?}"),
        None => format!("S3 {operation}"),
    };
    crate::sdk::map_sdk_error(secrets, PLATFORM, what, err, service_kind, hint)
}

fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "check the bucket and key (keys are case-sensitive)",
        ErrorKind::Forbidden => {
            "the credentials lack a permission for this bucket or key (check the IAM policy, bucket policy and KMS key policy)"
        }
        ErrorKind::Auth => {
            "check the access key id and secret (and the clock: S3 rejects skewed signatures)"
        }
        ErrorKind::RateLimited { .. } => {
            "S3 is throttling: lower the concurrency or spread keys over more prefixes"
        }
        ErrorKind::Integrity => {
            "the bytes S3 received did not match their checksum; nothing was stored — retry"
        }
        ErrorKind::Conflict => "the object changed meanwhile; read it again",
        _ => "",
    }
}

fn service_kind(status: u16, code: Option<&str>) -> ErrorKind {
    match code {
        Some("NoSuchKey" | "NoSuchBucket" | "NoSuchUpload" | "NotFound") => {
            return ErrorKind::NotFound;
        }
        Some(
            "SlowDown"
            | "RequestLimitExceeded"
            | "TooManyRequests"
            | "Throttling"
            | "ThrottlingException",
        ) => {
            return ErrorKind::RateLimited { retry_after: None };
        }
        Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem" | "InvalidObjectState") => {
            return ErrorKind::Forbidden;
        }
        Some(
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired",
        ) => {
            return ErrorKind::Auth;
        }
        Some("PreconditionFailed" | "ConditionalRequestConflict" | "OperationAborted") => {
            return ErrorKind::Conflict;
        }
        Some(
            "BadDigest"
            | "InvalidDigest"
            | "XAmzContentSHA256Mismatch"
            | "XAmzContentChecksumMismatch",
        ) => {
            return ErrorKind::Integrity;
        }
        Some("InvalidRange") => return ErrorKind::InvalidInput,
        Some("InternalError" | "ServiceUnavailable" | "RequestTimeout") => {
            return ErrorKind::Unavailable;
        }
        _ => {}
    }
    // Throttling is told by its error code (above); a bare 503 (no code: a HEAD answer,
    // a gateway) is an outage.
    kind_of_status(status)
}

fn b64(digest: [u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest)
}

fn system_time(t: Option<&aws_smithy_types::DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

/// The part size for an upload of `size` bytes (if known): the configured size, raised
/// (in whole MiB) so the object fits in 10,000 parts.
///
/// ```
/// use connector_aws::s3::part_size_for;
/// assert_eq!(part_size_for(8 << 20, Some(1 << 30)), 8 << 20);
/// assert_eq!(part_size_for(8 << 20, Some(100 << 30)), 11 << 20); // 100 GiB / 10,000 parts
/// ```
pub fn part_size_for(configured: u64, size: Option<u64>) -> u64 {
    let mut part = configured.max(MIN_PART_SIZE);
    if let Some(size) = size {
        let needed = size.div_ceil(MAX_PARTS);
        if needed > part {
            part = needed.next_multiple_of(1024 * 1024);
        }
    }
    part.min(MAX_PART_SIZE)
}

/// Aborts a multipart upload unless disarmed: on failure, and when the upload future is
/// dropped (cancellation) — then from a task on the current runtime.
struct AbortGuard {
    client: Client,
    policy: Policy,
    secrets: Secrets,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl AbortGuard {
    /// Completes the upload with `parts`; on failure aborts it.
    async fn complete(
        mut self,
        parts: Vec<CompletedPart>,
    ) -> Result<aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput>
    {
        let request = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        let done = self
            .policy
            .call_as(op::COMPLETE_MULTIPART_UPLOAD, || {
                let request = request.clone();
                async {
                    request.send().await.map_err(|e| {
                        map_err(&self.secrets, "CompleteMultipartUpload", Some(&self.key), e)
                    })
                }
            })
            .await;
        match done {
            Ok(out) => {
                self.armed = false;
                Ok(out)
            }
            Err(e) => {
                self.abort_now().await;
                Err(e)
            }
        }
    }

    async fn abort_now(mut self) {
        self.armed = false;
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id);
        let result = self
            .policy
            .call_as(op::ABORT_MULTIPART_UPLOAD, || {
                let request = request.clone();
                async {
                    request.send().await.map_err(|e| {
                        map_err(&self.secrets, "AbortMultipartUpload", Some(&self.key), e)
                    })
                }
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(bucket = %self.bucket, key = %self.key, error = %e, "aborting a failed multipart upload failed; a bucket lifecycle rule (AbortIncompleteMultipartUpload) will remove its parts");
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(bucket = %self.bucket, key = %self.key, upload_id = %self.upload_id, "multipart upload dropped outside a runtime: not aborted");
            return;
        };
        let guard = AbortGuard {
            client: self.client.clone(),
            policy: self.policy.clone(),
            secrets: self.secrets.clone(),
            bucket: std::mem::take(&mut self.bucket),
            key: std::mem::take(&mut self.key),
            upload_id: std::mem::take(&mut self.upload_id),
            armed: false,
        };
        tracing::debug!(bucket = %guard.bucket, key = %guard.key, "upload cancelled: aborting its multipart upload");
        handle.spawn(guard.abort_now());
    }
}

impl S3ObjectStore {
    /// A builder for a store on `bucket`.
    pub fn builder(bucket: impl Into<String>) -> S3Builder {
        S3Builder {
            id: None,
            bucket: bucket.into(),
            region: None,
            endpoint: None,
            path_style: false,
            credentials: S3Credentials::DefaultChain,
            part_size: DEFAULT_PART_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            download_concurrency: DEFAULT_DOWNLOAD_CONCURRENCY,
            download_buffer: DEFAULT_DOWNLOAD_BUFFER,
            encryption: None,
            storage_class: None,
            max_attempts: 3,
            copy_threshold: MAX_COPY_OBJECT,
            parallel_downloads: true,
            policy: None,
        }
    }

    /// The SDK client, for what the trait does not cover (bucket policies, versioning,
    /// lifecycle rules …).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.inner.settings.bucket
    }

    /// Creates the bucket (for tests, examples and first-time setup); an existing bucket
    /// owned by the caller is not an error.
    pub async fn create_bucket(&self) -> Result<()> {
        let request = self.inner.client.create_bucket().bucket(self.bucket());
        self.inner
            .policy
            .call_as(op::CREATE_BUCKET, || {
                let request = request.clone();
                async {
                    match request.send().await {
                        Ok(_) => Ok(()),
                        Err(SdkError::ServiceError(ctx))
                            if matches!(ctx.err().code(), Some("BucketAlreadyOwnedByYou")) =>
                        {
                            Ok(())
                        }
                        Err(e) => Err(map_err(&self.inner.secrets, "CreateBucket", None, e)),
                    }
                }
            })
            .await
    }

    async fn put_single(
        &self,
        key: &ObjectKey,
        data: Bytes,
        options: &PutOptions,
    ) -> Result<PutResult> {
        let digest = sha256(&data);
        let s = &self.inner.settings;
        let size = data.len() as u64;
        // A request with a body cannot be cloned: each attempt builds its own.
        let out = self
            .inner
            .policy
            .call_as(op::PUT_OBJECT, || {
                let req = self
                    .inner
                    .client
                    .put_object()
                    .bucket(&s.bucket)
                    .key(key.as_str())
                    .content_length(size as i64)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .checksum_sha256(b64(digest))
                    .set_content_type(options.content_type.clone())
                    .set_metadata(Some(options.metadata.clone().into_iter().collect()))
                    .body(SdkBody::from(data.clone()));
                let req = write_settings!(req, s);
                async {
                    req.send().await.map_err(|e| {
                        map_err(&self.inner.secrets, "PutObject", Some(key.as_str()), e)
                    })
                }
            })
            .await?;
        if let Some(progress) = &options.progress {
            progress(TransferProgress {
                bytes: size,
                total: options.size,
            });
        }
        Ok(PutResult {
            key: key.clone(),
            size,
            etag: out.e_tag,
            sha256: digest,
        })
    }

    /// Starts a multipart upload of `key`; the guard aborts it unless disarmed.
    async fn begin_upload(
        &self,
        key: &ObjectKey,
        content_type: Option<String>,
        metadata: &std::collections::BTreeMap<String, String>,
        sha256_parts: bool,
    ) -> Result<AbortGuard> {
        let s = &self.inner.settings;
        let create = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(&s.bucket)
            .key(key.as_str())
            .set_checksum_algorithm(sha256_parts.then_some(ChecksumAlgorithm::Sha256))
            .set_content_type(content_type)
            .set_metadata(Some(metadata.clone().into_iter().collect()));
        let create = write_settings!(create, s);
        // Not retried after a timeout: a second upload would be left behind unaborted.
        let created = self
            .inner
            .policy
            .call_as(
                Operation::new(op::CREATE_MULTIPART_UPLOAD).non_idempotent(),
                || {
                    let create = create.clone();
                    async {
                        create.send().await.map_err(|e| {
                            map_err(
                                &self.inner.secrets,
                                "CreateMultipartUpload",
                                Some(key.as_str()),
                                e,
                            )
                        })
                    }
                },
            )
            .await?;
        let upload_id = created.upload_id.ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                format!("S3 CreateMultipartUpload of {key:?} returned no upload id"),
            )
            .with_connector(PLATFORM)
        })?;
        Ok(AbortGuard {
            client: self.inner.client.clone(),
            policy: self.inner.policy.clone(),
            secrets: self.inner.secrets.clone(),
            bucket: s.bucket.clone(),
            key: key.as_str().to_owned(),
            upload_id,
            armed: true,
        })
    }

    async fn put_multipart(
        &self,
        key: &ObjectKey,
        mut reader: PartReader<'_>,
        first: [Bytes; 2],
        options: &PutOptions,
    ) -> Result<PutResult> {
        let guard = self
            .begin_upload(key, options.content_type.clone(), &options.metadata, true)
            .await?;
        let upload_id = guard.upload_id.clone();
        let result = self
            .upload_parts(key, &upload_id, &mut reader, first, options)
            .await;
        let parts = match result {
            Ok(parts) => parts,
            Err(e) => {
                guard.abort_now().await;
                return Err(e);
            }
        };
        let (size, digest) = match reader.finish(options) {
            Ok(d) => d,
            Err(e) => {
                guard.abort_now().await;
                return Err(e);
            }
        };
        let out = guard.complete(parts).await?;
        Ok(PutResult {
            key: key.clone(),
            size,
            etag: out.e_tag,
            sha256: digest,
        })
    }

    async fn upload_parts(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        reader: &mut PartReader<'_>,
        first: [Bytes; 2],
        options: &PutOptions,
    ) -> Result<Vec<CompletedPart>> {
        let s = &self.inner.settings;
        upload_parts(
            reader,
            first.into(),
            s.concurrency,
            MAX_PARTS,
            options,
            |index, part| {
                let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
                let client = self.inner.client.clone();
                let bucket = s.bucket.clone();
                let upload_id = upload_id.to_owned();
                let key_text = key.as_str().to_owned();
                let policy = self.inner.policy.clone();
                let secrets = self.inner.secrets.clone();
                async move {
                    let checksum = b64(sha256(&part));
                    let out = policy
                        .call_as(op::UPLOAD_PART, || {
                            let request = client
                                .upload_part()
                                .bucket(&bucket)
                                .key(&key_text)
                                .upload_id(&upload_id)
                                .part_number(number)
                                .content_length(part.len() as i64)
                                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                                .checksum_sha256(checksum.clone())
                                .body(SdkBody::from(part.clone()));
                            let (key_text, secrets) = (&key_text, &secrets);
                            async move {
                                request.send().await.map_err(|e| {
                                    map_err(secrets, "UploadPart", Some(key_text), e)
                                        .with_context("part", number)
                                })
                            }
                        })
                        .await?;
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag)
                        .checksum_sha256(out.checksum_sha256.unwrap_or(checksum))
                        .build())
                }
            },
        )
        .await
    }

    fn head_meta(
        key: &str,
        out: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
    ) -> ObjectMeta {
        ObjectMeta {
            key: key.to_owned(),
            size: out
                .content_length
                .and_then(|l| u64::try_from(l).ok())
                .unwrap_or(0),
            content_type: out.content_type.clone(),
            etag: out.e_tag.clone(),
            last_modified: system_time(out.last_modified.as_ref()),
            metadata: out
                .metadata
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }
    }

    async fn head_if(&self, key: &ObjectKey, if_match: Option<String>) -> Result<ObjectMeta> {
        let request = self
            .inner
            .client
            .head_object()
            .bucket(self.bucket())
            .key(key.as_str())
            .set_if_match(if_match);
        let out = self
            .inner
            .policy
            .call_as(op::HEAD_OBJECT, || {
                let request = request.clone();
                async {
                    request.send().await.map_err(|e| {
                        map_err(&self.inner.secrets, "HeadObject", Some(key.as_str()), e)
                    })
                }
            })
            .await?;
        Ok(Self::head_meta(key.as_str(), &out))
    }

    /// One ranged (or whole) `GetObject`, streamed.
    async fn get_one(
        &self,
        key: &ObjectKey,
        range: Option<String>,
        if_match: Option<String>,
    ) -> Result<(aws_sdk_s3::operation::get_object::GetObjectOutput, SdkBody)> {
        let request = self
            .inner
            .client
            .get_object()
            .bucket(self.bucket())
            .key(key.as_str())
            .set_range(range)
            .set_if_match(if_match);
        // The policy covers the request up to the response's headers; the body then
        // streams to the caller.
        let mut out = self
            .inner
            .policy
            .call_as(op::GET_OBJECT, || {
                let request = request.clone();
                async {
                    request.send().await.map_err(|e| {
                        map_err(&self.inner.secrets, "GetObject", Some(key.as_str()), e)
                    })
                }
            })
            .await?;
        let body = std::mem::replace(
            &mut out.body,
            SdkBody::new(aws_smithy_types::body::SdkBody::empty()),
        );
        Ok((out, body))
    }
}

fn sdk_body_stream(body: SdkBody, key: String) -> ByteStream {
    byte_stream(futures::stream::unfold(Some(body), move |state| {
        let key = key.clone();
        async move {
            let mut body = state?;
            match body.try_next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                Ok(None) => None,
                Err(e) => Some((
                    Err(std::io::Error::other(format!(
                        "S3 download of {key:?} failed: {e}"
                    ))),
                    None,
                )),
            }
        }
    }))
}

/// Parses `bytes a-b/total` of a `Content-Range` header.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((
        a.parse().ok()?,
        b.parse::<u64>().ok()? + 1,
        total.parse().ok()?,
    ))
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<PutResult> {
        options.check()?;
        if let Some(size) = options.size
            && size > MAX_OBJECT_SIZE
        {
            return Err(Error::invalid_input(format!(
                "{key} is {size} bytes; S3 objects are at most 5 TiB"
            ))
            .with_connector(PLATFORM));
        }
        let part_size = part_size_for(self.inner.settings.part_size, options.size);
        let mut reader = PartReader::new(key, body, part_size);
        let first = reader.next_part().await?.unwrap_or_default();
        let second = if first.len() as u64 == part_size {
            reader.next_part().await?
        } else {
            None
        };
        match second {
            None => {
                reader.finish(&options)?;
                self.put_single(key, first, &options).await
            }
            Some(second) => {
                self.put_multipart(key, reader, [first, second], &options)
                    .await
            }
        }
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        options.check()?;
        let part = self.inner.settings.part_size;
        if options.range != ByteRange::All {
            let (out, body) = self
                .get_one(
                    key,
                    Some(options.range.http_header()),
                    options.if_match.clone(),
                )
                .await?;
            let (start, end, total) = out
                .content_range
                .as_deref()
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Protocol,
                        format!("S3 GetObject of {key:?}: ranged answer without a Content-Range"),
                    )
                    .with_connector(PLATFORM)
                })?;
            let meta = ObjectMeta {
                key: key.as_str().to_owned(),
                size: total,
                content_type: out.content_type.clone(),
                etag: out.e_tag.clone(),
                last_modified: system_time(out.last_modified.as_ref()),
                metadata: out
                    .metadata
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            };
            let body = with_progress(
                sdk_body_stream(body, key.as_str().to_owned()),
                options.progress.clone(),
                Some(end - start),
            );
            return Ok(GetResult {
                meta,
                range: (start, end),
                body,
            });
        }
        let meta = self.head_if(key, options.if_match.clone()).await?;
        let size = meta.size;
        let settings = &self.inner.settings;
        if size <= part || settings.download_concurrency == 1 || !settings.parallel_downloads {
            let (_, body) = self.get_one(key, None, meta.etag.clone()).await?;
            let body = with_progress(
                sdk_body_stream(body, key.as_str().to_owned()),
                options.progress.clone(),
                Some(size),
            );
            return Ok(GetResult {
                meta,
                range: (0, size),
                body,
            });
        }
        // Parallel ranged reads of this version, yielded in order; each request through
        // the policy up to its response's headers, the body streamed.
        let store = self.clone();
        let etag = meta.etag.clone();
        let owned_key = key.clone();
        let plan = DownloadPlan::new(part)
            .max_concurrency(settings.download_concurrency)
            .buffer(settings.download_buffer);
        let parts = ranged_download(0, size, plan, move |start, end| {
            let (store, key, etag) = (store.clone(), owned_key.clone(), etag.clone());
            async move {
                let range = ByteRange::Bounded { start, end }.http_header();
                let (_, body) = store.get_one(&key, Some(range), etag).await?;
                Ok(sdk_body_stream(body, key.as_str().to_owned()))
            }
        });
        let body = with_progress(parts, options.progress.clone(), Some(size));
        Ok(GetResult {
            meta,
            range: (0, size),
            body,
        })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        self.head_if(key, None).await
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        let request = self
            .inner
            .client
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(prefix);
        // Page by page, each page one call through the policy; `None` once the last
        // page (no continuation token) has been read.
        futures::stream::try_unfold(Some(None::<String>), move |token| {
            let request = request.clone();
            async move {
                let Some(token) = token else {
                    return Ok::<_, Error>(None);
                };
                let page =
                    self.inner
                        .policy
                        .call_as(op::LIST_OBJECTS, || {
                            let request = request.clone().set_continuation_token(token.clone());
                            async {
                                request.send().await.map_err(|e| {
                                    map_err(&self.inner.secrets, "ListObjectsV2", None, e)
                                })
                            }
                        })
                        .await?;
                let next = page
                    .next_continuation_token
                    .clone()
                    .filter(|_| page.is_truncated == Some(true))
                    .map(Some);
                Ok(Some((page, next)))
            }
        })
        .map_ok(|page| {
            futures::stream::iter(page.contents.unwrap_or_default().into_iter().map(|o| {
                Ok(ObjectMeta {
                    key: o.key.unwrap_or_default(),
                    size: o.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    content_type: None,
                    etag: o.e_tag,
                    last_modified: system_time(o.last_modified.as_ref()),
                    metadata: Default::default(),
                })
            }))
        })
        .try_flatten()
        .boxed()
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let request = self
            .inner
            .client
            .delete_object()
            .bucket(self.bucket())
            .key(key.as_str());
        self.inner
            .policy
            .call_as(op::DELETE_OBJECT, || {
                let request = request.clone();
                async {
                    request.send().await.map_err(|e| {
                        map_err(&self.inner.secrets, "DeleteObject", Some(key.as_str()), e)
                    })
                }
            })
            .await?;
        Ok(())
    }

    async fn delete_many(&self, keys: &[ObjectKey]) -> Result<Vec<DeleteFailure>> {
        let mut failures = Vec::new();
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(k.as_str())
                        .build()
                        .map_err(|e| Error::internal(format!("S3 DeleteObjects: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| Error::internal(format!("S3 DeleteObjects: {e}")))?;
            let request = self
                .inner
                .client
                .delete_objects()
                .bucket(self.bucket())
                .delete(delete);
            let out = self
                .inner
                .policy
                .call_as(op::DELETE_OBJECTS, || {
                    let request = request.clone();
                    async {
                        request
                            .send()
                            .await
                            .map_err(|e| map_err(&self.inner.secrets, "DeleteObjects", None, e))
                    }
                })
                .await?;
            for err in out.errors.unwrap_or_default() {
                let key_text = err.key.clone().unwrap_or_default();
                let Ok(key) = ObjectKey::new(key_text) else {
                    continue;
                };
                let code = err.code.unwrap_or_default();
                let kind = service_kind(0, Some(&code));
                let error = Error::new(
                    kind,
                    format!(
                        "S3 DeleteObjects of {key:?} failed: {code} {}",
                        err.message.unwrap_or_default()
                    ),
                )
                .with_connector(PLATFORM);
                failures.push(DeleteFailure { key, error });
            }
        }
        Ok(failures)
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        let meta = self.head(from).await?;
        let s = &self.inner.settings;
        let source = format!("{}/{}", s.bucket, encode_copy_source(from.as_str()));
        if meta.size <= s.copy_threshold {
            let req = self
                .inner
                .client
                .copy_object()
                .bucket(&s.bucket)
                .key(to.as_str())
                .copy_source(&source);
            let req = write_settings!(req, s);
            self.inner
                .policy
                .call_as(op::COPY_OBJECT, || {
                    let req = req.clone();
                    async {
                        req.send().await.map_err(|e| {
                            map_err(&self.inner.secrets, "CopyObject", Some(to.as_str()), e)
                        })
                    }
                })
                .await?;
            return Ok(());
        }
        self.copy_multipart(to, &meta, &source).await
    }

    async fn presign(
        &self,
        key: &ObjectKey,
        method: PresignMethod,
        expires_in: Duration,
    ) -> Result<PresignedRequest> {
        let config = PresigningConfig::expires_in(expires_in).map_err(|e| {
            Error::invalid_input(format!("presigned URL expiry {expires_in:?}: {e}"))
                .with_connector(PLATFORM)
                .with_hint("S3 presigned URLs last at most 7 days")
        })?;
        let s = &self.inner.settings;
        let request = match method {
            PresignMethod::Get => self
                .inner
                .client
                .get_object()
                .bucket(&s.bucket)
                .key(key.as_str())
                .presigned(config)
                .await
                .map_err(|e| {
                    map_err(
                        &self.inner.secrets,
                        "Presign GetObject",
                        Some(key.as_str()),
                        e,
                    )
                })?,
            PresignMethod::Put => {
                let req = self
                    .inner
                    .client
                    .put_object()
                    .bucket(&s.bucket)
                    .key(key.as_str());
                write_settings!(req, s)
                    .presigned(config)
                    .await
                    .map_err(|e| {
                        map_err(
                            &self.inner.secrets,
                            "Presign PutObject",
                            Some(key.as_str()),
                            e,
                        )
                    })?
            }
        };
        Ok(PresignedRequest {
            method,
            url: request.uri().to_owned(),
            headers: request
                .headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            expires_at: SystemTime::now() + expires_in,
        })
    }
}

/// Percent-encodes a key for `x-amz-copy-source` (every byte but unreserved ones and `/`).
fn encode_copy_source(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl S3ObjectStore {
    /// Copies an object over 5 GiB with `UploadPartCopy`, part by part.
    async fn copy_multipart(&self, to: &ObjectKey, meta: &ObjectMeta, source: &str) -> Result<()> {
        let s = &self.inner.settings;
        let client = &self.inner.client;
        let guard = self
            .begin_upload(to, meta.content_type.clone(), &meta.metadata, false)
            .await?;
        let upload_id = guard.upload_id.clone();
        let part = part_size_for(s.copy_threshold, Some(meta.size));
        let mut parts = Vec::new();
        let mut start = 0u64;
        let mut number = 1;
        while start < meta.size {
            let end = (start + part).min(meta.size);
            let request = client
                .upload_part_copy()
                .bucket(&s.bucket)
                .key(to.as_str())
                .upload_id(&upload_id)
                .part_number(number)
                .copy_source(source)
                .copy_source_range(format!("bytes={start}-{}", end - 1))
                .set_copy_source_if_match(meta.etag.clone());
            let out = self
                .inner
                .policy
                .call_as(op::UPLOAD_PART_COPY, || {
                    let request = request.clone();
                    async {
                        request.send().await.map_err(|e| {
                            map_err(&self.inner.secrets, "UploadPartCopy", Some(to.as_str()), e)
                        })
                    }
                })
                .await;
            let out = match out {
                Ok(out) => out,
                Err(e) => {
                    guard.abort_now().await;
                    return Err(e);
                }
            };
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.copy_part_result.and_then(|r| r.e_tag))
                    .build(),
            );
            start = end;
            number += 1;
        }
        guard.complete(parts).await?;
        Ok(())
    }
}

#[async_trait]
impl PlatformIntegration for S3ObjectStore {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn kind(&self) -> &str {
        PLATFORM
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none().with(Capability::ObjectStorage))
    }

    /// `HeadBucket`: reachable, credentials valid, bucket present and accessible.
    async fn health_check(&self) -> HealthReport {
        let start = std::time::Instant::now();
        let request = self.inner.client.head_bucket().bucket(self.bucket());
        let result = self
            .inner
            .policy
            .call_as(op::HEAD_BUCKET, || {
                let request = request.clone();
                async {
                    request
                        .send()
                        .await
                        .map_err(|e| map_err(&self.inner.secrets, "HeadBucket", None, e))
                }
            })
            .await;
        HealthReport::from_result(start.elapsed(), result)
    }

    fn interfaces(self: Arc<Self>) -> moodbridge_core::integration::Interfaces {
        moodbridge_core::integration::Interfaces::new().with::<dyn ObjectStore>(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["abc", "moodbridge-docs", "a.b.c", "123bucket"] {
            assert!(check_bucket_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Upper",
            "under_score",
            "-start",
            "end-",
            "a..b",
            "192.168.1.1",
            "xn--abc",
            "x-s3alias",
            &"a".repeat(64),
        ] {
            let err = check_bucket_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn part_sizes_respect_s3_limits() {
        assert_eq!(part_size_for(1, None), MIN_PART_SIZE);
        assert_eq!(part_size_for(DEFAULT_PART_SIZE, None), DEFAULT_PART_SIZE);
        let size = 5 * 1024 * 1024 * 1024 * 1024u64; // 5 TiB
        let part = part_size_for(DEFAULT_PART_SIZE, Some(size));
        assert!(size.div_ceil(part) <= MAX_PARTS);
        assert!(part <= MAX_PART_SIZE);
    }

    #[test]
    fn error_codes_map_to_kinds() {
        assert_eq!(service_kind(404, Some("NoSuchKey")), ErrorKind::NotFound);
        assert_eq!(
            service_kind(503, Some("SlowDown")),
            ErrorKind::RateLimited { retry_after: None }
        );
        assert_eq!(
            service_kind(403, Some("AccessDenied")),
            ErrorKind::Forbidden
        );
        assert_eq!(service_kind(412, None), ErrorKind::Conflict);
        assert_eq!(service_kind(400, Some("BadDigest")), ErrorKind::Integrity);
        assert_eq!(
            service_kind(403, Some("SignatureDoesNotMatch")),
            ErrorKind::Auth
        );
        assert!(Error::new(service_kind(503, None), "x").is_temporary());
    }

    #[test]
    fn copy_source_is_percent_encoded() {
        assert_eq!(encode_copy_source("a b/ü+%.pdf"), "a%20b/%C3%BC%2B%25.pdf");
        assert_eq!(parse_content_range("bytes 0-9/1000"), Some((0, 10, 1000)));
    }

    #[test]
    fn debug_hides_secrets() {
        let creds = S3Credentials::Static {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG"),
            session_token: Some(SecretString::from("token-secret")),
        };
        let shown = format!("{creds:?}");
        assert!(shown.contains("AKIAEXAMPLE"));
        assert!(
            !shown.contains("wJalr") && !shown.contains("token-secret"),
            "{shown}"
        );
    }
}
