//! A server that plays a browser's Web Push service for the tests: TLS with a
//! certificate made at test time, HTTP/2 (the `h2` crate) or HTTP/1.1 (a
//! minimal keep-alive server here) chosen by ALPN at start, on a smol executor
//! of its own thread, like `FakeApns`.
//!
//! It is strict where a real push service and browser are (RFC 8030, 8291,
//! 8292): every POST must carry a VAPID JWT that verifies and says the right
//! things, a TTL, valid urgency and topic, and a body that decrypts. The body
//! is decrypted by Mozilla's `ece` crate with keys it made itself in
//! [`FakePushService::subscribe`], and the JWT checked with openssl directly,
//! so none of pushhub's own Web Push code takes part in judging it.
//! What fails is answered as a push service would and recorded
//! ([`FakePushService::refusals`]); what passes goes to the script.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;

use bytes::Bytes;
use data_encoding::BASE64URL_NOPAD;
use http::{HeaderMap, HeaderName, HeaderValue};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::sign::Verifier;
use serde_json::Value;
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::compat::FuturesAsyncReadCompatExt;

pub use super::tls::TestCert;

/// The HTTP version the service speaks, fixed at start by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http2,
    Http1,
}

impl Protocol {
    fn alpn(self) -> &'static str {
        match self {
            Protocol::Http2 => "h2",
            Protocol::Http1 => "http/1.1",
        }
    }
}

/// A push that passed every check.
#[derive(Debug, Clone)]
pub struct PushSeen {
    /// The subscription's id, the last segment of its endpoint.
    pub id: String,
    /// The decrypted message, when it is UTF-8.
    pub text: Option<String>,
    /// The decrypted message's bytes.
    pub plaintext: Vec<u8>,
    pub ttl: u64,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    pub headers: HeaderMap,
}

/// What the script has the service answer to a push that passed.
#[derive(Debug, Clone)]
pub enum PushAnswer {
    /// 201 Created with a `location` (the push message's resource).
    Created,
    /// Any other status, with `retry-after` seconds if given.
    Status {
        status: u16,
        retry_after: Option<u32>,
    },
    /// No answer; the request is held, the connection kept open.
    NoAnswer,
    /// The connection is closed without an answer.
    Drop,
}

pub type PushScript = Arc<dyn Fn(&PushSeen) -> PushAnswer + Send + Sync>;

/// A script answering 201 to everything.
pub fn accept_all() -> PushScript {
    Arc::new(|_| PushAnswer::Created)
}

/// Why a request was refused before the script saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not `POST /push/<id>`.
    NotFound,
    MethodNotAllowed,
    /// `/push/<id>` for an id [`FakePushService::subscribe`] never gave.
    UnknownSubscription,
    /// No `authorization` header.
    NoAuthorization,
    /// Not `vapid t=<jwt>, k=<key>`: what is wrong.
    BadAuthorization(String),
    /// `k` is not an uncompressed P-256 point in base64url.
    BadKey(String),
    /// `k` is not the key [`FakePushService::expect_vapid_key`] named.
    WrongKey,
    /// The JWT is not three base64url parts of ES256 with JSON claims.
    BadJwt(String),
    /// The signature does not verify with `k`.
    BadSignature,
    /// `aud` is not this service's origin: what it was.
    WrongAudience(String),
    /// `exp` is missing, past, or more than 24 hours ahead: what it was.
    BadExpiry(String),
    /// `sub` is not a `mailto:` or `https:` URL: what it was.
    BadSubject(String),
    /// `content-encoding` is not `aes128gcm`.
    BadEncoding(Option<String>),
    /// No `ttl` header.
    NoTtl,
    /// A `ttl` that is not digits.
    BadTtl(String),
    BadUrgency(String),
    BadTopic(String),
    /// A body larger than RFC 8030's 4096 bytes.
    TooLarge(usize),
    /// The body does not decrypt with the subscription's keys: ece's error.
    Undecryptable(String),
}

/// A refused request: its subscription (when the path named one), the
/// status answered, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub id: Option<String>,
    pub status: u16,
    pub reason: Refused,
}

/// A subscription's private side: what the browser keeps.
struct Browser {
    keys: ece::EcKeyComponents,
    auth: [u8; 16],
}

