//! Inputs shared by the benches: client-shaped record batches and the
//! broker's default topic config. Each bench compiles this module on its
//! own and uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use corelog::config::{BrokerConfig, TopicConfig};
use criterion::Criterion;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Value bytes per record: a small JSON-ish event, as most producers send.
pub const RECORD_VALUE_BYTES: usize = 100;

/// A criterion config that keeps a bench to a couple of seconds per case
/// (the whole `cargo bench` has to fit a 2-core machine in minutes).
pub fn quick_criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .without_plots()
}

/// A RecordBatch v2 as an idempotent producer builds it: `count` records,
/// offsets 0.., sequence numbers following the offsets, no compression.
pub fn client_batch_of(count: usize) -> Bytes {
    assert!(count > 0);
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: 4242,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("user-{}", i % 1000))),
            value: Some(Bytes::from(
                (0..RECORD_VALUE_BYTES)
                    .map(|b| b'a' + ((i + b) % 26) as u8)
                    .collect::<Vec<u8>>(),
            )),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

/// A client batch of about `target_bytes` (within one record of it).
pub fn client_batch(target_bytes: usize) -> Bytes {
    let probe = client_batch_of(16);
    let record_bytes = (probe.len() - corelog::model::limits::batch_header_bytes) / 16;
    let count = (target_bytes.saturating_sub(corelog::model::limits::batch_header_bytes)
        / record_bytes)
        .max(1);
    client_batch_of(count)
}

/// The broker defaults with `overrides` (Kafka property names) applied.
pub fn topic_config(overrides: &[&str]) -> TopicConfig {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    BrokerConfig::load(
        "127.0.0.1:0".parse().expect("addr"),
        None,
        std::env::temp_dir(),
        Some(1),
        None,
        &overrides,
    )
    .expect("default broker config loads")
    .topic_defaults
}

/// Human label for a size: 1KiB, 64KiB, 1MiB.
pub fn size_label(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{}MiB", bytes >> 20)
    } else {
        format!("{}KiB", bytes >> 10)
    }
}
