//! Azure Blob Storage as an [`ObjectStore`], on the official `azure_storage_blob` crate.
//!
//! - **Uploads**: a body that fits in one block goes up in one `Put Blob`; a larger one as
//!   blocks staged by `concurrency` tasks in parallel (default 8 MiB, at most 50,000 — the
//!   block size grows with a known length) then committed with `Put Block List`. Memory is
//!   bounded by block size × (concurrency + 1). Every request carries the MD5 of its bytes
//!   (`Content-MD5`, the transactional checksum Blob Storage verifies natively). A failed or
//!   cancelled upload commits nothing: staged blocks that are never committed are
//!   discarded by the service (after a week) and never become visible.
//! - **Downloads**: ranged `GET`s, streamed. A read larger than one block is parallel
//!   ranges of the same version (`If-Match` on its ETag), yielded in order: 4 in flight at
//!   first, more (up to `download_concurrency`, default 16) while they bring more
//!   throughput; the bytes held for ranges ahead of the reader never exceed
//!   `download_buffer` (default 24 MiB), and a range whose body breaks off is resumed
//!   from the byte it reached.
//! - Auth: Shared Key (account key or connection string; a signing policy of ours in the
//!   client's pipeline), a SAS token, or Entra ID through any `azure_core`
//!   `TokenCredential` (`azure_identity`).
//! - Presigned URLs: a service SAS signed with the account key, or with Entra ID a user
//!   delegation SAS signed with a user delegation key fetched from the service (cached).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{NoFormat, RequestContent, Url, XmlFormat};
use azure_storage_blob::models::{
    BlobClientDeleteOptions, BlobClientDownloadOptions, BlobClientGetPropertiesOptions,
    BlobClientGetPropertiesResultHeaders, BlobContainerClientListBlobsOptions,
    BlockBlobClientCommitBlockListOptions, BlockBlobClientStageBlockOptions,
    BlockBlobClientUploadOptions, BlockLookupList, HttpRange, ListBlobsResponse,
};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions,
};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use moodbridge_core::integration::{Capabilities, Capability, HealthReport, PlatformIntegration};
use moodbridge_core::raw::{
    DownloadPlan, PartReader, ranged_download, upload_parts, with_progress,
};
use moodbridge_core::redact::Secrets;
use moodbridge_core::resilience::{Policy, PolicyConfig};
use moodbridge_core::storage::{
    ByteStream, GetOptions, GetResult, ObjectKey, ObjectMeta, ObjectStore, PresignMethod,
    PresignedRequest, PutOptions, PutResult, TransferProgress, byte_stream,
};
use moodbridge_core::{Error, ErrorKind, Result};
use secrecy::{ExposeSecret, SecretString};

use crate::auth::{
    ConnectionString, SasPermission, UserDelegationKey, blob_sas, sas_time, user_delegation_sas,
};
pub use crate::storage::AzureCredentials;
use crate::storage::{StorageClient, storage_client, storage_error};

/// A Blob SDK error as a core error (see [`storage_error`]).
fn map_err(
    secrets: &Secrets,
    request: &'static str,
    key: Option<&str>,
    err: azure_core::Error,
) -> Error {
    storage_error("Azure Blob", PLATFORM, secrets, request, key, err)
}

const PLATFORM: &str = "azure-blob";

/// Operation names: `azure_blob.<operation>`, the `operation` of spans, metrics and errors.
pub use moodbridge_core::observe::op::azure_blob as op;
/// Default block size (8 MiB).
pub const DEFAULT_BLOCK_SIZE: u64 = 8 * 1024 * 1024;
/// Most blocks per blob.
pub const MAX_BLOCKS: u64 = 50_000;
/// Largest block (4,000 MiB).
pub const MAX_BLOCK_SIZE: u64 = 4000 * 1024 * 1024;
/// Default blocks in flight per upload.
pub const DEFAULT_CONCURRENCY: usize = 4;
pub use crate::storage::DEFAULT_API_VERSION;
pub use moodbridge_core::raw::{
    DEFAULT_DOWNLOAD_BUFFER, DEFAULT_DOWNLOAD_CONCURRENCY, MIN_DOWNLOAD_BUFFER,
};

