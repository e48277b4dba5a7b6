//! Pure domain types that parse untrusted input once, so nothing downstream re-checks it.
//!
//! No I/O and no actix here: everything in this module is plain data and can be tested alone.

mod email;
mod password;
mod role;
mod session_id;
mod signing_key;
mod user_id;

pub use email::{Email, EmailError};
pub use password::{Password, PasswordError, PasswordHash, UnsupportedHash};
pub use role::{Role, RoleError};
pub use session_id::SessionId;
pub use signing_key::{KeyAlgorithm, KeyId, KeyIdError};
pub use user_id::UserId;
