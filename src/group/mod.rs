//! Layer 4: consumer groups. The coordinator of each group runs on the shard
//! that owns the group's `__consumer_offsets` partition; group metadata and
//! committed offsets are appended to that compacted partition and replayed
//! from it on startup.

pub mod coordinator;
pub mod records;
pub mod state;

pub use coordinator::{coordinator, partition_for, GroupConfig, GroupCoordinator, OFFSETS_TOPIC};
