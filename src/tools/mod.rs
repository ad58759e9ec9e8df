//! Layer 5: command-line tools that talk to a running broker over the Kafka
//! protocol (never through broker internals), so they work against any
//! Kafka-compatible broker.

pub mod client;
pub mod groups;
