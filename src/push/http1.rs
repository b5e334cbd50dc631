//! One HTTP/1.1 client connection, for push services that speak nothing
//! newer (Microsoft's WNS, behind Edge's Web Push endpoints), beside
//! [`http2`](super::http2).
//!
//! It does what a push sender needs and no more: `POST` with a
//! `Content-Length` body, one request at a time, the response read in full
//! with bounded head and body, keep-alive when the server allows it. The
//! caller brings the stream (TCP, TLS with ALPN `http/1.1`), so no I/O is
//! opened here; headers are parsed by `httparse`.
//!
//! A request that did not finish (an error, or its future dropped by a
//! timeout) leaves the connection unusable: what the server sends next could
//! be the rest of the old response, so [`Http1::reusable`] says no and the
//! caller opens another.

use std::fmt;
use std::io;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::push::http2::Response;

/// The most bytes of response head (status line and headers, interim
/// responses included) read before giving up: push services send a few
/// hundred.
pub const MAX_HEAD: usize = 16 * 1024;

/// The most headers (or trailers) in one response.
pub const MAX_HEADERS: usize = 64;

/// The most bytes of response body: push services answer with at most a
/// short JSON error, so more is a server that is not one.
pub const MAX_BODY: usize = 64 * 1024;

/// How much is asked of the stream per read.
const READ_CHUNK: usize = 8 * 1024;

/// Why a request got no response.
#[derive(Debug)]
pub enum Http1Error {
    /// Reading or writing the stream failed.
    Io(io::Error),
    /// The server closed the connection before a whole response, or the
    /// connection could not carry another request (see [`Http1::reusable`]).
    Closed,
    /// The server sent something that is not an HTTP/1.1 response.
    Malformed(String),
    /// The server's response head or body is larger than we accept
    /// ([`MAX_HEAD`], [`MAX_HEADERS`], [`MAX_BODY`]).
    TooLarge,
    /// Our own request could not be sent as it is: a path, header name or
    /// value that would break the request's framing. Nothing was written.
    Invalid(String),
}

impl fmt::Display for Http1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Http1Error::Io(e) => write!(f, "HTTP/1.1 connection failed: {e}"),
            Http1Error::Closed => {
                f.write_str("the HTTP/1.1 server closed the connection before a whole response")
            }
            Http1Error::Malformed(detail) => {
                write!(f, "the HTTP/1.1 server sent a malformed response: {detail}")
            }
            Http1Error::TooLarge => write!(
                f,
                "the HTTP/1.1 server's response is too large (more than {MAX_HEAD} bytes or \
                 {MAX_HEADERS} headers of head, or {MAX_BODY} bytes of body)"
            ),
            Http1Error::Invalid(detail) => write!(f, "cannot send this HTTP/1.1 request: {detail}"),
        }
    }
}

impl std::error::Error for Http1Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Http1Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Http1Error {
    fn from(e: io::Error) -> Self {
        // A TLS stream cut without close_notify is a close before the end.
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Http1Error::Closed
        } else {
            Http1Error::Io(e)
        }
    }
}

/// How the response's body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    /// Neither length nor chunks: the body is all the server sends.
    UntilClose,
}

