//! The broker's link to the controller quorum. Two plain threads talk to
//! the controller with the blocking client: one heartbeats (registration
//! and liveness), one long-polls for newer metadata images and hands them
//! to shard 0, which applies each image on every shard in turn. Calls made
//! by handlers (topic changes, ISR changes) run on a short-lived thread so
//! no shard ever blocks on the network.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

use crate::cluster::controller::{AlterPartition, BrokerHeartbeat, ControllerClient};
use crate::cluster::metadata::MetadataImage;
use crate::cluster::topics::TopicTable;
use crate::model::ShardId;
use crate::protocol::ResponseError;
use crate::replication::{AlterIsrFn, IsrChange};
use crate::runtime::{self, run_on};
use crate::server::context::ctx;

/// Runs `f` with the controller client on a thread of its own.
pub async fn controller_call<T: Send + 'static>(
    f: impl FnOnce(&ControllerClient) -> T + Send + 'static,
) -> T {
    let client = ctx().controller.clone();
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("controller-call".into())
        .spawn(move || {
            let _ = tx.send(f(&client));
        })
        .expect("spawning a controller call thread");
    rx.await
        .expect("controller call thread ended without an answer")
}

/// AlterPartition through the controller, for the replica manager.
pub fn alter_isr_fn() -> AlterIsrFn {
    std::rc::Rc::new(|change: IsrChange| {
        Box::pin(async move {
            let node = ctx().config.node_id;
            let req = AlterPartition {
                broker_id: node,
                topic: change.tp.topic.clone(),
                partition: change.tp.partition.0,
                leader_epoch: change.leader_epoch,
                partition_epoch: change.partition_epoch,
                new_isr: change.new_isr.clone(),
                added_incarnations: change.added_incarnations.clone(),
            };
            match controller_call(move |c| c.alter_partition(&req)).await {
                Ok(Ok(state)) => Ok((state.partition_epoch, state.isr)),
                Ok(Err(code)) => Err(code),
                Err(e) => {
                    tracing::warn!(partition = %change.tp, error = %e, "AlterPartition failed: controller unreachable");
                    Err(ResponseError::NotController.code())
                }
            }
        })
    })
}

/// Starts the heartbeat and metadata threads; returns the stream of
/// images for shard 0.
pub fn start(
    client: Arc<ControllerClient>,
    hb: BrokerHeartbeat,
    interval: Duration,
) -> mpsc::UnboundedReceiver<MetadataImage> {
    let (tx, rx) = mpsc::unbounded();
    let c = client.clone();
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            let mut failures = 0u32;
            let mut fenced = false;
            while !runtime::shutting_down() {
                match c.heartbeat(&hb) {
                    Ok(r) => {
                        if failures > 0 {
                            tracing::info!(broker = hb.broker_id, "controller reachable again");
                        }
                        if r.fenced != fenced {
                            tracing::info!(broker = hb.broker_id, fenced = r.fenced, "fencing state");
                            fenced = r.fenced;
                        }
                        failures = 0;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures == 1 || failures.is_multiple_of(30) {
                            tracing::warn!(broker = hb.broker_id, error = %e, "heartbeat to the controller failed");
                        }
                    }
                }
                std::thread::sleep(interval);
            }
        })
        .expect("spawning the heartbeat thread");
    std::thread::Builder::new()
        .name("metadata".into())
        .spawn(move || {
            let mut known = 0u64;
            let mut failures = 0u32;
            while !runtime::shutting_down() {
                match client.fetch_metadata(known, Duration::from_millis(500)) {
                    Ok(Some(image)) => {
                        failures = 0;
                        known = image.version;
                        if tx.unbounded_send(image).is_err() {
                            return;
                        }
                    }
                    Ok(None) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        if failures == 1 || failures.is_multiple_of(30) {
                            tracing::warn!(error = %e, "fetching metadata from the controller failed");
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })
        .expect("spawning the metadata thread");
    rx
}

/// Shard 0: applies each new image on every shard, newest first when
/// several queued up. Nothing is applied before an image shows this
/// process registered and unfenced: a restarted broker must not act on
/// the roles of its previous life (the registration of the new incarnation
/// takes it out of the ISRs and moves its leaderships first).
pub async fn apply_images(
    mut rx: mpsc::UnboundedReceiver<MetadataImage>,
    node_id: i32,
    incarnation: u64,
) {
    let mut registered = false;
    while let Some(mut image) = rx.next().await {
        while let Ok(newer) = rx.try_recv() {
            image = newer;
        }
        if !registered {
            registered = image
                .brokers
                .get(&node_id)
                .is_some_and(|b| b.incarnation == incarnation && !b.fenced);
            if !registered {
                continue;
            }
        }
        let image = Arc::new(image);
        for s in 0..runtime::shard_count() {
            let img = image.clone();
            let r = run_on(ShardId(s), move || async move {
                if let Err(e) = ctx().apply_image(img).await {
                    tracing::error!(error = %e, "applying metadata failed");
                }
            })
            .await;
            if r.is_err() {
                return;
            }
        }
        APPLIED_EVERYWHERE.fetch_max(image.version, Ordering::SeqCst);
    }
}

/// The newest image version every shard has applied (written by shard 0
/// after each broadcast; read by handlers waiting for their change).
static APPLIED_EVERYWHERE: AtomicU64 = AtomicU64::new(0);

/// The newest image version every shard has applied.
pub fn applied_everywhere() -> u64 {
    APPLIED_EVERYWHERE.load(Ordering::SeqCst)
}

/// Waits until every shard's image has reached `version` (a change the
/// controller committed), for at most `limit`.
pub async fn wait_for_version(version: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while APPLIED_EVERYWHERE.load(Ordering::SeqCst) < version {
        if Instant::now() >= deadline {
            return false;
        }
        crate::io::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// One-time import of a single-node data directory written before the
/// metadata quorum existed (`topics.meta`): every topic becomes a topic of
/// replication factor 1 on this broker, keeping its id and configs.
pub async fn import_topic_table() {
    let c = ctx();
    let path = c.config.data_dir.join(crate::cluster::topics::TABLE_FILE);
    if !path.exists() {
        return;
    }
    let table = match TopicTable::load(&c.config.data_dir, &c.config.props) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the old topic table; not importing it");
            return;
        }
    };
    let node = c.config.node_id;
    let image = c.image();
    let creates: Vec<crate::cluster::controller::CreateTopic> = table
        .topics
        .values()
        .filter(|m| !image.topics.contains_key(&m.name))
        .map(|m| crate::cluster::controller::CreateTopic {
            name: m.name.clone(),
            partitions: m.partitions,
            replication_factor: 1,
            assignments: Some(vec![vec![node]; m.partitions as usize]),
            configs: m.overrides.clone().into_iter().collect::<BTreeMap<_, _>>(),
            id: Some(m.id.as_u128()),
        })
        .collect();
    let n = creates.len();
    if n > 0 {
        match controller_call(move |cl| cl.create_topics(creates, false)).await {
            Ok(reply) => {
                wait_for_version(reply.version, Duration::from_secs(10)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "importing the old topic table failed");
                return;
            }
        }
    }
    let done = path.with_extension("meta.imported");
    if let Err(e) = std::fs::rename(&path, &done) {
        tracing::warn!(error = %e, "renaming the imported topic table failed");
    }
    tracing::info!(
        topics = n,
        "imported the single-node topic table into the metadata log"
    );
}
