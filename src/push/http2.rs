//! One HTTP/2 client connection to a push service: the `h2` crate driven on
//! our executor, over the TLS stream `sender::origin` connects.
//!
//! `h2` wants tokio's I/O traits but no tokio runtime and no timers, so the TLS
//! stream is adapted with `tokio_util::compat`. A connection is two halves: a
//! [`Http2`] handle that sends requests, and a driver future that must be
//! polled for anything to move (it reads frames, writes frames, answers pings).
//! The caller runs both, e.g. with `smol::future::or`.

use std::future::Future;
use std::net::SocketAddr;

use async_native_tls::TlsConnector;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use tokio_util::compat::FuturesAsyncReadCompatExt;

pub use crate::push::sender::origin::ConnectError;
use crate::push::sender::origin::{self, Origin};

/// Why a request got no response.
#[derive(Debug)]
pub enum PostError {
    /// The request could not be built (a header value that is not valid).
    Invalid(http::Error),
    /// The stream or the connection failed; the connection may be gone.
    Http2(h2::Error),
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PostError::Invalid(e) => write!(f, "invalid request: {e}"),
            PostError::Http2(e) => write!(f, "HTTP/2: {e}"),
        }
    }
}

impl std::error::Error for PostError {}

impl From<h2::Error> for PostError {
    fn from(e: h2::Error) -> Self {
        PostError::Http2(e)
    }
}

/// A response: status, headers, and the (small) body services send.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The sending half of a connection.
#[derive(Clone)]
pub struct Http2 {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
}

/// Connects to `addr`, checking its certificate for `host`, and returns the
/// sending half and the driver.
pub async fn connect(
    addr: SocketAddr,
    host: &str,
    tls: &TlsConnector,
) -> Result<(Http2, impl Future<Output = Result<(), h2::Error>> + use<>), ConnectError> {
    let origin = Origin {
        addr: Some(addr),
        ..Origin::new(host, addr.port())
    };
    origin::connect_h2(&origin, tls).await
}

/// The HTTP/2 handshake over a connected stream; `authority` (`host[:port]`)
/// names the origin in requests. `Ok(None)`: the server closed the
/// connection instead of answering.
pub async fn handshake<S>(
    stream: S,
    authority: String,
) -> Result<Option<(Http2, impl Future<Output = Result<(), h2::Error>> + use<S>)>, h2::Error>
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    let (send, mut connection) = h2::client::handshake(stream.compat()).await?;
    // h2's handshake only writes our preface. Whether the server speaks
    // HTTP/2 shows in its answer: a PING answered (after its SETTINGS) says
    // it does; one that does not answers HTTP/1.1 text, which fails the
    // connection, or closes it.
    let mut ping_pong = connection
        .ping_pong()
        .ok_or_else(|| h2::Error::from(h2::Reason::INTERNAL_ERROR))?;
    let answered = smol::future::or(
        async { ping_pong.ping(h2::Ping::opaque()).await.map(|_| true) },
        async { (&mut connection).await.map(|()| false) },
    )
    .await?;
    Ok(answered.then_some((Http2 { send, authority }, connection)))
}

impl Http2 {
    /// Sends `POST path` with `headers` and `body`, and waits for the whole
    /// response. Needs the driver to be polled meanwhile.
    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, PostError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("https://{}{path}", self.authority));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).map_err(PostError::Invalid)?;
        let mut ready = self.send.clone().ready().await?;
        let (response, mut stream) = ready.send_request(request, body.is_empty())?;
        if !body.is_empty() {
            stream.send_data(body, true)?;
        }
        let response = response.await?;
        let (parts, mut incoming) = response.into_parts();
        let mut body = Vec::new();
        while let Some(chunk) = incoming.data().await {
            let chunk = chunk?;
            // Let the server send more: the window is ours to reopen.
            let _ = incoming.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body: body.into(),
        })
    }
}
