//! The actors: thin message handlers around the plain types that decide (`commit`, `decide`,
//! `state`, `throttle`) and the pure token keys (`jwt`).
//!
//! They are public API: programs and tests can drive them without HTTP.

pub mod registry;
mod reply;
pub mod token;

pub use registry::{
    AdmitSignup, Authenticate, CatchUp, ChangePassword, EndSessions, ExpireSessions, FindUser,
    GetDirectory, GetReadiness, LoadError, Readiness, Refresh, Refreshed, Register, RegistryError,
    RegistryView, RejectRefresh, SessionGrant, Successor, UserRegistry,
};
pub use reply::Cancellable;
pub use token::{IssueToken, MintRefresh, OpenSealed, ReadRefresh, TokenActor, VerifyToken};
