//! What the sandbox-backed test files share: the sandbox's OAuth provider, a token
//! manager with client-credential tokens, a connected client, a patient policy and fast
//! bulk polling.

#![allow(dead_code, reason = "each test file uses part of it")]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::Arc;
use std::time::Duration;

use connector_salesforce::bulk::PollOptions;
use connector_salesforce::client::SalesforceClient;
use connector_salesforce::instance::InstanceAllowList;
use moodbridge_auth::oauth::{ClientAuth, OAuthClient, Provider};
use moodbridge_auth::token_manager::{ClientCredentialsSource, TokenManager};
use moodbridge_core::{Policy, RetryConfig};
use salesforce_sandbox::RunningSandbox;
use secrecy::SecretString;

/// The sandbox as an identity provider: authorize, token and revoke endpoints.
pub fn provider(sb: &RunningSandbox) -> Provider {
    let base = sb.url();
    Provider {
        name: "sandbox".into(),
        issuer: base.to_owned(),
        authorization_endpoint: Some(format!("{base}/services/oauth2/authorize").parse().unwrap()),
        token_endpoint: format!("{base}/services/oauth2/token").parse().unwrap(),
        revocation_endpoint: Some(format!("{base}/services/oauth2/revoke").parse().unwrap()),
        jwks_uri: None,
        client_auth: ClientAuth::Body,
    }
}

/// A token manager with the sandbox's connected app registered as
/// `("sandbox", "integration")`, by the client-credentials grant.
pub fn tokens(sb: &RunningSandbox) -> TokenManager {
    let client = OAuthClient::new(
        provider(sb),
        "sandbox-client",
        Some(SecretString::from("sandbox-secret")),
    )
    .unwrap();
    let tokens = TokenManager::new();
    tokens.register(
        "sandbox",
        "integration",
        Arc::new(ClientCredentialsSource {
            client: Arc::new(client),
            scopes: Vec::new(),
            resource: None,
        }),
    );
    tokens
}

/// A client of the sandbox, with `policy` (or the default one).
pub async fn connect(sb: &RunningSandbox, policy: Option<Policy>) -> SalesforceClient {
    let mut b =
        SalesforceClient::builder("salesforce:sandbox", tokens(sb), "sandbox", "integration")
            .allow_instances(InstanceAllowList::default().with_loopback());
    if let Some(p) = policy {
        b = b.policy(p);
    }
    b.connect().await.unwrap()
}

/// Retries fast and often: for runs with injected faults.
pub fn patient() -> Policy {
    Policy::builder("salesforce:sandbox")
        .retry(RetryConfig {
            max_attempts: 12,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(10),
            max_elapsed: Duration::from_secs(30),
            budget: None,
        })
        .attempt_timeout(Duration::from_secs(10))
        .build()
}

/// Bulk job polling in milliseconds, not seconds.
pub fn fast_poll() -> PollOptions {
    PollOptions {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(50),
        timeout: Duration::from_secs(60),
    }
}
