//! Files to and from stages. The sandbox keeps its stages as a GCS bucket behind
//! presigned URLs and hands out its master key: what our client puts there (gzipped,
//! digested, encrypted) Snowflake's own Python connector GETs and decrypts, and what the
//! connector PUTs our client GETs. With an S3 stage on moto, boto3 reads our upload and
//! the connector's own decryption code opens it; on an Azure stage in Azurite,
//! Microsoft's blob client does. fakesnow loads a file our client put with `COPY INTO`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::io::Read as _;

use connector_snowflake::{PutOptions, SnowflakeClient, SnowflakeConfig, TransferStatus};
use moodbridge_core::ErrorKind;
use secrecy::SecretString;
use snowflake_sandbox::{Sandbox, SandboxConfig, StageStorage, User};

const PASSWORD: &str = "sandbox-password-51";

async fn sandbox(storage: StageStorage) -> Sandbox {
    Sandbox::start(
        SandboxConfig::new("SANDBOX")
            .user(User::new("loader").password(PASSWORD))
            .stage_storage(storage),
    )
    .await
    .unwrap()
}

async fn login(sandbox: &Sandbox) -> SnowflakeClient {
    SnowflakeClient::login(
        SnowflakeConfig::new("sandbox", "LOADER", SecretString::from(PASSWORD))
            .url(sandbox.url())
            .database("SANDBOX")
            .schema("PUBLIC"),
    )
    .await
    .unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn csv(rows: usize) -> Vec<u8> {
    (0..rows)
        .map(|i| format!("{i},Account {i:07},{}\n", i * 1237 % 10_000))
        .collect::<String>()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_go_to_the_stage_encrypted_and_come_back_decrypted() {
    let sandbox = sandbox(StageStorage::Gcs).await;
    let client = login(&sandbox).await;
    let content = csv(5_000);

    let outcome = client
        .put_bytes(
            "accounts-0001.csv",
            content.clone(),
            "@load/accounts/",
            PutOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.target, "accounts-0001.csv.gz");
    assert_eq!(
        (
            outcome.source_compression.as_str(),
            outcome.target_compression.as_str()
        ),
        ("NONE", "GZIP")
    );
    assert_eq!(outcome.source_size, content.len() as u64);
    assert!(outcome.target_size < outcome.source_size / 2, "{outcome:?}");
    assert_eq!(outcome.status, TransferStatus::Uploaded);
    assert!(outcome.encrypted);

    // Stored encrypted, with the drivers' metadata; the gzip stream is not visible.
    let stored = sandbox
        .stage_file("LOAD/accounts/accounts-0001.csv.gz")
        .unwrap();
    assert_ne!(&stored.bytes[..2], &[0x1f, 0x8b]);
    assert_eq!(
        stored.bytes.len() as u64,
        (outcome.target_size / 16 + 1) * 16
    );
    let data: serde_json::Value =
        serde_json::from_str(stored.header("x-goog-meta-encryptiondata").unwrap()).unwrap();
    assert_eq!(data["EncryptionMode"], "FullBlob");
    let matdesc: serde_json::Value =
        serde_json::from_str(stored.header("x-goog-meta-matdesc").unwrap()).unwrap();
    assert_eq!(matdesc["keySize"], "128");
    assert!(stored.header("x-goog-meta-sfc-digest").is_some());

    // Without OVERWRITE the upload is create-only (the presigned URL signs
    // x-goog-if-generation-match): a file already there is skipped, and kept.
    let again = client
        .put_bytes(
            "accounts-0001.csv",
            csv(10),
            "@load/accounts/",
            PutOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(again.status, TransferStatus::Skipped);
    assert_eq!(
        sandbox
            .stage_file("LOAD/accounts/accounts-0001.csv.gz")
            .unwrap(),
        stored
    );
    let replaced = client
        .put_bytes(
            "accounts-0001.csv",
            content.clone(),
            "@load/accounts/",
            PutOptions::new().overwrite(true),
        )
        .await
        .unwrap();
    assert_eq!(replaced.status, TransferStatus::Uploaded);

    // An already compressed file keeps its name; without auto-compress nothing is zipped.
    let parquet = [b"PAR1".as_slice(), &[0u8; 64], b"PAR1"].concat();
    let outcome = client
        .put_bytes(
            "accounts-0002.parquet",
            parquet.clone(),
            "@load/accounts/",
            PutOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        (outcome.target.as_str(), outcome.target_compression.as_str()),
        ("accounts-0002.parquet", "PARQUET")
    );

    let mut files = client.get("@load/accounts/").await.unwrap();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "accounts/accounts-0001.csv.gz",
            "accounts/accounts-0002.parquet"
        ]
    );
    assert_eq!(gunzip(&files[0].data), content);
    assert_eq!(files[1].data.as_ref(), parquet.as_slice());

    let listed = client.execute("LIST @load", &[]).await.unwrap();
    assert_eq!(listed.json_rows().unwrap().len(), 2);
    client
        .execute("REMOVE @load/accounts/accounts-0001.csv.gz", &[])
        .await
        .unwrap();
    assert_eq!(
        sandbox.stage_files(),
        ["LOAD/accounts/accounts-0002.parquet"]
    );

    // Bad input is refused before anything is sent, naming the fix.
    let err = client
        .put_bytes("../x.csv", vec![1], "@load", PutOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = client
        .put_bytes("x.csv", vec![1], "load; drop table X", PutOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = client
        .put_bytes("x.csv.xz", vec![1], "@load", PutOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    // No key, presigned URL or signature in any error or debug string.
    let key = sandbox.stage_master_key();
    assert!(!format!("{err:?} {client:?}").contains(&key));
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflakes_python_connector_4_reads_our_files_and_we_read_its() {
    python_round_trip(moodbridge_core::testing::venv_python(), "4.").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflakes_python_connector_5_reads_our_files_and_we_read_its() {
    python_round_trip(moodbridge_core::testing::snowflake5_python(), "5.").await;
}

async fn python_round_trip(python: std::path::PathBuf, version: &str) {
    let sandbox = sandbox(StageStorage::Gcs).await;
    let client = login(&sandbox).await;
    let dir = tempfile::tempdir().unwrap();
    let content = csv(2_000);
    let expected = dir.path().join("expected.csv");
    std::fs::write(&expected, &content).unwrap();
    let theirs = dir.path().join("theirs.csv");
    let their_content = csv(300);
    std::fs::write(&theirs, &their_content).unwrap();
    client
        .put_bytes("ours.csv", content.clone(), "@handoff", PutOptions::new())
        .await
        .unwrap();

    let script = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/stage_check.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(sandbox.port().to_string())
        .arg("@handoff")
        .arg("ours.csv.gz")
        .arg(&expected)
        .arg(&theirs)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "snowflake-connector-python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(
        summary["connector"].as_str().unwrap().starts_with(version),
        "{summary}"
    );
    assert_eq!(summary["put"][0][1], "theirs.csv.gz", "{summary}");

    // The connector's own upload, encrypted by its code, decrypts here.
    let files = client.get("@handoff").await.unwrap();
    let theirs = files
        .iter()
        .find(|f| f.name == "theirs.csv.gz")
        .unwrap_or_else(|| panic!("{files:?}"));
    assert_eq!(gunzip(&theirs.data), their_content);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_stage_takes_the_upload_with_the_drivers_metadata_and_skips_a_repeat() {
    let moto = support::Moto::start();
    moto.create_bucket("sfc-stage").await;
    let sandbox = sandbox(StageStorage::S3 {
        endpoint: moto.endpoint.clone(),
        bucket: "sfc-stage".into(),
        key_id: "testing".into(),
        secret: "testing".into(),
    })
    .await;
    let summary = put_twice_then_check(
        &sandbox,
        "s3_stage_check.py",
        &[&moto.endpoint, "sfc-stage"],
    )
    .await;
    assert_eq!(summary["matdesc"]["keySize"], "128", "{summary}");
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_stage_takes_the_upload_with_the_drivers_metadata_and_skips_a_repeat() {
    let azurite = support::Azurite::start();
    let script = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/azure_stage_check.py");
    let python = moodbridge_core::testing::venv_python();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args(["sas", &azurite.endpoint, "sfc-stage"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the SAS could not be made: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sas = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let sandbox = sandbox(StageStorage::Azure {
        endpoint: azurite.endpoint.clone(),
        account: "devstoreaccount1".into(),
        container: "sfc-stage".into(),
        sas: sas.clone(),
    })
    .await;
    let summary = put_twice_then_check(
        &sandbox,
        "azure_stage_check.py",
        &["check", &azurite.endpoint, "sfc-stage"],
    )
    .await;
    assert_eq!(summary["matdesc"]["keySize"], "128", "{summary}");

    // A refused SAS is an error that names neither the token nor the key.
    let broken = sandbox_with_sas(
        &azurite.endpoint,
        "sv=2020-01-01&sig=not-a-signature-0123456789",
    )
    .await;
    let client = login(&broken).await;
    let err = client
        .put_bytes("x.csv", csv(3), "@load", PutOptions::new().overwrite(true))
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("not-a-signature-0123456789"), "{shown}");
    assert!(!shown.contains(&broken.stage_master_key()), "{shown}");
    sandbox.stop().await;
    broken.stop().await;
}

/// Put `cases.csv` into `@load/cases` three times — uploaded; skipped, the same digest
/// being there; uploaded again with `OVERWRITE` — then run the Python `script` with
/// `args`, the object's key, the master key and a file of the expected content: its
/// JSON summary.
async fn put_twice_then_check(sandbox: &Sandbox, script: &str, args: &[&str]) -> serde_json::Value {
    let client = login(sandbox).await;
    let content = csv(3_000);
    for (options, status) in [
        (PutOptions::new(), TransferStatus::Uploaded),
        (PutOptions::new(), TransferStatus::Skipped),
        (PutOptions::new().overwrite(true), TransferStatus::Uploaded),
    ] {
        let outcome = client
            .put_bytes("cases.csv", content.clone(), "@load/cases", options)
            .await
            .unwrap();
        assert_eq!(outcome.status, status, "{options:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let expected = dir.path().join("expected.csv");
    std::fs::write(&expected, &content).unwrap();
    let script = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = tokio::process::Command::new(moodbridge_core::testing::venv_python())
        .arg(script)
        .args(args)
        .arg(format!("{}/cases/cases.csv.gz", hex("LOAD")))
        .arg(sandbox.stage_master_key())
        .arg(&expected)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn sandbox_with_sas(endpoint: &str, sas: &str) -> Sandbox {
    sandbox(StageStorage::Azure {
        endpoint: endpoint.to_owned(),
        account: "devstoreaccount1".into(),
        container: "sfc-stage".into(),
        sas: sas.to_owned(),
    })
    .await
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fakesnow_loads_a_file_we_put_with_copy_into() {
    let server = support::FakeSnow::start();
    let client = SnowflakeClient::login(server.config()).await.unwrap();
    for sql in [
        "create database if not exists CASES",
        "create schema if not exists CASES.PUBLIC",
        "create or replace table CASE_LOAD (ID int, NAME varchar, AMOUNT int)",
        "create or replace stage CASE_STAGE",
    ] {
        client.execute(sql, &[]).await.unwrap();
    }
    let content = csv(1_000);
    let outcome = client
        .put_bytes("cases.csv", content, "@CASE_STAGE", PutOptions::new())
        .await
        .unwrap();
    assert_eq!(outcome.target, "cases.csv.gz");
    assert!(!outcome.encrypted, "fakesnow sends no encryption material");
    client
        .execute(
            "copy into CASE_LOAD from @CASE_STAGE file_format = (type = csv)",
            &[],
        )
        .await
        .unwrap();
    let count = client
        .execute("select count(*) as N, sum(AMOUNT) as S from CASE_LOAD", &[])
        .await
        .unwrap();
    let row = &count.json_rows().unwrap()[0];
    assert_eq!(row["N"], 1000, "{row}");
    let sum: u64 = (0..1000u64).map(|i| i * 1237 % 10_000).sum();
    assert_eq!(row["S"].as_f64(), Some(sum as f64), "{row}");
}
