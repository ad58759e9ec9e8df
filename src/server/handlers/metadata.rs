//! Metadata: this broker, and the topics asked for (auto-created when the
//! client allows it and `auto.create.topics.enable` is on).

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::{admin, reply};
use crate::cluster::topics::validate_name;
use crate::protocol::{RequestFrame, ResponseError, StrBytes};
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: MetadataRequest) -> anyhow::Result<Response> {
    let c = ctx();
    let node = c.config.node_id;
    let v = frame.api_version;
    let allow_auto = frame.api_version < 4 || req.allow_auto_topic_creation;
    let names: Vec<String> = match &req.topics {
        None => c.topics().topics.keys().cloned().collect(),
        Some(t) if t.is_empty() && frame.api_version == 0 => {
            c.topics().topics.keys().cloned().collect()
        }
        Some(t) => t
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
            .collect(),
    };
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        if validate_name(&name).is_err() {
            topics.push(error_topic(
                &name,
                ResponseError::InvalidTopicException.code(),
            ));
            continue;
        }
        if c.topic(&name).is_none() && !(allow_auto && admin::auto_create(&name).await) {
            topics.push(error_topic(
                &name,
                ResponseError::UnknownTopicOrPartition.code(),
            ));
            continue;
        }
        let Some(meta) = c.topic(&name) else {
            topics.push(error_topic(
                &name,
                ResponseError::UnknownTopicOrPartition.code(),
            ));
            continue;
        };
        let partitions = (0..meta.partitions)
            .map(|p| {
                MetadataResponsePartition::default()
                    .with_partition_index(p)
                    .with_leader_id(BrokerId(node))
                    .with_leader_epoch(if v >= 7 { 0 } else { -1 })
                    .with_replica_nodes(vec![BrokerId(node)])
                    .with_isr_nodes(vec![BrokerId(node)])
            })
            .collect();
        topics.push(
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                .with_topic_id(if v >= 10 { meta.id } else { uuid::Uuid::nil() })
                .with_is_internal(v >= 1 && name.starts_with("__"))
                .with_partitions(partitions),
        );
    }
    let advertise = c.config.advertise;
    let body = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(node))
            .with_host(StrBytes::from_string(advertise.ip().to_string()))
            .with_port(i32::from(advertise.port()))])
        .with_cluster_id((v >= 2).then(|| StrBytes::from_string(c.cluster_id.clone())))
        .with_controller_id(BrokerId(if v >= 1 { node } else { -1 }))
        .with_topics(topics);
    reply(frame, &body)
}

fn error_topic(name: &str, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_error_code(code)
}
