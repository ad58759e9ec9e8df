//! RecordBatch v2, written and read by hand so the producer appends each
//! record straight into the batch buffer (no per-record allocation) and the
//! consumer can find the send timestamp in each value without decoding into
//! owned records. Compression uses kafka-protocol's codecs.
//!
//! Byte layout of the 61-byte header: baseOffset i64, batchLength i32,
//! partitionLeaderEpoch i32, magic i8 (=2), crc u32 (CRC32C of everything from
//! attributes on), attributes i16, lastOffsetDelta i32, baseTimestamp i64,
//! maxTimestamp i64, producerId i64, producerEpoch i16, baseSequence i32,
//! recordsCount i32. Each record: length varint, attributes i8,
//! timestampDelta varlong, offsetDelta varint, key (varint length, -1 null),
//! value (varint length), headers count varint.

use anyhow::{bail, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Lz4, Zstd};

pub const HEADER_BYTES: usize = 61;
/// Offset of the attributes field: the CRC covers from here to the end.
const ATTRIBUTES_AT: usize = 21;
const CRC_AT: usize = 17;
const COMPRESSION_MASK: i16 = 0x07;
/// Values carrying a send timestamp start with this magic, then the intended
/// send time as u64 big-endian nanoseconds since the UNIX epoch.
pub const STAMP_MAGIC: &[u8; 8] = b"loadgen1";
pub const STAMP_BYTES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
    Zstd,
}

impl Compression {
    fn attribute(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => Compression::None,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => bail!("compression must be none, lz4 or zstd, not {s:?}"),
        })
    }
}

pub fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

