//! Settings of an `s3` integration, read from its config's `settings` table.
//!
//! ```toml
//! [[integration]]
//! id = "s3:documents"
//! kind = "s3"
//!
//! [integration.settings]
//! bucket = "moodbridge-documents"
//! region = "eu-west-1"                 # default: from the environment / profile
//! # endpoint = "http://127.0.0.1:9000" # MinIO, moto …; with path_style = true
//! encryption = "kms"                   # "s3" (SSE-S3) or "kms" (SSE-KMS, kms_key_id optional)
//! kms_key_id = "alias/moodbridge"
//! part_size_mib = 8
//! concurrency = 4                      # parts in flight per upload
//! download_concurrency = 16            # ranged GETs in flight at most per download
//! download_buffer_mib = 24             # bytes held at most ahead of the reader
//! # credentials: the standard AWS chain when absent, or
//! credentials = { source = "static", access_key_id = "AKIA…", secret_access_key = "secret:aws/prod/secret_access_key" }
//! # credentials = { source = "store", prefix = "aws/prod", refresh = "5m" }   # keys in the host's credential store
//! ```

use moodbridge_core::config::{Validate, Validator};
use serde::Deserialize;

use crate::s3::{
    DEFAULT_CONCURRENCY, DEFAULT_DOWNLOAD_BUFFER, DEFAULT_DOWNLOAD_CONCURRENCY, DEFAULT_PART_SIZE,
    MAX_PART_SIZE, MIN_PART_SIZE,
};

/// Settings of an `s3` integration. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// The AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// A custom endpoint (S3-compatible stores, local emulators).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Path-style addressing (most S3-compatible stores need it).
    #[serde(default)]
    pub path_style: bool,
    /// Where the keys come from (default: the standard AWS chain).
    #[serde(default)]
    pub credentials: S3CredentialSettings,
    /// Server-side encryption of written objects.
    #[serde(default)]
    pub encryption: Option<EncryptionSetting>,
    /// The KMS key of `encryption = "kms"` (default: the account's `aws/s3` key).
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Storage class of written objects (`STANDARD_IA`, `GLACIER_IR`, …).
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Part size of multipart transfers, MiB (5 to 5120; default 8).
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u64,
    /// Parts in flight per upload (default 4).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Ranged GETs in flight at most per download; a download starts with up to 4 and
    /// adds more while they bring more throughput (default 16; 1 reads one stream).
    #[serde(default = "default_download_concurrency")]
    pub download_concurrency: usize,
    /// MiB a download holds at most for the ranges ahead of the one being read
    /// (default 24).
    #[serde(default = "default_download_buffer_mib")]
    pub download_buffer_mib: u64,
    /// Download large objects as parallel ranged GETs (default true).
    #[serde(default = "yes")]
    pub parallel_downloads: bool,
}

fn default_part_size_mib() -> u64 {
    DEFAULT_PART_SIZE / (1024 * 1024)
}

fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

fn default_download_concurrency() -> usize {
    DEFAULT_DOWNLOAD_CONCURRENCY
}

fn default_download_buffer_mib() -> u64 {
    DEFAULT_DOWNLOAD_BUFFER / (1024 * 1024)
}

fn yes() -> bool {
    true
}

/// Server-side encryption, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncryptionSetting {
    /// SSE-S3.
    S3,
    /// SSE-KMS.
    Kms,
}

/// Where an `s3` integration's keys come from (the crate's
/// [`AwsCredentialSettings`](crate::sdk::AwsCredentialSettings)).
pub use crate::sdk::AwsCredentialSettings as S3CredentialSettings;

impl Validate for S3Settings {
    fn validate_into(&self, v: &mut Validator) {
        if let Err(e) = crate::s3::check_bucket_name(&self.bucket) {
            v.problem("bucket", e.message().to_owned(), e.hint().to_owned());
        }
        crate::sdk::validate_endpoint(
            self.endpoint.as_deref(),
            "https://s3.eu-west-1.amazonaws.com",
            v,
        );
        let bytes = self.part_size_mib.saturating_mul(1024 * 1024);
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&bytes) {
            v.problem(
                "part_size_mib",
                format!("{} is outside S3's part limits", self.part_size_mib),
                "use 5 to 5120 (8 is the default)",
            );
        }
        if self.concurrency == 0 {
            v.problem("concurrency", "is 0", "use at least 1 (default 4)");
        }
        moodbridge_core::raw::validate_download_settings(
            v,
            self.download_concurrency,
            self.download_buffer_mib,
        );
        if self.kms_key_id.is_some() && self.encryption != Some(EncryptionSetting::Kms) {
            v.problem(
                "kms_key_id",
                "is set but encryption is not \"kms\"",
                "set encryption = \"kms\", or remove kms_key_id",
            );
        }
        self.credentials.validate_into(v);
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]
    use super::*;

    fn problems(settings: &str) -> Vec<String> {
        moodbridge_core::testing::settings_problems::<S3Settings>(settings)
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let found = problems(
            r#"bucket = "Bad_Bucket"
            endpoint = "127.0.0.1:9000"
            part_size_mib = 1
            concurrency = 0
            download_concurrency = 0
            download_buffer_mib = 0
            kms_key_id = "alias/x"
            credentials = { source = "store", prefix = "", refresh = "0s" }"#,
        );
        let paths: Vec<&str> = found.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "settings.bucket",
                "settings.endpoint",
                "settings.part_size_mib",
                "settings.concurrency",
                "settings.download_concurrency",
                "settings.download_buffer_mib",
                "settings.kms_key_id",
                "settings.credentials.prefix",
                "settings.credentials.refresh"
            ],
            "{found:?}"
        );
    }

    #[test]
    fn a_literal_secret_key_is_refused_unechoed() {
        let found = problems(
            r#"bucket = "docs"
            credentials = { source = "static", access_key_id = "AKIA", secret_access_key = "wJalrXUtnFEMI" }"#,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(!found[0].contains("wJalr"), "{found:?}");
    }

    #[test]
    fn defaults_are_the_builders() {
        let mut cfg = moodbridge_core::IntegrationConfig::new("s3:docs", "s3");
        cfg.settings = toml::from_str(r#"bucket = "docs""#).unwrap();
        let s: S3Settings = cfg.settings().unwrap();
        assert_eq!(s.part_size_mib * 1024 * 1024, DEFAULT_PART_SIZE);
        assert_eq!(s.credentials, S3CredentialSettings::Chain);
        assert_eq!(s.download_concurrency, DEFAULT_DOWNLOAD_CONCURRENCY);
        assert_eq!(s.download_buffer_mib * 1024 * 1024, DEFAULT_DOWNLOAD_BUFFER);
        assert!(s.parallel_downloads);
    }
}
