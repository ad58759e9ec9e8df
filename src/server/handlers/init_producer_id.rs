//! InitProducerId for idempotent producers: shard 0 hands out producer ids
//! from blocks reserved in `producer-id-block` (written before any id of a
//! block is used, so ids are never reused after a crash), in a range of its
//! own per broker so ids are unique across the cluster. A producer that
//! passes its current id and epoch (v3+, KIP-360) gets the epoch bumped.
//! Transactional ids are not supported yet: COORDINATOR_NOT_AVAILABLE.

use std::cell::Cell;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::reply;
use crate::io::file;
use crate::model::ShardId;
use crate::protocol::{RequestFrame, ResponseError};
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;

/// Ids reserved per write of `producer-id-block`.
const BLOCK_IDS: i64 = 1000;
const BLOCK_FILE: &str = "producer-id-block";

thread_local! {
    /// (next id, end of the reserved block); shard 0 only.
    static IDS: Cell<(i64, i64)> = const { Cell::new((-1, -1)) };
}

/// Runs on shard 0.
fn allocate() -> Result<i64, String> {
    let (mut next, mut end) = IDS.with(|c| c.get());
    if next < 0 {
        let dir = &ctx().config.data_dir;
        let saved: i64 = std::fs::read_to_string(dir.join(BLOCK_FILE))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        next = saved;
        end = saved;
    }
    if next >= end {
        end = next + BLOCK_IDS;
        let dir = &ctx().config.data_dir;
        file::write_atomic(&dir.join(BLOCK_FILE), end.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
    }
    IDS.with(|c| c.set((next + 1, end)));
    Ok(cluster_unique(ctx().config.node_id, next))
}

/// Each broker allocates from its own range: the node id in the high bits,
/// the broker's own counter in the low 40, so no two brokers of a cluster
/// ever hand out the same producer id (node ids are below 2^22, checked at
/// startup).
fn cluster_unique(node_id: i32, local: i64) -> i64 {
    (i64::from(node_id) << 40) | (local & ((1 << 40) - 1))
}

pub async fn handle(frame: &RequestFrame, req: InitProducerIdRequest) -> anyhow::Result<Response> {
    let mut body = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        return reply(
            frame,
            &body.with_error_code(ResponseError::CoordinatorNotAvailable.code()),
        );
    }
    let bump = frame.api_version >= 3 && req.producer_id.0 >= 0 && req.producer_epoch >= 0;
    if bump && req.producer_epoch < i16::MAX - 1 {
        body = body
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
        return reply(frame, &body);
    }
    match run_on(ShardId(0), || async { allocate() }).await {
        Ok(Ok(id)) => body = body.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reserving producer ids failed");
            body = body.with_error_code(ResponseError::KafkaStorageError.code());
        }
        Err(_) => body = body.with_error_code(ResponseError::CoordinatorNotAvailable.code()),
    }
    reply(frame, &body)
}