/// An HTTP/1.1 client connection over `S`.
pub struct Http1<S> {
    stream: S,
    authority: String,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
    reusable: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Http1<S> {
    /// A connection over an open `stream` to `authority` ("host" or
    /// "host:port"), which every request sends as `Host`.
    pub fn new(stream: S, authority: String) -> Http1<S> {
        Http1 {
            stream,
            authority,
            buf: Vec::new(),
            reusable: true,
        }
    }

    /// Whether the connection may carry another request: the last response
    /// was HTTP/1.1, read to its end, without `Connection: close`, and
    /// nothing failed.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Sends `POST path` with `headers` and `body` and reads the whole
    /// response. `Host` and `Content-Length` are ours to send; giving them
    /// (or `Transfer-Encoding`) in `headers` is refused.
    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, Http1Error> {
        let request = self.request(path, headers, &body)?;
        if !self.reusable {
            return Err(Http1Error::Closed);
        }
        // Until the response is read to its end, the connection is in an
        // unknown state; a dropped future must leave it so.
        self.reusable = false;
        self.stream.write_all(&request).await?;
        self.stream.flush().await?;
        let (response, keep_alive) = self.read_response().await?;
        // Bytes after the response were not asked for: they cannot be the
        // next response, and would be taken for it.
        self.reusable = keep_alive && self.buf.is_empty();
        Ok(response)
    }

    /// The request's bytes: head and body, for one write.
    fn request(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<u8>, Http1Error> {
        if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Http1Error::Invalid(
                "the path must start with / and hold no spaces or control characters".into(),
            ));
        }
        if self.authority.is_empty() || !self.authority.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Http1Error::Invalid(
                "the host must be non-empty, without spaces or control characters".into(),
            ));
        }
        let mut out = Vec::with_capacity(128 + path.len() + body.len());
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.authority.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in headers {
            let parsed = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Http1Error::Invalid(format!("{name:?} is not a valid header name")))?;
            if parsed == http::header::HOST
                || parsed == http::header::CONTENT_LENGTH
                || parsed == http::header::TRANSFER_ENCODING
            {
                return Err(Http1Error::Invalid(format!(
                    "the {parsed} header is the connection's to send"
                )));
            }
            // HeaderValue refuses CR, LF, NUL and other controls but tab:
            // exactly what would let a value end its line early.
            HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
                Http1Error::Invalid(format!(
                    "the value of {parsed} holds a control character (CR, LF...)"
                ))
            })?;
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        Ok(out)
    }

    /// Reads more into `buf`; `false` at the end of the stream.
    async fn fill(&mut self) -> Result<bool, Http1Error> {
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        let read = self.stream.read(&mut self.buf[start..]).await;
        let n = *read.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        Ok(read? > 0)
    }

    /// Reads more, or fails with `Closed` at the end of the stream.
    async fn fill_or_closed(&mut self) -> Result<(), Http1Error> {
        if self.fill().await? {
            Ok(())
        } else {
            Err(Http1Error::Closed)
        }
    }

    /// The final response, and whether the server lets the connection go on.
    async fn read_response(&mut self) -> Result<(Response, bool), Http1Error> {
        // Interim responses count towards the bound too: a server sending
        // endless 100s must not keep us reading.
        let mut head_budget = MAX_HEAD;
        loop {
            let Some((len, head)) = parse_head(&self.buf, head_budget)? else {
                if self.buf.len() >= head_budget {
                    return Err(Http1Error::TooLarge);
                }
                self.fill_or_closed().await?;
                continue;
            };
            self.buf.drain(..len);
            head_budget -= len;
            if head.status.is_informational() {
                if head.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(Http1Error::Malformed(
                        "101 Switching Protocols to a request that asked for no upgrade".into(),
                    ));
                }
                continue;
            }
            let (framing, mut keep_alive) = framing(&head)?;
            let body = match framing {
                Framing::Empty => Vec::new(),
                Framing::Length(n) => self.read_length(n).await?,
                Framing::Chunked => self.read_chunked().await?,
                Framing::UntilClose => {
                    keep_alive = false;
                    self.read_until_close().await?
                }
            };
            let response = Response {
                status: head.status,
                headers: head.headers,
                body: body.into(),
            };
            return Ok((response, keep_alive));
        }
    }

    async fn read_length(&mut self, n: usize) -> Result<Vec<u8>, Http1Error> {
        while self.buf.len() < n {
            self.fill_or_closed().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn read_until_close(&mut self) -> Result<Vec<u8>, Http1Error> {
        loop {
            if self.buf.len() > MAX_BODY {
                return Err(Http1Error::TooLarge);
            }
            if !self.fill().await? {
                return Ok(std::mem::take(&mut self.buf));
            }
        }
    }

    /// A chunked body (RFC 9112 §7.1): chunks, extensions ignored, then
    /// trailers, which are read and dropped.
    async fn read_chunked(&mut self) -> Result<Vec<u8>, Http1Error> {
        let mut body = Vec::new();
        loop {
            let size = loop {
                if !self.buf.is_empty() && !self.buf[0].is_ascii_hexdigit() {
                    return Err(Http1Error::Malformed("a chunk without a size".into()));
                }
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((len, size))) => {
                        self.buf.drain(..len);
                        break size;
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() >= MAX_HEAD => {
                        return Err(Http1Error::TooLarge);
                    }
                    Ok(httparse::Status::Partial) => self.fill_or_closed().await?,
                    Err(_) => return Err(Http1Error::Malformed("an invalid chunk size".into())),
                }
            };
            if size == 0 {
                self.skip_trailers().await?;
                return Ok(body);
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|size| body.len() + size <= MAX_BODY)
                .ok_or(Http1Error::TooLarge)?;
            while self.buf.len() < size + 2 {
                self.fill_or_closed().await?;
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(Http1Error::Malformed(
                    "a chunk longer than its size says".into(),
                ));
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    async fn skip_trailers(&mut self) -> Result<(), Http1Error> {
        loop {
            let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(&self.buf, &mut trailers) {
                Ok(httparse::Status::Complete((len, _))) => {
                    self.buf.drain(..len);
                    return Ok(());
                }
                Ok(httparse::Status::Partial) if self.buf.len() >= MAX_HEAD => {
                    return Err(Http1Error::TooLarge);
                }
                Ok(httparse::Status::Partial) => self.fill_or_closed().await?,
                Err(httparse::Error::TooManyHeaders) => return Err(Http1Error::TooLarge),
                Err(e) => return Err(Http1Error::Malformed(format!("trailers: {e}"))),
            }
        }
    }
}

/// A parsed status line and headers.
struct Head {
    status: StatusCode,
    /// HTTP/1.1 rather than 1.0.
    http11: bool,
    headers: HeaderMap,
}

/// The head at the start of `buf` and its length, `None` while incomplete.
fn parse_head(buf: &[u8], budget: usize) -> Result<Option<(usize, Head)>, Http1Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Http1Error::TooLarge),
        Err(e) => return Err(Http1Error::Malformed(format!("response head: {e}"))),
    };
    if len > budget {
        return Err(Http1Error::TooLarge);
    }
    let code = response
        .code
        .ok_or_else(|| Http1Error::Malformed("no status code".into()))?;
    let status = StatusCode::from_u16(code)
        .map_err(|_| Http1Error::Malformed(format!("status code {code}")))?;
    let mut map = HeaderMap::with_capacity(response.headers.len());
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| Http1Error::Malformed(format!("header name {:?}", header.name)))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| Http1Error::Malformed(format!("the value of header {name}")))?;
        map.append(name, value);
    }
    Ok(Some((
        len,
        Head {
            status,
            http11: response.version == Some(1),
            headers: map,
        },
    )))
}

