//! What loadgen needs to know about a cluster: brokers and the leader of each
//! partition of one topic, from a Metadata request to any bootstrap broker;
//! topic creation (CreateTopics) and ListOffsets for consumers.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::wire::Conn;

/// Kafka error codes loadgen treats specially.
const TOPIC_ALREADY_EXISTS: i16 = 36;
const LEADER_NOT_AVAILABLE: i16 = 5;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// How long we wait for a new topic's leaders to appear.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Partition leaders of one topic and the address of every broker.
#[derive(Clone, Debug)]
pub struct TopicLayout {
    pub topic: String,
    /// partition index -> leader broker address (host:port)
    pub leaders: BTreeMap<i32, String>,
    /// every broker the cluster named (host:port)
    pub brokers: Vec<String>,
}

impl TopicLayout {
    pub fn partitions(&self) -> Vec<i32> {
        self.leaders.keys().copied().collect()
    }
}

/// Connects to the first bootstrap broker that answers.
pub fn bootstrap(brokers: &str) -> Result<Conn> {
    let mut last = None;
    for addr in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match Conn::connect(addr, "loadgen-admin") {
            Ok(conn) => return Ok(conn),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("--brokers is empty")))
}

/// Creates `topic` with `partitions` and the broker's
/// `default.replication.factor` (an existing topic is fine).
pub fn create_topic(
    conn: &mut Conn,
    topic: &str,
    partitions: i32,
    configs: &[(String, String)],
) -> Result<()> {
    create_topic_rf(conn, topic, partitions, None, configs)
}

/// [`create_topic`] with a replication factor (None: the broker's default).
pub fn create_topic_rf(
    conn: &mut Conn,
    topic: &str,
    partitions: i32,
    replication_factor: Option<i16>,
    configs: &[(String, String)],
) -> Result<()> {
    let creatable = creatable_topic(topic, partitions, replication_factor, configs);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![creatable])
        .with_timeout_ms(10_000);
    let (_, response): (_, CreateTopicsResponse) =
        conn.call_auto(ApiKey::CreateTopics, 7, &request)?;
    for t in &response.topics {
        if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
            bail!(
                "CreateTopics {topic}: error {} {}",
                t.error_code,
                t.error_message.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn creatable_topic(
    topic: &str,
    partitions: i32,
    replication_factor: Option<i16>,
    configs: &[(String, String)],
) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor.unwrap_or(-1))
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.clone()))
                        .with_value(Some(StrBytes::from_string(v.clone())))
                })
                .collect(),
        )
}

/// Metadata for `topic`, retried until every partition has a leader.
pub fn topic_layout(conn: &mut Conn, topic: &str) -> Result<TopicLayout> {
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        match try_layout(conn, topic)? {
            Some(layout) => return Ok(layout),
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            None => {
                bail!("topic {topic}: no leader for every partition after {TOPIC_READY_TIMEOUT:?}")
            }
        }
    }
}

fn try_layout(conn: &mut Conn, topic: &str) -> Result<Option<TopicLayout>> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]))
        .with_allow_auto_topic_creation(true);
    let (_, response): (_, MetadataResponse) = conn.call_auto(ApiKey::Metadata, 12, &request)?;
    let addrs: BTreeMap<BrokerId, String> = response
        .brokers
        .iter()
        .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
        .collect();
    let Some(t) = response.topics.first() else {
        return Ok(None);
    };
    match t.error_code {
        0 => {}
        LEADER_NOT_AVAILABLE | UNKNOWN_TOPIC_OR_PARTITION => return Ok(None),
        code => bail!("Metadata {topic}: error {code}"),
    }
    let mut leaders = BTreeMap::new();
    for p in &t.partitions {
        match (p.error_code, addrs.get(&p.leader_id)) {
            (0, Some(addr)) => leaders.insert(p.partition_index, addr.clone()),
            _ => return Ok(None),
        };
    }
    if leaders.is_empty() {
        return Ok(None);
    }
    Ok(Some(TopicLayout {
        topic: topic.to_string(),
        leaders,
        brokers: addrs.into_values().collect(),
    }))
}

/// ListOffsets for every partition: -2 earliest, -1 latest.
pub fn list_offsets(
    layout: &TopicLayout,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>> {
    let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for p in partitions {
        let leader = layout
            .leaders
            .get(p)
            .with_context(|| format!("partition {p} has no leader"))?;
        by_leader.entry(leader.as_str()).or_default().push(*p);
    }
    let mut out = BTreeMap::new();
    for (addr, parts) in by_leader {
        let mut conn = Conn::connect(addr, "loadgen-admin")?;
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(layout.topic.clone())))
                .with_partitions(
                    parts
                        .iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let (_, response): (_, ListOffsetsResponse) =
            conn.call_auto(ApiKey::ListOffsets, 7, &request)?;
        for t in &response.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    bail!(
                        "ListOffsets partition {}: error {}",
                        p.partition_index,
                        p.error_code
                    );
                }
                out.insert(p.partition_index, p.offset);
            }
        }
    }
    Ok(out)
}

/// Deletes `topic` (best effort: a sweep cleans up between cells).
pub fn delete_topic(conn: &mut Conn, topic: &str) -> Result<()> {
    use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
    let name = TopicName(StrBytes::from_string(topic.to_string()));
    let v = conn.versions.pick(ApiKey::DeleteTopics, 5)?;
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![name])
        .with_timeout_ms(10_000);
    let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, v, &request)?;
    for r in &response.responses {
        if r.error_code != 0 && r.error_code != UNKNOWN_TOPIC_OR_PARTITION {
            bail!("DeleteTopics {topic}: error {}", r.error_code);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creatable_topic_replication_factor() {
        let configs = vec![("min.insync.replicas".to_string(), "2".to_string())];
        let t = creatable_topic("t", 6, Some(3), &configs);
        assert_eq!(t.num_partitions, 6);
        assert_eq!(t.replication_factor, 3);
        assert_eq!(t.configs.len(), 1);
        assert_eq!(&*t.configs[0].name, "min.insync.replicas");
        assert_eq!(t.configs[0].value.as_deref(), Some("2"));
        // None: the broker's default.replication.factor
        assert_eq!(creatable_topic("t", 1, None, &[]).replication_factor, -1);
    }
}