/// Checks a container name against Blob Storage's rules (3–63 characters of lower-case
/// letters, digits and single hyphens, starting and ending with a letter or digit).
///
/// ```
/// use connector_azure::blob::check_container_name;
/// assert!(check_container_name("case-documents").is_ok());
/// assert!(check_container_name("Case_Documents").is_err());
/// ```
pub fn check_container_name(name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!("Azure container name {name:?} is not valid"))
            .with_connector(PLATFORM)
            .with_hint("use 3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit"))
    }
}

/// Settings of an [`AzureBlobStore`]; made by [`AzureBlobStore::builder`].
#[derive(Debug, Clone)]
pub struct AzureBlobBuilder {
    id: Option<String>,
    endpoint: Option<String>,
    container: String,
    credentials: Option<AzureCredentials>,
    block_size: u64,
    concurrency: usize,
    download_concurrency: usize,
    download_buffer: u64,
    api_version: String,
    max_attempts: u32,
    policy: Option<Policy>,
    policies: Vec<Arc<dyn azure_core::http::policies::Policy>>,
    parallel_downloads: bool,
    http_client: Option<Arc<dyn azure_core::http::HttpClient>>,
}

impl AzureBlobBuilder {
    /// The integration id (`azure-blob:<name>`); `azure-blob:<container>` by default.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The Blob service endpoint (`https://<account>.blob.core.windows.net`, or
    /// `http://127.0.0.1:10000/devstoreaccount1` for Azurite).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Endpoint and credentials from a connection string.
    pub fn connection_string(mut self, connection_string: &ConnectionString) -> Self {
        self.endpoint = Some(connection_string.blob_endpoint.to_string());
        self.credentials = Some(AzureCredentials::from_connection_string(connection_string));
        self
    }

