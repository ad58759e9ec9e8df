//! Layer 5: listeners, connections, request dispatch, one handler file per
//! Kafka API. `shard_main` is what every shard runs: open the partitions it
//! owns, wait for the other shards, listen (SO_REUSEPORT), run the
//! retention and flush tasks, and close everything cleanly on shutdown.

pub mod agent;
pub mod connection;
pub mod context;
pub mod handlers;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::cluster::controller::{BrokerHeartbeat, ControllerClient};
use crate::config::BrokerConfig;
use crate::io;
use crate::model::ShardId;
use crate::runtime;

use context::{ctx, ShardContext};

/// How a broker reaches the controller quorum.
#[derive(Clone)]
pub struct ClusterLink {
    pub controller: Arc<ControllerClient>,
    pub incarnation: u64,
}

pub async fn shard_main(
    shard: ShardId,
    config: Arc<BrokerConfig>,
    cluster_id: String,
    link: ClusterLink,
    ready: Arc<Barrier>,
) -> anyhow::Result<()> {
    let c = ShardContext::install(config.clone(), cluster_id, link.controller.clone());
    // Every shard installs its context before any image is broadcast.
    ready.wait();
    if shard.0 == 0 {
        let hb = BrokerHeartbeat {
            broker_id: config.node_id,
            host: config.advertise.ip().to_string(),
            port: config.advertise.port(),
            incarnation: link.incarnation,
        };
        let interval = Duration::from_millis(
            config
                .prop("broker.heartbeat.interval.ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(2000),
        );
        let images = agent::start(link.controller.clone(), hb, interval);
        io::spawn_detached(agent::apply_images(
            images,
            config.node_id,
            link.incarnation,
        ));
    }
    // Serve clients only once this broker knows the cluster (Kafka's
    // brokers also wait for the metadata log before listening).
    let mut waited = 0u32;
    while agent::applied_everywhere() == 0 {
        if runtime::shutting_down() {
            return Ok(());
        }
        io::sleep(Duration::from_millis(10)).await;
        waited += 1;
        if waited.is_multiple_of(500) && shard.0 == 0 {
            tracing::info!("waiting for the controller quorum");
        }
    }
    if shard.0 == 0 {
        agent::import_topic_table().await;
    }
    let listener = glommio::net::TcpListener::bind(config.listen)
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", config.listen))?;
    if shard.0 == 0 {
        tracing::info!(listen = %config.listen, shards = c.shards, data_dir = %config.data_dir.display(), "corelog ready");
    }
    io::spawn_detached(retention_loop());
    io::spawn_detached(group_loop());
    io::spawn_detached(flush_loop());
    io::spawn_detached(isr_loop());
    let per_shard_max = config.connections_max.div_ceil(c.shards).max(1);
    loop {
        let accept = Box::pin(listener.accept());
        let stop = Box::pin(wait_for_shutdown());
        let stream = match futures::future::select(accept, stop).await {
            futures::future::Either::Left((Ok(s), _)) => s,
            futures::future::Either::Left((Err(e), _)) => {
                tracing::warn!(error = %e, "accept failed");
                io::sleep(Duration::from_millis(10)).await;
                continue;
            }
            futures::future::Either::Right(_) => break,
        };
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        if c.connections.get() >= per_shard_max {
            tracing::warn!(%peer, max = config.connections_max, "closing connection: max.connections reached");
            drop(stream);
            continue;
        }
        c.connections.set(c.connections.get() + 1);
        io::spawn_detached(async move {
            connection::serve(stream, peer).await;
            let c = ctx();
            c.connections.set(c.connections.get() - 1);
        });
    }
    tracing::info!(
        shard = shard.0,
        sendfile_bytes = c.sendfile_bytes.get(),
        copied_bytes = c.copied_bytes.get(),
        "shard stopping"
    );
    crate::replication::stop_fetchers();
    c.close_all().await;
    Ok(())
}

/// Shrinks the ISR of led partitions whose followers fell behind, checked
/// at half of `replica.lag.time.max.ms`, as Kafka does.
async fn isr_loop() {
    let lag = crate::replication::manager().config.lag_time_max_ms.max(20) as u64;
    while !runtime::shutting_down() {
        io::sleep(Duration::from_millis(lag / 2)).await;
        crate::replication::manager().check_isr();
    }
}

async fn wait_for_shutdown() {
    while !runtime::shutting_down() {
        io::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes expired segments of this shard's partitions on
/// `log.retention.check.interval.ms`.
async fn retention_loop() {
    let interval = Duration::from_millis(ctx().config.retention_check_interval_ms.max(10));
    while !runtime::shutting_down() {
        io::sleep(interval).await;
        let now = io::now_ms();
        for log in ctx().owned_partitions() {
            if let Err(e) = log.enforce_retention(now) {
                tracing::error!(partition = %log.tp, error = %e, "retention failed");
            }
            if let Err(e) = log.compact(now) {
                tracing::error!(partition = %log.tp, error = %e, "compaction failed");
            }
        }
    }
}

/// Applies `flush.ms` and writes recovery checkpoints periodically.
async fn flush_loop() {
    let interval = Duration::from_millis(ctx().config.flush_scheduler_interval_ms.max(10));
    let mut ticks: u64 = 0;
    while !runtime::shutting_down() {
        io::sleep(interval).await;
        ticks += 1;
        let now = io::now_ms();
        for log in ctx().owned_partitions() {
            log.flush_if_due(now).await;
            if ticks.is_multiple_of(60) {
                if let Err(e) = log.write_checkpoints_async().await {
                    tracing::error!(partition = %log.tp, error = %e, "checkpoint failed");
                }
            }
        }
    }
}

/// Session expiry and join deadlines every 100 ms; offset retention on
/// `offsets.retention.check.interval.ms`.
async fn group_loop() {
    let check_ms: i64 = ctx()
        .config
        .prop("offsets.retention.check.interval.ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(600_000);
    let mut last_expiry = io::now_ms();
    while !runtime::shutting_down() {
        io::sleep(Duration::from_millis(100)).await;
        let now = io::now_ms();
        let expire = now - last_expiry >= check_ms;
        if expire {
            last_expiry = now;
        }
        crate::group::coordinator().tick(now, expire);
    }
}
