//! The one JSON body extractor: maps content type, size and syntax problems to the contract's codes.
//!
//! 415 when the body is not declared as JSON, 413 past [`MAX_BODY_BYTES`], 400 when it is not
//! well-formed JSON, 422 when it is JSON of the wrong shape (naming the field and the problem).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{FromRequest, HttpMessage, HttpRequest, mime};
use futures_util::StreamExt;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::error::Category;

use crate::error::ApiError;

/// Credentials fit in a few hundred bytes; anything much larger is not a real client.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// How long a body may take to arrive once the head has. 4 KiB crosses the slowest mobile link
/// in well under a second; a body that is announced and never sent would otherwise hold its
/// connection (and a file descriptor) for ever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A JSON request body, deserialised into `T`.
pub struct JsonBody<T>(pub T);

impl<T> JsonBody<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = body_kind(req) == BodyKind::Json;
        let body = LimitedBody::new(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::UnsupportedMediaType {
                    accepted: "application/json",
                });
            }
            parse(&body.read().await?).map(JsonBody)
        })
    }
}

/// The body types the API reads, as declared by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// `application/json`, or any `application/*+json`, with any parameters (such as `charset`).
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    Other,
}

pub(crate) fn body_kind(req: &HttpRequest) -> BodyKind {
    match req.mime_type() {
        Ok(Some(mime)) if mime.type_() == mime::APPLICATION => {
            if mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON) {
                BodyKind::Json
            } else if mime.subtype() == mime::WWW_FORM_URLENCODED {
                BodyKind::Form
            } else {
                BodyKind::Other
            }
        }
        _ => BodyKind::Other,
    }
}

/// A request body not yet read, to be read whole up to [`MAX_BODY_BYTES`] (else 413).
pub(crate) struct LimitedBody {
    declared_length: Option<u64>,
    payload: Payload,
}

impl LimitedBody {
    pub(crate) fn new(req: &HttpRequest, payload: &mut Payload) -> Self {
        let declared_length = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        Self {
            declared_length,
            payload: payload.take(),
        }
    }

    pub(crate) async fn read(mut self) -> Result<Vec<u8>, ApiError> {
        let too_large = ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        };
        if self
            .declared_length
            .is_some_and(|length| length > MAX_BODY_BYTES as u64)
        {
            return Err(too_large);
        }
        let read = async {
            // Chunked bodies have no declared length: count as they arrive.
            let mut body = Vec::new();
            while let Some(chunk) = self.payload.next().await {
                let chunk = chunk.map_err(|error| {
                    ApiError::MalformedBody(format!("Request body could not be read: {error}"))
                })?;
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(too_large);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        if let Ok(result) = tokio::time::timeout(BODY_TIMEOUT, read).await {
            return result;
        }
        // Keep reading (and discarding) in the background while the 408 goes out. A body whose
        // reader is gone counts as "drainable" to actix-http when it is chunked, and it would
        // keep the connection open waiting for the end; with a reader still there, it closes
        // the connection after the reply, which ends this task too.
        let mut payload = self.payload;
        actix_web::rt::spawn(async move {
            let discard = async { while payload.next().await.is_some() {} };
            let _ = tokio::time::timeout(BODY_TIMEOUT, discard).await;
        });
        Err(ApiError::BodyTimeout {
            seconds: BODY_TIMEOUT.as_secs(),
        })
    }
}

/// Checks the body is well-formed JSON (else 400), then that it is an object of the right shape
/// (else 422, keeping the path to the offending field).
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice::<IgnoredAny>(body)
        .map_err(|error| ApiError::MalformedBody(format!("Malformed JSON: {error}")))?;
    // serde's derived structs also accept arrays (`["a@b.co", "pw"]`); the contract does not.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::Unprocessable(
            "the request body must be a JSON object".to_owned(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let error = error.into_inner();
        if error.classify() != Category::Data {
            // Found only when decoding values, e.g. an escaped lone surrogate ("\ud800").
            return ApiError::MalformedBody(format!("Malformed JSON: {error}"));
        }
        let message = without_position(&error.to_string());
        ApiError::Unprocessable(if path == "." {
            message
        } else {
            format!("{path}: {message}")
        })
    })
}

/// serde_json ends data errors with " at line L column C", which says nothing about a field.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(expecting = "a JSON object")]
    #[allow(dead_code)]
    struct Body {
        email: String,
        password: String,
    }

    fn detail(body: &str) -> (u16, String) {
        match parse::<Body>(body.as_bytes()) {
            Ok(_) => (200, String::new()),
            Err(error) => {
                let status = actix_web::ResponseError::status_code(&error).as_u16();
                (status, error.to_string())
            }
        }
    }

    #[test]
    fn well_formed_bodies_parse() {
        assert_eq!(detail(r#"{"email":"a@b.co","password":"x"}"#).0, 200);
        // Extra fields are ignored, as FastAPI does.
        assert_eq!(
            detail(r#"{"email":"a@b.co","password":"x","extra":1}"#).0,
            200
        );
    }

    #[test]
    fn shape_errors_are_422_and_name_the_field() {
        assert_eq!(
            detail(r#"{"password":"x"}"#),
            (422, "missing field `email`".into())
        );
        let (status, message) = detail(r#"{"email":5,"password":"x"}"#);
        assert_eq!(status, 422);
        assert!(
            message.starts_with("email: invalid type: integer `5`"),
            "{message}"
        );
        let (status, message) = detail(r#"{"email":"a@b.co","password":null}"#);
        assert_eq!(status, 422);
        assert!(
            message.starts_with("password: invalid type: null"),
            "{message}"
        );
        for body in ["[]", r#"["a@b.co","password"]"#, "null", "\"text\"", "42"] {
            assert_eq!(
                detail(body),
                (422, "the request body must be a JSON object".into())
            );
        }
        let (status, message) = detail(r#"{"email":"a@b.co","email":"c@d.co","password":"x"}"#);
        assert_eq!((status, message.as_str()), (422, "duplicate field `email`"));
    }

    #[test]
    fn syntax_errors_are_400() {
        for body in [
            "",
            "{",
            r#"{"email": }"#,
            r#"{"email":"a@b.co","password":"x"} trailing"#,
            "{\"email\": \"\\ud800\"}",
            "{'a': 1}",
        ] {
            assert_eq!(detail(body).0, 400, "{body:?}");
        }
    }
}
