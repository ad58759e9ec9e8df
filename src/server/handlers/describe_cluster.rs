//! DescribeCluster (KIP-700): the cluster id, the controller clients are
//! shown, and the brokers, from this broker's metadata image; fenced
//! brokers too when v2 asks for them. Controller endpoints (endpoint type
//! 2) are not exposed: UNSUPPORTED_ENDPOINT_TYPE.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::metadata::visible_controller;
use super::reply;
use crate::protocol::{RequestFrame, ResponseError, StrBytes};
use crate::server::connection::Response;
use crate::server::context::ctx;

const BROKER_ENDPOINTS: i8 = 1;

pub async fn handle(frame: &RequestFrame, req: DescribeClusterRequest) -> anyhow::Result<Response> {
    let c = ctx();
    let v = frame.api_version;
    let mut body = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(c.cluster_id.clone()));
    if v >= 1 {
        body = body.with_endpoint_type(req.endpoint_type);
        if req.endpoint_type != BROKER_ENDPOINTS {
            return reply(
                frame,
                &body
                    .with_error_code(ResponseError::UnsupportedEndpointType.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "only broker endpoints are described",
                    ))),
            );
        }
    }
    let image = c.image();
    let with_fenced = v >= 2 && req.include_fenced_brokers;
    let brokers = image
        .brokers
        .values()
        .filter(|b| with_fenced || !b.fenced)
        .map(|b| {
            let out = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port));
            if v >= 2 {
                out.with_is_fenced(b.fenced)
            } else {
                out
            }
        })
        .collect();
    body = body
        .with_controller_id(BrokerId(visible_controller(&image, c.config.node_id)))
        .with_brokers(brokers);
    reply(frame, &body)
}
