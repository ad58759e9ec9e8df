//! The durable raft log of one controller voter, in its metadata dir.
//!
//! Owned by the raft thread. Files:
//! - `raft.entries`: append-only records `u32 len | u32 crc32c | protobuf Entry`
//!   (a later record with an index already present overwrites the tail, as
//!   raft truncation does; a torn tail is cut on open);
//! - `raft.hardstate`: `u32 crc32c | protobuf HardState`, rewritten atomically;
//! - `raft.snapshot`: `u32 crc32c | protobuf Snapshot` whose data is the
//!   rkyv-encoded `MetadataImage`, rewritten atomically.
//!
//! On open everything is replayed into a `MemStorage`, which raft reads.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::cluster::metadata::MetadataImage;

use super::wire;

const ENTRIES: &str = "raft.entries";
const HARDSTATE: &str = "raft.hardstate";
const SNAPSHOT: &str = "raft.snapshot";
/// Bounds one entry record (a metadata record, never a snapshot).
const ENTRY_BYTES_MAX: usize = 64 << 20;

/// What raft reads: the in-memory log plus the latest snapshot, whose data
/// `MemStorage` would not carry.
#[derive(Clone)]
pub struct RaftStorage {
    mem: MemStorage,
    snap: Arc<RwLock<Snapshot>>,
}

impl Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snap = self.snap.read().expect("snapshot lock");
        if snap.get_metadata().index == 0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(snap.clone())
    }
}

pub struct LogStore {
    dir: PathBuf,
    storage: RaftStorage,
    entries: BufWriter<File>,
    /// Snapshot after this many applied entries beyond the last snapshot.
    snapshot_entries: u64,
}

/// What `LogStore::open` recovered.
pub struct Recovered {
    pub store: LogStore,
    /// The snapshot image (default when there is none); its `version` is
    /// the snapshot index, from which committed entries are re-applied.
    pub image: MetadataImage,
}

