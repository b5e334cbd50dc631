//! Where a push service is, and connecting to it: TCP, TLS, then HTTP/2 (ALPN
//! `h2`) or, for a service that does not speak it, HTTP/1.1.
//!
//! APNs and FCM each have one origin, known at start; Web Push has one per
//! browser vendor's push service, learnt from subscriptions' endpoints. Names
//! are resolved when connecting (`smol::net::resolve`: the system resolver on
//! smol's blocking pool, so a slow DNS server stalls that connection and not
//! the hub), and each address is tried in turn.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use async_native_tls::{TlsConnector, TlsStream};
use smol::Async;

use crate::push::http1::Http1;
use crate::push::http2::{self, Http2};

/// The TLS stream every connection runs over.
pub type Tls = TlsStream<Async<std::net::TcpStream>>;

/// An `https://HOST[:PORT]` origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// As in the URL: a name, an IPv4 address, or an IPv6 one in brackets.
    pub host: String,
    pub port: u16,
    /// The address to connect to, when known in advance (resolved at start,
    /// or given by a test); otherwise `host` is resolved at each connection.
    pub addr: Option<SocketAddr>,
}

impl Origin {
    pub fn new(host: &str, port: u16) -> Origin {
        Origin {
            host: host.to_string(),
            port,
            addr: None,
        }
    }

    /// `https://HOST[:PORT]`, with or without a trailing `/`.
    pub fn parse(url: &str) -> Result<Origin, String> {
        let refuse = || format!("`{url}` is not https://HOST[:PORT]");
        let rest = url.strip_prefix("https://").ok_or_else(refuse)?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            return Err(refuse());
        }
        Origin::from_authority(authority).ok_or_else(refuse)
    }

    /// An `https://` URL's origin and its path (with the query, if any).
    pub fn split_url(url: &str) -> Result<(Origin, &str), String> {
        let refuse = || format!("`{url}` is not an https:// URL");
        let rest = url.strip_prefix("https://").ok_or_else(refuse)?;
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        let origin = Origin::from_authority(authority).ok_or_else(refuse)?;
        Ok((origin, path))
    }

    fn from_authority(authority: &str) -> Option<Origin> {
        if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
            return None;
        }
        // An IPv6 literal has colons of its own: the port follows `]`.
        let (host, port) = match authority.rfind(':') {
            Some(at) if !authority[at..].contains(']') => {
                let port = authority[at + 1..].parse().ok().filter(|&p| p != 0)?;
                (&authority[..at], port)
            }
            _ => (authority, 443),
        };
        let bracketed = host.starts_with('[') && host.ends_with(']');
        if host.is_empty() || (host.contains(':') && !bracketed) {
            return None;
        }
        Some(Origin::new(host, port))
    }

    /// `host` or `host:port`, as requests name the origin.
    pub fn authority(&self) -> String {
        if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `https://host[:port]`.
    pub fn url(&self) -> String {
        format!("https://{}", self.authority())
    }

    /// The name the certificate must carry (an IPv6 literal without brackets).
    fn server_name(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// A TLS connector asking for `alpn`, trusting the certificates of `ca_file`
/// (PEM) besides the system's CAs if one is given (tests, proxies).
pub fn tls_connector(alpn: &[&str], ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    let mut tls = TlsConnector::new().request_alpns(alpn);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        // Every certificate of the file: a proxy's CA may come with its chain.
        let cas = native_tls::Certificate::stack_from_pem(&pem)
            .ok()
            .filter(|cas| !cas.is_empty())
            .ok_or_else(|| format!("{} holds no PEM certificate", path.display()))?;
        for ca in cas {
            tls = tls.add_root_certificate(ca);
        }
    }
    Ok(tls)
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    Resolve(String),
    Tcp(std::io::Error),
    Tls(async_native_tls::Error),
    /// TLS worked but the server does not speak HTTP/2 (or broke the handshake).
    Http2(h2::Error),
    /// TLS worked but the server closed the connection at the HTTP/2 preface.
    Http2Closed,
    /// The whole attempt took longer than this.
    TimedOut(Duration),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve(why) => write!(f, "cannot resolve: {why}"),
            ConnectError::Tcp(e) => write!(f, "cannot connect: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            ConnectError::Http2(e) => write!(f, "HTTP/2 handshake failed: {e}"),
            ConnectError::Http2Closed => {
                f.write_str("HTTP/2 handshake failed: the server closed the connection")
            }
            ConnectError::TimedOut(limit) => {
                write!(f, "cannot connect: no connection within {limit:?}")
            }
        }
    }
}

