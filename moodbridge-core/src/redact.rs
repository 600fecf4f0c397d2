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

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

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
    fn short_secrets_and_unrelated_text_are_left_alone() {
        let s = Scrubber::new(["abc", "longer-secret"]);
        assert_eq!(s.scrub("abc abc"), "abc abc");
        assert_eq!(s.scrub("nothing here"), "nothing here");
        assert!(Scrubber::new(["x"]).is_empty());
        assert!(!format!("{s:?}").contains("longer-secret"));
    }
}
