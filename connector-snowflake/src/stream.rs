//! A result as a stream of Arrow record batches: the rows that came inline first, then
//! each chunk, downloaded ahead of the reader — at most `prefetch` chunks at a time, in
//! order — so a result of any size is read in bounded memory (about `prefetch` chunks
//! decoded, Snowflake's chunks being 10–100 MB each).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_array::RecordBatch;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use moodbridge_core::Result;

use crate::column::Column;
use crate::result::{QueryResult, Rowset};

/// Downloads chunk `index` of a rowset as batches (the client's chunk download).
pub(crate) type Download = Arc<
    dyn Fn(Arc<Rowset>, usize) -> futures::future::BoxFuture<'static, Result<Vec<RecordBatch>>>
        + Send
        + Sync,
>;

/// A statement's rows as a stream of Arrow [`RecordBatch`]es, chunks fetched ahead in
/// parallel with bounded memory (see [`SnowflakeConfig::prefetch`](crate::SnowflakeConfig::prefetch)).
///
/// ```no_run
/// use futures::TryStreamExt as _;
/// # async fn run(client: connector_snowflake::SnowflakeClient) -> moodbridge_core::Result<()> {
/// let mut rows = client.stream("select * from ACCOUNT", &[]).await?;
/// let mut count = 0;
/// while let Some(batch) = rows.try_next().await? {
///     count += batch.num_rows();
/// }
/// assert_eq!(count as u64, rows.total());
/// # Ok(()) }
/// ```
pub struct ResultStream {
    query_id: String,
    columns: Vec<Column>,
    total: u64,
    batches: Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>,
}

impl fmt::Debug for ResultStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultStream")
            .field("query_id", &self.query_id)
            .field("columns", &self.columns)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl ResultStream {
    pub(crate) fn new(download: Download, rowset: Rowset, prefetch: usize) -> Self {
        let rowset = Arc::new(rowset);
        let inline: VecDeque<RecordBatch> = rowset.inline.iter().cloned().collect();
        let total = rowset.total.unwrap_or_else(|| {
            let inline: usize = rowset.inline.iter().map(RecordBatch::num_rows).sum();
            let chunked: usize = rowset.chunks.iter().map(|c| c.rows).sum();
            (inline + chunked) as u64
        });
        let downloads = futures::stream::iter(0..rowset.chunks.len())
            .map({
                let rowset = rowset.clone();
                move |index| download(rowset.clone(), index)
            })
            .buffered(prefetch.max(1))
            .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
            .try_flatten();
        let batches = futures::stream::iter(inline.into_iter().map(Ok)).chain(downloads);
        ResultStream {
            query_id: rowset.query_id.clone(),
            columns: rowset.columns.clone(),
            total,
            batches: Box::pin(batches),
        }
    }

    /// Snowflake's id of the statement.
    pub fn query_id(&self) -> &str {
        &self.query_id
    }

    /// The columns, in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Rows in the whole result, as Snowflake counts them.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The rest of the result as the engine's column-shaped rows of stream `stream`,
    /// one [`RowBatch`](moodbridge_core::RowBatch) per Arrow batch
    /// ([`rows`](crate::rows)), still fetched ahead with bounded memory.
    pub fn into_rows(
        self,
        stream: impl Into<String>,
    ) -> impl Stream<Item = Result<moodbridge_core::RowBatch>> + Send {
        let stream = stream.into();
        let columns = self.columns;
        self.batches.map(move |batch| {
            batch.and_then(|batch| crate::rows::row_batch(&stream, &columns, &batch))
        })
    }

    /// Read every batch into a [`QueryResult`].
    ///
    /// # Errors
    /// A chunk that cannot be downloaded (after the policy's retries) or decoded.
    pub async fn collect(mut self) -> Result<QueryResult> {
        let mut batches = Vec::new();
        while let Some(batch) = self.batches.try_next().await? {
            batches.push(batch);
        }
        Ok(QueryResult {
            query_id: self.query_id,
            columns: self.columns,
            batches,
            total: self.total,
        })
    }
}

impl Stream for ResultStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.batches.as_mut().poll_next(cx)
    }
}
