//! Keeping the secrets a request carries out of what is made of its answer.
//!
//! A misbehaving server can echo a request back: a token endpoint whose
//! `error_description` repeats the form (client secret, refresh token), an error body that
//! quotes the `Authorization` header or the signed URL. Every client knows the secrets it
//! sent; a [`Scrubber`] built from them replaces each — raw, URL-encoded (percent and form
//! encoding) and base64-encoded (standard and URL-safe, with and without padding) — by
//! `[redacted]` in the answer's text before it becomes part of an [`Error`](crate::Error)
//! or a log line.
//!
//! ```
//! use moodbridge_core::redact::Scrubber;
//!
//! let secret = "s3cr3t/Value+1";
//! let scrubber = Scrubber::new([secret]);
//! let echoed = "invalid client_secret=s3cr3t%2FValue%2B1 (was s3cr3t/Value+1)";
//! let shown = scrubber.scrub(echoed);
//! assert_eq!(shown, "invalid client_secret=[redacted] (was [redacted])");
//! ```

use std::sync::{Arc, LazyLock, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use regex::Regex;

/// What `application/x-www-form-urlencoded` and most URL encoders leave as it is.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a scrubbed secret is replaced by.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not scrubbed: replacing every occurrence of a few
/// characters would mangle the text and protect nothing.
pub const MIN_SECRET_LEN: usize = 6;

/// The secrets of one request, in every form a server could echo them in.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Every form of every secret, longest first (a form inside a longer one goes last).
    forms: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("forms", &self.forms.len())
            .finish()
    }
}

impl Scrubber {
    /// A scrubber for `secrets` (those shorter than [`MIN_SECRET_LEN`] are ignored).
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let mut forms: Vec<Vec<u8>> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.len() < MIN_SECRET_LEN {
                continue;
            }
            let strict = utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string();
            let unreserved = utf8_percent_encode(secret, UNRESERVED).to_string();
            let candidates = [
                secret.to_owned(),
                lower_hex(&strict),
                unreserved.replace("%20", "+"),
                lower_hex(&unreserved),
                unreserved,
                strict,
                STANDARD.encode(secret),
                STANDARD_NO_PAD.encode(secret),
                URL_SAFE.encode(secret),
                URL_SAFE_NO_PAD.encode(secret),
            ];
            for form in candidates {
                let form = form.into_bytes();
                if !forms.contains(&form) {
                    forms.push(form);
                }
            }
        }
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        Scrubber { forms }
    }

    /// Whether it scrubs nothing.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// `text` with every form of every secret replaced by [`REDACTED`].
    pub fn scrub(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.scrub_bytes(text.as_bytes())).into_owned()
    }

    /// The same for a response body, bytes kept as they are elsewhere.
    pub fn scrub_bytes(&self, body: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        for form in &self.forms {
            out = replace_all(&out, form, REDACTED.as_bytes());
        }
        out
    }
}

/// The longest answer text an error keeps (characters), by default.
pub const MAX_ERROR_TEXT: usize = 2048;

static RULES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    let rule = |pattern: &str, with: &'static str| {
        (
            Regex::new(pattern).unwrap_or_else(|e| unreachable!("a fixed pattern: {e}")),
            with,
        )
    };
    vec![
        // The parts of an S3 signature-mismatch answer that repeat the signed request
        // (its headers, session token included), whole or as hex bytes.
        rule(
            r"(?s)<(CanonicalRequest|CanonicalRequestBytes|StringToSign|StringToSignBytes|SignatureProvided)>.*?</(?:CanonicalRequest|CanonicalRequestBytes|StringToSign|StringToSignBytes|SignatureProvided)>",
            "<$1>[redacted]</$1>",
        ),
        // An authorization scheme and its credentials, wherever they are written.
        rule(
            r"(?i)\b(Bearer|Basic|SharedKey|OAuth)(\s+)[A-Za-z0-9._~+/=:!\-]{6,}",
            "$1$2[redacted]",
        ),
        // The signature of an AWS Signature Version 4 `Authorization` header.
        rule(r"(?i)\b(Signature=)[0-9a-f]{16,}", "$1[redacted]"),
        // Secret-bearing headers as `name: value` or `name=value`, quoted or not.
        rule(
            r#"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-amz-security-token|x-amz-signature|x-amz-credential|x-ms-copy-source-authorization)("?\s*[:=,]\s*"?)(?:(?:Bearer|Basic|SharedKey|OAuth)\s+)?[^\s",;&}]+"#,
            "$1$2[redacted]",
        ),
        // Secret-bearing query parameters and form fields.
        rule(
            r"(?i)([?&;](?:sig|signature|x-amz-signature|x-amz-security-token|x-amz-credential|client_secret|refresh_token|access_token|id_token|code|code_verifier|password|assertion|client_assertion|token|skoid|sktid|skt|ske|sks|skv)=)[^&\s\x22']+",
            "$1[redacted]",
        ),
        // Secret fields of JSON.
        rule(
            r#"(?i)("(?:access_token|refresh_token|id_token|client_secret|password|assertion|secret|session_token|sessionToken|secretAccessKey)"\s*:\s*")[^"]*"#,
            "$1[redacted]",
        ),
    ]
});

