//! Operations endpoints: liveness, readiness and Prometheus metrics.

use std::time::Duration;

use actix_web::http::header::{CONTENT_TYPE, ContentType};
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::actors::{GetReadiness, Readiness};
use crate::domain::KeyAlgorithm;
use crate::error::{ApiError, ErrorBody};
use crate::events::StoreError;
use crate::metrics::METRICS;

/// A readiness probe gives up on a part that has not answered by then.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize, ToSchema)]
pub(crate) struct Live {
    #[schema(example = "alive")]
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Ready {
    #[schema(example = "ready")]
    status: &'static str,
    /// Users in the directory.
    users: usize,
    /// Position of the last event this instance applied.
    position: i64,
    /// Position of the log's last event, whoever wrote it.
    head: i64,
    /// Events committed that this instance has not applied yet: `head - position`.
    behind: i64,
    /// How long ago the oldest of those committed, in seconds; 0 when `behind` is 0.
    lag_seconds: f64,
}

/// Liveness: 200 while the process runs and serves HTTP.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Live))
)]
pub async fn live() -> HttpResponse {
    // Probed often: a constant body, not a serialisation each time.
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(r#"{"status":"alive"}"#)
}

/// Readiness: 200 only when the event store answers, the directory has been rebuilt, and (with
/// EdDSA) a signing key is active. The body says how far this instance trails the log's head
/// (other instances' appends not applied yet).
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = Ready),
        (status = 503, description = "Not ready; the detail says which part is missing",
            body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (readiness, head) = futures_util::future::join(
        state.registry.send(GetReadiness).timeout(PROBE_TIMEOUT),
        tokio::time::timeout(PROBE_TIMEOUT, head(&state)),
    )
    .await;
    let mut missing: Vec<std::borrow::Cow<'static, str>> = Vec::new();
    let head = match head {
        Ok(Ok(head)) => head,
        _ => {
            missing.push("the event store does not answer".into());
            None
        }
    };
    let ready = match readiness {
        Ok(Readiness::Ready {
            untrusted: Some(untrusted),
            ..
        }) => {
            missing.push(std::borrow::Cow::Owned(format!(
                "{untrusted}: the log holds rows no log-signing key holder appended \
                 (docs/auditing.md); this instance serves the log as it was before them"
            )));
            None
        }
        Ok(Readiness::Ready {
            users, position, ..
        }) => {
            let head = head.unwrap_or(position).max(position);
            let lag_seconds = if head > position {
                tokio::time::timeout(PROBE_TIMEOUT, lag_seconds(&state, position))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default()
            } else {
                0.0
            };
            Some(Ready {
                status: "ready",
                users,
                position,
                head,
                behind: head - position,
                lag_seconds,
            })
        }
        Ok(Readiness::Loading { .. }) => {
            missing.push("the event log has not been replayed yet".into());
            None
        }
        Ok(Readiness::Failed { .. }) => {
            missing.push("the event log cannot be served by this build (see the log)".into());
            None
        }
        Err(_) => {
            missing.push("the registry does not answer".into());
            None
        }
    };
    if ready.is_some()
        && state.keychain.settings().algorithm == KeyAlgorithm::EdDSA
        && state.keychain.current().keys.signing_key().is_none()
    {
        missing.push("no signing key is active yet (see the log)".into());
    }
    match ready {
        Some(ready) if missing.is_empty() => Ok(HttpResponse::Ok().json(ready)),
        _ => Err(ApiError::NotReady(missing.join("; "))),
    }
}

/// The log's head on a store other processes write (which also proves the store answers), or
/// `None` after a plain ping on one this process alone writes.
async fn head(state: &AppState) -> Result<Option<i64>, StoreError> {
    match state.store.head().await? {
        Some(head) => Ok(Some(head)),
        None => state.store.ping().await.map(|()| None),
    }
}

/// Seconds since the oldest event after `position` committed.
async fn lag_seconds(state: &AppState, position: i64) -> Result<f64, StoreError> {
    let oldest = state.store.read_after(position, 1).await?;
    Ok(oldest.first().map_or(0.0, |event| {
        (chrono::Utc::now() - event.recorded_at)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64()
    }))
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String,
        content_type = "text/plain"))
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.store.observe();
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .body(METRICS.render())
}
