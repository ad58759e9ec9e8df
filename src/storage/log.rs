//! A partition's log: its segments, the append path with group commit, reads
//! for fetch, offset lookups, retention and recovery. Lives on exactly one
//! shard (`!Send`); other shards reach it through the runtime mesh.
//!
//! Appends are serialised by a single drain task per partition: it assigns
//! offsets, patches each batch header, coalesces queued batches into one
//! io_uring write, then makes the bytes visible and answers the producers.
//! acks=all waiters share fsyncs: whoever finds no fsync running starts one
//! that covers everything written so far.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::oneshot;

use crate::config::{TimestampType, TopicConfig};
use crate::io::{self, file};
use crate::model::{batch_layout, limits, TopicPartition};
use crate::protocol::batch::{batch_crc, BatchSpan};

use super::epoch_cache::LeaderEpochCache;
use super::producer_state::{self, BatchSeq, ProducerStates, SeqCheck};
use super::segment::{self, Segment};

mod replica;
#[cfg(test)]
mod tests;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("partition is offline after an I/O failure: {0}")]
    Poisoned(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    /// An idempotent producer's batch refused with this Kafka error code.
    #[error("producer batch refused with error {0}")]
    Producer(i16),
    /// A replica append that does not start at the follower's log end
    /// (its log diverged from the leader's or a fetch raced a truncation).
    #[error("replica append at offset {got} does not follow the log end offset {expected}")]
    NonContiguous { expected: i64, got: i64 },
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError::Io(e.to_string())
    }
}

/// Where an append landed.
#[derive(Clone, Copy, Debug)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker time stamped on the batch, or -1 for CreateTime.
    pub log_append_time: i64,
}

/// A byte range of a segment file holding whole batches (the last one may be
/// cut short by the fetch limit, as Kafka allows).
#[derive(Clone, Debug)]
pub struct ReadSlice {
    pub file: Arc<File>,
    pub pos: u64,
    pub len: u32,
}

struct PendingAppend {
    records: Bytes,
    spans: Vec<BatchSpan>,
    /// A follower's copy of the leader's batches: written byte for byte,
    /// keeping their offsets and leader epochs (see `append_replica`).
    verbatim: bool,
    reply: oneshot::Sender<Result<Appended, StorageError>>,
}

/// The bytes and bookkeeping of one group write, built before the write.
struct Staging {
    buf: Vec<u8>,
    notes: Vec<segment::BatchAt>,
    /// Where `buf` lands in the active segment.
    start_pos: u64,
    /// The next offset after what is staged.
    offset: i64,
    messages: i64,
    /// Leader epochs that start in this group (replica appends only).
    new_epochs: Vec<(i32, i64)>,
}

pub struct PartitionLog {
    pub tp: TopicPartition,
    pub dir: PathBuf,
    config: RefCell<TopicConfig>,
    segments: RefCell<Vec<Segment>>,
    log_start_offset: Cell<i64>,
    /// Next offset to assign (the log end offset once writes land).
    next_offset: Cell<i64>,
    /// Offsets below this are written and visible to readers: the log end
    /// offset (LEO).
    visible_end: Cell<i64>,
    /// Offsets below this are replicated to the ISR, the end consumers see.
    /// Follows `visible_end` while `hw_managed` is false (one replica).
    high_watermark: Cell<i64>,
    /// Set by replication: the high watermark moves only by
    /// `set_high_watermark` (and down by truncation).
    hw_managed: Cell<bool>,
    /// Which leader epoch started at which offset (`leader-epoch-checkpoint`).
    epochs: RefCell<LeaderEpochCache>,
    /// Offsets below this are fsynced.
    durable_end: Cell<i64>,
    /// The epoch stamped on leader appends.
    leader_epoch: Cell<i32>,
    queue: RefCell<VecDeque<PendingAppend>>,
    draining: Cell<bool>,
    syncing: Cell<bool>,
    sync_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    data_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    messages_since_flush: Cell<i64>,
    last_flush_ms: Cell<i64>,
    poisoned: RefCell<Option<String>>,
    /// Sealed segments below this offset are already compacted.
    compacted_through: Cell<i64>,
    producers: RefCell<ProducerStates>,
    /// Writers of sealed segments whose background fsync has not finished.
    unsynced_sealed: RefCell<Vec<Rc<file::AppendFile>>>,
}

const RECOVERY_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";
const PRODUCER_CHECKPOINT: &str = "producer-state-checkpoint";
const REPLICATION_CHECKPOINT: &str = "replication-offset-checkpoint";
const EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

