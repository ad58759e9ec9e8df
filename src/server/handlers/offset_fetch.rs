//! OffsetFetch: committed offsets of one group (v1-7) or of several (v8+),
//! each answered by its coordinator shard. -1 where nothing is committed.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{admin, reply};
use crate::group::coordinator;
use crate::group::state::Committed;
use crate::protocol::{RequestFrame, StrBytes};
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;

type Wanted = Option<Vec<(String, Vec<i32>)>>;

async fn fetch_group(group: String, wanted: Wanted) -> Result<Vec<(String, i32, Committed)>, i16> {
    let owner = ctx().group_owner(&group);
    run_on(owner, move || async move {
        coordinator().fetch_offsets(&group, wanted.as_deref())
    })
    .await
    .unwrap_or(Err(crate::group::coordinator::COORDINATOR_NOT_AVAILABLE))
}

/// Groups rows by topic, keeping first-seen order.
fn by_topic(rows: Vec<(String, i32, Committed)>) -> Vec<(String, Vec<(i32, Committed)>)> {
    let mut out: Vec<(String, Vec<(i32, Committed)>)> = Vec::new();
    for (t, p, c) in rows {
        match out.iter_mut().find(|(n, _)| *n == t) {
            Some((_, v)) => v.push((p, c)),
            None => out.push((t, vec![(p, c)])),
        }
    }
    out
}

pub async fn handle(frame: &RequestFrame, req: OffsetFetchRequest) -> anyhow::Result<Response> {
    let v = frame.api_version;
    admin::ensure_offsets_topic().await;
    if v >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in &req.groups {
            let wanted: Wanted = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            groups.push(match fetch_group(g.group_id.to_string(), wanted).await {
                Err(code) => out.with_error_code(code),
                Ok(rows) => out.with_topics(
                    by_topic(rows)
                        .into_iter()
                        .map(|(t, ps)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(StrBytes::from_string(t)))
                                .with_partitions(
                                    ps.into_iter()
                                        .map(|(p, c)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(c.offset)
                                                .with_committed_leader_epoch(c.leader_epoch)
                                                .with_metadata(Some(StrBytes::from_string(
                                                    c.metadata,
                                                )))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            });
        }
        return reply(frame, &OffsetFetchResponse::default().with_groups(groups));
    }
    let wanted: Wanted = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let body = match fetch_group(req.group_id.to_string(), wanted).await {
        Err(code) => {
            let b = OffsetFetchResponse::default();
            if v >= 2 {
                b.with_error_code(code)
            } else {
                b
            }
        }
        Ok(rows) => OffsetFetchResponse::default().with_topics(
            by_topic(rows)
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t)))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, c)| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(c.offset)
                                        .with_committed_leader_epoch(if v >= 5 {
                                            c.leader_epoch
                                        } else {
                                            -1
                                        })
                                        .with_metadata(Some(StrBytes::from_string(c.metadata)))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    };
    reply(frame, &body)
}
