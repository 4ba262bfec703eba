//! What a handshake tells the workers, and who the client is: pure functions over the request,
//! so every rule here is tested without a socket.
//!
//! A worker sees the path, the query, the client's address and only the headers on the
//! gateway's allow-list, within one byte budget: an unauthenticated client cannot make the
//! gateway ship kilobytes of arbitrary headers to a worker for every connection attempt.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use gatehouse_proto::v1::{Header, Open};
use http::HeaderMap;

use crate::config::GatewayConfig;

/// Why a handshake's request is refused before any worker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// Forwarded headers, path and query exceed the byte budget (431).
    TooLarge { bytes: usize, limit: usize },
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy (proxies append the address they saw).
/// A malformed or absent header leaves the peer's address.
pub(crate) fn client_addr(config: &GatewayConfig, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
    if !config.is_trusted_proxy(peer.ip()) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|hop| hop.trim().parse::<IpAddr>())
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    match hops.into_iter().rev().find(|ip| !config.is_trusted_proxy(*ip)) {
        Some(ip) => SocketAddr::new(ip, 0),
        None => peer,
    }
}

/// Builds the open event for the workers, keeping only allowed headers, or refuses a handshake
/// over the byte budget.
pub(crate) fn open_event(
    config: &GatewayConfig,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    client: SocketAddr,
) -> Result<Open, HandshakeError> {
    let mut bytes = path.len() + query.len();
    let mut forwarded = Vec::new();
    for (name, value) in headers {
        if !config.forward_headers.iter().any(|allowed| allowed == name.as_str()) {
            continue;
        }
        bytes += name.as_str().len() + value.len();
        forwarded.push(Header {
            name: name.as_str().to_owned(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        });
    }
    if bytes > config.max_handshake_bytes {
        return Err(HandshakeError::TooLarge {
            bytes,
            limit: config.max_handshake_bytes,
        });
    }
    Ok(Open {
        path: path.to_owned(),
        query: query.to_owned(),
        headers: forwarded,
        remote_addr: client.to_string(),
        insecure_dev: config.insecure_dev_auth,
    })
}

#[cfg(test)]
mod tests {
    use gatehouse_core::ClusterSecret;
    use http::HeaderValue;

    use super::*;

    fn config() -> GatewayConfig {
        let any = "127.0.0.1:0".parse().unwrap();
        GatewayConfig::new(any, any, vec!["r".into()], ClusterSecret::random())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn only_allowed_headers_reach_the_workers() {
        let open = open_event(
            &config(),
            "/ws",
            "token=t",
            &headers(&[
                ("authorization", "Bearer x"),
                ("x-secret-internal", "1"),
                ("cookie", "a=1"),
            ]),
            "192.0.2.1:5000".parse().unwrap(),
        )
        .unwrap();
        let names: Vec<&str> = open.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["authorization", "cookie"]);
        assert_eq!(open.remote_addr, "192.0.2.1:5000");
    }

    #[test]
    fn a_handshake_over_the_byte_budget_is_refused() {
        let mut config = config();
        config.max_handshake_bytes = 1024;
        let big = "x".repeat(1000);
        let refused = open_event(
            &config,
            "/ws",
            &big,
            &headers(&[("cookie", &big)]),
            "192.0.2.1:1".parse().unwrap(),
        );
        assert!(matches!(refused, Err(HandshakeError::TooLarge { limit: 1024, .. })));
        let ignored = open_event(
            &config,
            "/ws",
            "",
            &headers(&[("x-junk", &big)]),
            "192.0.2.1:1".parse().unwrap(),
        );
        assert!(ignored.is_ok(), "headers that are not forwarded cost nothing");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut config = config();
        config.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "198.51.100.7, 10.0.0.9")]);
        let proxy: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        assert_eq!(client_addr(&config, proxy, &h).ip().to_string(), "198.51.100.7");
        let stranger: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        assert_eq!(
            client_addr(&config, stranger, &h),
            stranger,
            "a client cannot claim another address"
        );
        let junk = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_addr(&config, proxy, &junk), proxy);
    }

    proptest::proptest! {
        /// Whatever headers, path and query a client sends, building the open event never
        /// panics, forwards only allowed headers, and either stays within the budget or is
        /// refused as too large.
        #[test]
        fn any_handshake_is_forwarded_within_the_budget_or_refused(
            headers in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["authorization", "cookie", "origin", "user-agent", "x-other", "sec-websocket-protocol", "host"]),
                    "[ -~]{0,3000}",
                ),
                0..40,
            ),
            path in "/[ -~]{0,200}",
            query in "[ -~]{0,3000}",
            budget in 1024usize..20_000,
        ) {
            let mut config = config();
            config.max_handshake_bytes = budget;
            let mut map = HeaderMap::new();
            for (name, value) in &headers {
                map.append(*name, HeaderValue::from_str(value).unwrap());
            }
            match open_event(&config, &path, &query, &map, "192.0.2.1:1".parse().unwrap()) {
                Ok(open) => {
                    let bytes: usize = open.headers.iter().map(|h| h.name.len() + h.value.len()).sum::<usize>()
                        + open.path.len() + open.query.len();
                    proptest::prop_assert!(bytes <= budget);
                    proptest::prop_assert!(open.headers.iter().all(|h| config.forward_headers.contains(&h.name)));
                }
                Err(HandshakeError::TooLarge { bytes, limit }) => proptest::prop_assert!(bytes > limit),
            }
        }

        /// No `X-Forwarded-For` content makes an untrusted peer appear as another address, and a
        /// trusted proxy's header never yields a trusted proxy's address as the client.
        #[test]
        fn forwarded_for_never_lets_a_peer_choose_a_trusted_address(
            header in "[0-9a-f:., ]{0,200}",
            trusted_peer in proptest::bool::ANY,
        ) {
            let mut config = config();
            config.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
            let peer: SocketAddr = if trusted_peer { "10.0.0.1:1".parse().unwrap() } else { "198.51.100.1:1".parse().unwrap() };
            let mut map = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&header) {
                map.append("x-forwarded-for", value);
            }
            let client = client_addr(&config, peer, &map);
            if !trusted_peer {
                proptest::prop_assert_eq!(client, peer);
            } else if client != peer {
                proptest::prop_assert!(!config.is_trusted_proxy(client.ip()));
            }
        }
    }
}
