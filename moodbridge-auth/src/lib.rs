//! # moodbridge-auth
//!
//! Where every MoodBridge connector gets its tokens and secrets.
//!
//! - [`store`] — credential stores implementing core's
//!   [`CredentialStore`](moodbridge_core::CredentialStore): in-memory, environment, and an
//!   encrypted SQLite store (the embedded default).
//!
//! - [`jwt`] — JWT validation against issuers' JWKS (cached, rotation-aware, hostile-input
//!   safe).
//! - [`discovery`] — OpenID Connect discovery.
//! - [`http`] — the HTTP rules the crate follows with identity providers.
//!
//! - [`oauth`] — OAuth 2.0 flows: client credentials, authorization code + PKCE (web and
//!   loopback), refresh with rotation, JWT bearer (RFC 7523), revocation; provider presets.
//! - [`token_manager`] — cached, single-flight, persisted access tokens for connectors.
//!
//! | feature | adds |
//! |---|---|
//! | `sqlite` (default) | `store::EncryptedStore`, the encrypted credential store on SQLite (kind `encrypted-sqlite`) |
//! | `loopback` (default) | `oauth::login_with_loopback`, the authorization-code login of command-line and desktop programs (an HTTP listener on 127.0.0.1) |

pub mod discovery;
pub mod http;
pub mod jwt;
pub mod oauth;
pub mod store;
pub mod token_manager;