    /// How requests are authorized.
    pub fn credentials(mut self, credentials: AzureCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Block size of staged uploads and ranged downloads (default 8 MiB; raised for
    /// blobs of known size that would need more than 50,000 blocks).
    pub fn block_size(mut self, bytes: u64) -> Self {
        self.block_size = bytes;
        self
    }

    /// Blocks in flight per upload (default 4).
    pub fn concurrency(mut self, blocks: usize) -> Self {
        self.concurrency = blocks;
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

    /// The service API version (`x-ms-version`); default 2025-11-05 (emulators lag the
    /// newest).
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = version.into();
        self
    }

    /// Adds a policy to every try of every request (custom headers, tracing, fault
    /// injection in tests …). It runs before the Shared Key signature, so headers it sets
    /// are signed.
    pub fn per_try_policy(mut self, policy: Arc<dyn azure_core::http::policies::Policy>) -> Self {
        self.policies.push(policy);
        self
    }

    /// Whether reads larger than one block are parallel ranged `GET`s (default) or one
    /// streamed `GET` on one connection (least memory: one network buffer).
    pub fn parallel_downloads(mut self, yes: bool) -> Self {
        self.parallel_downloads = yes;
        self
    }

    /// The HTTP client every request goes through (default: a `reqwest` client with
    /// automatic decompression off, shared by all the store's blob clients). Give your own
    /// for a proxy, a private CA or custom timeouts — e.g. a `reqwest::Client` wrapped in
    /// an `Arc`.
    pub fn http_client(mut self, client: Arc<dyn azure_core::http::HttpClient>) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Attempts per request of the default policy's retry (default 3); ignored when a
    /// [`policy`](Self::policy) is given.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The policy every request goes through (default: [`default_policy_config`] with
    /// [`max_attempts`](Self::max_attempts)). The client's own retry is off: retries,
    /// breaking and limiting are the policy's.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Checks the settings and builds the store (no request is made).
    pub fn build(self) -> Result<AzureBlobStore> {
        check_container_name(&self.container)?;
        if self.block_size == 0 || self.block_size > MAX_BLOCK_SIZE {
            return Err(Error::config(format!(
                "Azure block size {} is outside 1 byte .. 4000 MiB",
                self.block_size
            ))
            .with_connector(PLATFORM));
        }
        if self.concurrency == 0 {
            return Err(Error::config("Azure concurrency is 0")
                .with_hint("use at least 1 block in flight (default 4)"));
        }
        moodbridge_core::raw::check_download_settings(
            "Azure",
            self.download_concurrency,
            self.download_buffer,
        )?;
        let StorageClient {
            url: base,
            options: client_options,
            token,
            secrets,
        } = storage_client(
            "Azure Blob store",
            PLATFORM,
            self.endpoint.as_deref(),
            &self.container,
            self.credentials.as_ref(),
            self.http_client.clone(),
            &self.policies,
        )?;
        let credentials = self
            .credentials
            .clone()
            .ok_or_else(|| Error::internal("checked"))?;
        let container = BlobContainerClient::new(
            base.clone(),
            token.clone(),
            Some(BlobContainerClientOptions {
                client_options: client_options.clone(),
                version: self.api_version.clone(),
            }),
        )
        .map_err(|e| map_err(&secrets, "create client", None, e))?;
        let id = self
            .id
            .clone()
            .unwrap_or_else(|| format!("{PLATFORM}:{}", self.container));
        moodbridge_core::integration::check_id(&id, PLATFORM)?;
        let policy = match &self.policy {
            Some(policy) => policy.clone(),
            None => Policy::from_config(
                id.clone(),
                &moodbridge_core::raw::transfer_policy_config(self.max_attempts),
            )?,
        };
        Ok(AzureBlobStore {
            inner: Arc::new(Inner {
                policy,
                id,
                name: format!("azure-blob:{}", self.container),
                base,
                container,
                blob_options: BlobClientOptions {
                    client_options,
                    version: self.api_version.clone(),
                },
                token,
                settings: self,
                credentials,
                delegation_key: std::sync::Mutex::new(None),
                secrets,
            }),
        })
    }
}

/// The default policy of Blob requests: up to 3 attempts (the official clients' default
/// is more, with longer waits) with backoff from 100 ms within 30 s, temporary errors only
/// (5xx, `ServerBusy`, timeouts, connection failures); 5 minutes per attempt (a block of up
/// to 4,000 MiB).
pub fn default_policy_config() -> PolicyConfig {
    moodbridge_core::raw::transfer_policy_config(3)
}

/// Azure Blob Storage as an [`ObjectStore`] (and a [`PlatformIntegration`]). Cheap to
/// clone.
#[derive(Clone)]
pub struct AzureBlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Policy,
    id: String,
    name: String,
    /// The container's URL (with a SAS query when SAS-authorized).
    base: Url,
    container: BlobContainerClient,
    blob_options: BlobClientOptions,
    token: Option<Arc<dyn TokenCredential>>,
    settings: AzureBlobBuilder,
    credentials: AzureCredentials,
    /// The last user delegation key fetched (Entra ID credentials), reused while it
    /// outlives the SAS asked for.
    delegation_key: std::sync::Mutex<Option<UserDelegationKey>>,
    /// The credentials requests carry, scrubbed from every error.
    secrets: Secrets,
}

impl fmt::Debug for AzureBlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureBlobStore")
            .field("id", &self.inner.id)
            .field("settings", &self.inner.settings)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// Options for bytes `start..end` as one `GET` whose body streams as it arrives. The
/// official client's `download` cuts a range into partitions (4 MiB by default) and
/// buffers them; one partition the size of the range is one request, streamed.
fn one_get(start: u64, end: u64, etag: Option<String>) -> BlobClientDownloadOptions<'static> {
    let (a, b) = (
        usize::try_from(start).unwrap_or(usize::MAX),
        usize::try_from(end).unwrap_or(usize::MAX),
    );
    BlobClientDownloadOptions {
        range: Some(HttpRange::from(a..b)),
        if_match: etag.map(azure_core::http::Etag::from),
        parallel: std::num::NonZero::new(1),
        partition_size: std::num::NonZero::new(b.saturating_sub(a).max(1)),
        ..Default::default()
    }
}

fn md5(data: &[u8]) -> Vec<u8> {
    Md5::digest(data).to_vec()
}

/// The block size for a blob of `size` bytes (if known): the configured size, raised (in
/// whole MiB) so the blob fits in 50,000 blocks.
pub fn block_size_for(configured: u64, size: Option<u64>) -> u64 {
    let mut block = configured;
    if let Some(size) = size {
        let needed = size.div_ceil(MAX_BLOCKS);
        if needed > block {
            block = needed.next_multiple_of(1024 * 1024);
        }
    }
    block.min(MAX_BLOCK_SIZE)
}

