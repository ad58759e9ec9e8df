//! Fetch: read each partition on its owning shard, which returns a file
//! region (never the bytes); long-poll until `min_bytes` or `max_wait_ms`,
//! woken by appends; the writer sends the regions with sendfile. The first
//! batch is returned whole even if it is larger than the limits (KIP-74).

use std::time::{Duration, Instant};

use kafka_protocol::messages::FetchRequest;

use super::{error_code, PartitionError};
use crate::model::{limits, PartitionId, TopicPartition};
use crate::protocol::fetch::{encode_fetch_response, FetchPartitionOut, FetchTopicOut};
use crate::protocol::{RequestFrame, ResponseError};
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;
use crate::storage::ReadSlice;

struct Want {
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    current_leader_epoch: i32,
}

struct Got {
    error: i16,
    high_watermark: i64,
    log_start: i64,
    slice: Option<ReadSlice>,
}

pub async fn handle(frame: &RequestFrame, req: FetchRequest) -> anyhow::Result<Response> {
    // A broker id here is a follower replicating; -1 is a consumer.
    let replica_id = req.replica_id.0;
    let mut wants = Vec::new();
    let mut shape = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.topic.to_string();
        shape.push((name.clone(), t.partitions.len()));
        for p in &t.partitions {
            wants.push(Want {
                topic: name.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                current_leader_epoch: if frame.api_version >= 9 {
                    p.current_leader_epoch
                } else {
                    -1
                },
            });
        }
    }
    let wait_ms = req.max_wait_ms.clamp(0, limits::fetch_wait_ms_max);
    let deadline = Instant::now() + Duration::from_millis(wait_ms as u64);
    let min_bytes = req.min_bytes.max(0) as u64;
    let max_bytes = if req.max_bytes <= 0 {
        i32::MAX
    } else {
        req.max_bytes
    } as u64;
    let gots = loop {
        let gots = read_all(&wants, max_bytes, replica_id).await;
        let total: u64 = gots
            .iter()
            .filter_map(|g| g.slice.as_ref())
            .map(|s| u64::from(s.len))
            .sum();
        let any_error = gots.iter().any(|g| g.error != 0);
        let enough = total >= min_bytes && (total > 0 || min_bytes == 0);
        if enough || any_error || Instant::now() >= deadline || wants.is_empty() {
            break gots;
        }
        // Wait for an append past what this read saw (not past the fetch
        // offset: data below min_bytes would wake us at once, forever).
        let seen: Vec<i64> = gots
            .iter()
            .zip(&wants)
            .map(|(g, w)| {
                if replica_id >= 0 {
                    w.offset
                } else {
                    g.high_watermark.max(w.offset)
                }
            })
            .collect();
        wait_any(&wants, &seen, deadline, replica_id >= 0).await;
        if Instant::now() >= deadline {
            break read_all(&wants, max_bytes, replica_id).await;
        }
    };
    let mut topics = Vec::with_capacity(shape.len());
    let mut slices = Vec::with_capacity(gots.len());
    let mut it = wants.iter().zip(gots);
    for (name, n) in shape {
        let mut partitions = Vec::with_capacity(n);
        for (w, g) in it.by_ref().take(n) {
            partitions.push(FetchPartitionOut {
                partition: w.partition,
                error_code: g.error,
                high_watermark: g.high_watermark,
                last_stable_offset: g.high_watermark,
                log_start_offset: g.log_start,
                records_len: g.slice.as_ref().map_or(0, |s| s.len),
            });
            slices.push(g.slice);
        }
        topics.push(FetchTopicOut { name, partitions });
    }
    let pieces = encode_fetch_response(frame.api_version, frame.correlation_id, 0, 0, &topics);
    Ok(Response::Fetch { pieces, slices })
}