impl PartitionLog {
    /// Opens or creates the partition in `dir`, recovering every segment
    /// from the one holding the recovery point onwards.
    pub async fn open(
        dir: &Path,
        tp: TopicPartition,
        config: TopicConfig,
    ) -> Result<Rc<Self>, StorageError> {
        std::fs::create_dir_all(dir)?;
        let recovery_point = read_checkpoint(&dir.join(RECOVERY_CHECKPOINT)).unwrap_or(0);
        let saved_start = read_checkpoint(&dir.join(LOG_START_CHECKPOINT));
        let mut bases: Vec<i64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<i64>().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len() + 1);
        let mut cut = false;
        for (i, &base) in bases.iter().enumerate() {
            if cut {
                // Everything after a torn segment is unreachable: drop it.
                let (seg, _) = Segment::open(dir, base, false)?;
                seg.delete_files()?;
                continue;
            }
            let next_base = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            let recover = next_base > recovery_point;
            let (seg, truncated) = Segment::open(dir, base, recover)?;
            cut = truncated;
            segments.push(seg);
        }
        let now = io::now_ms();
        let end = segments.last().map_or(0, |s| s.next_offset);
        // The active segment reopens for appends (or a fresh one starts).
        match segments.last_mut() {
            Some(last) => {
                let path = segment::log_path(dir, last.base_offset);
                last.writer = Some(Rc::new(file::AppendFile::open(&path).await?));
            }
            None => segments.push(Segment::create(dir, saved_start.unwrap_or(0), now).await?),
        }
        let first_base = segments[0].base_offset;
        let start = saved_start
            .unwrap_or(first_base)
            .clamp(first_base, end.max(first_base));
        let end = end.max(segments.last().expect("one segment").base_offset);
        let producers = rebuild_producers(dir, &segments)?;
        let (epochs, epochs_rebuilt) = load_epochs(dir, &segments, end)?;
        // Until replication assigns one, keep stamping the last epoch seen.
        let stamp_epoch = epochs.latest_epoch().unwrap_or(0);
        let high_watermark = read_checkpoint(&dir.join(REPLICATION_CHECKPOINT))
            .map_or(end, |hw| hw.min(end))
            .max(start);
        let log = Rc::new(Self {
            tp,
            dir: dir.to_path_buf(),
            config: RefCell::new(config),
            segments: RefCell::new(segments),
            log_start_offset: Cell::new(start),
            next_offset: Cell::new(end),
            visible_end: Cell::new(end),
            high_watermark: Cell::new(high_watermark),
            hw_managed: Cell::new(false),
            epochs: RefCell::new(epochs),
            durable_end: Cell::new(end),
            leader_epoch: Cell::new(stamp_epoch),
            queue: RefCell::new(VecDeque::new()),
            draining: Cell::new(false),
            syncing: Cell::new(false),
            sync_waiters: RefCell::new(Vec::new()),
            data_waiters: RefCell::new(Vec::new()),
            messages_since_flush: Cell::new(0),
            last_flush_ms: Cell::new(now),
            poisoned: RefCell::new(None),
            compacted_through: Cell::new(0),
            producers: RefCell::new(producers),
            unsynced_sealed: RefCell::new(Vec::new()),
        });
        log.write_checkpoints()?;
        if epochs_rebuilt {
            log.persist_epochs()?;
        }
        Ok(log)
    }

    pub fn config(&self) -> TopicConfig {
        self.config.borrow().clone()
    }
    /// What acks=all needs of the config (`min.insync.replicas`,
    /// `flush.on.ack.all`), without cloning it on the produce path.
    pub fn ack_all_policy(&self) -> (i32, bool) {
        let c = self.config.borrow();
        (c.min_insync_replicas, c.flush_on_ack_all)
    }
    pub fn set_config(&self, c: TopicConfig) {
        *self.config.borrow_mut() = c;
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.get()
    }
    /// The log end offset (LEO): everything below is written and readable
    /// by followers.
    pub fn log_end_offset(&self) -> i64 {
        self.visible_end.get()
    }
    /// The end consumers may read to. Equal to the log end offset unless
    /// replication manages it (`set_hw_managed`).
    pub fn high_watermark(&self) -> i64 {
        if self.hw_managed.get() {
            self.high_watermark.get()
        } else {
            self.visible_end.get()
        }
    }
    /// Hands the high watermark to replication (true) or back to the log
    /// end offset (false, one replica). Managing starts from the value
    /// restored from `replication-offset-checkpoint` at open when no append
    /// came since, else from the log end offset reached.
    pub fn set_hw_managed(&self, managed: bool) {
        self.hw_managed.set(managed);
        if !managed {
            self.follow_log_end();
        }
    }
    /// Advances the high watermark, clamped to [log start, LEO]. Never moves
    /// it back (only truncation does); wakes long-poll and acks=all waiters
    /// when it moves.
    pub fn set_high_watermark(&self, hw: i64) {
        let hw = hw.clamp(self.log_start_offset.get(), self.visible_end.get());
        if hw > self.high_watermark.get() {
            self.high_watermark.set(hw);
            self.wake_readers();
        }
    }
    /// Called whenever `visible_end` moves: one replica's high watermark is
    /// its log end offset.
    fn follow_log_end(&self) {
        if !self.hw_managed.get() {
            self.high_watermark.set(self.visible_end.get());
        }
    }
    pub fn durable_end(&self) -> i64 {
        self.durable_end.get()
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.borrow().iter().map(|s| s.size).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.borrow().len()
    }
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.borrow().clone()
    }

    /// Appends validated batches; resolves once they are written and visible.
    pub async fn append(
        self: &Rc<Self>,
        records: Bytes,
        spans: Vec<BatchSpan>,
    ) -> Result<Appended, StorageError> {
        if let Some(why) = self.poisoned() {
            return Err(StorageError::Poisoned(why));
        }
        let (tx, rx) = oneshot::channel();
        self.enqueue(PendingAppend {
            records,
            spans,
            verbatim: false,
            reply: tx,
        });
        rx.await
            .unwrap_or_else(|_| Err(StorageError::Io("append dropped".into())))
    }

    /// Queues an append for the single drain task, starting it if idle.
    fn enqueue(self: &Rc<Self>, p: PendingAppend) {
        self.queue.borrow_mut().push_back(p);
        if !self.draining.get() {
            self.draining.set(true);
            let me = self.clone();
            io::spawn_detached(async move { me.drain().await });
        }
    }

    async fn drain(self: Rc<Self>) {
        loop {
            let batch: Vec<PendingAppend> = {
                let mut q = self.queue.borrow_mut();
                let mut out = Vec::new();
                let mut bytes = 0;
                while let Some(p) = q.front() {
                    if !out.is_empty()
                        && (out.len() >= limits::append_coalesce_batches_max
                            || bytes + p.records.len() > limits::append_coalesce_bytes_max)
                    {
                        break;
                    }
                    bytes += p.records.len();
                    out.push(q.pop_front().expect("front exists"));
                }
                out
            };
            if batch.is_empty() {
                self.draining.set(false);
                return;
            }
            self.write_group(batch).await;
        }
    }

    /// Writes one group of appends with a single io_uring write.
    async fn write_group(self: &Rc<Self>, group: Vec<PendingAppend>) {
        if let Some(why) = self.poisoned() {
            for p in group {
                let _ = p.reply.send(Err(StorageError::Poisoned(why.clone())));
            }
            return;
        }
        let total: usize = group.iter().map(|p| p.records.len()).sum();
        if let Err(e) = self.maybe_roll(total as u64).await {
            self.poison(format!("segment roll failed: {e}"));
            for p in group {
                let _ = p.reply.send(Err(StorageError::Poisoned(e.to_string())));
            }
            return;
        }
        let config = self.config();
        let mut st = Staging {
            buf: Vec::with_capacity(total),
            notes: Vec::new(),
            start_pos: self.segments.borrow().last().expect("active").size,
            offset: self.next_offset.get(),
            messages: 0,
            new_epochs: Vec::new(),
        };
        let mut results = Vec::with_capacity(group.len());
        for p in &group {
            let result = if p.verbatim {
                self.stage_verbatim(p, &mut st)
            } else if let Some(verdict) = self.check_producer(p) {
                verdict
            } else {
                Ok(self.stage_leader(p, &config, &mut st))
            };
            results.push(result);
        }
        let offset = st.offset;
        self.next_offset.set(offset);
        let write = {
            let segs = self.segments.borrow();
            let active = segs.last().expect("active segment");
            active.writer.clone().expect("active segment has a writer")
        };
        let result = write.write_all_at(st.buf, st.start_pos).await;
        if let Err(e) = result {
            self.poison(format!("append write failed: {e}"));
            self.next_offset.set(self.visible_end.get());
            for p in group {
                let _ = p.reply.send(Err(StorageError::Poisoned(e.to_string())));
            }
            return;
        }
        {
            let mut segs = self.segments.borrow_mut();
            let active = segs.last_mut().expect("active segment");
            for n in &st.notes {
                active.note_batch(n);
            }
        }
        self.visible_end.set(offset);
        self.follow_log_end();
        self.record_epochs(&st.new_epochs).await;
        self.wake_readers();
        for (p, r) in group.into_iter().zip(results) {
            let _ = p.reply.send(r);
        }
        self.messages_since_flush
            .set(self.messages_since_flush.get() + st.messages);
        if self.messages_since_flush.get() >= config.flush_messages {
            let _ = self.sync_to(offset).await;
        }
    }

    /// Copies a producer's batches into the write buffer, assigning offsets
    /// and stamping the leader epoch (and LogAppendTime when configured).
    fn stage_leader(&self, p: &PendingAppend, config: &TopicConfig, st: &mut Staging) -> Appended {
        let now = io::now_ms();
        let epoch = self.leader_epoch.get();
        let append_time = config.message_timestamp_type == TimestampType::LogAppendTime;
        let first = st.offset;
        for span in &p.spans {
            let offset = st.offset;
            let at = st.buf.len();
            st.buf
                .extend_from_slice(&p.records[span.start..span.start + span.len]);
            let b = &mut st.buf[at..at + span.len];
            b[batch_layout::base_offset..batch_layout::base_offset + 8]
                .copy_from_slice(&offset.to_be_bytes());
            b[batch_layout::partition_leader_epoch..batch_layout::partition_leader_epoch + 4]
                .copy_from_slice(&epoch.to_be_bytes());
            let mut max_ts = span.max_timestamp;
            if append_time {
                let attrs = i16::from_be_bytes([
                    b[batch_layout::attributes],
                    b[batch_layout::attributes + 1],
                ]) | 0x08;
                b[batch_layout::attributes..batch_layout::attributes + 2]
                    .copy_from_slice(&attrs.to_be_bytes());
                b[batch_layout::max_timestamp..batch_layout::max_timestamp + 8]
                    .copy_from_slice(&now.to_be_bytes());
                let crc = batch_crc(b);
                b[batch_layout::crc..batch_layout::crc + 4].copy_from_slice(&crc.to_be_bytes());
                max_ts = now;
            }
            let last = offset + i64::from(span.last_offset_delta);
            let header = crate::model::BatchHeader::new(b).expect("validated batch");
            self.record_producer(&header, offset, last);
            st.notes.push(segment::BatchAt {
                pos: st.start_pos + at as u64,
                base_offset: offset,
                last_offset: last,
                len: span.len as u64,
                max_timestamp: max_ts,
                producer_id: header.producer_id(),
                producer_epoch: header.producer_epoch(),
                base_sequence: header.base_sequence(),
                leader_epoch: epoch,
            });
            st.messages += i64::from(span.records);
            st.offset = last + 1;
        }
        Appended {
            base_offset: first,
            last_offset: st.offset - 1,
            log_append_time: if append_time { now } else { -1 },
        }
    }

    /// Remembers an idempotent producer's batch for duplicate detection.
    fn record_producer(&self, header: &crate::model::BatchHeader, base: i64, last: i64) {
        if header.producer_id() < 0 {
            return;
        }
        let first_seq = header.base_sequence();
        self.producers.borrow_mut().record(
            header.producer_id(),
            header.producer_epoch(),
            BatchSeq {
                first_seq,
                last_seq: producer_state::next_seq(first_seq, header.last_offset_delta()),
                base_offset: base,
                last_offset: last,
            },
        );
    }

    /// For an idempotent producer's batch: `None` to append it, or the answer
    /// (a duplicate's first offsets, or a refusal) without appending.
    fn check_producer(&self, p: &PendingAppend) -> Option<Result<Appended, StorageError>> {
        let span = p.spans.first()?;
        let h = crate::model::BatchHeader::new(&p.records[span.start..span.start + span.len])?;
        if h.producer_id() < 0 {
            return None;
        }
        let first_seq = h.base_sequence();
        let last_seq = producer_state::next_seq(first_seq, h.last_offset_delta());
        match self.producers.borrow().check(
            h.producer_id(),
            h.producer_epoch(),
            first_seq,
            last_seq,
        ) {
            SeqCheck::Append if p.spans.len() == 1 => None,
            SeqCheck::Append => Some(Err(StorageError::Producer(
                crate::protocol::ResponseError::InvalidRecord.code(),
            ))),
            SeqCheck::Duplicate {
                base_offset,
                last_offset,
            } => {
                tracing::debug!(partition = %self.tp, producer = h.producer_id(), first_seq, "duplicate batch acknowledged");
                Some(Ok(Appended {
                    base_offset,
                    last_offset,
                    log_append_time: -1,
                }))
            }
            SeqCheck::Refuse(code) => Some(Err(StorageError::Producer(code))),
        }
    }

    /// Rolls to a new segment when the active one would pass `segment.bytes`
    /// or is older than `segment.ms`.
    async fn maybe_roll(self: &Rc<Self>, incoming: u64) -> std::io::Result<()> {
        let config = self.config();
        let now = io::now_ms();
        let (needs_roll, next_base) = {
            let segs = self.segments.borrow();
            let active = segs.last().expect("active");
            let full = active.size > 0 && active.size + incoming > config.segment_bytes;
            // Index entries hold offsets relative to the segment base in 32
            // bits: roll before they could overflow, as Kafka does.
            let offsets_full = active.size > 0
                && self.next_offset.get() - active.base_offset
                    + i64::from(limits::batch_offsets_max)
                    > i64::from(i32::MAX);
            let full = full || offsets_full;
            let old = active.size > 0 && now - active.created_ms >= config.segment_ms;
            (full || old, self.next_offset.get())
        };
        if !needs_roll {
            return Ok(());
        }
        // Seal: fsync the old segment so durability never depends on which
        // file a waiter's bytes landed in, persist its indexes, drop its writer.
        // The sealed segment is fsynced and its indexes written in the
        // background, off the append path; until then `sync_to` fsyncs it
        // too, so durability never depends on which file bytes landed in.
        let seg = Segment::create(&self.dir, next_base, now).await?;
        let (old_writer, index_files) = {
            let mut segs = self.segments.borrow_mut();
            let sealed = segs.last_mut().expect("sealed");
            let w = sealed.writer.take();
            let files = sealed.index_files();
            segs.push(seg);
            (w, files)
        };
        if let Some(w) = old_writer {
            self.unsynced_sealed.borrow_mut().push(w.clone());
            let me = self.clone();
            io::spawn_detached(async move {
                match w.fdatasync().await {
                    Ok(()) => me
                        .unsynced_sealed
                        .borrow_mut()
                        .retain(|x| !Rc::ptr_eq(x, &w)),
                    Err(e) => me.poison(format!("fdatasync of sealed segment failed: {e}")),
                }
                let written = io::blocking(move || {
                    index_files
                        .iter()
                        .try_for_each(|(path, bytes)| file::write_atomic(path, bytes))
                })
                .await;
                if let Err(e) = written {
                    tracing::warn!(partition = %me.tp, error = %e, "writing sealed segment indexes failed");
                }
            });
        }
        tracing::debug!(partition = %self.tp, base = next_base, "rolled segment");
        Ok(())
    }

    /// Resolves once everything below `end` is fsynced. Concurrent callers
    /// share one fdatasync (group commit).
    pub async fn sync_to(self: &Rc<Self>, end: i64) -> Result<(), StorageError> {
        loop {
            if let Some(why) = self.poisoned() {
                return Err(StorageError::Poisoned(why));
            }
            if self.durable_end.get() >= end {
                return Ok(());
            }
            if self.syncing.get() {
                let (tx, rx) = oneshot::channel();
                self.sync_waiters.borrow_mut().push(tx);
                let _ = rx.await;
                continue;
            }
            self.syncing.set(true);
            let target = self.visible_end.get();
            let sealed: Vec<Rc<file::AppendFile>> = self.unsynced_sealed.borrow().clone();
            let result = {
                let mut result = Ok(());
                for w in &sealed {
                    if let Err(e) = w.fdatasync().await {
                        result = Err(e);
                    }
                }
                let w = self
                    .segments
                    .borrow()
                    .last()
                    .expect("active")
                    .writer
                    .clone()
                    .expect("writer");
                match result {
                    Ok(()) => w.fdatasync().await,
                    Err(e) => Err(e),
                }
            };
            self.syncing.set(false);
            match result {
                Ok(()) => {
                    // A truncation during the fsync may have cut the log below `target`.
                    let target = target.min(self.visible_end.get());
                    if target > self.durable_end.get() {
                        self.durable_end.set(target);
                    }
                    self.messages_since_flush.set(0);
                    self.last_flush_ms.set(io::now_ms());
                }
                Err(e) => self.poison(format!("fdatasync failed: {e}")),
            }
            for w in self.sync_waiters.borrow_mut().drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Fsyncs if `flush.ms` has passed since the last flush.
    pub async fn flush_if_due(self: &Rc<Self>, now_ms: i64) {
        let config = self.config();
        if self.durable_end.get() < self.visible_end.get()
            && now_ms - self.last_flush_ms.get() >= config.flush_ms
        {
            let _ = self.sync_to(self.visible_end.get()).await;
        }
    }

    fn poison(&self, why: String) {
        tracing::error!(partition = %self.tp, reason = %why, "partition poisoned: refusing writes");
        *self.poisoned.borrow_mut() = Some(why);
    }

    fn wake_readers(&self) {
        for w in self.data_waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
    }

    /// A receiver that fires on the next append (for long-poll fetches).
    pub fn on_append(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.data_waiters.borrow_mut();
        w.retain(|s| !s.is_canceled());
        w.push(tx);
        rx
    }

    /// Reads from `offset`: at least the whole first batch, then up to
    /// `max_bytes` within that segment, never a batch at or past `up_to`
    /// (consumers pass the high watermark, followers the log end offset).
    /// Empty at or past `up_to`; out of range only outside [log start, LEO].
    pub fn read(
        &self,
        offset: i64,
        max_bytes: u32,
        up_to: i64,
    ) -> Result<Option<ReadSlice>, StorageError> {
        let start = self.log_start_offset.get();
        let end = self.visible_end.get();
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        }
        let up_to = up_to.min(end);
        if offset >= up_to {
            return Ok(None);
        }
        let segs = self.segments.borrow();
        let first = segs
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        for seg in &segs[first..] {
            if seg.next_offset <= offset {
                continue;
            }
            let Some(b) = seg.find(offset)? else {
                continue;
            };
            if b.base_offset >= up_to {
                return Ok(None);
            }
            // Batches are whole: cut at the start of the batch holding
            // `up_to`, but never inside the first one.
            let limit = if up_to < seg.next_offset {
                seg.find(up_to)?.map_or(seg.size, |c| c.pos)
            } else {
                seg.size
            };
            let room = limit.saturating_sub(b.pos);
            let len = room.min(u64::from(max_bytes)).max(b.len);
            return Ok(Some(ReadSlice {
                file: seg.reader.clone(),
                pos: b.pos,
                len: len as u32,
            }));
        }
        Ok(None)
    }

    /// The first offset whose batch carries a timestamp at or after `ts`,
    /// with that batch's bytes for an exact record-level search.
    pub fn find_by_time(&self, ts: i64) -> Result<Option<(i64, Vec<u8>)>, StorageError> {
        let segs = self.segments.borrow();
        for seg in segs.iter() {
            if seg.max_timestamp < ts {
                continue;
            }
            if let Some(b) = seg.find_by_time(ts)? {
                let mut bytes = vec![0u8; b.len as usize];
                file::pread(&seg.reader, &mut bytes, b.pos)?;
                return Ok(Some((b.base_offset, bytes)));
            }
        }
        Ok(None)
    }

    /// The batch holding the greatest timestamp (ListOffsets -3).
    pub fn max_timestamp_batch(&self) -> Result<Option<Vec<u8>>, StorageError> {
        let segs = self.segments.borrow();
        let Some(seg) = segs
            .iter()
            .filter(|s| s.size > 0)
            .max_by_key(|s| s.max_timestamp)
        else {
            return Ok(None);
        };
        let ts = seg.max_timestamp;
        match seg.find_by_time(ts)? {
            Some(b) => {
                let mut bytes = vec![0u8; b.len as usize];
                file::pread(&seg.reader, &mut bytes, b.pos)?;
                Ok(Some(bytes))
            }
            None => Ok(None),
        }
    }

    /// Deletes whole segments past `retention.ms` / `retention.bytes`
    /// (never the active one). Returns how many were removed.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let config = self.config();
        if !config
            .cleanup_policy
            .split(',')
            .any(|p| p.trim() == "delete")
        {
            return Ok(0);
        }
        let mut removed = 0;
        loop {
            let victim = {
                let segs = self.segments.borrow();
                if segs.len() < 2 {
                    break;
                }
                let oldest = &segs[0];
                let total: u64 = segs.iter().map(|s| s.size).sum();
                let by_size = config.retention_bytes >= 0
                    && total - oldest.size >= config.retention_bytes as u64
                    && total > config.retention_bytes as u64;
                let by_time = config.retention_ms >= 0
                    && oldest.max_timestamp >= 0
                    && now_ms - oldest.max_timestamp > config.retention_ms;
                let empty_old =
                    config.retention_ms >= 0 && oldest.max_timestamp < 0 && oldest.size == 0;
                by_size || by_time || empty_old
            };
            if !victim {
                break;
            }
            let seg = self.segments.borrow_mut().remove(0);
            let next_start = self.segments.borrow()[0].base_offset;
            self.log_start_offset
                .set(self.log_start_offset.get().max(next_start));
            seg.delete_files()?;
            tracing::info!(partition = %self.tp, base = seg.base_offset, "retention deleted segment");
            removed += 1;
        }
        if removed > 0 {
            self.write_checkpoints()?;
        }
        Ok(removed)
    }

    /// Compacts sealed segments of a `cleanup.policy=compact` topic when a
    /// segment was sealed since the last pass. Returns records dropped.
    pub fn compact(&self, now_ms: i64) -> Result<usize, StorageError> {
        let config = self.config();
        if !config
            .cleanup_policy
            .split(',')
            .any(|p| p.trim() == "compact")
        {
            return Ok(0);
        }
        let (sealed_end, all) = {
            let segs = self.segments.borrow();
            if segs.len() < 2 {
                return Ok(0);
            }
            let sealed_end = segs[segs.len() - 2].next_offset;
            let all: Vec<(Arc<File>, u64)> =
                segs.iter().map(|s| (s.reader.clone(), s.size)).collect();
            (sealed_end, all)
        };
        if sealed_end <= self.compacted_through.get() {
            return Ok(0);
        }
        let latest = super::compact::latest_offsets(&all)?;
        let mut dropped_total = 0;
        let sealed = all.len() - 1;
        for i in 0..sealed {
            let (reader, size, base, max_ts) = {
                let segs = self.segments.borrow();
                let s = &segs[i];
                (s.reader.clone(), s.size, s.base_offset, s.max_timestamp)
            };
            let drop_tombstones =
                max_ts >= 0 && now_ms - max_ts > super::compact::DELETE_RETENTION_MS;
            let (bytes, dropped) =
                super::compact::compact_segment(&reader, size, &latest, drop_tombstones)?;
            if dropped == 0 {
                continue;
            }
            dropped_total += dropped;
            let path = segment::log_path(&self.dir, base);
            let tmp = path.with_extension("log.cleaned");
            file::write_atomic(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path)?;
            file::fsync_dir(&self.dir)?;
            let (mut seg, _) = Segment::open(&self.dir, base, true)?;
            // Keep the offset range the segment covered, even if its tail was compacted away.
            let old_next = self.segments.borrow()[i].next_offset;
            seg.next_offset = seg.next_offset.max(old_next);
            seg.persist_indexes()?;
            self.segments.borrow_mut()[i] = seg;
        }
        self.compacted_through.set(sealed_end);
        if dropped_total > 0 {
            tracing::info!(partition = %self.tp, dropped = dropped_total, "compacted");
        }
        Ok(dropped_total)
    }

    /// `write_checkpoints` on the blocking thread, for the periodic task.
    pub async fn write_checkpoints_async(&self) -> std::io::Result<()> {
        let files = self.checkpoint_files();
        io::blocking(move || {
            files
                .iter()
                .try_for_each(|(path, bytes)| file::write_atomic(path, bytes))
        })
        .await
    }

    fn checkpoint_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let checkpoint = |offset: i64| {
            format!(
                "0\n1\n{} {} {}\n",
                self.tp.topic, self.tp.partition.0, offset
            )
            .into_bytes()
        };
        vec![
            (
                self.dir.join(PRODUCER_CHECKPOINT),
                self.producers
                    .borrow()
                    .to_text(self.visible_end.get())
                    .into_bytes(),
            ),
            (
                self.dir.join(RECOVERY_CHECKPOINT),
                checkpoint(self.durable_end.get()),
            ),
            (
                self.dir.join(LOG_START_CHECKPOINT),
                checkpoint(self.log_start_offset.get()),
            ),
            (
                self.dir.join(REPLICATION_CHECKPOINT),
                checkpoint(self.high_watermark.get()),
            ),
        ]
    }

    /// Writes `leader-epoch-checkpoint` atomically.
    fn persist_epochs(&self) -> std::io::Result<()> {
        let text = self.epochs.borrow().to_text();
        file::write_atomic(&self.dir.join(EPOCH_CHECKPOINT), text.as_bytes())
    }

    /// Adds the epochs a replica append brought and persists them, off the
    /// shard (leader changes are rare, so this is almost always a no-op).
    async fn record_epochs(&self, new_epochs: &[(i32, i64)]) {
        let mut changed = false;
        for &(epoch, start) in new_epochs {
            changed |= self.epochs.borrow_mut().assign(epoch, start);
        }
        if !changed {
            return;
        }
        let path = self.dir.join(EPOCH_CHECKPOINT);
        let text = self.epochs.borrow().to_text();
        let written = io::blocking(move || file::write_atomic(&path, text.as_bytes())).await;
        if let Err(e) = written {
            self.poison(format!("writing leader-epoch-checkpoint failed: {e}"));
        }
    }

    /// Writes the recovery point (what is fsynced) and the log start offset.
    pub fn write_checkpoints(&self) -> std::io::Result<()> {
        self.checkpoint_files()
            .iter()
            .try_for_each(|(path, bytes)| file::write_atomic(path, bytes))
    }

    /// Clean shutdown: fsync, persist indexes and checkpoints.
    pub async fn close(self: &Rc<Self>) -> Result<(), StorageError> {
        if self.poisoned().is_none() {
            self.sync_to(self.visible_end.get()).await?;
        }
        if let Some(seg) = self.segments.borrow().last() {
            seg.persist_indexes()?;
        }
        self.write_checkpoints()?;
        Ok(())
    }

    /// Removes the partition's directory (DeleteTopics).
    pub fn delete(&self) -> std::io::Result<()> {
        // Not `poison`: a deletion is not an error worth an ERROR line.
        *self.poisoned.borrow_mut() = Some("partition deleted".into());
        std::fs::remove_dir_all(&self.dir)?;
        if let Some(parent) = self.dir.parent() {
            file::fsync_dir(parent)?;
        }
        Ok(())
    }
}

