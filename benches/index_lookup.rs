//! The fetch and ListOffsets lookups: `OffsetIndex::floor` and
//! `TimeIndex::search_start` on one segment's sparse index with 10k and 1M
//! entries, and `PartitionLog::read`, the whole fetch lookup (segment
//! choice, index floor, header scan by pread) on a log of many batches over
//! several segments. Lookups walk a fixed pseudo-random key sequence so the
//! branch predictor cannot learn one answer.

mod common;

use std::hint::black_box;

use bytes::Bytes;
use corelog::model::{PartitionId, TopicPartition};
use corelog::protocol::batch;
use corelog::storage::index::{OffsetIndex, TimeIndex};
use corelog::storage::PartitionLog;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use glommio::LocalExecutorBuilder;

/// Keys looked up in turn; a power of two so the cycle is a mask.
const LOOKUP_KEYS_COUNT: usize = 4096;
/// Offsets between index entries: a 4 KiB interval of ~120-byte records.
const INDEX_OFFSET_STRIDE: u32 = 32;
/// Batches in the read bench's log, ~1 KiB each.
const LOG_BATCHES_COUNT: usize = 64 * 1024;
/// Batches per append call while building that log.
const BUILD_BATCHES_PER_APPEND: usize = 256;
/// Small segments, so the log has several and `read` must pick one.
const LOG_SEGMENT_BYTES: &str = "log.segment.bytes=8388608";
/// A consumer's `max.partition.fetch.bytes`.
const FETCH_PARTITION_BYTES_MAX: u32 = 1 << 20;

/// xorshift64: a fixed, cheap key sequence (the same on every run).
fn lookup_keys(below: u64) -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..LOOKUP_KEYS_COUNT)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        })
        .collect()
}

fn lookup_indexes(c: &mut Criterion) {
    let mut group = c.benchmark_group("index_lookup");
    for entries in [10_000u32, 1_000_000] {
        let mut offsets = OffsetIndex::default();
        let mut times = TimeIndex::default();
        for i in 0..entries {
            offsets.push(i * INDEX_OFFSET_STRIDE, (i + 1) * 4096);
            times.push(
                1_700_000_000_000 + i64::from(i) * 10,
                i * INDEX_OFFSET_STRIDE,
            );
        }
        assert_eq!(offsets.len(), entries as usize);
        let rels: Vec<u32> = lookup_keys(u64::from(entries * INDEX_OFFSET_STRIDE))
            .into_iter()
            .map(|k| k as u32)
            .collect();
        let stamps: Vec<i64> = lookup_keys(u64::from(entries) * 10)
            .into_iter()
            .map(|k| 1_700_000_000_000 + k as i64)
            .collect();
        let label = format!("{entries}_entries");
        group.bench_function(BenchmarkId::new("offset_floor", &label), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (LOOKUP_KEYS_COUNT - 1);
                offsets.floor(black_box(rels[i]))
            })
        });
        group.bench_function(BenchmarkId::new("time_search_start", &label), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (LOOKUP_KEYS_COUNT - 1);
                times.search_start(black_box(stamps[i]))
            })
        });
    }
    group.finish();
}

/// `LOG_BATCHES_COUNT` batches of ~1 KiB, in appends of many batches each.
async fn build_log(dir: &std::path::Path, one_batch: &Bytes) -> std::rc::Rc<PartitionLog> {
    let config = common::topic_config(&[LOG_SEGMENT_BYTES]);
    let tp = TopicPartition {
        topic: "bench".into(),
        partition: PartitionId(0),
    };
    let log = PartitionLog::open(dir, tp, config).await.expect("open log");
    let chunk: Vec<u8> = one_batch.repeat(BUILD_BATCHES_PER_APPEND);
    let chunk = Bytes::from(chunk);
    let spans = batch::validate(&chunk, usize::MAX).expect("valid batches");
    assert_eq!(spans.len(), BUILD_BATCHES_PER_APPEND);
    for _ in 0..LOG_BATCHES_COUNT / BUILD_BATCHES_PER_APPEND {
        log.append(chunk.clone(), spans.clone())
            .await
            .expect("append");
    }
    log
}

fn read_log(c: &mut Criterion) {
    let one_batch = common::client_batch(1 << 10);
    let executor = LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor");
    // The log must live and die inside its executor, so the bench runs there
    // too; `read` itself is synchronous (index lookups and preads).
    executor.run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = build_log(dir.path(), &one_batch).await;
        let end = log.high_watermark();
        assert!(
            log.segment_count() > 4,
            "want several segments, have {}",
            log.segment_count()
        );
        let offsets: Vec<i64> = lookup_keys(end as u64)
            .into_iter()
            .map(|k| k as i64)
            .collect();
        let mut group = c.benchmark_group("index_lookup/partition_read");
        let label = format!(
            "{LOG_BATCHES_COUNT}_batches_{}_segments",
            log.segment_count()
        );
        group.bench_function(BenchmarkId::new("random_offset", &label), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (LOOKUP_KEYS_COUNT - 1);
                let slice = log.read(black_box(offsets[i]), FETCH_PARTITION_BYTES_MAX, end);
                slice.expect("read").expect("batch there")
            })
        });
        // A consumer that has caught up asks for the last batch or so.
        let tail = end - 1;
        group.bench_function(BenchmarkId::new("tail_offset", &label), |b| {
            b.iter(|| {
                let slice = log.read(black_box(tail), FETCH_PARTITION_BYTES_MAX, end);
                slice.expect("read").expect("batch there")
            })
        });
        group.finish();
        log.close().await.expect("close log");
    });
}

criterion_group! {
    name = benches;
    config = common::quick_criterion();
    targets = lookup_indexes, read_log
}
criterion_main!(benches);
