//! The WebSocket opening handshake (RFC 6455, section 4.2): an HTTP/1.1 GET
//! with `Upgrade: websocket`, answered `101 Switching Protocols`.
//!
//! `parse` is pure: bytes in, the upgrade (or the HTTP error to answer) out.
//! `accept` does the I/O, and hands back any bytes the client sent after its
//! request (a client may send its first frame without waiting for our answer).
//! A request that is not an upgrade gets a short, correct HTTP answer, not a hang.
//! A client that offers the subprotocol `pushhub.v1` gets it back and
//! speaks v1; any other client gets today's answer, byte for byte.

use std::io;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::v1::SUBPROTOCOL;

/// Largest request head accepted. Browsers send well under 2 KiB.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

const MAX_HEADERS: usize = 32;

/// A request that asks for a WebSocket and may get one.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Accept` value to answer with.
    pub accept: String,
    /// The `token` query parameter, if any.
    pub token: Option<String>,
    /// The `Origin` header, which browsers always send.
    pub origin: Option<String>,
    /// The client offered [`SUBPROTOCOL`]: it is answered with it and
    /// speaks v1.
    pub v1: bool,
}

/// Why a request gets an HTTP error instead of a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not HTTP/1.1, or not parseable as HTTP.
    Malformed,
    /// A plain HTTP request, or a WebSocket request missing a required header.
    NotUpgrade,
    /// `Sec-WebSocket-Version` other than 13.
    UnsupportedVersion,
    MethodNotAllowed,
    TooLarge,
    /// A browser page whose `Origin` is not in `--allow-origin`.
    ForbiddenOrigin,
}

impl Rejection {
    /// A short name for counting failures by reason.
    pub fn kind(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::NotUpgrade => "not_upgrade",
            Rejection::UnsupportedVersion => "version",
            Rejection::MethodNotAllowed => "method",
            Rejection::TooLarge => "too_large",
            Rejection::ForbiddenOrigin => "origin",
        }
    }

    /// The complete HTTP response for this rejection.
    pub fn response(self) -> &'static [u8] {
        match self {
            Rejection::Malformed => {
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nbad request\n"
            }
            Rejection::NotUpgrade => {
                b"HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nContent-Type: text/plain\r\nContent-Length: 37\r\n\r\nthis is a pushhub WebSocket endpoint\n"
            }
            Rejection::UnsupportedVersion => {
                b"HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
            }
            Rejection::MethodNotAllowed => {
                b"HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\nAllow: GET\r\nContent-Length: 0\r\n\r\n"
            }
            Rejection::ForbiddenOrigin => {
                b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\norigin not allowed\n"
            }
            Rejection::TooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
        }
    }
}

/// Parses a request head at the start of `buf`. `Ok(None)` means more bytes are
/// needed; `Ok(Some((upgrade, len)))` gives the head's length.
pub fn parse(buf: &[u8]) -> Result<Option<(Upgrade, usize)>, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST_BYTES => {
            return Err(Rejection::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Rejection::TooLarge),
        Err(_) => return Err(Rejection::Malformed),
    };
    if request.version != Some(1) {
        return Err(Rejection::Malformed);
    }
    if request.method != Some("GET") {
        return Err(Rejection::MethodNotAllowed);
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let has_token = |value: Option<&str>, token: &str| {
        value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token(header("upgrade"), "websocket") || !has_token(header("connection"), "upgrade") {
        return Err(Rejection::NotUpgrade);
    }
    if header("sec-websocket-version") != Some("13") {
        return Err(Rejection::UnsupportedVersion);
    }
    let key = header("sec-websocket-key").ok_or(Rejection::NotUpgrade)?;
    // A list that may be split over several header lines (RFC 7230, section
    // 3.2.2); subprotocol names are tokens, compared exactly (RFC 6455, 4.2.2).
    let v1 = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|value| value.split(','))
        .any(|offered| offered.trim() == SUBPROTOCOL);
    let token = request
        .path
        .and_then(|path| path.split_once('?'))
        .and_then(|(_, query)| query.split('&').find_map(|p| p.strip_prefix("token=")))
        .map(str::to_string);
    Ok(Some((
        Upgrade {
            accept: derive_accept_key(key.as_bytes()),
            token,
            origin: header("origin").map(str::to_string),
            v1,
        },
        len,
    )))
}

/// Whether a request from `origin` may connect. Origins compare without a
/// trailing slash and ASCII case-insensitively, as browsers serialize them.
pub fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    match origin {
        _ if allowed.is_empty() => true,
        None => true,
        Some(origin) => {
            let origin = origin.trim_end_matches('/');
            allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
        }
    }
}