/// `text` with every secret-bearing header, query parameter and JSON field replaced by
/// `[redacted]`, whatever its value: `Authorization` and other credential headers, an
/// authorization scheme's credentials (`Bearer …`, `SharedKey …`), signatures and session
/// tokens in URLs (`sig=`, `X-Amz-Signature=`, `X-Amz-Security-Token=`), token fields
/// of forms and JSON, and the request an S3 signature-mismatch answer repeats.
///
/// ```
/// use moodbridge_core::redact::scrub_patterns;
/// let text = "GET /c/b?sv=2024-05-04&sig=AbC%2Bdef%3D x-amz-security-token:FwoGZXIvYXdzE";
/// let shown = scrub_patterns(text);
/// assert!(!shown.contains("AbC%2Bdef") && !shown.contains("FwoGZXIvYXdzE"), "{shown}");
/// assert!(shown.contains("sv=2024-05-04"));
/// ```
pub fn scrub_patterns(text: &str) -> String {
    let mut out = text.to_owned();
    for (pattern, with) in RULES.iter() {
        if pattern.is_match(&out) {
            out = pattern.replace_all(&out, *with).into_owned();
        }
    }
    out
}

/// The secrets a client has sent, shared by everything that turns its answers into
/// errors: credentials are remembered as they are used (a rotated key or a refreshed
/// token joins the set), and [`Secrets::scrub`] removes every form of each, and every
/// secret-bearing pattern ([`scrub_patterns`]), from a text. Cheap to clone.
///
/// ```
/// use moodbridge_core::redact::Secrets;
///
/// let secrets = Secrets::new();
/// secrets.remember(["FwoGZXIvYXdzEXAMPLETOKEN"]);
/// let echoed = "denied: token FwoGZXIvYXdzEXAMPLETOKEN is expired";
/// assert_eq!(secrets.scrub(echoed), "denied: token [redacted] is expired");
/// ```
#[derive(Clone, Default)]
pub struct Secrets {
    known: Arc<RwLock<SecretsInner>>,
}

#[derive(Default)]
struct SecretsInner {
    raw: Vec<String>,
    scrubber: Scrubber,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = self.known.read().map(|k| k.raw.len()).unwrap_or_default();
        f.debug_struct("Secrets").field("known", &known).finish()
    }
}

/// How many secrets a [`Secrets`] keeps: the most recent, so that rotating credentials
/// do not grow it without end.
const MAX_REMEMBERED: usize = 32;

impl Secrets {
    /// An empty set (patterns are still scrubbed).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `secrets` (those shorter than [`MIN_SECRET_LEN`] are ignored; the oldest go
    /// once more than 32 are known).
    pub fn remember<S: AsRef<str>>(&self, secrets: impl IntoIterator<Item = S>) {
        let fresh: Vec<String> = secrets
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        if fresh.is_empty() {
            return;
        }
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        let before = known.raw.len();
        for secret in fresh {
            if !known.raw.contains(&secret) {
                known.raw.push(secret);
            }
        }
        if known.raw.len() == before {
            return;
        }
        let excess = known.raw.len().saturating_sub(MAX_REMEMBERED);
        known.raw.drain(..excess);
        known.scrubber = Scrubber::new(&known.raw);
    }

    /// `text` without any known secret (in any of its forms) or secret-bearing pattern.
    pub fn scrub(&self, text: &str) -> String {
        let text = scrub_patterns(text);
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        if known.scrubber.is_empty() {
            text
        } else {
            known.scrubber.scrub(&text)
        }
    }

    /// [`scrub`](Self::scrub), then [`cap`] at [`MAX_ERROR_TEXT`]: what an error may keep
    /// of an answer.
    pub fn clean(&self, text: &str) -> String {
        cap(&self.scrub(text), MAX_ERROR_TEXT)
    }

