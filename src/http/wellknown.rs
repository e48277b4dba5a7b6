//! `/.well-known/jwks.json` and `/.well-known/openid-configuration`: what another service needs
//! to check authlog's tokens itself, with any JOSE library (RFC 7517, RFC 8414).
//!
//! The discovery document serves only what is true of authlog, which is not an OpenID provider:
//! no ID tokens, no authorization endpoint, no client registration (docs/decisions.md, "What
//! discovery serves").

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, ContentType};
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::domain::KeyAlgorithm;

/// Where the JWKS is served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Where the discovery document is served.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Where the log-signing public keys are served.
pub const LOG_KEYS_PATH: &str = "/.well-known/authlog-log-keys.json";

/// One log-signing public key.
#[derive(Serialize, ToSchema)]
pub(crate) struct LogKey {
    /// 1 for the first key; each `LogKeyRotated` names the next.
    #[schema(example = 1)]
    generation: u32,
    /// Ed25519, base64url: what `authlog verify --public-key` takes.
    #[schema(example = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")]
    public_key: String,
}

/// The log-signing keys, oldest first; the last signs now.
#[derive(Serialize, ToSchema)]
pub(crate) struct LogKeys {
    keys: Vec<LogKey>,
}

/// The discovery document, rendered once, and how long both documents may be cached.
#[derive(Debug, Clone)]
pub struct Discovery {
    document: Arc<[u8]>,
    cache_control: String,
}

/// RFC 8414 §2 and OpenID Connect Discovery §3 field names, for the fields authlog can serve
/// truthfully.
#[derive(Serialize, ToSchema)]
pub(crate) struct DiscoveryDocument {
    /// The `iss` of every access token (`AUTHLOG_TOKEN_ISSUER`).
    #[schema(example = "https://auth.example.com")]
    issuer: String,
    #[schema(example = "https://auth.example.com/.well-known/jwks.json")]
    jwks_uri: String,
    /// `POST /login`: the password grant, and the refresh grant.
    #[schema(example = "https://auth.example.com/login")]
    token_endpoint: String,
    #[schema(example = json!(["password", "refresh_token"]))]
    grant_types_supported: [&'static str; 2],
    /// `none`: clients do not authenticate to the token endpoint.
    #[schema(example = json!(["none"]))]
    token_endpoint_auth_methods_supported: [&'static str; 1],
    /// What access tokens are signed with (not registered by RFC 8414, which has no such
    /// field; named as Janssen and others name it).
    #[schema(example = json!(["EdDSA"]))]
    access_token_signing_alg_values_supported: [&'static str; 1],
}

/// One public key (RFC 8037 `OKP`).
#[derive(Serialize, ToSchema)]
#[allow(
    dead_code,
    reason = "the document's schema; the body is rendered by the keychain"
)]
pub(crate) struct JwkSchema {
    #[schema(example = "OKP")]
    kty: String,
    #[schema(example = "Ed25519")]
    crv: String,
    /// The public key, base64url.
    #[schema(example = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")]
    x: String,
    /// Its RFC 7638 thumbprint: the `kid` of the tokens it signs.
    #[schema(example = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")]
    kid: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    use_: String,
    #[schema(example = "EdDSA")]
    alg: String,
}

/// `{"keys": [...]}`.
#[derive(Serialize, ToSchema)]
#[allow(
    dead_code,
    reason = "the document's schema; the body is rendered by the keychain"
)]
pub(crate) struct JwksSchema {
    keys: Vec<JwkSchema>,
}

impl Discovery {
    /// The document for a service reached at `public_url`, issuing tokens as `issuer` with
    /// `algorithm`; both documents may be cached for `max_age`, the signing keys' lead time.
    pub fn new(
        public_url: String,
        issuer: String,
        max_age: Duration,
        algorithm: KeyAlgorithm,
    ) -> Self {
        let document = DiscoveryDocument {
            issuer,
            jwks_uri: format!("{public_url}{JWKS_PATH}"),
            token_endpoint: format!("{public_url}/login"),
            grant_types_supported: ["password", "refresh_token"],
            token_endpoint_auth_methods_supported: ["none"],
            access_token_signing_alg_values_supported: [algorithm.as_str()],
        };
        Self {
            document: serde_json::to_vec(&document).unwrap_or_default().into(),
            cache_control: format!("public, max-age={}", max_age.as_secs()),
        }
    }
}

/// The public keys access tokens are signed with: the one signing now, the next one (published
/// a cache lifetime before it signs), and those that stopped signing while tokens they signed
/// are still valid.
///
/// Check a token with the key its `kid` names, and with that key's `alg` only. HS256 secrets
/// are never published.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "discovery",
    responses(
        (status = 200, description = "The public keys (RFC 7517)", body = JwksSchema,
            headers(("Cache-Control" = String,
                description = "`public, max-age=N`: N is how long ahead of signing a key is \
                    published, so a verifier that honours it always has the signing key"))),
    )
)]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    cached_json(&state, state.keychain.current().jwks.to_vec())
}

/// Where the keys and the token endpoint are, and which grants and algorithms authlog uses
/// (RFC 8414 field names). Only true fields are served: authlog is not an OpenID provider.
#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    tag = "discovery",
    responses(
        (status = 200, description = "Discovery metadata", body = DiscoveryDocument,
            headers(("Cache-Control" = String, description = "`public, max-age=N`"))),
    )
)]
pub async fn openid_configuration(state: web::Data<AppState>) -> HttpResponse {
    cached_json(&state, state.discovery.document.to_vec())
}

/// A JSON document that verifiers may cache for the signing keys' lead time.
fn cached_json(state: &AppState, body: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, state.discovery.cache_control.clone()))
        .content_type(ContentType::json())
        .body(body)
}

/// The public keys the event log is signed with (docs/auditing.md): every append's last row
/// carries an Ed25519 signature over the chain head. An auditor pins generation 1's key (or
/// takes it from `authlog verify`'s output) and checks the log with `authlog verify
/// --public-key`, or with `docs/verify_chain.py`; later keys are vouched for in the log by the
/// key before them.
#[utoipa::path(
    get,
    path = "/.well-known/authlog-log-keys.json",
    tag = "discovery",
    responses(
        (status = 200, description = "The log-signing public keys", body = LogKeys),
        (status = 503, description = "The log has not been replayed yet", body = crate::error::ErrorBody),
    )
)]
pub async fn log_keys(state: web::Data<AppState>) -> Result<HttpResponse, crate::error::ApiError> {
    let not_ready =
        || crate::error::ApiError::NotReady("the event log has not been replayed yet".into());
    let signer = state.store.log_signer().ok_or_else(not_ready)?;
    let (_, generation) = state
        .registry
        .send(crate::actors::GetLogHead)
        .await
        .ok()
        .flatten()
        .ok_or_else(not_ready)?;
    let keys = (1..=generation)
        .map(|generation| LogKey {
            generation,
            public_key: crate::events::signed::encode_key(&signer.public_key(generation)),
        })
        .collect();
    Ok(HttpResponse::Ok().json(LogKeys { keys }))
}