pub fn put_varint(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

/// Reads a zigzag varint; None when the buffer ends inside it.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// One open batch for one partition. Records are appended in place after a
/// header gap that `finish` fills.
pub struct BatchBuilder {
    buf: Vec<u8>,
    records: i32,
    base_timestamp_ms: i64,
    max_timestamp_delta_ms: i64,
    payload_bytes: usize,
}

impl BatchBuilder {
    pub fn new(capacity_bytes: usize, base_timestamp_ms: i64) -> Self {
        let mut buf = Vec::with_capacity(capacity_bytes + HEADER_BYTES);
        buf.resize(HEADER_BYTES, 0);
        Self {
            buf,
            records: 0,
            base_timestamp_ms,
            max_timestamp_delta_ms: 0,
            payload_bytes: 0,
        }
    }

    /// Bytes of the batch so far (header included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Key plus value bytes appended so far.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Encoded size of a record with these fields.
    pub fn record_bytes(&self, timestamp_ms: i64, key: Option<&[u8]>, value_len: usize) -> usize {
        let body = self.body_len(timestamp_ms - self.base_timestamp_ms, key, value_len);
        varint_len(body as i64) + body
    }

    fn body_len(&self, ts_delta: i64, key: Option<&[u8]>, value_len: usize) -> usize {
        let key_len = key.map_or(1, |k| varint_len(k.len() as i64) + k.len());
        1 + varint_len(ts_delta)
            + varint_len(i64::from(self.records))
            + key_len
            + varint_len(value_len as i64)
            + value_len
            + 1
    }

    /// Appends one record whose value is `stamp` (may be empty) followed by
    /// `value_rest`.
    pub fn append(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        stamp: &[u8],
        value_rest: &[u8],
    ) {
        let value_len = stamp.len() + value_rest.len();
        let ts_delta = (timestamp_ms - self.base_timestamp_ms).max(0);
        let body = self.body_len(ts_delta, key, value_len);
        put_varint(&mut self.buf, body as i64);
        self.buf.push(0);
        put_varint(&mut self.buf, ts_delta);
        put_varint(&mut self.buf, i64::from(self.records));
        match key {
            Some(k) => {
                put_varint(&mut self.buf, k.len() as i64);
                self.buf.extend_from_slice(k);
            }
            None => put_varint(&mut self.buf, -1),
        }
        put_varint(&mut self.buf, value_len as i64);
        self.buf.extend_from_slice(stamp);
        self.buf.extend_from_slice(value_rest);
        self.buf.push(0);
        self.records += 1;
        self.max_timestamp_delta_ms = self.max_timestamp_delta_ms.max(ts_delta);
        self.payload_bytes += key.map_or(0, <[u8]>::len) + value_len;
    }

    /// Fills in the header (compressing the records if asked) and returns the
    /// finished batch.
    pub fn finish(mut self, compression: Compression) -> Result<Bytes> {
        assert!(self.records > 0, "an empty batch is never sent");
        if compression != Compression::None {
            let mut out = BytesMut::with_capacity(self.buf.len() / 2 + HEADER_BYTES);
            out.extend_from_slice(&[0u8; HEADER_BYTES]);
            let records = &self.buf[HEADER_BYTES..];
            let fill = |tmp: &mut BytesMut| -> Result<()> {
                tmp.extend_from_slice(records);
                Ok(())
            };
            match compression {
                Compression::Lz4 => Lz4::compress(&mut out, fill)?,
                Compression::Zstd => Zstd::compress(&mut out, fill)?,
                Compression::None => unreachable!(),
            }
            self.buf = out.to_vec();
        }
        let total = self.buf.len();
        let h = &mut self.buf[..HEADER_BYTES];
        h[0..8].copy_from_slice(&0i64.to_be_bytes());
        h[8..12].copy_from_slice(&((total - 12) as i32).to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        h[16] = 2;
        h[21..23].copy_from_slice(&compression.attribute().to_be_bytes());
        h[23..27].copy_from_slice(&(self.records - 1).to_be_bytes());
        h[27..35].copy_from_slice(&self.base_timestamp_ms.to_be_bytes());
        let max_ts = self.base_timestamp_ms + self.max_timestamp_delta_ms;
        h[35..43].copy_from_slice(&max_ts.to_be_bytes());
        h[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        h[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        h[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        h[57..61].copy_from_slice(&self.records.to_be_bytes());
        let crc = crc32c::crc32c(&self.buf[ATTRIBUTES_AT..]);
        self.buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(Bytes::from(self.buf))
    }
}

/// What a consumer learns from one batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchInfo {
    pub next_offset: i64,
    pub batch_bytes: usize,
}

/// Walks the complete batches in a Fetch partition's record bytes (a
/// trailing partial batch is ignored, as Kafka allows). For each record at or
/// after `from_offset`, calls `on_record(payload_bytes, stamp_ns)`.
pub fn walk_batches(
    records: &[u8],
    from_offset: i64,
    want_records: bool,
    mut on_record: impl FnMut(usize, Option<u64>),
) -> Result<Vec<BatchInfo>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while records.len() - pos >= HEADER_BYTES {
        let b = &records[pos..];
        let base_offset = i64::from_be_bytes(b[0..8].try_into()?);
        let batch_len = i32::from_be_bytes(b[8..12].try_into()?);
        if batch_len < (HEADER_BYTES - 12) as i32 {
            bail!("batch length {batch_len} at offset {base_offset}");
        }
        let total = batch_len as usize + 12;
        if total > b.len() {
            break;
        }
        if b[16] != 2 {
            bail!("batch magic {} at offset {base_offset}", b[16]);
        }
        let attributes = i16::from_be_bytes(b[21..23].try_into()?);
        let last_delta = i32::from_be_bytes(b[23..27].try_into()?);
        if want_records {
            let body = &b[HEADER_BYTES..total];
            walk_records(attributes, body, base_offset, from_offset, &mut on_record)?;
        }
        out.push(BatchInfo {
            next_offset: base_offset + i64::from(last_delta) + 1,
            batch_bytes: total,
        });
        pos += total;
    }
    Ok(out)
}

fn walk_records(
    attributes: i16,
    body: &[u8],
    base_offset: i64,
    from_offset: i64,
    on_record: &mut impl FnMut(usize, Option<u64>),
) -> Result<()> {
    let control = attributes & 0x20 != 0;
    if control {
        return Ok(());
    }
    let mut plain = BytesMut::new();
    let body: &[u8] = match attributes & COMPRESSION_MASK {
        0 => body,
        codec => {
            let mut src = Bytes::copy_from_slice(body);
            let copy = |b: &mut Bytes| -> Result<()> {
                plain.extend_from_slice(b);
                Ok(())
            };
            match codec {
                3 => Lz4::decompress(&mut src, copy)?,
                4 => Zstd::decompress(&mut src, copy)?,
                other => bail!("compression codec {other} is not supported by loadgen"),
            }
            &plain
        }
    };
    let mut pos = 0;
    while pos < body.len() {
        let len = get_varint(body, &mut pos).ok_or_else(|| anyhow::anyhow!("record length"))?;
        let end = pos + usize::try_from(len)?;
        if end > body.len() {
            bail!("record overruns its batch");
        }
        let mut p = pos + 1; // attributes
        let truncated = || anyhow::anyhow!("truncated record");
        get_varint(body, &mut p).ok_or_else(truncated)?; // timestamp delta
        let offset_delta = get_varint(body, &mut p).ok_or_else(truncated)?;
        let key_len = get_varint(body, &mut p).ok_or_else(truncated)?;
        let key_bytes = key_len.max(0) as usize;
        p += key_bytes;
        let value_len = get_varint(body, &mut p).ok_or_else(truncated)?;
        let value_bytes = value_len.max(0) as usize;
        if p + value_bytes > end {
            bail!("record value overruns its record");
        }
        if base_offset + offset_delta >= from_offset {
            let value = &body[p..p + value_bytes];
            let stamp = (value.len() >= STAMP_BYTES && &value[..8] == STAMP_MAGIC)
                .then(|| u64::from_be_bytes(value[8..16].try_into().unwrap_or_default()));
            on_record(key_bytes + value_bytes, stamp);
        }
        pos = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn build(compression: Compression) -> Bytes {
        let mut b = BatchBuilder::new(4096, 1_700_000_000_000);
        for i in 0..5u64 {
            let mut stamp = STAMP_MAGIC.to_vec();
            stamp.extend_from_slice(&(1000 + i).to_be_bytes());
            let key = format!("k{i}");
            let key = (i % 2 == 0).then_some(key.as_bytes());
            b.append(1_700_000_000_000 + i as i64, key, &stamp, b"payload");
        }
        b.finish(compression).unwrap()
    }

    #[test]
    fn batches_decode_with_kafka_protocol_for_every_codec() {
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut bytes = build(c);
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_eq!(set.records.len(), 5);
            assert_eq!(set.records[4].offset, 4);
            assert_eq!(set.records[4].timestamp, 1_700_000_000_004);
            assert_eq!(set.records[2].key.as_deref(), Some(&b"k2"[..]));
            assert!(set.records[1].key.is_none());
            assert_eq!(&set.records[3].value.as_ref().unwrap()[16..], b"payload");
        }
    }

    #[test]
    fn walker_finds_stamps_and_skips_records_before_the_fetch_offset() {
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut both = build(c).to_vec();
            both.extend_from_slice(&build(c)[..30]); // partial trailing batch
            let mut seen = Vec::new();
            let infos =
                walk_batches(&both, 2, true, |bytes, stamp| seen.push((bytes, stamp))).unwrap();
            assert_eq!(infos.len(), 1);
            assert_eq!(infos[0].next_offset, 5);
            assert_eq!(seen.len(), 3);
            assert_eq!(seen[0], (2 + 23, Some(1002)));
            assert_eq!(seen[1], (23, Some(1003)));
        }
    }

    #[test]
    fn record_bytes_predicts_the_encoded_size() {
        let mut b = BatchBuilder::new(1024, 0);
        let before = b.len();
        let predicted = b.record_bytes(300, Some(b"key"), 1000);
        b.append(300, Some(b"key"), &[], &[7u8; 1000]);
        assert_eq!(b.len() - before, predicted);
    }
}
