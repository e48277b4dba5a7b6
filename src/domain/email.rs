//! An email address, normalised and validated once at the edge so that lookups compare like with like.

use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization as _;
use unicode_security::MixedScript as _;

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
    #[error("must not contain invisible or control characters")]
    Invisible,
    #[error("must not mix scripts (such as Latin and Cyrillic) in one part")]
    MixedScripts,
    #[error("must be a plain address: no quoted local part")]
    Quoted,
    #[error(
        "must have a domain name made of letters, digits and hyphens, with a name as its last label"
    )]
    NotAHostname,
}

impl Email {
    /// Trims surrounding whitespace, applies Unicode NFKC (so fullwidth `ｕｓｅｒ` is `user`),
    /// lowercases, refuses invisible and control characters (zero-width spaces, bidi controls),
    /// maps an internationalised domain to its one ASCII form (UTS #46: `bücher.de` is
    /// `xn--bcher-kva.de`), refuses a local part or domain label that mixes scripts (UTS #39:
    /// `usеr` with a Cyrillic `е`), then validates with the `email_address` crate. Two spellings
    /// that look the same to a person are one address, or one of them is refused, so they can
    /// never be two accounts. (Two addresses each written wholly in a different script, such as
    /// Cyrillic `асе` and Latin `ace`, stay two addresses.)
    ///
    /// Beyond RFC 5322 syntax we require a hostname (letters, digits and hyphens; a dotted name
    /// whose last label is not a number: no `user@localhost`, `ip@127.0.0.1`, `u@ex_ample.com`),
    /// and reject quoted local parts (`"user"@example.com`), domain literals (`user@[10.0.0.1]`)
    /// and display names (`Name <user@example.com>`): none of them is an address a person signs
    /// up with.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let normalized: String = raw.trim().nfkc().collect::<String>().to_lowercase();
        if normalized.is_empty() {
            return Err(EmailError::Empty);
        }
        if normalized.chars().any(is_invisible) {
            return Err(EmailError::Invisible);
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
        let (local, domain) = normalized.rsplit_once('@').ok_or(EmailError::Invalid)?;
        if local.starts_with('"') {
            return Err(EmailError::Quoted);
        }
        let (unicode, mapped) = idna::domain_to_unicode(domain);
        mapped.map_err(|_| EmailError::Invalid)?;
        if !local.is_single_script() || !unicode.split('.').all(|label| label.is_single_script()) {
            return Err(EmailError::MixedScripts);
        }
        let ascii = idna::domain_to_ascii(domain).map_err(|_| EmailError::Invalid)?;
        if !is_hostname(&ascii) {
            return Err(EmailError::NotAHostname);
        }
        let address = format!("{local}@{ascii}");
        if address.len() > MAX_BYTES {
            return Err(EmailError::TooLong);
        }
        Ok(Self(address))
    }

    /// The form [`Email::parse`] gives today to an address read back from the log, which may
    /// have been written under older rules (before domains were mapped to ASCII): what lookups
    /// by email use. ASCII addresses are already in that form.
    pub fn canonical(&self) -> Self {
        if self.0.is_ascii() {
            return self.clone();
        }
        Self::parse(&self.0).unwrap_or_else(|_| self.clone())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An address read back from authlog's own records (the log, a snapshot), which parsed it
    /// when it was written: trusted as it is, like the log's events.
    pub(crate) fn from_record(address: String) -> Self {
        Self(address)
    }
}

/// A DNS hostname in ASCII (after UTS #46): at least two labels of letters, digits and hyphens,
/// none starting or ending with a hyphen, each 1 to 63 bytes, and a last label that is not all
/// digits (so not an IPv4 address).
fn is_hostname(ascii: &str) -> bool {
    let labels: Vec<&str> = ascii.split('.').collect();
    labels.len() >= 2
        && ascii.len() <= 253
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
}

/// Control characters, and the format characters that render as nothing: zero-width spaces
/// and joiners, the soft hyphen, bidirectional controls, the byte order mark.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
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
    #[test]
    fn look_alike_spellings_are_one_address() {
        let plain = Email::parse("user@example.com").expect("valid");
        for raw in [
            "ｕｓｅｒ@ｅｘａｍｐｌｅ.ｃｏｍ",
            " USER@Example.COM ",
            "Ｕser@example.com",
        ] {
            assert_eq!(Email::parse(raw).expect(raw), plain, "{raw}");
        }
        for raw in [
            "us\u{200B}er@example.com",
            "user@exam\u{200D}ple.com",
            "user\u{0}@example.com",
            "\u{202E}user@example.com",
        ] {
            assert_eq!(Email::parse(raw), Err(EmailError::Invisible), "{raw:?}");
        }
    }

    use super::*;

    #[test]
    fn one_form_for_internationalised_domains_and_no_mixed_scripts() {
        let ascii = Email::parse("idn@xn--bcher-kva.de").expect("valid");
        assert_eq!(Email::parse("idn@bücher.de").expect("valid"), ascii);
        assert_eq!(Email::parse("IDN@BÜCHER.DE").expect("valid"), ascii);
        assert_eq!(ascii.as_str(), "idn@xn--bcher-kva.de");
        // One script per part is fine, whichever script it is.
        assert!(Email::parse("иван@пример.рф").is_ok());
        assert!(Email::parse("müller@example.com").is_ok());
        for raw in ["us\u{0435}r@example.com", "user@ex\u{0430}mple.com"] {
            assert_eq!(Email::parse(raw), Err(EmailError::MixedScripts), "{raw}");
        }
        assert_eq!(
            Email::parse("\"user\"@example.com"),
            Err(EmailError::Quoted)
        );
        for raw in ["ip@127.0.0.1", "u@ex_ample.com", "nt@example.123"] {
            assert_eq!(Email::parse(raw), Err(EmailError::NotAHostname), "{raw}");
        }
        for raw in ["h@-example.com", "h@example-.com", "user@[127.0.0.1]"] {
            assert!(Email::parse(raw).is_err(), "{raw}");
        }
        // An address written under the old rules finds today's form.
        let old = Email(String::from("idn@bücher.de"));
        assert_eq!(old.canonical(), ascii);
    }

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
