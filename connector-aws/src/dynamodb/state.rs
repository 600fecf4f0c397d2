//! A DynamoDB table for the state a host without PostgreSQL still needs shared between
//! machines: subscription cursors ([`CursorStore`]).
//!
//! The table has a string partition key `pk` and a string sort key `sk`
//! ([`ensure`](DynamoStateTable::ensure) creates it). A cursor is the item
//! `pk = "cursor#<consumer>"`, `sk = <partition>` with `position`, `sequence` and
//! `committed_at`; a fenced commit is a conditional write on `sequence`, so of two
//! workers committing on the sequence they read exactly one wins.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType,
};
use moodbridge_core::state::{CursorStore, StoredCursor};
use moodbridge_core::{Error, ErrorKind, Result};

use super::value::Item;
use super::{DynamoDb, PLATFORM, condition_failed};

/// A state table: cursors (see the [module docs](self)). Made by
/// [`DynamoDb::state_table`].
#[derive(Debug, Clone)]
pub struct DynamoStateTable {
    db: DynamoDb,
    table: String,
}

fn built<T>(r: std::result::Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T> {
    r.map_err(|e| {
        Error::internal(format!("building a DynamoDB request: {e}")).with_connector(PLATFORM)
    })
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn number(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s),
        _ => None,
    }
}

fn cursor_pk(consumer: &str) -> String {
    format!("cursor#{consumer}")
}

impl DynamoStateTable {
    pub(crate) fn on(db: DynamoDb, table: String) -> Self {
        DynamoStateTable { db, table }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Create the table (on-demand capacity, keys `pk` and `sk`) unless it exists, and
    /// wait until it is active.
    ///
    /// # Errors
    /// The service's, mapped (`Forbidden` without `dynamodb:CreateTable`).
    pub async fn ensure(&self) -> Result<()> {
        let exists = self
            .db
            .call("describe_table", &self.table, true, || {
                self.db
                    .inner
                    .client
                    .describe_table()
                    .table_name(&self.table)
                    .send()
            })
            .await;
        match exists {
            Ok(_) => return self.wait_active().await,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let element = |name: &str, kind: KeyType| {
            built(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build(),
            )
        };
        let definition = |name: &str| {
            built(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build(),
            )
        };
        let request = self
            .db
            .inner
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(element("pk", KeyType::Hash)?)
            .key_schema(element("sk", KeyType::Range)?)
            .attribute_definitions(definition("pk")?)
            .attribute_definitions(definition("sk")?);
        match self
            .db
            .call("create_table", &self.table, false, || {
                request.clone().send()
            })
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            Err(e) => return Err(e),
        }
        self.wait_active().await
    }

    async fn wait_active(&self) -> Result<()> {
        for _ in 0..600 {
            let out = self
                .db
                .call("describe_table", &self.table, true, || {
                    self.db
                        .inner
                        .client
                        .describe_table()
                        .table_name(&self.table)
                        .send()
                })
                .await?;
            if out
                .table()
                .and_then(|t| t.table_status())
                .is_some_and(|s| *s == aws_sdk_dynamodb::types::TableStatus::Active)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "DynamoDB table {} did not become active within a minute",
                self.table
            ),
        )
        .with_connector(PLATFORM))
    }

    fn stored_cursor(consumer: &str, item: &Item) -> Result<StoredCursor> {
        let bad = || {
            Error::new(
                ErrorKind::Protocol,
                format!("a cursor item of {consumer} in the state table lacks its attributes"),
            )
            .with_connector(PLATFORM)
        };
        Ok(StoredCursor {
            consumer: consumer.to_owned(),
            partition: text(item, "sk").ok_or_else(bad)?.to_owned(),
            position: text(item, "position").ok_or_else(bad)?.to_owned(),
            sequence: number(item, "sequence").ok_or_else(bad)?,
            committed_at: SystemTime::UNIX_EPOCH
                + Duration::from_millis(
                    u64::try_from(number(item, "committed_at").unwrap_or(0)).unwrap_or(0),
                ),
        })
    }

    /// Every item of partition key `pk`, in sort-key order.
    async fn items_of(&self, pk: &str) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut page: Option<Item> = None;
        loop {
            let start = page.clone();
            let out = self
                .db
                .call("query", &self.table, true, || {
                    self.db
                        .inner
                        .client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("pk = :pk")
                        .expression_attribute_values(":pk", s(pk))
                        .consistent_read(true)
                        .set_exclusive_start_key(start.clone())
                        .send()
                })
                .await?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(k) => page = Some(k.clone()),
                None => return Ok(items),
            }
        }
    }
}

