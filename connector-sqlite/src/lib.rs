//! # connector-sqlite
//!
//! The embedded SQLite warehouse of MoodBridge Integrations: [`SqliteTableSink`], a core
//! `SyncSink` that keeps each stream in a table of a local SQLite database, and its kind
//! `sqlite-warehouse` ([`SqliteWarehouseFactory`]) for host configs. The quickstart's
//! warehouse, and the shape every warehouse sink follows (Snowflake's included): the
//! sink in `sink.rs`, the kind in `integration.rs`, the core `sync_sink_contract` in
//! `tests/`.
//!
//! ```
//! use connector_sqlite::SqliteTableSink;
//! use moodbridge_core::{Record, RecordBatch, StreamDescriptor, SyncSink, WriteMode};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let sink = SqliteTableSink::open(&dir.path().join("warehouse.db")).await.unwrap();
//! let append = WriteMode::Append;
//! sink.begin_stream(&StreamDescriptor::new("Case").primary_key(["Id"]), &append).await.unwrap();
//! let case = Record::from_json(serde_json::json!({"Id": "500A", "Subject": "Review"})).unwrap();
//! sink.write(&RecordBatch::new("Case", vec![case.clone()]), &append).await.unwrap();
//! assert_eq!(sink.rows("Case").await.unwrap(), vec![case]);
//! # });
//! ```

pub mod integration;
pub mod sink;

pub use integration::{KIND, SqliteWarehouse, SqliteWarehouseFactory, SqliteWarehouseSettings};
pub use sink::SqliteTableSink;
