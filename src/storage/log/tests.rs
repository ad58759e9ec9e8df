//! The replication surface of `PartitionLog` on real files in a tempdir, on
//! a glommio executor: replica appends, truncation, the leader epoch cache,
//! the high watermark and reads capped below it.

use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::records::Compression;

use super::{PartitionLog, StorageError, EPOCH_CHECKPOINT, REPLICATION_CHECKPOINT};
use crate::config::{BrokerConfig, TopicConfig};
use crate::model::{PartitionId, TopicPartition};
use crate::protocol::batch::{self, tests::make_batch};

/// Records per test batch, so batch k holds offsets 5k..5k+4.
const RECORDS_PER_BATCH: usize = 5;

fn config(segment_bytes: u64) -> TopicConfig {
    BrokerConfig::load(
        "127.0.0.1:0".parse().expect("addr"),
        None,
        std::env::temp_dir(),
        Some(1),
        None,
        &[format!("log.segment.bytes={segment_bytes}")],
    )
    .expect("default broker config loads")
    .topic_defaults
}

fn tp() -> TopicPartition {
    TopicPartition {
        topic: "t".into(),
        partition: PartitionId(0),
    }
}

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { f().await })
        .expect("executor")
        .join()
        .expect("test executor");
}

async fn open(dir: &Path, segment_bytes: u64) -> Rc<PartitionLog> {
    PartitionLog::open(dir, tp(), config(segment_bytes))
        .await
        .expect("open")
}

/// Appends `n` batches of `RECORDS_PER_BATCH` records as a leader would.
async fn append_batches(log: &Rc<PartitionLog>, n: usize) {
    for _ in 0..n {
        let b = make_batch(RECORDS_PER_BATCH, Compression::None);
        let spans = batch::validate(&b, usize::MAX).expect("valid");
        log.append(b, spans).await.expect("append");
    }
}

/// Every segment file's bytes, in offset order, concatenated.
fn log_bytes(dir: &Path) -> Vec<u8> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| std::fs::read(dir.join(n)).unwrap())
        .collect()
}

fn batch_len() -> usize {
    make_batch(RECORDS_PER_BATCH, Compression::None).len()
}

#[test]
fn replica_append_writes_the_leaders_bytes_unchanged() {
    run(|| async {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = open(a_dir.path(), 1 << 20).await;
        leader.assign_leader_epoch(2).unwrap();
        append_batches(&leader, 3).await;
        leader.assign_leader_epoch(5).unwrap();
        append_batches(&leader, 2).await;
        let bytes = log_bytes(a_dir.path());

        let follower = open(b_dir.path(), 1 << 20).await;
        let got = follower.append_replica(Bytes::from(bytes.clone())).await;
        assert_eq!(got.unwrap(), Some((0, 24)));
        assert_eq!(log_bytes(b_dir.path()), bytes, "byte-identical copy");
        assert_eq!(follower.log_end_offset(), 25);
        assert_eq!(follower.epoch_entries(), vec![(2, 0), (5, 15)]);
        assert_eq!(follower.epoch_entries(), leader.epoch_entries());
        follower.close().await.unwrap();
        let reopened = open(b_dir.path(), 1 << 20).await;
        assert_eq!(reopened.log_end_offset(), 25);
        assert_eq!(reopened.epoch_entries(), vec![(2, 0), (5, 15)]);
    });
}

#[test]
fn replica_append_refuses_overlap_drops_a_partial_tail_and_rolls() {
    run(|| async {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = open(a_dir.path(), 1 << 20).await;
        append_batches(&leader, 6).await;
        let bytes = Bytes::from(log_bytes(a_dir.path()));
        let one = batch_len();
        // A segment of about two batches: the follower rolls as it copies.
        let follower = open(b_dir.path(), (2 * one) as u64).await;

        let partial = bytes.slice(..3 * one + one / 2);
        assert_eq!(
            follower.append_replica(partial).await.unwrap(),
            Some((0, 14))
        );
        let only_partial = bytes.slice(3 * one..3 * one + 10);
        assert_eq!(follower.append_replica(only_partial).await.unwrap(), None);
        match follower.append_replica(bytes.slice(..one)).await {
            Err(StorageError::NonContiguous { expected, got }) => {
                assert_eq!((expected, got), (15, 0));
            }
            other => panic!("overlap accepted: {other:?}"),
        }
        let mut corrupt = bytes.slice(3 * one..4 * one).to_vec();
        *corrupt.last_mut().unwrap() ^= 1;
        assert!(matches!(
            follower.append_replica(Bytes::from(corrupt)).await,
            Err(StorageError::Io(_))
        ));
        let rest = bytes.slice(3 * one..);
        assert_eq!(follower.append_replica(rest).await.unwrap(), Some((15, 29)));
        assert!(follower.segment_count() > 1, "rolled");
        assert_eq!(log_bytes(b_dir.path()), bytes.to_vec());
    });
}

