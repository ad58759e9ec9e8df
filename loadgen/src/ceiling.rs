//! `loadgen ceiling rtt|sendfile`: machine ceilings that need no extra tool.
//! `rtt` ping-pongs one byte over loopback TCP and reports the round-trip
//! percentiles; `sendfile` sends a page-cached file to a loopback socket whose
//! peer reads and discards it. Each prints one JSON line on stdout.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::stats::{new_histogram, Percentiles};

/// Size of the file `sendfile` streams from (small enough to stay cached).
const SENDFILE_FILE_BYTES: usize = 256 * 1024 * 1024;
const SENDFILE_CHUNK_BYTES: usize = 1024 * 1024;

pub fn main(what: &str, length: Duration) -> Result<()> {
    match what {
        "rtt" => rtt(length),
        "sendfile" => sendfile(length),
        _ => bail!("ceiling must be rtt or sendfile"),
    }
}

fn rtt(length: Duration) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = thread::spawn(move || -> Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut h = new_histogram();
    let mut b = [7u8; 1];
    let end = Instant::now() + length;
    while Instant::now() < end {
        let t = Instant::now();
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    drop(c);
    let _ = server.join();
    let p = Percentiles::of(&h);
    println!(
        "{{\"rtt_count\":{},\"rtt_p50_us\":{:.1},\"rtt_p99_us\":{:.1},\"rtt_p999_us\":{:.1},\"rtt_max_us\":{:.1}}}",
        p.count,
        p.p50_ms * 1e3,
        p.p99_ms * 1e3,
        p.p999_ms * 1e3,
        p.max_ms * 1e3
    );
    Ok(())
}

fn sendfile(length: Duration) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("loadgen-sendfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("data");
    let block: Vec<u8> = (0..SENDFILE_CHUNK_BYTES).map(|i| (i * 31) as u8).collect();
    {
        let mut f = std::fs::File::create(&path)?;
        for _ in 0..SENDFILE_FILE_BYTES / SENDFILE_CHUNK_BYTES {
            f.write_all(&block)?;
        }
    }
    let result = sendfile_from(&path, length);
    let _ = std::fs::remove_dir_all(&dir);
    let (bytes, secs) = result?;
    println!(
        "{{\"sendfile_bytes\":{bytes},\"sendfile_seconds\":{secs:.3},\"sendfile_gb_per_s\":{:.3}}}",
        bytes as f64 / secs / 1e9
    );
    Ok(())
}

fn sendfile_from(path: &std::path::Path, length: Duration) -> Result<(u64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sink = thread::spawn(move || -> Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; SENDFILE_CHUNK_BYTES];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(n),
                k => n += k as u64,
            }
        }
    });
    let file = std::fs::File::open(path)?;
    let sock = TcpStream::connect(addr)?;
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < length {
        let mut offset: libc::off_t = 0;
        while (offset as usize) < SENDFILE_FILE_BYTES {
            // SAFETY: both fds are open for the duration of the call and
            // `offset` is a valid pointer the kernel updates.
            let n = unsafe {
                libc::sendfile(
                    sock.as_raw_fd(),
                    file.as_raw_fd(),
                    &mut offset,
                    SENDFILE_FILE_BYTES - offset as usize,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error()).context("sendfile");
            }
            sent += n as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(sock);
    let received = sink.join().expect("sink panicked")?;
    if received != sent {
        bail!("sink got {received} of {sent} bytes");
    }
    Ok((sent, secs))
}
