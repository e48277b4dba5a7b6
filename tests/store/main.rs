//! The event log and the actors, one test binary: one conformance suite for every store, the
//! guarantees PostgreSQL keeps itself, database faults on a throwaway cluster, the auditors'
//! commands, and the actors driven without HTTP.
//!
//! Every store test talks to a real PostgreSQL (a fresh database per test, dropped afterwards);
//! if none is reachable they fail, never skip.

#[path = "../common/mod.rs"]
mod common;

mod actors;
mod audit;
mod conformance;
mod faults;
mod postgres;
