//! The plain HTTP ceiling for the benchmark: actix-web answering `GET /` with a constant, with
//! the same worker count as authlog, on the same machine. Nothing authlog does can be faster.
//!
//! `plain_http 127.0.0.1:8099 2`

#![forbid(unsafe_code)]

use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:8099".to_owned());
    let workers = args.next().and_then(|w| w.parse().ok()).unwrap_or(2);
    HttpServer::new(|| {
        App::new().route(
            "/",
            web::get().to(|| async {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(r#"{"message":"ok"}"#)
            }),
        )
    })
    .workers(workers)
    .bind(bind)?
    .run()
    .await
}
