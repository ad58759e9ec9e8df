//! What ISR replication needs from a partition log, on the partition's shard:
//! the leader epoch cache (OffsetsForLeaderEpoch), verbatim appends of a
//! leader's batches on a follower, and truncation of a divergent tail.
//!
//! Replica appends share the leader appends' queue and drain task, so one
//! writer owns the active segment. Truncation takes that writer role itself
//! (it sets `draining`), so no append is staged against a log being cut;
//! appends queued meanwhile are drained once the truncation is done.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;

use crate::io::{self, file};
use crate::model::{limits, BatchHeader};
use crate::protocol::batch::{batch_crc, BatchSpan};

use super::{
    rebuild_producers, segment, Appended, PartitionLog, PendingAppend, Segment, Staging,
    StorageError,
};

/// How long a truncation waits for in-flight appends to finish writing.
const TRUNCATE_WAIT_MS_MAX: u64 = 5_000;

impl PartitionLog {
    /// The newest leader epoch that wrote (or was assigned) in this log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.borrow().latest_epoch()
    }

    /// The leader epoch cache: (epoch, first offset it wrote), increasing.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epochs.borrow().entries()
    }

    /// Sets only the epoch stamped on future leader appends.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.set(epoch);
    }

    /// Becoming leader in `epoch`: stamp it on future appends and, when it is
    /// newer than every cached epoch, record that it starts at the log end.
    /// An epoch older than the latest cached one is refused (InvalidInput)
    /// and changes nothing: stamping it would make the cache lie.
    pub fn assign_leader_epoch(&self, epoch: i32) -> std::io::Result<()> {
        if let Some(latest) = self.latest_epoch().filter(|&l| epoch < l) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("leader epoch {epoch} is older than the latest epoch {latest}"),
            ));
        }
        self.leader_epoch.set(epoch);
        let start = self.next_offset.get();
        if self.epochs.borrow_mut().assign(epoch, start) {
            self.persist_epochs()?;
            tracing::info!(partition = %self.tp, epoch, start, "leader epoch assigned");
        }
        Ok(())
    }

    /// Kafka's OffsetsForLeaderEpoch answer for `epoch`: the largest cached
    /// epoch at or below it and the offset where that epoch ended (the next
    /// epoch's start, or the log end offset for the latest). (-1, -1) when
    /// no cached epoch is at or below `epoch`.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs
            .borrow()
            .end_offset_for(epoch, self.visible_end.get())
    }

    /// Appends a leader's Fetch response bytes on a follower, byte for byte:
    /// whole batches already carrying offsets and leader epochs, maybe with a
    /// partial batch at the end (dropped). The first batch must start at or
    /// past the log end offset and offsets must increase (a compacted leader
    /// leaves gaps between batches, so they need not be contiguous).
    /// Returns the first and last offsets written, or `None` if `records`
    /// held no whole batch.
    pub async fn append_replica(
        self: &Rc<Self>,
        records: Bytes,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        if let Some(why) = self.poisoned() {
            return Err(StorageError::Poisoned(why));
        }
        let spans = replica_spans(&records)?;
        if spans.is_empty() {
            return Ok(None);
        }
        let (tx, rx) = oneshot::channel();
        self.enqueue(PendingAppend {
            records,
            spans,
            verbatim: true,
            reply: tx,
        });
        let appended = rx
            .await
            .unwrap_or_else(|_| Err(StorageError::Io("replica append dropped".into())))?;
        Ok(Some((appended.base_offset, appended.last_offset)))
    }

    /// Copies a replica append's batches into the write buffer unchanged.
    /// Checked here, at staging, because only now is the log end known.
    pub(super) fn stage_verbatim(
        &self,
        p: &PendingAppend,
        st: &mut Staging,
    ) -> Result<Appended, StorageError> {
        let header = |span: &BatchSpan| {
            BatchHeader::new(&p.records[span.start..span.start + span.len]).expect("checked batch")
        };
        let first = header(p.spans.first().expect("a batch")).base_offset();
        if first < st.offset {
            return Err(StorageError::NonContiguous {
                expected: st.offset,
                got: first,
            });
        }
        let segment_base = self.segments.borrow().last().expect("active").base_offset;
        let last = header(p.spans.last().expect("a batch")).last_offset();
        if last - segment_base > i64::from(i32::MAX) {
            return Err(StorageError::Io(format!(
                "replica batch ending at {last} is out of reach of segment {segment_base}"
            )));
        }
        let mut latest_epoch = st
            .new_epochs
            .last()
            .map(|&(e, _)| e)
            .or_else(|| self.latest_epoch());
        for span in &p.spans {
            let h = header(span);
            let at = st.buf.len();
            st.buf
                .extend_from_slice(&p.records[span.start..span.start + span.len]);
            self.record_producer(&h, h.base_offset(), h.last_offset());
            let epoch = h.partition_leader_epoch();
            if epoch >= 0 && latest_epoch.is_none_or(|l| epoch > l) {
                st.new_epochs.push((epoch, h.base_offset()));
                latest_epoch = Some(epoch);
            }
            st.notes.push(segment::BatchAt {
                pos: st.start_pos + at as u64,
                base_offset: h.base_offset(),
                last_offset: h.last_offset(),
                len: span.len as u64,
                max_timestamp: h.max_timestamp(),
                producer_id: h.producer_id(),
                producer_epoch: h.producer_epoch(),
                base_sequence: h.base_sequence(),
                leader_epoch: epoch,
            });
            st.messages += i64::from(span.records);
            st.offset = h.last_offset() + 1;
        }
        Ok(Appended {
            base_offset: first,
            last_offset: st.offset - 1,
            log_append_time: -1,
        })
    }

    /// Drops every offset at or after `offset` (a no-op at or past the log
    /// end). If `offset` falls inside a batch the whole batch goes, so the
    /// log may end below `offset`; the follower fetches from the new end.
    /// Waits up to `TRUNCATE_WAIT_MS_MAX` for in-flight appends, then holds
    /// off new ones until it is done (they are written afterwards).
    pub async fn truncate_to(self: &Rc<Self>, offset: i64) -> Result<(), StorageError> {
        self.lock_writes().await?;
        let result = self.truncate_locked(offset).await;
        self.unlock_writes();
        result
    }

    /// Deletes every segment and starts empty at `offset` (log start = LEO =
    /// high watermark = `offset`), for a follower whose log lies entirely
    /// below the leader's log start.
    pub async fn truncate_fully_and_start_at(
        self: &Rc<Self>,
        offset: i64,
    ) -> Result<(), StorageError> {
        self.lock_writes().await?;
        let result = self.reset_locked(offset).await;
        self.unlock_writes();
        result
    }

    /// Takes the single-writer role from the drain task.
    async fn lock_writes(&self) -> Result<(), StorageError> {
        let mut waited_ms = 0;
        while self.draining.get() {
            if waited_ms >= TRUNCATE_WAIT_MS_MAX {
                return Err(StorageError::Io(format!(
                    "truncation gave up after {waited_ms} ms waiting for appends to finish"
                )));
            }
            io::sleep(Duration::from_millis(1)).await;
            waited_ms += 1;
        }
        if let Some(why) = self.poisoned() {
            return Err(StorageError::Poisoned(why));
        }
        self.draining.set(true);
        Ok(())
    }

    /// Gives the writer role back, draining what queued up meanwhile.
    fn unlock_writes(self: &Rc<Self>) {
        if self.queue.borrow().is_empty() {
            self.draining.set(false);
        } else {
            let me = self.clone();
            io::spawn_detached(async move { me.drain().await });
        }
    }

    async fn truncate_locked(self: &Rc<Self>, offset: i64) -> Result<(), StorageError> {
        let from = self.next_offset.get();
        if offset >= from {
            return Ok(());
        }
        let k = self
            .segments
            .borrow()
            .partition_point(|s| s.base_offset < offset);
        if k == 0 || offset < self.log_start_offset.get() {
            return self.reset_locked(offset).await;
        }
        let (base, cut_pos, new_end) = {
            let segs = self.segments.borrow();
            let seg = &segs[k - 1];
            match seg.find(offset)? {
                Some(b) => (seg.base_offset, b.pos, b.base_offset.min(offset)),
                None => (seg.base_offset, seg.size, offset),
            }
        };
        if new_end < self.log_start_offset.get() {
            return self.reset_locked(offset).await;
        }
        // Open the writer first: nothing below awaits, so readers and
        // fsyncs on this shard never see a half-cut log.
        let path = segment::log_path(&self.dir, base);
        let writer = Rc::new(file::AppendFile::open(&path).await?);
        let removed: Vec<Segment> = self.segments.borrow_mut().drain(k..).collect();
        for seg in removed.iter().rev() {
            seg.delete_files()?;
        }
        let f = std::fs::OpenOptions::new().write(true).open(&path)?;
        f.set_len(cut_pos)?;
        f.sync_all()?;
        for p in [
            segment::index_path(&self.dir, base),
            segment::timeindex_path(&self.dir, base),
        ] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        let (mut seg, _) = Segment::open(&self.dir, base, false)?;
        seg.next_offset = seg.next_offset.max(new_end);
        seg.writer = Some(writer);
        self.segments.borrow_mut()[k - 1] = seg;
        self.set_end_after_truncation(new_end)?;
        tracing::info!(partition = %self.tp, from, to = new_end, "truncated log");
        Ok(())
    }

    /// Resets the offsets, producer state and epoch cache to a log that now
    /// ends at `end`, and persists the checkpoints.
    fn set_end_after_truncation(&self, end: i64) -> Result<(), StorageError> {
        self.next_offset.set(end);
        self.visible_end.set(end);
        self.durable_end.set(self.durable_end.get().min(end));
        self.high_watermark.set(self.high_watermark.get().min(end));
        self.follow_log_end();
        let active_base = self.segments.borrow().last().expect("active").base_offset;
        self.compacted_through
            .set(self.compacted_through.get().min(active_base));
        let producers = rebuild_producers(&self.dir, &self.segments.borrow())?;
        *self.producers.borrow_mut() = producers;
        if self.epochs.borrow_mut().truncate_from_end(end) {
            self.persist_epochs()?;
        }
        self.write_checkpoints()?;
        self.wake_readers();
        Ok(())
    }

    async fn reset_locked(self: &Rc<Self>, offset: i64) -> Result<(), StorageError> {
        let from = self.next_offset.get();
        // The new file is prepared under a name recovery ignores, then
        // renamed over, because a current segment may have the same base.
        let path = segment::log_path(&self.dir, offset);
        let tmp = path.with_extension("log.truncating");
        std::fs::File::create(&tmp)?.sync_all()?;
        let writer = Rc::new(file::AppendFile::open(&tmp).await?);
        let old: Vec<Segment> = self.segments.borrow_mut().drain(..).collect();
        for seg in old.iter().rev() {
            seg.delete_files()?;
        }
        std::fs::rename(&tmp, &path)?;
        file::fsync_dir(&self.dir)?;
        let (mut seg, _) = Segment::open(&self.dir, offset, false)?;
        seg.created_ms = io::now_ms();
        seg.writer = Some(writer);
        self.segments.borrow_mut().push(seg);
        self.unsynced_sealed.borrow_mut().clear();
        self.log_start_offset.set(offset);
        self.high_watermark.set(offset);
        self.durable_end.set(offset);
        self.epochs.borrow_mut().clear();
        self.persist_epochs()?;
        // Drop the snapshot first so the rebuild starts empty.
        match std::fs::remove_file(self.dir.join(super::PRODUCER_CHECKPOINT)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.set_end_after_truncation(offset)?;
        tracing::info!(partition = %self.tp, from, to = offset, "truncated log fully");
        Ok(())
    }
}

