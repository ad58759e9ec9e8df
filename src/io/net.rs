//! Sending record bytes from a segment file to a socket without copying
//! them through user space. glommio has no public sendfile, so the socket is
//! switched to non-blocking around the syscall (glommio does the same around
//! accept). When the socket buffer is full, one chunk goes through glommio's
//! async write, which waits for writability; then sendfile resumes.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use futures_lite::AsyncWriteExt;

use super::file::pread;
use crate::model::limits;

/// Bytes moved each way, for the metrics and the benchmark write-up.
#[derive(Default, Clone, Copy, Debug)]
pub struct SendStats {
    pub sendfile_bytes: u64,
    pub copied_bytes: u64,
}

fn sendfile_nonblocking(sock: RawFd, file: &File, pos: u64, len: usize) -> std::io::Result<usize> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    // SAFETY: the socket fd outlives this call (the caller holds the stream).
    let sock_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(sock) };
    let flags = OFlag::from_bits_truncate(fcntl(sock_fd, FcntlArg::F_GETFL)?);
    fcntl(sock_fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    let mut off = pos as libc::off_t;
    let r = nix::sys::sendfile::sendfile(sock_fd, file.as_fd(), Some(&mut off), len);
    fcntl(sock_fd, FcntlArg::F_SETFL(flags))?;
    Ok(r?)
}

/// Sends `len` bytes of `file` starting at `pos` to the socket.
pub async fn send_file_region<W>(
    writer: &mut W,
    sock: RawFd,
    file: &File,
    mut pos: u64,
    mut len: usize,
    stats: &mut SendStats,
) -> std::io::Result<()>
where
    W: futures_lite::AsyncWrite + Unpin,
{
    while len > 0 {
        match sendfile_nonblocking(sock, file, pos, len) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment shorter than the region being sent",
                ))
            }
            Ok(n) => {
                stats.sendfile_bytes += n as u64;
                pos += n as u64;
                len -= n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let chunk = len.min(limits::sendfile_fallback_chunk_bytes);
                let mut buf = vec![0u8; chunk];
                let got = pread(file, &mut buf, pos)?;
                if got != chunk {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "segment shorter than the region being sent",
                    ));
                }
                writer.write_all(&buf).await?;
                stats.copied_bytes += chunk as u64;
                pos += chunk as u64;
                len -= chunk;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn raw_fd<T: AsRawFd>(t: &T) -> RawFd {
    t.as_raw_fd()
}
