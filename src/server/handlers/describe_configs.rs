//! DescribeConfigs: a topic's effective configs (overrides marked as
//! dynamic topic configs, the rest as defaults) or the broker's properties.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::reply;
use crate::config::TOPIC_PROPERTIES;
use crate::protocol::{RequestFrame, ResponseError, StrBytes};
use crate::server::connection::Response;
use crate::server::context::ctx;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub async fn handle(frame: &RequestFrame, req: DescribeConfigsRequest) -> anyhow::Result<Response> {
    let c = ctx();
    let mut results = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        let name = r.resource_name.to_string();
        // Null or an empty key list both mean every config.
        let wanted = |k: &str| {
            r.configuration_keys
                .as_ref()
                .is_none_or(|ks| ks.is_empty() || ks.iter().any(|x| x.as_str() == k))
        };
        let out = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let entry = |k: &str, v: String, source: i8| {
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v)))
                .with_config_source(source)
        };
        let result = match r.resource_type {
            RESOURCE_TOPIC => match c.topic(&name) {
                None => out.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Some(meta) => {
                    let configs = TOPIC_PROPERTIES
                        .iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, broker_key)| match meta.overrides.get(*k) {
                            Some(v) => entry(k, v.clone(), SOURCE_DYNAMIC_TOPIC),
                            None => entry(
                                k,
                                c.config.prop(broker_key).unwrap_or_default().to_string(),
                                SOURCE_DEFAULT,
                            ),
                        })
                        .collect();
                    out.with_configs(configs)
                }
            },
            RESOURCE_BROKER => {
                if name.is_empty() || name == c.config.node_id.to_string() {
                    let configs = c
                        .config
                        .props
                        .iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, v)| entry(k, v.clone(), SOURCE_STATIC_BROKER))
                        .collect();
                    out.with_configs(configs)
                } else {
                    out.with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "this is broker {}",
                            c.config.node_id
                        ))))
                }
            }
            _ => out
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_static_str("unsupported resource type"))),
        };
        results.push(result);
    }
    reply(
        frame,
        &DescribeConfigsResponse::default().with_results(results),
    )
}
