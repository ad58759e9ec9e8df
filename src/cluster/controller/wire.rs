//! The controller wire protocol over std `TcpStream`s.
//!
//! Frame: `u32` big-endian length of what follows, `u8` kind, payload.
//! `KIND_RAFT` carries a protobuf `eraftpb::Message` (one way, voter to
//! voter); `KIND_REQUEST` an rkyv `Request` answered by exactly one
//! `KIND_RESPONSE` frame with an rkyv `Response`.

use std::io::{Read, Write};

use anyhow::Context;
use rkyv::rancor;

use crate::cluster::metadata::{MetadataImage, PartitionState};

use super::{AdminReply, AlterPartition, BrokerHeartbeat, CreateTopic, HeartbeatReply};

pub const KIND_RAFT: u8 = 1;
pub const KIND_REQUEST: u8 = 2;
pub const KIND_RESPONSE: u8 = 3;

/// Bounds one frame (a metadata snapshot travels in one raft message).
pub const FRAME_BYTES_MAX: usize = 256 << 20;

#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Request {
    Heartbeat(BrokerHeartbeat),
    FetchMetadata {
        known_version: u64,
        wait_ms: u64,
    },
    AlterPartition(AlterPartition),
    CreateTopics {
        topics: Vec<CreateTopic>,
        validate_only: bool,
    },
    DeleteTopics(Vec<String>),
    CreatePartitions {
        reqs: Vec<(String, i32)>,
        validate_only: bool,
    },
    AlterTopicConfigs(Vec<super::TopicConfigChange>),
}

#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Response {
    /// This voter is not the leader; `leader` is its node id if known, -1 if not.
    NotLeader {
        leader: i32,
    },
    Heartbeat(HeartbeatReply),
    Metadata(Option<MetadataImage>),
    Alter(Result<PartitionState, i16>),
    Admin(AdminReply),
    /// The request could not complete (e.g. leadership lost, timed out).
    Failed(String),
}

pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len() + 1).expect("frame under 4 GiB");
    let mut buf = Vec::with_capacity(payload.len() + 5);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.push(kind);
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame.
pub fn read_frame(r: &mut impl Read) -> anyhow::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(head) as usize;
    anyhow::ensure!(
        (1..=FRAME_BYTES_MAX).contains(&len),
        "bad frame length {len}"
    );
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind)?;
    let mut payload = vec![0u8; len - 1];
    r.read_exact(&mut payload)?;
    Ok(Some((kind[0], payload)))
}

pub fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rancor::Error>(value)
        .expect("in-memory rkyv encoding cannot fail")
        .to_vec()
}

pub fn decode<T>(bytes: &[u8]) -> anyhow::Result<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    // Archived data must be aligned; a frame buffer need not be.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).context("decoding rkyv payload")
}
