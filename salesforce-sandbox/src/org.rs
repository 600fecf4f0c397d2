//! The sandbox's org: object definitions (Account, Contact, Case and custom objects),
//! records in memory, Salesforce-shaped ids, system fields maintained on every write,
//! soft deletes, and a deterministic seed of realistic data.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::changes::{ChangeLog, ChangeType};
use crate::error::ApiError;
use crate::soql::{self, Predicate};

/// A field of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDef {
    /// API name.
    pub name: String,
    /// Salesforce type: `id`, `string`, `textarea`, `email`, `phone`, `url`, `picklist`,
    /// `boolean`, `double`, `currency`, `int`, `date`, `datetime`, `reference`.
    #[serde(rename = "type")]
    pub field_type: String,
    /// Whether it may be empty.
    #[serde(default = "yes")]
    pub nillable: bool,
    /// Whether it is an external id (usable for upsert).
    #[serde(default)]
    pub external_id: bool,
    /// Objects a reference points to.
    #[serde(default)]
    pub reference_to: Vec<String>,
    /// Maximum length of text.
    #[serde(default)]
    pub length: Option<u32>,
    /// Maintained by the platform (not writable).
    #[serde(default)]
    pub system: bool,
}

fn yes() -> bool {
    true
}

impl FieldDef {
    /// A nillable, writable field of `field_type` (text types get Salesforce's default
    /// lengths: 255, or 32,000 for `textarea`).
    ///
    /// ```
    /// use salesforce_sandbox::org::{FieldDef, ObjectDef};
    /// let matter = ObjectDef::new("Matter__c", "a01", vec![
    ///     FieldDef::new("Name", "string").required(),
    ///     FieldDef::new("Client__c", "reference").reference("Account"),
    ///     FieldDef::new("Docket__c", "string").external(),
    /// ]);
    /// assert!(matter.field("docket__c").is_some_and(|f| f.external_id));
    /// ```
    pub fn new(name: &str, field_type: &str) -> Self {
        FieldDef {
            name: name.into(),
            field_type: field_type.into(),
            nillable: true,
            external_id: false,
            reference_to: Vec::new(),
            length: match field_type {
                "string" | "email" | "phone" | "url" | "picklist" => Some(255),
                "textarea" => Some(32_000),
                _ => None,
            },
            system: false,
        }
    }
    /// Required on create (not nillable).
    #[must_use]
    pub fn required(mut self) -> Self {
        self.nillable = false;
        self
    }
    fn system(mut self) -> Self {
        self.system = true;
        self
    }
    /// A reference to `to` (its relationship name drops `Id`, or `__c` becomes `__r`).
    #[must_use]
    pub fn reference(mut self, to: &str) -> Self {
        self.reference_to = vec![to.into()];
        self
    }
    /// An external id (unique; usable for upserts).
    #[must_use]
    pub fn external(mut self) -> Self {
        self.external_id = true;
        self
    }
}

/// An object (sObject type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectDef {
    /// API name (`Account`, `Matter__c`).
    pub name: String,
    /// The 3-character id prefix.
    pub key_prefix: String,
    /// Its fields (system fields included).
    pub fields: Vec<FieldDef>,
}

impl ObjectDef {
    /// An object with the system fields every object has, plus `fields`.
    pub fn new(name: &str, key_prefix: &str, fields: Vec<FieldDef>) -> Self {
        let mut all = vec![
            FieldDef::new("Id", "id").required().system(),
            FieldDef::new("IsDeleted", "boolean").required().system(),
            FieldDef::new("CreatedDate", "datetime").required().system(),
            FieldDef::new("LastModifiedDate", "datetime")
                .required()
                .system(),
            FieldDef::new("SystemModstamp", "datetime")
                .required()
                .system(),
        ];
        all.extend(fields);
        ObjectDef {
            name: name.into(),
            key_prefix: key_prefix.into(),
            fields: all,
        }
    }

    /// The field named `name` (case-insensitive, as Salesforce).
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Whether it is a custom object.
    pub fn is_custom(&self) -> bool {
        self.name.ends_with("__c")
    }
}

