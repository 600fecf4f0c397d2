//! Logging for a host, a tool or an example: events to stderr, filtered by `RUST_LOG`
//! (default `warn`), the chattiest vendor libraries capped at `warn` unless `RUST_LOG`
//! names them, and every line scrubbed of secrets before it is written — an
//! `Authorization` header, a signature or session token in a URL (`sig=`,
//! `X-Amz-Signature=`, `X-Amz-Security-Token=`), a token field in JSON — whichever
//! library logged it (at TRACE, AWS's signing stack logs whole presigned URLs).
//!
//! ```no_run
//! moodbridge_core::observe::logging::init();
//! tracing::info!("ready");
//! ```

use std::io::Write;
use tracing_subscriber::fmt::MakeWriter;

/// Libraries whose DEBUG and TRACE output is noise for a host (and, for some, secrets):
/// capped at `warn` unless `RUST_LOG` names them.
pub const QUIET_TARGETS: &[&str] = &[
    "aws_config",
    "aws_sigv4",
    "aws_smithy_runtime",
    "aws_smithy_http_client",
    "azure_core",
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
    "sqlx",
];

/// `line` with every secret-bearing header, query parameter and JSON field replaced by
/// `[redacted]` (the rules of [`redact::scrub_patterns`](crate::redact::scrub_patterns)).
///
/// ```
/// use moodbridge_core::observe::logging::redact_line;
/// let line = "GET https://acct.blob.core.windows.net/c/b?sv=2024-05-04&sig=AbC%2Bdef%3D authorization: Bearer eyJhbGciOi.x.y";
/// let shown = redact_line(line);
/// assert!(!shown.contains("AbC%2Bdef") && !shown.contains("eyJhbGciOi"), "{shown}");
/// assert!(shown.contains("sv=2024-05-04"));
/// ```
pub fn redact_line(line: &str) -> String {
    crate::redact::scrub_patterns(line)
}

/// A writer that holds one event's text and writes it, scrubbed, when dropped.
pub struct RedactingWriter<W: Write> {
    inner: W,
    buffer: Vec<u8>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let text = redact_line(&String::from_utf8_lossy(&self.buffer));
        let _ = self.inner.write_all(text.as_bytes());
        let _ = self.inner.flush();
    }
}

/// Wraps a [`MakeWriter`] so that every event it writes is scrubbed first.
#[derive(Debug, Clone)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.0.make_writer(),
            buffer: Vec::with_capacity(256),
        }
    }
}

/// The filter: `RUST_LOG` (default `warn`), with [`QUIET_TARGETS`] capped at `warn`
/// unless it names them.
pub fn filter() -> tracing_subscriber::EnvFilter {
    let given = std::env::var("RUST_LOG").unwrap_or_default();
    let mut directives = if given.trim().is_empty() {
        "warn".to_owned()
    } else {
        given.clone()
    };
    for target in QUIET_TARGETS {
        if !given.contains(target) {
            directives.push_str(&format!(",{target}=warn"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("RUST_LOG={given:?} is not a valid filter ({e}); logging warnings only");
        tracing_subscriber::EnvFilter::new("warn")
    })
}

/// A subscriber writing compact, scrubbed lines to `writer`, filtered by [`filter`].
pub fn subscriber<M>(writer: M) -> impl tracing::Subscriber + Send + Sync
where
    M: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_target(false)
        .with_ansi(false)
        .compact()
        .with_writer(Redacting(writer))
        .finish()
}

/// Install [`subscriber`] on stderr as the global default (once; later calls, or a
/// subscriber installed before, leave things as they are).
pub fn init() {
    let _ = tracing::subscriber::set_global_default(subscriber(std::io::stderr));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Whatever a library logs — a presigned S3 URL, a SAS URL, headers, a token
    /// response — reaches the output without its secrets.
    #[test]
    fn secrets_in_any_event_are_scrubbed_before_they_are_written() {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(Redacting(move || sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(
                uri = "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDSECRET1%2F20261206&X-Amz-Security-Token=FwoGZXIvSESSION1&X-Amz-Signature=0a1b2cSIG1",
                "presigned"
            );
            tracing::debug!(
                "GET https://a.blob.core.windows.net/c/b?sv=2024-05-04&se=2026&sp=r&sig=SASSIG1%3D"
            );
            tracing::debug!(headers = ?[("authorization", "Bearer TOKEN1abcdef"), ("x-amz-security-token", "SESSION2xyz")], "request");
            tracing::debug!(
                r#"answer {{"access_token":"TOKEN2abcdef","refresh_token":"REFRESH1abc","token_type":"Bearer"}}"#
            );
            tracing::warn!("Authorization: SharedKey devstoreaccount1:KEYSIG1abcdef");
        });
        let text = String::from_utf8(
            out.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
        .unwrap_or_default();
        for secret in [
            "AKIDSECRET1",
            "SESSION1",
            "SIG1",
            "SASSIG1",
            "TOKEN1",
            "SESSION2",
            "TOKEN2",
            "REFRESH1",
            "KEYSIG1",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"), "{text}");
        assert_eq!(text.lines().count(), 5, "{text}");
    }
}
