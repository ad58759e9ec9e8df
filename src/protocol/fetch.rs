//! The Fetch response, hand-encoded so record bytes never pass through a
//! user-space buffer: the encoder emits header bytes and placeholders, and
//! the connection fills each placeholder from a segment file with sendfile.
//!
//! Layout (versions 4..=12): throttle_time_ms i32, [v7+ error_code i16,
//! session_id i32], topics[ name, partitions[ partition_index i32,
//! error_code i16, high_watermark i64, last_stable_offset i64,
//! [v5+ log_start_offset i64], aborted_transactions (null),
//! [v11+ preferred_read_replica i32], records ] ]. From v12 strings, arrays
//! and bytes are compact and every struct ends in an empty tagged-field set.

use bytes::{BufMut, Bytes, BytesMut};

use super::{api, put_response_header};

/// One partition's answer; `records_len` bytes of records follow it.
#[derive(Clone, Debug)]
pub struct FetchPartitionOut {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub records_len: u32,
}

#[derive(Clone, Debug)]
pub struct FetchTopicOut {
    pub name: String,
    pub partitions: Vec<FetchPartitionOut>,
}

/// A piece of the encoded response, in wire order.
#[derive(Debug)]
pub enum Piece {
    Bytes(Bytes),
    /// The records of the n-th partition (in response order) whose
    /// `records_len` is non-zero go here.
    Records {
        partition_index: usize,
        len: u32,
    },
}

/// Encodes the response; returns the pieces including the 4-byte size prefix.
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    error_code: i16,
    session_id: i32,
    topics: &[FetchTopicOut],
) -> Vec<Piece> {
    assert!(
        (4..=12).contains(&version),
        "fetch v{version} not encodable"
    );
    let flexible = version >= 12;
    let mut pieces = Vec::new();
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i32(0); // size, patched below
    put_response_header(&mut buf, api::FETCH, version, correlation_id);
    buf.put_i32(0); // throttle_time_ms
    if version >= 7 {
        buf.put_i16(error_code);
        buf.put_i32(session_id);
    }
    put_array_len(&mut buf, topics.len(), flexible);
    let mut total: u64 = 0;
    let mut index = 0;
    for topic in topics {
        put_string(&mut buf, &topic.name, flexible);
        put_array_len(&mut buf, topic.partitions.len(), flexible);
        for p in &topic.partitions {
            buf.put_i32(p.partition);
            buf.put_i16(p.error_code);
            buf.put_i64(p.high_watermark);
            buf.put_i64(p.last_stable_offset);
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            // aborted_transactions: null
            if flexible {
                put_uvarint(&mut buf, 0);
            } else {
                buf.put_i32(-1);
            }
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            if flexible {
                put_uvarint(&mut buf, p.records_len + 1);
            } else {
                buf.put_i32(p.records_len as i32);
            }
            if p.records_len > 0 {
                total += buf.len() as u64;
                pieces.push(Piece::Bytes(buf.split().freeze()));
                pieces.push(Piece::Records {
                    partition_index: index,
                    len: p.records_len,
                });
                total += u64::from(p.records_len);
            }
            index += 1;
            if flexible {
                buf.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            buf.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        buf.put_u8(0); // response tagged fields
    }
    total += buf.len() as u64;
    pieces.push(Piece::Bytes(buf.freeze()));
    let size = (total - 4) as i32;
    let Piece::Bytes(first) = &mut pieces[0] else {
        unreachable!("first piece is bytes")
    };
    let mut patched = BytesMut::from(first.as_ref());
    patched[0..4].copy_from_slice(&size.to_be_bytes());
    *first = patched.freeze();
    pieces
}

fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_array_len(buf: &mut BytesMut, n: usize, flexible: bool) {
    if flexible {
        put_uvarint(buf, n as u32 + 1);
    } else {
        buf.put_i32(n as i32);
    }
}

fn put_string(buf: &mut BytesMut, s: &str, flexible: bool) {
    if flexible {
        put_uvarint(buf, s.len() as u32 + 1);
    } else {
        buf.put_i16(s.len() as i16);
    }
    buf.put_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    /// Our hand encoding must decode with the reference codec at every version.
    #[test]
    fn hand_encoding_matches_the_reference_decoder() {
        let records = crate::protocol::batch::tests::make_batch(
            3,
            kafka_protocol::records::Compression::None,
        );
        for version in 4..=12 {
            let topics = vec![FetchTopicOut {
                name: "t".into(),
                partitions: vec![
                    FetchPartitionOut {
                        partition: 0,
                        error_code: 0,
                        high_watermark: 3,
                        last_stable_offset: 3,
                        log_start_offset: 0,
                        records_len: records.len() as u32,
                    },
                    FetchPartitionOut {
                        partition: 1,
                        error_code: 1,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        records_len: 0,
                    },
                ],
            }];
            let pieces = encode_fetch_response(version, 42, 0, 0, &topics);
            let mut wire = BytesMut::new();
            for p in pieces {
                match p {
                    Piece::Bytes(b) => wire.extend_from_slice(&b),
                    Piece::Records { len, .. } => {
                        assert_eq!(len as usize, records.len());
                        wire.extend_from_slice(&records);
                    }
                }
            }
            let size = i32::from_be_bytes(wire[0..4].try_into().unwrap()) as usize;
            assert_eq!(size, wire.len() - 4, "v{version}");
            let mut body = wire.freeze().slice(4..);
            let hv = if version >= 12 { 1 } else { 0 };
            let header = ResponseHeader::decode(&mut body, hv).unwrap();
            assert_eq!(header.correlation_id, 42);
            let resp = FetchResponse::decode(&mut body, version).unwrap();
            let p0 = &resp.responses[0].partitions[0];
            assert_eq!(
                p0.records.as_ref().unwrap().as_ref(),
                records.as_ref(),
                "v{version}"
            );
            assert_eq!(p0.high_watermark, 3);
            assert_eq!(resp.responses[0].partitions[1].error_code, 1);
            assert_eq!(body.len(), 0, "v{version} trailing bytes");
        }
    }
}