fn read_checkpoint(path: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "0" || lines.next()? != "1" {
        return None;
    }
    lines.next()?.rsplit(' ').next()?.parse().ok()
}

/// The leader epoch cache from its checkpoint, else rebuilt from the batch
/// headers of every segment (true when rebuilt, so the caller persists it).
fn load_epochs(
    dir: &Path,
    segments: &[Segment],
    log_end: i64,
) -> std::io::Result<(LeaderEpochCache, bool)> {
    let saved = std::fs::read_to_string(dir.join(EPOCH_CHECKPOINT))
        .ok()
        .and_then(|t| LeaderEpochCache::from_text(&t));
    if let Some(mut cache) = saved {
        // Recovery may have cut the log below entries written before a crash.
        let cut = cache.truncate_past(log_end);
        return Ok((cache, cut));
    }
    let mut cache = LeaderEpochCache::default();
    for seg in segments {
        let mut pos = 0;
        while pos < seg.size {
            let Some(b) = segment::scan_batch(&seg.reader, pos, seg.size, false, seg.base_offset)?
            else {
                break;
            };
            if b.leader_epoch >= 0 {
                cache.assign(b.leader_epoch, b.base_offset);
            }
            pos += b.len;
        }
    }
    let rebuilt = !cache.is_empty();
    Ok((cache, rebuilt))
}

