//! The actors: thin message handlers around the pure decisions in `decide` and `projection`.
//!
//! They are public API: programs and tests can drive them without HTTP.

pub mod registry;
pub mod token;

pub use registry::{
    AdmitSignup, Authenticate, FindUser, GetDirectory, GetReadiness, LoadError, Readiness,
    Register, RegistryError, UserRegistry,
};
pub use token::{
    AccessToken, Claims, DEFAULT_ISSUER, IssueToken, JwtKeys, JwtSecret, JwtSecretError,
    TokenActor, TokenError, VerifyToken,
};
