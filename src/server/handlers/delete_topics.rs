//! DeleteTopics: by name (or by topic id from v6), applied by shard 0.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::admin::{change_topics, TopicChange};
use super::reply;
use crate::protocol::{RequestFrame, ResponseError, StrBytes};
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: DeleteTopicsRequest) -> anyhow::Result<Response> {
    let c = ctx();
    let table = c.topics();
    // Each entry: (name if known, topic id).
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.to_string()), uuid::Uuid::nil()))
        .collect();
    for t in &req.topics {
        let name = match &t.name {
            Some(n) => Some(n.to_string()),
            None => table
                .topics
                .values()
                .find(|m| m.id == t.topic_id)
                .map(|m| m.name.clone()),
        };
        targets.push((name, t.topic_id));
    }
    let changes: Vec<TopicChange> = targets
        .iter()
        .filter_map(|(n, _)| n.clone())
        .map(|name| TopicChange::Delete { name })
        .collect();
    let mut results = change_topics(changes, false).await.into_iter();
    let out = targets
        .into_iter()
        .map(|(name, id)| {
            let r = DeletableTopicResult::default()
                .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))))
                .with_topic_id(if frame.api_version >= 6 {
                    id
                } else {
                    uuid::Uuid::nil()
                });
            match name {
                None => r.with_error_code(ResponseError::UnknownTopicId.code()),
                Some(_) => match results.next().expect("one result per change") {
                    Ok(()) => r,
                    Err(e) => r.with_error_code(e.code).with_error_message(
                        (frame.api_version >= 5).then(|| StrBytes::from_string(e.message)),
                    ),
                },
            }
        })
        .collect();
    reply(frame, &DeleteTopicsResponse::default().with_responses(out))
}
