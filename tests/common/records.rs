//! RecordBatch v2 bytes: built as a producer would, split back into records
//! after a fetch, and walked batch by batch in a `.log` file.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A RecordBatch v2 as a producer would build it: one record per value,
/// record `i` stamped `ts_of(i)`, offsets and sequences counting from 0.
pub fn batch_with(values: &[Vec<u8>], ts_of: impl Fn(usize) -> i64) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: ts_of(i),
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(v.clone())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

/// Records stamped `ts`, `ts+1`, ...
pub fn batch_of_values(values: &[Vec<u8>], ts: i64) -> Bytes {
    batch_with(values, |i| ts + i as i64)
}

/// `n` records whose values are `tag-<i>` padded to `value_bytes`.
pub fn values(tag: &str, n: usize, value_bytes: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut v = format!("{tag}-{i}-").into_bytes();
            v.resize(value_bytes.max(v.len()), b'x');
            v
        })
        .collect()
}

/// Splits fetched bytes into whole batches (a trailing partial batch, which
/// Kafka allows a fetch to end with, is dropped) and decodes their records.
pub fn decode_records(mut bytes: Bytes) -> Vec<Record> {
    let mut out = Vec::new();
    while bytes.len() >= 12 {
        let len = i32::from_be_bytes(bytes[8..12].try_into().unwrap());
        assert!(len > 0, "batch length {len} in fetched bytes");
        let total = 12 + len as usize;
        if total > bytes.len() {
            break;
        }
        let mut one = bytes.split_to(total);
        let set = RecordBatchDecoder::decode(&mut one).expect("decode fetched batch");
        out.extend(set.records);
    }
    out
}

/// (position, length, base offset, last offset) of every batch in a `.log` file.
pub fn batches_in_file(path: &Path) -> Vec<(u64, u64, i64, i64)> {
    let bytes = fs::read(path).expect("read log file");
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 61 <= bytes.len() {
        let b = &bytes[pos..];
        let base = i64::from_be_bytes(b[0..8].try_into().unwrap());
        let len = i32::from_be_bytes(b[8..12].try_into().unwrap()) as usize + 12;
        let delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
        if pos + len > bytes.len() {
            break;
        }
        out.push((pos as u64, len as u64, base, base + i64::from(delta)));
        pos += len;
    }
    out
}
