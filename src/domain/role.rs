//! A role's name, parsed once: what `RoleGranted` and `RoleRevoked` carry, what access tokens
//! list in `roles`, and what a route may require.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A role: 1 to 32 of `a-z`, `0-9`, `_` and `-`. Lowercase only, so `Admin` and `admin` can
/// never be two roles; [`Role::parse`] refuses rather than folds case, so what an operator typed
/// is what the log holds. `admin` is built in ([`Role::admin`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Role(Box<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a role is 1 to 32 characters of a-z, 0-9, '_' and '-'")]
pub struct RoleError;

impl Role {
    pub const MAX_CHARS: usize = 32;
    /// The built-in role of those who may use the admin API.
    pub const ADMIN: &'static str = "admin";

    pub fn parse(raw: &str) -> Result<Self, RoleError> {
        let valid = (1..=Self::MAX_CHARS).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(raw.into()))
        } else {
            Err(RoleError)
        }
    }

    pub fn admin() -> Self {
        Self(Self::ADMIN.into())
    }

    pub fn is_admin(&self) -> bool {
        &*self.0 == Self::ADMIN
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Role {
    type Error = RoleError;

    fn try_from(raw: String) -> Result<Self, RoleError> {
        Self::parse(&raw)
    }
}

impl From<Role> for String {
    fn from(role: Role) -> Self {
        role.0.into()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Role {
    type Err = RoleError;

    fn from_str(raw: &str) -> Result<Self, RoleError> {
        Self::parse(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_lowercase_letters_digits_underscores_and_dashes_parse() {
        for raw in ["admin", "a", "support_2", "read-only", &"x".repeat(32)] {
            assert_eq!(Role::parse(raw).map(|r| r.to_string()), Ok(raw.to_owned()));
        }
        assert!(Role::admin().is_admin());
        assert!(!Role::parse("admins").expect("valid").is_admin());
    }

    #[test]
    fn anything_else_is_refused_not_folded() {
        for raw in [
            "",
            "Admin",
            "ADMIN",
            "read only",
            "rôle",
            "a.b",
            "a/b",
            " admin",
            &"x".repeat(33),
        ] {
            assert_eq!(Role::parse(raw), Err(RoleError), "{raw:?}");
        }
    }

    #[test]
    fn json_is_the_bare_name_and_is_checked_when_read() {
        let role = Role::parse("support").expect("valid");
        assert_eq!(serde_json::to_string(&role).expect("json"), "\"support\"");
        assert!(serde_json::from_str::<Role>("\"Support\"").is_err());
    }
}
