//! A local Salesforce-compatible sandbox server (feature `sandbox`), built from the
//! published REST API reference because Salesforce has no emulator. This step holds its
//! SOQL parser; the server itself lands with the next step of the connector.

pub mod soql;