    /// An error's whole chain (its message and every cause's), scrubbed and capped: the
    /// text to keep as the source of an [`Error`](crate::Error) in place of a vendor
    /// error whose `Debug` may hold a raw answer.
    pub fn scrubbed_source(&self, err: &(dyn std::error::Error + 'static)) -> Scrubbed {
        let mut text = err.to_string();
        let mut next = err.source();
        while let Some(cause) = next {
            let more = cause.to_string();
            if !text.contains(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            next = cause.source();
        }
        Scrubbed(self.clean(&text))
    }
}

/// The text of an error whose secrets were scrubbed (see [`Secrets::scrubbed_source`]);
/// its `Debug` is its text.
#[derive(Clone, PartialEq, Eq)]
pub struct Scrubbed(String);

impl Scrubbed {
    /// The scrubbed text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Scrubbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Scrubbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for Scrubbed {}

/// Percent-encoding with lowercase hex digits (`%2f` for `%2F`), the rest unchanged.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// `text` cut to at most `max` characters, saying how much was left out.
///
/// ```
/// assert_eq!(moodbridge_core::redact::cap("abcdef", 3), "abc… (6 bytes in all)");
/// ```
pub fn cap(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let head: String = text.chars().take(max).collect();
    format!("{head}… ({} bytes in all)", text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_of_a_secret_is_scrubbed() {
        let secret = "Tok en/+=?&é";
        let s = Scrubber::new([secret]);
        let forms = [
            secret.to_owned(),
            "Tok+en%2F%2B%3D%3F%26%C3%A9".to_owned(),
            "Tok%20en%2F%2B%3D%3F%26%C3%A9".to_owned(),
            "Tok%20en%2f%2b%3d%3f%26%c3%a9".to_owned(),
            STANDARD.encode(secret),
            URL_SAFE_NO_PAD.encode(secret),
        ];
        for form in forms {
            let text = format!("before {form} after");
            assert_eq!(s.scrub(&text), "before [redacted] after", "{form}");
        }
    }

    #[test]
    fn an_s3_signature_mismatch_answer_keeps_its_code_and_loses_the_request() {
        // The shape of S3's SignatureDoesNotMatch answer (S3 API reference, "Error
        // responses"), with a session token in the canonical request it repeats.
        let body = "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message><AWSAccessKeyId>AKIDEXAMPLE</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256\n20261206T000000Z</StringToSign><SignatureProvided>d3adb33f</SignatureProvided><CanonicalRequest>GET\n/b/k\n\nhost:127.0.0.1\nx-amz-security-token:FwoGZXIvYXdzSECRET\n</CanonicalRequest><CanonicalRequestBytes>47 45 54</CanonicalRequestBytes></Error>";
        let shown = scrub_patterns(body);
        assert!(!shown.contains("FwoGZXIvYXdzSECRET"), "{shown}");
        assert!(
            !shown.contains("d3adb33f") && !shown.contains("47 45 54"),
            "{shown}"
        );
        assert!(
            shown.contains("<Code>SignatureDoesNotMatch</Code>"),
            "{shown}"
        );
        assert!(
            shown.contains("<CanonicalRequest>[redacted]</CanonicalRequest>"),
            "{shown}"
        );
    }

    #[test]
    fn secrets_remembered_later_are_scrubbed_and_the_oldest_are_dropped() {
        let secrets = Secrets::new();
        let copy = secrets.clone();
        assert_eq!(secrets.scrub("token-number-1"), "token-number-1");
        copy.remember(["token-number-1"]);
        assert_eq!(secrets.scrub("x token-number-1 y"), "x [redacted] y");
        for i in 2..=40 {
            copy.remember([format!("token-number-{i:02}")]);
        }
        assert_eq!(secrets.scrub("token-number-40"), "[redacted]");
        assert_eq!(secrets.scrub("token-number-02"), "token-number-02");
        assert!(!format!("{secrets:?}").contains("token-number"));
        let long = "x".repeat(MAX_ERROR_TEXT * 2);
        assert!(secrets.clean(&long).len() < MAX_ERROR_TEXT + 40);
    }

    #[test]
    fn a_scrubbed_source_keeps_the_chain_without_the_secrets() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dispatch failure")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let secrets = Secrets::new();
        secrets.remember(["sv=2024&sig=SIGNATURE"]);
        let err = Outer(std::io::Error::other(
            "error sending request for url (https://a.blob/c?sv=2024&sig=SIGNATURE)",
        ));
        let source = secrets.scrubbed_source(&err);
        assert!(
            source
                .as_str()
                .starts_with("dispatch failure: error sending"),
            "{source}"
        );
        assert!(!format!("{source:?}").contains("SIGNATURE"), "{source:?}");
    }

    #[test]
    fn short_secrets_and_unrelated_text_are_left_alone() {
        let s = Scrubber::new(["abc", "longer-secret"]);
        assert_eq!(s.scrub("abc abc"), "abc abc");
        assert_eq!(s.scrub("nothing here"), "nothing here");
        assert!(Scrubber::new(["x"]).is_empty());
        assert!(!format!("{s:?}").contains("longer-secret"));
    }
}
