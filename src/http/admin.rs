//! The admin API (issue 17): `GET /admin/users`, `GET /admin/users/{id}` and `…/events`,
//! `PUT`/`DELETE
//! /admin/users/{id}/roles/{role}`, and `POST /admin/users/{id}/disable`, `…/enable` and
//! `…/unlock`. Every route requires a valid bearer token whose user holds
//! `admin` ([`RequireRole`]): 401 without one, 403 without the role, before anything else about
//! the request is looked at.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::require::{Admin, RequireRole};
use super::{AppState, log_attempt, request_metadata};
use crate::actors::{Administer, GetStanding, UserChange};
use crate::domain::{Email, Role, SessionId, UserId};
use crate::error::{ApiError, ErrorBody};
use crate::projection::UserEntry;

/// Users per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// What every admin route may answer besides its own outcomes: no valid token, not an admin,
/// or not now. One list, so the routes' documents cannot drift apart.
#[derive(utoipa::IntoResponses)]
#[allow(
    dead_code,
    reason = "the responses' schema; the replies come from ApiError"
)]
enum AdminErrors {
    /// No valid bearer token
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    Unauthorized(ErrorBody),
    /// The caller is not an admin
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The service cannot answer now; retry later
    #[response(
        status = 503,
        headers(("Retry-After" = String, description = "Seconds to wait"))
    )]
    Unavailable(ErrorBody),
}

/// A user, as an admin sees them in a listing.
#[derive(Serialize, ToSchema)]
pub(crate) struct AdminUser {
    #[schema(value_type = uuid::Uuid)]
    id: UserId,
    #[schema(value_type = String, format = "email", example = "user@example.com")]
    email: Email,
    /// When the sign-up committed; for a user brought in by `authlog import`, when the source
    /// says the account was created, if it says.
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime<Utc>,
    /// Sorted.
    #[schema(value_type = Vec<String>, example = json!(["admin"]))]
    roles: Box<[Role]>,
    /// Whether an admin disabled the user (their logins fail, and they have no sessions).
    disabled: bool,
    /// When the last successful login committed; `null` if none has.
    #[schema(value_type = Option<String>, format = DateTime)]
    last_login_at: Option<DateTime<Utc>>,
}

impl From<UserEntry> for AdminUser {
    fn from(user: UserEntry) -> Self {
        Self {
            id: user.id,
            email: user.email,
            created_at: user.created_at,
            roles: user.roles,
            disabled: user.disabled,
            last_login_at: user.last_login_at,
        }
    }
}

/// One of the user's live sessions.
#[derive(Serialize, ToSchema)]
pub(crate) struct AdminSession {
    #[schema(value_type = uuid::Uuid)]
    id: SessionId,
    /// When the login that started it committed.
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime<Utc>,
    /// Its absolute end (its idle timeout may end it sooner).
    #[schema(value_type = String, format = DateTime)]
    expires_at: DateTime<Utc>,
    #[schema(value_type = Option<String>, example = "198.51.100.7")]
    client_ip: Option<String>,
    user_agent: Option<String>,
}

/// Consecutive failed logins from one address since its last success.
#[derive(Serialize, ToSchema)]
pub(crate) struct AdminFailureStreak {
    #[schema(value_type = Option<String>, example = "198.51.100.7")]
    client_ip: Option<String>,
    failures: u32,
    #[schema(value_type = String, format = DateTime)]
    last_failure_at: DateTime<Utc>,
}

/// An address refused now, and for how long.
#[derive(Serialize, ToSchema)]
pub(crate) struct AdminLockedAddress {
    #[schema(value_type = Option<String>, example = "198.51.100.7")]
    client_ip: Option<String>,
    retry_after_seconds: u64,
}

/// The login lockout's state for one user.
#[derive(Serialize, ToSchema)]
pub(crate) struct AdminLockout {
    /// Whether any address is refused now.
    locked: bool,
    /// Addresses refused after consecutive failures, and for how long.
    addresses: Vec<AdminLockedAddress>,
    /// Set while addresses the account never used are refused (too many failures this hour).
    new_addresses_retry_after_seconds: Option<u64>,
}

/// A user, as an admin sees them on their own page.
#[derive(Serialize, ToSchema)]
pub(crate) struct AdminUserDetail {
    #[schema(value_type = uuid::Uuid)]
    id: UserId,
    #[schema(value_type = String, format = "email", example = "user@example.com")]
    email: Email,
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime<Utc>,
    #[schema(value_type = Vec<String>, example = json!(["admin"]))]
    roles: Box<[Role]>,
    disabled: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    last_login_at: Option<DateTime<Utc>>,
    /// Live sessions, oldest first.
    sessions: Vec<AdminSession>,
    /// Failed logins from any address within the last hour.
    failed_logins_last_hour: usize,
    /// Recent failed logins per address, newest first.
    recent_failed_logins: Vec<AdminFailureStreak>,
    lockout: AdminLockout,
}