#[test]
fn truncation_inside_a_segment_and_across_segments_survives_reopen() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let segment_bytes = (2 * batch_len()) as u64;
        let log = open(dir.path(), segment_bytes).await;
        append_batches(&log, 10).await;
        let segments_before = log.segment_count();
        assert!(segments_before >= 4);

        // Offset 37 is inside batch 35..=39: the whole batch goes.
        log.truncate_to(37).await.unwrap();
        assert_eq!(log.log_end_offset(), 35);
        assert_eq!(log.high_watermark(), 35);
        log.truncate_to(35).await.unwrap();
        assert_eq!(log.log_end_offset(), 35, "no-op at the end");
        // Across segments, at a batch boundary.
        log.truncate_to(10).await.unwrap();
        assert_eq!(log.log_end_offset(), 10);
        assert!(log.segment_count() < segments_before);
        assert!(log.read(10, 1 << 20, 10).unwrap().is_none());
        append_batches(&log, 1).await;
        assert_eq!(log.log_end_offset(), 15);
        let slice = log.read(10, 1 << 20, 15).unwrap().expect("new batch");
        assert_eq!(slice.len as usize, batch_len());
        log.close().await.unwrap();
        drop(log);

        let reopened = open(dir.path(), segment_bytes).await;
        assert_eq!(reopened.log_end_offset(), 15, "recovery agrees");
        assert!(reopened.read(14, 1 << 20, 15).unwrap().is_some());
        append_batches(&reopened, 1).await;
        assert_eq!(reopened.log_end_offset(), 20);
    });
}

#[test]
fn truncate_fully_starts_an_empty_log_at_the_offset() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), 1 << 20).await;
        log.assign_leader_epoch(1).unwrap();
        append_batches(&log, 2).await;
        log.truncate_fully_and_start_at(100).await.unwrap();
        assert_eq!(log.log_start_offset(), 100);
        assert_eq!(log.log_end_offset(), 100);
        assert_eq!(log.high_watermark(), 100);
        assert_eq!(log.epoch_entries(), vec![]);
        assert!(matches!(
            log.read(0, 1 << 20, 100),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        append_batches(&log, 1).await;
        assert_eq!(log.log_end_offset(), 105);
        log.close().await.unwrap();
        drop(log);
        let reopened = open(dir.path(), 1 << 20).await;
        assert_eq!(reopened.log_start_offset(), 100);
        assert_eq!(reopened.log_end_offset(), 105);
    });
}

#[test]
fn epoch_cache_persists_answers_offsets_for_leader_epoch_and_rebuilds() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), 1 << 20).await;
        assert_eq!(log.latest_epoch(), None);
        assert_eq!(log.end_offset_for_epoch(0), (-1, -1));
        log.assign_leader_epoch(1).unwrap();
        append_batches(&log, 2).await;
        log.assign_leader_epoch(3).unwrap();
        assert!(log.assign_leader_epoch(2).is_err(), "stale epoch refused");
        append_batches(&log, 1).await;
        assert_eq!(log.epoch_entries(), vec![(1, 0), (3, 10)]);
        assert_eq!(log.latest_epoch(), Some(3));
        assert_eq!(log.end_offset_for_epoch(0), (-1, -1));
        assert_eq!(log.end_offset_for_epoch(1), (1, 10));
        assert_eq!(log.end_offset_for_epoch(2), (1, 10));
        assert_eq!(log.end_offset_for_epoch(3), (3, 15));
        assert_eq!(log.end_offset_for_epoch(9), (3, 15));
        let text = std::fs::read_to_string(dir.path().join(EPOCH_CHECKPOINT)).unwrap();
        assert_eq!(text, "0\n2\n1 0\n3 10\n");
        log.close().await.unwrap();
        drop(log);

        let reopened = open(dir.path(), 1 << 20).await;
        assert_eq!(reopened.epoch_entries(), vec![(1, 0), (3, 10)]);
        reopened.close().await.unwrap();
        drop(reopened);
        std::fs::remove_file(dir.path().join(EPOCH_CHECKPOINT)).unwrap();
        let rebuilt = open(dir.path(), 1 << 20).await;
        assert_eq!(
            rebuilt.epoch_entries(),
            vec![(1, 0), (3, 10)],
            "from headers"
        );
        rebuilt.truncate_to(10).await.unwrap();
        assert_eq!(rebuilt.epoch_entries(), vec![(1, 0)]);
        let text = std::fs::read_to_string(dir.path().join(EPOCH_CHECKPOINT)).unwrap();
        assert_eq!(text, "0\n1\n1 0\n");
    });
}

