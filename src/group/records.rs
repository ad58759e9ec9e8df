//! The records a group coordinator keeps in `__consumer_offsets`, in Kafka's
//! own key/value layouts so existing tooling can read them:
//! OffsetCommitKey v1 (group, topic, partition) -> OffsetCommitValue v3, and
//! GroupMetadataKey v2 (group) -> GroupMetadataValue v3. A null value is a
//! tombstone.

use bytes::{Buf, BufMut, Bytes, BytesMut};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: i32,
    pub session_timeout: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}
fn put_nstr(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}
fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

fn get_i16(b: &mut Bytes) -> Option<i16> {
    (b.remaining() >= 2).then(|| b.get_i16())
}
fn get_i32(b: &mut Bytes) -> Option<i32> {
    (b.remaining() >= 4).then(|| b.get_i32())
}
fn get_i64(b: &mut Bytes) -> Option<i64> {
    (b.remaining() >= 8).then(|| b.get_i64())
}
fn get_nstr(b: &mut Bytes) -> Option<Option<String>> {
    let n = get_i16(b)?;
    if n < 0 {
        return Some(None);
    }
    let n = n as usize;
    if b.remaining() < n {
        return None;
    }
    let s = String::from_utf8(b.split_to(n).to_vec()).ok()?;
    Some(Some(s))
}
fn get_str(b: &mut Bytes) -> Option<String> {
    get_nstr(b)?
}
fn get_bytes(b: &mut Bytes) -> Option<Bytes> {
    let n = get_i32(b)?;
    if n < 0 {
        return Some(Bytes::new());
    }
    let n = n as usize;
    (b.remaining() >= n).then(|| b.split_to(n))
}

impl Key {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                b.put_i16(1);
                put_str(&mut b, group);
                put_str(&mut b, topic);
                b.put_i32(*partition);
            }
            Key::Group { group } => {
                b.put_i16(2);
                put_str(&mut b, group);
            }
        }
        b.freeze()
    }

    pub fn decode(mut b: Bytes) -> Option<Self> {
        match get_i16(&mut b)? {
            0 | 1 => Some(Key::Offset {
                group: get_str(&mut b)?,
                topic: get_str(&mut b)?,
                partition: get_i32(&mut b)?,
            }),
            2 => Some(Key::Group {
                group: get_str(&mut b)?,
            }),
            _ => None,
        }
    }

    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group { group } => group,
        }
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i64(self.offset);
        b.put_i32(self.leader_epoch);
        put_str(&mut b, &self.metadata);
        b.put_i64(self.commit_timestamp);
        b.freeze()
    }

    pub fn decode(mut b: Bytes) -> Option<Self> {
        let version = get_i16(&mut b)?;
        let offset = get_i64(&mut b)?;
        let leader_epoch = if version >= 3 { get_i32(&mut b)? } else { -1 };
        let metadata = get_str(&mut b)?;
        let commit_timestamp = get_i64(&mut b)?;
        Some(Self {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(3);
        put_str(&mut b, &self.protocol_type);
        b.put_i32(self.generation);
        put_nstr(&mut b, self.protocol.as_deref());
        put_nstr(&mut b, self.leader.as_deref());
        b.put_i64(self.state_timestamp);
        b.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_str(&mut b, &m.member_id);
            put_nstr(&mut b, m.group_instance_id.as_deref());
            put_str(&mut b, &m.client_id);
            put_str(&mut b, &m.client_host);
            b.put_i32(m.rebalance_timeout);
            b.put_i32(m.session_timeout);
            put_bytes(&mut b, &m.subscription);
            put_bytes(&mut b, &m.assignment);
        }
        b.freeze()
    }

    pub fn decode(mut b: Bytes) -> Option<Self> {
        let version = get_i16(&mut b)?;
        if !(0..=3).contains(&version) {
            return None;
        }
        let protocol_type = get_str(&mut b)?;
        let generation = get_i32(&mut b)?;
        let protocol = get_nstr(&mut b)?;
        let leader = get_nstr(&mut b)?;
        let state_timestamp = if version >= 2 { get_i64(&mut b)? } else { -1 };
        let n = get_i32(&mut b)?;
        let mut members = Vec::new();
        for _ in 0..n.max(0) {
            let member_id = get_str(&mut b)?;
            let group_instance_id = if version >= 3 {
                get_nstr(&mut b)?
            } else {
                None
            };
            let client_id = get_str(&mut b)?;
            let client_host = get_str(&mut b)?;
            let rebalance_timeout = if version >= 1 { get_i32(&mut b)? } else { 0 };
            let session_timeout = get_i32(&mut b)?;
            let subscription = get_bytes(&mut b)?;
            let assignment = get_bytes(&mut b)?;
            members.push(MemberValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout,
                session_timeout,
                subscription,
                assignment,
            });
        }
        Some(Self {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let k = Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        assert_eq!(Key::decode(k.encode()), Some(k));
        let k = Key::Group { group: "g".into() };
        assert_eq!(Key::decode(k.encode()), Some(k));
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 0,
            metadata: "m".into(),
            commit_timestamp: 7,
        };
        assert_eq!(OffsetValue::decode(v.encode()), Some(v));
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 9,
            members: vec![MemberValue {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout: 1000,
                session_timeout: 6000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(GroupValue::decode(g.encode()), Some(g));
    }

    #[test]
    fn truncated_values_are_rejected_not_panicking() {
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 0,
            metadata: "meta".into(),
            commit_timestamp: 7,
        }
        .encode();
        for n in 0..v.len() {
            assert!(OffsetValue::decode(v.slice(..n)).is_none());
        }
    }
}
