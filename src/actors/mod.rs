//! The actors: thin message handlers around the plain types that decide (`commit`, `decide`,
//! `state`, `throttle`) and the pure token keys (`jwt`).
//!
//! They are public API: programs and tests can drive them without HTTP.

pub mod registry;
mod reply;
pub mod token;

pub use registry::{
    AdmitSignup, Authenticate, CatchUp, FindUser, GetDirectory, GetReadiness, LoadError, Readiness,
    Register, RegistryError, RegistryView, UserRegistry,
};
pub use reply::Cancellable;
pub use token::{IssueToken, TokenActor, VerifyToken};
