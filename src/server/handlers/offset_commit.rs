//! OffsetCommit: validated here (unknown topics and partitions), committed
//! durably by the group's coordinator shard.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{admin, reply};
use crate::group::coordinator;
use crate::group::coordinator::CommitPartition;
use crate::protocol::{RequestFrame, ResponseError};
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: OffsetCommitRequest) -> anyhow::Result<Response> {
    let c = ctx();
    admin::ensure_offsets_topic().await;
    let mut parts = Vec::new();
    for t in &req.topics {
        let name = t.name.to_string();
        let known = c.topic(&name).map(|m| m.partitions);
        for p in &t.partitions {
            let ok = known.is_some_and(|n| (0..n).contains(&p.partition_index));
            parts.push(CommitPartition {
                topic: name.clone(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|s| s.to_string()),
                error: if ok {
                    0
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                },
            });
        }
    }
    let group = req.group_id.to_string();
    let member = req.member_id.to_string();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = req.generation_id_or_member_epoch;
    let owner = c.group_owner(&group);
    let parts = run_on(owner, move || async move {
        let mut parts = parts;
        coordinator()
            .commit(&group, generation, &member, instance.as_deref(), &mut parts)
            .await;
        parts
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut it = parts.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let r = it.next().expect("one result per partition");
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(r.error)
                        })
                        .collect(),
                )
        })
        .collect();
    reply(frame, &OffsetCommitResponse::default().with_topics(topics))
}
