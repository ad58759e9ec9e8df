//! Layer 2: partition logs. Segments, sparse indexes, the append path with
//! group commit, reads for fetch, retention and startup recovery. Never
//! imports `runtime` or `protocol` framing; it sees batches as validated
//! byte spans.

pub mod compact;
pub mod epoch_cache;
pub mod index;
pub mod log;
pub mod producer_state;
pub mod segment;

pub use log::{Appended, PartitionLog, ReadSlice, StorageError};

/// The directory of a partition under the data dir: `<topic>-<partition>`.
pub fn partition_dir(
    data_dir: &std::path::Path,
    tp: &crate::model::TopicPartition,
) -> std::path::PathBuf {
    data_dir.join(format!("{}-{}", tp.topic, tp.partition.0))
}
