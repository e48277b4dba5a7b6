//! Operations endpoints: liveness, readiness and Prometheus metrics.

use std::time::Duration;

use actix_web::http::header::{CONTENT_TYPE, ContentType};
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::actors::{GetReadiness, Readiness};
use crate::error::{ApiError, ErrorBody};
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
    /// Position of the last event applied.
    position: i64,
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

/// Readiness: 200 only when the event store answers and the directory has been rebuilt.
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
    let (readiness, ping) = futures_util::future::join(
        state.registry.send(GetReadiness).timeout(PROBE_TIMEOUT),
        tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()),
    )
    .await;
    let mut missing = Vec::new();
    if !matches!(ping, Ok(Ok(()))) {
        missing.push("the event store does not answer");
    }
    let ready = match readiness {
        Ok(Readiness::Ready { users, position }) => Some(Ready {
            status: "ready",
            users,
            position,
        }),
        Ok(Readiness::Loading { .. }) => {
            missing.push("the event log has not been replayed yet");
            None
        }
        Ok(Readiness::Failed { .. }) => {
            missing.push("the event log cannot be served by this build (see the log)");
            None
        }
        Err(_) => {
            missing.push("the registry does not answer");
            None
        }
    };
    match ready {
        Some(ready) if missing.is_empty() => Ok(HttpResponse::Ok().json(ready)),
        _ => Err(ApiError::NotReady(missing.join("; "))),
    }
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
