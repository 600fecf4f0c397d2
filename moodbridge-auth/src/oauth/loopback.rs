//! The authorization-code flow for command-line and desktop programs (RFC 8252): a
//! redirect listener on 127.0.0.1 at a random port receives the provider's redirect.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;
use moodbridge_core::{Error, ErrorKind, Result};
use tokio::sync::{Mutex, oneshot};
use url::Url;

use super::client::OAuthClient;
use super::token_set::TokenSet;

/// Log in through the user's browser: start a listener on `127.0.0.1:<random port>`, call
/// `open` with the authorization URL (open a browser, or print it), wait up to `timeout`
/// for the provider's redirect, check the state and exchange the code.
///
/// The client must be registered with the redirect URI `http://127.0.0.1/callback`
/// (providers accept any port on loopback redirects for native apps).
///
/// ```no_run
/// use moodbridge_auth::oauth::{login_with_loopback, OAuthClient};
/// use std::time::Duration;
///
/// # async fn run(client: OAuthClient) -> moodbridge_core::Result<()> {
/// let tokens = login_with_loopback(&client, &["openid", "offline_access"], Duration::from_secs(300), |url| {
///     println!("Open this URL to log in: {url}");
///     Ok(())
/// })
/// .await?;
/// # let _ = tokens; Ok(()) }
/// ```
pub async fn login_with_loopback(
    client: &OAuthClient,
    scopes: &[&str],
    timeout: Duration,
    open: impl FnOnce(&Url) -> Result<()>,
) -> Result<TokenSet> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| {
            Error::unavailable("cannot listen on 127.0.0.1 for the login redirect").with_source(e)
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::internal("listener has no address").with_source(e))?
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let (url, pending) = client.authorize_url(&redirect, scopes)?;

    let (tx, rx) = oneshot::channel::<HashMap<String, String>>();
    let tx = std::sync::Arc::new(Mutex::new(Some(tx)));
    let app = axum::Router::new().route(
        "/callback",
        get(move |Query(params): Query<HashMap<String, String>>| {
            let tx = tx.clone();
            async move {
                if let Some(tx) = tx.lock().await.take() {
                    let _ = tx.send(params);
                }
                Html("<!doctype html><title>Signed in</title><p>You can close this window and return to the application.</p>")
            }
        }),
    );
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });

    let outcome = async {
        open(&url)?;
        let params = tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| {
                Error::new(ErrorKind::Timeout, "no login redirect arrived in time")
                    .with_hint("log in again")
            })?
            .map_err(|_| Error::internal("the redirect listener stopped"))?;
        if let Some(error) = params.get("error") {
            return Err(Error::new(
                ErrorKind::Auth,
                format!(
                    "the provider refused the login: {error}{}",
                    params
                        .get("error_description")
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
            ));
        }
        let code = params
            .get("code")
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "the login redirect carried no code"))?;
        let state = params.get("state").map(String::as_str).unwrap_or_default();
        client.exchange_code(pending, code, state).await
    }
    .await;
    let _ = stop_tx.send(());
    let _ = server.await;
    outcome
}
