//! # connector-salesforce
//!
//! The Salesforce connector of MoodBridge Integrations. Hosts enable it through the
//! umbrella crate's `salesforce` feature (`moodbridge::salesforce`).
//!
//! - [`error`] — Salesforce's error arrays mapped into the SDK's one error model;
//! - [`soql`] — a typed SOQL builder whose every value is escaped and every name checked;
//! - `sandbox` (feature `sandbox`) — the local Salesforce-compatible server, starting with
//!   its SOQL parser.
//!
//! ```
//! use connector_salesforce::soql::{Soql, field};
//! let q = Soql::select(["Id"]).from("Account").filter(field("Name").eq("Acme")).build().unwrap();
//! assert_eq!(q, "SELECT Id FROM Account WHERE Name = 'Acme'");
//! ```

pub mod error;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod soql;
