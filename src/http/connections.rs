//! Connections per client address: one address may hold at most so many at once, so it cannot
//! take every file descriptor the process has.
//!
//! A connection is counted from accept to close ([`ConnectionCounts::on_connect`]). Past the
//! limit it is still accepted (the accept loop cannot refuse by address), but its first request
//! gets 429 and the connection is closed after the reply. Trusted proxies are exempt: every
//! client behind them shares their address.

use std::any::Any;
use std::collections::HashMap;
use std::future::{Ready, ready};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use actix_web::body::EitherBody;
use actix_web::dev::{Extensions, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::ConnectionType;
use actix_web::{Error, ResponseError};
use ipnet::IpNet;
use pin_project_lite::pin_project;

use crate::error::ApiError;

/// Open connections per address, shared by every worker.
pub struct ConnectionCounts {
    /// 0: no limit.
    limit: usize,
    exempt: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in the count, kept in the connection's data until it closes.
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    ip: Option<IpAddr>,
    /// This connection is one too many for its address: its requests are refused.
    over: bool,
}

impl ConnectionCounts {
    pub fn new(limit: usize, exempt: Vec<IpNet>) -> Arc<Self> {
        Arc::new(Self {
            limit,
            exempt,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// For `HttpServer::on_connect`: counts the new connection `io` (a TCP stream).
    pub fn on_connect(self: &Arc<Self>, io: &dyn Any, data: &mut Extensions) {
        let ip = io
            .downcast_ref::<actix_web::rt::net::TcpStream>()
            .and_then(|stream| stream.peer_addr().ok())
            .map(|address| address.ip());
        data.insert(self.open(ip));
    }

    fn open(self: &Arc<Self>, ip: Option<IpAddr>) -> ConnectionSlot {
        let counted = ip.filter(|ip| self.limit > 0 && !self.exempt.iter().any(|n| n.contains(ip)));
        let over = counted.is_some_and(|ip| {
            let mut open = self.lock();
            let count = open.entry(ip).or_default();
            *count += 1;
            *count > self.limit
        });
        ConnectionSlot {
            counts: Arc::clone(self),
            ip: counted,
            over,
        }
    }

    /// Connections `ip` holds now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Only counters are behind the lock; a panic cannot leave them half-updated.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut open = self.counts.lock();
            if let Some(count) = open.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

/// The middleware refusing requests on connections over their address's limit.
pub struct ConnectionLimit;

impl<S, B> Transform<S, ServiceRequest> for ConnectionLimit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = ConnectionLimitService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ConnectionLimitService { service }))
    }
}

pub struct ConnectionLimitService<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for ConnectionLimitService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = Limited<S::Future, B>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let over = req
            .conn_data::<ConnectionSlot>()
            .is_some_and(|slot| slot.over);
        if !over {
            return Limited::Served {
                handler: self.service.call(req),
            };
        }
        let error = ApiError::TooManyRequests {
            retry_after: 1,
            what: "connections from this address",
        };
        let mut response = error.error_response();
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
        Limited::Refused {
            response: Some(req.into_response(response).map_into_right_body()),
        }
    }
}

pin_project! {
    #[project = LimitedProjection]
    pub enum Limited<F, B> {
        Served { #[pin] handler: F },
        Refused { response: Option<ServiceResponse<EitherBody<B>>> },
    }
}

impl<F, B> Future for Limited<F, B>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LimitedProjection::Served { handler } => handler
                .poll(cx)
                .map(|result| result.map(ServiceResponse::map_into_left_body)),
            LimitedProjection::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_over_the_limit_are_marked_and_closing_frees_them() {
        let proxy: IpNet = "10.0.0.0/8".parse().expect("net");
        let counts = ConnectionCounts::new(2, vec![proxy]);
        let client: IpAddr = [198, 51, 100, 7].into();
        let first = counts.open(Some(client));
        let second = counts.open(Some(client));
        let third = counts.open(Some(client));
        assert_eq!((first.over, second.over, third.over), (false, false, true));
        assert_eq!(counts.open_from(client), 3);
        drop((first, third));
        assert!(!counts.open(Some(client)).over, "a place was freed");
        drop(second);
        assert_eq!(counts.open_from(client), 0, "forgotten once idle");
        // Behind a trusted proxy everyone shares its address: never counted.
        let behind: Vec<_> = (0..5)
            .map(|_| counts.open(Some([10, 0, 0, 1].into())))
            .collect();
        assert!(behind.iter().all(|slot| !slot.over));
        // Limit 0: off.
        let off = ConnectionCounts::new(0, Vec::new());
        let slots: Vec<_> = (0..5).map(|_| off.open(Some(client))).collect();
        assert!(slots.iter().all(|slot| !slot.over));
    }
}
