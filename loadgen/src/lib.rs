//! loadgen: an open-loop Kafka load generator. It speaks the Kafka protocol
//! itself (kafka-protocol's message types, its own RecordBatch v2 writer), so
//! it runs against any Kafka-compatible broker; it never links the broker
//! (only `corelog::protocol` and `corelog::model` would be allowed).

pub mod batch;
pub mod ceiling;
pub mod cli;
pub mod cluster;
pub mod compare;
pub mod consumer;
pub mod group;
pub mod producer;
pub mod report;
pub mod run;
pub mod sink;
pub mod stats;
pub mod sweep;
pub mod wire;
pub mod workload;
