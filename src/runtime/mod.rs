//! Layer 2: shards. One glommio executor per core, pinned; a full channel
//! mesh between them; and `run_on`, which runs a closure on the shard that
//! owns some state and brings its result back. Jobs cross shards as boxed
//! `Send` closures; the futures they build stay on the target shard, so
//! shard-local state (`Rc`, `RefCell`) never crosses a thread.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::channel::oneshot;
use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::{LocalExecutorBuilder, Placement};

use crate::model::{limits, ShardId};

/// Work sent to another shard: builds a future there.
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// This shard's view of the mesh. Lives on one shard (thread-local).
struct Mesh {
    id: usize,
    shards: usize,
    senders: Senders<Job>,
}

thread_local! {
    static MESH: RefCell<Option<Rc<Mesh>>> = const { RefCell::new(None) };
}

fn mesh() -> Rc<Mesh> {
    MESH.with(|m| m.borrow().clone())
        .expect("called outside a shard")
}

/// The shard this code runs on.
pub fn current_shard() -> ShardId {
    ShardId(mesh().id)
}

/// How many shards the broker runs.
pub fn shard_count() -> usize {
    mesh().shards
}

#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not reachable (shutting down)")]
pub struct ShardGone(pub usize);

/// Runs `f` on `shard` and returns its result. Local calls run inline.
pub async fn run_on<T, F, Fut>(shard: ShardId, f: F) -> Result<T, ShardGone>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let m = mesh();
    if shard.0 == m.id {
        return Ok(f().await);
    }
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        Box::pin(async move {
            let _ = tx.send(f().await);
        })
    });
    m.senders
        .send_to(shard.0, job)
        .await
        .map_err(|_| ShardGone(shard.0))?;
    rx.await.map_err(|_| ShardGone(shard.0))
}

/// Set once a shutdown signal arrives; every shard watches it.
pub static SHUTDOWN: AtomicBool = AtomicBool::new(false);

pub fn shutting_down() -> bool {
    SHUTDOWN.load(Ordering::Relaxed)
}

/// Starts `shards` pinned executors, joins them into a mesh, and runs
/// `shard_main` on each. Returns when every shard's main returns.
pub fn start<F, Fut>(shards: usize, shard_main: F) -> anyhow::Result<()>
where
    F: Fn(ShardId) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + 'static,
{
    start_with(shards, None, shard_main)
}

/// `start`, with `spin` set: an idle shard polls this long before it parks
/// in io_uring, trading CPU for cross-shard and I/O wake-up latency.
pub fn start_with<F, Fut>(
    shards: usize,
    spin: Option<std::time::Duration>,
    shard_main: F,
) -> anyhow::Result<()>
where
    F: Fn(ShardId) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + 'static,
{
    let builder: MeshBuilder<Job, _> = MeshBuilder::full(shards, limits::mesh_channel_depth_max);
    let cpus = pinnable_cpus(shards);
    let mut handles = Vec::with_capacity(shards);
    for (i, cpu) in cpus.into_iter().enumerate() {
        let builder = builder.clone();
        let main = shard_main.clone();
        let placement = match cpu {
            Some(c) => Placement::Fixed(c),
            None => Placement::Unbound,
        };
        let mut exec = LocalExecutorBuilder::new(placement).name(&format!("shard-{i}"));
        if let Some(spin) = spin {
            exec = exec.spin_before_park(spin);
        }
        let handle = exec
            .spawn(move || async move {
                let (senders, receivers) = builder
                    .join()
                    .await
                    .map_err(|_| anyhow::anyhow!("mesh join failed"))?;
                let id = senders.peer_id();
                MESH.with(|m| {
                    *m.borrow_mut() = Some(Rc::new(Mesh {
                        id,
                        shards,
                        senders,
                    }));
                });
                let mut receivers = receivers;
                for (_, rx) in receivers.streams() {
                    glommio::spawn_local(async move {
                        while let Some(job) = rx.recv().await {
                            glommio::spawn_local(job()).detach();
                        }
                    })
                    .detach();
                }
                main(ShardId(id)).await
            })
            .map_err(|e| anyhow::anyhow!("starting shard {i}: {e}"))?;
        handles.push(handle);
    }
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(e) => first_err = first_err.or(Some(anyhow::anyhow!("shard failed: {e}"))),
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The CPUs this process may run on, one per shard; `None` (unpinned) if
/// the affinity mask is smaller than the shard count.
fn pinnable_cpus(shards: usize) -> Vec<Option<usize>> {
    let allowed: Vec<usize> = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    (0..shards).map(|i| allowed.get(i).copied()).collect()
}

/// Marks shutdown for every shard (signal handler thread).
pub fn request_shutdown() {
    SHUTDOWN.store(true, Ordering::SeqCst);
}
