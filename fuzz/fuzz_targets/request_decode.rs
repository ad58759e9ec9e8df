//! Fuzzes everything corelog parses from a client before any handler logic
//! runs: the request header (`protocol::decode_request`), the typed body of
//! every advertised API (`protocol::decode_body`, checked against the
//! broker's own `server::handlers::decode_request`), and RecordBatch
//! validation (`protocol::batch::validate`) of the raw input and of the
//! records inside any Produce request, and the consumer-protocol member
//! metadata inside JoinGroup (which the group coordinator decodes).
//!
//! The allocator is the broker's: kafka-protocol's decoder reserves
//! `Vec::with_capacity(n)` for an attacker-chosen array length `n`, and
//! `GuardedAlloc` serves such reservations (>= 1 GiB) from an untouched
//! `MAP_NORESERVE` mapping instead of aborting. Without it this target
//! would report those reservations as out-of-memory crashes.

#![no_main]

use std::hint::black_box;

use bytes::{Buf, Bytes};
use corelog::protocol::batch::{self, BatchSpan};
use corelog::protocol::messages::{
    ApiKey, ApiVersionsRequest, ConsumerProtocolSubscription, CreatePartitionsRequest,
    CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest,
    OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, ProduceRequest, RequestKind,
    SyncGroupRequest,
};
use corelog::protocol::{self, api, RequestFrame};
use corelog::server::handlers;
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static GLOBAL: corelog::io::alloc::GuardedAlloc = corelog::io::alloc::GuardedAlloc;

/// Kafka's default `message.max.bytes`, the limit produce validation uses.
const MESSAGE_BYTES_MAX: usize = 1_048_588;

fuzz_target!(|data: &[u8]| {
    check_batches(data);
    let Ok(frame) = protocol::decode_request(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert_eq!(frame.api_key, i16::from_be_bytes([data[0], data[1]]));
    assert_eq!(frame.api_version, i16::from_be_bytes([data[2], data[3]]));
    assert!(api::supports(frame.api_key, frame.api_version));
    assert!(frame.body.len() <= data.len() - 8);
    let typed = decode_body_of(&frame);
    // The broker's own decode-before-dispatch must agree with the typed
    // decode above: a disagreement means an advertised API is missing from
    // its table or mapped to the wrong type. ApiVersions is answered without
    // decoding its body (clients send versions newer than we know).
    let broker = handlers::decode_request(&frame).is_ok();
    if frame.api_key != api::API_VERSIONS {
        assert_eq!(
            broker, typed,
            "handlers::decode_request disagrees on api {}",
            frame.api_key
        );
    }
});

/// Decodes the body into the type its handler decodes; true if it decoded.
fn decode_body_of(frame: &RequestFrame) -> bool {
    match frame.api_key {
        api::PRODUCE => {
            let Some(request) = decode::<ProduceRequest>(frame) else {
                return false;
            };
            for topic in &request.topic_data {
                for partition in &topic.partition_data {
                    if let Some(records) = &partition.records {
                        check_batches(records);
                    }
                }
            }
            true
        }
        api::JOIN_GROUP => {
            let Some(request) = decode::<JoinGroupRequest>(frame) else {
                return false;
            };
            for protocol in &request.protocols {
                decode_subscription(protocol.metadata.clone());
            }
            true
        }
        api::FETCH => decoded::<FetchRequest>(frame),
        api::LIST_OFFSETS => decoded::<ListOffsetsRequest>(frame),
        api::METADATA => decoded::<MetadataRequest>(frame),
        // v0-1 have no kafka-protocol schema: the broker's hand decoder.
        api::OFFSET_COMMIT if frame.api_version < 2 => {
            handlers::offset_commit::decode_v0_v1(&frame.body, frame.api_version).is_ok()
        }
        api::OFFSET_COMMIT => decoded::<OffsetCommitRequest>(frame),
        api::OFFSET_FETCH => decoded::<OffsetFetchRequest>(frame),
        api::FIND_COORDINATOR => decoded::<FindCoordinatorRequest>(frame),
        api::HEARTBEAT => decoded::<HeartbeatRequest>(frame),
        api::LEAVE_GROUP => decoded::<LeaveGroupRequest>(frame),
        api::SYNC_GROUP => decoded::<SyncGroupRequest>(frame),
        api::DESCRIBE_GROUPS => decoded::<DescribeGroupsRequest>(frame),
        api::LIST_GROUPS => decoded::<ListGroupsRequest>(frame),
        api::API_VERSIONS => decoded::<ApiVersionsRequest>(frame),
        api::CREATE_TOPICS => decoded::<CreateTopicsRequest>(frame),
        api::DELETE_TOPICS => decoded::<DeleteTopicsRequest>(frame),
        api::DESCRIBE_CONFIGS => decoded::<DescribeConfigsRequest>(frame),
        api::CREATE_PARTITIONS => decoded::<CreatePartitionsRequest>(frame),
        api::DELETE_GROUPS => decoded::<DeleteGroupsRequest>(frame),
        api::OFFSET_DELETE => decoded::<OffsetDeleteRequest>(frame),
        // An API advertised after this target was written: decode it with
        // the codec's own table until someone adds its arm above.
        other => {
            let key = ApiKey::try_from(other).expect("decode_request checked the key");
            let mut body = frame.body.clone();
            black_box(RequestKind::decode(key, &mut body, frame.api_version)).is_ok()
        }
    }
}

/// JoinGroup member metadata, read as `group::state` reads it: a version
/// prefix (clamped to what the codec knows), then the subscription.
fn decode_subscription(mut metadata: Bytes) {
    if metadata.len() < 2 {
        return;
    }
    let version = metadata.get_i16().clamp(0, 3);
    drop(black_box(ConsumerProtocolSubscription::decode(
        &mut metadata,
        version,
    )));
}

fn decode<T: Decodable>(frame: &RequestFrame) -> Option<T> {
    protocol::decode_body(&frame.body, frame.api_version).ok()
}

fn decoded<T: Decodable>(frame: &RequestFrame) -> bool {
    black_box(decode::<T>(frame)).is_some()
}

/// Validates `records` and, when they pass, checks the spans tile them.
fn check_batches(records: &[u8]) {
    let Ok(spans) = batch::validate(records, MESSAGE_BYTES_MAX) else {
        return;
    };
    let mut at = 0;
    for BatchSpan {
        start,
        len,
        records: count,
        last_offset_delta,
        ..
    } in spans
    {
        assert_eq!(start, at, "spans are contiguous");
        assert!(len >= corelog::model::limits::batch_header_bytes);
        assert!(len <= MESSAGE_BYTES_MAX);
        assert!(count > 0 && (0..count).contains(&last_offset_delta));
        at += len;
    }
    assert_eq!(at, records.len(), "spans cover the input");
}
