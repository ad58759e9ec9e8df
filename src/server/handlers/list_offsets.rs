//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), or the first
//! record at or after a timestamp, looked up on the owning shard.

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;

use super::{error_code, on_owner, reply, PartitionError};
use crate::model::TopicPartition;
use crate::protocol::RequestFrame;
use crate::server::connection::Response;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(frame: &RequestFrame, req: ListOffsetsRequest) -> anyhow::Result<Response> {
    let version = frame.api_version;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.to_string();
        let lookups = t.partitions.iter().map(|p| {
            let index = p.partition_index;
            let ts = p.timestamp;
            let current_epoch = if version >= 4 {
                p.current_leader_epoch
            } else {
                -1
            };
            let name = name.clone();
            async move {
                let r = on_owner(&name, index, move |tp| async move {
                    lookup(&tp, ts, current_epoch)
                })
                .await;
                let out = ListOffsetsPartitionResponse::default().with_partition_index(index);
                match r {
                    Ok((offset, timestamp, epoch)) => out
                        .with_offset(offset)
                        .with_timestamp(timestamp)
                        .with_leader_epoch(if version >= 4 { epoch } else { -1 }),
                    Err(e) => out
                        .with_error_code(error_code(&e))
                        .with_offset(-1)
                        .with_timestamp(-1),
                }
            }
        });
        let partitions = futures::future::join_all(lookups).await;
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    reply(frame, &ListOffsetsResponse::default().with_topics(topics))
}

/// Runs on the owning shard (the leader): (offset, timestamp, leader
/// epoch), with -1 where none.
fn lookup(
    tp: &TopicPartition,
    ts: i64,
    current_epoch: i32,
) -> Result<(i64, i64, i32), PartitionError> {
    let log = crate::replication::leader_log(tp, current_epoch)?;
    let epoch = log.latest_epoch().unwrap_or(0);
    let (offset, timestamp) = lookup_in(&log, ts)?;
    Ok((offset, timestamp, epoch))
}

fn lookup_in(log: &crate::storage::PartitionLog, ts: i64) -> Result<(i64, i64), PartitionError> {
    match ts {
        LATEST => Ok((log.high_watermark(), -1)),
        EARLIEST => Ok((log.log_start_offset(), -1)),
        MAX_TIMESTAMP => {
            let Some(bytes) = log.max_timestamp_batch()? else {
                return Ok((-1, -1));
            };
            Ok(first_record_at_or_after(&bytes, i64::MIN, true).unwrap_or((-1, -1)))
        }
        _ => {
            let Some((base, bytes)) = log.find_by_time(ts)? else {
                return Ok((-1, -1));
            };
            Ok(first_record_at_or_after(&bytes, ts, false).unwrap_or((base, -1)))
        }
    }
}

/// Decodes one batch (decompressing if needed) and finds the first record
/// with timestamp >= `ts`, or with `max` the record with the greatest one.
fn first_record_at_or_after(bytes: &[u8], ts: i64, max: bool) -> Option<(i64, i64)> {
    let mut buf = Bytes::copy_from_slice(bytes);
    let set = RecordBatchDecoder::decode(&mut buf).ok()?;
    if max {
        return set
            .records
            .iter()
            .max_by_key(|r| (r.timestamp, -r.offset))
            .map(|r| (r.offset, r.timestamp));
    }
    set.records
        .iter()
        .find(|r| r.timestamp >= ts)
        .map(|r| (r.offset, r.timestamp))
}
