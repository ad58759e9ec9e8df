//! Metadata: the live brokers, and the topics asked for with each
//! partition's leader, leader epoch, replicas, ISR and offline replicas, as
//! this broker's metadata image has them (auto-created when the client
//! allows it and `auto.create.topics.enable` is on).

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
        let image = c.image();
        let Some(ti) = image.topics.get(&name) else {
            topics.push(error_topic(
                &name,
                ResponseError::UnknownTopicOrPartition.code(),
            ));
            continue;
        };
        let ids = |v: &[i32]| v.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
        let partitions = ti
            .partitions
            .iter()
            .enumerate()
            .map(|(p, st)| {
                let offline: Vec<i32> = st
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
                    .collect();
                let leader_live = image.brokers.get(&st.leader).is_some_and(|b| !b.fenced);
                let mut out = MetadataResponsePartition::default()
                    .with_partition_index(p as i32)
                    .with_leader_id(BrokerId(if leader_live { st.leader } else { -1 }))
                    .with_leader_epoch(if v >= 7 { st.leader_epoch } else { -1 })
                    .with_replica_nodes(ids(&st.replicas))
                    .with_isr_nodes(ids(&st.isr));
                if v >= 5 {
                    out = out.with_offline_replicas(ids(&offline));
                }
                if !leader_live {
                    out = out.with_error_code(ResponseError::LeaderNotAvailable.code());
                }
                out
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
    let image = c.image();
    let brokers: Vec<MetadataResponseBroker> = image
        .live_brokers()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port))
        })
        .collect();
    let controller = visible_controller(&image, node);
    let body = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id((v >= 2).then(|| StrBytes::from_string(c.cluster_id.clone())))
        .with_controller_id(BrokerId(if v >= 1 { controller } else { -1 }))
        .with_topics(topics);
    reply(frame, &body)
}

/// The controller id clients are shown. They cannot reach a controller-only
/// node, so, as Kafka's KRaft brokers do, name a live broker (the active
/// controller's own when it is one).
pub fn visible_controller(image: &crate::cluster::metadata::MetadataImage, node: i32) -> i32 {
    if image
        .brokers
        .get(&image.controller_id)
        .is_some_and(|b| !b.fenced)
    {
        image.controller_id
    } else {
        image.live_brokers().next().map_or(node, |b| b.id)
    }
}

fn error_topic(name: &str, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_error_code(code)
}
