//! The shard-local broker state: config, this shard's copy of the topic
//! table, and the partition logs this shard owns. One per shard, reached
//! through a thread-local; never crosses threads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::topics::{TopicMeta, TopicTable};
use crate::config::BrokerConfig;
use crate::group::{self, GroupConfig};
use crate::model::{shard_for, PartitionId, ShardId, TopicPartition};
use crate::runtime;
use crate::storage::{self, PartitionLog};

pub struct ShardContext {
    pub shard: ShardId,
    pub shards: usize,
    pub config: Arc<BrokerConfig>,
    pub cluster_id: String,
    topics: RefCell<Arc<TopicTable>>,
    partitions: RefCell<HashMap<TopicPartition, Rc<PartitionLog>>>,
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
    pub fn install(config: Arc<BrokerConfig>, cluster_id: String, table: TopicTable) -> Rc<Self> {
        let c = Rc::new(Self {
            shard: runtime::current_shard(),
            shards: runtime::shard_count(),
            config,
            cluster_id,
            topics: RefCell::new(Arc::new(table)),
            partitions: RefCell::new(HashMap::new()),
            connections: Cell::new(0),
            sendfile_bytes: Cell::new(0),
            copied_bytes: Cell::new(0),
        });
        CTX.with(|slot| *slot.borrow_mut() = Some(c.clone()));
        group::GroupCoordinator::install(group_config(&c.config));
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

    /// Replaces the topic table copy and opens/deletes the partitions this
    /// shard owns so they match it.
    pub async fn apply_table(&self, table: TopicTable) -> anyhow::Result<()> {
        let table = Arc::new(table);
        *self.topics.borrow_mut() = table.clone();
        // Partitions of topics that are gone, or were recreated with a new id.
        let stale: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .keys()
            .filter(|tp| {
                table
                    .get(&tp.topic)
                    .is_none_or(|m| tp.partition.0 >= m.partitions)
            })
            .cloned()
            .collect();
        for tp in stale {
            if let Some(log) = self.partitions.borrow_mut().remove(&tp) {
                log.delete()?;
                tracing::info!(partition = %tp, "deleted partition");
            }
        }
        for meta in table.topics.values() {
            for p in 0..meta.partitions {
                if self.owner(&meta.name, p) != self.shard {
                    continue;
                }
                let tp = TopicPartition {
                    topic: meta.name.clone(),
                    partition: PartitionId(p),
                };
                if let Some(log) = self.partition(&tp) {
                    log.set_config(meta.config.clone());
                    continue;
                }
                let dir = storage::partition_dir(&self.config.data_dir, &tp);
                let log = PartitionLog::open(&dir, tp.clone(), meta.config.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("opening {tp}: {e}"))?;
                if meta.name == group::OFFSETS_TOPIC {
                    group::coordinator()
                        .load_partition(p, log.clone())
                        .map_err(|e| anyhow::anyhow!("loading group coordinator state: {e}"))?;
                }
                self.partitions.borrow_mut().insert(tp, log);
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

fn prop<T: std::str::FromStr>(c: &BrokerConfig, key: &str, default: T) -> T {
    c.prop(key).and_then(|v| v.parse().ok()).unwrap_or(default)
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
