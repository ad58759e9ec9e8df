//! OffsetsForLeaderEpoch: where a leader epoch ends in the leader's log.
//! Followers ask it before fetching from a new leader and truncate there;
//! consumers (librdkafka, the Java client) ask it after a leader change to
//! detect log divergence.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{error_code, on_owner, reply, PartitionError};
use crate::protocol::RequestFrame;
use crate::server::connection::Response;

pub async fn handle(
    frame: &RequestFrame,
    req: OffsetForLeaderEpochRequest,
) -> anyhow::Result<Response> {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.topic.to_string();
        let lookups = t.partitions.iter().map(|p| {
            let index = p.partition;
            let (epoch, current) = (p.leader_epoch, p.current_leader_epoch);
            let name = name.clone();
            async move {
                let r = on_owner(&name, index, move |tp| async move {
                    crate::replication::epoch_end_offset(&tp, epoch, current)
                        .map_err(PartitionError::from)
                })
                .await;
                let out = EpochEndOffset::default().with_partition(index);
                match r {
                    Ok((e, end)) => out.with_leader_epoch(e).with_end_offset(end),
                    Err(e) => out
                        .with_error_code(error_code(&e))
                        .with_leader_epoch(-1)
                        .with_end_offset(-1),
                }
            }
        });
        let partitions = futures::future::join_all(lookups).await;
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    reply(
        frame,
        &OffsetForLeaderEpochResponse::default().with_topics(topics),
    )
}
