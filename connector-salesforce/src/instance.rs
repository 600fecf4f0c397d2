//! Where the connector may send a bearer token: the `instance_url` a token endpoint
//! returns is accepted only if it is https on Salesforce's domains (or a domain the host
//! added), and every URL the client follows (`nextRecordsUrl` …) must stay on that
//! instance — a bearer token never goes to an arbitrary URL (SSRF).

use moodbridge_core::{Error, Result};
use url::Url;

/// Salesforce's own domains (instances, My Domains, sandboxes, government cloud, China).
pub const SALESFORCE_DOMAINS: [&str; 7] = [
    "salesforce.com",
    "force.com",
    "cloudforce.com",
    "database.com",
    "salesforce.mil",
    "crmforce.mil",
    "sfcrmproducts.cn",
];

/// The domains an `instance_url` may be on.
///
/// ```
/// use connector_salesforce::instance::InstanceAllowList;
/// let allow = InstanceAllowList::default();
/// assert!(allow.check("https://acme.my.salesforce.com").is_ok());
/// assert!(allow.check("https://evil.example.com").is_err());
/// assert!(allow.check("http://acme.my.salesforce.com").is_err(), "https only");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceAllowList {
    domains: Vec<String>,
    loopback: bool,
}

impl Default for InstanceAllowList {
    fn default() -> Self {
        InstanceAllowList {
            domains: SALESFORCE_DOMAINS.map(String::from).to_vec(),
            loopback: false,
        }
    }
}

impl InstanceAllowList {
    /// Also accept `domain` and its subdomains (a proxy, a private connect endpoint).
    #[must_use]
    pub fn with_domain(mut self, domain: &str) -> Self {
        self.domains
            .push(domain.trim_start_matches('.').to_ascii_lowercase());
        self
    }

    /// Also accept plain http on 127.0.0.1 / ::1 / localhost: the local sandbox.
    #[must_use]
    pub fn with_loopback(mut self) -> Self {
        self.loopback = true;
        self
    }

    /// `url` parsed, if allowed; else a `Config` error naming the URL and the fix.
    pub fn check(&self, url: &str) -> Result<Url> {
        let parsed = Url::parse(url).map_err(|e| {
            Error::config(format!("instance URL {url:?} is not a URL")).with_source(e)
        })?;
        let loopback = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if loopback && self.loopback {
            return Ok(parsed);
        }
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let allowed = self
            .domains
            .iter()
            .any(|d| host == *d || host.ends_with(&format!(".{d}")));
        if parsed.scheme() != "https"
            || !allowed
            || parsed.username() != ""
            || parsed.password().is_some()
        {
            return Err(Error::config(format!(
                "refusing to send a Salesforce token to {url}: not https on an allowed domain"
            ))
            .with_hint("the token endpoint returned an unexpected instance_url; if it is yours, add its domain with InstanceAllowList::with_domain"));
        }
        Ok(parsed)
    }
}

/// `target` resolved against `instance`: a path (`/services/data/…`) or a URL on the same
/// origin. Anything else is refused.
pub fn join(instance: &Url, target: &str) -> Result<Url> {
    let url = instance.join(target).map_err(|e| {
        Error::new(
            moodbridge_core::ErrorKind::Protocol,
            format!("{target:?} is not a valid path"),
        )
        .with_source(e)
    })?;
    if url.origin() != instance.origin() {
        return Err(Error::new(
            moodbridge_core::ErrorKind::Protocol,
            format!("Salesforce pointed to {target}, off the instance {instance}: not followed"),
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookalike_and_credentialed_hosts_are_refused() {
        let allow = InstanceAllowList::default();
        for bad in [
            "https://salesforce.com.evil.io",
            "https://evilsalesforce.com",
            "https://user:pw@acme.my.salesforce.com",
            "http://127.0.0.1:8080",
            "not a url",
        ] {
            assert!(allow.check(bad).is_err(), "{bad}");
        }
        assert!(allow.check("https://na1.salesforce.com").is_ok());
        assert!(
            allow
                .check("https://acme--uat.sandbox.my.salesforce.com")
                .is_ok()
        );
        assert!(
            allow
                .clone()
                .with_loopback()
                .check("http://127.0.0.1:8080")
                .is_ok()
        );
        assert!(
            allow
                .with_domain("sf.internal.example")
                .check("https://api.sf.internal.example")
                .is_ok()
        );
    }

    #[test]
    fn followed_urls_stay_on_the_instance() {
        let instance =
            Url::parse("https://acme.my.salesforce.com").unwrap_or_else(|_| unreachable!());
        assert!(join(&instance, "/services/data/v62.0/query/01g-2000").is_ok());
        assert!(join(&instance, "https://evil.example.com/steal").is_err());
        assert!(join(&instance, "//evil.example.com/steal").is_err());
    }
}
