//! authlog: an authentication service whose state is an append-only event log.
//!
//! Sign up, log in for a JWT, and call a protected route, as in the FastAPI tutorial it replaces;
//! but every change is an event in an append-only log (an embedded SQLite file, or PostgreSQL),
//! and the service's memory is a projection of them.
//!
//! # Layout
//! - [`domain`]: pure types that parse input once (`Email`, `Password`, `UserId`).
//! - [`events`]: the event enum, the [`events::EventStore`] trait and its stores (PostgreSQL,
//!   embedded SQLite, in-memory), the hash chain, and the one pager over the log.
//! - [`state`]: the registry's state and its one fold, [`state::State::apply`], over
//!   [`projection`] (the email→user directory and its read view) and [`throttle`] (brute-force
//!   limits, and login turn-taking in [`throttle::turns`]).
//! - [`decide`]: pure decisions: which events a command appends, against committed state.
//! - [`commit`]: group commit as a plain queue.
//! - [`actors`]: [`actors::UserRegistry`] (the only writer), [`actors::TokenActor`] (tokens,
//!   over the pure keys in [`jwt`]) and [`actors::KeyRotator`] (the signing keys' schedule).
//! - [`keyring`]: the signing keys as the log describes them, and their rotation schedule, pure;
//!   [`signing`]: their private halves, made, sealed and opened ([`signing::Keychain`] turns
//!   the log's keys into what TokenActors sign with); [`vault`]: the master key and sealing.
//! - [`sessions`]: refresh tokens, their rotation rule and session lifetimes, as pure rules;
//!   [`clock`]: the time session decisions read (settable in tests).
//! - [`hashing`]: bcrypt on a bounded blocking pool.
//! - [`http`]: routes, extractors and handlers; [`error`]: the one HTTP error type.
//! - [`audit`]: the auditors' commands `events`, `replay`, `verify`; [`operate`]: the
//!   operators' `keys` commands; [`import`]: `authlog import`, users and their bcrypt hashes
//!   from the FastAPI tutorial's table or a JSONL or CSV export.
//! - [`cli`] (flags) and [`config`] (validated settings, and every default), [`startup`] (wiring),
//!   [`telemetry`] (logs), [`metrics`] (Prometheus), [`keyfile`] (the embedded store's generated
//!   keys), [`data_dir`] and [`diagnostics`] (small helpers every layer may use).

#![forbid(unsafe_code)]

pub mod actors;
pub mod audit;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod commit;
pub mod config;
pub mod data_dir;
pub mod decide;
pub mod diagnostics;
pub mod domain;
pub mod error;
pub mod events;
pub mod hashing;
pub mod http;
pub mod import;
pub mod jwt;
pub mod keyfile;
pub mod keyring;
pub mod metrics;
pub mod operate;
pub mod projection;
pub mod sessions;
pub mod signing;
pub mod snapshot;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod vault;
