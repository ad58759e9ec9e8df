//! Topic changes. Shard 0 is the single writer of the topic table: every
//! change runs there under one permit, is persisted, and is then broadcast
//! to every shard, which opens or deletes the partitions it owns.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::cluster::topics::{Refusal, TopicTable};
use crate::model::ShardId;
use crate::protocol::ResponseError;
use crate::runtime::{self, run_on};
use crate::server::context::ctx;

thread_local! {
    static ADMIN_PERMIT: Rc<glommio::sync::Semaphore> = Rc::new(glommio::sync::Semaphore::new(1));
}

/// One requested change to the table.
#[derive(Clone, Debug)]
pub enum TopicChange {
    Create {
        name: String,
        partitions: i32,
        configs: BTreeMap<String, String>,
    },
    Delete {
        name: String,
    },
    AddPartitions {
        name: String,
        count: i32,
    },
}

/// Applies changes in order on shard 0; returns one result per change.
/// `validate_only` checks without applying.
pub async fn change_topics(
    changes: Vec<TopicChange>,
    validate_only: bool,
) -> Vec<Result<(), Refusal>> {
    let n = changes.len();
    let result = run_on(ShardId(0), move || async move {
        apply_on_writer(changes, validate_only).await
    })
    .await;
    result.unwrap_or_else(|_| {
        (0..n)
            .map(|_| {
                Err(Refusal {
                    code: ResponseError::NotController.code(),
                    message: "metadata writer unavailable".into(),
                })
            })
            .collect()
    })
}

async fn apply_on_writer(
    changes: Vec<TopicChange>,
    validate_only: bool,
) -> Vec<Result<(), Refusal>> {
    let permit = ADMIN_PERMIT.with(|p| p.clone());
    let _guard = permit.acquire_permit(1).await;
    let c = ctx();
    let mut table: TopicTable = (*c.topics()).clone();
    let mut results = Vec::with_capacity(changes.len());
    let mut changed = false;
    for change in changes {
        let r = match change {
            TopicChange::Create {
                name,
                partitions,
                configs,
            } => {
                if validate_only {
                    table
                        .check_create(&c.config.props, &name, partitions, &configs)
                        .map(|_| ())
                } else {
                    table
                        .create(&c.config.props, &name, partitions, configs)
                        .map(|_| ())
                }
            }
            TopicChange::Delete { name } if name == crate::group::OFFSETS_TOPIC => Err(Refusal {
                code: ResponseError::InvalidTopicException.code(),
                message: format!("{name} is an internal topic and cannot be deleted"),
            }),
            TopicChange::Delete { name }
                if c.config.prop("delete.topic.enable") == Some("false") =>
            {
                Err(Refusal {
                    code: ResponseError::TopicDeletionDisabled.code(),
                    message: format!("delete.topic.enable is false; {name} was not deleted"),
                })
            }
            TopicChange::Delete { name } => {
                if validate_only {
                    table.get(&name).map(|_| ()).ok_or(Refusal {
                        code: ResponseError::UnknownTopicOrPartition.code(),
                        message: format!("unknown topic {name}"),
                    })
                } else {
                    table.delete(&name).map(|_| ())
                }
            }
            TopicChange::AddPartitions { name, count } => {
                if validate_only {
                    table.check_add_partitions(&name, count)
                } else {
                    table.add_partitions(&name, count)
                }
            }
        };
        changed |= r.is_ok() && !validate_only;
        results.push(r);
    }
    if !changed {
        return results;
    }
    if let Err(e) = table.save(&c.config.data_dir) {
        tracing::error!(error = %e, "persisting topic table failed");
        return results
            .into_iter()
            .map(|_| {
                Err(Refusal {
                    code: ResponseError::KafkaStorageError.code(),
                    message: format!("persisting metadata: {e}"),
                })
            })
            .collect();
    }
    broadcast(table).await;
    results
}

async fn broadcast(table: TopicTable) {
    let shards = runtime::shard_count();
    let mut waits = Vec::with_capacity(shards);
    for s in 0..shards {
        let t = table.clone();
        waits.push(run_on(ShardId(s), move || async move {
            if let Err(e) = ctx().apply_table(t).await {
                tracing::error!(error = %e, "applying topic table failed");
            }
        }));
    }
    for w in futures::future::join_all(waits).await {
        if w.is_err() {
            tracing::warn!("a shard missed a topic table update (shutting down)");
        }
    }
}

/// Auto-creates `name` with the broker's `num.partitions` if allowed.
/// Returns true when the topic exists afterwards.
pub async fn auto_create(name: &str) -> bool {
    let c = ctx();
    if c.topic(name).is_some() {
        return true;
    }
    if name == crate::group::OFFSETS_TOPIC {
        return ensure_offsets_topic().await;
    }
    if !c.config.auto_create_topics {
        return false;
    }
    let change = TopicChange::Create {
        name: name.to_string(),
        partitions: c.config.num_partitions,
        configs: BTreeMap::new(),
    };
    let r = change_topics(vec![change], false).await;
    match &r[0] {
        Ok(()) => tracing::info!(topic = name, "auto-created topic"),
        Err(e) if e.code == ResponseError::TopicAlreadyExists.code() => {}
        Err(e) => tracing::debug!(topic = name, error = %e.message, "auto-create refused"),
    }
    c.topic(name).is_some()
}

/// Creates `__consumer_offsets` if it does not exist yet (compacted,
/// `offsets.topic.num.partitions`, `offsets.topic.segment.bytes`).
pub async fn ensure_offsets_topic() -> bool {
    let c = ctx();
    if c.topic(crate::group::OFFSETS_TOPIC).is_some() {
        return true;
    }
    let partitions = crate::group::coordinator().config().offsets_partitions;
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert("flush.on.ack.all".to_string(), "true".to_string());
    if let Some(seg) = c.config.prop("offsets.topic.segment.bytes") {
        configs.insert("segment.bytes".to_string(), seg.to_string());
    }
    let change = TopicChange::Create {
        name: crate::group::OFFSETS_TOPIC.to_string(),
        partitions,
        configs,
    };
    let _ = change_topics(vec![change], false).await;
    c.topic(crate::group::OFFSETS_TOPIC).is_some()
}