/// The whole batches of a leader's Fetch response bytes, checked (length,
/// magic, CRC32C, increasing offsets); a partial batch at the end is left
/// out, as Kafka's fetch may cut the last batch short.
fn replica_spans(records: &[u8]) -> Result<Vec<BatchSpan>, StorageError> {
    let bad =
        |at: usize, why: String| StorageError::Io(format!("replica batch at byte {at}: {why}"));
    let mut spans = Vec::new();
    let mut at = 0usize;
    let mut prev_last: Option<i64> = None;
    while records.len() - at >= limits::batch_header_bytes {
        let h = BatchHeader::new(&records[at..]).expect("header length");
        let len = h.total_bytes();
        if len < limits::batch_header_bytes as i64 {
            return Err(bad(at, format!("length {len} is invalid")));
        }
        let len = len as usize;
        if records.len() - at < len {
            break;
        }
        let bytes = &records[at..at + len];
        if h.magic() != 2 {
            return Err(bad(at, format!("magic {} is not 2", h.magic())));
        }
        let crc = batch_crc(bytes);
        if crc != h.crc() {
            return Err(bad(
                at,
                format!("crc mismatch: header {:#x}, computed {crc:#x}", h.crc()),
            ));
        }
        if h.last_offset_delta() < 0 || h.records_count() < 0 {
            return Err(bad(at, "negative offset delta or record count".into()));
        }
        if prev_last.is_some_and(|p| h.base_offset() <= p) {
            return Err(bad(
                at,
                format!(
                    "base offset {} does not follow offset {}",
                    h.base_offset(),
                    prev_last.unwrap_or(-1)
                ),
            ));
        }
        prev_last = Some(h.last_offset());
        spans.push(BatchSpan {
            start: at,
            len,
            records: h.records_count(),
            last_offset_delta: h.last_offset_delta(),
            max_timestamp: h.max_timestamp(),
        });
        at += len;
    }
    Ok(spans)
}
