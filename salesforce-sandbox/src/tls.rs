//! HTTPS for the sandbox (cargo feature `tls`): a throwaway self-signed certificate for
//! `127.0.0.1` and `localhost`, made when the sandbox starts, so that clients that speak
//! only https (Python's `simple-salesforce`) reach it; they trust it through its PEM
//! ([`RunningSandbox::ca_pem`](crate::RunningSandbox::ca_pem)).

use std::sync::Arc;

use moodbridge_core::{Error, Result};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// A certificate and the acceptor serving it.
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    /// The certificate, PEM: what a client adds to its trusted roots.
    pub(crate) cert_pem: String,
}

/// A fresh self-signed certificate for the loopback names, and a TLS acceptor for it.
pub(crate) fn self_signed() -> Result<Tls> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: &dyn std::fmt::Display| Error::internal(format!("sandbox TLS: {what}: {e}"))
    };
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .map_err(|e| fail("certificate")(&e))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("protocol versions")(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .map_err(|e| fail("server config")(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        cert_pem: cert.pem(),
    })
}

/// Serve `app` over TLS on `listener` until `stopped` fires: each accepted connection is
/// handshaken and served (HTTP/1.1 or HTTP/2) in a task of its own.
pub(crate) async fn serve<S>(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    app: S,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) where
    S: tower::Service<
            axum::extract::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let io = hyper_util::rt::TokioIo::new(tls);
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(io, service)
                    .await;
        });
        // Finished connections are reaped as new ones come.
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}
