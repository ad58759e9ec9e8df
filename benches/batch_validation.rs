//! `protocol::batch::validate` on client batches of 1 KiB to 1 MiB: the
//! per-produce CPU cost before a batch is queued for append (framing checks
//! plus one CRC32C over the batch). Reported as bytes per second.

mod common;

use std::hint::black_box;

use corelog::protocol::batch;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Larger than every batch here, so the size check passes as it does for a
/// topic configured to take 1 MiB batches.
const MESSAGE_BYTES_MAX: usize = 8 << 20;

fn validate_client_batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_validation");
    for target_bytes in [1 << 10, 16 << 10, 64 << 10, 1 << 20] {
        let records = common::client_batch(target_bytes);
        let spans = batch::validate(&records, MESSAGE_BYTES_MAX).expect("client batch is valid");
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].len, records.len());
        group.throughput(Throughput::Bytes(records.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("validate", common::size_label(target_bytes)),
            &records,
            |b, records| b.iter(|| batch::validate(black_box(records), MESSAGE_BYTES_MAX)),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick_criterion();
    targets = validate_client_batches
}
criterion_main!(benches);
