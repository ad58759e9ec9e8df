//! Request decoding on the connection's hot path: `protocol::decode_request`
//! (the header) and `protocol::decode_body` (the typed body) for a Produce v9
//! carrying one 64 KiB batch and a Fetch v12 for 100 partitions, as a Java
//! client would send them. The produce case also adds batch validation, which
//! completes everything the broker parses before it queues the append.

mod common;

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use corelog::protocol::{self, api, batch};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchRequest, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const FETCH_PARTITIONS: i32 = 100;
const MESSAGE_BYTES_MAX: usize = 1 << 20;

/// A request frame without its size prefix, as `decode_request` takes it.
fn request_frame(api_key: i16, version: i16, body: &impl Encodable) -> Bytes {
    let key = ApiKey::try_from(api_key).expect("known api");
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(12_345)
        .with_client_id(Some(StrBytes::from_static_str("producer-1")))
        .encode(&mut buf, key.request_header_version(version))
        .expect("encode header");
    body.encode(&mut buf, version).expect("encode body");
    buf.freeze()
}

fn produce_frame(records: Bytes) -> Bytes {
    let body = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("orders.v1")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(3)
                .with_records(Some(records))])]);
    request_frame(api::PRODUCE, PRODUCE_VERSION, &body)
}

fn fetch_frame() -> Bytes {
    let partitions = (0..FETCH_PARTITIONS)
        .map(|p| {
            FetchPartition::default()
                .with_partition(p)
                .with_current_leader_epoch(0)
                .with_fetch_offset(1_000_000 + i64::from(p))
                .with_log_start_offset(-1)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    let body = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("orders.v1")))
            .with_partitions(partitions)]);
    request_frame(api::FETCH, FETCH_VERSION, &body)
}

/// Everything the broker parses of a produce before it queues the append.
fn parse_produce(frame: Bytes) -> usize {
    let request = protocol::decode_request(frame).expect("header");
    let body: ProduceRequest =
        protocol::decode_body(&request.body, request.api_version).expect("body");
    let mut batches = 0;
    for topic in &body.topic_data {
        for partition in &topic.partition_data {
            let records = partition.records.as_ref().expect("records");
            batches += batch::validate(records, MESSAGE_BYTES_MAX)
                .expect("valid batch")
                .len();
        }
    }
    batches
}

fn decode_produce(c: &mut Criterion) {
    let frame = produce_frame(common::client_batch(64 << 10));
    assert_eq!(parse_produce(frame.clone()), 1);
    let mut group = c.benchmark_group("request_decode/produce_v9_64KiB");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("header", |b| {
        b.iter(|| protocol::decode_request(black_box(frame.clone())).expect("header"))
    });
    group.bench_function("header_and_body", |b| {
        b.iter(|| {
            let request = protocol::decode_request(black_box(frame.clone())).expect("header");
            protocol::decode_body::<ProduceRequest>(&request.body, request.api_version)
                .expect("body")
        })
    });
    group.bench_function("header_body_and_validate", |b| {
        b.iter(|| parse_produce(black_box(frame.clone())))
    });
    group.finish();
}

fn decode_fetch(c: &mut Criterion) {
    let frame = fetch_frame();
    let request = protocol::decode_request(frame.clone()).expect("header");
    let body: FetchRequest =
        protocol::decode_body(&request.body, request.api_version).expect("body");
    assert_eq!(body.topics[0].partitions.len(), FETCH_PARTITIONS as usize);
    let mut group = c.benchmark_group("request_decode/fetch_v12_100_partitions");
    group.throughput(Throughput::Elements(FETCH_PARTITIONS as u64));
    group.bench_function("header_and_body", |b| {
        b.iter(|| {
            let request = protocol::decode_request(black_box(frame.clone())).expect("header");
            protocol::decode_body::<FetchRequest>(&request.body, request.api_version).expect("body")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick_criterion();
    targets = decode_produce, decode_fetch
}
criterion_main!(benches);
