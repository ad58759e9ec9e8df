//! The shard-local broker state: config, this shard's copy of the metadata
//! image and the topic table derived from it, and the partition replicas
//! this shard owns. One per shard, reached
//! through a thread-local; never crosses threads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::controller::ControllerClient;
use crate::cluster::metadata::MetadataImage;
use crate::cluster::topics::{TopicMeta, TopicTable};
use crate::config::BrokerConfig;
use crate::group::{self, GroupConfig};
use crate::model::{shard_for, PartitionId, ShardId, TopicPartition};
use crate::replication;
use crate::runtime;
use crate::storage::{self, PartitionLog};

pub struct ShardContext {
    pub shard: ShardId,
    pub shards: usize,
    pub config: Arc<BrokerConfig>,
    pub cluster_id: String,
    topics: RefCell<Arc<TopicTable>>,
    image: RefCell<Arc<MetadataImage>>,
    /// The controller quorum, for topic changes and ISR changes.
    pub controller: Arc<ControllerClient>,
    partitions: RefCell<HashMap<TopicPartition, Rc<PartitionLog>>>,
    /// The topic id each open partition belongs to (a topic deleted and
    /// recreated under the same name is a different topic).
    partition_topic_ids: RefCell<HashMap<TopicPartition, u128>>,
    pub connections: Cell<usize>,
    pub sendfile_bytes: Cell<u64>,
    pub copied_bytes: Cell<u64>,
}

thread_local! {
    static CTX: RefCell<Option<Rc<ShardContext>>> = const { RefCell::new(None) };
}

/// This shard's context.
pub fn ctx() -> Rc<ShardContext> {
    CTX.with(|c| c.borrow().clone())
        .expect("shard context not installed")
}

impl ShardContext {
    pub fn install(
        config: Arc<BrokerConfig>,
        cluster_id: String,
        controller: Arc<ControllerClient>,
    ) -> Rc<Self> {
        let c = Rc::new(Self {
            shard: runtime::current_shard(),
            shards: runtime::shard_count(),
            config,
            cluster_id,
            topics: RefCell::new(Arc::new(TopicTable::default())),
            image: RefCell::new(Arc::new(MetadataImage::default())),
            controller,
            partitions: RefCell::new(HashMap::new()),
            partition_topic_ids: RefCell::new(HashMap::new()),
            connections: Cell::new(0),
            sendfile_bytes: Cell::new(0),
            copied_bytes: Cell::new(0),
        });
        CTX.with(|slot| *slot.borrow_mut() = Some(c.clone()));
        group::GroupCoordinator::install(group_config(&c.config));
        replication::ReplicaManager::install(
            replication_config(&c.config),
            super::agent::alter_isr_fn(),
        );
        c
    }

    /// The shard that coordinates `group`.
    pub fn group_owner(&self, group: &str) -> ShardId {
        let partitions = group::coordinator().config().offsets_partitions;
        self.owner(
            group::OFFSETS_TOPIC,
            group::partition_for(group, partitions),
        )
    }

