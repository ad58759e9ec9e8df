//! CreateTopics: checked here, placed and committed by the controller.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::admin::{change_topics, TopicChange};
use super::reply;
use crate::protocol::{RequestFrame, ResponseError, StrBytes};
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: CreateTopicsRequest) -> anyhow::Result<Response> {
    let c = ctx();
    let v = frame.api_version;
    let mut changes = Vec::new();
    let mut early: Vec<Option<(i16, String)>> = Vec::new();
    for t in &req.topics {
        let name = t.name.to_string();
        let mut partitions = if t.num_partitions == -1 {
            c.config.num_partitions
        } else {
            t.num_partitions
        };
        let pre = if !t.assignments.is_empty() && t.num_partitions != -1 {
            Some((
                ResponseError::InvalidRequest.code(),
                "both num_partitions and assignments given".into(),
            ))
        } else if !t.assignments.is_empty() && t.replication_factor != -1 {
            Some((
                ResponseError::InvalidRequest.code(),
                "both replication_factor and assignments given".into(),
            ))
        } else {
            None
        };
        if !t.assignments.is_empty() {
            partitions = t.assignments.len() as i32;
        }
        if pre.is_none() {
            let mut configs = BTreeMap::new();
            for kv in &t.configs {
                if let Some(v) = &kv.value {
                    configs.insert(kv.name.to_string(), v.to_string());
                }
            }
            let assignments = (!t.assignments.is_empty()).then(|| {
                let mut a: Vec<_> = t.assignments.iter().collect();
                a.sort_by_key(|x| x.partition_index);
                a.iter()
                    .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            changes.push(TopicChange::Create {
                name,
                partitions,
                replication_factor: t.replication_factor,
                assignments,
                configs,
            });
        }
        early.push(pre);
    }
    let mut results = change_topics(changes, req.validate_only).await.into_iter();
    let table = c.topics();
    let image = c.image();
    let mut out = Vec::with_capacity(req.topics.len());
    for (t, pre) in req.topics.iter().zip(early) {
        let mut r = CreatableTopicResult::default().with_name(t.name.clone());
        let outcome = match pre {
            Some(e) => Err(e),
            None => results
                .next()
                .expect("one result per change")
                .map_err(|e| (e.code, e.message)),
        };
        match outcome {
            Ok(()) => {
                if let Some(meta) = table.get(&t.name) {
                    if v >= 7 {
                        r = r.with_topic_id(meta.id);
                    }
                    if v >= 5 {
                        r = r
                            .with_num_partitions(meta.partitions)
                            .with_replication_factor(
                                image
                                    .partition(&meta.name, 0)
                                    .map_or(1, |p| p.replicas.len() as i16),
                            );
                    }
                    if v >= 5 {
                        let configs = meta
                            .overrides
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfigs::default()
                                    .with_name(StrBytes::from_string(k.clone()))
                                    .with_value(Some(StrBytes::from_string(v.clone())))
                                    .with_config_source(1)
                            })
                            .collect();
                        r = r.with_configs(Some(configs));
                    }
                }
            }
            Err((code, message)) => {
                r = r
                    .with_error_code(code)
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
                if v >= 1 {
                    r = r.with_error_message(Some(StrBytes::from_string(message)));
                }
            }
        }
        out.push(r);
    }
    reply(frame, &CreateTopicsResponse::default().with_topics(out))
}
