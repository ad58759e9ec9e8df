//! Produce: validate each partition's batches on the connection's shard
//! (size, magic, CRC), then append on the owning shard, which must be the
//! partition leader. acks=1 answers once the bytes are written; acks=all
//! also waits for the topic's durability (fsync with group commit unless
//! `flush.on.ack.all=false`) and for the high watermark to cover the batch
//! (every ISR member has it); acks=0 sends nothing back.

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{error_code, reply, PartitionError};
use crate::model::{PartitionId, TopicPartition};
use crate::protocol::batch::{self, BatchError};
use crate::protocol::{RequestFrame, ResponseError, StrBytes};
use crate::replication::{self, Acks};
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;
use crate::storage::Appended;

struct PartOut {
    index: i32,
    result: Result<Appended, i16>,
    message: Option<String>,
    log_start: i64,
}

pub async fn handle(frame: &RequestFrame, req: ProduceRequest) -> anyhow::Result<Response> {
    let acks = req.acks;
    let timeout = std::time::Duration::from_millis(req.timeout_ms.clamp(0, 3_600_000) as u64);
    let version = frame.api_version;
    let c = ctx();
    let mut topics_out = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.to_string();
        let meta = c.topic(&name);
        let mut waits = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let index = p.index;
            let early = |code: ResponseError, msg: Option<String>| {
                futures::future::Either::Left(futures::future::ready(PartOut {
                    index,
                    result: Err(code.code()),
                    message: msg,
                    log_start: -1,
                }))
            };
            if !matches!(acks, -1..=1) {
                waits.push(early(ResponseError::InvalidRequiredAcks, None));
                continue;
            }
            let Some(meta) = meta.as_ref().filter(|m| (0..m.partitions).contains(&index)) else {
                waits.push(early(ResponseError::UnknownTopicOrPartition, None));
                continue;
            };
            let Some(records) = p.records else {
                waits.push(early(
                    ResponseError::CorruptMessage,
                    Some("no records".into()),
                ));
                continue;
            };
            let spans = match batch::validate(&records, meta.config.max_message_bytes as usize) {
                Ok(s) => s,
                Err(e) => {
                    let code = match e {
                        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
                        _ => ResponseError::CorruptMessage,
                    };
                    tracing::debug!(topic = %name, partition = index, error = %e, "produce rejected");
                    waits.push(early(code, Some(e.to_string())));
                    continue;
                }
            };
            let tp = TopicPartition {
                topic: name.clone(),
                partition: PartitionId(index),
            };
            let owner = c.owner(&name, index);
            let acks = Acks::from_kafka(acks).expect("checked above");
            waits.push(futures::future::Either::Right(async move {
                let r = run_on(owner, move || {
                    append_local(tp, records, spans, acks, timeout)
                })
                .await;
                let r = r.map_err(PartitionError::from).and_then(|x| x);
                match r {
                    Ok((a, log_start)) => PartOut {
                        index,
                        result: Ok(a),
                        message: None,
                        log_start,
                    },
                    Err(e) => PartOut {
                        index,
                        result: Err(error_code(&e)),
                        message: Some(match e {
                            PartitionError::Code(_, Some(m)) => m,
                            e => format!("{e:?}"),
                        }),
                        log_start: -1,
                    },
                }
            }));
        }
        let outs = futures::future::join_all(waits).await;
        topics_out.push((topic.name, outs));
    }
    if acks == 0 {
        return Ok(Response::None);
    }
    let responses = topics_out
        .into_iter()
        .map(|(name, outs)| {
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(
                    outs.into_iter()
                        .map(|o| {
                            let mut r = PartitionProduceResponse::default()
                                .with_index(o.index)
                                .with_log_start_offset(if version >= 5 { o.log_start } else { -1 });
                            match o.result {
                                Ok(a) => {
                                    r = r
                                        .with_base_offset(a.base_offset)
                                        .with_log_append_time_ms(a.log_append_time);
                                }
                                Err(code) => {
                                    r = r
                                        .with_error_code(code)
                                        .with_base_offset(-1)
                                        .with_error_message(
                                            o.message
                                                .filter(|_| version >= 8)
                                                .map(StrBytes::from_string),
                                        );
                                }
                            }
                            r
                        })
                        .collect(),
                )
        })
        .collect();
    reply(frame, &ProduceResponse::default().with_responses(responses))
}

/// Runs on the owning shard (the partition leader).
async fn append_local(
    tp: TopicPartition,
    records: Bytes,
    spans: Vec<batch::BatchSpan>,
    acks: Acks,
    timeout: std::time::Duration,
) -> Result<(Appended, i64), PartitionError> {
    let appended = replication::append_leader(&tp, records, spans, acks, timeout).await?;
    let log_start = ctx().partition(&tp).map_or(-1, |l| l.log_start_offset());
    Ok((appended, log_start))
}