/// The standard objects the sandbox serves: Account, Contact, Case.
pub fn standard_objects() -> Vec<ObjectDef> {
    let s = FieldDef::new;
    vec![
        ObjectDef::new(
            "Account",
            "001",
            vec![
                s("Name", "string").required(),
                s("Type", "picklist"),
                s("Industry", "picklist"),
                s("BillingCity", "string"),
                s("BillingState", "string"),
                s("BillingCountry", "string"),
                s("Phone", "phone"),
                s("Website", "url"),
                s("AnnualRevenue", "currency"),
                s("NumberOfEmployees", "int"),
                s("Description", "textarea"),
                s("External_Id__c", "string").external(),
            ],
        ),
        ObjectDef::new(
            "Contact",
            "003",
            vec![
                s("FirstName", "string"),
                s("LastName", "string").required(),
                s("Email", "email"),
                s("Phone", "phone"),
                s("Title", "string"),
                s("AccountId", "reference").reference("Account"),
                s("External_Id__c", "string").external(),
            ],
        ),
        ObjectDef::new(
            "Case",
            "500",
            vec![
                s("Subject", "string"),
                s("Description", "textarea"),
                s("Status", "picklist").required(),
                s("Priority", "picklist"),
                s("Origin", "picklist"),
                s("AccountId", "reference").reference("Account"),
                s("ContactId", "reference").reference("Contact"),
                s("IsClosed", "boolean"),
                s("External_Id__c", "string").external(),
            ],
        ),
        // Streaming API PushTopics: a record per topic (`/topic/<Name>`).
        ObjectDef::new(
            "PushTopic",
            "0IF",
            vec![
                s("Name", "string").required(),
                FieldDef {
                    length: Some(1_300),
                    ..s("Query", "string").required()
                },
                s("ApiVersion", "double"),
                s("NotifyForOperationCreate", "boolean"),
                s("NotifyForOperationUpdate", "boolean"),
                s("NotifyForOperationDelete", "boolean"),
                s("NotifyForFields", "picklist"),
                s("IsActive", "boolean"),
            ],
        ),
    ]
}

/// A stored record: its fields (system fields included) in a JSON map.
pub type Fields = Map<String, Value>;

/// The org: definitions and data.
#[derive(Debug, Clone)]
pub struct Org {
    objects: BTreeMap<String, ObjectDef>,
    records: HashMap<String, BTreeMap<String, Fields>>,
    /// The ids of each object's soft-deleted records (`IsDeleted` true): live records are
    /// told apart by id, without reading every record's fields (a scan of 1M records).
    deleted: HashMap<String, HashSet<String>>,
    next_id: u64,
    /// Milliseconds since the epoch of the last stamp given (stamps strictly increase).
    last_stamp_ms: u64,
    /// Set when definitions change (describe's `Last-Modified`).
    pub schema_changed: SystemTime,
    /// Every delete, soft or hard: (object, id, milliseconds since the epoch), oldest
    /// first — what `sObject Get Deleted` reads.
    delete_log: Vec<(String, String, u64)>,
    /// Live records by (object, external id field, value): upserts and duplicate checks
    /// without a scan.
    external: HashMap<(String, String, String), String>,
    /// Change Data Capture events of every create, update and delete.
    pub(crate) changes: ChangeLog,
    /// Decides whether a PushTopic's `WHERE` selects a record; set by the server (the
    /// query evaluator sits above the org). Unset, no filtered topic is notified.
    topic_filter: Option<RecordFilter>,
}

/// Whether a record satisfies a SOQL `WHERE` predicate.
pub(crate) type RecordFilter = fn(&Org, &ObjectDef, &Fields, &Predicate) -> Result<bool, ApiError>;

