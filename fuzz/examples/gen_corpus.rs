//! Writes the seed corpus of the `request_decode` target: for every API
//! corelog advertises (`protocol::api::SUPPORTED`), one small valid request
//! at each advertised version, plus bare record batches for
//! `batch::validate`. Deterministic, so
//! running it again rewrites the same files:
//!
//!     cd fuzz && cargo run --example gen_corpus

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use corelog::protocol::api;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ConsumerProtocolSubscription, CreatePartitionsRequest,
    CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest,
    OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, ProduceRequest, RequestHeader,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/request_decode");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let mut written = 0;
    for &(key, lo, hi) in api::SUPPORTED {
        let name = format!(
            "{:?}",
            ApiKey::try_from(key).expect("advertised keys are known")
        );
        // Versions below the codec's (OffsetCommit v0-1, decoded by hand)
        // get no generated seed.
        let codec_min = ApiKey::try_from(key)
            .expect("advertised keys are known")
            .valid_versions()
            .min;
        for version in lo.max(codec_min)..=hi {
            let Some(frame) = request(key, version) else {
                eprintln!("no seed builder for {name} (api {key}): add one to gen_corpus.rs");
                break;
            };
            std::fs::write(dir.join(format!("{name}_v{version}")), &frame).expect("write seed");
            written += 1;
        }
    }
    let one = batch(3, Compression::None);
    let two = [batch(1, Compression::None), batch(5, Compression::None)].concat();
    std::fs::write(dir.join("batch_3_records"), &one).expect("write seed");
    std::fs::write(dir.join("batch_two_batches"), two).expect("write seed");
    written += 2;
    for (name, frame) in huge_array_claims() {
        std::fs::write(dir.join(name), frame).expect("write seed");
        written += 1;
    }
    println!("wrote {written} seeds to {}", dir.display());
}

/// Requests whose first array claims billions of elements and then ends:
/// the decoder reserves that capacity up front, which only the broker's
/// `GuardedAlloc` survives. They keep the guard under test.
fn huge_array_claims() -> Vec<(&'static str, Bytes)> {
    let header = |key: i16, version: i16| {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .encode(
                &mut buf,
                ApiKey::try_from(key)
                    .expect("known")
                    .request_header_version(version),
            )
            .expect("header encodes");
        buf
    };
    let mut metadata_v0 = header(api::METADATA, 0);
    metadata_v0.put_i32(i32::MAX); // topics
    let mut metadata_v12 = header(api::METADATA, 12);
    metadata_v12.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // compact topics: u32::MAX
    let mut fetch_v4 = header(api::FETCH, 4);
    fetch_v4.put_i32(-1); // replica_id
    fetch_v4.put_i32(500); // max_wait_ms
    fetch_v4.put_i32(1); // min_bytes
    fetch_v4.put_i32(1 << 20); // max_bytes
    fetch_v4.put_i8(0); // isolation_level
    fetch_v4.put_i32(i32::MAX); // topics
    let mut produce_v9 = header(api::PRODUCE, 9);
    produce_v9.put_u8(0); // transactional_id: null
    produce_v9.put_i16(-1); // acks
    produce_v9.put_i32(1_000); // timeout_ms
    produce_v9.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // compact topic_data: u32::MAX
    vec![
        ("huge_metadata_v0_topics", metadata_v0.freeze()),
        ("huge_metadata_v12_topics", metadata_v12.freeze()),
        ("huge_fetch_v4_topics", fetch_v4.freeze()),
        ("huge_produce_v9_topics", produce_v9.freeze()),
    ]
}

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str("orders"))
}

/// A request frame without its size prefix, as `decode_request` takes it;
/// `None` for an API this generator has no builder for.
fn request(key: i16, version: i16) -> Option<Bytes> {
    let body = match key {
        api::PRODUCE => encode(&produce(), version),
        api::FETCH => encode(&fetch(), version),
        api::LIST_OFFSETS => encode(&list_offsets(version), version),
        api::METADATA => encode(&metadata(), version),
        api::OFFSET_COMMIT => encode(&offset_commit(version), version),
        api::OFFSET_FETCH => encode(&offset_fetch(version), version),
        api::FIND_COORDINATOR => encode(&find_coordinator(version), version),
        api::JOIN_GROUP => encode(&join_group(), version),
        api::HEARTBEAT => encode(&heartbeat(), version),
        api::LEAVE_GROUP => encode(&leave_group(version), version),
        api::SYNC_GROUP => encode(&sync_group(version), version),
        api::DESCRIBE_GROUPS => encode(&describe_groups(), version),
        api::LIST_GROUPS => encode(&list_groups(version), version),
        api::API_VERSIONS => encode(&api_versions(version), version),
        api::CREATE_TOPICS => encode(&create_topics(version), version),
        api::DELETE_TOPICS => encode(&delete_topics(version), version),
        api::DESCRIBE_CONFIGS => encode(&describe_configs(), version),
        api::CREATE_PARTITIONS => encode(&create_partitions(), version),
        api::DELETE_GROUPS => encode(&delete_groups(), version),
        api::OFFSET_DELETE => encode(&offset_delete(), version),
        _ => return None,
    };
    let api_key = ApiKey::try_from(key).expect("known api");
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("seed")))
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("header encodes");
    buf.extend_from_slice(&body);
    Some(buf.freeze())
}

fn encode<T: Encodable + std::fmt::Debug>(body: &T, version: i16) -> BytesMut {
    let mut buf = BytesMut::new();
    body.encode(&mut buf, version)
        .expect("body encodes at this version");
    buf
}

