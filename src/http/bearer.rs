//! Reads the bearer token from the `Authorization` header, and from nowhere else.
//!
//! Query strings and cookies are never consulted (RFC 6750 §2.3 discourages the former; the latter
//! invite CSRF). The scheme name is case-insensitive (RFC 7235 §2.1).

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::{AUTHORIZATION, HeaderMap};
use actix_web::{FromRequest, HttpRequest};

use crate::error::ApiError;

/// Far beyond any token authlog issues: a longer `Authorization` header is rejected before any
/// decoding.
pub const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// The raw token from `Authorization: Bearer <token>`, not yet verified.
pub struct BearerToken(String);

impl BearerToken {
    pub fn into_string(self) -> String {
        self.0
    }

    /// "Not authenticated" when no bearer token was offered; "Invalid or expired token" when one
    /// was offered but cannot be right (two headers, stray words, oversized, not ASCII).
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut values = headers.get_all(AUTHORIZATION);
        let value = match (values.next(), values.next()) {
            (None, _) => return Err(ApiError::NotAuthenticated),
            (Some(_), Some(_)) => return Err(ApiError::InvalidToken),
            (Some(value), None) => value,
        };
        if value.len() > MAX_AUTHORIZATION_BYTES {
            return Err(ApiError::InvalidToken);
        }
        // Visible ASCII, spaces and tabs only (what `HeaderValue::to_str` admits).
        let bytes = value.as_bytes();
        if !every_byte(bytes, |b| (b == b'\t') | (b' '..=b'~').contains(&b)) {
            return Err(ApiError::InvalidToken);
        }
        let (scheme, rest) = match bytes.iter().position(|&b| b == b' ') {
            Some(space) => (&bytes[..space], &bytes[space + 1..]),
            None => (bytes, &[][..]),
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(ApiError::NotAuthenticated);
        }
        // RFC 6750 §2.1 allows one or more spaces after the scheme.
        let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
        let token = &rest[start..];
        if token.is_empty() {
            return Err(ApiError::NotAuthenticated);
        }
        // Visible characters only: no space or tab inside the token.
        if !every_byte(token, |b| b.wrapping_sub(b'!') <= b'~' - b'!') {
            return Err(ApiError::InvalidToken);
        }
        // ASCII throughout, so this cannot fail.
        let token = std::str::from_utf8(token).map_err(|_| ApiError::InvalidToken)?;
        Ok(Self(token.to_owned()))
    }
}

/// Whether `test` holds for every byte. It looks at them all, without stopping at the first
/// failure, so the compiler can check many bytes at once: this runs on every protected request,
/// over a few hundred bytes.
fn every_byte(bytes: &[u8], test: impl Fn(u8) -> bool) -> bool {
    bytes.iter().fold(true, |all, &b| all & test(b))
}

impl FromRequest for BearerToken {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Self::from_headers(req.headers()))
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn extract(values: &[&str]) -> Result<String, String> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
        }
        BearerToken::from_headers(&headers)
            .map(BearerToken::into_string)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn accepts_the_scheme_in_any_case() {
        for value in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER abc.def.ghi",
            "Bearer  abc.def.ghi",
        ] {
            assert_eq!(extract(&[value]), Ok("abc.def.ghi".into()), "{value:?}");
        }
    }

    #[test]
    fn missing_token_is_not_authenticated() {
        for values in [
            &[][..],
            &["Bearer"],
            &["Basic dXNlcjpwYXNz"],
            &["Token abc"],
        ] {
            assert_eq!(
                extract(values),
                Err("Not authenticated".into()),
                "{values:?}"
            );
        }
    }

    #[test]
    fn malformed_token_is_invalid() {
        let long = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_BYTES));
        for values in [
            &["Bearer abc def"][..],
            &["Bearer a.b.c", "Bearer a.b.c"],
            &[long.as_str()],
        ] {
            assert_eq!(extract(values), Err("Invalid or expired token".into()));
        }
    }
}
