//! [`RequireRole`]: an extractor that lets a handler run only for a caller holding a role, so a
//! route states its authorization in its signature. authlog's admin routes use it, and so can a
//! service that embeds authlog's actors to protect its own routes.
//!
//! ```no_run
//! use actix_web::{HttpResponse, web};
//! use authlog::http::{Admin, RequireRole};
//!
//! // 401 with `WWW-Authenticate` without a valid token, 403 `{"detail":"Forbidden"}` without
//! // `admin`; otherwise the handler runs, with the caller.
//! async fn audit_report(admin: RequireRole<Admin>) -> HttpResponse {
//!     HttpResponse::Ok().body(format!("hello, admin {}", admin.caller.user.email))
//! }
//!
//! // In an `App` built with authlog's shared state (`authlog::startup::Application` does it):
//! // app.route("/reports", web::get().to(audit_report))
//! # let _ = web::get().to(audit_report);
//! ```
//!
//! A role of one's own is a type naming it:
//!
//! ```
//! use authlog::http::RoleName;
//!
//! pub struct Support;
//! impl RoleName for Support {
//!     const NAME: &'static str = "support";
//! }
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};

use super::auth::{Caller, authorize};
use super::{AppState, BearerToken, Tokens};
use crate::domain::Role;
use crate::error::ApiError;

/// A role a route requires, named by a type: `RequireRole<Admin>`.
pub trait RoleName: 'static {
    /// The role's name: 1 to 32 of `a-z`, `0-9`, `_` and `-`. A name that is not a valid role
    /// can never be granted, so a route requiring it refuses everyone (403).
    const NAME: &'static str;
}

/// The built-in `admin` role.
pub struct Admin;

impl RoleName for Admin {
    const NAME: &'static str = Role::ADMIN;
}

/// The caller of a route that requires the role `R`: their bearer token is valid, its session
/// live, and the log gives them `R` now (a role revoked since the token was issued fails even
/// before the session's end reaches this instance: see [`super::auth`]).
pub struct RequireRole<R: RoleName> {
    pub caller: Caller,
    role: PhantomData<R>,
}

impl<R: RoleName> FromRequest for RequireRole<R> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let token = BearerToken::from_headers(req.headers());
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let tokens = req.app_data::<Tokens>().cloned();
        Box::pin(async move {
            let (Some(state), Some(tokens)) = (state, tokens) else {
                return Err(ApiError::Internal(
                    "RequireRole needs authlog's AppState and WorkerTokens in the app data".into(),
                ));
            };
            let caller = authorize(token, &state, &tokens).await?;
            // Roles are sorted by name, so the name alone finds it, without a `Role` made for it.
            let holds = caller
                .user
                .roles
                .binary_search_by(|role| role.as_str().cmp(R::NAME))
                .is_ok();
            if !holds {
                return Err(ApiError::Forbidden);
            }
            Ok(Self {
                caller,
                role: PhantomData,
            })
        })
    }
}
