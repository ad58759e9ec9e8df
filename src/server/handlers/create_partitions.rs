//! CreatePartitions: grow a topic, applied by shard 0.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::admin::{change_topics, TopicChange};
use super::reply;
use crate::protocol::{RequestFrame, StrBytes};
use crate::server::connection::Response;

pub async fn handle(
    frame: &RequestFrame,
    req: CreatePartitionsRequest,
) -> anyhow::Result<Response> {
    let changes = req
        .topics
        .iter()
        .map(|t| TopicChange::AddPartitions {
            name: t.name.to_string(),
            count: t.count,
        })
        .collect();
    let results = change_topics(changes, req.validate_only).await;
    let out = req
        .topics
        .iter()
        .zip(results)
        .map(|(t, r)| {
            let out = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            match r {
                Ok(()) => out,
                Err(e) => out
                    .with_error_code(e.code)
                    .with_error_message(Some(StrBytes::from_string(e.message))),
            }
        })
        .collect();
    reply(
        frame,
        &CreatePartitionsResponse::default().with_results(out),
    )
}