#[derive(Default)]
struct State {
    subscriptions: HashMap<String, Browser>,
    expect_key: Option<String>,
    seen: Vec<PushSeen>,
    delivered: Vec<PushSeen>,
    refusals: Vec<Refusal>,
    requests: usize,
    connections: usize,
    created: usize,
}

/// The service's part shared by its thread and the test.
struct Shared {
    state: Mutex<State>,
    origin: String,
    script: PushScript,
}

/// A request as either protocol hands it over.
struct Incoming<'a> {
    method: &'a str,
    path: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

/// A response to write.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

enum Outcome {
    Reply(Reply),
    Hold,
    Drop,
}

/// The running service. It stops when the test process ends.
pub struct FakePushService {
    pub addr: SocketAddr,
    pub cert: TestCert,
    pub protocol: Protocol,
    shared: Arc<Shared>,
}

impl FakePushService {
    pub fn start(protocol: Protocol, script: PushScript) -> FakePushService {
        FakePushService::start_with_cert(protocol, script, TestCert::new())
    }

    /// Like [`FakePushService::start`], with `cert` (another service's: a
    /// client trusts one CA file, and OpenSSL finds a root by its name, which
    /// every [`TestCert`] shares).
    pub fn start_with_cert(
        protocol: Protocol,
        script: PushScript,
        cert: TestCert,
    ) -> FakePushService {
        let identity = native_tls::Identity::from_pkcs8(&cert.cert_pem, &cert.key_pem).unwrap();
        let acceptor = native_tls::TlsAcceptor::builder(identity)
            .accept_alpn(&[protocol.alpn()])
            .build()
            .unwrap();
        let acceptor = async_native_tls::TlsAcceptor::from(acceptor);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            origin: format!("https://localhost:{}", addr.port()),
            script,
        });
        let served = Arc::clone(&shared);
        thread::spawn(move || {
            let ex = smol::LocalExecutor::new();
            smol::block_on(ex.run(async {
                let listener = Async::new(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, shared) = (acceptor.clone(), Arc::clone(&served));
                    ex.spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        match protocol {
                            Protocol::Http2 => serve_h2(tls, &shared).await,
                            Protocol::Http1 => serve_http1(tls, &shared).await,
                        }
                    })
                    .detach();
                }
            }));
        });
        FakePushService {
            addr,
            cert,
            protocol,
            shared,
        }
    }

    /// `https://localhost:PORT`, the origin a JWT's `aud` must name.
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// The endpoint of subscription `id`.
    pub fn endpoint(&self, id: &str) -> String {
        format!("{}/push/{id}", self.shared.origin)
    }

    /// A new subscription `id`, as a browser's `PushSubscription.toJSON()`
    /// gives it; the service keeps its private key and secret to decrypt.
    pub fn subscribe(&self, id: &str) -> Value {
        let (pair, auth) = ece::generate_keypair_and_auth_secret().unwrap();
        let p256dh = BASE64URL_NOPAD.encode(&pair.pub_as_raw().unwrap());
        let browser = Browser {
            keys: pair.raw_components().unwrap(),
            auth,
        };
        self.state().subscriptions.insert(id.to_string(), browser);
        serde_json::json!({
            "endpoint": self.endpoint(id),
            "expirationTime": null,
            "keys": {"p256dh": p256dh, "auth": BASE64URL_NOPAD.encode(&auth)},
        })
    }

    /// From now on, a VAPID `k` other than `key` (base64url) is refused with
    /// 403, as a push service does for a subscription made with
    /// `applicationServerKey: key`.
    pub fn expect_vapid_key(&self, key: &str) {
        self.state().expect_key = Some(key.trim_end_matches('=').to_string());
    }

    /// Pushes that passed every check, in arrival order, whatever the script
    /// answered.
    pub fn seen(&self) -> Vec<PushSeen> {
        self.state().seen.clone()
    }

    /// Pushes answered 201, in arrival order.
    pub fn delivered(&self) -> Vec<PushSeen> {
        self.state().delivered.clone()
    }

    /// Requests refused by a check, in arrival order.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.state().refusals.clone()
    }

    /// Requests received, refused or not.
    pub fn requests(&self) -> usize {
        self.state().requests
    }

    /// Connections that completed TLS and (for HTTP/2) the handshake.
    pub fn connections(&self) -> usize {
        self.state().connections
    }

    /// The certificate a client must trust, as PEM.
    pub fn ca_pem(&self) -> &[u8] {
        &self.cert.cert_pem
    }

    /// A TLS client configuration that trusts this service and offers its
    /// protocol by ALPN.
    pub fn connector(&self) -> async_native_tls::TlsConnector {
        async_native_tls::TlsConnector::new()
            .add_root_certificate(native_tls::Certificate::from_pem(&self.cert.cert_pem).unwrap())
            .request_alpns(&[self.protocol.alpn()])
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }
}

