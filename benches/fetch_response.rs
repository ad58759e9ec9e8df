//! `protocol::fetch::encode_fetch_response` for 1, 10 and 100 partitions
//! that each return records: the per-fetch CPU cost of the hand-encoded
//! response (the record bytes themselves go out by sendfile, not here).

mod common;

use std::hint::black_box;

use corelog::protocol::fetch::{encode_fetch_response, FetchPartitionOut, FetchTopicOut, Piece};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const FETCH_VERSION: i16 = 12;
/// What each partition sends: one consumer `max.partition.fetch.bytes`.
const PARTITION_RECORDS_BYTES: u32 = 1 << 20;

fn topics_with(partitions: i32) -> Vec<FetchTopicOut> {
    vec![FetchTopicOut {
        name: "orders.v1".into(),
        partitions: (0..partitions)
            .map(|p| FetchPartitionOut {
                partition: p,
                error_code: 0,
                high_watermark: 1_000_000 + i64::from(p),
                last_stable_offset: 1_000_000 + i64::from(p),
                log_start_offset: 0,
                records_len: PARTITION_RECORDS_BYTES,
            })
            .collect(),
    }]
}

fn encode_responses(c: &mut Criterion) {
    let mut group = c.benchmark_group("fetch_response");
    for partitions in [1, 10, 100] {
        let topics = topics_with(partitions);
        let pieces = encode_fetch_response(FETCH_VERSION, 7, 0, 1, &topics);
        let records = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Records { .. }))
            .count();
        assert_eq!(records, partitions as usize);
        group.throughput(Throughput::Elements(partitions as u64));
        group.bench_with_input(
            BenchmarkId::new(
                format!("encode_v{FETCH_VERSION}"),
                format!("{partitions}_partitions"),
            ),
            &topics,
            |b, topics| b.iter(|| encode_fetch_response(FETCH_VERSION, 7, 0, 1, black_box(topics))),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick_criterion();
    targets = encode_responses
}
criterion_main!(benches);
