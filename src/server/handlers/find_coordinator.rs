//! FindCoordinator: a group's coordinator is the leader of its
//! `__consumer_offsets` partition. The first call creates that topic
//! (compacted, `offsets.topic.num.partitions`, replicated). Transaction coordinators are not
//! implemented yet: key type 1 gets COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{admin, reply};
use crate::protocol::{RequestFrame, ResponseError, StrBytes};
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: FindCoordinatorRequest) -> anyhow::Result<Response> {
    let v = frame.api_version;
    let c = ctx();
    let ready = admin::ensure_offsets_topic().await;
    if ready && req.key_type == 0 {
        // A coordinator named here is ready to answer: the owning shard
        // has loaded the group's partition (bounded; a group request that
        // still comes too early gets COORDINATOR_LOAD_IN_PROGRESS).
        let keys: Vec<String> = if v >= 4 {
            req.coordinator_keys.iter().map(|k| k.to_string()).collect()
        } else {
            vec![req.key.to_string()]
        };
        for key in keys {
            let owner = c.group_owner(&key);
            let _ = crate::runtime::run_on(owner, move || async move {
                crate::group::coordinator()
                    .wait_loaded(&key, std::time::Duration::from_secs(3))
                    .await
            })
            .await;
        }
    }
    let image = c.image();
    let partitions = crate::group::coordinator().config().offsets_partitions;
    // The coordinator of a group is the leader of its offsets partition.
    let answer = |key_type: i8, key: &str| -> (i16, Option<String>, i32, StrBytes, i32) {
        let none = |msg: &str| {
            (
                ResponseError::CoordinatorNotAvailable.code(),
                Some(msg.to_string()),
                -1,
                StrBytes::default(),
                -1,
            )
        };
        if key_type != 0 {
            return none("transactions are not supported yet");
        }
        if !ready {
            return none("group metadata topic unavailable");
        }
        let p = crate::group::partition_for(key, partitions);
        let leader = image
            .partition(crate::group::OFFSETS_TOPIC, p)
            .map_or(-1, |s| s.leader);
        match image.brokers.get(&leader).filter(|b| !b.fenced) {
            Some(b) => (
                0,
                None,
                b.id,
                StrBytes::from_string(b.host.clone()),
                i32::from(b.port),
            ),
            None => none("the group's offsets partition has no leader"),
        }
    };
    let mut body = FindCoordinatorResponse::default();
    if v >= 4 {
        body.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, msg, node, host, port) = answer(req.key_type, k.as_str());
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(node))
                    .with_host(host)
                    .with_port(port)
                    .with_error_code(code)
                    .with_error_message(msg.map(StrBytes::from_string))
            })
            .collect();
    } else {
        let (code, msg, node, host, port) = answer(req.key_type, req.key.as_str());
        body = body
            .with_error_code(code)
            .with_node_id(BrokerId(node))
            .with_host(host)
            .with_port(port);
        if v >= 1 {
            body = body.with_error_message(msg.map(StrBytes::from_string));
        }
    }
    reply(frame, &body)
}
