//! Stages: `PUT`, `GET`, `LIST` and `REMOVE`, with the files kept in memory and served
//! as a GCS bucket through presigned URLs (the only storage the drivers reach over
//! plain HTTP), or, with [`StageStorage::S3`] or [`StageStorage::Azure`], placed in a
//! storage service of the test's choosing (moto, Azurite) for the client to upload to. Files are encrypted on the client under
//! the stage's master key, as on Snowflake's internal stages; the sandbox stores what
//! it is sent, metadata headers included, and never decrypts.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use md5::{Digest as _, Md5};
use rand::RngCore;
use serde_json::{Value, json};
use std::collections::HashMap;

use crate::query::{Rows, SELECT};
use crate::sql::SqlError;
use crate::table::{ColumnDef, ColumnKind};

/// Where a stage's files go.
#[derive(Debug, Clone, Default)]
pub enum StageStorage {
    /// Kept by the sandbox and served as a GCS bucket through presigned URLs (the
    /// default). `GET`, `LIST` and `REMOVE` see them.
    #[default]
    Gcs,
    /// An S3 server (moto): `PUT` answers with its endpoint, bucket and keys, and the
    /// client uploads there; the sandbox does not see those files.
    S3 {
        /// The server's URL, `http://127.0.0.1:<port>`.
        endpoint: String,
        /// The bucket (it must exist).
        bucket: String,
        /// Access key id.
        key_id: String,
        /// Secret access key.
        secret: String,
    },
    /// An Azure Blob service (Azurite): `PUT` answers with its endpoint, account,
    /// container and a SAS token, and the client uploads there; the sandbox does not see
    /// those files.
    Azure {
        /// The blob service's URL, `http://127.0.0.1:<port>` (the account is a path
        /// segment after it, as on Azurite).
        endpoint: String,
        /// The storage account.
        account: String,
        /// The container (it must exist).
        container: String,
        /// A SAS token for the container that allows create, write and read.
        sas: String,
    },
}

/// A stage file as a client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageFile {
    /// Its bytes (encrypted, when the client encrypted them).
    pub bytes: Vec<u8>,
    /// The metadata headers that came with them (`x-goog-meta-*`, `content-encoding`),
    /// lower-case names.
    pub headers: Vec<(String, String)>,
}

impl StageFile {
    /// The value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A stored file: its bytes and the headers it came with (`x-goog-meta-*`,
/// `content-encoding`).
#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    body: Bytes,
    headers: Vec<(String, String)>,
}

/// The stages' files and keys.
#[derive(Debug)]
pub(crate) struct Stages {
    pub storage: StageStorage,
    master_key: String,
    /// Required on every presigned URL, as a signature is on GCS's.
    signature: String,
    /// `<stage>/<path>` → file.
    files: BTreeMap<String, StoredFile>,
}

/// Snowflake sends the id of the master key as a string (its own drivers read it so).
const SMK_ID: &str = "61441";

impl Stages {
    pub(crate) fn new(storage: StageStorage) -> Stages {
        let mut key = [0u8; 16];
        rand::rng().fill_bytes(&mut key);
        let mut signature = [0u8; 16];
        rand::rng().fill_bytes(&mut signature);
        Stages {
            storage,
            master_key: base64::engine::general_purpose::STANDARD.encode(key),
            signature: hex(&signature),
            files: BTreeMap::new(),
        }
    }

    /// The master key (base64).
    pub(crate) fn master_key(&self) -> String {
        self.master_key.clone()
    }

