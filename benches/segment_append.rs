//! `PartitionLog::append` through io_uring on a partition in a tempdir: the
//! acks=1 path (written and visible, no fsync) and the acks=all path
//! (append, then `sync_to` the batch's end: one fdatasync each), for 16 KiB
//! and 64 KiB client batches; plus acks=all from 8 concurrent producers,
//! where group commit shares each fdatasync.
//!
//! A `PartitionLog` lives inside one glommio executor, and criterion's
//! `iter_custom` is synchronous, so each case gets an executor on its own
//! thread that owns the log and runs rounds of appends on request. The log
//! is dropped and started afresh once it passes `LOG_BYTES_MAX`, which keeps
//! the disk footprint bounded without paying an open per sample.

mod common;

use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corelog::config::TopicConfig;
use corelog::model::{PartitionId, TopicPartition};
use corelog::protocol::batch::{self, BatchSpan};
use corelog::storage::PartitionLog;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use glommio::LocalExecutorBuilder;

/// Producers appending at once in the group-commit case.
const PRODUCERS_CONCURRENT: usize = 8;
/// Log size at which the worker starts a fresh log in a fresh tempdir.
const LOG_BYTES_MAX: u64 = 256 << 20;

#[derive(Clone, Copy)]
enum Acks {
    /// Written and visible: the acks=1 path.
    Leader,
    /// Written, visible and fdatasynced before the producer hears back.
    All,
}

/// What one bench case appends, and how.
#[derive(Clone)]
struct Workload {
    config: TopicConfig,
    records: Bytes,
    spans: Vec<BatchSpan>,
    acks: Acks,
    producers: usize,
}

/// An executor thread owning one partition; `time(iters)` runs `iters`
/// rounds of the workload there and returns how long they took.
struct AppendWorker {
    rounds: Option<mpsc::Sender<u64>>,
    elapsed: mpsc::Receiver<Duration>,
    thread: Option<JoinHandle<()>>,
}

impl AppendWorker {
    fn start(work: Workload) -> Self {
        let (rounds_tx, rounds_rx) = mpsc::channel::<u64>();
        let (elapsed_tx, elapsed_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let executor = LocalExecutorBuilder::default()
                .make()
                .expect("glommio executor");
            executor.run(serve(work, rounds_rx, elapsed_tx));
        });
        Self {
            rounds: Some(rounds_tx),
            elapsed: elapsed_rx,
            thread: Some(thread),
        }
    }

    fn time(&self, iters: u64) -> Duration {
        let rounds = self.rounds.as_ref().expect("worker running");
        rounds.send(iters).expect("worker alive");
        self.elapsed.recv().expect("worker answers")
    }
}

impl Drop for AppendWorker {
    fn drop(&mut self) {
        drop(self.rounds.take());
        if let Some(thread) = self.thread.take() {
            thread.join().expect("worker exits cleanly");
        }
    }
}

/// The worker's loop. Blocking on the channel stalls the executor, which is
/// fine: between requests no I/O of ours is in flight.
async fn serve(work: Workload, rounds: mpsc::Receiver<u64>, elapsed: mpsc::Sender<Duration>) {
    let mut current: Option<(Rc<PartitionLog>, tempfile::TempDir)> = None;
    while let Ok(iters) = rounds.recv() {
        if current
            .as_ref()
            .is_none_or(|(log, _)| log.size_bytes() >= LOG_BYTES_MAX)
        {
            // The log goes first, then its directory; deleting unsynced files
            // drops their dirty pages, so this costs no fsync.
            drop(current.take());
            current = Some(open_fresh(&work.config).await);
        }
        let (log, _) = current.as_ref().expect("log open");
        let end_before = log.high_watermark();
        let start = Instant::now();
        for _ in 0..iters {
            let appends = (0..work.producers)
                .map(|_| append_one(log, work.records.clone(), work.spans.clone(), work.acks));
            futures::future::join_all(appends).await;
        }
        let took = start.elapsed();
        let records_per_round = work.producers as i64 * i64::from(work.spans[0].records);
        assert_eq!(
            log.high_watermark() - end_before,
            iters as i64 * records_per_round
        );
        elapsed.send(took).expect("bench waits for the answer");
    }
}

async fn open_fresh(config: &TopicConfig) -> (Rc<PartitionLog>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tp = TopicPartition {
        topic: "bench".into(),
        partition: PartitionId(0),
    };
    let log = PartitionLog::open(dir.path(), tp, config.clone())
        .await
        .expect("open log");
    (log, dir)
}

async fn append_one(log: &Rc<PartitionLog>, records: Bytes, spans: Vec<BatchSpan>, acks: Acks) {
    let appended = log.append(records, spans).await.expect("append");
    if let Acks::All = acks {
        log.sync_to(appended.last_offset + 1).await.expect("sync");
        assert!(log.durable_end() > appended.last_offset);
    }
}

fn append_batches(c: &mut Criterion) {
    let config = common::topic_config(&[]);
    let mut group = c.benchmark_group("segment_append");
    // Equal samples keep the largest one (and its disk writes) small.
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_millis(1500));
    let cases = [
        ("acks_1", Acks::Leader, 1, 16 << 10),
        ("acks_1", Acks::Leader, 1, 64 << 10),
        ("acks_all", Acks::All, 1, 16 << 10),
        ("acks_all", Acks::All, 1, 64 << 10),
        (
            "acks_all_8_producers",
            Acks::All,
            PRODUCERS_CONCURRENT,
            16 << 10,
        ),
    ];
    for (name, acks, producers, target_bytes) in cases {
        let records = common::client_batch(target_bytes);
        let spans =
            batch::validate(&records, config.max_message_bytes as usize).expect("valid batch");
        assert_eq!(spans.len(), 1);
        group.throughput(Throughput::Bytes((records.len() * producers) as u64));
        let worker = AppendWorker::start(Workload {
            config: config.clone(),
            records,
            spans,
            acks,
            producers,
        });
        let id = BenchmarkId::new(name, common::size_label(target_bytes));
        group.bench_function(id, |b| b.iter_custom(|iters| worker.time(iters)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick_criterion();
    targets = append_batches
}
criterion_main!(benches);
