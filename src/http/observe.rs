//! Every request gets an id, a tracing span carrying it (so each log line of the request names
//! it), an `X-Request-Id` response header, its count and latency in the metrics, and the headers
//! every reply carries (`Cache-Control: no-store` unless the handler set one, and
//! `X-Content-Type-Options: nosniff`).
//!
//! It runs on every request, so it does only what those need: the id is a counter (no system
//! call), the span's fields are formatted only if the span is enabled, the metric labels come
//! from small fixed sets (route names, standard methods), never from what a client sends, and
//! the middleware is a plain `Transform` whose future wraps the handler's without a box.

use std::fmt;
use std::future::{Ready, ready};
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::Error;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Method;
use actix_web::http::header::{CACHE_CONTROL, HeaderName, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use ipnet::IpNet;
use pin_project_lite::pin_project;
use tracing::Instrument as _;
use tracing::instrument::Instrumented;
use uuid::Uuid;

use crate::metrics::METRICS;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a random half chosen once per process, so ids from different instances do not
/// collide, and a counter.
static REQUEST_IDS: LazyLock<(u64, AtomicU64)> =
    LazyLock::new(|| (Uuid::new_v4().as_u64_pair().0, AtomicU64::new(0)));

fn next_request_id() -> Uuid {
    let (process, counter) = &*REQUEST_IDS;
    Uuid::from_u64_pair(*process, counter.fetch_add(1, Ordering::Relaxed))
}

/// An optional address, formatted only when a log line is written.
pub(crate) struct Client(pub Option<IpAddr>);

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => Ok(()),
        }
    }
}

/// The `method` label: one of the standard methods, or `other`, so a client inventing methods
/// cannot add series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The middleware, for `App::wrap(Observe::new(trusted_proxies))`.
pub struct Observe {
    /// Proxies whose `X-Forwarded-For` is believed ([`super::client`]).
    trusted: Rc<[IpNet]>,
}

impl Observe {
    pub fn new(trusted: &[IpNet]) -> Self {
        Self {
            trusted: trusted.into(),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = ObserveService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ObserveService {
            service,
            trusted: Rc::clone(&self.trusted),
        }))
    }
}

pub struct ObserveService<S> {
    service: S,
    trusted: Rc<[IpNet]>,
}

impl<S, B> Service<ServiceRequest> for ObserveService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = Observed<S::Future>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let request_id = next_request_id();
        let method = method_label(req.method());
        let client = super::client::resolve_request(&req, &self.trusted);
        // The path only: a query string could carry something a client should not have sent.
        let span = tracing::info_span!(
            "request",
            id = %request_id,
            method = %req.method(),
            path = %req.path(),
            client = %Client(client),
        );
        Observed {
            handler: self.service.call(req).instrument(span),
            request_id,
            method,
            started: Instant::now(),
        }
    }
}

pin_project! {
    /// The handler's future, and what the reply needs once it is ready.
    pub struct Observed<F> {
        #[pin]
        handler: Instrumented<F>,
        request_id: Uuid,
        method: &'static str,
        started: Instant,
    }
}

impl<F, B> Future for Observed<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = match this.handler.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result?,
        };
        let elapsed = this.started.elapsed();
        let status = response.status();
        // Every API route is a named resource (its path), a borrowed name; the documentation UI
        // is `other`, and a request that matched nothing is `unmatched`.
        let route = match response.request().match_name() {
            Some(name) => name,
            None if response.request().match_pattern().is_some() => "other",
            None => "unmatched",
        };
        METRICS.record_request(route, this.method, status.as_u16(), elapsed.as_secs_f64());
        let headers = response.headers_mut();
        let mut id = Uuid::encode_buffer();
        if let Ok(value) = HeaderValue::from_str(this.request_id.hyphenated().encode_lower(&mut id))
        {
            headers.insert(REQUEST_ID, value);
        }
        // Every reply: never cached (they carry tokens and personal data), never sniffed.
        if !headers.contains_key(CACHE_CONTROL) {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        this.handler.span().in_scope(|| {
            tracing::debug!(
                status = status.as_u16(),
                micros = elapsed.as_micros() as u64,
                "request finished"
            );
        });
        Poll::Ready(Ok(response))
    }
}
