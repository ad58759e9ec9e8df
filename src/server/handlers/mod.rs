//! One file per Kafka API. Each handler does the cheap rejections first,
//! fans out per partition to the owning shard, and maps internal errors to
//! Kafka error codes in `error_code`.

pub mod admin;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_topics;
pub mod describe_configs;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;

use kafka_protocol::protocol::Encodable;

use super::connection::Response;
use crate::protocol::{self, api, RequestFrame, ResponseError};
use crate::runtime::ShardGone;
use crate::storage::StorageError;

pub async fn dispatch(frame: RequestFrame, peer: &str) -> Response {
    let result = match frame.api_key {
        api::API_VERSIONS => Ok(api_versions::handle(&frame)),
        api::METADATA => metadata::handle(&frame).await,
        api::PRODUCE => produce::handle(&frame).await,
        api::FETCH => fetch::handle(&frame).await,
        api::LIST_OFFSETS => list_offsets::handle(&frame).await,
        api::CREATE_TOPICS => create_topics::handle(&frame).await,
        api::DELETE_TOPICS => delete_topics::handle(&frame).await,
        api::CREATE_PARTITIONS => create_partitions::handle(&frame).await,
        api::DESCRIBE_CONFIGS => describe_configs::handle(&frame).await,
        api::FIND_COORDINATOR => find_coordinator::handle(&frame).await,
        api::JOIN_GROUP => join_group::handle(&frame, peer).await,
        api::SYNC_GROUP => sync_group::handle(&frame).await,
        api::HEARTBEAT => heartbeat::handle(&frame).await,
        api::LEAVE_GROUP => leave_group::handle(&frame).await,
        api::OFFSET_COMMIT => offset_commit::handle(&frame).await,
        api::OFFSET_FETCH => offset_fetch::handle(&frame).await,
        api::LIST_GROUPS => list_groups::handle(&frame).await,
        api::DESCRIBE_GROUPS => describe_groups::handle(&frame).await,
        api::DELETE_GROUPS => delete_groups::handle(&frame).await,
        api::OFFSET_DELETE => offset_delete::handle(&frame).await,
        other => Err(anyhow::anyhow!("api {other} reached dispatch unadvertised")),
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%peer, api = frame.api_key, version = frame.api_version, error = %e, "request failed");
            Response::Close(format!("api {} v{}: {e}", frame.api_key, frame.api_version))
        }
    }
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
        PartitionError::ShardGone => ResponseError::NotLeaderOrFollower.code(),
    }
}

/// What can go wrong with one partition's part of a request.
#[derive(Debug, Clone)]
pub enum PartitionError {
    UnknownTopicOrPartition,
    Storage(StorageError),
    ShardGone,
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