impl AzureBlobStore {
    /// A builder for a store on `container`.
    pub fn builder(container: impl Into<String>) -> AzureBlobBuilder {
        AzureBlobBuilder {
            id: None,
            endpoint: None,
            container: container.into(),
            credentials: None,
            block_size: DEFAULT_BLOCK_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            download_concurrency: DEFAULT_DOWNLOAD_CONCURRENCY,
            download_buffer: DEFAULT_DOWNLOAD_BUFFER,
            api_version: DEFAULT_API_VERSION.to_owned(),
            max_attempts: 3,
            policy: None,
            policies: Vec::new(),
            parallel_downloads: true,
            http_client: None,
        }
    }

    /// The official container client, for what the trait does not cover (its calls do
    /// not go through the store's policy).
    pub fn container_client(&self) -> &BlobContainerClient {
        &self.inner.container
    }

    /// The policy every request of this store goes through.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Creates the container (tests, examples, first-time setup); an existing one is not
    /// an error.
    pub async fn create_container(&self) -> Result<()> {
        self.inner
            .policy
            .call_as(op::CREATE_CONTAINER, || async {
                match self.inner.container.create(None).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.http_status().map(u16::from) == Some(409) => Ok(()),
                    Err(e) => Err(map_err(&self.inner.secrets, "Create Container", None, e)),
                }
            })
            .await
    }

    fn blob_url(&self, key: &ObjectKey) -> Url {
        let mut url = self.inner.base.clone();
        {
            let mut segments = url.path_segments_mut().expect("http(s) URLs have paths");
            segments.extend(key.as_str().split('/'));
        }
        url
    }

    fn blob(&self, key: &ObjectKey) -> Result<BlobClient> {
        BlobClient::new(
            self.blob_url(key),
            self.inner.token.clone(),
            Some(self.inner.blob_options.clone()),
        )
        .map_err(|e| map_err(&self.inner.secrets, "create client", Some(key.as_str()), e))
    }

    async fn put_blocks(
        &self,
        key: &ObjectKey,
        reader: &mut PartReader<'_>,
        first: [Bytes; 2],
        options: &PutOptions,
    ) -> Result<Vec<Vec<u8>>> {
        let client = Arc::new(self.blob(key)?.block_blob_client());
        let prefix = format!("{:016x}", rand::random::<u64>());
        let concurrency = self.inner.settings.concurrency;
        let policy = self.inner.policy.clone();
        upload_parts(
            reader,
            first.into(),
            concurrency,
            MAX_BLOCKS,
            options,
            |index, block| {
                let id = format!("{prefix}{index:08}").into_bytes();
                let client = client.clone();
                let key_text = key.as_str().to_owned();
                let policy = policy.clone();
                let secrets = self.inner.secrets.clone();
                async move {
                    let digest = md5(&block);
                    let len = block.len() as u64;
                    // A request body cannot be reused: each attempt builds its own (the
                    // block's bytes are shared, not copied).
                    policy
                        .call_as(op::PUT_BLOCK, || {
                            let stage = BlockBlobClientStageBlockOptions {
                                transactional_content_md5: Some(digest.clone()),
                                ..Default::default()
                            };
                            let content = <RequestContent<Bytes, NoFormat> as From<Bytes>>::from(
                                block.clone(),
                            );
                            let (client, id, key_text) = (&client, &id, &key_text);
                            let secrets = &secrets;
                            async move {
                                client
                                    .stage_block(id, len, content, Some(stage))
                                    .await
                                    .map_err(|e| map_err(secrets, "Put Block", Some(key_text), e))
                            }
                        })
                        .await?;
                    Ok(id)
                }
            },
        )
        .await
    }
}

fn system_time(t: Option<time::OffsetDateTime>) -> Option<SystemTime> {
    t.map(SystemTime::from)
}

