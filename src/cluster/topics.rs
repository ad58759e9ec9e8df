//! The topic table: names, ids, partition counts and per-topic config
//! overrides. Plain data (`Send`), persisted as one text file written
//! atomically: a line per topic, `name<TAB>uuid<TAB>partitions<TAB>k=v,...`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::{topic_config, TopicConfig};
use crate::io::file;
use crate::model::limits;
use crate::protocol::ResponseError;

#[derive(Clone, Debug)]
pub struct TopicMeta {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: i32,
    pub overrides: BTreeMap<String, String>,
    /// Overrides resolved against the broker defaults.
    pub config: TopicConfig,
}

#[derive(Clone, Debug, Default)]
pub struct TopicTable {
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
}

/// A refused change, with the Kafka error code and a message for the client.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: i16,
    pub message: String,
}

impl Refusal {
    fn new(e: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code: e.code(),
            message: message.into(),
        }
    }
}

pub const TABLE_FILE: &str = "topics.meta";

/// Kafka's legal topic names: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty() || name.len() > limits::topic_name_bytes_max || name == "." || name == ".." {
        return Err(Refusal::new(
            ResponseError::InvalidTopicException,
            format!("invalid topic name {name:?}"),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(Refusal::new(
            ResponseError::InvalidTopicException,
            format!("topic name {name:?} has characters outside [a-zA-Z0-9._-]"),
        ));
    }
    Ok(())
}

impl TopicTable {
    /// The table a metadata image describes (configs resolved against the
    /// broker defaults; a config this broker cannot parse falls back to
    /// the defaults with a warning).
    pub fn from_image(
        image: &crate::cluster::metadata::MetadataImage,
        broker_props: &BTreeMap<String, String>,
    ) -> Self {
        let mut t = Self::default();
        for ti in image.topics.values() {
            let config = topic_config(broker_props, &ti.configs).unwrap_or_else(|e| {
                tracing::warn!(topic = %ti.name, error = %e, "topic config not understood; using defaults");
                topic_config(broker_props, &BTreeMap::new()).expect("defaults are valid")
            });
            t.topics.insert(
                ti.name.clone(),
                Arc::new(TopicMeta {
                    name: ti.name.clone(),
                    id: uuid::Uuid::from_u128(ti.id),
                    partitions: ti.partitions.len() as i32,
                    overrides: ti.configs.clone(),
                    config,
                }),
            );
        }
        t
    }