/// Producer state from the snapshot (when present) plus every batch after it.
fn rebuild_producers(dir: &Path, segments: &[Segment]) -> std::io::Result<ProducerStates> {
    let (from, mut states) = std::fs::read_to_string(dir.join(PRODUCER_CHECKPOINT))
        .ok()
        .and_then(|t| ProducerStates::from_text(&t))
        .unwrap_or((0, ProducerStates::default()));
    let end = segments.last().map_or(0, |s| s.next_offset);
    let (from, mut states) = if from > end {
        (0, ProducerStates::default())
    } else {
        (from, std::mem::take(&mut states))
    };
    for seg in segments.iter().filter(|s| s.next_offset > from) {
        let mut pos = 0;
        while pos < seg.size {
            let Some(b) = segment::scan_batch(&seg.reader, pos, seg.size, false, seg.base_offset)?
            else {
                break;
            };
            if b.base_offset >= from && b.producer_id >= 0 {
                let last_seq = producer_state::next_seq(
                    b.base_sequence,
                    (b.last_offset - b.base_offset) as i32,
                );
                states.record(
                    b.producer_id,
                    b.producer_epoch,
                    BatchSeq {
                        first_seq: b.base_sequence,
                        last_seq,
                        base_offset: b.base_offset,
                        last_offset: b.last_offset,
                    },
                );
            }
            pos += b.len;
        }
    }
    Ok(states)
}
