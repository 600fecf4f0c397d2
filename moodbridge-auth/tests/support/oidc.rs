//! The real OpenID provider (oidc-provider, tests/oidc/provider.mjs) as a child process on
//! 127.0.0.1, killed when dropped; and a headless browser that walks the login hops.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct OidcProvider {
    pub issuer: String,
    pub port: u16,
    child: Child,
}

#[derive(Default)]
pub struct Options {
    pub port: Option<u16>,
    pub kid: Option<String>,
    pub access_token_ttl: Option<u64>,
    pub jwt_bearer_key_file: Option<PathBuf>,
}

fn project() -> PathBuf {
    moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

impl OidcProvider {
    pub async fn start(options: Options) -> OidcProvider {
        let dir = project();
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run `npm ci` in {} (scripts/test.sh does)",
            dir.display()
        );
        let mut cmd = Command::new("node");
        cmd.arg("provider.mjs")
            .current_dir(&dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .env("OIDC_PORT", options.port.unwrap_or(0).to_string())
            .env("OIDC_KID", options.kid.unwrap_or_else(|| "k1".into()))
            .env(
                "OIDC_ACCESS_TOKEN_TTL",
                options.access_token_ttl.unwrap_or(300).to_string(),
            );
        if let Some(f) = &options.jwt_bearer_key_file {
            cmd.env("OIDC_JWT_BEARER_KEY_FILE", f);
        }
        let mut child = cmd
            .spawn()
            .expect("node must be installed to run the OIDC tests");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let issuer = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(i) = v.get("issuer").and_then(|i| i.as_str())
                {
                    return i.to_owned();
                }
            }
            panic!("the OIDC provider exited before it was ready");
        })
        .await
        .expect("the OIDC provider did not start within 30 s");
        // Keep reading: the provider logs notices to stdout, and a closed pipe would kill it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = issuer.rsplit(':').next().unwrap().parse().unwrap();
        OidcProvider {
            issuer,
            port,
            child,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

/// Follow the provider's redirects as a browser would (keeping cookies), until a redirect
/// points at `redirect_prefix`; return that final URL (it carries `code` and `state`).
pub async fn browse_to_redirect(start: &url::Url, redirect_prefix: &str) -> url::Url {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut url = start.clone();
    for _ in 0..12 {
        let response = browser.get(url.clone()).send().await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        let Some(location) = location else {
            panic!(
                "login stopped at {url} with HTTP {status}: {}",
                response.text().await.unwrap_or_default()
            );
        };
        let next = url.join(&location).unwrap();
        if next.as_str().starts_with(redirect_prefix) {
            return next;
        }
        url = next;
    }
    panic!("too many redirects during login");
}

pub fn query(url: &url::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// Log "alice" in through the authorization-code flow (server-side sessions, headless
/// browser) with scopes `openid offline_access api:read`.
pub async fn code_login(
    web: &moodbridge_auth::oauth::OAuthClient,
) -> moodbridge_auth::oauth::TokenSet {
    let sessions = moodbridge_auth::oauth::AuthorizationSessions::new();
    let redirect = "http://127.0.0.1:9/callback";
    let url = sessions
        .begin(web, redirect, &["openid", "offline_access", "api:read"])
        .await
        .unwrap();
    let back = browse_to_redirect(&url, redirect).await;
    sessions
        .complete(web, &query(&back, "code"), &query(&back, "state"))
        .await
        .unwrap()
}