/// How the body of a response with `head` ends, and whether the connection
/// may carry another request after it.
fn framing(head: &Head) -> Result<(Framing, bool), Http1Error> {
    let mut keep_alive =
        head.http11 && !has_token(&head.headers, http::header::CONNECTION, "close");
    if head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, keep_alive));
    }
    if head.headers.contains_key(http::header::TRANSFER_ENCODING) {
        let last = head
            .headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|coding| coding.trim_ascii())
            .rfind(|coding| !coding.is_empty());
        if !last.is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked")) {
            return Ok((Framing::UntilClose, false));
        }
        // Both framings at once is how requests get smuggled: take the
        // chunks as RFC 9112 §6.3 says, and trust the connection no further.
        if head.headers.contains_key(http::header::CONTENT_LENGTH) {
            keep_alive = false;
        }
        return Ok((Framing::Chunked, keep_alive));
    }
    let mut length = None;
    for value in head.headers.get_all(http::header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(Http1Error::Malformed(
                    "a Content-Length that is not a number".into(),
                ));
            }
            // Digits beyond MAX_BODY's are too large whatever they say.
            let n = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or(Http1Error::TooLarge)?;
            if length.is_some_and(|l| l != n) {
                return Err(Http1Error::Malformed(
                    "Content-Lengths that disagree".into(),
                ));
            }
            length = Some(n);
        }
    }
    match length {
        Some(n) if n > MAX_BODY => Err(Http1Error::TooLarge),
        Some(0) => Ok((Framing::Empty, keep_alive)),
        Some(n) => Ok((Framing::Length(n), keep_alive)),
        None => Ok((Framing::UntilClose, false)),
    }
}

