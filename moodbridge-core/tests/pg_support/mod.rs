//! The PostgreSQL test server `scripts/test.sh` starts on 127.0.0.1: a fresh database
//! per test, so tests never see each other's state.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

/// The server's URL (no database), from `MOODBRIDGE_TEST_POSTGRES_URL`.
pub fn server_url() -> String {
    std::env::var("MOODBRIDGE_TEST_POSTGRES_URL").expect(
        "MOODBRIDGE_TEST_POSTGRES_URL is not set: run ./scripts/test.sh, which starts PostgreSQL on 127.0.0.1",
    )
}

/// Create an empty database named after `prefix`, this process and a counter; its URL.
pub async fn fresh_database(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let server = server_url();
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("connect to the test server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    format!("{server}/{name}")
}