/// One page of users, in email order.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsersPage {
    users: Vec<AdminUser>,
    /// Pass it as `after` for the next page; `null` on the last page.
    #[schema(example = "user@example.com")]
    next: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsersQuery {
    /// Only emails that start with this (ASCII case ignored).
    #[serde(default)]
    email_prefix: String,
    /// The `next` of the previous page: only emails after it.
    after: Option<String>,
    /// Users per page, 1 to 500 (default 50).
    limit: Option<usize>,
}

/// Who did it, for the event's metadata: the admin's user id, beside the request's address.
fn admin_metadata(req: &HttpRequest, admin: &RequireRole<Admin>) -> crate::events::EventMetadata {
    let mut metadata = request_metadata(req);
    metadata.actor = Some(format!("admin {}", admin.caller.user.user_id));
    metadata
}

/// Lists users in email order, a page at a time.
///
/// Paging is by email (keyset): a listing followed page by page through `next` skips and
/// repeats nobody, whatever sign-ups happen meanwhile (users who sign up behind the cursor
/// appear in a new listing).
#[utoipa::path(
    get,
    path = "/admin/users",
    tag = "admin",
    params(UsersQuery),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "A page of users", body = UsersPage),
        (status = 422, description = "`limit` is not between 1 and 500, or the query is \
            malformed", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn list_users(
    _admin: RequireRole<Admin>,
    query: Result<web::Query<UsersQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query
        .map_err(|error| ApiError::Unprocessable(format!("query: {error}")))?
        .into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit: must be between 1 and {MAX_LIMIT}"
        )));
    }
    let view = state.view.clone();
    // A scan of every user: on the blocking pool, not on this worker.
    let (users, more) =
        web::block(move || view.users_page(&query.email_prefix, query.after.as_deref(), limit))
            .await
            .map_err(|error| ApiError::Internal(error.into()))??;
    let next = more
        .then(|| users.last().map(|user| user.email.as_str().to_owned()))
        .flatten();
    Ok(HttpResponse::Ok().json(UsersPage {
        users: users.into_iter().map(AdminUser::from).collect(),
        next,
    }))
}

/// One user: what the listing shows, plus their live sessions, recent failed logins and lockout
/// state.
#[utoipa::path(
    get,
    path = "/admin/users/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "The user's id")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The user", body = AdminUserDetail),
        (status = 404, description = "No user has this id", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn user_detail(
    _admin: RequireRole<Admin>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user_id = uuid::Uuid::parse_str(&id)
        .map(UserId::from)
        .map_err(|_| ApiError::UserNotFound)?;
    let user = state.view.user(user_id)?.ok_or(ApiError::UserNotFound)?;
    let standing = state
        .registry
        .send(GetStanding { user_id })
        .timeout(state.actor_timeout)
        .await??;
    let mut sessions = state.view.sessions_of(user_id);
    sessions.sort_by_key(|(_, session)| session.started_at);
    let address = |ip: Option<std::net::IpAddr>| ip.map(|ip| ip.to_string());
    let addresses: Vec<AdminLockedAddress> = standing
        .locked_addresses
        .iter()
        .map(|(client, wait)| AdminLockedAddress {
            client_ip: address(*client),
            retry_after_seconds: wait.retry_after_seconds(),
        })
        .collect();
    let new_addresses = standing
        .new_addresses
        .map(|wait| wait.retry_after_seconds());
    Ok(HttpResponse::Ok().json(AdminUserDetail {
        id: user.id,
        email: user.email,
        created_at: user.created_at,
        roles: user.roles,
        disabled: user.disabled,
        last_login_at: user.last_login_at,
        sessions: sessions
            .into_iter()
            .map(|(id, session)| AdminSession {
                id,
                created_at: session.started_at,
                expires_at: session.expires_at,
                client_ip: address(session.client_ip),
                user_agent: session.user_agent.map(String::from),
            })
            .collect(),
        failed_logins_last_hour: standing.failures_last_hour,
        recent_failed_logins: standing
            .streaks
            .into_iter()
            .map(|streak| AdminFailureStreak {
                client_ip: address(streak.client),
                failures: streak.failures,
                last_failure_at: streak.last_failure,
            })
            .collect(),
        lockout: AdminLockout {
            locked: !addresses.is_empty() || new_addresses.is_some(),
            addresses,
            new_addresses_retry_after_seconds: new_addresses,
        },
    }))
}

/// Events per page of a user's stream unless `limit` says otherwise, and the most it may say.
const DEFAULT_EVENTS: usize = 100;
const MAX_EVENTS: usize = 1000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// The `next` of the previous page: only events after this stream version.
    after: Option<i32>,
    /// Events per page, 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// One event of the user's stream, as `authlog events --format jsonl` shows it, with every
/// hash redacted.
#[derive(Serialize, ToSchema)]
pub(crate) struct AdminEvent {
    position: i64,
    stream_version: i32,
    #[schema(example = "LoginSucceeded")]
    event_type: &'static str,
    event_version: i32,
    #[schema(value_type = String, format = DateTime)]
    recorded_at: DateTime<Utc>,
    /// The event's fields; `password_hash` (and any other `…_hash`) is `"<redacted>"`.
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    /// Where the request came from, or who made the change.
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
}

/// A page of one user's events, in stream order.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventsPage {
    events: Vec<AdminEvent>,
    /// Pass it as `after` for the next page; `null` on the last page.
    next: Option<i32>,
}