async fn serve_h2(tls: async_native_tls::TlsStream<Async<std::net::TcpStream>>, shared: &Shared) {
    let Ok(mut h2) = h2::server::handshake(tls.compat()).await else {
        return;
    };
    shared.state.lock().unwrap().connections += 1;
    // Held unanswered (not reset) until the connection ends.
    let mut held = Vec::new();
    while let Some(Ok((request, mut respond))) = h2.accept().await {
        let (parts, mut incoming) = request.into_parts();
        // The body's frames are read by the connection, which must be
        // driven meanwhile.
        let read_body = async {
            let mut body = Vec::new();
            while let Some(Ok(chunk)) = incoming.data().await {
                let _ = incoming.flow_control().release_capacity(chunk.len());
                body.extend_from_slice(&chunk);
            }
            Some(body)
        };
        let drive = async {
            let _ = std::future::poll_fn(|cx| h2.poll_closed(cx)).await;
            None
        };
        let Some(body) = smol::future::or(read_body, drive).await else {
            return;
        };
        let outcome = shared.handle(Incoming {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            headers: &parts.headers,
            body: &body,
        });
        let reply = match outcome {
            Outcome::Reply(reply) => reply,
            Outcome::Hold => {
                held.push(respond);
                continue;
            }
            Outcome::Drop => return,
        };
        let mut response = http::Response::builder().status(reply.status);
        for (name, value) in &reply.headers {
            response = response.header(*name, value);
        }
        let response = response.body(()).unwrap();
        let Ok(mut stream) = respond.send_response(response, reply.body.is_empty()) else {
            continue;
        };
        if !reply.body.is_empty() {
            let _ = stream.send_data(Bytes::from(reply.body), true);
        }
    }
}

/// The most a request's head may take, and its body (more than RFC 8030's
/// 4096, so that a large body reaches the 413 check).
const HTTP1_MAX_HEAD: usize = 16 * 1024;
const HTTP1_MAX_BODY: usize = 64 * 1024;

/// A minimal HTTP/1.1 server: keep-alive, `Content-Length` bodies only,
/// which is all a push sender sends.
async fn serve_http1(
    mut tls: async_native_tls::TlsStream<Async<std::net::TcpStream>>,
    shared: &Shared,
) {
    shared.state.lock().unwrap().connections += 1;
    let mut buf = Vec::new();
    loop {
        let (head_len, method, path, headers, length, close) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut slots);
            match request.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let Some(parsed) = http1_head(&request) else {
                        let _ = write_http1(&mut tls, &bad_request()).await;
                        return;
                    };
                    let (method, path, headers, length, close) = parsed;
                    break (len, method, path, headers, length, close);
                }
                Ok(httparse::Status::Partial) if buf.len() < HTTP1_MAX_HEAD => {
                    if !read_more(&mut tls, &mut buf).await {
                        return;
                    }
                }
                _ => {
                    let _ = write_http1(&mut tls, &bad_request()).await;
                    return;
                }
            }
        };
        if length > HTTP1_MAX_BODY {
            let reply = Reply {
                status: 413,
                headers: vec![("connection", "close".into())],
                body: Vec::new(),
            };
            let _ = write_http1(&mut tls, &reply).await;
            return;
        }
        while buf.len() < head_len + length {
            if !read_more(&mut tls, &mut buf).await {
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..head_len + length).skip(head_len).collect();
        let outcome = shared.handle(Incoming {
            method: &method,
            path: &path,
            headers: &headers,
            body: &body,
        });
        match outcome {
            Outcome::Reply(reply) => {
                if write_http1(&mut tls, &reply).await.is_err() || close {
                    return;
                }
            }
            Outcome::Hold => {
                // Nothing more is answered on this connection: wait for the
                // client to go.
                while read_more(&mut tls, &mut buf).await {}
                return;
            }
            Outcome::Drop => return,
        }
    }
}

