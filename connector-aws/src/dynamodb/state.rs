//! A DynamoDB table for the state a host without PostgreSQL still needs shared between
//! machines: subscription cursors ([`CursorStore`]) and leases ([`LeaseStore`]).
//!
//! The table has a string partition key `pk` and a string sort key `sk`
//! ([`ensure`](DynamoStateTable::ensure) creates it).
//! - A cursor is the item `pk = "cursor#<consumer>"`, `sk = <partition>` with
//!   `position`, `sequence` and `committed_at`; a fenced commit is a conditional write on
//!   `sequence`, so of two workers committing on the sequence they read exactly one wins.
//! - A lease is the item `pk = "lease"`, `sk = <name>` with `holder`, `token` and
//!   `expires_at_ms`. Taking one is a conditional write on the token and expiry read just
//!   before, so of two workers taking it at once exactly one succeeds; every new holder
//!   gets the next token (the fencing token), and a released lease keeps its token.
//!   Expiry is judged by each worker's clock: keep the hosts' clocks in sync (NTP) and
//!   leases much longer than their skew.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType,
};
use moodbridge_core::state::{CursorStore, Lease, LeaseStore, StoredCursor};
use moodbridge_core::{Error, ErrorKind, Result};

use super::sink::BatchWritten;
use super::value::Item;
use super::{DynamoDb, PLATFORM, built, condition_failed};

/// A state table: cursors and leases (see the [module docs](self)). Made by
/// [`DynamoDb::state_table`].
///
/// ```no_run
/// use connector_aws::dynamodb::DynamoDb;
/// use moodbridge_core::state::{CursorStore, LeaseStore};
/// use std::time::Duration;
///
/// # async fn run() -> moodbridge_core::Result<()> {
/// let state = DynamoDb::builder().region("eu-west-1").build().await?.state_table("moodbridge-state");
/// state.ensure().await?;
/// if let Some(lease) = state.acquire_lease("case-changes", "host-a", Duration::from_secs(30)).await? {
///     state.commit_cursor("case-changes", "/data/CaseChangeEvent", "8123").await?;
///     state.release_lease(&lease).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DynamoStateTable {
    db: DynamoDb,
    table: String,
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

/// The partition of lease items.
const LEASE_PK: &str = "lease";

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
            Ok(_) => return self.db.wait_active(&self.table).await,
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
        self.db.wait_active(&self.table).await
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
            let requests = super::sink::delete_requests(chunk.to_vec())?;
            match self.db.write_batch(&self.table, requests).await {
                BatchWritten::Done => {}
                BatchWritten::Failed(_, e) => return Err(e),
                BatchWritten::Unprocessed(left) => {
                    return Err(Error::new(
                        ErrorKind::RateLimited { retry_after: None },
                        format!(
                            "DynamoDB left {} cursors of {consumer} undeleted (throttled)",
                            left.len()
                        ),
                    )
                    .with_connector(PLATFORM)
                    .with_hint("reset again"));
                }
            }
        }
        Ok(n)
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

