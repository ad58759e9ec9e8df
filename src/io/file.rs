//! Files: appends and fsync go through io_uring (glommio's buffered file);
//! reads of batch headers are positional reads from the page cache; the
//! read handle is an `Arc<File>` so any shard can sendfile from it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use glommio::io::{BufferedFile, OpenOptions};

/// The append side of a segment file. Owned by the partition's shard.
pub struct AppendFile {
    inner: BufferedFile,
}

impl AppendFile {
    /// Opens (creating if needed) a file for appends at explicit positions.
    pub async fn open(path: &Path) -> std::io::Result<Self> {
        let inner = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .buffered_open(path)
            .await
            .map_err(std::io::Error::from)?;
        Ok(Self { inner })
    }

    /// Writes all of `buf` at `pos` through io_uring. A short write (disk
    /// full) is an error: the caller poisons the partition rather than retry.
    pub async fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> std::io::Result<()> {
        let want = buf.len();
        let n = self
            .inner
            .write_at(buf, pos)
            .await
            .map_err(std::io::Error::from)?;
        if n != want {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {n} of {want} bytes at {pos}"),
            ));
        }
        Ok(())
    }

    pub async fn fdatasync(&self) -> std::io::Result<()> {
        self.inner.fdatasync().await.map_err(std::io::Error::from)
    }

    pub async fn truncate(&self, size: u64) -> std::io::Result<()> {
        self.inner
            .truncate(size)
            .await
            .map_err(std::io::Error::from)
    }

    pub async fn close(self) -> std::io::Result<()> {
        self.inner.close().await.map_err(std::io::Error::from)
    }
}

/// Opens the shared read handle of a segment.
pub fn open_reader(path: &Path) -> std::io::Result<Arc<File>> {
    Ok(Arc::new(File::open(path)?))
}

/// Reads exactly `buf.len()` bytes at `pos`, or fewer at end of file.
pub fn pread(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], pos + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// Writes a file atomically: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Fsyncs a directory so a create, rename or unlink in it is durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Size of a file in bytes.
pub fn file_len(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.len())
}

/// Takes an exclusive lock on the data directory for the life of the
/// returned file, so two brokers never share one.
pub fn lock_dir(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<File>> {
    let f = File::create(dir.join(".lock"))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "data dir {} is in use by another broker: {e}",
            dir.display()
        )
    })
}

/// The cluster id stored in the data dir, created on first start.
pub fn cluster_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("cluster.id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            write_atomic(&path, id.as_bytes())?;
            Ok(id)
        }
    }
}
