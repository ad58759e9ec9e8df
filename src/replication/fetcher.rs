//! The follower side: one fetcher task per (shard, leader broker). It
//! truncates each newly followed partition by OffsetsForLeaderEpoch, then
//! long-polls the leader with Fetch requests carrying this broker's id as
//! replica id, several partitions per request, and appends the returned
//! batches verbatim (offsets and leader epochs as the leader wrote them).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};

use super::peer::PeerConn;
use super::{manager, Replica};
use crate::io;
use crate::model::TopicPartition;
use crate::protocol::{api, ResponseError, StrBytes};
use crate::runtime;
use crate::storage::StorageError;

/// Identifies one fetcher incarnation (a fetcher stops when replaced).
pub struct FetcherToken {
    pub leader: i32,
    pub id: u64,
}

const FETCH_VERSION: i16 = 12;
const EPOCH_VERSION: i16 = 3;

pub async fn run(token: Rc<FetcherToken>) {
    let leader = token.leader;
    let mut conn: Option<PeerConn> = None;
    let mut failures = 0u32;
    let mut held: HashMap<TopicPartition, Instant> = HashMap::new();
    loop {
        let m = manager();
        if runtime::shutting_down() || !m.fetcher_current(&token) {
            return;
        }
        let parts = m.following(leader);
        if parts.is_empty() {
            m.retire_fetcher(&token);
            return;
        }
        let backoff = Duration::from_millis(m.config.fetch_backoff_ms.clamp(10, 5000));
        let Some(addr) = m.broker_addr(leader) else {
            io::sleep(backoff).await;
            continue;
        };
        if conn.is_none() {
            match PeerConn::connect(addr, m.node_id()).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(leader, %addr, error = %e, "replica fetcher cannot reach leader");
                    }
                    io::sleep(backoff).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        let pause = backoff.min(Duration::from_millis(200));
        // Partitions still truncating or refused a moment ago sit out; the
        // others keep fetching (one partition's trouble never stalls them).
        let now = Instant::now();
        held.retain(|_, until| *until > now);
        let truncating = parts.iter().any(|(_, _, t)| *t);
        let ready: Vec<(Rc<Replica>, i32, bool)> = parts
            .iter()
            .filter(|(r, _, t)| !*t && !held.contains_key(&r.log.tp))
            .cloned()
            .collect();
        let step = async {
            if truncating && !truncate(c, leader, &parts).await? && ready.is_empty() {
                io::sleep(pause).await;
            }
            if ready.is_empty() {
                if !truncating {
                    io::sleep(pause.min(Duration::from_millis(50))).await;
                }
                return Ok(());
            }
            for tp in fetch(c, leader, &ready).await? {
                held.insert(tp, Instant::now() + pause);
            }
            Ok::<(), anyhow::Error>(())
        };
        match step.await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(leader, error = %e, "replica fetch failed; reconnecting");
                }
                conn = None;
                io::sleep(backoff.min(Duration::from_millis(200))).await;
            }
        }
    }
}

/// Asks the leader where each partition's latest epoch ends and truncates
/// there. Returns whether the step made progress.
async fn truncate(
    c: &mut PeerConn,
    leader: i32,
    parts: &[(Rc<Replica>, i32, bool)],
) -> Result<bool> {
    let m = manager();
    let todo: Vec<&(Rc<Replica>, i32, bool)> = parts.iter().filter(|p| p.2).collect();
    let mut by_topic: HashMap<String, Vec<OffsetForLeaderPartition>> = HashMap::new();
    let mut no_epoch = Vec::new();
    for (r, epoch, _) in &todo {
        match r.log.latest_epoch() {
            Some(mine) => by_topic.entry(r.log.tp.topic.clone()).or_default().push(
                OffsetForLeaderPartition::default()
                    .with_partition(r.log.tp.partition.0)
                    .with_current_leader_epoch(*epoch)
                    .with_leader_epoch(mine),
            ),
            None => no_epoch.push((r.clone(), *epoch)),
        }
    }
    // No epoch history (an empty log, or data from before epochs were
    // kept): fall back to the high watermark, as Kafka does.
    for (r, epoch) in no_epoch {
        let hw = r.log.high_watermark();
        if r.log.log_end_offset() > hw {
            r.log.truncate_to(hw).await?;
        }
        r.set_truncated(epoch);
    }
    if by_topic.is_empty() {
        return Ok(true);
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(m.node_id()))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t)))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp: OffsetForLeaderEpochResponse = c
        .call(
            api::OFFSET_FOR_LEADER_EPOCH,
            EPOCH_VERSION,
            &req,
            Duration::from_secs(10),
        )
        .await?;
    let mut progress = false;
    for t in resp.topics {
        for p in t.partitions {
            let tp = TopicPartition {
                topic: t.topic.to_string(),
                partition: crate::model::PartitionId(p.partition),
            };
            let Some((r, epoch, _)) = todo.iter().find(|(r, _, _)| r.log.tp == tp) else {
                continue;
            };
            if !r.follows(leader, *epoch) {
                continue;
            }
            if p.error_code != 0 {
                tracing::debug!(partition = %tp, error = p.error_code, "OffsetsForLeaderEpoch refused");
                continue;
            }
            let leo = r.log.log_end_offset();
            let (target, complete) = truncation_point(&r.log, leo, p.leader_epoch, p.end_offset);
            if target < leo {
                tracing::info!(partition = %tp, from = leo, to = target, leader, leader_epoch = p.leader_epoch, "truncating to the leader's epoch end");
                r.log.truncate_to(target).await?;
            }
            // Not complete: our history diverged before the leader's epoch;
            // ask again with what is left, until it agrees (KIP-279). A round
            // that cuts nothing ends it, so ghost epochs cannot loop.
            if complete || target >= leo {
                r.set_truncated(*epoch);
            }
            progress = true;
        }
    }
    Ok(progress)
}