/// A RecordBatch v2 as an idempotent producer sends it.
fn batch(count: usize, compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: 7,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("batch encodes");
    buf.freeze()
}

fn produce() -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(3, Compression::None)))])])
}

fn fetch() -> FetchRequest {
    let partitions = (0..2)
        .map(|p| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(10)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic())
            .with_partitions(partitions)])
}

fn list_offsets(version: i16) -> ListOffsetsRequest {
    let mut partition = ListOffsetsPartition::default()
        .with_partition_index(0)
        .with_timestamp(-1);
    if version >= 4 {
        partition = partition.with_current_leader_epoch(0);
    }
    ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(topic())
        .with_partitions(vec![partition])])
}

fn metadata() -> MetadataRequest {
    MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic()))
    ]))
}

fn api_versions(version: i16) -> ApiVersionsRequest {
    if version < 3 {
        return ApiVersionsRequest::default();
    }
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("corelog-seed"))
        .with_client_software_version(StrBytes::from_static_str("1.0"))
}

fn create_topics(version: i16) -> CreateTopicsRequest {
    let config = CreatableTopicConfig::default()
        .with_name(StrBytes::from_static_str("retention.ms"))
        .with_value(Some(StrBytes::from_static_str("60000")));
    CreateTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_validate_only(version >= 1)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic())
            .with_num_partitions(3)
            .with_replication_factor(1)
            .with_configs(vec![config])])
}

fn delete_topics(version: i16) -> DeleteTopicsRequest {
    let request = DeleteTopicsRequest::default().with_timeout_ms(5_000);
    if version >= 6 {
        request.with_topics(vec![DeleteTopicState::default().with_name(Some(topic()))])
    } else {
        request.with_topic_names(vec![topic()])
    }
}

fn describe_configs() -> DescribeConfigsRequest {
    DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str("orders"))
        .with_configuration_keys(Some(vec![StrBytes::from_static_str("segment.bytes")]))])
}

fn create_partitions() -> CreatePartitionsRequest {
    CreatePartitionsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic())
            .with_count(6)])
}

fn group() -> GroupId {
    GroupId(StrBytes::from_static_str("billing"))
}

fn member() -> StrBytes {
    StrBytes::from_static_str("seed-0b7c2a51")
}

fn offset_commit(version: i16) -> OffsetCommitRequest {
    let partition = OffsetCommitRequestPartition::default()
        .with_partition_index(0)
        .with_committed_offset(42)
        .with_committed_metadata(Some(StrBytes::from_static_str("")));
    let request = OffsetCommitRequest::default()
        .with_group_id(group())
        .with_generation_id_or_member_epoch(1)
        .with_member_id(member())
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic())
            .with_partitions(vec![partition])]);
    if (2..=4).contains(&version) {
        request.with_retention_time_ms(-1)
    } else {
        request
    }
}

fn offset_fetch(version: i16) -> OffsetFetchRequest {
    if version >= 8 {
        let group = OffsetFetchRequestGroup::default()
            .with_group_id(group())
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(topic())
                .with_partition_indexes(vec![0, 1])]));
        return OffsetFetchRequest::default().with_groups(vec![group]);
    }
    OffsetFetchRequest::default()
        .with_group_id(group())
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic())
            .with_partition_indexes(vec![0, 1])]))
}

fn find_coordinator(version: i16) -> FindCoordinatorRequest {
    let key = StrBytes::from_static_str("billing");
    if version >= 4 {
        FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
    } else {
        FindCoordinatorRequest::default().with_key(key)
    }
}

/// A Java consumer's member metadata: version prefix, then the subscription.
fn subscription() -> Bytes {
    let version = 1;
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("orders")])
        .encode(&mut buf, version)
        .expect("subscription encodes");
    buf.freeze()
}

fn join_group() -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group())
        .with_session_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(subscription())])
}

fn heartbeat() -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(group())
        .with_generation_id(1)
        .with_member_id(member())
}

fn leave_group(version: i16) -> LeaveGroupRequest {
    let request = LeaveGroupRequest::default().with_group_id(group());
    if version >= 3 {
        request.with_members(vec![MemberIdentity::default().with_member_id(member())])
    } else {
        request.with_member_id(member())
    }
}

fn sync_group(version: i16) -> SyncGroupRequest {
    let request = SyncGroupRequest::default()
        .with_group_id(group())
        .with_generation_id(1)
        .with_member_id(member())
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(member())
            .with_assignment(Bytes::from_static(
                b"\0\0\0\0\0\x01\0\x06orders\0\0\0\x01\0\0\0\0\xff\xff\xff\xff",
            ))]);
    if version >= 5 {
        request
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(StrBytes::from_static_str("range")))
    } else {
        request
    }
}

fn describe_groups() -> DescribeGroupsRequest {
    DescribeGroupsRequest::default().with_groups(vec![group()])
}

fn list_groups(version: i16) -> ListGroupsRequest {
    if version >= 4 {
        ListGroupsRequest::default().with_states_filter(vec![StrBytes::from_static_str("Stable")])
    } else {
        ListGroupsRequest::default()
    }
}

fn delete_groups() -> DeleteGroupsRequest {
    DeleteGroupsRequest::default().with_groups_names(vec![group()])
}

fn offset_delete() -> OffsetDeleteRequest {
    OffsetDeleteRequest::default()
        .with_group_id(group())
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(topic())
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])])
}