impl std::error::Error for ConnectError {}

/// A TLS connection to `origin`: each of its addresses tried in turn, the
/// first error reported when none answers.
async fn tls(origin: &Origin, connector: &TlsConnector) -> Result<Tls, ConnectError> {
    let addrs = match origin.addr {
        Some(addr) => vec![addr],
        None => smol::net::resolve((origin.server_name(), origin.port))
            .await
            .map_err(|e| ConnectError::Resolve(format!("{}: {e}", origin.host)))?,
    };
    let mut first_error = None;
    for addr in addrs {
        match Async::<std::net::TcpStream>::connect(addr).await {
            Ok(tcp) => {
                return connector
                    .connect(origin.server_name(), tcp)
                    .await
                    .map_err(ConnectError::Tls);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(match first_error {
        Some(e) => ConnectError::Tcp(e),
        None => ConnectError::Resolve(format!("{} has no address", origin.host)),
    })
}

/// An HTTP/2 connection: its sending half and the driver to poll.
pub async fn connect_h2(
    origin: &Origin,
    connector: &TlsConnector,
) -> Result<(Http2, impl Future<Output = Result<(), h2::Error>> + use<>), ConnectError> {
    let stream = tls(origin, connector).await?;
    http2::handshake(stream, origin.authority())
        .await
        .map_err(ConnectError::Http2)?
        .ok_or(ConnectError::Http2Closed)
}

/// An HTTP/1.1 connection, for one request at a time.
pub async fn connect_h1(
    origin: &Origin,
    connector: &TlsConnector,
) -> Result<Http1<Tls>, ConnectError> {
    let stream = tls(origin, connector).await?;
    Ok(Http1::new(stream, origin.authority()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_from_urls() {
        let o = Origin::parse("https://api.push.apple.com").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("api.push.apple.com", 443));
        assert_eq!(o.authority(), "api.push.apple.com");
        let o = Origin::parse("https://localhost:8443/").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("localhost", 8443));
        assert_eq!(o.url(), "https://localhost:8443");
        let o = Origin::parse("https://[::1]:9000").unwrap();
        assert_eq!((o.server_name(), o.port), ("::1", 9000));
        assert_eq!(o.authority(), "[::1]:9000");
        for bad in [
            "http://example.com",
            "https://",
            "https://:443",
            "https://host:0",
            "https://host:99999",
            "https://host:port",
            "https://host/path",
            "https://user@host",
            "https://::1",
            "example.com",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_file_that_holds_no_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("pushhub-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (empty, garbage) = (dir.join("empty.pem"), dir.join("garbage.pem"));
        std::fs::write(&empty, "").unwrap();
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
        for path in [&empty, &garbage, &dir.join("missing.pem")] {
            let e = tls_connector(&["h2"], Some(path)).err().unwrap();
            assert!(e.contains(&path.display().to_string()), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn endpoints_split_into_origin_and_path() {
        let (o, path) =
            Origin::split_url("https://fcm.googleapis.com/fcm/send/abc:def?x=1").unwrap();
        assert_eq!(o.authority(), "fcm.googleapis.com");
        assert_eq!(path, "/fcm/send/abc:def?x=1");
        let (o, path) = Origin::split_url("https://localhost:4443").unwrap();
        assert_eq!((o.port, path), (4443, "/"));
        assert!(Origin::split_url("http://localhost/push").is_err());
        assert!(Origin::split_url("https:///push").is_err());
    }
}