/// Reads every wanted partition; the response-wide `max_bytes` caps the
/// total, except that the first non-empty partition always gets its batch.
async fn read_all(wants: &[Want], max_bytes: u64, replica_id: i32) -> Vec<Got> {
    let c = ctx();
    let reads = wants.iter().map(|w| {
        let known = c
            .topic(&w.topic)
            .is_some_and(|m| (0..m.partitions).contains(&w.partition));
        let tp = TopicPartition {
            topic: w.topic.clone(),
            partition: PartitionId(w.partition),
        };
        let owner = c.owner(&w.topic, w.partition);
        let (offset, part_max) = (w.offset, w.max_bytes.max(0) as u32);
        let epoch = w.current_leader_epoch;
        async move {
            if !known {
                return Err(PartitionError::UnknownTopicOrPartition);
            }
            run_on(owner, move || async move {
                read_local(&tp, offset, part_max, replica_id, epoch)
            })
            .await
            .map_err(PartitionError::from)
            .and_then(|r| r)
        }
    });
    let results = futures::future::join_all(reads).await;
    let mut budget = max_bytes;
    let mut first = true;
    results
        .into_iter()
        .map(|r| match r {
            Ok(mut g) => {
                if let Some(s) = g.slice.take() {
                    let len = u64::from(s.len);
                    if first || len <= budget {
                        budget = budget.saturating_sub(len);
                        first = false;
                        g.slice = Some(s);
                    }
                }
                g
            }
            Err(e) => Got {
                error: error_code(&e),
                high_watermark: -1,
                log_start: -1,
                slice: None,
            },
        })
        .collect()
}

/// Runs on the owning shard, which must lead the partition. Consumers read
/// up to the high watermark, followers up to the log end.
fn read_local(
    tp: &TopicPartition,
    offset: i64,
    max_bytes: u32,
    replica_id: i32,
    current_leader_epoch: i32,
) -> Result<Got, PartitionError> {
    let log = if replica_id >= 0 {
        crate::replication::follower_fetch(tp, replica_id, offset, current_leader_epoch)?
    } else {
        crate::replication::leader_log(tp, current_leader_epoch)?
    };
    let high_watermark = log.high_watermark();
    let log_start = log.log_start_offset();
    let up_to = if replica_id >= 0 {
        log.log_end_offset()
    } else {
        high_watermark
    };
    match log.read(offset, max_bytes, up_to) {
        Ok(slice) => Ok(Got {
            error: 0,
            high_watermark,
            log_start,
            slice,
        }),
        Err(e) => {
            let code = error_code(&PartitionError::Storage(e));
            if code == ResponseError::OffsetOutOfRange.code() {
                return Ok(Got {
                    error: code,
                    high_watermark,
                    log_start,
                    slice: None,
                });
            }
            Err(PartitionError::Storage(crate::storage::StorageError::Io(
                format!("read: {code}"),
            )))
        }
    }
}

/// Waits until any wanted partition grows past what the last read saw, or
/// the deadline.
async fn wait_any(wants: &[Want], seen: &[i64], deadline: Instant, follower: bool) {
    let c = ctx();
    let waits = wants.iter().zip(seen).filter_map(|(w, &seen)| {
        c.topic(&w.topic)
            .filter(|m| (0..m.partitions).contains(&w.partition))?;
        let tp = TopicPartition {
            topic: w.topic.clone(),
            partition: PartitionId(w.partition),
        };
        let owner = c.owner(&w.topic, w.partition);
        Some(Box::pin(run_on(owner, move || async move {
            let Some(log) = ctx().partition(&tp) else {
                return;
            };
            let mark = if follower {
                log.log_end_offset()
            } else {
                log.high_watermark()
            };
            if mark > seen {
                return;
            }
            let rx = log.on_append();
            let left = deadline.saturating_duration_since(Instant::now());
            futures::future::select(rx, Box::pin(crate::io::sleep(left))).await;
        })))
    });
    let waits: Vec<_> = waits.collect();
    if waits.is_empty() {
        crate::io::sleep(deadline.saturating_duration_since(Instant::now())).await;
        return;
    }
    let timeout = Box::pin(crate::io::sleep(
        deadline.saturating_duration_since(Instant::now()),
    ));
    futures::future::select(futures::future::select_all(waits), timeout).await;
}
