//! The client's address, used for throttling, event metadata and logs: the TCP peer, or, when
//! the peer is a configured trusted proxy, the address that proxy reports in `X-Forwarded-For`.
//!
//! `X-Forwarded-For` from anyone else is ignored, so rotating it changes nothing.

use std::net::IpAddr;

use actix_web::HttpMessage;
use actix_web::HttpRequest;
use actix_web::dev::ServiceRequest;
use actix_web::http::header::HeaderName;
use ipnet::IpNet;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Stored in the request's extensions by the middleware when it differs from the peer (a trusted
/// proxy forwarded the request); otherwise the peer is the client and nothing is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub Option<IpAddr>);

/// The client of `req`, as resolved by the middleware (the peer if it did not run).
pub fn client_address(req: &HttpRequest) -> Option<IpAddr> {
    req.extensions()
        .get::<ClientAddress>()
        .map_or_else(|| req.peer_addr().map(|addr| addr.ip()), |client| client.0)
}

/// Resolves and records the client of `req`.
pub(crate) fn resolve_request(req: &ServiceRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr().map(|addr| addr.ip());
    if trusted.is_empty() {
        // The common case: no proxy is trusted, so the peer is the client.
        return peer;
    }
    let forwarded: Vec<&str> = req
        .headers()
        .get_all(X_FORWARDED_FOR)
        .filter_map(|value| value.to_str().ok())
        .collect();
    let client = resolve(peer, &forwarded, trusted);
    if client != peer {
        req.extensions_mut().insert(ClientAddress(client));
    }
    client
}

/// Walks `X-Forwarded-For` from the right (the hop nearest to us) while the hop is a trusted
/// proxy; the first untrusted hop is the client. A malformed entry stops the walk at the last
/// trusted hop, which is then taken as the client: never an address a client could forge.
pub fn resolve(peer: Option<IpAddr>, forwarded: &[&str], trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer?;
    if !is_trusted(&client) {
        return Some(client);
    }
    let hops = forwarded
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().expect("ip")
    }

    fn nets(raw: &[&str]) -> Vec<IpNet> {
        raw.iter().map(|net| net.parse().expect("net")).collect()
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let peer = Some(ip("203.0.113.7"));
        assert_eq!(resolve(peer, &["1.2.3.4"], &[]), peer);
        assert_eq!(resolve(peer, &["1.2.3.4"], &nets(&["10.0.0.0/8"])), peer);
    }

    #[test]
    fn behind_trusted_proxies_the_first_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.1/32"]);
        let peer = Some(ip("10.0.0.2"));
        // A client-supplied entry on the left cannot override what the proxy appended.
        assert_eq!(
            resolve(peer, &["6.6.6.6, 198.51.100.9, 192.168.1.1"], &trusted),
            Some(ip("198.51.100.9"))
        );
        assert_eq!(
            resolve(peer, &["6.6.6.6", "198.51.100.9"], &trusted),
            Some(ip("198.51.100.9"))
        );
        // Nothing forwarded: the proxy itself.
        assert_eq!(resolve(peer, &[], &trusted), peer);
        // Garbage stops at the last trusted hop.
        assert_eq!(resolve(peer, &["198.51.100.9, not-an-ip"], &trusted), peer);
    }
}
