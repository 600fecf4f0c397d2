//! Stage binding: an array bind of at least `CLIENT_STAGE_ARRAY_BINDING_THRESHOLD`
//! values (a session parameter Snowflake sends at login) is not sent in the request.
//! As the drivers do, the rows are written as CSV to the temporary stage `SYSTEM$BIND`
//! (files of about 10 MB, named by the rows before them, gzipped and encrypted by the
//! ordinary `PUT`), and the statement names the directory as its `bindStage`. When the
//! stage cannot be made or written, the binds go in the request after all.

use tracing::debug;

use crate::bind::Bind;
use crate::client::SnowflakeClient;
use crate::stage::PutOptions;

/// The temporary stage binds are written to.
const STAGE: &str = "SYSTEM$BIND";

/// About this many bytes per file.
const FILE_BYTES: usize = 10 << 20;

/// One CSV field as the drivers write it: NULL empty, the empty string `""`, a value
/// with `"`, `,`, a line break or `\` enclosed in `"` with `"` doubled.
fn field(out: &mut String, value: Option<&str>) {
    match value {
        None => {}
        Some("") => out.push_str("\"\""),
        Some(v) if v.contains(['"', ',', '\n', '\r', '\\']) => {
            out.push('"');
            out.push_str(&v.replace('"', "\"\""));
            out.push('"');
        }
        Some(v) => out.push_str(v),
    }
}

/// The rows of `binds` as CSV files of about [`FILE_BYTES`], each with the number of rows
/// written before it ends.
fn csv_files(binds: &[Bind], rows: usize) -> Vec<(usize, Vec<u8>)> {
    let mut files = Vec::new();
    let mut text = String::new();
    for row in 0..rows {
        for (i, bind) in binds.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            field(&mut text, bind.cell(row));
        }
        text.push('\n');
        if text.len() >= FILE_BYTES || row + 1 == rows {
            files.push((row + 1, std::mem::take(&mut text).into_bytes()));
        }
    }
    files
}

impl SnowflakeClient {
    /// Stage `binds` when they are array binds at or above the session's threshold: the
    /// `bindStage` to send; `None` to send them in the request.
    pub(crate) fn staged_binds<'a>(
        &'a self,
        binds: &'a [Bind],
    ) -> futures::future::BoxFuture<'a, Option<String>> {
        // Boxed with its type named: staging runs statements itself (never with binds to
        // stage), so the future is part of its own type otherwise.
        Box::pin(async move {
            let rows = binds.first().and_then(Bind::rows)?;
            let threshold = self.bind_threshold();
            if threshold == 0 || ((rows * binds.len()) as u64) < threshold {
                return None;
            }
            let path = format!("@{STAGE}/{}", uuid::Uuid::new_v4().simple());
            let staged = async {
                self.execute(
                    &format!(
                        "CREATE OR REPLACE TEMPORARY STAGE {STAGE} FILE_FORMAT = (TYPE = CSV FIELD_OPTIONALLY_ENCLOSED_BY = '\"')"
                    ),
                    &[],
                )
                .await?;
                for (written, bytes) in csv_files(binds, rows) {
                    self.put_bytes(&format!("{written}.csv"), bytes, &path, PutOptions::new())
                        .await?;
                }
                Ok::<_, moodbridge_core::Error>(())
            };
            match staged.await {
                Ok(()) => Some(path),
                Err(e) => {
                    debug!(error = %e, "binds could not be staged; sending them in the request");
                    None
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_written_as_the_drivers_write_them() {
        let binds = [
            Bind::fixeds([1, 2]),
            Bind::optional_texts([Some("a, \"b\"".to_owned()), None]),
            Bind::texts(["", "plain"]),
        ];
        let files = csv_files(&binds, 2);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, 2);
        assert_eq!(
            String::from_utf8(files[0].1.clone()).unwrap_or_default(),
            "1,\"a, \"\"b\"\"\",\"\"\n2,,plain\n"
        );
    }
}
