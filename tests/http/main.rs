//! The HTTP surface, one test binary: the REST contract row by row, the OpenAPI document, the
//! hostile suite, operations (probes, metrics, logs, shutdown), signing keys (JWKS, rotation,
//! `authlog keys`), roles and the admin API, log signatures and checkpoints, and the real binary under `kill -9` and under a login flood.
//!
//! Contract tests run on the embedded store (a fresh temporary directory each); the tests that
//! are about PostgreSQL itself use a fresh database each, dropped afterwards.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod contract;
mod crash;
mod erasure;
mod hardening;
mod hostile;
mod import;
mod instances;
mod keys;
mod openapi;
mod operations;
mod overload;
mod roles;
mod sessions;
mod signatures;
mod snapshots;
