//! corelog: a Kafka-API-compatible, thread-per-core message broker.
//! Layers (a module imports only from layers below it) are described in
//! docs/architecture.md.

pub mod config;
pub mod model;
pub mod protocol;
