//! Write-ahead-log checkpoints off the writer's path, for the SQLite state store and the
//! SQLite warehouse (feature `sqlite`).
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so
//! a writer stops to copy the log into the database file. Here a thread with its own
//! connection runs passive checkpoints (they neither wait for nor block the writer)
//! whenever the writer nudges it after a commit; the writer keeps an automatic
//! checkpoint at a higher threshold as a backstop for when the thread falls behind.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

/// The writer's own automatic checkpoint, in WAL pages: a backstop for when the
/// background checkpoints fall behind (SQLite's default is 1,000).
pub const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

/// Copies the write-ahead log into the database file on a thread and connection of its
/// own (passive checkpoints: they neither wait for nor block the writer), so a write's
/// commit does not stop to checkpoint. Woken after each commit; wake-ups while a
/// checkpoint runs fold into one. The thread ends when the sink is dropped.
pub struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Start the thread on the database at `path` (already in WAL mode), syncing as
    /// `synchronous` (`FULL` / `NORMAL`) says.
    pub fn start(path: &Path, synchronous: &str) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "synchronous", synchronous)?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        // The writer's own checkpoint still runs past its threshold.
                        tracing::debug!(error = %e, "background WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| {
                rusqlite::Error::ToSqlConversionFailure(
                    format!("cannot start the WAL checkpoint thread: {e}").into(),
                )
            })?;
        Ok(Checkpointer {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Ask for a checkpoint (never waits).
    pub fn nudge(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("running", &self.wake.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows the database file alone holds (a copy without its WAL), if readable.
    fn rows_in_file(path: &Path, copy: &Path) -> Option<i64> {
        std::fs::copy(path, copy).ok()?;
        let conn = Connection::open(copy).ok()?;
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .ok()
    }

    #[test]
    fn a_nudge_copies_what_was_committed_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let (path, copy) = (dir.path().join("db.sqlite"), dir.path().join("copy.sqlite"));
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
            .unwrap();
        let checkpointer = Checkpointer::start(&path, "FULL").unwrap();
        // ~250 pages: far under the writer's own threshold, so only the thread checkpoints.
        conn.execute_batch(
            "CREATE TABLE t (v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO t SELECT hex(randomblob(1000)) FROM n;",
        )
        .unwrap();
        assert_eq!(
            rows_in_file(&path, &copy),
            None,
            "nothing is checkpointed before the nudge"
        );
        checkpointer.nudge();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while rows_in_file(&path, &copy) != Some(500) {
            assert!(
                std::time::Instant::now() < deadline,
                "the checkpoint thread never copied the log into the file"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Dropping it ends the thread (the drop joins it).
        drop(checkpointer);
        conn.execute("INSERT INTO t VALUES ('after')", []).unwrap();
    }
}