fn err(code: &str, message: impl Into<String>, fields: &[&str]) -> ApiError {
    ApiError {
        message: message.into(),
        error_code: code.into(),
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

/// Salesforce's 18-character id: the 15-character id plus 3 characters encoding the case
/// of its letters (so the id survives case-insensitive systems).
pub fn id18(id15: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut suffix = String::with_capacity(3);
    for chunk in id15.as_bytes().chunks(5) {
        let mut bits = 0usize;
        for (i, b) in chunk.iter().enumerate() {
            if b.is_ascii_uppercase() {
                bits |= 1 << i;
            }
        }
        suffix.push(ALPHABET[bits] as char);
    }
    format!("{id15}{suffix}")
}

pub(crate) fn base62(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A datetime as Salesforce writes it: `2026-11-20T10:00:00.000+0000`.
pub fn sf_datetime(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_millis(t).to_string();
    format!("{}+0000", s.trim_end_matches('Z'))
}

impl Default for Org {
    fn default() -> Self {
        Org::new(standard_objects())
    }
}

impl Org {
    /// An empty org with `objects`.
    pub fn new(objects: Vec<ObjectDef>) -> Self {
        Org {
            objects: objects.into_iter().map(|o| (o.name.clone(), o)).collect(),
            records: HashMap::new(),
            deleted: HashMap::new(),
            next_id: 1,
            last_stamp_ms: 0,
            schema_changed: SystemTime::now(),
            delete_log: Vec::new(),
            external: HashMap::new(),
            changes: ChangeLog::default(),
            topic_filter: None,
        }
    }

    /// Set how PushTopic `WHERE` clauses are evaluated.
    pub(crate) fn set_topic_filter(&mut self, filter: RecordFilter) {
        self.topic_filter = Some(filter);
    }

    /// Add (or replace) an object definition, e.g. a custom object `Matter__c`.
    pub fn define(&mut self, object: ObjectDef) {
        self.objects.insert(object.name.clone(), object);
        self.schema_changed = SystemTime::now();
    }

    /// Every object, by name.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectDef> {
        self.objects.values()
    }

    /// The object named `name` (case-insensitive).
    pub fn object(&self, name: &str) -> Option<&ObjectDef> {
        self.objects
            .values()
            .find(|o| o.name.eq_ignore_ascii_case(name))
    }

    fn object_or_err(&self, name: &str) -> Result<ObjectDef, ApiError> {
        self.object(name).cloned().ok_or_else(|| {
            err(
                "NOT_FOUND",
                format!(
                    "The requested resource does not exist: sObject type '{name}' is not supported."
                ),
                &[],
            )
        })
    }

    /// A strictly increasing timestamp.
    fn stamp(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        self.last_stamp_ms = now.max(self.last_stamp_ms + 1);
        sf_datetime(UNIX_EPOCH + Duration::from_millis(self.last_stamp_ms))
    }

    fn new_id(&mut self, prefix: &str) -> String {
        let n = self.next_id;
        self.next_id += 1;
        // prefix (3) + pod/instance "8d" + reserved "0" + 9 base-62 digits = 15.
        id18(&format!("{prefix}8d0{}", base62(n, 9)))
    }

    /// Every live (or, with `all_rows`, also deleted) record of `object`.
    pub fn rows(&self, object: &str, all_rows: bool) -> Vec<&Fields> {
        let Some(table) = self.records.get(object) else {
            return Vec::new();
        };
        match self
            .deleted
            .get(object)
            .filter(|d| !all_rows && !d.is_empty())
        {
            None => table.values().collect(),
            Some(deleted) => table
                .iter()
                .filter(|(id, _)| !deleted.contains(*id))
                .map(|(_, r)| r)
                .collect(),
        }
    }

    /// Whether record `id` (normalized) of `object` is soft-deleted.
    fn is_deleted(&self, object: &str, id: &str) -> bool {
        self.deleted.get(object).is_some_and(|d| d.contains(id))
    }

    /// Note record `id` (normalized) of `object` as soft-deleted or not.
    fn mark_deleted(&mut self, object: &str, id: &str, deleted: bool) {
        if deleted {
            self.deleted
                .entry(object.to_owned())
                .or_default()
                .insert(id.to_owned());
        } else if let Some(d) = self.deleted.get_mut(object) {
            d.remove(id);
        }
    }

    /// The live record `id` of `object`.
    pub fn get(&self, object: &str, id: &str) -> Option<&Fields> {
        let id = normalize_id(id);
        self.records
            .get(object)?
            .get(&id)
            .filter(|_| !self.is_deleted(object, &id))
    }

    /// Any record by id, whatever its object (for relationship lookups).
    pub fn get_any(&self, id: &str) -> Option<(&str, &Fields)> {
        let id = normalize_id(id);
        let prefix = id.get(..3)?;
        let object = self.objects.values().find(|o| o.key_prefix == prefix)?;
        self.get(&object.name, &id)
            .map(|r| (object.name.as_str(), r))
    }

    /// Check `values` against the object's fields: names exist, writable, types and
    /// lengths right. Returns the values with names as defined.
    fn check(
        &self,
        object: &ObjectDef,
        values: &Fields,
        creating: bool,
    ) -> Result<Fields, ApiError> {
        let mut out = Map::new();
        for (name, value) in values {
            if name == "attributes" {
                continue;
            }
            let Some(f) = object.field(name) else {
                return Err(err(
                    "INVALID_FIELD",
                    format!("No such column '{name}' on sobject of type {}", object.name),
                    &[name],
                ));
            };
            if f.system {
                return Err(err(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!(
                        "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                        f.name
                    ),
                    &[&f.name],
                ));
            }
            let ok = match (f.field_type.as_str(), value) {
                (_, Value::Null) => true,
                ("boolean", v) => v.is_boolean(),
                ("double" | "currency" | "percent", v) => v.is_number(),
                ("int", v) => v.is_i64() || v.is_u64(),
                (_, v) => v.is_string(),
            };
            if !ok {
                return Err(err(
                    "JSON_PARSER_ERROR",
                    format!(
                        "Cannot deserialize instance of {} from {value} value for field {}",
                        f.field_type, f.name
                    ),
                    &[&f.name],
                ));
            }
            if let (Some(max), Some(s)) = (f.length, value.as_str())
                && s.chars().count() > max as usize
            {
                return Err(err(
                    "STRING_TOO_LONG",
                    format!(
                        "{}: data value too large: {} (max length={max})",
                        f.name,
                        s.chars().take(20).collect::<String>()
                    ),
                    &[&f.name],
                ));
            }
            if f.field_type == "reference"
                && let Some(target) = value.as_str()
                && self.get_any(target).is_none()
            {
                return Err(err(
                    "INVALID_CROSS_REFERENCE_KEY",
                    format!("invalid cross reference id: {target}"),
                    &[&f.name],
                ));
            }
            out.insert(f.name.clone(), value.clone());
        }
        // A create must give every required field; an update may leave them out, but
        // may not set one to null (Salesforce answers both with REQUIRED_FIELD_MISSING).
        let missing: Vec<&str> = object
            .fields
            .iter()
            .filter(|f| !f.nillable && !f.system)
            .filter(|f| match out.get(&f.name) {
                None => creating,
                Some(v) => v.is_null(),
            })
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(err(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
                &missing,
            ));
        }
        Ok(out)
    }

    /// Create a record; its id.
    pub fn create(&mut self, object: &str, values: &Fields) -> Result<String, ApiError> {
        let def = self.object_or_err(object)?;
        let mut fields = self.check(&def, values, true)?;
        for f in &def.fields {
            if f.external_id
                && let Some(v) = fields.get(&f.name).filter(|v| !v.is_null())
                && self.find_by(&def.name, &f.name, v).is_some()
            {
                return Err(err(
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {} duplicates value on record with id: {}",
                        f.name,
                        self.find_by(&def.name, &f.name, v).unwrap_or_default()
                    ),
                    &[&f.name],
                ));
            }
        }
        let id = self.new_id(&def.key_prefix);
        let stamp = self.stamp();
        fields.insert("Id".into(), json!(id));
        fields.insert("IsDeleted".into(), json!(false));
        fields.insert("CreatedDate".into(), json!(stamp));
        fields.insert("LastModifiedDate".into(), json!(stamp));
        fields.insert("SystemModstamp".into(), json!(stamp));
        let created = fields.clone();
        self.records
            .entry(def.name.clone())
            .or_default()
            .insert(id.clone(), fields);
        self.index_external(&def.name, &id, false);
        self.publish(&def.name, &id, ChangeType::Create, &created);
        Ok(id)
    }

    /// Update a record's fields.
    pub fn update(&mut self, object: &str, id: &str, values: &Fields) -> Result<(), ApiError> {
        let def = self.object_or_err(object)?;
        let fields = self.check(&def, values, false)?;
        if self.get(&def.name, id).is_none() {
            return Err(self.missing(&def.name, id));
        }
        let id = normalize_id(id);
        for f in def.fields.iter().filter(|f| f.external_id) {
            if let Some(v) = fields.get(&f.name).filter(|v| !v.is_null())
                && self
                    .find_by(&def.name, &f.name, v)
                    .is_some_and(|other| other != id)
            {
                return Err(err(
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {} duplicates value on another record",
                        f.name
                    ),
                    &[&f.name],
                ));
            }
        }
        let stamp = self.stamp();
        self.index_external(&def.name, &id, true);
        let record = self
            .records
            .get_mut(&def.name)
            .and_then(|t| t.get_mut(&id))
            .ok_or_else(|| err("NOT_FOUND", "The requested resource does not exist", &[]))?;
        let mut changed = Map::new();
        for (k, v) in fields {
            if record.get(&k) != Some(&v) {
                changed.insert(k.clone(), v.clone());
            }
            record.insert(k, v);
        }
        record.insert("LastModifiedDate".into(), json!(stamp));
        record.insert("SystemModstamp".into(), json!(stamp));
        changed.insert("LastModifiedDate".into(), json!(stamp));
        self.index_external(&def.name, &id, false);
        self.publish(&def.name, &id, ChangeType::Update, &changed);
        Ok(())
    }

    /// Soft-delete a record (queryAll still sees it).
    pub fn delete(&mut self, object: &str, id: &str) -> Result<(), ApiError> {
        let def = self.object_or_err(object)?;
        let stamp = self.stamp();
        match self
            .records
            .get_mut(&def.name)
            .and_then(|t| t.get_mut(&normalize_id(id)))
        {
            Some(r) if r.get("IsDeleted") == Some(&Value::Bool(true)) => {
                Err(err("ENTITY_IS_DELETED", "entity is deleted", &[]))
            }
            Some(r) => {
                r.insert("IsDeleted".into(), json!(true));
                r.insert("SystemModstamp".into(), json!(stamp));
                self.delete_log
                    .push((def.name.clone(), normalize_id(id), self.last_stamp_ms));
                self.mark_deleted(&def.name, &normalize_id(id), true);
                self.index_external(&def.name, &normalize_id(id), true);
                self.publish(
                    &def.name,
                    &normalize_id(id),
                    ChangeType::Delete,
                    &Map::new(),
                );
                Ok(())
            }
            None => Err(self.missing(&def.name, id)),
        }
    }

    /// Record a change: its Change Data Capture event, and an event on every active
    /// PushTopic whose query selects the record (`NotifyForFields` is treated as `All`).
    fn publish(&mut self, entity: &str, id: &str, change: ChangeType, fields: &Fields) {
        if !self.changes.recording {
            return;
        }
        self.changes
            .record(entity, id, change, fields, self.last_stamp_ms);
        let mut topics = Vec::new();
        for topic in self.rows("PushTopic", false) {
            let flag = |f: &str| topic.get(f).and_then(Value::as_bool).unwrap_or(true);
            let wanted = match change {
                ChangeType::Create => flag("NotifyForOperationCreate"),
                ChangeType::Update => flag("NotifyForOperationUpdate"),
                ChangeType::Delete => flag("NotifyForOperationDelete"),
            };
            let (Some(name), Some(query)) = (
                topic.get("Name").and_then(Value::as_str),
                topic.get("Query").and_then(Value::as_str),
            ) else {
                continue;
            };
            let Ok(q) = soql::parse(query) else {
                continue;
            };
            if !wanted || !flag("IsActive") || !q.object.eq_ignore_ascii_case(entity) {
                continue;
            }
            let record = self.records.get(entity).and_then(|t| t.get(id));
            let sobject: Map<String, Value> = match (change, record) {
                (ChangeType::Delete, _) | (_, None) => {
                    std::iter::once(("Id".to_owned(), json!(id))).collect()
                }
                (_, Some(r)) => {
                    let Some(def) = self.objects.get(entity) else {
                        continue;
                    };
                    let selected = match &q.filter {
                        Some(p) => self
                            .topic_filter
                            .is_some_and(|selects| selects(self, def, r, p).unwrap_or(false)),
                        None => true,
                    };
                    if !selected {
                        continue;
                    }
                    q.fields
                        .iter()
                        .filter_map(|f| {
                            let v = r.iter().find(|(k, _)| k.eq_ignore_ascii_case(f))?;
                            Some((v.0.clone(), v.1.clone()))
                        })
                        .chain(std::iter::once(("Id".to_owned(), json!(id))))
                        .collect()
                }
            };
            topics.push((format!("/topic/{name}"), sobject));
        }
        let created = sf_datetime(SystemTime::now());
        for (channel, sobject) in topics {
            self.changes
                .record_topic(&channel, entity, change, sobject, created.clone());
        }
    }

    /// Set a field of a record directly — no checks, no `SystemModstamp` change — to stage
    /// test data (records sharing a timestamp, a stale value). `false` when there is no
    /// such record.
    pub fn set_raw(&mut self, object: &str, id: &str, field: &str, value: Value) -> bool {
        let id = normalize_id(id);
        self.index_external(object, &id, true);
        let found = match self.records.get_mut(object).and_then(|t| t.get_mut(&id)) {
            Some(r) => {
                let deleted = (field == "IsDeleted").then(|| value == Value::Bool(true));
                r.insert(field.to_owned(), value);
                if let Some(deleted) = deleted {
                    self.mark_deleted(object, &id, deleted);
                }
                true
            }
            None => false,
        };
        self.index_external(object, &id, false);
        found
    }

    /// Delete a record for good (Bulk API `hardDelete`: no recycle bin, queryAll no longer
    /// sees it).
    pub fn hard_delete(&mut self, object: &str, id: &str) -> Result<(), ApiError> {
        self.stamp();
        let now = UNIX_EPOCH + Duration::from_millis(self.last_stamp_ms);
        self.hard_delete_at(object, id, now)
    }

    /// As [`hard_delete`](Self::hard_delete), logged as deleted at `at`: for tests of what
    /// reads the delete log (`sObject Get Deleted`) that need a delete in the past.
    pub fn hard_delete_at(
        &mut self,
        object: &str,
        id: &str,
        at: SystemTime,
    ) -> Result<(), ApiError> {
        let def = self.object_or_err(object)?;
        let id = normalize_id(id);
        if self.get(&def.name, &id).is_none() {
            return Err(self.missing(&def.name, &id));
        }
        let at_ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        self.delete_log.push((def.name.clone(), id.clone(), at_ms));
        self.index_external(&def.name, &id, true);
        if let Some(table) = self.records.get_mut(&def.name) {
            table.remove(&id);
        }
        self.mark_deleted(&def.name, &id, false);
        self.publish(&def.name, &id, ChangeType::Delete, &Map::new());
        Ok(())
    }

    /// The records of `object` deleted (soft or hard) at or after `from_ms` and before
    /// `until_ms` (milliseconds since the epoch): `(id, when)`, oldest first.
    pub fn deleted_between(&self, object: &str, from_ms: u64, until_ms: u64) -> Vec<(String, u64)> {
        self.delete_log
            .iter()
            .filter(|(o, _, at)| o.eq_ignore_ascii_case(object) && (from_ms..until_ms).contains(at))
            .map(|(_, id, at)| (id.clone(), *at))
            .collect()
    }

    /// Insert or update by external id: `(id, created)`.
    pub fn upsert(
        &mut self,
        object: &str,
        field: &str,
        value: &str,
        values: &Fields,
    ) -> Result<(String, bool), ApiError> {
        let def = self.object_or_err(object)?;
        let Some(f) = def.field(field).filter(|f| f.external_id || f.name == "Id") else {
            return Err(err(
                "NOT_FOUND",
                format!("Provided external ID field does not exist or is not accessible: {field}"),
                &[],
            ));
        };
        let name = f.name.clone();
        let matches = self.find_all_by(&def.name, &name, &json!(value));
        match matches.as_slice() {
            [] => {
                let mut with_key = values.clone();
                with_key.insert(name, json!(value));
                self.create(&def.name, &with_key).map(|id| (id, true))
            }
            [one] => {
                let id = one.clone();
                self.update(&def.name, &id, values).map(|()| (id, false))
            }
            _ => Err(err(
                "MULTIPLE_CHOICES",
                format!("More than one record found for external id field {name}"),
                &[],
            )),
        }
    }

    fn find_by(&self, object: &str, field: &str, value: &Value) -> Option<String> {
        self.find_all_by(object, field, value).into_iter().next()
    }

    /// Live records whose `field` (an external id, or `Id`) is `value`.
    fn find_all_by(&self, object: &str, field: &str, value: &Value) -> Vec<String> {
        let Some(text) = value.as_str() else {
            return Vec::new();
        };
        if field == "Id" {
            return self
                .get(object, text)
                .map(|_| normalize_id(text))
                .into_iter()
                .collect();
        }
        self.external
            .get(&(object.to_owned(), field.to_owned(), text.to_owned()))
            .cloned()
            .into_iter()
            .collect()
    }

    /// Index (or, with `remove`, unindex) the external ids of record `id` of `object`.
    fn index_external(&mut self, object: &str, id: &str, remove: bool) {
        let Some(def) = self.objects.get(object) else {
            return;
        };
        let fields: Vec<String> = def
            .fields
            .iter()
            .filter(|f| f.external_id)
            .map(|f| f.name.clone())
            .collect();
        let values: Vec<(String, String)> = match self.records.get(object).and_then(|t| t.get(id)) {
            Some(r) => fields
                .into_iter()
                .filter_map(|f| r.get(&f).and_then(Value::as_str).map(|v| (f, v.to_owned())))
                .collect(),
            None => return,
        };
        for (field, value) in values {
            let key = (object.to_owned(), field, value);
            if remove {
                self.external.remove(&key);
            } else {
                self.external.insert(key, id.to_owned());
            }
        }
    }

    fn missing(&self, object: &str, id: &str) -> ApiError {
        let deleted = self
            .records
            .get(object)
            .and_then(|t| t.get(&normalize_id(id)))
            .is_some();
        if deleted {
            err("ENTITY_IS_DELETED", "entity is deleted", &[])
        } else {
            err("NOT_FOUND", "The requested resource does not exist", &[])
        }
    }

    /// Seed `accounts` Accounts, each with `per_account` Contacts and Cases,
    /// deterministically from `seed`.
    pub fn seed(&mut self, accounts: u32, per_account: u32, seed: u64) {
        // Seeded data is the starting point, not a change: no change events.
        let recording = std::mem::replace(&mut self.changes.recording, false);
        self.seed_records(accounts, per_account, seed);
        self.changes.recording = recording;
    }

    fn seed_records(&mut self, accounts: u32, per_account: u32, seed: u64) {
        const INDUSTRIES: [&str; 6] = [
            "Legal",
            "Banking",
            "Insurance",
            "Healthcare",
            "Government",
            "Technology",
        ];
        const CITIES: [(&str, &str); 4] = [
            ("San Francisco", "CA"),
            ("New York", "NY"),
            ("Chicago", "IL"),
            ("Austin", "TX"),
        ];
        const FIRST: [&str; 8] = [
            "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
        ];
        const LAST: [&str; 8] = [
            "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
        ];
        const STATUS: [&str; 3] = ["New", "Working", "Closed"];
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for a in 0..accounts {
            let (city, state) = CITIES[(next() % 4) as usize];
            let account = json!({
                "Name": format!("{} {} LLP", LAST[(next() % 8) as usize], a),
                "Industry": INDUSTRIES[(next() % 6) as usize],
                "Type": "Customer - Direct",
                "BillingCity": city,
                "BillingState": state,
                "BillingCountry": "United States",
                "Phone": format!("(415) 555-{:04}", next() % 10_000),
                "Website": format!("https://www.firm{a}.example.com"),
                "AnnualRevenue": (next() % 100_000) as f64 * 1_000.0,
                "NumberOfEmployees": next() % 5_000,
                "External_Id__c": format!("ACC-{a:06}"),
            });
            let Value::Object(account) = account else {
                continue;
            };
            let Ok(account_id) = self.create("Account", &account) else {
                continue;
            };
            for c in 0..per_account {
                let first = FIRST[(next() % 8) as usize];
                let last = LAST[(next() % 8) as usize];
                let Value::Object(contact) = json!({
                    "FirstName": first,
                    "LastName": last,
                    "Email": format!("{}.{}.{a}.{c}@example.com", first.to_lowercase(), last.to_lowercase()),
                    "Title": "Counsel",
                    "AccountId": account_id,
                    "External_Id__c": format!("CON-{a:06}-{c:02}"),
                }) else {
                    continue;
                };
                let Ok(contact_id) = self.create("Contact", &contact) else {
                    continue;
                };
                let status = STATUS[(next() % 3) as usize];
                let priority = ["High", "Medium", "Low"][(next() % 3) as usize];
                let Value::Object(case) = json!({
                    "Subject": format!("Matter {a}-{c}: contract review"),
                    "Status": status,
                    "Priority": priority,
                    "Origin": "Web",
                    "AccountId": account_id,
                    "ContactId": contact_id,
                    "IsClosed": status == "Closed",
                    "External_Id__c": format!("CAS-{a:06}-{c:02}"),
                }) else {
                    continue;
                };
                let _ = self.create("Case", &case);
            }
        }
    }
}

