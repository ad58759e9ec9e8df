//! Layer 1: the only code that makes syscalls. Files (io_uring through
//! glommio for appends and fsync; positional reads for headers), sendfile
//! from a segment to a socket, atomic checkpoint writes, and spawning.

pub mod alloc;
pub mod file;
pub mod net;

/// Spawns a task on the current shard's executor and lets it run detached.
pub fn spawn_detached(fut: impl std::future::Future<Output = ()> + 'static) {
    glommio::spawn_local(fut).detach();
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Sleeps on the shard's timer wheel.
pub async fn sleep(d: std::time::Duration) {
    glommio::timer::sleep(d).await;
}

/// Runs blocking work (fsync-heavy checkpoint and index writes) on the
/// shard's blocking thread, so the executor keeps serving meanwhile.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}
