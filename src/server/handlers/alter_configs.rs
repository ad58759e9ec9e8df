//! AlterConfigs (the legacy, non-incremental form): the given configs
//! replace all of a topic's overrides. Committed by the controller. Broker
//! configs are static (startup properties): INVALID_REQUEST.

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::admin::{refuse_resource, settle_resources, TOPIC_RESOURCE};
use super::reply;
use crate::cluster::controller::TopicConfigChange;
use crate::protocol::{RequestFrame, StrBytes};
use crate::server::connection::Response;

pub async fn handle(frame: &RequestFrame, req: AlterConfigsRequest) -> anyhow::Result<Response> {
    let mut early = Vec::with_capacity(req.resources.len());
    let mut changes = Vec::new();
    for r in &req.resources {
        if r.resource_type != TOPIC_RESOURCE {
            early.push(Some(refuse_resource(r.resource_type)));
            continue;
        }
        early.push(None);
        changes.push(TopicConfigChange {
            topic: r.resource_name.to_string(),
            set: r
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect(),
            remove: Vec::new(),
            replace_all: true,
        });
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
        &AlterConfigsResponse::default().with_responses(responses),
    )
}
