//! Layer 1: broker and topic configuration, loaded and validated once at
//! startup. Property names are Kafka's; a TOML file holds them as
//! `"log.segment.bytes" = 1073741824` (or nested tables, flattened with dots),
//! and `--set key=value` overrides one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Durability knobs of one topic, as Kafka names them, plus corelog's
/// fsync-before-ack choice for acks=all.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: i32,
    pub cleanup_policy: String,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub message_timestamp_type: TimestampType,
    /// corelog: fsync before acknowledging an acks=all produce (`flush.on.ack.all`).
    pub flush_on_ack_all: bool,
    pub compression_type: String,
    pub min_insync_replicas: i32,
    pub unclean_leader_election: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Topic-level property names we accept, with the broker property that
/// supplies their default.
pub const TOPIC_PROPERTIES: &[(&str, &str)] = &[
    ("segment.bytes", "log.segment.bytes"),
    ("segment.ms", "log.roll.ms"),
    ("retention.ms", "log.retention.ms"),
    ("retention.bytes", "log.retention.bytes"),
    ("max.message.bytes", "message.max.bytes"),
    ("cleanup.policy", "log.cleanup.policy"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    ("flush.on.ack.all", "log.flush.on.ack.all"),
    ("compression.type", "compression.type"),
    ("min.insync.replicas", "min.insync.replicas"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
];

/// Broker properties with their defaults (Kafka's where Kafka has one).
const BROKER_DEFAULTS: &[(&str, &str)] = &[
    ("broker.id", "0"),
    ("num.partitions", "1"),
    ("default.replication.factor", "1"),
    ("auto.create.topics.enable", "true"),
    ("log.segment.bytes", "1073741824"),
    ("log.roll.ms", "604800000"),
    ("log.retention.ms", "604800000"),
    ("log.retention.bytes", "-1"),
    ("log.retention.check.interval.ms", "300000"),
    ("log.cleanup.policy", "delete"),
    ("message.max.bytes", "1048588"),
    ("socket.request.max.bytes", "104857600"),
    ("log.flush.interval.messages", "9223372036854775807"),
    ("log.flush.interval.ms", "9223372036854775807"),
    ("log.flush.scheduler.interval.ms", "1000"),
    ("log.flush.on.ack.all", "true"),
    ("log.message.timestamp.type", "CreateTime"),
    ("log.index.interval.bytes", "4096"),
    ("compression.type", "producer"),
    ("min.insync.replicas", "1"),
    ("unclean.leader.election.enable", "false"),
    ("replica.lag.time.max.ms", "30000"),
    ("replica.fetch.wait.max.ms", "500"),
    ("replica.fetch.max.bytes", "1048576"),
    ("replica.fetch.response.max.bytes", "10485760"),
    ("replica.fetch.backoff.ms", "1000"),
    ("offsets.topic.replication.factor", "3"),
    ("broker.heartbeat.interval.ms", "2000"),
    ("broker.session.timeout.ms", "9000"),
    ("controller.quorum.election.timeout.ms", "1000"),
    ("auto.leader.rebalance.enable", "true"),
    ("leader.imbalance.check.interval.seconds", "300"),
    ("max.connections", "10000"),
    ("connections.max.idle.ms", "600000"),
    // corelog: microseconds an idle shard polls before parking in io_uring
    // (0 = park at once). Spinning cuts cross-shard and I/O wake-ups from
    // ~90 us to ~17 us (benches/cross_shard_hop) at the cost of CPU.
    ("corelog.spin.before.park.us", "0"),
    ("delete.topic.enable", "true"),
    ("group.min.session.timeout.ms", "6000"),
    ("group.max.session.timeout.ms", "1800000"),
    ("group.initial.rebalance.delay.ms", "3000"),
    ("group.max.size", "2147483647"),
    ("offsets.topic.num.partitions", "50"),
    ("offsets.topic.segment.bytes", "104857600"),
    ("offsets.retention.minutes", "10080"),
    ("offsets.retention.check.interval.ms", "600000"),
    ("offset.metadata.max.bytes", "4096"),
];

/// The broker's validated configuration. Built once; shards get clones.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub data_dir: PathBuf,
    pub cores: usize,
    pub node_id: i32,
    pub props: BTreeMap<String, String>,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub socket_request_bytes_max: usize,
    pub connections_max: usize,
    pub retention_check_interval_ms: u64,
    pub flush_scheduler_interval_ms: u64,
    pub topic_defaults: TopicConfig,
}

impl BrokerConfig {
    /// Builds the config from an optional TOML file and `key=value` overrides.
    pub fn load(
        listen: SocketAddr,
        advertise: Option<SocketAddr>,
        data_dir: PathBuf,
        cores: Option<usize>,
        file: Option<&std::path::Path>,
        overrides: &[String],
    ) -> Result<Self> {
        let mut props: BTreeMap<String, String> = BROKER_DEFAULTS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let table: toml::Table =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            flatten_toml("", &table, &mut props)?;
        }
        for item in overrides {
            let (k, v) = item
                .split_once('=')
                .with_context(|| format!("--set wants key=value, got {item:?}"))?;
            props.insert(k.trim().to_string(), v.trim().to_string());
        }
        let cores_available = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = cores.unwrap_or(cores_available);
        if cores == 0 || cores > cores_available {
            bail!("--cores must be between 1 and {cores_available}, got {cores}");
        }
        let topic_defaults = topic_config(&props, &BTreeMap::new())?;
        let cfg = Self {
            listen,
            advertise: advertise.unwrap_or(listen),
            data_dir,
            cores,
            node_id: parse_prop(&props, "broker.id")?,
            num_partitions: parse_prop(&props, "num.partitions")?,
            auto_create_topics: parse_prop(&props, "auto.create.topics.enable")?,
            socket_request_bytes_max: parse_prop(&props, "socket.request.max.bytes")?,
            connections_max: parse_prop(&props, "max.connections")?,
            retention_check_interval_ms: parse_prop(&props, "log.retention.check.interval.ms")?,
            flush_scheduler_interval_ms: parse_prop(&props, "log.flush.scheduler.interval.ms")?,
            topic_defaults,
            props,
        };
        if cfg.num_partitions < 1 {
            bail!("num.partitions must be at least 1");
        }
        if cfg.socket_request_bytes_max < 64 {
            bail!("socket.request.max.bytes must be at least 64");
        }
        Ok(cfg)
    }

    /// The value of a broker property (or its default).
    pub fn prop(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }
}

