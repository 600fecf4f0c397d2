//! # moodbridge-auth
//!
//! Where every MoodBridge connector gets its tokens and secrets.
//!
//! - [`store`] — credential stores implementing core's
//!   [`CredentialStore`](moodbridge_core::CredentialStore): in-memory, environment, and an
//!   encrypted SQLite store (the embedded default).
//!
//! OAuth2 flows, the token manager and JWT validation land next (see the crate's issue).

pub mod store;
