//! Log compaction for topics with `cleanup.policy=compact` (such as
//! `__consumer_offsets`): keep only the latest record of each key in sealed
//! segments. Records keep their offsets; each surviving batch is re-encoded
//! with its original compression and producer fields. Tombstones survive
//! until their segment is older than `delete.retention.ms` (one day).

use std::collections::HashMap;
use std::fs::File;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use crate::io::file;
use crate::model::{limits, BatchHeader};

/// Tombstones older than this are dropped (Kafka's `delete.retention.ms`).
pub const DELETE_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// Calls `f` with every complete batch of the first `size` bytes of `file`.
pub fn for_each_batch(f: &File, size: u64, mut visit: impl FnMut(Bytes)) -> std::io::Result<()> {
    let mut pos = 0u64;
    let mut head = [0u8; limits::batch_header_bytes];
    while pos + head.len() as u64 <= size {
        file::pread(f, &mut head, pos)?;
        let h = BatchHeader::new(&head).expect("header bytes");
        let len = h.total_bytes();
        if len < limits::batch_header_bytes as i64 || pos + len as u64 > size {
            break;
        }
        let mut whole = vec![0u8; len as usize];
        file::pread(f, &mut whole, pos)?;
        visit(Bytes::from(whole));
        pos += len as u64;
    }
    Ok(())
}

fn records_of(batch: Bytes) -> Option<(kafka_protocol::records::Compression, Vec<Record>)> {
    let mut b = batch;
    let set = RecordBatchDecoder::decode(&mut b).ok()?;
    Some((set.compression, set.records))
}

/// The offset of the latest record of every key in these segments.
pub fn latest_offsets(
    segments: &[(std::sync::Arc<File>, u64)],
) -> std::io::Result<HashMap<Bytes, i64>> {
    let mut latest = HashMap::new();
    for (f, size) in segments {
        for_each_batch(f, *size, |batch| {
            if let Some((_, records)) = records_of(batch) {
                for r in records {
                    if let Some(k) = r.key {
                        latest.insert(k, r.offset);
                    }
                }
            }
        })?;
    }
    Ok(latest)
}

/// Rewrites one segment's bytes keeping only live records. Returns the new
/// bytes and how many records were dropped.
pub fn compact_segment(
    f: &File,
    size: u64,
    latest: &HashMap<Bytes, i64>,
    drop_tombstones: bool,
) -> std::io::Result<(Vec<u8>, usize)> {
    let mut out = BytesMut::new();
    let mut dropped = 0usize;
    let mut error = None;
    for_each_batch(f, size, |batch| {
        if error.is_some() {
            return;
        }
        let Some((compression, records)) = records_of(batch.clone()) else {
            // Undecodable (for example an unknown codec): keep as is.
            out.extend_from_slice(&batch);
            return;
        };
        let total = records.len();
        let keep: Vec<Record> = records
            .into_iter()
            .filter(|r| match &r.key {
                None => true,
                Some(k) => {
                    latest.get(k) == Some(&r.offset) && !(drop_tombstones && r.value.is_none())
                }
            })
            .collect();
        dropped += total - keep.len();
        if keep.is_empty() {
            return;
        }
        if keep.len() == total {
            out.extend_from_slice(&batch);
            return;
        }
        if let Err(e) = RecordBatchEncoder::encode(
            &mut out,
            &keep,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        ) {
            error = Some(std::io::Error::other(format!(
                "re-encoding compacted batch: {e}"
            )));
        }
    })?;
    if let Some(e) = error {
        return Err(e);
    }
    Ok((out.to_vec(), dropped))
}
