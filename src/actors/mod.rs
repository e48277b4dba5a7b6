//! The actors: thin message handlers around the plain types that decide (`commit`, `decide`,
//! `state`, `throttle`, `keyring`) and the pure token keys (`jwt`, `signing`).
//!
//! They are public API: programs and tests can drive them without HTTP.

pub mod keys;
pub mod registry;
mod reply;
pub mod token;

pub use crate::decide::{KeyChange, UserChange};
pub use keys::{KeyRotator, RotateError, RotateKeys};
pub use registry::{
    Administer, AdmitSignup, Authenticate, CatchUp, ChangePassword, ChangeSigningKeys, EndSessions,
    EraseAccount, ExpireSessions, FindUser, GetDirectory, GetLogHead, GetReadiness, GetStanding,
    Import, LoadError, Readiness, Refresh, Refreshed, Register, RegistryError, RegistryView,
    RejectRefresh, SessionGrant, Successor, UserRegistry,
};
pub use reply::Cancellable;
pub use token::{IssueToken, MintRefresh, OpenSealed, ReadRefresh, TokenActor, VerifyToken};