#[async_trait]
impl CursorStore for DynamoStateTable {
    async fn cursor(&self, consumer: &str, partition: &str) -> Result<Option<StoredCursor>> {
        let out = self
            .db
            .call("get_item", &self.table, true, || {
                self.db
                    .inner
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", s(cursor_pk(consumer)))
                    .key("sk", s(partition))
                    .consistent_read(true)
                    .send()
            })
            .await?;
        out.item()
            .map(|i| Self::stored_cursor(consumer, i))
            .transpose()
    }

    async fn commit_cursor(&self, consumer: &str, partition: &str, position: &str) -> Result<i64> {
        let now = millis(SystemTime::now());
        let out = self
            .db
            .call("update_item", &self.table, false, || {
                self.db
                    .inner
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(cursor_pk(consumer)))
                    .key("sk", s(partition))
                    .update_expression("SET #pos = :p, committed_at = :t ADD #seq :one")
                    .expression_attribute_names("#pos", "position")
                    .expression_attribute_names("#seq", "sequence")
                    .expression_attribute_values(":p", s(position))
                    .expression_attribute_values(":t", AttributeValue::N(now.to_string()))
                    .expression_attribute_values(":one", AttributeValue::N("1".into()))
                    .return_values(ReturnValue::AllNew)
                    .send()
            })
            .await?;
        out.attributes()
            .and_then(|a| number(a, "sequence"))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    "DynamoDB did not return the cursor's new sequence",
                )
                .with_connector(PLATFORM)
            })
    }

    async fn commit_cursor_if(
        &self,
        consumer: &str,
        partition: &str,
        position: &str,
        expected: i64,
    ) -> Result<i64> {
        let now = millis(SystemTime::now());
        let next = expected + 1;
        let result = self
            .db
            .call("put_item", &self.table, false, || {
                let put = self
                    .db
                    .inner
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .item("pk", s(cursor_pk(consumer)))
                    .item("sk", s(partition))
                    .item("position", s(position))
                    .item("sequence", AttributeValue::N(next.to_string()))
                    .item("committed_at", AttributeValue::N(now.to_string()));
                let put = if expected == 0 {
                    put.condition_expression("attribute_not_exists(pk)")
                } else {
                    put.condition_expression("#seq = :expected")
                        .expression_attribute_names("#seq", "sequence")
                        .expression_attribute_values(
                            ":expected",
                            AttributeValue::N(expected.to_string()),
                        )
                };
                put.send()
            })
            .await;
        match result {
            Ok(_) => Ok(next),
            Err(e) if condition_failed(&e) => Err(Error::new(
                ErrorKind::Conflict,
                format!("the cursor of {consumer} in {partition} is no longer at sequence {expected}: another worker committed"),
            )
            .with_connector(PLATFORM)
            .with_hint("read the cursor again and resume from it")),
            Err(e) => Err(e),
        }
    }

    async fn cursors(&self, consumer: &str) -> Result<Vec<StoredCursor>> {
        self.items_of(&cursor_pk(consumer))
            .await?
            .iter()
            .map(|i| Self::stored_cursor(consumer, i))
            .collect()
    }

    async fn reset_cursors(&self, consumer: &str) -> Result<u64> {
        let keys: Vec<Item> = self
            .items_of(&cursor_pk(consumer))
            .await?
            .into_iter()
            .map(|i| {
                i.into_iter()
                    .filter(|(k, _)| k == "pk" || k == "sk")
                    .collect()
            })
            .collect();
        let n = keys.len() as u64;
        for chunk in keys.chunks(super::sink::WRITE_BATCH) {
            let mut pending = super::sink::delete_requests(chunk.to_vec())?;
            for attempt in 0..8u32 {
                let sent = pending.clone();
                let out = self
                    .db
                    .call("batch_write_item", &self.table, true, || {
                        self.db
                            .inner
                            .client
                            .batch_write_item()
                            .request_items(&self.table, sent.clone())
                            .send()
                    })
                    .await?;
                pending = out
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
            }
            if !pending.is_empty() {
                return Err(Error::new(
                    ErrorKind::RateLimited { retry_after: None },
                    format!(
                        "DynamoDB left {} cursors of {consumer} undeleted (throttled)",
                        pending.len()
                    ),
                )
                .with_connector(PLATFORM)
                .with_hint("reset again"));
            }
        }
        Ok(n)
    }
}
