//! `GET /`: the liveness banner the tutorial starts with.

use actix_web::HttpResponse;
use serde_json::json;

pub async fn root() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "message": "Auth API is running" }))
}