/// Where a follower truncates given the leader's answer (Kafka's
/// `getOffsetTruncationState`): (offset, whether truncation is complete).
fn truncation_point(
    log: &crate::storage::PartitionLog,
    leo: i64,
    leader_epoch: i32,
    leader_end: i64,
) -> (i64, bool) {
    if leader_end < 0 {
        // The leader knows nothing of our epoch: keep what is committed.
        return (log.high_watermark().min(leo), true);
    }
    if leader_epoch < 0 {
        return (leader_end.min(leo), true);
    }
    match log.end_offset_for_epoch(leader_epoch) {
        (e, _) if e < 0 => (leader_end.min(leo), true),
        (e, end) if e == leader_epoch => (leader_end.min(end).min(leo), true),
        // Our largest epoch at or below the leader's differs: cut to its
        // end here and ask again.
        (_, end) => (end.min(leo), false),
    }
}

/// One Fetch round trip: appends what came back. Returns the partitions the
/// leader refused (they back off a moment; metadata will move them).
async fn fetch(
    c: &mut PeerConn,
    leader: i32,
    parts: &[(Rc<Replica>, i32, bool)],
) -> Result<Vec<TopicPartition>> {
    let m = manager();
    let mut by_topic: HashMap<String, Vec<FetchPartition>> = HashMap::new();
    for (r, epoch, _) in parts {
        by_topic.entry(r.log.tp.topic.clone()).or_default().push(
            FetchPartition::default()
                .with_partition(r.log.tp.partition.0)
                .with_current_leader_epoch(*epoch)
                .with_fetch_offset(r.log.log_end_offset())
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(r.log.log_start_offset())
                .with_partition_max_bytes(m.config.fetch_max_bytes),
        );
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(m.node_id()))
        .with_max_wait_ms(m.config.fetch_wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(m.config.fetch_response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t)))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let wait = Duration::from_millis(m.config.fetch_wait_max_ms.max(0) as u64);
    let resp: FetchResponse = c
        .call(
            api::FETCH,
            FETCH_VERSION,
            &req,
            wait + Duration::from_secs(10),
        )
        .await?;
    if resp.error_code != 0 {
        anyhow::bail!("leader answered the fetch with error {}", resp.error_code);
    }
    let mut refused = Vec::new();
    for t in resp.responses {
        for p in t.partitions {
            let tp = TopicPartition {
                topic: t.topic.to_string(),
                partition: crate::model::PartitionId(p.partition_index),
            };
            let Some((r, epoch, _)) = parts.iter().find(|(r, _, _)| r.log.tp == tp) else {
                continue;
            };
            if !r.follows(leader, *epoch) {
                continue;
            }
            match p.error_code {
                0 => {}
                e if e == ResponseError::OffsetOutOfRange.code() => {
                    let leo = r.log.log_end_offset();
                    if p.log_start_offset > leo {
                        tracing::info!(partition = %tp, leo, leader_log_start = p.log_start_offset, "follower is behind the leader's log start: starting over");
                        r.log
                            .truncate_fully_and_start_at(p.log_start_offset)
                            .await?;
                    } else {
                        r.set_needs_truncation();
                    }
                    continue;
                }
                e => {
                    tracing::debug!(partition = %tp, error = e, leader, "leader refused follower fetch");
                    refused.push(tp);
                    continue;
                }
            }
            if let Some(records) = p.records.filter(|b| !b.is_empty()) {
                match r.log.append_replica(records).await {
                    Ok(_) => {}
                    Err(StorageError::NonContiguous { .. }) => {
                        r.set_needs_truncation();
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let hw = p.high_watermark.min(r.log.log_end_offset());
            if hw > r.log.high_watermark() {
                r.log.set_high_watermark(hw);
            }
        }
    }
    Ok(refused)
}
