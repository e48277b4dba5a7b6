//! `GET /`: the liveness banner the tutorial starts with.

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub(crate) struct RootResponse {
    #[schema(example = "Auth API is running")]
    message: &'static str,
}

/// Says the service is up.
#[utoipa::path(
    get,
    path = "/",
    tag = "auth",
    responses((status = 200, description = "The service is running", body = RootResponse))
)]
pub async fn root() -> HttpResponse {
    HttpResponse::Ok().json(RootResponse {
        message: "Auth API is running",
    })
}
