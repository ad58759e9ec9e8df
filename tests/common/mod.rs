//! Shared by the integration tests: `Broker` runs the real `corelog` binary
//! on a free loopback port with a temp data dir (killed on drop), `Client` is
//! a tiny blocking Kafka client over `std::net::TcpStream` that encodes
//! requests with `kafka-protocol` and reads whole response frames, and
//! `records` builds and splits RecordBatch v2 bytes. Nothing here knows
//! corelog's internals beyond the on-disk layout
//! (`DATA/<topic>-<partition>/<base:020>.log`).

#![allow(dead_code)]

mod broker;
mod client;
mod records;

pub use broker::*;
pub use client::*;
pub use records::*;

use std::time::Duration;

/// Kafka error codes the tests check for.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
}

/// ListOffsets special timestamps.
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

/// Versions the client speaks: the newest corelog advertises.
pub const API_VERSIONS_V: i16 = 3;
pub const METADATA_V: i16 = 12;
pub const CREATE_TOPICS_V: i16 = 7;
pub const PRODUCE_V: i16 = 9;
pub const FETCH_V: i16 = 12;
pub const LIST_OFFSETS_V: i16 = 7;

/// How long any single socket read or broker wait may take before a test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