#[test]
fn high_watermark_is_clamped_monotonic_and_persisted() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), 1 << 20).await;
        log.set_hw_managed(true);
        append_batches(&log, 4).await;
        assert_eq!(log.log_end_offset(), 20);
        assert_eq!(log.high_watermark(), 0, "managed: appends do not move it");
        let woken = log.on_append();
        log.set_high_watermark(12);
        assert_eq!(log.high_watermark(), 12);
        assert!(woken.await.is_ok(), "waiters woken by the move");
        log.set_high_watermark(5);
        assert_eq!(log.high_watermark(), 12, "never backwards");
        log.set_high_watermark(1_000);
        assert_eq!(log.high_watermark(), 20, "clamped to the log end");
        log.set_high_watermark(15);
        log.truncate_to(15).await.unwrap();
        log.close().await.unwrap();
        drop(log);

        let reopened = open(dir.path(), 1 << 20).await;
        assert_eq!(reopened.high_watermark(), 15, "one replica: the log end");
        reopened.set_hw_managed(true);
        assert_eq!(reopened.high_watermark(), 15);
        reopened.truncate_to(10).await.unwrap();
        assert_eq!(reopened.high_watermark(), 10, "truncation lowers it");
        reopened.close().await.unwrap();
        drop(reopened);
        // A checkpoint ahead of the log (a crash lost the tail) is capped.
        let path = dir.path().join(REPLICATION_CHECKPOINT);
        std::fs::write(&path, "0\n1\nt 0 99\n").unwrap();
        let capped = open(dir.path(), 1 << 20).await;
        capped.set_hw_managed(true);
        assert_eq!(capped.high_watermark(), 10);
        capped.set_hw_managed(false);
        append_batches(&capped, 1).await;
        assert_eq!(capped.high_watermark(), 15, "unmanaged follows the log end");
    });
}

#[test]
fn high_watermark_restored_below_the_log_end_when_managed() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), 1 << 20).await;
        log.set_hw_managed(true);
        append_batches(&log, 4).await;
        log.set_high_watermark(10);
        log.close().await.unwrap();
        drop(log);
        let reopened = open(dir.path(), 1 << 20).await;
        assert_eq!(reopened.high_watermark(), 20, "unmanaged reads the log end");
        reopened.set_hw_managed(true);
        assert_eq!(
            reopened.high_watermark(),
            10,
            "managed starts from the checkpoint"
        );
    });
}

#[test]
fn read_never_returns_a_batch_at_or_past_up_to() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), 1 << 20).await;
        append_batches(&log, 4).await;
        let one = batch_len() as u32;
        let len = |offset, max, up_to| log.read(offset, max, up_to).unwrap().map(|s| s.len);
        assert_eq!(len(0, 1 << 20, 20), Some(4 * one));
        assert_eq!(len(0, 1 << 20, 10), Some(2 * one));
        assert_eq!(
            len(0, 1 << 20, 12),
            Some(2 * one),
            "cut before the batch holding 12"
        );
        assert_eq!(
            len(11, 1 << 20, 12),
            Some(one),
            "a first batch below up_to is whole"
        );
        assert_eq!(len(0, 1, 10), Some(one));
        assert_eq!(len(10, 1 << 20, 10), None);
        assert_eq!(len(15, 1 << 20, 12), None, "past up_to but within the log");
        assert_eq!(len(20, 1 << 20, 20), None);
        assert!(matches!(
            log.read(21, 1 << 20, 20),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let slice = log.read(5, 1 << 20, 15).unwrap().expect("two batches");
        assert_eq!(slice.pos, u64::from(one));
        assert_eq!(slice.len, 2 * one);
    });
}