    pub fn topics(&self) -> Arc<TopicTable> {
        self.topics.borrow().clone()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<TopicMeta>> {
        self.topics.borrow().get(name).cloned()
    }

    pub fn owner(&self, topic: &str, partition: i32) -> ShardId {
        shard_for(topic, PartitionId(partition), self.shards)
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<Rc<PartitionLog>> {
        self.partitions.borrow().get(tp).cloned()
    }

    pub fn owned_partitions(&self) -> Vec<Rc<PartitionLog>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// The metadata image this shard acts on.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Takes a newer metadata image: replaces the topic table, opens the
    /// partitions this shard owns and this broker replicates, deletes the
    /// ones no longer assigned here, and hands every replica its role.
    pub async fn apply_image(&self, image: Arc<MetadataImage>) -> anyhow::Result<()> {
        if image.version < self.image.borrow().version {
            return Ok(());
        }
        let me = self.config.node_id;
        let table = Arc::new(TopicTable::from_image(&image, &self.config.props));
        *self.topics.borrow_mut() = table.clone();
        *self.image.borrow_mut() = image.clone();
        let rm = replication::manager();
        rm.set_brokers(
            image
                .live_brokers()
                .filter_map(|b| {
                    use std::net::ToSocketAddrs;
                    let addr = (b.host.as_str(), b.port).to_socket_addrs().ok()?.next()?;
                    Some((b.id, (addr, b.incarnation)))
                })
                .collect(),
        );
        // Partitions of topics that are gone, or no longer assigned here.
        let stale: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .keys()
            .filter(|tp| {
                let recreated = image.topics.get(&tp.topic).map(|t| t.id)
                    != self.partition_topic_ids.borrow().get(*tp).copied();
                recreated
                    || image
                        .partition(&tp.topic, tp.partition.0)
                        .is_none_or(|p| !p.replicas.contains(&me))
            })
            .cloned()
            .collect();
        for tp in stale {
            rm.remove(&tp);
            if tp.topic == group::OFFSETS_TOPIC {
                group::coordinator().unload_partition(tp.partition.0);
            }
            self.partition_topic_ids.borrow_mut().remove(&tp);
            if let Some(log) = self.partitions.borrow_mut().remove(&tp) {
                log.delete()?;
                tracing::info!(partition = %tp, "deleted partition");
            }
        }
        for (name, ti) in &image.topics {
            let Some(meta) = table.get(name) else {
                continue;
            };
            for (p, state) in ti.partitions.iter().enumerate() {
                let p = p as i32;
                if self.owner(name, p) != self.shard || !state.replicas.contains(&me) {
                    continue;
                }
                let tp = TopicPartition {
                    topic: name.clone(),
                    partition: PartitionId(p),
                };
                let log = match self.partition(&tp) {
                    Some(log) => {
                        log.set_config(meta.config.clone());
                        log
                    }
                    None => {
                        let dir = storage::partition_dir(&self.config.data_dir, &tp);
                        claim_partition_dir(&dir, &tp, ti.id)?;
                        let log = PartitionLog::open(&dir, tp.clone(), meta.config.clone())
                            .await
                            .map_err(|e| anyhow::anyhow!("opening {tp}: {e}"))?;
                        self.partitions.borrow_mut().insert(tp.clone(), log.clone());
                        self.partition_topic_ids
                            .borrow_mut()
                            .insert(tp.clone(), ti.id);
                        log
                    }
                };
                let change = rm.apply(
                    log.clone(),
                    &replication::Assignment {
                        replicas: state.replicas.clone(),
                        isr: state.isr.clone(),
                        leader: state.leader,
                        leader_epoch: state.leader_epoch,
                        partition_epoch: state.partition_epoch,
                    },
                );
                if name == group::OFFSETS_TOPIC {
                    match change {
                        Some(true) => group::coordinator()
                            .load_partition(p, log)
                            .map_err(|e| anyhow::anyhow!("loading group coordinator state: {e}"))?,
                        Some(false) => group::coordinator().unload_partition(p),
                        None => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Clean shutdown of every owned partition.
    pub async fn close_all(&self) {
        for log in self.owned_partitions() {
            if let Err(e) = log.close().await {
                tracing::error!(partition = %log.tp, error = %e, "close failed");
            }
        }
    }
}

/// Kafka's `partition.metadata`: the topic id a partition directory
/// belongs to. A directory left by a topic deleted (and recreated under the
/// same name) while this broker was down belongs to another topic: it is
/// removed before the new topic's partition opens there.
fn claim_partition_dir(
    dir: &std::path::Path,
    tp: &TopicPartition,
    topic_id: u128,
) -> anyhow::Result<()> {
    let file = dir.join("partition.metadata");
    let want = format!(
        "version: 0\ntopic_id: {}\n",
        uuid::Uuid::from_u128(topic_id)
    );
    match std::fs::read_to_string(&file) {
        Ok(have) if have == want => return Ok(()),
        Ok(have) => {
            tracing::warn!(partition = %tp, found = %have.trim().replace('\n', " "), "partition directory belongs to an older topic of the same name: removing it");
            std::fs::remove_dir_all(dir)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    std::fs::create_dir_all(dir)?;
    crate::io::file::write_atomic(&file, want.as_bytes())?;
    Ok(())
}

fn prop<T: std::str::FromStr>(c: &BrokerConfig, key: &str, default: T) -> T {
    c.prop(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Replication settings from the broker properties.
pub fn replication_config(c: &BrokerConfig) -> replication::ReplicationConfig {
    replication::ReplicationConfig {
        node_id: c.node_id,
        lag_time_max_ms: prop(c, "replica.lag.time.max.ms", 30_000),
        fetch_wait_max_ms: prop(c, "replica.fetch.wait.max.ms", 500),
        fetch_max_bytes: prop(c, "replica.fetch.max.bytes", 1 << 20),
        fetch_response_max_bytes: prop(c, "replica.fetch.response.max.bytes", 10 << 20),
        fetch_backoff_ms: prop(c, "replica.fetch.backoff.ms", 1000),
    }
}

/// Group settings from the broker properties (validated at startup).
pub fn group_config(c: &BrokerConfig) -> GroupConfig {
    GroupConfig {
        session_timeout_ms_min: prop(c, "group.min.session.timeout.ms", 6000),
        session_timeout_ms_max: prop(c, "group.max.session.timeout.ms", 1_800_000),
        initial_rebalance_delay_ms: prop(c, "group.initial.rebalance.delay.ms", 3000),
        group_size_max: prop::<i64>(c, "group.max.size", i64::from(i32::MAX)).max(1) as usize,
        offsets_partitions: prop(c, "offsets.topic.num.partitions", 50).max(1),
        offsets_retention_ms: prop::<i64>(c, "offsets.retention.minutes", 10080)
            .saturating_mul(60_000),
        offset_metadata_bytes_max: prop(c, "offset.metadata.max.bytes", 4096),
    }
}