impl LogStore {
    pub fn open(dir: &Path, voters: Vec<u64>, snapshot_entries: u64) -> anyhow::Result<Recovered> {
        assert!(snapshot_entries > 0, "snapshot threshold must be positive");
        let mem = MemStorage::new();
        let mut image = MetadataImage::default();
        let mut snap = Snapshot::default();
        if let Some(bytes) = read_checked(&dir.join(SNAPSHOT))? {
            snap = Snapshot::parse_from_bytes(&bytes).context("parsing raft snapshot")?;
            image = wire::decode(snap.get_data()).context("decoding snapshot image")?;
            anyhow::ensure!(
                image.version == snap.get_metadata().index,
                "snapshot image version {} != snapshot index {}",
                image.version,
                snap.get_metadata().index
            );
            mem.wl().apply_snapshot(snap.clone())?;
        } else {
            mem.initialize_with_conf_state(ConfState::from((voters, Vec::<u64>::new())));
        }
        let snap_index = snap.get_metadata().index;
        let path = dir.join(ENTRIES);
        let (ents, good_len) = read_entries(&path)?;
        let mut n = 0;
        for e in ents.iter().filter(|e| e.index > snap_index) {
            mem.wl().append(std::slice::from_ref(e))?;
            n += 1;
        }
        if let Some(bytes) = read_checked(&dir.join(HARDSTATE))? {
            let mut hs = HardState::parse_from_bytes(&bytes).context("parsing hard state")?;
            hs.commit = hs.commit.max(snap_index);
            hs.term = hs.term.max(snap.get_metadata().term);
            mem.wl().set_hardstate(hs);
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        // Cut a torn tail so new records follow the last good one.
        file.set_len(good_len)?;
        tracing::info!(
            dir = %dir.display(),
            snapshot_index = snap_index,
            entries = n,
            "controller log recovered"
        );
        Ok(Recovered {
            store: LogStore {
                dir: dir.to_path_buf(),
                storage: RaftStorage {
                    mem,
                    snap: Arc::new(RwLock::new(snap)),
                },
                entries: BufWriter::new(file),
                snapshot_entries,
            },
            image,
        })
    }

    pub fn storage(&self) -> RaftStorage {
        self.storage.clone()
    }

    /// Appends entries (buffered; durable after `sync`).
    pub fn append(&mut self, ents: &[Entry]) -> anyhow::Result<()> {
        for e in ents {
            write_record(&mut self.entries, &e.write_to_bytes()?)?;
        }
        self.storage.mem.wl().append(ents)?;
        Ok(())
    }

    pub fn sync(&mut self) -> anyhow::Result<()> {
        self.entries.flush()?;
        self.entries.get_ref().sync_data()?;
        Ok(())
    }

    pub fn set_hardstate(&mut self, hs: HardState) -> anyhow::Result<()> {
        write_atomic(&self.dir, HARDSTATE, &hs.write_to_bytes()?)?;
        self.storage.mem.wl().set_hardstate(hs);
        Ok(())
    }

    pub fn set_commit(&mut self, commit: u64) -> anyhow::Result<()> {
        let mut hs = self.storage.mem.rl().hard_state().clone();
        hs.commit = commit;
        self.set_hardstate(hs)
    }

    /// Installs a snapshot received from the leader.
    pub fn install_snapshot(&mut self, snap: Snapshot) -> anyhow::Result<()> {
        write_atomic(&self.dir, SNAPSHOT, &snap.write_to_bytes()?)?;
        self.storage.mem.wl().apply_snapshot(snap.clone())?;
        *self.storage.snap.write().expect("snapshot lock") = snap;
        self.rewrite_entries()
    }

    /// Snapshots `image` (applied up to `image.version`) if the log has
    /// grown enough since the last snapshot, then compacts the log.
    pub fn maybe_snapshot(&mut self, image: &MetadataImage) -> anyhow::Result<()> {
        let applied = image.version;
        let last = self
            .storage
            .snap
            .read()
            .expect("snapshot lock")
            .get_metadata()
            .index;
        if applied < last + self.snapshot_entries {
            return Ok(());
        }
        let mut snap = Snapshot::default();
        snap.set_data(wire::encode(image).into());
        let meta = snap.mut_metadata();
        meta.index = applied;
        meta.term = self.storage.mem.term(applied)?;
        meta.set_conf_state(self.storage.mem.initial_state()?.conf_state);
        write_atomic(&self.dir, SNAPSHOT, &snap.write_to_bytes()?)?;
        self.storage.mem.wl().compact(applied)?;
        *self.storage.snap.write().expect("snapshot lock") = snap;
        self.rewrite_entries()?;
        tracing::info!(index = applied, "controller metadata snapshot written");
        Ok(())
    }

    /// Rewrites the entry file to hold exactly the in-memory log.
    fn rewrite_entries(&mut self) -> anyhow::Result<()> {
        self.sync()?;
        let mut buf = Vec::new();
        let first = self.storage.mem.first_index()?;
        let last = self.storage.mem.last_index()?;
        if last >= first {
            let ents =
                self.storage
                    .mem
                    .entries(first, last + 1, None, GetEntriesContext::empty(false))?;
            for e in &ents {
                write_record(&mut buf, &e.write_to_bytes()?)?;
            }
        }
        write_atomic_raw(&self.dir, ENTRIES, &buf)?;
        let file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(self.dir.join(ENTRIES))?;
        self.entries = BufWriter::new(file);
        Ok(())
    }
}

fn write_record(w: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).expect("entry under 4 GiB");
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&crc32c::crc32c(payload).to_be_bytes())?;
    w.write_all(payload)
}

/// Reads every intact record; returns them and the byte length they span.
fn read_entries(path: &Path) -> anyhow::Result<(Vec<Entry>, u64)> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e.into()),
    }
    let mut out = Vec::new();
    let mut pos = 0usize;
    while bytes.len() - pos >= 8 {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len > ENTRY_BYTES_MAX || bytes.len() - pos - 8 < len {
            break;
        }
        let payload = &bytes[pos + 8..pos + 8 + len];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        out.push(Entry::parse_from_bytes(payload)?);
        pos += 8 + len;
    }
    if pos != bytes.len() {
        tracing::warn!(
            path = %path.display(),
            dropped_bytes = bytes.len() - pos,
            "controller log has a torn tail; cutting it"
        );
    }
    Ok((out, pos as u64))
}

fn read_checked(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    anyhow::ensure!(bytes.len() >= 4, "{} is truncated", path.display());
    let crc = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"));
    anyhow::ensure!(
        crc32c::crc32c(&bytes[4..]) == crc,
        "{} fails its checksum",
        path.display()
    );
    Ok(Some(bytes[4..].to_vec()))
}

fn write_atomic(dir: &Path, name: &str, payload: &[u8]) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(payload.len() + 4);
    buf.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    buf.extend_from_slice(payload);
    write_atomic_raw(dir, name, &buf)
}

/// Write a temp file, fsync, rename over `name`, fsync the dir.
fn write_atomic_raw(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}