    pub fn get(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    /// Checks a create without applying it.
    pub fn check_create(
        &self,
        broker_props: &BTreeMap<String, String>,
        name: &str,
        partitions: i32,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, Refusal> {
        validate_name(name)?;
        if self.topics.contains_key(name) {
            return Err(Refusal::new(
                ResponseError::TopicAlreadyExists,
                format!("topic {name} already exists"),
            ));
        }
        if !(1..=limits::partitions_per_topic_max).contains(&partitions) {
            return Err(Refusal::new(
                ResponseError::InvalidPartitions,
                format!(
                    "partitions must be 1..={}, got {partitions}",
                    limits::partitions_per_topic_max
                ),
            ));
        }
        topic_config(broker_props, overrides)
            .map_err(|e| Refusal::new(ResponseError::InvalidConfig, e.to_string()))
    }

    pub fn create(
        &mut self,
        broker_props: &BTreeMap<String, String>,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<TopicMeta>, Refusal> {
        let config = self.check_create(broker_props, name, partitions, &overrides)?;
        let meta = Arc::new(TopicMeta {
            name: name.to_string(),
            id: uuid::Uuid::new_v4(),
            partitions,
            overrides,
            config,
        });
        self.topics.insert(name.to_string(), meta.clone());
        Ok(meta)
    }

    pub fn delete(&mut self, name: &str) -> Result<Arc<TopicMeta>, Refusal> {
        self.topics.remove(name).ok_or_else(|| {
            Refusal::new(
                ResponseError::UnknownTopicOrPartition,
                format!("unknown topic {name}"),
            )
        })
    }

    pub fn check_add_partitions(&self, name: &str, count: i32) -> Result<(), Refusal> {
        let meta = self.topics.get(name).ok_or_else(|| {
            Refusal::new(
                ResponseError::UnknownTopicOrPartition,
                format!("unknown topic {name}"),
            )
        })?;
        if count <= meta.partitions {
            return Err(Refusal::new(
                ResponseError::InvalidPartitions,
                format!(
                    "topic {name} has {} partitions; the new count {count} must be larger",
                    meta.partitions
                ),
            ));
        }
        if count > limits::partitions_per_topic_max {
            return Err(Refusal::new(
                ResponseError::InvalidPartitions,
                "too many partitions",
            ));
        }
        Ok(())
    }

    pub fn add_partitions(&mut self, name: &str, count: i32) -> Result<(), Refusal> {
        self.check_add_partitions(name, count)?;
        let meta = self.topics.get_mut(name).expect("checked");
        let mut m = (**meta).clone();
        m.partitions = count;
        *meta = Arc::new(m);
        Ok(())
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for m in self.topics.values() {
            let cfg: Vec<String> = m
                .overrides
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\n",
                m.name,
                m.id,
                m.partitions,
                cfg.join(",")
            ));
        }
        out
    }

    pub fn from_text(text: &str, broker_props: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        let mut t = Self::default();
        for (n, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            anyhow::ensure!(
                cols.len() == 4,
                "{TABLE_FILE} line {}: expected 4 columns",
                n + 1
            );
            let mut overrides = BTreeMap::new();
            for kv in cols[3].split(',').filter(|s| !s.is_empty()) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("bad config {kv:?}"))?;
                overrides.insert(k.to_string(), v.to_string());
            }
            let config = topic_config(broker_props, &overrides)?;
            t.topics.insert(
                cols[0].to_string(),
                Arc::new(TopicMeta {
                    name: cols[0].to_string(),
                    id: cols[1].parse()?,
                    partitions: cols[2].parse()?,
                    overrides,
                    config,
                }),
            );
        }
        Ok(t)
    }

    pub fn load(data_dir: &Path, broker_props: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        match std::fs::read_to_string(data_dir.join(TABLE_FILE)) {
            Ok(text) => Self::from_text(&text, broker_props),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        file::write_atomic(&data_dir.join(TABLE_FILE), self.to_text().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> BTreeMap<String, String> {
        crate::config::BrokerConfig::load(
            "127.0.0.1:1".parse().unwrap(),
            None,
            "d".into(),
            Some(1),
            None,
            &[],
        )
        .unwrap()
        .props
    }

    #[test]
    fn create_delete_and_grow_follow_kafka_rules() {
        let p = props();
        let mut t = TopicTable::default();
        t.create(&p, "orders", 3, BTreeMap::new()).unwrap();
        assert_eq!(
            t.create(&p, "orders", 3, BTreeMap::new()).unwrap_err().code,
            36
        );
        assert_eq!(
            t.create(&p, "bad/name", 3, BTreeMap::new())
                .unwrap_err()
                .code,
            17
        );
        assert_eq!(
            t.create(&p, "zero", 0, BTreeMap::new()).unwrap_err().code,
            37
        );
        assert_eq!(t.add_partitions("orders", 2).unwrap_err().code, 37);
        t.add_partitions("orders", 5).unwrap();
        assert_eq!(t.get("orders").unwrap().partitions, 5);
        t.delete("orders").unwrap();
        assert_eq!(t.delete("orders").unwrap_err().code, 3);
    }

    #[test]
    fn round_trips_through_text() {
        let p = props();
        let mut t = TopicTable::default();
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "1000".to_string());
        t.create(&p, "a", 2, o).unwrap();
        let back = TopicTable::from_text(&t.to_text(), &p).unwrap();
        let a = back.get("a").unwrap();
        assert_eq!(a.partitions, 2);
        assert_eq!(a.config.retention_ms, 1000);
        assert_eq!(a.id, t.get("a").unwrap().id);
    }
}