fn flatten_toml(
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, String>,
) -> Result<()> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten_toml(&key, t, out)?,
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            toml::Value::Integer(i) => {
                out.insert(key, i.to_string());
            }
            toml::Value::Boolean(b) => {
                out.insert(key, b.to_string());
            }
            toml::Value::Float(f) => {
                out.insert(key, f.to_string());
            }
            other => bail!("config key {key}: unsupported value {other}"),
        }
    }
    Ok(())
}

fn parse_prop<T: std::str::FromStr>(props: &BTreeMap<String, String>, key: &str) -> Result<T> {
    let raw = props
        .get(key)
        .with_context(|| format!("missing property {key}"))?;
    raw.parse()
        .map_err(|_| anyhow::anyhow!("property {key}: cannot parse {raw:?}"))
}

/// Resolves a topic's config: its own overrides, else the broker property.
pub fn topic_config(
    broker: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> Result<TopicConfig> {
    for key in overrides.keys() {
        if !TOPIC_PROPERTIES.iter().any(|(t, _)| t == key) {
            bail!("unknown topic config {key}");
        }
    }
    let get = |topic_key: &str| -> Result<String> {
        if let Some(v) = overrides.get(topic_key) {
            return Ok(v.clone());
        }
        let (_, broker_key) = TOPIC_PROPERTIES
            .iter()
            .find(|(t, _)| *t == topic_key)
            .expect("known topic property");
        broker
            .get(*broker_key)
            .cloned()
            .with_context(|| format!("missing broker property {broker_key}"))
    };
    let num = |k: &str| -> Result<i64> {
        let v = get(k)?;
        v.parse()
            .map_err(|_| anyhow::anyhow!("{k}: not a number: {v:?}"))
    };
    let timestamp_type = match get("message.timestamp.type")?.as_str() {
        "CreateTime" => TimestampType::CreateTime,
        "LogAppendTime" => TimestampType::LogAppendTime,
        other => bail!("message.timestamp.type: {other:?} is not CreateTime or LogAppendTime"),
    };
    let cleanup_policy = get("cleanup.policy")?;
    for part in cleanup_policy.split(',') {
        if !matches!(part.trim(), "delete" | "compact") {
            bail!("cleanup.policy: {part:?} is not delete or compact");
        }
    }
    let segment_bytes = num("segment.bytes")?;
    if !(14..=i64::from(i32::MAX)).contains(&segment_bytes) {
        bail!(
            "segment.bytes must be between 14 and {} (positions are 32-bit)",
            i32::MAX
        );
    }
    let max_message_bytes = num("max.message.bytes")?;
    if !(0..=i64::from(i32::MAX)).contains(&max_message_bytes) {
        bail!("max.message.bytes out of range");
    }
    let flush_on_ack_all = match get("flush.on.ack.all")?.as_str() {
        "true" => true,
        "false" => false,
        other => bail!("flush.on.ack.all: {other:?} is not true or false"),
    };
    Ok(TopicConfig {
        segment_bytes: segment_bytes as u64,
        segment_ms: num("segment.ms")?,
        retention_ms: num("retention.ms")?,
        retention_bytes: num("retention.bytes")?,
        max_message_bytes: max_message_bytes as i32,
        cleanup_policy,
        flush_messages: num("flush.messages")?,
        flush_ms: num("flush.ms")?,
        message_timestamp_type: timestamp_type,
        flush_on_ack_all,
        compression_type: get("compression.type")?,
        min_insync_replicas: num("min.insync.replicas")? as i32,
        unclean_leader_election: match get("unclean.leader.election.enable")?.as_str() {
            "true" => true,
            "false" => false,
            other => bail!("unclean.leader.election.enable: {other:?} is not true or false"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(overrides: &[&str]) -> Result<BrokerConfig> {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        BrokerConfig::load(
            "127.0.0.1:9092".parse().unwrap(),
            None,
            "d".into(),
            Some(1),
            None,
            &o,
        )
    }

    #[test]
    fn defaults_are_kafkas() {
        let c = load(&[]).unwrap();
        assert_eq!(c.topic_defaults.segment_bytes, 1 << 30);
        assert_eq!(c.topic_defaults.max_message_bytes, 1_048_588);
        assert_eq!(c.socket_request_bytes_max, 104_857_600);
        assert!(c.auto_create_topics);
        assert!(c.topic_defaults.flush_on_ack_all);
    }

    #[test]
    fn set_overrides_and_topic_overrides_win() {
        let c = load(&["log.segment.bytes=1000", "num.partitions=3"]).unwrap();
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.topic_defaults.segment_bytes, 1000);
        let mut o = BTreeMap::new();
        o.insert("segment.bytes".to_string(), "2000".to_string());
        assert_eq!(topic_config(&c.props, &o).unwrap().segment_bytes, 2000);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(load(&["num.partitions=zero"]).is_err());
        assert!(load(&["log.message.timestamp.type=Never"]).is_err());
        let c = load(&[]).unwrap();
        let mut o = BTreeMap::new();
        o.insert("no.such.config".to_string(), "1".to_string());
        assert!(topic_config(&c.props, &o).is_err());
    }
}
