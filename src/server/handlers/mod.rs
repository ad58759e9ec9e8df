//! One file per Kafka API. Each handler does the cheap rejections first,
//! fans out per partition to the owning shard, and maps internal errors to
//! Kafka error codes in `error_code`.

pub mod admin;
pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use kafka_protocol::protocol::Encodable;

use super::connection::Response;
use crate::protocol::{self, api, messages, RequestFrame, ResponseError};
use crate::runtime::ShardGone;
use crate::storage::StorageError;

/// A request body decoded on the connection's shard, before any handler
/// runs: a malformed request closes the connection before the requests
/// pipelined behind it can take effect.
pub enum Decoded {
    InitProducerId(messages::InitProducerIdRequest),
    ApiVersions,
    Metadata(messages::MetadataRequest),
    Produce(messages::ProduceRequest),
    Fetch(messages::FetchRequest),
    ListOffsets(messages::ListOffsetsRequest),
    CreateTopics(messages::CreateTopicsRequest),
    DeleteTopics(messages::DeleteTopicsRequest),
    CreatePartitions(messages::CreatePartitionsRequest),
    DescribeConfigs(messages::DescribeConfigsRequest),
    FindCoordinator(messages::FindCoordinatorRequest),
    JoinGroup(messages::JoinGroupRequest),
    SyncGroup(messages::SyncGroupRequest),
    Heartbeat(messages::HeartbeatRequest),
    LeaveGroup(messages::LeaveGroupRequest),
    OffsetCommit(messages::OffsetCommitRequest),
    OffsetFetch(messages::OffsetFetchRequest),
    ListGroups(messages::ListGroupsRequest),
    DescribeGroups(messages::DescribeGroupsRequest),
    DeleteGroups(messages::DeleteGroupsRequest),
    OffsetDelete(messages::OffsetDeleteRequest),
    OffsetForLeaderEpoch(messages::OffsetForLeaderEpochRequest),
    DescribeCluster(messages::DescribeClusterRequest),
    AlterConfigs(messages::AlterConfigsRequest),
    IncrementalAlterConfigs(messages::IncrementalAlterConfigsRequest),
}

/// Decodes the body of a request whose API and version are supported.
pub fn decode_request(frame: &RequestFrame) -> anyhow::Result<Decoded> {
    Ok(match frame.api_key {
        api::INIT_PRODUCER_ID => Decoded::InitProducerId(decode(frame)?),
        api::API_VERSIONS => Decoded::ApiVersions,
        api::METADATA => Decoded::Metadata(decode(frame)?),
        api::PRODUCE => Decoded::Produce(decode(frame)?),
        api::FETCH => Decoded::Fetch(decode(frame)?),
        api::LIST_OFFSETS => Decoded::ListOffsets(decode(frame)?),
        api::CREATE_TOPICS => Decoded::CreateTopics(decode(frame)?),
        api::DELETE_TOPICS => Decoded::DeleteTopics(decode(frame)?),
        api::CREATE_PARTITIONS => Decoded::CreatePartitions(decode(frame)?),
        api::DESCRIBE_CONFIGS => Decoded::DescribeConfigs(decode(frame)?),
        api::FIND_COORDINATOR => Decoded::FindCoordinator(decode(frame)?),
        api::JOIN_GROUP => Decoded::JoinGroup(decode(frame)?),
        api::SYNC_GROUP => Decoded::SyncGroup(decode(frame)?),
        api::HEARTBEAT => Decoded::Heartbeat(decode(frame)?),
        api::LEAVE_GROUP => Decoded::LeaveGroup(decode(frame)?),
        api::OFFSET_COMMIT if frame.api_version < 2 => {
            Decoded::OffsetCommit(offset_commit::decode_v0_v1(&frame.body, frame.api_version)?)
        }
        api::OFFSET_COMMIT => Decoded::OffsetCommit(decode(frame)?),
        api::OFFSET_FETCH => Decoded::OffsetFetch(decode(frame)?),
        api::LIST_GROUPS => Decoded::ListGroups(decode(frame)?),
        api::DESCRIBE_GROUPS => Decoded::DescribeGroups(decode(frame)?),
        api::DELETE_GROUPS => Decoded::DeleteGroups(decode(frame)?),
        api::OFFSET_DELETE => Decoded::OffsetDelete(decode(frame)?),
        api::OFFSET_FOR_LEADER_EPOCH => Decoded::OffsetForLeaderEpoch(decode(frame)?),
        api::DESCRIBE_CLUSTER => Decoded::DescribeCluster(decode(frame)?),
        api::ALTER_CONFIGS => Decoded::AlterConfigs(decode(frame)?),
        api::INCREMENTAL_ALTER_CONFIGS => Decoded::IncrementalAlterConfigs(decode(frame)?),
        other => anyhow::bail!("api {other} reached decode unadvertised"),
    })
}

