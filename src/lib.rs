//! corelog: a Kafka-API-compatible, thread-per-core message broker.
//! Layers (a module imports only from layers below it) are described in
//! docs/architecture.md.

pub mod cluster;
pub mod config;
pub mod group;
pub mod io;
pub mod model;
pub mod protocol;
pub mod replication;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod tools;