#[async_trait]
impl ObjectStore for AzureBlobStore {
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
        let size = block_size_for(self.inner.settings.block_size, options.size);
        let mut blocks = PartReader::new(key, body, size);
        let first = blocks.next_part().await?.unwrap_or_default();
        let second = if first.len() as u64 == size {
            blocks.next_part().await?
        } else {
            None
        };
        let metadata = Some(options.metadata.clone().into_iter().collect());
        let client = self.blob(key)?.block_blob_client();
        let (size, sha) = match second {
            None => {
                let (size, sha) = blocks.finish(&options)?;
                let digest = md5(&first);
                self.inner
                    .policy
                    .call_as(op::PUT_BLOB, || {
                        let upload = BlockBlobClientUploadOptions {
                            blob_content_type: options.content_type.clone(),
                            blob_content_md5: Some(digest.clone()),
                            metadata: metadata.clone(),
                            parallel: std::num::NonZero::new(1),
                            ..Default::default()
                        };
                        let content =
                            <RequestContent<Bytes, NoFormat> as From<Bytes>>::from(first.clone());
                        let client = &client;
                        async move {
                            client.upload(content, Some(upload)).await.map_err(|e| {
                                map_err(&self.inner.secrets, "Put Blob", Some(key.as_str()), e)
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
                (size, sha)
            }
            Some(second) => {
                let ids = self
                    .put_blocks(key, &mut blocks, [first, second], &options)
                    .await?;
                let (size, sha) = blocks.finish(&options)?;
                let list = BlockLookupList {
                    latest: Some(ids),
                    ..Default::default()
                };
                let content: RequestContent<BlockLookupList, XmlFormat> =
                    RequestContent::try_from(list).map_err(|e| {
                        map_err(&self.inner.secrets, "Put Block List", Some(key.as_str()), e)
                    })?;
                self.inner
                    .policy
                    .call_as(op::PUT_BLOCK_LIST, || {
                        let commit = BlockBlobClientCommitBlockListOptions {
                            blob_content_type: options.content_type.clone(),
                            metadata: metadata.clone(),
                            ..Default::default()
                        };
                        let (client, content) = (&client, content.clone());
                        async move {
                            client
                                .commit_block_list(content, Some(commit))
                                .await
                                .map_err(|e| {
                                    map_err(
                                        &self.inner.secrets,
                                        "Put Block List",
                                        Some(key.as_str()),
                                        e,
                                    )
                                })
                        }
                    })
                    .await?;
                (size, sha)
            }
        };
        // The write answers carry the ETag as typed headers of differing types; one HEAD
        // gives it uniformly.
        let etag = self.head(key).await?.etag;
        Ok(PutResult {
            key: key.clone(),
            size,
            etag,
            sha256: sha,
        })
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        options.check()?;
        let meta = self.head_if(key, options.if_match.clone()).await?;
        let (start, end) = options
            .range
            .resolve_in(key, meta.size)
            .map_err(|e| e.with_connector(PLATFORM))?;
        if meta.size == 0 {
            return Ok(GetResult {
                meta,
                range: (0, 0),
                body: byte_stream(futures::stream::empty()),
            });
        }
        let client = Arc::new(self.blob(key)?);
        let settings = &self.inner.settings;
        if !settings.parallel_downloads
            || settings.download_concurrency == 1
            || end - start <= settings.block_size
        {
            // One ranged GET, streamed as it arrives: the policy covers the request up to
            // the response's headers; the body then streams to the caller.
            let out = self
                .inner
                .policy
                .call_as(op::GET_BLOB, || {
                    let download = one_get(start, end, meta.etag.clone());
                    let client = &client;
                    async move {
                        client.download(Some(download)).await.map_err(|e| {
                            map_err(&self.inner.secrets, "Get Blob", Some(key.as_str()), e)
                        })
                    }
                })
                .await?;
            let body = byte_stream(out.body.map_err(std::io::Error::other));
            let body = with_progress(body, options.progress.clone(), Some(end - start));
            return Ok(GetResult {
                meta,
                range: (start, end),
                body,
            });
        }
        let etag = meta.etag.clone();
        let plan = DownloadPlan::new(settings.block_size)
            .max_concurrency(settings.download_concurrency)
            .buffer(settings.download_buffer);
        let owned_key = key.clone();
        let policy = self.inner.policy.clone();
        let secrets = self.inner.secrets.clone();
        let parts = ranged_download(start, end, plan, move |a, b| {
            let (client, etag, key) = (client.clone(), etag.clone(), owned_key.clone());
            let (policy, secrets) = (policy.clone(), secrets.clone());
            async move {
                // The policy covers the request up to the response's headers; the body
                // streams, and a body cut off mid-way is resumed from where it stopped.
                let out = policy
                    .call_as(op::GET_BLOB, || {
                        let options = one_get(a, b, etag.clone());
                        let (client, key, secrets) = (&client, &key, &secrets);
                        async move {
                            client
                                .download(Some(options))
                                .await
                                .map_err(|e| map_err(secrets, "Get Blob", Some(key.as_str()), e))
                        }
                    })
                    .await?;
                Ok(byte_stream(out.body.map_err(std::io::Error::other)))
            }
        });
        let body = with_progress(parts, options.progress.clone(), Some(end - start));
        Ok(GetResult {
            meta,
            range: (start, end),
            body,
        })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        self.head_if(key, None).await
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        // Page by page, each page one call through the policy; `None` once the last page
        // (no `NextMarker`) is read.
        futures::stream::try_unfold(Some(None::<String>), move |marker| async move {
            let Some(marker) = marker else {
                return Ok::<_, Error>(None);
            };
            let page = self
                .inner
                .policy
                .call_as(op::LIST_BLOBS, || {
                    let options = BlobContainerClientListBlobsOptions {
                        prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
                        marker: marker.clone(),
                        ..Default::default()
                    };
                    async move {
                        let pager = self
                            .inner
                            .container
                            .list_blobs(Some(options))
                            .map_err(|e| map_err(&self.inner.secrets, "List Blobs", None, e))?;
                        let Some(page) = pager.into_pages().next().await else {
                            return Ok(ListBlobsResponse::default());
                        };
                        page.and_then(|r| r.into_model())
                            .map_err(|e| map_err(&self.inner.secrets, "List Blobs", None, e))
                    }
                })
                .await?;
            let next = page.next_marker.filter(|m| !m.is_empty()).map(Some);
            let items = page.blob_items.into_iter().map(|item| {
                let props = item.properties.unwrap_or_default();
                Ok(ObjectMeta {
                    key: item.name.unwrap_or_default(),
                    size: props.content_length.unwrap_or(0),
                    content_type: props.content_type,
                    etag: props.etag.map(|e| e.to_string()),
                    last_modified: system_time(props.last_modified),
                    metadata: BTreeMap::new(),
                })
            });
            Ok(Some((futures::stream::iter(items), next)))
        })
        .try_flatten()
        .boxed()
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let blob = self.blob(key)?;
        self.inner
            .policy
            .call_as(op::DELETE_BLOB, || async {
                match blob.delete(None::<BlobClientDeleteOptions>).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.http_status().map(u16::from) == Some(404) => Ok(()),
                    Err(e) => Err(map_err(
                        &self.inner.secrets,
                        "Delete Blob",
                        Some(key.as_str()),
                        e,
                    )),
                }
            })
            .await
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        self.head(from).await?;
        let source = self.blob_url(from);
        let target = self.blob(to)?;
        let policy = &self.inner.policy;
        policy
            .call_as(op::COPY_BLOB, || async {
                target
                    .start_copy_from_url(source.to_string(), None)
                    .await
                    .map_err(|e| map_err(&self.inner.secrets, "Copy Blob", Some(to.as_str()), e))
            })
            .await?;
        // Copies inside one account complete synchronously on Azurite and usually on Azure;
        // otherwise wait for the copy status.
        for _ in 0..600 {
            let props = policy
                .call_as(op::GET_BLOB_PROPERTIES, || async {
                    target.get_properties(None).await.map_err(|e| {
                        map_err(
                            &self.inner.secrets,
                            "Get Blob Properties",
                            Some(to.as_str()),
                            e,
                        )
                    })
                })
                .await?;
            match props.copy_status().map_err(|e| {
                map_err(
                    &self.inner.secrets,
                    "Get Blob Properties",
                    Some(to.as_str()),
                    e,
                )
            })? {
                Some(azure_storage_blob::models::CopyStatus::Pending) => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Some(azure_storage_blob::models::CopyStatus::Success) | None => return Ok(()),
                Some(other) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("Azure Blob copy of {from:?} to {to:?} ended {other:?}"),
                    )
                    .with_connector(PLATFORM));
                }
            }
        }
        Err(Error::new(
            ErrorKind::Timeout,
            format!("Azure Blob copy of {from:?} to {to:?} still pending after 2 minutes"),
        )
        .with_connector(PLATFORM))
    }