pub async fn dispatch(frame: RequestFrame, req: Decoded, peer: &str) -> Response {
    let result = match req {
        Decoded::InitProducerId(r) => init_producer_id::handle(&frame, r).await,
        Decoded::ApiVersions => Ok(api_versions::handle(&frame)),
        Decoded::Metadata(r) => metadata::handle(&frame, r).await,
        Decoded::Produce(r) => produce::handle(&frame, r).await,
        Decoded::Fetch(r) => fetch::handle(&frame, r).await,
        Decoded::ListOffsets(r) => list_offsets::handle(&frame, r).await,
        Decoded::CreateTopics(r) => create_topics::handle(&frame, r).await,
        Decoded::DeleteTopics(r) => delete_topics::handle(&frame, r).await,
        Decoded::CreatePartitions(r) => create_partitions::handle(&frame, r).await,
        Decoded::DescribeConfigs(r) => describe_configs::handle(&frame, r).await,
        Decoded::FindCoordinator(r) => find_coordinator::handle(&frame, r).await,
        Decoded::JoinGroup(r) => join_group::handle(&frame, r, peer).await,
        Decoded::SyncGroup(r) => sync_group::handle(&frame, r).await,
        Decoded::Heartbeat(r) => heartbeat::handle(&frame, r).await,
        Decoded::LeaveGroup(r) => leave_group::handle(&frame, r).await,
        Decoded::OffsetCommit(r) => offset_commit::handle(&frame, r).await,
        Decoded::OffsetFetch(r) => offset_fetch::handle(&frame, r).await,
        Decoded::ListGroups(r) => list_groups::handle(&frame, r).await,
        Decoded::DescribeGroups(r) => describe_groups::handle(&frame, r).await,
        Decoded::DeleteGroups(r) => delete_groups::handle(&frame, r).await,
        Decoded::OffsetDelete(r) => offset_delete::handle(&frame, r).await,
        Decoded::OffsetForLeaderEpoch(r) => offset_for_leader_epoch::handle(&frame, r).await,
        Decoded::DescribeCluster(r) => describe_cluster::handle(&frame, r).await,
        Decoded::AlterConfigs(r) => alter_configs::handle(&frame, r).await,
        Decoded::IncrementalAlterConfigs(r) => incremental_alter_configs::handle(&frame, r).await,
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%peer, api = frame.api_key, version = frame.api_version, error = %e, "request failed");
            Response::Close(format!("api {} v{}: {e}", frame.api_key, frame.api_version))
        }
    }
}

/// Runs `f` with the partition on the shard that owns it, or answers
/// UNKNOWN_TOPIC_OR_PARTITION when this broker's metadata has no such
/// partition (the common fan-out of per-partition handlers).
pub async fn on_owner<T, F, Fut>(topic: &str, partition: i32, f: F) -> Result<T, PartitionError>
where
    T: Send + 'static,
    F: FnOnce(crate::model::TopicPartition) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, PartitionError>> + 'static,
{
    let c = crate::server::context::ctx();
    if !c
        .topic(topic)
        .is_some_and(|m| (0..m.partitions).contains(&partition))
    {
        return Err(PartitionError::UnknownTopicOrPartition);
    }
    let tp = crate::model::TopicPartition {
        topic: topic.to_string(),
        partition: crate::model::PartitionId(partition),
    };
    crate::runtime::run_on(c.owner(topic, partition), move || f(tp))
        .await
        .map_err(PartitionError::from)
        .and_then(|r| r)
}

/// Decodes the body, or explains why not.
pub fn decode<T: kafka_protocol::protocol::Decodable>(frame: &RequestFrame) -> anyhow::Result<T> {
    protocol::decode_body(&frame.body, frame.api_version)
        .map_err(|e| anyhow::anyhow!("malformed request body: {e}"))
}

/// Encodes a response body for this request.
pub fn reply<T: Encodable>(frame: &RequestFrame, body: &T) -> anyhow::Result<Response> {
    let bytes =
        protocol::encode_response(frame.api_key, frame.api_version, frame.correlation_id, body)?;
    Ok(Response::Bytes(bytes))
}

/// The one place internal errors become Kafka error codes.
pub fn error_code(e: &PartitionError) -> i16 {
    match e {
        PartitionError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition.code(),
        PartitionError::Storage(StorageError::OffsetOutOfRange { .. }) => {
            ResponseError::OffsetOutOfRange.code()
        }
        PartitionError::Storage(StorageError::Poisoned(_)) => {
            ResponseError::KafkaStorageError.code()
        }
        PartitionError::Storage(StorageError::Io(_)) => ResponseError::KafkaStorageError.code(),
        PartitionError::Storage(StorageError::NonContiguous { .. }) => {
            ResponseError::OffsetOutOfRange.code()
        }
        PartitionError::Storage(StorageError::Producer(code)) => *code,
        PartitionError::ShardGone => ResponseError::NotLeaderOrFollower.code(),
        PartitionError::Code(code, _) => *code,
    }
}

/// What can go wrong with one partition's part of a request.
#[derive(Debug, Clone)]
pub enum PartitionError {
    UnknownTopicOrPartition,
    Storage(StorageError),
    ShardGone,
    /// A Kafka error code from the replication layer, with a message.
    Code(i16, Option<String>),
}

impl From<crate::replication::ReplicaError> for PartitionError {
    fn from(e: crate::replication::ReplicaError) -> Self {
        match e {
            crate::replication::ReplicaError::Code(c, m) => PartitionError::Code(c, m),
            crate::replication::ReplicaError::Storage(s) => PartitionError::Storage(s),
        }
    }
}

impl From<StorageError> for PartitionError {
    fn from(e: StorageError) -> Self {
        PartitionError::Storage(e)
    }
}

impl From<ShardGone> for PartitionError {
    fn from(_: ShardGone) -> Self {
        PartitionError::ShardGone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every advertised API must reach a decoder (an empty body then fails
    /// as malformed, never as unknown to the dispatcher).
    #[test]
    fn every_advertised_api_has_a_decoder() {
        for &(key, lo, hi) in api::SUPPORTED {
            for version in [lo, hi] {
                let frame = RequestFrame {
                    api_key: key,
                    api_version: version,
                    correlation_id: 1,
                    client_id: None,
                    body: bytes::Bytes::new(),
                };
                if let Err(e) = decode_request(&frame) {
                    assert!(
                        !e.to_string().contains("unadvertised"),
                        "api {key} v{version}: {e}"
                    );
                }
            }
        }
    }
}
