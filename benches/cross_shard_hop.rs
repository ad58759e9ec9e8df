//! The cross-shard hop: `runtime::run_on` from shard 0 to shard 1 and back
//! (a boxed job over the glommio channel mesh, a oneshot reply with a foreign
//! wake), empty and carrying a 64 KiB `Bytes` (moved, never copied). This is
//! the fixed cost every produce or fetch pays for a partition owned by
//! another shard. Needs 2 cores.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use corelog::model::ShardId;
use corelog::runtime;
use criterion::{criterion_group, criterion_main, Criterion};

enum Cmd {
    Hops { n: u64, payload: Option<Bytes> },
    Stop,
}

type Harness = (
    mpsc::Sender<Cmd>,
    mpsc::Receiver<Duration>,
    std::thread::JoinHandle<()>,
);

fn start(spin: Option<Duration>) -> Harness {
    let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>();
    let (res_tx, res_rx) = mpsc::channel::<Duration>();
    let cmd_rx = Arc::new(Mutex::new(Some(cmd_rx)));
    let res_tx = Arc::new(Mutex::new(Some(res_tx)));
    let handle =
        std::thread::spawn(move || {
            runtime::start_with(2, spin, move |shard| {
                let cmd_rx = cmd_rx.clone();
                let res_tx = res_tx.clone();
                async move {
                    if shard.0 != 0 {
                        while !runtime::shutting_down() {
                            glommio::timer::sleep(Duration::from_millis(5)).await;
                        }
                        return Ok(());
                    }
                    let rx = cmd_rx.lock().unwrap().take().expect("one shard 0");
                    let tx = res_tx.lock().unwrap().take().expect("one shard 0");
                    // Blocking between measurements is fine: no hop is in flight.
                    while let Ok(Cmd::Hops { n, payload }) = rx.recv() {
                        let t0 = Instant::now();
                        for _ in 0..n {
                            let p = payload.clone();
                            let len = runtime::run_on(ShardId(1), move || async move {
                                p.map_or(0, |b| b.len())
                            })
                            .await
                            .expect("shard 1 alive");
                            assert!(len == 0 || len == 64 * 1024);
                        }
                        tx.send(t0.elapsed()).unwrap();
                    }
                    runtime::request_shutdown();
                    Ok(())
                }
            })
            .expect("runtime");
        });
    (cmd_tx, res_rx, handle)
}

fn bench(c: &mut Criterion) {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("cross_shard_hop needs 2 cores; skipped");
        return;
    }
    // Idle shards park in io_uring by default; with spin_before_park they
    // poll briefly first, which is what a busy broker looks like.
    for (label, spin) in [
        ("park", None),
        ("spin50us", Some(Duration::from_micros(50))),
    ] {
        let (tx, rx, handle) = start(spin);
        let mut g = c.benchmark_group(format!("cross_shard_hop/{label}"));
        for (name, payload) in [
            ("empty", None),
            ("64KiB_bytes", Some(Bytes::from(vec![7u8; 64 * 1024]))),
        ] {
            g.bench_function(name, |b| {
                b.iter_custom(|n| {
                    tx.send(Cmd::Hops {
                        n,
                        payload: payload.clone(),
                    })
                    .unwrap();
                    rx.recv().unwrap()
                })
            });
        }
        g.finish();
        tx.send(Cmd::Stop).unwrap();
        handle.join().unwrap();
        // The next runtime needs a fresh shutdown flag.
        runtime::SHUTDOWN.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

criterion_group! {
    name = benches;
    config = common::quick_criterion();
    targets = bench
}
criterion_main!(benches);