    async fn presign(
        &self,
        key: &ObjectKey,
        method: PresignMethod,
        expires_in: Duration,
    ) -> Result<PresignedRequest> {
        let expires_at = SystemTime::now() + expires_in;
        let permission = match method {
            PresignMethod::Get => SasPermission::Read,
            PresignMethod::Put => SasPermission::Write,
        };
        let settings = &self.inner.settings;
        let sas = match &self.inner.credentials {
            AzureCredentials::SharedKey(shared) => blob_sas(
                shared,
                &settings.container,
                key.as_str(),
                permission,
                expires_at,
                &settings.api_version,
            )?,
            AzureCredentials::Entra(_) => {
                if expires_in > MAX_DELEGATION {
                    return Err(Error::invalid_input(format!(
                        "a user delegation SAS lives at most 7 days; {expires_in:?} was asked for"
                    ))
                    .with_connector(PLATFORM)
                    .with_hint("ask for 7 days or less"));
                }
                let delegation = self.delegation_key(expires_at).await?;
                user_delegation_sas(
                    &delegation,
                    &self.account_name()?,
                    &settings.container,
                    key.as_str(),
                    permission,
                    expires_at,
                    &settings.api_version,
                )?
            }
            AzureCredentials::Sas(_) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "a store authorized by a SAS token cannot sign new SAS URLs",
                )
                .with_connector(PLATFORM)
                .with_hint(
                    "build the store with the account key (Shared Key) or Entra ID credentials",
                ));
            }
        };
        let mut url = self.blob_url(key);
        url.set_query(Some(sas.expose_secret()));
        let headers = match method {
            PresignMethod::Get => vec![],
            PresignMethod::Put => vec![("x-ms-blob-type".to_owned(), "BlockBlob".to_owned())],
        };
        Ok(PresignedRequest {
            method,
            url: url.to_string(),
            headers,
            expires_at,
        })
    }
}

