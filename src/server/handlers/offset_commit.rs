//! OffsetCommit: validated here (unknown topics and partitions), committed
//! durably by the group's coordinator shard. Versions 0 and 1 (dropped by
//! Kafka 4.0 and by the kafka-protocol crate, still sent by older clients
//! such as sarama 1.22 by default) are decoded here; their response is
//! byte-for-byte the v2 response.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{admin, reply};
use crate::group::coordinator;
use crate::group::coordinator::CommitPartition;
use crate::protocol::{RequestFrame, ResponseError, StrBytes};
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: OffsetCommitRequest) -> anyhow::Result<Response> {
    let c = ctx();
    admin::ensure_offsets_topic().await;
    let mut parts = Vec::new();
    for t in &req.topics {
        let name = t.name.to_string();
        let known = c.topic(&name).map(|m| m.partitions);
        for p in &t.partitions {
            let ok = known.is_some_and(|n| (0..n).contains(&p.partition_index));
            parts.push(CommitPartition {
                topic: name.clone(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|s| s.to_string()),
                error: if ok {
                    0
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                },
            });
        }
    }
    let group = req.group_id.to_string();
    let member = req.member_id.to_string();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = req.generation_id_or_member_epoch;
    let owner = c.group_owner(&group);
    let parts = run_on(owner, move || async move {
        let mut parts = parts;
        coordinator()
            .commit(&group, generation, &member, instance.as_deref(), &mut parts)
            .await;
        parts
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut it = parts.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let r = it.next().expect("one result per partition");
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(r.error)
                        })
                        .collect(),
                )
        })
        .collect();
    let body = OffsetCommitResponse::default().with_topics(topics);
    if frame.api_version < 2 {
        let bytes =
            crate::protocol::encode_response(frame.api_key, 2, frame.correlation_id, &body)?;
        return Ok(Response::Bytes(bytes));
    }
    reply(frame, &body)
}

/// OffsetCommit v0 (group, topics) and v1 (plus generation, member id and a
/// commit timestamp per partition, which Kafka ignores since 2.1) as the
/// request type of later versions: v0 commits as a simple consumer
/// (generation -1, no member).
pub fn decode_v0_v1(body: &bytes::Bytes, version: i16) -> anyhow::Result<OffsetCommitRequest> {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, TopicName};
    let mut r = Reader(body.clone());
    let group = r.string()?.unwrap_or_default();
    let (generation, member) = if version >= 1 {
        (r.i32()?, r.string()?.unwrap_or_default())
    } else {
        (-1, String::new())
    };
    let mut topics = Vec::new();
    for _ in 0..r.count()? {
        let name = r.string()?.unwrap_or_default();
        let mut partitions = Vec::new();
        for _ in 0..r.count()? {
            let index = r.i32()?;
            let offset = r.i64()?;
            if version >= 1 {
                r.i64()?; // commit timestamp
            }
            let metadata = r.string()?;
            partitions.push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(index)
                    .with_committed_offset(offset)
                    .with_committed_metadata(metadata.map(StrBytes::from_string)),
            );
        }
        topics.push(
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions),
        );
    }
    Ok(OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member))
        .with_topics(topics))
}

/// Big-endian reads that fail instead of panicking on a short body.
struct Reader(bytes::Bytes);

impl Reader {
    fn take(&mut self, n: usize) -> anyhow::Result<bytes::Bytes> {
        anyhow::ensure!(self.0.len() >= n, "malformed request body: truncated");
        Ok(self.0.split_to(n))
    }
    fn i16(&mut self) -> anyhow::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?[..].try_into()?))
    }
    fn i32(&mut self) -> anyhow::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?[..].try_into()?))
    }
    fn i64(&mut self) -> anyhow::Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?[..].try_into()?))
    }
    /// An array length; a negative one (null) is an empty array.
    fn count(&mut self) -> anyhow::Result<usize> {
        let n = self.i32()?;
        anyhow::ensure!(
            n <= self.0.len() as i32,
            "malformed request body: array of {n}"
        );
        Ok(n.max(0) as usize)
    }
    fn string(&mut self) -> anyhow::Result<Option<String>> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        let b = self.take(n as usize)?;
        Ok(Some(String::from_utf8(b.to_vec()).map_err(|_| {
            anyhow::anyhow!("malformed request body: string not UTF-8")
        })?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Vec<u8> {
        let mut v = (x.len() as i16).to_be_bytes().to_vec();
        v.extend_from_slice(x.as_bytes());
        v
    }

    #[test]
    fn v1_and_v0_decode_to_the_later_request_shape() {
        let mut b = s("g");
        b.extend(7i32.to_be_bytes());
        b.extend(s("m"));
        b.extend(1i32.to_be_bytes()); // topics
        b.extend(s("t"));
        b.extend(1i32.to_be_bytes()); // partitions
        b.extend(2i32.to_be_bytes());
        b.extend(42i64.to_be_bytes());
        b.extend(123i64.to_be_bytes()); // timestamp
        b.extend((-1i16).to_be_bytes()); // null metadata
        let r = decode_v0_v1(&bytes::Bytes::from(b.clone()), 1).expect("v1");
        assert_eq!(r.group_id.as_str(), "g");
        assert_eq!(r.generation_id_or_member_epoch, 7);
        assert_eq!(r.member_id.as_str(), "m");
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.partition_index, p.committed_offset), (2, 42));
        assert!(p.committed_metadata.is_none());

        let mut v0 = s("g");
        v0.extend(1i32.to_be_bytes());
        v0.extend(s("t"));
        v0.extend(1i32.to_be_bytes());
        v0.extend(0i32.to_be_bytes());
        v0.extend(5i64.to_be_bytes());
        v0.extend(s("meta"));
        let r = decode_v0_v1(&bytes::Bytes::from(v0), 0).expect("v0");
        assert_eq!(r.generation_id_or_member_epoch, -1);
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.committed_metadata.as_deref(), Some("meta"));

        // a truncated body is an error, not a panic
        for cut in 0..b.len() {
            assert!(decode_v0_v1(&bytes::Bytes::from(b[..cut].to_vec()), 1).is_err());
        }
    }
}