/// Whether a comma-separated header lists `token`, case-insensitively.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::thread;
    use std::time::Duration;

    use smol::{Async, Timer};

    const LIMIT: Duration = Duration::from_secs(5);

    /// A server for one connection: `script` gets the accepted socket.
    fn server(script: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            socket.set_read_timeout(Some(LIMIT)).unwrap();
            script(socket);
        });
        addr
    }

    /// Reads one request, returning its head and body.
    fn read_request(socket: &mut TcpStream) -> (String, Vec<u8>) {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(socket.read(&mut byte).unwrap(), 1, "the client closed");
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0u8; length];
        socket.read_exact(&mut body).unwrap();
        (head, body)
    }

    /// Reads a request and answers with `response`.
    fn answer(response: &'static [u8]) -> SocketAddr {
        server(move |mut socket| {
            read_request(&mut socket);
            socket.write_all(response).unwrap();
            // Held open until the client is done, so EOF means only what
            // the test says.
            let _ = socket.read(&mut [0u8; 1]);
        })
    }

    fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
        smol::block_on(smol::future::or(fut, async {
            Timer::after(LIMIT).await;
            panic!("timed out after {LIMIT:?}")
        }))
    }

    async fn connect(addr: SocketAddr) -> Http1<Async<TcpStream>> {
        let tcp = Async::<TcpStream>::connect(addr).await.unwrap();
        Http1::new(tcp, format!("localhost:{}", addr.port()))
    }

    async fn post(addr: SocketAddr) -> (Result<Response, Http1Error>, bool) {
        let mut conn = connect(addr).await;
        let result = conn.post("/push/a", &[], Bytes::from_static(b"hi")).await;
        (result, conn.reusable())
    }

    #[test]
    fn content_length() {
        let addr =
            answer(b"HTTP/1.1 201 Created\r\nLocation: /m/1\r\nContent-Length: 5\r\n\r\nhello");
        let (response, reusable) = run(post(addr));
        let response = response.unwrap();
        assert_eq!(response.status, StatusCode::CREATED);
        assert_eq!(response.headers["location"], "/m/1");
        assert_eq!(&response.body[..], b"hello");
        assert!(reusable);
    }

    #[test]
    fn sends_head_headers_and_body() {
        let (tx, rx) = std::sync::mpsc::channel();
        let addr = server(move |mut socket| {
            tx.send(read_request(&mut socket)).unwrap();
            socket
                .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            let _ = socket.read(&mut [0u8; 1]);
        });
        run(async {
            let mut conn = connect(addr).await;
            let headers = [("TTL", "60"), ("content-encoding", "aes128gcm")];
            let response = conn
                .post("/push/x", &headers, Bytes::from_static(b"body"))
                .await;
            assert_eq!(response.unwrap().status, StatusCode::CREATED);
        });
        let (head, body) = rx.recv_timeout(LIMIT).unwrap();
        let expected = format!(
            "POST /push/x HTTP/1.1\r\nHost: localhost:{}\r\nContent-Length: 4\r\nTTL: 60\r\n\
             content-encoding: aes128gcm\r\n\r\n",
            addr.port()
        );
        assert_eq!(head, expected);
        assert_eq!(body, b"body");
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let addr = answer(
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n\
              4;name=value\r\nabcd\r\n3\r\nefg\r\nA\r\n0123456789\r\n0;last\r\nX-Trailer: 1\r\n\
              Another: 2\r\n\r\n",
        );
        let (response, reusable) = run(post(addr));
        let response = response.unwrap();
        assert_eq!(response.status, StatusCode::BAD_REQUEST);
        assert_eq!(&response.body[..], b"abcdefg0123456789");
        assert!(!response.headers.contains_key("x-trailer"));
        assert!(reusable);
    }

    #[test]
    fn keep_alive_carries_two_requests() {
        let addr = server(|mut socket| {
            for n in 1..=2 {
                let (_, body) = read_request(&mut socket);
                let response = format!(
                    "HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\n{}",
                    body.len() + n
                );
                socket.write_all(response.as_bytes()).unwrap();
            }
            let _ = socket.read(&mut [0u8; 1]);
        });
        run(async {
            let mut conn = connect(addr).await;
            let first = conn
                .post("/a", &[], Bytes::from_static(b"x"))
                .await
                .unwrap();
            assert_eq!(&first.body[..], b"2");
            assert!(conn.reusable());
            let second = conn
                .post("/b", &[], Bytes::from_static(b"x"))
                .await
                .unwrap();
            assert_eq!(&second.body[..], b"3");
            assert!(conn.reusable());
        });
    }

    #[test]
    fn connection_close_is_not_reusable() {
        let addr = answer(
            b"HTTP/1.1 201 Created\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
        );
        let (response, reusable) = run(post(addr));
        assert_eq!(response.unwrap().status, StatusCode::CREATED);
        assert!(!reusable);
    }

    #[test]
    fn http10_is_not_reusable() {
        let addr = answer(b"HTTP/1.0 201 Created\r\nContent-Length: 0\r\n\r\n");
        let (response, reusable) = run(post(addr));
        assert_eq!(response.unwrap().status, StatusCode::CREATED);
        assert!(!reusable);
    }

    #[test]
    fn a_closed_connection_refuses_the_next_request() {
        let addr =
            answer(b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        run(async {
            let mut conn = connect(addr).await;
            conn.post("/a", &[], Bytes::new()).await.unwrap();
            let again = conn.post("/a", &[], Bytes::new()).await;
            assert!(matches!(again, Err(Http1Error::Closed)), "{again:?}");
        });
    }

    #[test]
    fn body_until_eof() {
        let addr = server(|mut socket| {
            read_request(&mut socket);
            socket
                .write_all(b"HTTP/1.1 500 Oops\r\n\r\nall of ")
                .unwrap();
            socket.write_all(b"this").unwrap();
        });
        let (response, reusable) = run(post(addr));
        let response = response.unwrap();
        assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(&response.body[..], b"all of this");
        assert!(!reusable);
    }

    #[test]
    fn a_response_in_tiny_writes() {
        let addr = server(|mut socket| {
            read_request(&mut socket);
            socket.set_nodelay(true).unwrap();
            let response: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many Requests\r\n\
                Retry-After: 30\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n";
            for byte in response {
                socket.write_all(&[*byte]).unwrap();
                socket.flush().unwrap();
                // Lets each byte go out in its own segment.
                thread::yield_now();
            }
            let _ = socket.read(&mut [0u8; 1]);
        });
        let (response, reusable) = run(post(addr));
        let response = response.unwrap();
        assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers["retry-after"], "30");
        assert_eq!(&response.body[..], b"hello!");
        assert!(reusable);
    }

    #[test]
    fn interim_responses_are_skipped() {
        let addr = answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
              HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        );
        let (response, _) = run(post(addr));
        let response = response.unwrap();
        assert_eq!(response.status, StatusCode::CREATED);
        assert!(!response.headers.contains_key("link"));
        assert_eq!(&response.body[..], b"ok");
    }

    #[test]
    fn garbage_status_line() {
        let addr = answer(b"SMTP ready\r\n\r\n");
        let (response, reusable) = run(post(addr));
        assert!(
            matches!(response, Err(Http1Error::Malformed(_))),
            "{response:?}"
        );
        assert!(!reusable);
    }

    #[test]
    fn headers_too_large() {
        let addr = server(|mut socket| {
            read_request(&mut socket);
            let mut response = b"HTTP/1.1 201 Created\r\n".to_vec();
            let filler = format!("X-Filler: {}\r\n", "a".repeat(1000));
            // Past MAX_HEAD in a few headers, and the server keeps going.
            for _ in 0..20 {
                response.extend_from_slice(filler.as_bytes());
            }
            let _ = socket.write_all(&response);
            let _ = socket.read(&mut [0u8; 1]);
        });
        let (response, _) = run(post(addr));
        assert!(
            matches!(response, Err(Http1Error::TooLarge)),
            "{response:?}"
        );
    }

    #[test]
    fn too_many_headers() {
        let addr = server(|mut socket| {
            read_request(&mut socket);
            let mut response = b"HTTP/1.1 201 Created\r\n".to_vec();
            for n in 0..=MAX_HEADERS {
                response.extend_from_slice(format!("X-{n}: 1\r\n").as_bytes());
            }
            response.extend_from_slice(b"Content-Length: 0\r\n\r\n");
            socket.write_all(&response).unwrap();
            let _ = socket.read(&mut [0u8; 1]);
        });
        let (response, _) = run(post(addr));
        assert!(
            matches!(response, Err(Http1Error::TooLarge)),
            "{response:?}"
        );
    }

    #[test]
    fn bodies_too_large() {
        let length = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 65537\r\n\r\n");
        let (response, _) = run(post(length));
        assert!(
            matches!(response, Err(Http1Error::TooLarge)),
            "{response:?}"
        );

        let chunked = server(|mut socket| {
            read_request(&mut socket);
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            let chunk = format!("1000\r\n{}\r\n", "a".repeat(0x1000));
            for _ in 0..17 {
                let _ = socket.write_all(chunk.as_bytes());
            }
            let _ = socket.read(&mut [0u8; 1]);
        });
        let (response, _) = run(post(chunked));
        assert!(
            matches!(response, Err(Http1Error::TooLarge)),
            "{response:?}"
        );

        let until_eof = server(|mut socket| {
            read_request(&mut socket);
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            let _ = socket.write_all(&vec![b'a'; MAX_BODY + 1]);
        });
        let (response, _) = run(post(until_eof));
        assert!(
            matches!(response, Err(Http1Error::TooLarge)),
            "{response:?}"
        );
    }

    #[test]
    fn closed_mid_response() {
        for partial in [
            &b""[..],
            b"HTTP/1.1 201 Cre",
            b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\nabc",
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n",
        ] {
            let addr = server(move |mut socket| {
                read_request(&mut socket);
                socket.write_all(partial).unwrap();
            });
            let (response, reusable) = run(post(addr));
            assert!(
                matches!(response, Err(Http1Error::Closed)),
                "{:?}: {response:?}",
                String::from_utf8_lossy(partial)
            );
            assert!(!reusable);
        }
    }

    #[test]
    fn malformed_framing() {
        for response in [
            &b"HTTP/1.1 201 Created\r\nContent-Length: 1, 2\r\n\r\nab"[..],
            b"HTTP/1.1 201 Created\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            let addr = answer(response);
            let (result, _) = run(post(addr));
            assert!(
                matches!(result, Err(Http1Error::Malformed(_))),
                "{:?}: {result:?}",
                String::from_utf8_lossy(response)
            );
        }
    }

    #[test]
    fn unasked_bytes_after_a_response_end_reuse() {
        let addr = answer(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n");
        let (response, reusable) = run(post(addr));
        assert_eq!(response.unwrap().status, StatusCode::CREATED);
        assert!(!reusable);
    }

    #[test]
    fn invalid_requests_are_refused_before_writing() {
        let (tx, rx) = std::sync::mpsc::channel();
        let addr = server(move |mut socket| {
            let mut got = Vec::new();
            let _ = socket.read_to_end(&mut got);
            tx.send(got).unwrap();
        });
        run(async {
            let mut conn = connect(addr).await;
            let refused: [(&str, &[(&str, &str)]); 6] = [
                ("/a", &[("TTL", "60\r\nX-Injected: 1")]),
                ("/a", &[("TTL", "60\n")]),
                ("/a", &[("Bad Name", "1")]),
                ("/a", &[("Content-Length", "1")]),
                ("/a", &[("host", "evil")]),
                ("/a b", &[]),
            ];
            for (path, headers) in refused {
                let result = conn.post(path, headers, Bytes::new()).await;
                assert!(
                    matches!(result, Err(Http1Error::Invalid(_))),
                    "{headers:?}: {result:?}"
                );
                assert!(conn.reusable());
            }
        });
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), b"");
    }
}