type Http1Head = (String, String, HeaderMap, usize, bool);

/// A parsed request's method, path, headers, body length and whether it
/// asked to close; `None` for one this server does not take.
fn http1_head(request: &httparse::Request<'_, '_>) -> Option<Http1Head> {
    if request.version != Some(1) {
        return None;
    }
    let mut headers = HeaderMap::new();
    for header in request.headers.iter() {
        headers.append(
            HeaderName::from_bytes(header.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(header.value).ok()?,
        );
    }
    if headers.contains_key(http::header::TRANSFER_ENCODING) || !headers.contains_key("host") {
        return None;
    }
    let length = match headers.get(http::header::CONTENT_LENGTH) {
        Some(value) => value.to_str().ok()?.parse().ok()?,
        None => 0,
    };
    let close = headers
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    Some((
        request.method?.to_string(),
        request.path?.to_string(),
        headers,
        length,
        close,
    ))
}

fn bad_request() -> Reply {
    Reply {
        status: 400,
        headers: vec![("connection", "close".into())],
        body: Vec::new(),
    }
}

async fn read_more(
    tls: &mut async_native_tls::TlsStream<Async<std::net::TcpStream>>,
    buf: &mut Vec<u8>,
) -> bool {
    let mut chunk = [0u8; 4096];
    match tls.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn write_http1(
    tls: &mut async_native_tls::TlsStream<Async<std::net::TcpStream>>,
    reply: &Reply,
) -> std::io::Result<()> {
    let reason = http::StatusCode::from_u16(reply.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", reply.body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(&reply.body);
    tls.write_all(&out).await?;
    tls.flush().await
}

impl Shared {
    /// Checks a request, records the outcome, and says what to answer.
    fn handle(&self, request: Incoming<'_>) -> Outcome {
        self.state.lock().unwrap().requests += 1;
        let seen = match self.check(&request) {
            Ok(seen) => seen,
            Err(refusal) => {
                let reply = Reply {
                    status: refusal.status,
                    headers: vec![("content-type", "application/json".into())],
                    body: serde_json::to_vec(&serde_json::json!({
                        "code": refusal.status,
                        "message": format!("{:?}", refusal.reason),
                    }))
                    .unwrap(),
                };
                self.state.lock().unwrap().refusals.push(refusal);
                return Outcome::Reply(reply);
            }
        };
        // The script runs with no lock held: it may be the test's closure
        // asking the service things.
        let answer = (self.script)(&seen);
        let mut state = self.state.lock().unwrap();
        state.seen.push(seen.clone());
        match answer {
            PushAnswer::Created => {
                state.created += 1;
                let location = format!("{}/message/{}", self.origin, state.created);
                state.delivered.push(seen);
                Outcome::Reply(Reply {
                    status: 201,
                    headers: vec![("location", location)],
                    body: Vec::new(),
                })
            }
            PushAnswer::Status {
                status,
                retry_after,
            } => {
                let mut headers = Vec::new();
                if let Some(seconds) = retry_after {
                    headers.push(("retry-after", seconds.to_string()));
                }
                Outcome::Reply(Reply {
                    status,
                    headers,
                    body: Vec::new(),
                })
            }
            PushAnswer::NoAnswer => Outcome::Hold,
            PushAnswer::Drop => Outcome::Drop,
        }
    }

    /// Every check a push service makes, in the order a push service makes
    /// them: the resource, the sender (VAPID), the headers, the message.
    fn check(&self, request: &Incoming<'_>) -> Result<PushSeen, Refusal> {
        let refuse = |id: Option<&str>, status: u16, reason: Refused| Refusal {
            id: id.map(str::to_string),
            status,
            reason,
        };
        let id = request
            .path
            .strip_prefix("/push/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .ok_or_else(|| refuse(None, 404, Refused::NotFound))?;
        let refuse = |status, reason| refuse(Some(id), status, reason);
        if request.method != "POST" {
            return Err(refuse(405, Refused::MethodNotAllowed));
        }
        let (keys, auth, expect_key) = {
            let state = self.state.lock().unwrap();
            let browser = state
                .subscriptions
                .get(id)
                .ok_or_else(|| refuse(404, Refused::UnknownSubscription))?;
            (browser.keys.clone(), browser.auth, state.expect_key.clone())
        };
        let headers = request.headers;
        check_vapid(headers, &self.origin, expect_key.as_deref())
            .map_err(|(status, reason)| refuse(status, reason))?;
        let (ttl, urgency, topic) = check_headers(headers).map_err(|reason| refuse(400, reason))?;
        if request.body.len() > 4096 {
            return Err(refuse(413, Refused::TooLarge(request.body.len())));
        }
        // ece asserts in places rather than erring: a body that trips one
        // is as undecryptable as one that fails its tag.
        let decrypted = std::panic::catch_unwind(|| ece::decrypt(&keys, &auth, request.body));
        let plaintext = match decrypted {
            Ok(Ok(plaintext)) => plaintext,
            Ok(Err(e)) => return Err(refuse(400, Refused::Undecryptable(e.to_string()))),
            Err(_) => return Err(refuse(400, Refused::Undecryptable("ece panicked".into()))),
        };
        Ok(PushSeen {
            id: id.to_string(),
            text: String::from_utf8(plaintext.clone()).ok(),
            plaintext,
            ttl,
            urgency,
            topic,
            headers: headers.clone(),
        })
    }
}

/// RFC 8292: `authorization: vapid t=<jwt>, k=<key>`, the JWT ES256 over
/// `k`, for this origin, expiring within 24 hours, with a contact.
fn check_vapid(
    headers: &HeaderMap,
    origin: &str,
    expect_key: Option<&str>,
) -> Result<(), (u16, Refused)> {
    let unauthorized = |reason| (401, reason);
    let bad = |what: &str| unauthorized(Refused::BadAuthorization(what.to_string()));
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(unauthorized(Refused::NoAuthorization))?
        .to_str()
        .map_err(|_| bad("not ASCII"))?;
    let (scheme, params) = value.split_once(' ').ok_or_else(|| bad("no parameters"))?;
    if !scheme.eq_ignore_ascii_case("vapid") {
        return Err(bad("the scheme is not vapid"));
    }
    let (mut t, mut k) = (None, None);
    for param in params.split(',') {
        let (name, value) = param
            .trim()
            .split_once('=')
            .ok_or_else(|| bad("a parameter without a value"))?;
        let slot = match name.trim() {
            "t" => &mut t,
            "k" => &mut k,
            _ => return Err(bad("a parameter other than t and k")),
        };
        if slot.replace(value.trim()).is_some() {
            return Err(bad("a parameter given twice"));
        }
    }
    let (jwt, key) = (t.ok_or_else(|| bad("no t"))?, k.ok_or_else(|| bad("no k"))?);

    let bad_key = |what: &str| unauthorized(Refused::BadKey(what.to_string()));
    let point = BASE64URL_NOPAD
        .decode(key.as_bytes())
        .map_err(|_| bad_key("not base64url without padding"))?;
    if point.len() != 65 || point[0] != 0x04 {
        return Err(bad_key(
            "not an uncompressed P-256 point (65 bytes, 0x04 first)",
        ));
    }
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let point =
        EcPoint::from_bytes(&group, &point, &mut ctx).map_err(|_| bad_key("off the curve"))?;
    let public = EcKey::from_public_key(&group, &point)
        .and_then(PKey::from_ec_key)
        .map_err(|_| bad_key("not a public key"))?;
    if expect_key.is_some_and(|expected| expected != key) {
        return Err((403, Refused::WrongKey));
    }

    let bad_jwt = |what: &str| unauthorized(Refused::BadJwt(what.to_string()));
    let mut parts = jwt.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad_jwt("not three parts"));
    };
    let json = |part: &str, what: &str| -> Result<Value, (u16, Refused)> {
        let bytes = BASE64URL_NOPAD
            .decode(part.as_bytes())
            .map_err(|_| bad_jwt(&format!("the {what} is not base64url")))?;
        serde_json::from_slice(&bytes).map_err(|_| bad_jwt(&format!("the {what} is not JSON")))
    };
    let header_json = json(header, "header")?;
    if header_json["alg"] != "ES256" {
        return Err(bad_jwt("alg is not ES256"));
    }
    if header_json.get("typ").is_some_and(|typ| typ != "JWT") {
        return Err(bad_jwt("typ is not JWT"));
    }
    let signature = BASE64URL_NOPAD
        .decode(signature.as_bytes())
        .map_err(|_| bad_jwt("the signature is not base64url"))?;
    if signature.len() != 64 {
        return Err(bad_jwt("the signature is not 64 bytes of r and s"));
    }
    // JWS gives r || s; openssl verifies the DER sequence of both.
    let der = EcdsaSig::from_private_components(
        BigNum::from_slice(&signature[..32]).unwrap(),
        BigNum::from_slice(&signature[32..]).unwrap(),
    )
    .and_then(|sig| sig.to_der())
    .unwrap();
    let mut verifier = Verifier::new(MessageDigest::sha256(), &public).unwrap();
    verifier
        .update(format!("{header}.{claims}").as_bytes())
        .unwrap();
    if !verifier.verify(&der).unwrap_or(false) {
        return Err(unauthorized(Refused::BadSignature));
    }

    let claims = json(claims, "claims")?;
    if !claims.is_object() {
        return Err(bad_jwt("the claims are not an object"));
    }
    if claims["aud"] != origin {
        return Err(unauthorized(Refused::WrongAudience(
            claims["aud"].to_string(),
        )));
    }
    let now = pushhub::time::unix_now();
    match claims["exp"].as_u64() {
        Some(exp) if exp > now && exp <= now + 24 * 3600 => {}
        _ => return Err(unauthorized(Refused::BadExpiry(claims["exp"].to_string()))),
    }
    match claims["sub"].as_str() {
        Some(sub) if sub.starts_with("mailto:") || sub.starts_with("https:") => {}
        _ => return Err(unauthorized(Refused::BadSubject(claims["sub"].to_string()))),
    }
    Ok(())
}

/// RFC 8030 and 8291's headers: `content-encoding: aes128gcm`, `ttl`, and
/// `urgency` and `topic` when given.
type Headers = (u64, Option<String>, Option<String>);

fn check_headers(headers: &HeaderMap) -> Result<Headers, Refused> {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let encoding = text("content-encoding");
    if !encoding
        .as_deref()
        .is_some_and(|e| e.eq_ignore_ascii_case("aes128gcm"))
    {
        return Err(Refused::BadEncoding(encoding));
    }
    let ttl = text("ttl").ok_or(Refused::NoTtl)?;
    if ttl.is_empty() || ttl.len() > 10 || !ttl.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refused::BadTtl(ttl));
    }
    let urgency = text("urgency");
    if let Some(urgency) = &urgency
        && !matches!(urgency.as_str(), "very-low" | "low" | "normal" | "high")
    {
        return Err(Refused::BadUrgency(urgency.clone()));
    }
    let topic = text("topic");
    if let Some(topic) = &topic {
        let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if topic.is_empty() || topic.len() > 32 || !topic.bytes().all(base64url) {
            return Err(Refused::BadTopic(topic.clone()));
        }
    }
    Ok((ttl.parse().unwrap(), urgency, topic))
}

