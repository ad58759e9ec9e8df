//! One segment: a `.log` file of RecordBatch v2 bytes exactly as on the wire,
//! named by its base offset, with its sparse indexes. Owned by the shard that
//! owns the partition; only the read handle (`Arc<File>`) crosses shards.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use crate::io::file::{self, AppendFile};
use crate::model::{batch_layout, limits, BatchHeader};
use crate::protocol::batch::batch_crc;

use super::index::{OffsetIndex, TimeIndex};

pub fn log_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
pub fn index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
pub fn timeindex_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// What a scan of batch headers found at a position.
#[derive(Clone, Copy, Debug)]
pub struct BatchAt {
    pub pos: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub len: u64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub leader_epoch: i32,
}

pub struct Segment {
    pub base_offset: i64,
    pub dir: PathBuf,
    /// Append handle; only the active segment has one.
    pub writer: Option<Rc<AppendFile>>,
    pub reader: Arc<File>,
    /// Bytes written and visible to readers.
    pub size: u64,
    /// One past the last offset in this segment.
    pub next_offset: i64,
    pub max_timestamp: i64,
    /// When the first batch was appended (ms), for `segment.ms`.
    pub created_ms: i64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    bytes_since_index: u64,
}

impl Segment {
    /// Creates an empty active segment.
    pub async fn create(dir: &Path, base_offset: i64, now_ms: i64) -> std::io::Result<Self> {
        let path = log_path(dir, base_offset);
        let writer = AppendFile::open(&path).await?;
        writer.truncate(0).await?;
        let d = dir.to_path_buf();
        crate::io::blocking(move || file::fsync_dir(&d)).await?;
        Ok(Self {
            base_offset,
            dir: dir.to_path_buf(),
            writer: Some(Rc::new(writer)),
            reader: file::open_reader(&path)?,
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            created_ms: now_ms,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
        })
    }

