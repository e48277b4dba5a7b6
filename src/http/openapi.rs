//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations, and
//! Swagger UI at `/docs`, served from files compiled into the binary.
//!
//! Swagger's Authorize button offers two schemes: paste a token (`bearer`), or log in with email
//! and password (`oauth2`, a password flow whose token URL is `/login`).

use std::sync::LazyLock;

use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, Resource, web};
use utoipa::openapi::security::{
    Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityScheme,
};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::{
    account, admin, health, login, password, profile, refresh, root, sessions, signup, wellknown,
};
use crate::error::ErrorBody;

/// Where the document is served.
pub const SPEC_PATH: &str = "/openapi.json";
/// Where Swagger UI is served; `/docs` redirects here.
pub const DOCS_PATH: &str = "/docs/";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "authlog",
        description = "Sign up, log in for a bearer token and a refresh token, refresh, log \
            out, and call a protected route. Every change is an event in an append-only log; a \
            2xx means the event has committed. Every error body is `{\"detail\": \"...\"}`."
    ),
    paths(
        root::root,
        signup::signup,
        login::login,
        refresh::refresh,
        profile::profile,
        sessions::logout,
        sessions::logout_all,
        sessions::list,
        sessions::revoke,
        password::change,
        account::erase,
        health::live,
        health::ready,
        health::metrics,
        wellknown::jwks,
        wellknown::openid_configuration,
        wellknown::log_keys,
        admin::list_users,
        admin::user_detail,
        admin::erase_user,
        admin::user_events,
        admin::grant_role,
        admin::revoke_role,
        admin::disable,
        admin::enable,
        admin::unlock
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "operations", description = "Health probes and metrics"),
        (name = "admin", description = "Managing users: for callers whose token's user holds \
            the `admin` role (401 without a valid token, 403 without the role)"),
        (name = "discovery", description = "The public keys tokens and the event log are signed \
            with, and where they are: for services that check authlog's tokens themselves, and \
            for auditors")
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The `access_token` from `POST /login`."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "oauth2",
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::Password(Password::with_refresh_url(
                    "/login",
                    Scopes::new(),
                    "/token/refresh",
                ))],
                "Log in with the account's email as `username` (RFC 6749 §4.3).",
            )),
        );
    }
}

/// Built once per process; each worker serves a copy.
static SPEC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// Serves `/openapi.json` and the UI under `/docs/`.
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new(format!("{DOCS_PATH}{{_:.*}}")).url(SPEC_PATH, SPEC.clone())
}

/// `/docs` without the slash: the UI's relative links need it, so redirect.
pub fn docs_redirect() -> Resource {
    super::endpoint("/docs", "GET").route(web::get().to(|| async {
        HttpResponse::PermanentRedirect()
            .insert_header((LOCATION, DOCS_PATH))
            .finish()
    }))
}