/// A plain-uid hub with a registry and a fresh VAPID key, trusting
/// `service`'s certificate (which other services started with it share).
/// The key's public half is in `config.vapid`.
pub fn hub_config(service: &FakePushService, scratch: &super::Scratch) -> pushhub::Config {
    use pushhub::push::webpush::settings::VapidSettings;
    use pushhub::push::webpush::vapid::{Subject, VapidKey};
    let ca = scratch.path("webpush-ca.pem");
    std::fs::write(&ca, service.ca_pem()).unwrap();
    let key = VapidKey::generate().unwrap();
    let key_file = scratch.path("vapid.pem");
    std::fs::write(&key_file, key.to_pem().unwrap()).unwrap();
    let mut config = super::plain_config();
    config.apns_db = Some(scratch.path("devices.sqlite3"));
    config.vapid = Some(VapidSettings {
        key_file,
        public_key: key.public_key_base64url(),
        subject: Subject::parse("mailto:ops@example.com").unwrap(),
        ca_file: Some(ca),
    });
    config
}

/// Registers a Web Push subscription (a browser's JSON) for `uid` on the hub.
pub async fn register(backend: &mut super::Backend, uid: &str, subscription: &Value) {
    let reply = backend
        .json(serde_json::json!({"cmd": "register", "uid": uid, "webpush": subscription}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
}
