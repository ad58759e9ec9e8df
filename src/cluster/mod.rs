//! Layer 4: cluster metadata. On a single node this is the topic table: one
//! writer (shard 0) changes it and persists it, every shard holds a
//! read-only copy that the writer replaces by broadcast.

pub mod controller;
pub mod metadata;
pub mod topics;