    /// Opens an existing segment for reading; `recover` validates every
    /// batch (CRC included) and cuts the file at the first bad one.
    /// Returns the segment and whether it was truncated.
    pub fn open(dir: &Path, base_offset: i64, recover: bool) -> std::io::Result<(Self, bool)> {
        let path = log_path(dir, base_offset);
        let reader = file::open_reader(&path)?;
        let file_size = file::file_len(&path)?;
        let mut seg = Self {
            base_offset,
            dir: dir.to_path_buf(),
            writer: None,
            reader,
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            created_ms: std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64),
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
        };
        if !recover && seg.load_indexes(file_size) {
            return Ok((seg, false));
        }
        let mut pos = 0u64;
        let mut truncated = false;
        while pos < file_size {
            match scan_batch(&seg.reader, pos, file_size, recover, seg.next_offset)? {
                Some(b) => {
                    seg.note_batch(&b);
                    pos += b.len;
                }
                None => {
                    truncated = true;
                    break;
                }
            }
        }
        seg.size = pos;
        if truncated {
            tracing::warn!(
                segment = %path.display(),
                valid_bytes = pos,
                file_bytes = file_size,
                "truncating torn or corrupt tail"
            );
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            f.set_len(pos)?;
            f.sync_all()?;
        }
        Ok((seg, truncated))
    }

    /// Loads `.index`/`.timeindex` for a sealed segment below the recovery
    /// point; the last batch is re-read to learn `next_offset`.
    fn load_indexes(&mut self, file_size: u64) -> bool {
        let idx = std::fs::read(index_path(&self.dir, self.base_offset)).ok();
        let tidx = std::fs::read(timeindex_path(&self.dir, self.base_offset)).ok();
        let (Some(idx), Some(tidx)) = (idx, tidx) else {
            return false;
        };
        let (Some(idx), Some(tidx)) = (
            OffsetIndex::from_bytes(&idx, file_size),
            TimeIndex::from_bytes(&tidx),
        ) else {
            return false;
        };
        // Walk headers from the last index entry to the end to find the tail.
        let mut pos = u64::from(idx.floor(u32::MAX));
        let mut last = None;
        while pos < file_size {
            match scan_batch(&self.reader, pos, file_size, false, self.base_offset) {
                Ok(Some(b)) => {
                    pos += b.len;
                    last = Some(b);
                }
                _ => return false,
            }
        }
        if pos != file_size {
            return false;
        }
        self.index = idx;
        self.time_index = tidx;
        self.size = file_size;
        if let Some(b) = last {
            self.next_offset = b.last_offset + 1;
        }
        self.max_timestamp = self.time_index.last_timestamp().unwrap_or(-1);
        true
    }

    /// Records a batch now present at `b.pos` in the indexes and counters.
    pub fn note_batch(&mut self, b: &BatchAt) {
        assert!(b.base_offset >= self.base_offset);
        let rel = (b.base_offset - self.base_offset) as u32;
        if self.bytes_since_index >= limits::index_interval_bytes
            || (self.index.is_empty() && b.pos > 0)
        {
            self.index.push(rel, b.pos as u32);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += b.len;
        if b.max_timestamp > self.max_timestamp {
            self.max_timestamp = b.max_timestamp;
            self.time_index.push(b.max_timestamp, rel);
        }
        self.next_offset = b.last_offset + 1;
        self.size = b.pos + b.len;
    }

    /// Finds the batch containing `offset` (or the first after it), scanning
    /// headers from the index floor. `None` if the segment has nothing there.
    pub fn find(&self, offset: i64) -> std::io::Result<Option<BatchAt>> {
        let rel = (offset.max(self.base_offset) - self.base_offset).min(i64::from(u32::MAX)) as u32;
        let mut pos = u64::from(self.index.floor(rel));
        while pos < self.size {
            let Some(b) = scan_batch(&self.reader, pos, self.size, false, self.base_offset)? else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unreadable batch header at {pos}"),
                ));
            };
            if b.last_offset >= offset {
                return Ok(Some(b));
            }
            pos += b.len;
        }
        Ok(None)
    }

    /// Finds the first batch whose max timestamp is at least `ts`.
    pub fn find_by_time(&self, ts: i64) -> std::io::Result<Option<BatchAt>> {
        let start_rel = self.time_index.search_start(ts);
        let mut pos = u64::from(self.index.floor(start_rel));
        while pos < self.size {
            let Some(b) = scan_batch(&self.reader, pos, self.size, false, self.base_offset)? else {
                return Ok(None);
            };
            if b.max_timestamp >= ts {
                return Ok(Some(b));
            }
            pos += b.len;
        }
        Ok(None)
    }

    /// Writes both indexes atomically beside the log file.
    /// The index files' paths and contents, to write off the shard.
    pub fn index_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        vec![
            (
                index_path(&self.dir, self.base_offset),
                self.index.to_bytes(),
            ),
            (
                timeindex_path(&self.dir, self.base_offset),
                self.time_index.to_bytes(),
            ),
        ]
    }

    pub fn persist_indexes(&self) -> std::io::Result<()> {
        self.index_files()
            .iter()
            .try_for_each(|(path, bytes)| file::write_atomic(path, bytes))
    }

    pub fn delete_files(&self) -> std::io::Result<()> {
        for p in [
            log_path(&self.dir, self.base_offset),
            index_path(&self.dir, self.base_offset),
            timeindex_path(&self.dir, self.base_offset),
        ] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        file::fsync_dir(&self.dir)
    }
}

/// Reads the batch header at `pos`. With `check_crc` the whole batch is read
/// and its CRC verified. `None` means the bytes there are not a complete,
/// valid batch (a torn or corrupt tail).
pub fn scan_batch(
    f: &File,
    pos: u64,
    end: u64,
    check_crc: bool,
    min_offset: i64,
) -> std::io::Result<Option<BatchAt>> {
    let mut head = [0u8; limits::batch_header_bytes];
    if end - pos < head.len() as u64 || file::pread(f, &mut head, pos)? < head.len() {
        return Ok(None);
    }
    let h = BatchHeader::new(&head).expect("header length");
    let len = h.total_bytes();
    if h.magic() != 2
        || len < limits::batch_header_bytes as i64
        || pos + len as u64 > end
        || h.base_offset() < min_offset
        || h.last_offset_delta() < 0
    {
        return Ok(None);
    }
    if check_crc {
        let mut whole = vec![0u8; len as usize];
        if file::pread(f, &mut whole, pos)? < whole.len() {
            return Ok(None);
        }
        let stored = u32::from_be_bytes(
            whole[batch_layout::crc..batch_layout::crc + 4]
                .try_into()
                .expect("4"),
        );
        if batch_crc(&whole) != stored {
            return Ok(None);
        }
    }
    Ok(Some(BatchAt {
        pos,
        base_offset: h.base_offset(),
        last_offset: h.last_offset(),
        len: len as u64,
        max_timestamp: h.max_timestamp(),
        producer_id: h.producer_id(),
        producer_epoch: h.producer_epoch(),
        base_sequence: h.base_sequence(),
        leader_epoch: h.partition_leader_epoch(),
    }))
}