/// The longest a user delegation key (and so a SAS it signs) is valid.
const MAX_DELEGATION: Duration = Duration::from_secs(7 * 24 * 3600);

impl AzureBlobStore {
    /// The storage account's name: the first label of the host
    /// (`<account>.blob.core.windows.net`), or the first path segment on an IP or
    /// `localhost` endpoint (emulators: `http://127.0.0.1:10000/<account>`).
    fn account_name(&self) -> Result<String> {
        let base = &self.inner.base;
        let path_style = match base.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(_) => true,
            None => false,
        };
        let name = if path_style {
            base.path_segments().and_then(|mut s| s.next())
        } else {
            base.host_str().and_then(|h| h.split('.').next())
        };
        name.filter(|n| !n.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::config(format!("cannot tell the storage account from {base}"))
                    .with_connector(PLATFORM)
                    .with_hint("use https://<account>.blob.core.windows.net or http(s)://<ip>:<port>/<account>")
            })
    }

    /// A user delegation key valid until at least `until`: the cached one, or a new one
    /// from the service (valid from 5 minutes ago, for clock skew, until `until` or at
    /// least an hour from now, at most 7 days).
    async fn delegation_key(&self, until: SystemTime) -> Result<UserDelegationKey> {
        let until_text = sas_time(until);
        if let Ok(cached) = self.inner.delegation_key.lock()
            && let Some(key) = cached.as_ref()
            && key.expiry >= until_text
        {
            return Ok(key.clone());
        }
        let now = SystemTime::now();
        let start = now - Duration::from_secs(300);
        let expiry = until
            .max(now + Duration::from_secs(3600))
            .min(now + MAX_DELEGATION);
        let to_offset = |t: SystemTime| {
            let secs = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
                .map_err(|e| Error::internal(format!("time out of range: {e}")))
        };
        let info = azure_storage_blob::models::KeyInfo {
            start: Some(to_offset(start)?),
            expiry: Some(to_offset(expiry)?),
            ..Default::default()
        };
        let mut service_url = self.inner.base.clone();
        service_url
            .path_segments_mut()
            .map_err(|()| Error::internal("endpoint URL has no path"))?
            .pop();
        service_url.set_query(None);
        let service = azure_storage_blob::BlobServiceClient::new(
            service_url,
            self.inner.token.clone(),
            Some(azure_storage_blob::BlobServiceClientOptions {
                client_options: self.inner.blob_options.client_options.clone(),
                version: self.inner.settings.api_version.clone(),
            }),
        )
        .map_err(|e| map_err(&self.inner.secrets, "create client", None, e))?;
        let content: RequestContent<azure_storage_blob::models::KeyInfo, XmlFormat> =
            RequestContent::try_from(info)
                .map_err(|e| map_err(&self.inner.secrets, "Get User Delegation Key", None, e))?;
        let key = self
            .inner
            .policy
            .call_as(op::GET_USER_DELEGATION_KEY, || {
                let (service, content) = (&service, content.clone());
                async move {
                    service
                        .get_user_delegation_key(content, None)
                        .await
                        .and_then(|r| r.into_model())
                        .map_err(|e| {
                            map_err(&self.inner.secrets, "Get User Delegation Key", None, e)
                        })
                }
            })
            .await?;
        let missing = |what: &str| {
            Error::new(
                ErrorKind::Protocol,
                format!("the user delegation key the service returned has no {what}"),
            )
            .with_connector(PLATFORM)
        };
        let time_text = |t: Option<time::OffsetDateTime>, what: &str| {
            t.map(|t| {
                sas_time(
                    SystemTime::UNIX_EPOCH
                        + Duration::from_secs(t.unix_timestamp().max(0).cast_unsigned()),
                )
            })
            .ok_or_else(|| missing(what))
        };
        let key = UserDelegationKey {
            object_id: key.signed_oid.ok_or_else(|| missing("SignedOid"))?,
            tenant_id: key.signed_tid.ok_or_else(|| missing("SignedTid"))?,
            start: time_text(key.signed_start, "SignedStart")?,
            expiry: time_text(key.signed_expiry, "SignedExpiry")?,
            service: key.signed_service.unwrap_or_else(|| "b".to_owned()),
            version: key.signed_version.ok_or_else(|| missing("SignedVersion"))?,
            value: SecretString::from(
                key.value
                    .map(|v| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v))
                    .ok_or_else(|| missing("Value"))?,
            ),
        };
        if let Ok(mut cached) = self.inner.delegation_key.lock() {
            *cached = Some(key.clone());
        }
        Ok(key)
    }

    async fn head_if(&self, key: &ObjectKey, if_match: Option<String>) -> Result<ObjectMeta> {
        let blob = self.blob(key)?;
        let props = self
            .inner
            .policy
            .call_as(op::GET_BLOB_PROPERTIES, || {
                let options = BlobClientGetPropertiesOptions {
                    if_match: if_match.clone().map(azure_core::http::Etag::from),
                    ..Default::default()
                };
                let blob = &blob;
                async move {
                    blob.get_properties(Some(options)).await.map_err(|e| {
                        map_err(
                            &self.inner.secrets,
                            "Get Blob Properties",
                            Some(key.as_str()),
                            e,
                        )
                    })
                }
            })
            .await?;
        let h = |e| {
            map_err(
                &self.inner.secrets,
                "Get Blob Properties",
                Some(key.as_str()),
                e,
            )
        };
        Ok(ObjectMeta {
            key: key.as_str().to_owned(),
            size: props.content_length().map_err(h)?.unwrap_or(0),
            content_type: props.content_type().map_err(h)?,
            etag: props.etag().map_err(h)?.map(|e| e.to_string()),
            last_modified: system_time(props.last_modified().map_err(h)?),
            metadata: props.metadata().map_err(h)?.into_iter().collect(),
        })
    }
}

#[async_trait]
impl PlatformIntegration for AzureBlobStore {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn kind(&self) -> &str {
        PLATFORM
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none().with(Capability::ObjectStorage))
    }

    async fn health_check(&self) -> HealthReport {
        let start = std::time::Instant::now();
        let result = self
            .inner
            .policy
            .call_as(op::GET_CONTAINER_PROPERTIES, || async {
                self.inner
                    .container
                    .get_properties(None)
                    .await
                    .map_err(|e| map_err(&self.inner.secrets, "Get Container Properties", None, e))
            })
            .await;
        HealthReport::from_result(start.elapsed(), result)
    }

    fn interfaces(self: Arc<Self>) -> moodbridge_core::integration::Interfaces {
        moodbridge_core::integration::Interfaces::new().with::<dyn ObjectStore>(self)
    }
}