/// The user's own stream of events (sign-up, logins, sessions, roles, …), oldest first, with
/// password hashes redacted. Read from the log by the `(stream_id, stream_version)` index.
#[utoipa::path(
    get,
    path = "/admin/users/{id}/events",
    tag = "admin",
    params(("id" = String, Path, description = "The user's id"), EventsQuery),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "A page of the user's events", body = EventsPage),
        (status = 404, description = "No user has this id", body = ErrorBody),
        (status = 422, description = "`limit` is not between 1 and 1000, or the query is \
            malformed", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn user_events(
    _admin: RequireRole<Admin>,
    id: web::Path<String>,
    query: Result<web::Query<EventsQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user_id = uuid::Uuid::parse_str(&id)
        .map(UserId::from)
        .map_err(|_| ApiError::UserNotFound)?;
    // Only what this instance has applied: a row past it may be one no log signature covers
    // (docs/auditing.md), and is shown once the registry has checked and applied it.
    let applied = state
        .view
        .user(user_id)?
        .ok_or(ApiError::UserNotFound)?
        .version;
    let query = query
        .map_err(|error| ApiError::Unprocessable(format!("query: {error}")))?
        .into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_EVENTS);
    if !(1..=MAX_EVENTS).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit: must be between 1 and {MAX_EVENTS}"
        )));
    }
    let mut events = state
        .store
        .read_stream(user_id.as_uuid(), query.after.unwrap_or(0), limit + 1)
        .await
        .map_err(|error| ApiError::Unavailable(error.into()))?;
    events.retain(|event| event.stream_version <= applied);
    let more = events.len() > limit;
    events.truncate(limit);
    let next = more
        .then(|| events.last().map(|event| event.stream_version))
        .flatten();
    let events = events
        .into_iter()
        .map(|event| {
            let mut payload = event.event.payload();
            if let Some(fields) = payload.as_object_mut() {
                for (name, value) in fields.iter_mut() {
                    if name.ends_with("_hash") {
                        *value = serde_json::json!("<redacted>");
                    }
                }
            }
            AdminEvent {
                position: event.position,
                stream_version: event.stream_version,
                event_type: event.event.event_type(),
                event_version: event.event.event_version(),
                recorded_at: event.recorded_at,
                payload,
                metadata: event.metadata.to_json(),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(EventsPage { events, next }))
}

/// Gives the user a role. Idempotent: 204 whether or not they had it.
#[utoipa::path(
    put,
    path = "/admin/users/{id}/roles/{role}",
    tag = "admin",
    params(
        ("id" = String, Path, description = "The user's id"),
        ("role" = String, Path, description = "1 to 32 of a-z, 0-9, '_' and '-'"),
    ),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "The user has the role (`RoleGranted` committed, if they \
            did not have it)"),
        (status = 404, description = "No user has this id", body = ErrorBody),
        (status = 422, description = "Not a valid role name", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn grant_role(
    admin: RequireRole<Admin>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, role) = path.into_inner();
    let change = parse_role(&role).map(UserChange::GrantRole);
    administer("grant_role", admin, &id, change, &req, &state).await
}

