//! An email address, normalised and validated once at the edge so that lookups compare like with like.

use std::fmt;

use serde::{Deserialize, Serialize};

/// RFC 5321 caps a forward path at 256 octets, including the two angle brackets.
const MAX_BYTES: usize = 254;

/// A trimmed, lowercased, syntactically valid email address.
///
/// The only way to build one from user input is [`Email::parse`]. Deserialising (which reads
/// events back from the log) trusts the log: the address was parsed when the event was written,
/// and replay must not fail if the rules are tightened later.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

/// Why an address was rejected. The messages end up in 422 details, after the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_BYTES} bytes")]
    TooLong,
    #[error("is not a valid email address")]
    Invalid,
}

impl Email {
    /// Trims surrounding whitespace, lowercases, then validates with the `email_address` crate.
    ///
    /// Beyond RFC 5322 syntax we require a dotted domain (no `user@localhost`), and reject domain
    /// literals (`user@[10.0.0.1]`) and display names (`Name <user@example.com>`): none of them
    /// is an address a person signs up with.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let normalized = raw.trim().to_lowercase();
        if normalized.is_empty() {
            return Err(EmailError::Empty);
        }
        if normalized.len() > MAX_BYTES {
            return Err(EmailError::TooLong);
        }
        let options = email_address::Options::default()
            .with_required_tld()
            .without_domain_literal()
            .without_display_text();
        email_address::EmailAddress::parse_with_options(&normalized, options)
            .map_err(|_| EmailError::Invalid)?;
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lowercases_before_validating() {
        let email = Email::parse("  User@Example.COM \n").expect("valid");
        assert_eq!(email.as_str(), "user@example.com");
    }

    #[test]
    fn case_and_space_variants_are_equal() {
        let a = Email::parse("test@example.com").expect("valid");
        let b = Email::parse(" TEST@EXAMPLE.com").expect("valid");
        assert_eq!(a, b);
    }

    #[test]
    fn accepts_ordinary_addresses() {
        for raw in [
            "user@example.com",
            "first.last+tag@sub.example.co.uk",
            "x@a.io",
            "o'brien@example.ie",
        ] {
            assert!(Email::parse(raw).is_ok(), "{raw} should be valid");
        }
    }

    #[test]
    fn rejects_what_nobody_signs_up_with() {
        for raw in [
            "plainaddress",
            "@example.com",
            "user@",
            "user@@example.com",
            "user@exa mple.com",
            "us er@example.com",
            "user@localhost",
            "user@[127.0.0.1]",
            "Name <user@example.com>",
            "user@example..com",
            "user\0@example.com",
            "user@example.com\u{200b}",
        ] {
            assert_eq!(
                Email::parse(raw),
                Err(EmailError::Invalid),
                "{raw:?} should be invalid"
            );
        }
    }

    #[test]
    fn rejects_empty_and_blank() {
        assert_eq!(Email::parse(""), Err(EmailError::Empty));
        assert_eq!(Email::parse("   "), Err(EmailError::Empty));
    }

    #[test]
    fn rejects_overlong() {
        let raw = format!("{}@example.com", "a".repeat(300));
        assert_eq!(Email::parse(&raw), Err(EmailError::TooLong));
    }

    #[test]
    fn parsing_is_idempotent() {
        for raw in ["A@B.CD", " mixed.Case@Example.org ", "x+y@z.example"] {
            let once = Email::parse(raw).expect("valid");
            let twice = Email::parse(once.as_str()).expect("still valid");
            assert_eq!(once, twice);
        }
    }
}
