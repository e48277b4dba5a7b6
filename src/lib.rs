//! authlog: an authentication service whose state is an append-only event log.
//!
//! Sign up, log in for a JWT, and call a protected route, as in the FastAPI tutorial it replaces;
//! but every change is an event in an append-only log (an embedded SQLite file, or PostgreSQL),
//! and the service's memory is a projection of them.
//!
//! # Layout
//! - [`domain`]: pure types that parse input once (`Email`, `Password`, `UserId`).
//! - [`events`]: the event enum, the [`events::EventStore`] trait, and its stores: PostgreSQL,
//!   embedded SQLite, in-memory.
//! - [`projection`]: the email→user [`projection::Directory`] and its one `apply` function.
//! - [`decide`]: pure decisions: which events a command appends, against committed state.
//! - [`throttle`]: pure brute-force limits derived from the same events.
//! - [`actors`]: [`actors::UserRegistry`] (the only writer) and [`actors::TokenActor`] (JWTs).
//! - [`hashing`]: bcrypt on a bounded blocking pool.
//! - [`http`]: routes, extractors and handlers; [`error`]: the one HTTP error type.
//! - [`audit`]: the auditors' commands `events`, `replay`, `verify` ([`events::chain`]).
//! - [`config`], [`startup`], [`telemetry`]: settings, wiring, logs; [`keyfile`]: the embedded
//!   store's generated token key; [`metrics`]: Prometheus instruments.

#![forbid(unsafe_code)]

pub mod actors;
pub mod audit;
pub mod config;
pub mod decide;
pub mod domain;
pub mod error;
pub mod events;
pub mod hashing;
pub mod http;
pub mod keyfile;
pub mod metrics;
pub mod projection;
pub mod startup;
pub mod telemetry;
pub mod throttle;
