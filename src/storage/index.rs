//! Sparse indexes of one segment, kept in memory and persisted in Kafka's
//! entry layout: `.index` holds (relative offset u32, position u32) every
//! `index_interval_bytes`, `.timeindex` holds (timestamp i64, relative
//! offset u32) whenever the segment's max timestamp grows past an interval.

#[derive(Default, Clone, Debug)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Adds an entry; one that does not grow both fields is skipped (the
    /// index is sparse, so a missing entry only lengthens a scan).
    pub fn push(&mut self, rel: u32, pos: u32) {
        if let Some(&(last_rel, last_pos)) = self.entries.last() {
            if rel <= last_rel || pos <= last_pos {
                return;
            }
        }
        self.entries.push((rel, pos));
    }

    /// The position of the greatest entry at or below `rel`, else 0.
    pub fn floor(&self, rel: u32) -> u32 {
        match self.entries.partition_point(|&(r, _)| r <= rel) {
            0 => 0,
            i => self.entries[i - 1].1,
        }
    }

    pub fn truncate_to_pos(&mut self, pos: u32) {
        self.entries.retain(|&(_, p)| p < pos);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 8);
        for &(r, p) in &self.entries {
            out.extend_from_slice(&r.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Loads a persisted index; `None` if it is malformed or points past `size`.
    pub fn from_bytes(bytes: &[u8], size: u64) -> Option<Self> {
        if !bytes.len().is_multiple_of(8) {
            return None;
        }
        let mut idx = Self::default();
        for e in bytes.chunks_exact(8) {
            let rel = u32::from_be_bytes(e[0..4].try_into().ok()?);
            let pos = u32::from_be_bytes(e[4..8].try_into().ok()?);
            if u64::from(pos) >= size {
                return None;
            }
            if let Some(&(lr, lp)) = idx.entries.last() {
                if rel <= lr || pos <= lp {
                    return None;
                }
            }
            idx.entries.push((rel, pos));
        }
        Some(idx)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Default, Clone, Debug)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn push(&mut self, ts: i64, rel: u32) {
        if let Some(&(last_ts, _)) = self.entries.last() {
            if ts <= last_ts {
                return;
            }
        }
        self.entries.push((ts, rel));
    }

    /// The relative offset of the last entry whose timestamp is below `ts`:
    /// every record before it is older than `ts`, so a search starts there.
    pub fn search_start(&self, ts: i64) -> u32 {
        match self.entries.partition_point(|&(t, _)| t < ts) {
            0 => 0,
            i => self.entries[i - 1].1,
        }
    }

    /// The greatest timestamp indexed (entries only grow).
    pub fn last_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|&(t, _)| t)
    }

    pub fn truncate_to_rel(&mut self, rel: u32) {
        self.entries.retain(|&(_, r)| r < rel);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12);
        for &(t, r) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&r.to_be_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(12) {
            return None;
        }
        let mut idx = Self::default();
        for e in bytes.chunks_exact(12) {
            let ts = i64::from_be_bytes(e[0..8].try_into().ok()?);
            let rel = u32::from_be_bytes(e[8..12].try_into().ok()?);
            idx.push(ts, rel);
        }
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_finds_the_greatest_entry_at_or_below() {
        let mut i = OffsetIndex::default();
        i.push(10, 4096);
        i.push(20, 8192);
        assert_eq!(i.floor(5), 0);
        assert_eq!(i.floor(10), 4096);
        assert_eq!(i.floor(19), 4096);
        assert_eq!(i.floor(1000), 8192);
    }

    #[test]
    fn round_trips_and_rejects_entries_past_the_end() {
        let mut i = OffsetIndex::default();
        i.push(1, 100);
        i.push(2, 200);
        let b = i.to_bytes();
        assert_eq!(OffsetIndex::from_bytes(&b, 1000).unwrap().floor(2), 200);
        assert!(OffsetIndex::from_bytes(&b, 150).is_none());
        assert!(OffsetIndex::from_bytes(&b[..7], 1000).is_none());
    }

    #[test]
    fn time_index_search_starts_before_the_target() {
        let mut t = TimeIndex::default();
        t.push(100, 0);
        t.push(200, 10);
        t.push(150, 20); // not monotonic: ignored
        t.push(300, 30);
        assert_eq!(t.search_start(50), 0);
        assert_eq!(t.search_start(250), 10);
        assert_eq!(t.search_start(301), 30);
    }
}