/// The `101` answer that completes the handshake; with `v1`, it selects
/// [`SUBPROTOCOL`]. A client that offered only other subprotocols gets
/// none selected, which RFC 6455 allows and browsers accept.
pub fn switching_protocols(accept: &str, v1: bool) -> String {
    let mut answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n"
    );
    if v1 {
        answer.push_str("Sec-WebSocket-Protocol: ");
        answer.push_str(SUBPROTOCOL);
        answer.push_str("\r\n");
    }
    answer.push_str("\r\n");
    answer
}

/// How a handshake ended without a WebSocket.
#[derive(Debug)]
pub enum Failure {
    Rejected(Rejection),
    /// The TLS handshake (wss) failed: not TLS, no shared cipher, a client that
    /// does not trust the certificate, ...
    Tls(io::Error),
    Io(io::Error),
    /// The client closed before sending a whole request.
    Closed,
}

impl Failure {
    /// A short name for counting failures by reason.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Rejected(r) => r.kind(),
            Failure::Tls(_) => "tls",
            Failure::Io(_) => "io",
            Failure::Closed => "closed",
        }
    }
}

/// Reads the request, answers it, and returns the upgrade and whatever the
/// client sent after its request. With `allowed_origins`, a request whose
/// `Origin` is not among them is refused with 403; one without an `Origin`
/// (not a browser) is not.
pub async fn accept(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    allowed_origins: &[String],
) -> Result<(Upgrade, Vec<u8>), Failure> {
    let mut buf = vec![0u8; 1024];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize((buf.len() * 2).min(MAX_REQUEST_BYTES), 0);
        }
        let n = stream.read(&mut buf[filled..]).await.map_err(Failure::Io)?;
        if n == 0 {
            return Err(Failure::Closed);
        }
        filled += n;
        let parsed = parse(&buf[..filled]).and_then(|parsed| match parsed {
            Some((upgrade, _)) if !origin_allowed(upgrade.origin.as_deref(), allowed_origins) => {
                Err(Rejection::ForbiddenOrigin)
            }
            parsed => Ok(parsed),
        });
        match parsed {
            Ok(None) => continue,
            Ok(Some((upgrade, len))) => {
                stream
                    .write_all(switching_protocols(&upgrade.accept, upgrade.v1).as_bytes())
                    .await
                    .map_err(Failure::Io)?;
                buf.truncate(filled);
                buf.drain(..len);
                return Ok((upgrade, buf));
            }
            Err(rejection) => {
                // Best effort: the client may already be gone.
                let _ = stream.write_all(rejection.response()).await;
                return Err(Failure::Rejected(rejection));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat?a=1&token=x.y.z HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
                        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn accepts_an_upgrade_and_derives_the_key() {
        let (upgrade, len) = parse(GOOD.as_bytes()).unwrap().unwrap();
        // The example of RFC 6455, section 1.3.
        assert_eq!(upgrade.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(upgrade.token.as_deref(), Some("x.y.z"));
        assert_eq!(len, GOOD.len());
        let with_frame = format!("{GOOD}\u{81}");
        assert_eq!(parse(with_frame.as_bytes()).unwrap().unwrap().1, GOOD.len());
    }

    #[test]
    fn negotiates_v1_only_when_offered_exactly() {
        let offering = |lines: &str| {
            let request = GOOD.replacen("Host: h\r\n", &format!("Host: h\r\n{lines}"), 1);
            parse(request.as_bytes()).unwrap().unwrap().0.v1
        };
        assert!(!offering(""));
        assert!(offering("Sec-WebSocket-Protocol: pushhub.v1\r\n"));
        assert!(offering("sec-websocket-protocol:pushhub.v1\r\n"));
        assert!(offering(
            "Sec-WebSocket-Protocol: chat, pushhub.v1 ,mqtt\r\n"
        ));
        assert!(offering(
            "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: pushhub.v1\r\n"
        ));
        assert!(!offering("Sec-WebSocket-Protocol: chat, mqtt\r\n"));
        assert!(!offering("Sec-WebSocket-Protocol: PushHub.V1\r\n"));
        assert!(!offering(
            "Sec-WebSocket-Protocol: pushhub.v1x, pushhub.v\r\n"
        ));
        assert!(!offering("Sec-WebSocket-Protocol: \"pushhub.v1\"\r\n"));
        assert!(!offering("X-Protocol: pushhub.v1\r\n"));
    }

    #[test]
    fn the_answer_names_v1_only_for_v1_clients() {
        let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        assert_eq!(
            switching_protocols(accept, false),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        assert_eq!(
            switching_protocols(accept, true),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: pushhub.v1\r\n\r\n"
        );
    }

    /// `accept` on a real socket: what the client reads back, and the
    /// upgrade and the bytes after the request that the hub keeps.
    fn accept_over_a_socket(request: &str) -> (Upgrade, Vec<u8>, String) {
        use std::io::{Read, Write};
        use std::time::Duration;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.write_all(request.as_bytes()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut server = smol::Async::new(server).unwrap();
        let accepted = smol::block_on(crate::time::timeout(
            Duration::from_secs(5),
            accept(&mut server, &[]),
        ))
        .expect("accept within 5s")
        .unwrap();
        drop(server);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        (accepted.0, accepted.1, answer)
    }

    #[test]
    fn accept_answers_each_kind_of_client_over_a_socket() {
        let raw = format!("{GOOD}\u{81}");
        let (upgrade, tail, answer) = accept_over_a_socket(&raw);
        assert!(!upgrade.v1);
        assert_eq!(tail, "\u{81}".as_bytes());
        assert_eq!(answer, switching_protocols(&upgrade.accept, false));
        assert!(!answer.contains("Protocol:"), "{answer}");

        let offering = GOOD.replacen(
            "Host: h\r\n",
            "Host: h\r\nSec-WebSocket-Protocol: chat, pushhub.v1\r\n",
            1,
        );
        let (upgrade, tail, answer) = accept_over_a_socket(&offering);
        assert!(upgrade.v1);
        assert!(tail.is_empty());
        assert!(
            answer.ends_with("\r\nSec-WebSocket-Protocol: pushhub.v1\r\n\r\n"),
            "{answer}"
        );

        let others = GOOD.replacen(
            "Host: h\r\n",
            "Host: h\r\nSec-WebSocket-Protocol: chat\r\n",
            1,
        );
        let (upgrade, _, answer) = accept_over_a_socket(&others);
        assert!(!upgrade.v1);
        assert_eq!(answer, switching_protocols(&upgrade.accept, false));
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed(Some("https://app.example.com"), &allowed));
        assert!(origin_allowed(Some("HTTPS://APP.example.com/"), &allowed));
        assert!(!origin_allowed(Some("https://evil.example.com"), &allowed));
        assert!(origin_allowed(None, &allowed));
        assert!(origin_allowed(Some("https://anything"), &[]));
        let with_origin = GOOD.replacen("Host: h", "Host: h\r\nOrigin: https://app.example.com", 1);
        let (upgrade, _) = parse(with_origin.as_bytes()).unwrap().unwrap();
        assert_eq!(upgrade.origin.as_deref(), Some("https://app.example.com"));
    }

    #[test]
    fn waits_for_the_whole_head() {
        assert_eq!(parse(&GOOD.as_bytes()[..40]), Ok(None));
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn rejects_what_is_not_an_upgrade() {
        let plain = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(parse(plain.as_bytes()), Err(Rejection::NotUpgrade));
        let post = GOOD.replacen("GET", "POST", 1);
        assert_eq!(parse(post.as_bytes()), Err(Rejection::MethodNotAllowed));
        let old = GOOD.replacen("Version: 13", "Version: 8", 1);
        assert_eq!(parse(old.as_bytes()), Err(Rejection::UnsupportedVersion));
        let no_key = GOOD.replacen("Sec-WebSocket-Key", "X-Key", 1);
        assert_eq!(parse(no_key.as_bytes()), Err(Rejection::NotUpgrade));
        let http10 = GOOD.replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert_eq!(parse(http10.as_bytes()), Err(Rejection::Malformed));
        assert_eq!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n"),
            Err(Rejection::Malformed)
        );
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST_BYTES));
        assert_eq!(parse(huge.as_bytes()), Err(Rejection::TooLarge));
        let many: String = (0..40).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(many.as_bytes()), Err(Rejection::TooLarge));
    }

    #[test]
    fn every_rejection_is_a_complete_response() {
        for r in [
            Rejection::Malformed,
            Rejection::NotUpgrade,
            Rejection::UnsupportedVersion,
            Rejection::MethodNotAllowed,
            Rejection::TooLarge,
            Rejection::ForbiddenOrigin,
        ] {
            let text = std::str::from_utf8(r.response()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let declared: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(declared, body.len(), "{r:?}");
        }
    }
}
