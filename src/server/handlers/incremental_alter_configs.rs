//! IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on topic
//! config overrides, committed by the controller (every broker applies the
//! new config from its metadata image). APPEND/SUBTRACT apply to the one
//! list-valued topic config, `cleanup.policy`. Broker configs are static
//! (startup properties): INVALID_REQUEST.

use std::collections::BTreeMap;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::admin::{refuse_resource, settle_resources, TOPIC_RESOURCE};
use super::reply;
use crate::cluster::controller::TopicConfigChange;
use crate::cluster::topics::Refusal;
use crate::protocol::{RequestFrame, ResponseError, StrBytes};
use crate::server::connection::Response;
use crate::server::context::ctx;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub async fn handle(
    frame: &RequestFrame,
    req: IncrementalAlterConfigsRequest,
) -> anyhow::Result<Response> {
    let c = ctx();
    let table = c.topics();
    let mut early: Vec<Option<Refusal>> = Vec::with_capacity(req.resources.len());
    let mut changes = Vec::new();
    for r in &req.resources {
        if r.resource_type != TOPIC_RESOURCE {
            early.push(Some(refuse_resource(r.resource_type)));
            continue;
        }
        let topic = r.resource_name.to_string();
        let mut set = BTreeMap::new();
        let mut remove = Vec::new();
        let mut bad = None;
        for cfg in &r.configs {
            let name = cfg.name.to_string();
            let value = cfg.value.as_ref().map(|v| v.to_string());
            match (cfg.config_operation, value) {
                (SET, Some(v)) => {
                    set.insert(name, v);
                }
                (DELETE, _) => remove.push(name),
                (op @ (APPEND | SUBTRACT), Some(v)) if name == "cleanup.policy" => {
                    let current = table
                        .get(&topic)
                        .map(|m| m.config.cleanup_policy.clone())
                        .unwrap_or_default();
                    let mut items: Vec<String> = current
                        .split(',')
                        .map(|x| x.trim().to_string())
                        .filter(|x| !x.is_empty())
                        .collect();
                    for item in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                        if op == APPEND && !items.iter().any(|x| x == item) {
                            items.push(item.to_string());
                        } else if op == SUBTRACT {
                            items.retain(|x| x != item);
                        }
                    }
                    set.insert(name, items.join(","));
                }
                (op, _) => {
                    bad = Some(Refusal {
                        code: ResponseError::InvalidConfig.code(),
                        message: format!("operation {op} on {name} is not valid"),
                    });
                    break;
                }
            }
        }
        match bad {
            Some(b) => early.push(Some(b)),
            None => {
                early.push(None);
                changes.push(TopicConfigChange {
                    topic,
                    set,
                    remove,
                    replace_all: false,
                });
            }
        }
    }
    let outcomes = settle_resources(early, changes, req.validate_only).await;
    let responses = req
        .resources
        .iter()
        .zip(outcomes)
        .map(|(r, outcome)| {
            let out = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match outcome {
                Ok(()) => out,
                Err(e) => out
                    .with_error_code(e.code)
                    .with_error_message(Some(StrBytes::from_string(e.message))),
            }
        })
        .collect();
    reply(
        frame,
        &IncrementalAlterConfigsResponse::default().with_responses(responses),
    )
}
