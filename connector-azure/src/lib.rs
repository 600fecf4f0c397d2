//! # connector-azure
//!
//! The Azure connector of MoodBridge Integrations. Feature `blob` (on by default):
//! [`AzureBlobStore`], Azure Blob Storage behind the core
//! [`ObjectStore`](moodbridge_core::ObjectStore) capability, on the official
//! `azure_storage_blob` crate — with what that crate leaves out added here ([`auth`]):
//! connection strings, the Shared Key signing policy and service SAS URLs. Feature
//! `queue`: [`queue::AzureQueue`], Azure Queue storage behind the core
//! [`MessageQueue`](moodbridge_core::queue::MessageQueue) capability (kind
//! `azure-queue`), on the official `azure_storage_queue` crate, with poison queues.
//! Feature `servicebus`: [`servicebus::ServiceBusQueue`], Azure Service Bus queues and
//! subscriptions behind the same capability (kind `azure-servicebus`), over AMQP 1.0 with
//! `fe2o3-amqp`. Feature `keyvault`: [`keyvault::KeyVaultStore`], Key Vault secrets as a
//! credential store.
//!
//! ```no_run
//! use connector_azure::auth::ConnectionString;
//! use connector_azure::blob::AzureBlobStore;
//! use moodbridge_core::storage::{ObjectKey, ObjectStoreExt, PutOptions};
//!
//! # async fn run(connection_string: &str) -> moodbridge_core::Result<()> {
//! let cs = ConnectionString::parse(connection_string)?;
//! let store = AzureBlobStore::builder("case-documents").connection_string(&cs).build()?;
//! let key = ObjectKey::new("cases/500Ax/complaint.pdf")?;
//! store.put_bytes(&key, b"%PDF-1.7".to_vec(), PutOptions::new().content_type("application/pdf")).await?;
//! # Ok(()) }
//! ```

#[cfg(any(feature = "blob", feature = "queue", feature = "keyvault"))]
pub mod auth;
#[cfg(feature = "blob")]
pub mod blob;
#[cfg(any(feature = "blob", feature = "queue"))]
pub mod config;
#[cfg(feature = "keyvault")]
pub mod entra;
#[cfg(feature = "blob")]
pub mod integration;
#[cfg(feature = "keyvault")]
pub mod keyvault;
#[cfg(feature = "queue")]
pub mod queue;
#[cfg(feature = "servicebus")]
pub mod servicebus;
#[cfg(any(feature = "blob", feature = "queue", feature = "keyvault"))]
pub mod storage;

#[cfg(feature = "blob")]
pub use blob::AzureBlobStore;
#[cfg(feature = "blob")]
pub use config::AzureBlobSettings;
#[cfg(feature = "blob")]
pub use integration::{AzureBlobFactory, KIND};
#[cfg(feature = "keyvault")]
pub use keyvault::{KEYVAULT_KIND, KeyVaultFactory, KeyVaultSettings, KeyVaultStore};
#[cfg(feature = "queue")]
pub use queue::{AzureQueue, AzureQueueFactory, AzureQueueSettings, QUEUE_KIND};
#[cfg(feature = "servicebus")]
pub use servicebus::{SERVICE_BUS_KIND, ServiceBusFactory, ServiceBusQueue, ServiceBusSettings};