    /// The stored files' names, `<stage>/<path>`.
    pub(crate) fn names(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    /// `<stage>/<path>` as stored.
    pub(crate) fn raw(&self, key: &str) -> Option<StageFile> {
        self.files.get(key).map(|f| StageFile {
            bytes: f.body.to_vec(),
            headers: f.headers.clone(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

/// `@name/path` → (`NAME`, `path`): the stage upper-case unless quoted, the path as
/// written (a prefix: `LIST`, `GET` and `REMOVE` take every file that starts with it).
pub(crate) fn split_stage(reference: &str) -> (String, String) {
    let reference = reference.trim_start_matches('@');
    let (stage, path) = reference.split_once('/').unwrap_or((reference, ""));
    let stage = if stage.starts_with('"') {
        stage.trim_matches('"').to_owned()
    } else {
        stage.to_ascii_uppercase()
    };
    (stage, path.trim_start_matches('/').to_owned())
}

/// The stage's key; the query id is filled in when the answer is served.
fn material(stages: &Stages) -> Value {
    json!({
        "queryStageMasterKey": stages.master_key,
        "queryId": "",
        "smkId": SMK_ID,
    })
}

/// The `x-goog-*` headers a presigned URL authorizes (GCS answers any other with 400
/// `MalformedSecurityHeader`).
const SIGNED_HEADERS: &str = "host;x-goog-if-generation-match;x-goog-meta-encryptiondata;x-goog-meta-matdesc;x-goog-meta-sfc-digest";

fn presigned(base: &str, stages: &Stages, stage: &str, path: &str) -> String {
    format!(
        "{base}/stage-files/{}/{path}?X-Goog-SignedHeaders={}&X-Goog-Signature={}",
        hex(stage.as_bytes()),
        SIGNED_HEADERS.replace(';', "%3B"),
        stages.signature
    )
}

/// The answer to `PUT 'file://<file>' @stage/path`.
pub(crate) fn put(
    stages: &Stages,
    base: &str,
    file: &str,
    stage: &str,
    options: &HashMap<String, String>,
) -> Rows {
    let (stage, mut path) = split_stage(stage);
    // `PUT` puts into a directory.
    if !path.is_empty() && !path.ends_with('/') {
        path.push('/');
    }
    let flag = |name: &str, default: bool| {
        options
            .get(name)
            .map_or(default, |v| v.eq_ignore_ascii_case("true"))
    };
    // The presigned URL names the file as it will be stored: with `.gz` when the
    // client is to gzip it (its name shows no compression). Snowflake's 4.x driver asks
    // again with that name; its 5.x core uses the first URL.
    let mut basename = file.rsplit('/').next().unwrap_or(file).to_owned();
    let lower = basename.to_ascii_lowercase();
    let compressed = [
        ".gz",
        ".bz2",
        ".br",
        ".zst",
        ".deflate",
        ".raw_deflate",
        ".parquet",
        ".orc",
    ]
    .iter()
    .any(|suffix| lower.ends_with(suffix));
    if flag("AUTO_COMPRESS", true) && !compressed {
        basename.push_str(".gz");
    }
    let stage_info = match &stages.storage {
        StageStorage::Gcs => json!({
            "locationType": "GCS",
            "location": format!("sandbox-stages/{}/{path}", hex(stage.as_bytes())),
            "path": path,
            "region": "US-CENTRAL1",
            "storageAccount": null,
            "isClientSideEncrypted": true,
            "creds": {},
            "presignedUrl": presigned(base, stages, &stage, &format!("{path}{basename}")),
            "endPoint": null,
        }),
        StageStorage::S3 {
            endpoint,
            bucket,
            key_id,
            secret,
        } => json!({
            "locationType": "S3",
            "location": format!("{bucket}/{}/{path}", hex(stage.as_bytes())),
            "path": path,
            "region": "us-east-1",
            "storageAccount": null,
            "isClientSideEncrypted": true,
            "creds": {"AWS_KEY_ID": key_id, "AWS_SECRET_KEY": secret, "AWS_TOKEN": "sandbox-session-token"},
            "presignedUrl": null,
            "endPoint": endpoint,
            "useS3RegionalUrl": false,
        }),
        StageStorage::Azure {
            endpoint,
            account,
            container,
            sas,
        } => json!({
            "locationType": "AZURE",
            "location": format!("{container}/{}/{path}", hex(stage.as_bytes())),
            "path": path,
            "region": "westus",
            "storageAccount": account,
            "isClientSideEncrypted": true,
            "creds": {"AZURE_SAS_TOKEN": sas},
            "presignedUrl": null,
            "endPoint": endpoint,
        }),
    };
    Rows::Transfer(json!({
        "command": "UPLOAD",
        "src_locations": [file],
        "autoCompress": flag("AUTO_COMPRESS", true),
        "overwrite": flag("OVERWRITE", false),
        "sourceCompression": options.get("SOURCE_COMPRESSION").map_or("auto_detect".to_owned(), |v| v.to_ascii_lowercase()),
        "parallel": 4,
        "threshold": 209_715_200,
        "stageInfo": stage_info,
        "encryptionMaterial": material(stages),
    }))
}

fn gcs_only(stages: &Stages) -> Result<(), SqlError> {
    match stages.storage {
        StageStorage::Gcs => Ok(()),
        StageStorage::S3 { .. } | StageStorage::Azure { .. } => Err(SqlError::invalid(
            "the sandbox does not see files on an S3 or Azure stage: GET, LIST and REMOVE need its default storage",
        )),
    }
}

/// The stored files under `@stage/path`: (`<stage>/<path>` key, path within the stage).
fn matching(stages: &Stages, stage: &str, path: &str) -> Vec<(String, String)> {
    let prefix = format!("{stage}/{path}");
    stages
        .files
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| (k.clone(), k[stage.len() + 1..].to_owned()))
        .collect()
}

/// The answer to `GET @stage/path 'file://<dir>'`.
pub(crate) fn get(stages: &Stages, base: &str, stage: &str, local: &str) -> Result<Rows, SqlError> {
    let (stage, path) = split_stage(stage);
    gcs_only(stages)?;
    let files = matching(stages, &stage, &path);
    let urls: Vec<String> = files
        .iter()
        .map(|(_, p)| presigned(base, stages, &stage, p))
        .collect();
    let materials: Vec<Value> = files.iter().map(|_| material(stages)).collect();
    Ok(Rows::Transfer(json!({
        "command": "DOWNLOAD",
        "src_locations": files.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        "presignedUrls": urls,
        "encryptionMaterial": materials,
        "localLocation": local,
        "parallel": 10,
        "stageInfo": {
            "locationType": "GCS",
            "location": format!("sandbox-stages/{}/", hex(stage.as_bytes())),
            "path": "",
            "region": "US-CENTRAL1",
            "isClientSideEncrypted": true,
            "creds": {},
            "presignedUrl": null,
            "endPoint": null,
        },
    })))
}

fn text_rowtype(name: &str) -> Value {
    let mut rowtype = ColumnDef::new(name, ColumnKind::Text).rowtype("");
    rowtype["name"] = json!(name);
    rowtype
}

/// `LIST @stage/path`: name, size, md5, last_modified.
pub(crate) fn list(stages: &Stages, stage: &str) -> Result<Rows, SqlError> {
    let (stage, path) = split_stage(stage);
    gcs_only(stages)?;
    let label = stage.to_ascii_lowercase();
    let rows = matching(stages, &stage, &path)
        .into_iter()
        .map(|(key, p)| {
            let file = &stages.files[&key];
            vec![
                Some(format!("{label}/{p}")),
                Some(file.body.len().to_string()),
                Some(hex(Md5::digest(&file.body).as_slice())),
                Some("Mon, 7 Dec 2026 00:00:00 GMT".to_owned()),
            ]
        })
        .collect();
    let mut size = ColumnDef::new(
        "size",
        ColumnKind::Fixed {
            precision: 38,
            scale: 0,
        },
    )
    .rowtype("");
    size["name"] = json!("size");
    Ok(Rows::Json {
        rowtype: vec![
            text_rowtype("name"),
            size,
            text_rowtype("md5"),
            text_rowtype("last_modified"),
        ],
        rows,
        statement_type: SELECT,
        result_ids: None,
    })
}

/// `REMOVE @stage/path`: name, result.
pub(crate) fn remove(stages: &mut Stages, stage: &str) -> Result<Rows, SqlError> {
    let (stage, path) = split_stage(stage);
    gcs_only(stages)?;
    let label = stage.to_ascii_lowercase();
    let mut rows = Vec::new();
    for (key, p) in matching(stages, &stage, &path) {
        stages.files.remove(&key);
        rows.push(vec![
            Some(format!("{label}/{p}")),
            Some("removed".to_owned()),
        ]);
    }
    Ok(Rows::Json {
        rowtype: vec![text_rowtype("name"), text_rowtype("result")],
        rows,
        statement_type: SELECT,
        result_ids: None,
    })
}

/// The stage and path a presigned URL names, when its signature is right.
fn file_key(
    stages: &Stages,
    stage: &str,
    path: &str,
    query: &HashMap<String, String>,
) -> Option<String> {
    if query.get("X-Goog-Signature") != Some(&stages.signature) {
        return None;
    }
    let stage = unhex(stage)?;
    if path.split('/').any(|s| s == ".." || s.is_empty()) {
        return None;
    }
    Some(format!("{stage}/{path}"))
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "<Error><Code>SignatureDoesNotMatch</Code><Message>The presigned URL is not valid.</Message></Error>",
    )
        .into_response()
}

/// `PUT /stage-files/<stage>/<path>`: a presigned upload. `x-goog-if-generation-match:
/// 0` makes it create-only (412 when the file exists); an `x-goog-*` header the URL does
/// not sign is refused.
pub(crate) fn upload(
    stages: &mut Stages,
    (stage, path): (String, String),
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let Some(key) = file_key(stages, &stage, &path, query) else {
        return forbidden();
    };
    let signed: Vec<&str> = SIGNED_HEADERS.split(';').collect();
    if let Some((name, _)) = headers
        .iter()
        .find(|(name, _)| name.as_str().starts_with("x-goog-") && !signed.contains(&name.as_str()))
    {
        return (
            StatusCode::BAD_REQUEST,
            format!("<Error><Code>MalformedSecurityHeader</Code><Message>Header {name} was not signed.</Message></Error>"),
        )
            .into_response();
    }
    let create_only = headers
        .get("x-goog-if-generation-match")
        .is_some_and(|v| v.as_bytes() == b"0");
    if create_only && stages.files.contains_key(&key) {
        return (
            StatusCode::PRECONDITION_FAILED,
            "<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold.</Message></Error>",
        )
            .into_response();
    }
    let kept = headers
        .iter()
        .filter(|(name, _)| {
            name.as_str().starts_with("x-goog-meta-") || name.as_str() == "content-encoding"
        })
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    stages.files.insert(
        key,
        StoredFile {
            body,
            headers: kept,
        },
    );
    StatusCode::OK.into_response()
}

/// `GET` (and `HEAD`) `/stage-files/<stage>/<path>`: a presigned download.
pub(crate) fn download(
    stages: &Stages,
    (stage, path): (String, String),
    query: &HashMap<String, String>,
) -> Response {
    let Some(key) = file_key(stages, &stage, &path, query) else {
        return forbidden();
    };
    let Some(file) = stages.files.get(&key) else {
        return (
            StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>",
        )
            .into_response();
    };
    let mut response = file.body.clone().into_response();
    for (name, value) in &file.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_references_split_into_stage_and_path() {
        assert_eq!(split_stage("@load"), ("LOAD".into(), String::new()));
        assert_eq!(
            split_stage("@load/accounts"),
            ("LOAD".into(), "accounts".into())
        );
        assert_eq!(split_stage("@~/a/b/"), ("~".into(), "a/b/".into()));
        assert_eq!(split_stage("@\"Mixed\"/x"), ("Mixed".into(), "x".into()));
        assert_eq!(unhex(&hex("%T".as_bytes())).as_deref(), Some("%T"));
    }
}

/// The binds a client staged for one statement (`bindStage`, `@stage/path`): every file
/// under the path, in the order of the row counts the drivers name them by
/// (`<rows so far>.csv`), decrypted with the stage's master key, gunzipped, and read as
/// the drivers write them — comma-separated, `"` enclosing a field with `"` doubled, an
/// empty field NULL and `""` the empty string. As the `bindings` of a request: one
/// `TEXT` array per column.
pub(crate) fn bind_values(stages: &Stages, reference: &str) -> Result<Value, SqlError> {
    let (stage, path) = split_stage(reference);
    let prefix = format!("{stage}/{}", path.trim_start_matches('/'));
    let mut files: Vec<(u64, &StoredFile)> = stages
        .files
        .iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .map(|(key, file)| {
            let name = key.rsplit('/').next().unwrap_or_default();
            let order = name
                .split('.')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(u64::MAX);
            (order, file)
        })
        .collect();
    if files.is_empty() {
        return Err(SqlError::syntax(format!(
            "Bind stage {reference} holds no files."
        )));
    }
    files.sort_by_key(|(order, _)| *order);
    let mut columns: Vec<Vec<Value>> = Vec::new();
    for (_, file) in files {
        let plain = open_file(stages, file)?;
        let text =
            String::from_utf8(plain).map_err(|_| SqlError::syntax("A bind file is not UTF-8."))?;
        for row in csv_rows(&text) {
            if columns.is_empty() {
                columns = vec![Vec::new(); row.len()];
            }
            if row.len() != columns.len() {
                return Err(SqlError::syntax(format!(
                    "Number of columns in a bind file row ({}) does not match the first row's ({}).",
                    row.len(),
                    columns.len()
                )));
            }
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(value.map_or(Value::Null, Value::String));
            }
        }
    }
    Ok(Value::Object(
        columns
            .into_iter()
            .enumerate()
            .map(|(i, values)| {
                (
                    (i + 1).to_string(),
                    json!({"type": "TEXT", "value": values}),
                )
            })
            .collect(),
    ))
}

/// A stored file's plain bytes: decrypted (a client encrypts for an internal stage)
/// and gunzipped.
fn open_file(stages: &Stages, file: &StoredFile) -> Result<Vec<u8>, SqlError> {
    use aws_lc_rs::cipher::{
        AES_128, AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey,
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let bad = |what: &str| SqlError::syntax(format!("A bind file cannot be read: {what}."));
    let mut data = file.body.to_vec();
    let envelope = file
        .headers
        .iter()
        .find(|(n, _)| n == "x-goog-meta-encryptiondata")
        .and_then(|(_, v)| serde_json::from_str::<Value>(v).ok());
    if let Some(envelope) = envelope {
        let master = b64
            .decode(&stages.master_key)
            .map_err(|_| bad("master key"))?;
        let algorithm = |key: &[u8]| if key.len() == 32 { &AES_256 } else { &AES_128 };
        let mut wrapped = envelope["WrappedContentKey"]["EncryptedKey"]
            .as_str()
            .and_then(|k| b64.decode(k).ok())
            .ok_or_else(|| bad("no wrapped key"))?;
        let file_key = UnboundCipherKey::new(algorithm(&master), &master)
            .and_then(PaddedBlockDecryptingKey::ecb_pkcs7)
            .and_then(|k| {
                k.decrypt(&mut wrapped, DecryptionContext::None)
                    .map(|key| key.to_vec())
            })
            .map_err(|_| bad("the key does not unwrap"))?;
        let iv: [u8; 16] = envelope["ContentEncryptionIV"]
            .as_str()
            .and_then(|iv| b64.decode(iv).ok())
            .and_then(|iv| iv.try_into().ok())
            .ok_or_else(|| bad("no IV"))?;
        let plain = UnboundCipherKey::new(algorithm(&file_key), &file_key)
            .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
            .and_then(|k| {
                k.decrypt(&mut data, DecryptionContext::Iv128(iv.into()))
                    .map(|plain| plain.len())
            })
            .map_err(|_| bad("it does not decrypt"))?;
        data.truncate(plain);
    }
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(&data[..]),
            &mut plain,
        )
        .map_err(|_| bad("it is not gzip"))?;
        data = plain;
    }
    Ok(data)
}

/// Rows of bind CSV as the drivers write it: `,` between fields, a field enclosed in
/// `"` when it holds `"`, `,`, a line break or `\` (`"` doubled inside), `""` the empty
/// string and an empty field NULL.
fn csv_rows(text: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    let mut row: Vec<Option<String>> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => quoted = false,
                other => field.push(other),
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                was_quoted = true;
            }
            ',' | '\n' => {
                let value = std::mem::take(&mut field);
                row.push((was_quoted || !value.is_empty()).then_some(value));
                was_quoted = false;
                if c == '\n' {
                    rows.push(std::mem::take(&mut row));
                    any = false;
                }
            }
            '\r' => {}
            other => field.push(other),
        }
    }
    if any {
        row.push((was_quoted || !field.is_empty()).then_some(field));
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod bind_tests {
    use super::*;

    #[test]
    fn bind_csv_reads_as_the_drivers_write_it() {
        let rows = csv_rows("1,\"a \"\"b\"\", c\",,\"\"\n2,x,y,z\n");
        assert_eq!(
            rows,
            [
                vec![
                    Some("1".to_owned()),
                    Some("a \"b\", c".to_owned()),
                    None,
                    Some(String::new())
                ],
                vec![
                    Some("2".to_owned()),
                    Some("x".to_owned()),
                    Some("y".to_owned()),
                    Some("z".to_owned())
                ],
            ]
        );
    }
}
