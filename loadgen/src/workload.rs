//! What each message looks like: its size (fixed or drawn from a
//! distribution), its key (none, one of N, unique) and its payload bytes, and
//! which partition it goes to (Kafka's murmur2 for keys, sticky otherwise).

use std::str::FromStr;

use anyhow::{bail, Context, Result};

use crate::batch::STAMP_BYTES;

/// Largest message value loadgen makes.
pub const MESSAGE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Bytes of pre-generated payload values are sliced from.
const PAYLOAD_POOL_BYTES: usize = 2 * MESSAGE_BYTES_MAX;

/// xorshift64*: fast, deterministic from a seed, good enough for workloads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }
}

/// Message value size: `1024`, `uniform:100-2000`, `exp:1024` (exponential
/// with that mean), or `choice:100=0.5,1000=0.4,10000=0.1`.
#[derive(Clone, Debug, PartialEq)]
pub enum SizeDist {
    Fixed(usize),
    Uniform(usize, usize),
    Exp(f64),
    Choice(Vec<(usize, f64)>),
}

impl SizeDist {
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let n = match self {
            SizeDist::Fixed(n) => *n,
            SizeDist::Uniform(lo, hi) => lo + rng.below((hi - lo + 1) as u64) as usize,
            SizeDist::Exp(mean) => (-mean * (1.0 - rng.unit()).ln()) as usize,
            SizeDist::Choice(items) => {
                let mut u = rng.unit();
                let mut pick = items.last().map_or(0, |i| i.0);
                for (size, w) in items {
                    if u < *w {
                        pick = *size;
                        break;
                    }
                    u -= w;
                }
                pick
            }
        };
        n.clamp(STAMP_BYTES, MESSAGE_BYTES_MAX)
    }

    /// The mean size, for rate conversions and labels.
    pub fn mean(&self) -> f64 {
        match self {
            SizeDist::Fixed(n) => *n as f64,
            SizeDist::Uniform(lo, hi) => (lo + hi) as f64 / 2.0,
            SizeDist::Exp(m) => *m,
            SizeDist::Choice(items) => items.iter().map(|(s, w)| *s as f64 * w).sum(),
        }
    }
}

impl FromStr for SizeDist {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let num = |t: &str| parse_bytes(t).with_context(|| format!("message size {s:?}"));
        if let Some(rest) = s.strip_prefix("uniform:") {
            let (lo, hi) = rest.split_once('-').context("uniform:MIN-MAX")?;
            let (lo, hi) = (num(lo)?, num(hi)?);
            if lo > hi {
                bail!("uniform:{lo}-{hi}: min above max");
            }
            return Ok(SizeDist::Uniform(lo, hi));
        }
        if let Some(rest) = s.strip_prefix("exp:") {
            return Ok(SizeDist::Exp(num(rest)? as f64));
        }
        if let Some(rest) = s.strip_prefix("choice:") {
            let mut items = Vec::new();
            for part in rest.split(',') {
                let (size, w) = part.split_once('=').context("choice:SIZE=WEIGHT,...")?;
                items.push((num(size)?, w.trim().parse::<f64>()?));
            }
            let total: f64 = items.iter().map(|i| i.1).sum();
            if items.is_empty() || total <= 0.0 {
                bail!("choice needs positive weights");
            }
            for item in &mut items {
                item.1 /= total;
            }
            return Ok(SizeDist::Choice(items));
        }
        Ok(SizeDist::Fixed(num(s.strip_prefix("fixed:").unwrap_or(s))?))
    }
}

/// `1024`, `64k`, `64KiB`, `1m`, `1MiB` (binary multiples).
pub fn parse_bytes(s: &str) -> Result<usize> {
    let s = s.trim().to_ascii_lowercase();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits_end);
    let n: usize = n.parse().with_context(|| format!("bytes {s:?}"))?;
    let mult = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        other => bail!("unknown byte unit {other:?}"),
    };
    Ok(n * mult)
}

/// Key cardinality: `none`, a number N (keys drawn from N), or `unique`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Keys {
    None,
    Cardinality(u64),
    Unique,
}

impl FromStr for Keys {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => Keys::None,
            "unique" => Keys::Unique,
            n => match n.parse::<u64>() {
                Ok(0) | Err(_) => bail!("keys must be none, unique or a positive count"),
                Ok(n) => Keys::Cardinality(n),
            },
        })
    }
}

/// Payload bytes: `random` (incompressible) or `text` (compresses ~3-4x).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Payload {
    Random,
    Text,
}

impl FromStr for Payload {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "random" => Payload::Random,
            "text" => Payload::Text,
            _ => bail!("payload must be random or text"),
        })
    }
}

/// Pre-generated bytes message values are cut from.
pub fn payload_pool(kind: Payload, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    match kind {
        Payload::Random => (0..PAYLOAD_POOL_BYTES)
            .map(|_| rng.next_u64() as u8)
            .collect(),
        Payload::Text => {
            const WORDS: &[&str] = &[
                "the",
                "broker",
                "appends",
                "a",
                "batch",
                "to",
                "segment",
                "and",
                "acks",
                "when",
                "fsync",
                "returns",
                "consumer",
                "fetches",
                "offset",
                "partition",
                "leader",
                "latency",
                "throughput",
                "record",
                "key",
                "value",
                "timestamp",
                "log",
            ];
            let mut out = Vec::with_capacity(PAYLOAD_POOL_BYTES + 16);
            while out.len() < PAYLOAD_POOL_BYTES {
                out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
                out.push(b' ');
            }
            out.truncate(PAYLOAD_POOL_BYTES);
            out
        }
    }
}

/// Kafka's murmur2, as its default partitioner uses it.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const SEED: u32 = 0x9747_b28c;
    let len = data.len();
    let mut h: u32 = SEED ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's default partition for a key.
pub fn partition_for_key(key: &[u8], partitions: usize) -> usize {
    ((murmur2(key) & 0x7fff_ffff) as usize) % partitions
}

/// Writes the key for message `seq` into `out`; false when messages have no key.
pub fn make_key(keys: Keys, seq: u64, rng: &mut Rng, out: &mut Vec<u8>) -> bool {
    let id = match keys {
        Keys::None => return false,
        Keys::Cardinality(n) => rng.below(n),
        Keys::Unique => seq,
    };
    out.clear();
    out.extend_from_slice(b"key-");
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = id;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn sizes_parse_and_stay_in_bounds() {
        assert_eq!("1k".parse::<SizeDist>().unwrap(), SizeDist::Fixed(1024));
        assert_eq!(
            "uniform:100-200".parse::<SizeDist>().unwrap(),
            SizeDist::Uniform(100, 200)
        );
        let d: SizeDist = "choice:100=1,1000=3".parse().unwrap();
        assert!((d.mean() - 775.0).abs() < 1e-9);
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let n = SizeDist::Exp(500.0).sample(&mut rng);
            assert!((STAMP_BYTES..=MESSAGE_BYTES_MAX).contains(&n));
            let u = SizeDist::Uniform(100, 200).sample(&mut rng);
            assert!((100..=200).contains(&u));
        }
    }

    #[test]
    fn keys_follow_the_cardinality() {
        let mut rng = Rng::new(7);
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for seq in 0..500 {
            assert!(make_key(Keys::Cardinality(10), seq, &mut rng, &mut out));
            seen.insert(out.clone());
        }
        assert_eq!(seen.len(), 10);
        assert!(!make_key(Keys::None, 0, &mut rng, &mut out));
        make_key(Keys::Unique, 1234, &mut rng, &mut out);
        assert_eq!(out, b"key-1234");
    }
}
