//! What corelog implements: each API key with the version range we answer.
//! ApiVersions advertises exactly this table, nothing more.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;

pub const PRODUCE: i16 = 0;
pub const FETCH: i16 = 1;
pub const LIST_OFFSETS: i16 = 2;
pub const METADATA: i16 = 3;
pub const API_VERSIONS: i16 = 18;
pub const CREATE_TOPICS: i16 = 19;
pub const DELETE_TOPICS: i16 = 20;
pub const DESCRIBE_CONFIGS: i16 = 32;
pub const CREATE_PARTITIONS: i16 = 37;
pub const OFFSET_COMMIT: i16 = 8;
pub const OFFSET_FETCH: i16 = 9;
pub const FIND_COORDINATOR: i16 = 10;
pub const JOIN_GROUP: i16 = 11;
pub const HEARTBEAT: i16 = 12;
pub const LEAVE_GROUP: i16 = 13;
pub const SYNC_GROUP: i16 = 14;
pub const DESCRIBE_GROUPS: i16 = 15;
pub const LIST_GROUPS: i16 = 16;
pub const DELETE_GROUPS: i16 = 42;
pub const OFFSET_DELETE: i16 = 47;
pub const INIT_PRODUCER_ID: i16 = 22;
pub const OFFSET_FOR_LEADER_EPOCH: i16 = 23;
pub const DESCRIBE_CLUSTER: i16 = 60;
pub const ALTER_CONFIGS: i16 = 33;
pub const INCREMENTAL_ALTER_CONFIGS: i16 = 44;

/// (api key, min version, max version) for every API we answer.
pub const SUPPORTED: &[(i16, i16, i16)] = &[
    (PRODUCE, 3, 9),
    (FETCH, 4, 12),
    (LIST_OFFSETS, 1, 7),
    (METADATA, 0, 12),
    (OFFSET_COMMIT, 0, 8),
    (OFFSET_FETCH, 1, 8),
    (FIND_COORDINATOR, 0, 4),
    (JOIN_GROUP, 0, 9),
    (HEARTBEAT, 0, 4),
    (LEAVE_GROUP, 0, 5),
    (SYNC_GROUP, 0, 5),
    (DESCRIBE_GROUPS, 0, 5),
    (LIST_GROUPS, 0, 5),
    (API_VERSIONS, 0, 3),
    (CREATE_TOPICS, 2, 7),
    (DELETE_TOPICS, 1, 6),
    (DESCRIBE_CONFIGS, 1, 4),
    (CREATE_PARTITIONS, 0, 3),
    (DELETE_GROUPS, 0, 2),
    (OFFSET_DELETE, 0, 0),
    (INIT_PRODUCER_ID, 0, 4),
    (OFFSET_FOR_LEADER_EPOCH, 2, 4),
    (DESCRIBE_CLUSTER, 0, 2),
    (ALTER_CONFIGS, 0, 2),
    (INCREMENTAL_ALTER_CONFIGS, 0, 1),
];

pub fn supports(api_key: i16, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|&(k, lo, hi)| k == api_key && (lo..=hi).contains(&version))
}

/// The ApiVersions body: our table, with `error_code` set by the caller.
pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    let keys = SUPPORTED
        .iter()
        .map(|&(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(k)
                .with_min_version(lo)
                .with_max_version(hi)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_advertised_range_is_one_the_codec_can_decode() {
        for &(k, lo, hi) in SUPPORTED {
            let range = ApiKey::try_from(k).unwrap().valid_versions();
            // OffsetCommit v0-1 are decoded by hand (handlers/offset_commit.rs).
            let lo = if k == OFFSET_COMMIT { lo.max(2) } else { lo };
            assert!(range.min <= lo && hi <= range.max, "api {k}");
        }
    }

    #[test]
    fn api_versions_v3_carries_no_default_tagged_fields() {
        use bytes::BytesMut;
        use kafka_protocol::protocol::Encodable;
        let mut buf = BytesMut::new();
        api_versions_response(0).encode(&mut buf, 3).unwrap();
        // The body ends with the top-level tagged-field count, which must be 0.
        assert_eq!(*buf.last().unwrap(), 0);
    }
}