/// A 15-character id becomes its 18-character form; 18 stays.
pub fn normalize_id(id: &str) -> String {
    if id.len() == 15 {
        id18(id)
    } else {
        id.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Fields {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn ids_have_the_object_prefix_and_the_case_suffix() {
        // The documented example: 001A0000006Vm9r → 001A0000006Vm9rIAC.
        assert_eq!(id18("001A0000006Vm9r"), "001A0000006Vm9rIAC");
        let mut org = Org::default();
        let id = org
            .create("Account", &obj(json!({"Name": "Acme"})))
            .unwrap_or_default();
        assert!(id.starts_with("001") && id.len() == 18, "{id}");
        assert_eq!(
            org.get("Account", &id[..15]).map(|r| r["Name"].clone()),
            Some(json!("Acme"))
        );
    }

    #[test]
    fn writes_are_checked_like_salesforce() {
        let mut org = Org::default();
        let e = org
            .create("Contact", &obj(json!({"FirstName": "Ada"})))
            .unwrap_err();
        assert_eq!(
            (e.error_code.as_str(), e.fields.as_slice()),
            ("REQUIRED_FIELD_MISSING", &["LastName".to_owned()][..])
        );
        let e = org
            .create("Account", &obj(json!({"Name": "A", "Nope__c": 1})))
            .unwrap_err();
        assert_eq!(e.error_code, "INVALID_FIELD");
        let e = org
            .create("Account", &obj(json!({"Name": "A", "Id": "x"})))
            .unwrap_err();
        assert_eq!(e.error_code, "INVALID_FIELD_FOR_INSERT_UPDATE");
        let e = org
            .create("Account", &obj(json!({"Name": "x".repeat(256)})))
            .unwrap_err();
        assert_eq!(e.error_code, "STRING_TOO_LONG");
        let e = org
            .create(
                "Contact",
                &obj(json!({"LastName": "L", "AccountId": "001000000000000AAA"})),
            )
            .unwrap_err();
        assert_eq!(e.error_code, "INVALID_CROSS_REFERENCE_KEY");
        org.create(
            "Account",
            &obj(json!({"Name": "A", "External_Id__c": "E1"})),
        )
        .unwrap_or_default();
        let e = org
            .create(
                "Account",
                &obj(json!({"Name": "B", "External_Id__c": "E1"})),
            )
            .unwrap_err();
        assert_eq!(e.error_code, "DUPLICATE_VALUE");
    }

    #[test]
    fn system_fields_move_forward_and_deletes_are_soft() {
        let mut org = Org::default();
        let id = org
            .create("Account", &obj(json!({"Name": "Acme"})))
            .unwrap_or_default();
        let first = org.get("Account", &id).map(|r| r["SystemModstamp"].clone());
        org.update("Account", &id, &obj(json!({"Name": "Acme Corp"})))
            .unwrap_or(());
        let second = org.get("Account", &id).map(|r| r["SystemModstamp"].clone());
        assert!(second.as_ref().and_then(Value::as_str) > first.as_ref().and_then(Value::as_str));
        org.delete("Account", &id).unwrap_or(());
        assert!(org.get("Account", &id).is_none());
        assert_eq!(org.rows("Account", true).len(), 1);
        assert_eq!(
            org.delete("Account", &id).unwrap_err().error_code,
            "ENTITY_IS_DELETED"
        );
        assert_eq!(
            org.update("Account", &id, &Map::new())
                .unwrap_err()
                .error_code,
            "ENTITY_IS_DELETED"
        );
    }

    #[test]
    fn upsert_creates_then_updates_by_external_id() {
        let mut org = Org::default();
        let (id, created) = org
            .upsert(
                "Account",
                "External_Id__c",
                "X-1",
                &obj(json!({"Name": "A"})),
            )
            .unwrap_or_default();
        assert!(created);
        let (again, created) = org
            .upsert(
                "Account",
                "External_Id__c",
                "X-1",
                &obj(json!({"Name": "B"})),
            )
            .unwrap_or_default();
        assert!(!created);
        assert_eq!(id, again);
        assert_eq!(
            org.get("Account", &id).map(|r| r["Name"].clone()),
            Some(json!("B"))
        );
        assert_eq!(
            org.upsert("Account", "Name", "x", &Map::new())
                .unwrap_err()
                .error_code,
            "NOT_FOUND"
        );
    }

    #[test]
    fn the_seed_is_deterministic_and_linked() {
        let (mut a, mut b) = (Org::default(), Org::default());
        a.seed(10, 2, 42);
        b.seed(10, 2, 42);
        assert_eq!(a.rows("Case", false).len(), 20);
        let names = |o: &Org| {
            o.rows("Account", false)
                .iter()
                .map(|r| r["Name"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b));
        let contact = a.rows("Contact", false)[0].clone();
        let account = contact["AccountId"].as_str().unwrap_or_default();
        assert!(a.get_any(account).is_some_and(|(o, _)| o == "Account"));
    }
}
