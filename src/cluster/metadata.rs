//! The cluster metadata image: what the controller quorum agrees on and
//! every broker receives. Plain data (`Send`, `Clone`), encoded with rkyv
//! on the controller wire and in metadata snapshots.
//!
//! Owned by the controller (the state machine applies committed records to
//! it); brokers hold read-only copies, one per shard.

use std::collections::BTreeMap;

/// No leader (all in-sync replicas are gone), as Kafka's `-1`.
pub const NO_LEADER: i32 = -1;

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BrokerInfo {
    pub id: i32,
    /// Kafka listener address clients and followers connect to.
    pub host: String,
    pub port: u16,
    /// Random per process start; a new value means the broker restarted.
    pub incarnation: u64,
    /// Fenced brokers missed heartbeats: they lead nothing and are in no ISR.
    pub fenced: bool,
}

/// One partition's replicas and leadership.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionState {
    /// Assigned replicas; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// In-sync replicas (always includes the leader when there is one).
    pub isr: Vec<i32>,
    /// `NO_LEADER` when offline.
    pub leader: i32,
    /// Bumped on every leader change.
    pub leader_epoch: i32,
    /// Bumped on every change of this partition (leader or ISR): the
    /// version an AlterPartition must name.
    pub partition_epoch: i32,
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicImage {
    pub name: String,
    /// The topic id (a UUID) as a number.
    pub id: u128,
    /// Per-topic config overrides (Kafka property names).
    pub configs: BTreeMap<String, String>,
    /// Indexed by partition number.
    pub partitions: Vec<PartitionState>,
}

/// The whole metadata state at one point of the metadata log.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct MetadataImage {
    /// The metadata log index this image reflects (monotonic).
    pub version: u64,
    /// The current quorum leader (active controller), -1 if unknown.
    pub controller_id: i32,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicImage>,
}

impl MetadataImage {
    /// Live (unfenced) brokers.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
    }
}
