//! OffsetDelete: drops committed offsets of partitions the group no longer
//! consumes (GROUP_SUBSCRIBED_TO_TOPIC for those it still does).

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::reply;
use crate::group::coordinator;
use crate::protocol::RequestFrame;
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: OffsetDeleteRequest) -> anyhow::Result<Response> {
    let group = req.group_id.to_string();
    let parts: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let owner = ctx().group_owner(&group);
    let result = run_on(owner, move || async move {
        coordinator().delete_offsets(&group, &parts).await
    })
    .await
    .unwrap_or(Err(crate::group::coordinator::COORDINATOR_NOT_AVAILABLE));
    let body = match result {
        Err(code) => OffsetDeleteResponse::default().with_error_code(code),
        Ok(codes) => {
            let mut it = codes.into_iter();
            OffsetDeleteResponse::default().with_topics(
                req.topics
                    .iter()
                    .map(|t| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(it.next().unwrap_or(0))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        }
    };
    reply(frame, &body)
}