/// Takes a role from the user and ends every session of theirs, so no token goes on carrying
/// it. Idempotent: 204 whether or not they had it. The last admin keeps `admin` (409).
#[utoipa::path(
    delete,
    path = "/admin/users/{id}/roles/{role}",
    tag = "admin",
    params(
        ("id" = String, Path, description = "The user's id"),
        ("role" = String, Path, description = "1 to 32 of a-z, 0-9, '_' and '-'"),
    ),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "The user lacks the role (`RoleRevoked` and a \
            `SessionEnded` per session committed, if they had it)"),
        (status = 404, description = "No user has this id", body = ErrorBody),
        (status = 409, description = "The user is the last admin", body = ErrorBody),
        (status = 422, description = "Not a valid role name", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn revoke_role(
    admin: RequireRole<Admin>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, role) = path.into_inner();
    let change = parse_role(&role).map(UserChange::RevokeRole);
    administer("revoke_role", admin, &id, change, &req, &state).await
}

fn parse_role(raw: &str) -> Result<Role, ApiError> {
    Role::parse(raw).map_err(|error| ApiError::Unprocessable(format!("role: {error}")))
}

/// Disables the user: their logins fail as a wrong password does, and every session of theirs
/// ends at once. Idempotent. The last enabled admin cannot be disabled (409).
#[utoipa::path(
    post,
    path = "/admin/users/{id}/disable",
    tag = "admin",
    params(("id" = String, Path, description = "The user's id")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "The user is disabled (`UserDisabled` and a \
            `SessionEnded` per session committed, if they were not)"),
        (status = 404, description = "No user has this id", body = ErrorBody),
        (status = 409, description = "The user is the last enabled admin", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn disable(
    admin: RequireRole<Admin>,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    administer(
        "disable_user",
        admin,
        &id,
        Ok(UserChange::Disable),
        &req,
        &state,
    )
    .await
}

/// Enables a disabled user again: they can log in. Idempotent.
#[utoipa::path(
    post,
    path = "/admin/users/{id}/enable",
    tag = "admin",
    params(("id" = String, Path, description = "The user's id")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "The user is enabled (`UserEnabled` committed, if they \
            were disabled)"),
        (status = 404, description = "No user has this id", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn enable(
    admin: RequireRole<Admin>,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    administer(
        "enable_user",
        admin,
        &id,
        Ok(UserChange::Enable),
        &req,
        &state,
    )
    .await
}

/// Clears the user's login lockout: the failed logins that count towards it, from every
/// address, are forgotten (`LockoutCleared`, always appended, so the log says who unlocked
/// whom).
#[utoipa::path(
    post,
    path = "/admin/users/{id}/unlock",
    tag = "admin",
    params(("id" = String, Path, description = "The user's id")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "`LockoutCleared` committed"),
        (status = 404, description = "No user has this id", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn unlock(
    admin: RequireRole<Admin>,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    administer(
        "unlock_user",
        admin,
        &id,
        Ok(UserChange::ClearLockout),
        &req,
        &state,
    )
    .await
}

/// Erases the user (GDPR Art. 17): every session ends, then `UserErased`, whose append destroys
/// the user's data key. Their email, password hashes, addresses and user agents in the log can
/// no longer be read by anyone, and the email is free to sign up again.
#[utoipa::path(
    delete,
    path = "/admin/users/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "The user's id")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Erased (`SessionEnded` per session, then `UserErased`, \
            committed, and the user's key destroyed)"),
        (status = 404, description = "No user has this id (or it was erased already)",
            body = ErrorBody),
        (status = 409, description = "The user is the last enabled admin", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn erase_user(
    admin: RequireRole<Admin>,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    administer(
        "erase_user",
        admin,
        &id,
        Ok(UserChange::Erase),
        &req,
        &state,
    )
    .await
}

/// Sends the admin's `change` for user `id` to the registry and answers 204 once it has
/// committed; logs the attempt as `action`. An id that is not a UUID is an unknown user.
async fn administer(
    action: &'static str,
    admin: RequireRole<Admin>,
    id: &str,
    change: Result<UserChange, ApiError>,
    req: &HttpRequest,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let result = async {
        let user_id = uuid::Uuid::parse_str(id)
            .map(UserId::from)
            .map_err(|_| ApiError::UserNotFound)?;
        let administer = Administer {
            user_id,
            change: change?,
            metadata: admin_metadata(req, &admin),
        };
        state
            .registry
            .send(administer)
            .timeout(state.actor_timeout)
            .await??;
        Ok(admin.caller.user.user_id)
    }
    .await;
    log_attempt(action, req, result.as_ref().copied());
    result?;
    Ok(HttpResponse::NoContent().finish())
}
