//! Topic changes. The controller quorum owns the metadata: every change
//! is checked here for what this broker can judge (names, configs,
//! internal topics, `delete.topic.enable`), sent to the active controller,
//! and answered once this broker's own metadata image includes it, so a
//! client that asks for Metadata next sees the change.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cluster::controller::{AdminReply, CreateTopic, TopicConfigChange};
use crate::cluster::topics::{validate_name, Refusal};
use crate::config::topic_config;
use crate::protocol::ResponseError;
use crate::server::agent::{controller_call, wait_for_version};
use crate::server::context::ctx;

/// One requested change.
#[derive(Clone, Debug)]
pub enum TopicChange {
    Create {
        name: String,
        partitions: i32,
        /// -1: `default.replication.factor`.
        replication_factor: i16,
        /// Explicit replica lists, one per partition.
        assignments: Option<Vec<Vec<i32>>>,
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

fn refusal(e: ResponseError, message: impl Into<String>) -> Refusal {
    Refusal {
        code: e.code(),
        message: message.into(),
    }
}

/// Checks what the broker can check alone.
fn precheck(change: &TopicChange) -> Result<(), Refusal> {
    let c = ctx();
    match change {
        TopicChange::Create { name, configs, .. } => {
            validate_name(name)?;
            topic_config(&c.config.props, configs)
                .map_err(|e| refusal(ResponseError::InvalidConfig, e.to_string()))?;
            Ok(())
        }
        TopicChange::Delete { name } if name == crate::group::OFFSETS_TOPIC => Err(refusal(
            ResponseError::InvalidTopicException,
            format!("{name} is an internal topic and cannot be deleted"),
        )),
        TopicChange::Delete { name } if c.config.prop("delete.topic.enable") == Some("false") => {
            Err(refusal(
                ResponseError::TopicDeletionDisabled,
                format!("delete.topic.enable is false; {name} was not deleted"),
            ))
        }
        TopicChange::Delete { .. } | TopicChange::AddPartitions { .. } => Ok(()),
    }
}

/// Applies changes in order through the controller; one result per change.
/// `validate_only` checks without applying.
pub async fn change_topics(
    changes: Vec<TopicChange>,
    validate_only: bool,
) -> Vec<Result<(), Refusal>> {
    let mut results: Vec<Option<Result<(), Refusal>>> = Vec::with_capacity(changes.len());
    let mut creates = Vec::new();
    let mut deletes = Vec::new();
    let mut grows = Vec::new();
    for (i, ch) in changes.iter().enumerate() {
        if let Err(e) = precheck(ch) {
            results.push(Some(Err(e)));
            continue;
        }
        results.push(None);
        match ch.clone() {
            TopicChange::Create {
                name,
                partitions,
                replication_factor,
                assignments,
                configs,
            } => creates.push((
                i,
                CreateTopic {
                    name,
                    partitions,
                    replication_factor,
                    assignments,
                    configs,
                    id: None,
                },
            )),
            TopicChange::Delete { name } => deletes.push((i, name)),
            TopicChange::AddPartitions { name, count } => grows.push((i, (name, count))),
        }
    }
    let mut version = 0;
    let mut settle = |idx: Vec<usize>, reply: anyhow::Result<AdminReply>| match reply {
        Ok(r) => {
            version = version.max(r.version);
            for (i, res) in idx.into_iter().zip(r.results) {
                results[i] = Some(res.map_err(|(code, message)| Refusal { code, message }));
            }
        }
        Err(e) => {
            for i in idx {
                results[i] = Some(Err(refusal(
                    ResponseError::NotController,
                    format!("controller quorum unreachable: {e}"),
                )));
            }
        }
    };
    if !creates.is_empty() {
        let (idx, reqs): (Vec<usize>, Vec<CreateTopic>) = creates.into_iter().unzip();
        let r = controller_call(move |c| c.create_topics(reqs, validate_only)).await;
        settle(idx, r);
    }
    if !deletes.is_empty() {
        let (idx, names): (Vec<usize>, Vec<String>) = deletes.into_iter().unzip();
        let r = controller_call(move |c| c.delete_topics(names)).await;
        settle(idx, r);
    }
    if !grows.is_empty() {
        let (idx, reqs): (Vec<usize>, Vec<(String, i32)>) = grows.into_iter().unzip();
        let r = controller_call(move |c| c.create_partitions(reqs, validate_only)).await;
        settle(idx, r);
    }
    if version > 0 && !validate_only && !wait_for_version(version, Duration::from_secs(10)).await {
        tracing::warn!(
            version,
            "metadata change committed but not yet seen by this broker"
        );
    }
    results
        .into_iter()
        .map(|r| r.expect("every change answered"))
        .collect()
}

/// ConfigResource type of a topic (2) and a broker (4).
pub const TOPIC_RESOURCE: i8 = 2;
const BROKER_RESOURCE: i8 = 4;

/// The refusal for a config resource that is not a topic.
pub fn refuse_resource(resource_type: i8) -> Refusal {
    let message = if resource_type == BROKER_RESOURCE {
        "broker configs are static in corelog: set them at startup (--config, --set)".to_string()
    } else {
        format!("resource type {resource_type} has no alterable configs")
    };
    refusal(ResponseError::InvalidRequest, message)
}

/// One outcome per config resource of a request: its early refusal, or the
/// result of its change (the changes are the resources without a refusal,
/// in order).
pub async fn settle_resources(
    early: Vec<Option<Refusal>>,
    changes: Vec<TopicConfigChange>,
    validate_only: bool,
) -> Vec<Result<(), Refusal>> {
    let mut results = alter_topic_configs(changes, validate_only)
        .await
        .into_iter();
    early
        .into_iter()
        .map(|pre| match pre {
            Some(e) => Err(e),
            None => results.next().expect("one result per change"),
        })
        .collect()
}

/// Topic config override changes through the controller, validated here
/// against the merged result first (INVALID_CONFIG, UNKNOWN_TOPIC_OR_PARTITION).
async fn alter_topic_configs(
    changes: Vec<TopicConfigChange>,
    validate_only: bool,
) -> Vec<Result<(), Refusal>> {
    let c = ctx();
    let table = c.topics();
    let mut results: Vec<Option<Result<(), Refusal>>> = Vec::with_capacity(changes.len());
    let mut send = Vec::new();
    for (i, ch) in changes.into_iter().enumerate() {
        let Some(meta) = table.get(&ch.topic) else {
            results.push(Some(Err(refusal(
                ResponseError::UnknownTopicOrPartition,
                format!("unknown topic {}", ch.topic),
            ))));
            continue;
        };
        let mut merged = if ch.replace_all {
            BTreeMap::new()
        } else {
            meta.overrides.clone()
        };
        merged.extend(ch.set.clone());
        for k in &ch.remove {
            merged.remove(k);
        }
        if let Err(e) = topic_config(&c.config.props, &merged) {
            results.push(Some(Err(refusal(
                ResponseError::InvalidConfig,
                e.to_string(),
            ))));
            continue;
        }
        results.push(None);
        if !validate_only {
            send.push((i, ch));
        }
    }
    if !send.is_empty() {
        let (idx, reqs): (Vec<usize>, Vec<TopicConfigChange>) = send.into_iter().unzip();
        match controller_call(move |cl| cl.alter_topic_configs(reqs)).await {
            Ok(r) => {
                for (i, res) in idx.into_iter().zip(r.results) {
                    results[i] = Some(res.map_err(|(code, message)| Refusal { code, message }));
                }
                if !wait_for_version(r.version, Duration::from_secs(10)).await {
                    tracing::warn!(
                        version = r.version,
                        "config change committed but not yet seen by this broker"
                    );
                }
            }
            Err(e) => {
                for i in idx {
                    results[i] = Some(Err(refusal(
                        ResponseError::NotController,
                        format!("controller quorum unreachable: {e}"),
                    )));
                }
            }
        }
    }
    results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
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
        replication_factor: -1,
        assignments: None,
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

/// `offsets.topic.replication.factor`; a single-node broker (no controller
/// voters configured) uses 1, as Kafka's single-node quickstart does.
fn offsets_replication_factor() -> i16 {
    let c = ctx();
    if c.config.prop("corelog.single.node") == Some("true") {
        return 1;
    }
    c.config
        .prop("offsets.topic.replication.factor")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// Creates `__consumer_offsets` if it does not exist yet (compacted,
/// `offsets.topic.num.partitions`, `offsets.topic.segment.bytes`,
/// `offsets.topic.replication.factor`).
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
        replication_factor: offsets_replication_factor(),
        assignments: None,
        configs,
    };
    if let Err(e) = &change_topics(vec![change], false).await[0] {
        if e.code != ResponseError::TopicAlreadyExists.code() {
            tracing::warn!(error = %e.message, "cannot create the group metadata topic yet");
        }
    }
    c.topic(crate::group::OFFSETS_TOPIC).is_some()
}
