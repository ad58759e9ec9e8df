//! `loadgen sink`: a fake broker that answers ApiVersions, Metadata,
//! CreateTopics, DeleteTopics, ListOffsets and Produce at once, storing
//! nothing. Producing into it measures loadgen's own ceiling on this machine,
//! so a sweep can show that the generator is not what limits the broker.
//! Frames are decoded with `corelog::protocol` (the codec layer, no broker).

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::thread;

use anyhow::{bail, Result};
use bytes::Bytes;
use corelog::protocol::{self, api, RequestFrame};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::wire;

pub fn main(listen: &str, partitions: i32) -> Result<()> {
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    eprintln!("loadgen sink listening on {addr}, {partitions} partitions per topic");
    for stream in listener.incoming() {
        let stream = stream?;
        thread::spawn(move || {
            if let Err(e) = serve(stream, addr.ip().to_string(), addr.port(), partitions) {
                eprintln!("sink connection: {e:#}");
            }
        });
    }
    Ok(())
}

fn serve(mut stream: TcpStream, host: String, port: u16, partitions: i32) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, stream.try_clone()?);
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
    loop {
        let frame = match wire::read_frame(&mut reader) {
            Ok(f) => f,
            Err(_) => return Ok(()),
        };
        let req = protocol::decode_request(frame).map_err(|e| anyhow::anyhow!("{e}"))?;
        let v = req.api_version;
        let out = match ApiKey::try_from(req.api_key).map_err(|_| anyhow::anyhow!("api"))? {
            ApiKey::ApiVersions => reply(&req, &api::api_versions_response(0))?,
            ApiKey::Metadata => {
                let r: MetadataRequest = protocol::decode_body(&req.body, v)?;
                reply(&req, &metadata(&r, &host, port, partitions))?
            }
            ApiKey::CreateTopics => {
                let r: CreateTopicsRequest = protocol::decode_body(&req.body, v)?;
                let topics = r
                    .topics
                    .iter()
                    .map(|t| CreatableTopicResult::default().with_name(t.name.clone()))
                    .collect();
                reply(&req, &CreateTopicsResponse::default().with_topics(topics))?
            }
            ApiKey::DeleteTopics => {
                let r: DeleteTopicsRequest = protocol::decode_body(&req.body, v)?;
                let responses = r
                    .topic_names
                    .iter()
                    .map(|n| DeletableTopicResult::default().with_name(Some(n.clone())))
                    .collect();
                reply(
                    &req,
                    &DeleteTopicsResponse::default().with_responses(responses),
                )?
            }
            ApiKey::ListOffsets => {
                let r: ListOffsetsRequest = protocol::decode_body(&req.body, v)?;
                let topics = r
                    .topics
                    .iter()
                    .map(|t| {
                        ListOffsetsTopicResponse::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let end = offsets
                                            .get(&(t.name.to_string(), p.partition_index))
                                            .copied()
                                            .unwrap_or(0);
                                        ListOffsetsPartitionResponse::default()
                                            .with_partition_index(p.partition_index)
                                            .with_offset(if p.timestamp == -1 { end } else { 0 })
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                reply(&req, &ListOffsetsResponse::default().with_topics(topics))?
            }
            ApiKey::Produce => {
                let r: ProduceRequest = protocol::decode_body(&req.body, v)?;
                let response = produce(&r, &mut offsets);
                if r.acks == 0 {
                    continue;
                }
                reply(&req, &response)?
            }
            other => bail!("the sink does not answer {other:?}"),
        };
        stream.write_all(&out)?;
    }
}

fn reply<T: kafka_protocol::protocol::Encodable>(req: &RequestFrame, body: &T) -> Result<Bytes> {
    protocol::encode_response(req.api_key, req.api_version, req.correlation_id, body)
}

fn metadata(r: &MetadataRequest, host: &str, port: u16, partitions: i32) -> MetadataResponse {
    let names: Vec<TopicName> = r
        .topics
        .iter()
        .flatten()
        .filter_map(|t| t.name.clone())
        .collect();
    let topics = names
        .into_iter()
        .map(|name| {
            MetadataResponseTopic::default()
                .with_name(Some(name))
                .with_partitions(
                    (0..partitions)
                        .map(|p| {
                            MetadataResponsePartition::default()
                                .with_partition_index(p)
                                .with_leader_id(BrokerId(0))
                                .with_replica_nodes(vec![BrokerId(0)])
                                .with_isr_nodes(vec![BrokerId(0)])
                        })
                        .collect(),
                )
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(0))
            .with_host(StrBytes::from_string(host.to_string()))
            .with_port(i32::from(port))])
        .with_controller_id(BrokerId(0))
        .with_topics(topics)
}

fn produce(r: &ProduceRequest, offsets: &mut HashMap<(String, i32), i64>) -> ProduceResponse {
    let responses = r
        .topic_data
        .iter()
        .map(|t| {
            let parts = t
                .partition_data
                .iter()
                .map(|p| {
                    let count = p.records.as_ref().map_or(0, |b| record_count(b));
                    let next = offsets.entry((t.name.to_string(), p.index)).or_insert(0);
                    let base = *next;
                    *next += count;
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_base_offset(base)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(parts)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}

/// Records in the batches of a Produce partition (header fields only).
fn record_count(b: &[u8]) -> i64 {
    let mut pos = 0;
    let mut n = 0;
    while b.len() - pos >= crate::batch::HEADER_BYTES {
        let len = i32::from_be_bytes(b[pos + 8..pos + 12].try_into().unwrap_or_default());
        n += i64::from(i32::from_be_bytes(
            b[pos + 57..pos + 61].try_into().unwrap_or_default(),
        ));
        pos += 12 + len.max(49) as usize;
        if pos > b.len() {
            break;
        }
    }
    n
}
