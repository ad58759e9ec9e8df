//! Layer 0: plain value types shared by every layer, the RecordBatch v2 header
//! view, and `limits`, the one place every bound lives. No I/O, no async.

use std::fmt;

/// A Kafka offset: the position of a record in a partition's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

/// A partition index within a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub i32);

/// The index of a shard (one pinned executor per core).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShardId(pub usize);

/// A broker's node id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(pub i32);

/// A partition leader epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub i32);

/// A topic and partition, the unit of ownership.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: PartitionId,
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition.0)
    }
}

/// Which shard owns a partition. Every shard computes the same answer from
/// the same inputs, so the partition->shard table needs no shared state.
pub fn shard_for(topic: &str, partition: PartitionId, shards: usize) -> ShardId {
    assert!(shards > 0);
    // FNV-1a: stable across builds and platforms (unlike std's SipHash keys).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in topic.as_bytes().iter().chain(&partition.0.to_be_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    ShardId((hash % shards as u64) as usize)
}

#[allow(non_upper_case_globals)]
pub mod limits {
    //! Every bound in corelog, named with its unit last.

    /// Size of the RecordBatch v2 header, in bytes.
    pub const batch_header_bytes: usize = 61;
    /// The smallest valid batch: header plus nothing (records_count 0 is rejected separately).
    pub const batch_bytes_min: usize = batch_header_bytes;
    /// Topic name length, as Kafka allows.
    pub const topic_name_bytes_max: usize = 249;
    /// Partitions per topic we accept at CreateTopics/CreatePartitions.
    pub const partitions_per_topic_max: i32 = 10_000;
    /// Records one batch may claim (bounds the offsets a batch consumes).
    pub const batch_offsets_max: i32 = 16 * 1024 * 1024;
    /// The smallest encoding of one v2 record, in bytes.
    pub const record_bytes_min: usize = 7;
    /// Requests one connection may have in flight before we stop reading it.
    pub const connection_inflight_requests_max: usize = 64;
    /// Sub-requests queued on one shard's mesh inbox from one peer.
    pub const mesh_channel_depth_max: usize = 1024;
    /// Bytes of index entries: one entry per this many bytes of log.
    pub const index_interval_bytes: u64 = 4096;
    /// Bytes copied through an async write when sendfile would block: the
    /// write waits for the socket to drain, then sendfile resumes. Small, so
    /// nearly all record bytes stay zero-copy.
    pub const sendfile_fallback_chunk_bytes: usize = 4 * 1024;
    /// Batches one append drain may coalesce into one write.
    pub const append_coalesce_batches_max: usize = 256;
    /// Bytes one append drain may coalesce into one write.
    pub const append_coalesce_bytes_max: usize = 4 * 1024 * 1024;
    /// Longest `max.wait.ms` we honour for a fetch.
    pub const fetch_wait_ms_max: i32 = 30_000;
}

/// Byte offsets of the RecordBatch v2 header fields (all big-endian).
#[allow(non_upper_case_globals)]
pub mod batch_layout {
    pub const base_offset: usize = 0;
    pub const batch_length: usize = 8;
    pub const partition_leader_epoch: usize = 12;
    pub const magic: usize = 16;
    pub const crc: usize = 17;
    pub const attributes: usize = 21;
    pub const last_offset_delta: usize = 23;
    pub const base_timestamp: usize = 27;
    pub const max_timestamp: usize = 35;
    pub const producer_id: usize = 43;
    pub const producer_epoch: usize = 51;
    pub const base_sequence: usize = 53;
    pub const records_count: usize = 57;
    /// The CRC covers from `attributes` to the end of the batch.
    pub const crc_start: usize = attributes;
    /// `batch_length` counts the bytes after itself.
    pub const length_prefix_bytes: usize = 12;
}

/// A read-only view of a RecordBatch v2 header. Construction checks only that
/// the header bytes are present; `protocol::batch` validates the rest.
#[derive(Clone, Copy)]
pub struct BatchHeader<'a> {
    bytes: &'a [u8],
}

impl<'a> BatchHeader<'a> {
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() < limits::batch_header_bytes {
            return None;
        }
        Some(Self { bytes })
    }
    fn i64_at(&self, at: usize) -> i64 {
        i64::from_be_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"))
    }
    fn i32_at(&self, at: usize) -> i32 {
        i32::from_be_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"))
    }
    fn i16_at(&self, at: usize) -> i16 {
        i16::from_be_bytes(self.bytes[at..at + 2].try_into().expect("2 bytes"))
    }
    pub fn base_offset(&self) -> i64 {
        self.i64_at(batch_layout::base_offset)
    }
    pub fn batch_length(&self) -> i32 {
        self.i32_at(batch_layout::batch_length)
    }
    /// Total bytes of the batch including the offset and length prefix.
    pub fn total_bytes(&self) -> i64 {
        i64::from(self.batch_length()) + batch_layout::length_prefix_bytes as i64
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        self.i32_at(batch_layout::partition_leader_epoch)
    }
    pub fn magic(&self) -> i8 {
        self.bytes[batch_layout::magic] as i8
    }
    pub fn crc(&self) -> u32 {
        self.i32_at(batch_layout::crc) as u32
    }
    pub fn attributes(&self) -> i16 {
        self.i16_at(batch_layout::attributes)
    }
    pub fn compression(&self) -> i16 {
        self.attributes() & 0x07
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & 0x08 != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & 0x20 != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        self.i32_at(batch_layout::last_offset_delta)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + i64::from(self.last_offset_delta())
    }
    pub fn base_timestamp(&self) -> i64 {
        self.i64_at(batch_layout::base_timestamp)
    }
    pub fn max_timestamp(&self) -> i64 {
        self.i64_at(batch_layout::max_timestamp)
    }
    pub fn producer_id(&self) -> i64 {
        self.i64_at(batch_layout::producer_id)
    }
    pub fn producer_epoch(&self) -> i16 {
        self.i16_at(batch_layout::producer_epoch)
    }
    pub fn base_sequence(&self) -> i32 {
        self.i32_at(batch_layout::base_sequence)
    }
    pub fn records_count(&self) -> i32 {
        self.i32_at(batch_layout::records_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_for_is_stable_and_in_range() {
        for shards in 1..8 {
            for p in 0..32 {
                let s = shard_for("orders", PartitionId(p), shards);
                assert!(s.0 < shards);
                assert_eq!(s, shard_for("orders", PartitionId(p), shards));
            }
        }
    }

    #[test]
    fn batch_header_needs_61_bytes() {
        assert!(BatchHeader::new(&[0u8; 60]).is_none());
        assert!(BatchHeader::new(&[0u8; 61]).is_some());
    }
}
