//! Shallow validation of the RecordBatch v2 bytes a producer sends: framing,
//! magic, CRC32C. Records are never decoded or re-encoded on the produce path.

use crate::model::{batch_layout, limits, BatchHeader};

/// One validated batch inside a produce payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSpan {
    pub start: usize,
    pub len: usize,
    pub records: i32,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record set is empty")]
    Empty,
    #[error("batch truncated: {have} bytes, header says {want}")]
    Truncated { have: usize, want: usize },
    #[error("batch length {0} is invalid")]
    BadLength(i32),
    #[error("magic {0} is not 2")]
    BadMagic(i8),
    #[error("crc mismatch: header {header:#x}, computed {computed:#x}")]
    BadCrc { header: u32, computed: u32 },
    #[error("batch of {len} bytes exceeds max.message.bytes {max}")]
    TooLarge { len: usize, max: usize },
    #[error("records count {0} is invalid")]
    BadCount(i32),
}

/// Computes the CRC32C a batch's header should carry.
pub fn batch_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[batch_layout::crc_start..])
}

/// Validates every batch in `records` and returns their spans.
pub fn validate(records: &[u8], message_bytes_max: usize) -> Result<Vec<BatchSpan>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut spans = Vec::with_capacity(1);
    let mut at = 0;
    while at < records.len() {
        let span = validate_one(&records[at..], message_bytes_max)?;
        spans.push(BatchSpan { start: at, ..span });
        at += span.len;
    }
    Ok(spans)
}

fn validate_one(bytes: &[u8], message_bytes_max: usize) -> Result<BatchSpan, BatchError> {
    let header = BatchHeader::new(bytes).ok_or(BatchError::Truncated {
        have: bytes.len(),
        want: limits::batch_header_bytes,
    })?;
    let batch_length = header.batch_length();
    if batch_length < (limits::batch_header_bytes - batch_layout::length_prefix_bytes) as i32 {
        return Err(BatchError::BadLength(batch_length));
    }
    let len = header.total_bytes() as usize;
    if len > bytes.len() {
        return Err(BatchError::Truncated {
            have: bytes.len(),
            want: len,
        });
    }
    if header.magic() != 2 {
        return Err(BatchError::BadMagic(header.magic()));
    }
    if len > message_bytes_max {
        return Err(BatchError::TooLarge {
            len,
            max: message_bytes_max,
        });
    }
    let computed = batch_crc(&bytes[..len]);
    if computed != header.crc() {
        return Err(BatchError::BadCrc {
            header: header.crc(),
            computed,
        });
    }
    let records = header.records_count();
    if records <= 0
        || header.last_offset_delta() != records - 1
        || records > limits::batch_offsets_max
    {
        return Err(BatchError::BadCount(records));
    }
    // An uncompressed batch cannot hold more records than its bytes allow.
    let payload = len - limits::batch_header_bytes;
    if header.compression() == 0
        && (records as usize).saturating_mul(limits::record_bytes_min) > payload
    {
        return Err(BatchError::BadCount(records));
    }
    Ok(BatchSpan {
        start: 0,
        len,
        records,
        last_offset_delta: header.last_offset_delta(),
        max_timestamp: header.max_timestamp(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Builds a real RecordBatch v2 with `n` records, as a client would.
    pub fn make_batch(n: usize, compression: Compression) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: 1_700_000_000_000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![b'v'; 100])),
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
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn accepts_a_client_batch() {
        let b = make_batch(10, Compression::None);
        let spans = validate(&b, 1 << 20).unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].records, 10);
        assert_eq!(spans[0].len, b.len());
    }

    #[test]
    fn rejects_flipped_bit_truncation_magic_and_size() {
        let b = make_batch(3, Compression::None);
        let mut bad = b.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            validate(&bad, 1 << 20),
            Err(BatchError::BadCrc { .. })
        ));
        assert!(matches!(
            validate(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
        let mut magic = b.to_vec();
        magic[batch_layout::magic] = 1;
        assert!(matches!(
            validate(&magic, 1 << 20),
            Err(BatchError::BadMagic(1))
        ));
        assert!(matches!(validate(&b, 10), Err(BatchError::TooLarge { .. })));
        assert!(matches!(validate(&[], 10), Err(BatchError::Empty)));
        let mut neg = b.to_vec();
        neg[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            validate(&neg, 1 << 20),
            Err(BatchError::BadLength(-5))
        ));
    }

    #[test]
    fn accepts_two_batches_back_to_back() {
        let a = make_batch(2, Compression::None);
        let b = make_batch(5, Compression::None);
        let both = [a.as_ref(), b.as_ref()].concat();
        let spans = validate(&both, 1 << 20).unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1].start, a.len());
    }
}