impl DynamoStateTable {
    /// The lease items of `names` (consistent reads), by name.
    async fn lease_items(
        &self,
        names: &[String],
    ) -> Result<std::collections::HashMap<String, Item>> {
        let mut found = std::collections::HashMap::new();
        for chunk in names.chunks(super::sink::GET_BATCH) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|n| {
                    Item::from([
                        ("pk".to_owned(), s(LEASE_PK)),
                        ("sk".to_owned(), s(n.as_str())),
                    ])
                })
                .collect();
            for item in self.db.get_chunk(&self.table, &keys).await? {
                if let Some(name) = text(&item, "sk") {
                    found.insert(name.to_owned(), item);
                }
            }
        }
        Ok(found)
    }

    /// Take lease `name` for `holder` from the state read (`seen`, none: never leased),
    /// in one conditional write: it succeeds only if the item is still as read. `None`
    /// when another worker changed it first.
    async fn take(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        seen: Option<&Item>,
        keep_token: bool,
    ) -> Result<Option<Lease>> {
        let old_token = seen.and_then(|i| number(i, "token")).unwrap_or(0);
        let token = if keep_token { old_token } else { old_token + 1 };
        let expires = millis(SystemTime::now()).saturating_add(ttl_ms(ttl));
        let result = self
            .db
            .call("put_item", &self.table, false, || {
                let put = self
                    .db
                    .inner
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .item("pk", s(LEASE_PK))
                    .item("sk", s(name))
                    .item("holder", s(holder))
                    .item("token", AttributeValue::N(token.to_string()))
                    .item("expires_at_ms", AttributeValue::N(expires.to_string()));
                match seen {
                    None => put.condition_expression("attribute_not_exists(pk)"),
                    Some(item) => put
                        .condition_expression("#token = :token AND #exp = :exp")
                        .expression_attribute_names("#token", "token")
                        .expression_attribute_names("#exp", "expires_at_ms")
                        .expression_attribute_values(
                            ":token",
                            AttributeValue::N(old_token.to_string()),
                        )
                        .expression_attribute_values(
                            ":exp",
                            AttributeValue::N(
                                number(item, "expires_at_ms").unwrap_or(0).to_string(),
                            ),
                        ),
                }
                .send()
            })
            .await;
        match result {
            Ok(_) => Ok(Some(Lease {
                name: name.to_owned(),
                holder: holder.to_owned(),
                token,
                expires_at_ms: expires,
            })),
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl DynamoStateTable {
    /// Apply `update` (over `#exp`, `#holder` and the values `set`) to `lease`'s item
    /// only while `lease` still holds it (same holder and token).
    async fn while_held(
        &self,
        lease: &Lease,
        update: &str,
        set: &[(&str, AttributeValue)],
    ) -> Result<()> {
        self.db
            .call("update_item", &self.table, true, || {
                let mut request = self
                    .db
                    .inner
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(LEASE_PK))
                    .key("sk", s(lease.name.as_str()))
                    .update_expression(update)
                    .condition_expression("#holder = :holder AND #token = :token")
                    .expression_attribute_names("#exp", "expires_at_ms")
                    .expression_attribute_names("#holder", "holder")
                    .expression_attribute_names("#token", "token")
                    .expression_attribute_values(":holder", s(lease.holder.as_str()))
                    .expression_attribute_values(
                        ":token",
                        AttributeValue::N(lease.token.to_string()),
                    );
                for (name, value) in set {
                    request = request.expression_attribute_values(*name, value.clone());
                }
                request.send()
            })
            .await
            .map(|_| ())
    }
}

/// Where a lease stands for a would-be holder.
enum Standing {
    /// Free, released or lapsed: takeable with a new token.
    Free,
    /// Held by this holder: extended with its token.
    Own,
    /// Held by someone else.
    Taken,
}

fn standing(item: Option<&Item>, holder: &str, now: i64) -> Standing {
    let Some(item) = item else {
        return Standing::Free;
    };
    let expires = number(item, "expires_at_ms").unwrap_or(0);
    let held_by = text(item, "holder").filter(|h| !h.is_empty());
    match held_by {
        Some(h) if expires > now && h == holder => Standing::Own,
        Some(_) if expires > now => Standing::Taken,
        _ => Standing::Free,
    }
}

#[async_trait]
impl LeaseStore for DynamoStateTable {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let items = self.lease_items(&[name.to_owned()]).await?;
        let item = items.get(name);
        match standing(item, holder, millis(SystemTime::now())) {
            Standing::Taken => Ok(None),
            Standing::Own => self.take(name, holder, ttl, item, true).await,
            Standing::Free => self.take(name, holder, ttl, item, false).await,
        }
    }

    async fn claim_lease(
        &self,
        names: &[String],
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        if names.is_empty() {
            return Ok(None);
        }
        let items = self.lease_items(names).await?;
        let now = millis(SystemTime::now());
        // Free ones, the one lapsed longest first (never leased: first of all).
        let mut free: Vec<(i64, &String)> = names
            .iter()
            .filter(|n| matches!(standing(items.get(*n), holder, now), Standing::Free))
            .map(|n| {
                (
                    items
                        .get(n)
                        .and_then(|i| number(i, "expires_at_ms"))
                        .unwrap_or(i64::MIN),
                    n,
                )
            })
            .collect();
        free.sort();
        for (_, name) in free {
            // Another worker may take it between the read and the write: then the
            // conditional write fails and the next one is tried.
            if let Some(lease) = self.take(name, holder, ttl, items.get(name), false).await? {
                return Ok(Some(lease));
            }
        }
        Ok(None)
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let expires = millis(SystemTime::now()).saturating_add(ttl_ms(ttl));
        let set = [(":exp", AttributeValue::N(expires.to_string()))];
        match self.while_held(lease, "SET #exp = :exp", &set).await {
            Ok(()) => Ok(Lease {
                expires_at_ms: expires,
                ..lease.clone()
            }),
            Err(e) if condition_failed(&e) => Err(Error::new(
                ErrorKind::Conflict,
                format!("the lease on {} was lost to another worker", lease.name),
            )
            .with_connector(PLATFORM)
            .with_hint("stop working on it: another worker resumes from the last checkpoint")),
            Err(e) => Err(e),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let set = [(":none", s("")), (":exp", AttributeValue::N("0".into()))];
        match self
            .while_held(lease, "SET #holder = :none, #exp = :exp", &set)
            .await
        {
            // Already lost: nothing to give back.
            Err(e) if condition_failed(&e) => Ok(()),
            other => other,
        }
    }
}
