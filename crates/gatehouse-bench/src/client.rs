//! Opening client WebSockets: URL resolution (once per gateway, not per client), optional source
//! address binding, TLS for `wss://` (one client configuration for every connection), small
//! tungstenite buffers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::error::BenchError;

/// A connected client socket, plain or TLS.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The TLS client configuration for `wss://` URLs: trusting `ca` (PEM) only, or the public web
/// PKI roots without one. Built once per run: a configuration per connection would also cost
/// a root store per connection.
pub(crate) fn tls_config(ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, BenchError> {
    use rustls_pki_types::pem::PemObject;
    let error = |reason: String| BenchError::Config(format!("tls: {reason}"));
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| error(format!("{}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| error(format!("{}: {e}", path.display())))?;
                roots.add(cert).map_err(|e| error(format!("{}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // ring: the provider the servers use too (rustls marks it deprecated for its lack of
    // post-quantum key exchange; see gatehouse_core::tls::ring_provider).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// tungstenite's read and write buffers per client, in bytes (its defaults are 128 KiB each,
/// which would cost gigabytes at tens of thousands of clients).
pub const SOCKET_BUFFER: usize = 4 * 1024;

/// Largest frame a client accepts: far above any frame a scenario produces, small enough that
/// a misbehaving server cannot make the generator allocate without bound.
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// A gateway URL and the socket address it resolved to.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The URL as configured.
    pub url: String,
    /// Where its TCP connections go.
    pub addr: SocketAddr,
}

/// Resolves every URL once, so that connecting N clients costs no N name look-ups.
pub(crate) async fn resolve(urls: &[String]) -> Result<Vec<Endpoint>, BenchError> {
    let mut endpoints = Vec::with_capacity(urls.len());
    for url in urls {
        let error = |reason: String| BenchError::Resolve {
            url: url.clone(),
            reason,
        };
        let request = url.as_str().into_client_request().map_err(|e| error(e.to_string()))?;
        let host = request
            .uri()
            .host()
            .ok_or_else(|| error("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let default_port = if request.uri().scheme_str() == Some("wss") {
            443
        } else {
            80
        };
        let port = request.uri().port_u16().unwrap_or(default_port);
        let mut addrs = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| error(e.to_string()))?;
        let addr = addrs.next().ok_or_else(|| error("no address".into()))?;
        endpoints.push(Endpoint { url: url.clone(), addr });
    }
    Ok(endpoints)
}

/// `base` with `params` (already encoded `key=value` texts) appended to its query.
pub(crate) fn client_url(base: &str, params: &[&str]) -> String {
    let mut url = base.to_owned();
    for param in params.iter().filter(|p| !p.is_empty()) {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(param);
    }
    url
}

/// The WebSocket settings of every client.
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .max_write_buffer_size(64 * SOCKET_BUFFER + MAX_MESSAGE_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// Connects to `addr` (from `source` if given) and completes the WebSocket handshake for `url`
/// within `timeout`. Errors are returned as text: they end up in the report, not in control flow.
pub(crate) async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    url: &str,
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Ws, String> {
    let attempt = async {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("binding source {ip}: {e}"))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        let connector = match (url.starts_with("wss://"), tls) {
            (true, Some(config)) => Some(Connector::Rustls(config.clone())),
            (true, None) => return Err("a wss:// url without a TLS configuration".to_owned()),
            (false, _) => Some(Connector::Plain),
        };
        match tokio_tungstenite::client_async_tls_with_config(url, stream, Some(ws_config()), connector).await {
            Ok((ws, _response)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                    .unwrap_or_default();
                Err(format!(
                    "handshake refused with http {}: {body}",
                    response.status().as_u16()
                ))
            }
            Err(e) => Err(format!("handshake: {e}")),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no handshake within {timeout:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_appended() {
        assert_eq!(client_url("ws://h/ws", &[]), "ws://h/ws");
        assert_eq!(client_url("ws://h/ws", &["uid=b1", ""]), "ws://h/ws?uid=b1");
        assert_eq!(
            client_url("ws://h/ws?x=1", &["uid=b1", "t=2"]),
            "ws://h/ws?x=1&uid=b1&t=2"
        );
    }

    #[tokio::test]
    async fn urls_resolve_once() {
        let endpoints = resolve(&["ws://127.0.0.1:9/ws".to_owned()]).await.unwrap();
        assert_eq!(endpoints[0].addr, "127.0.0.1:9".parse().unwrap());
        assert!(resolve(&["not a url".to_owned()]).await.is_err());
    }
}
