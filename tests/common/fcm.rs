//! A server that plays Google for the FCM tests: the OAuth token endpoint
//! (`POST /token`) and FCM's send endpoint
//! (`POST /v1/projects/test-project/messages:send`) on one TLS listener with
//! ALPN `h2`, the `h2` crate's server on a smol executor of its own thread.
//!
//! It makes the service account itself (an RSA key generated at start) and
//! checks assertions with openssl directly, not with pushhub's code, so a
//! mistake in pushhub's JWT cannot be mirrored here. Access tokens it issued
//! are checked on every send, by its own clock; a script answers the sends
//! that pass.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use bytes::Bytes;
use data_encoding::BASE64URL_NOPAD;
use http::{HeaderMap, Response, StatusCode};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::Verifier;
use pushhub::time::unix_now;
use serde_json::{Value, json};
use smol::Async;
use tokio_util::compat::FuturesAsyncReadCompatExt;

pub use super::tls::TestCert;

pub const PROJECT_ID: &str = "test-project";
pub const CLIENT_EMAIL: &str = "firebase-adminsdk-test@test-project.iam.gserviceaccount.com";
pub const KEY_ID: &str = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c";
pub const SEND_PATH: &str = "/v1/projects/test-project/messages:send";
pub const TOKEN_PATH: &str = "/token";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const FCM_ERROR: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST: &str = "type.googleapis.com/google.rpc.BadRequest";

/// A send that carried a valid access token, as the server saw it.
#[derive(Debug, Clone)]
pub struct FcmSeen {
    /// The registration token (`message.token`).
    pub token: String,
    /// The whole `message` object.
    pub message: Value,
    pub headers: HeaderMap,
    /// The access token it was authorized with.
    pub access_token: String,
}

/// How the server answers a send.
#[derive(Debug, Clone)]
pub enum FcmAnswer {
    /// 200 `{"name":"projects/test-project/messages/0:N"}`.
    Ok,
    /// An error as FCM writes it: `grpc_status` in `error.status`, and an
    /// `FcmError` detail when `error_code` is given; `retry-after` if asked.
    Error {
        status: u16,
        grpc_status: &'static str,
        error_code: Option<&'static str>,
        retry_after: Option<u32>,
    },
    /// 400 INVALID_ARGUMENT about `message.token`, with both details FCM
    /// sends for a token it never issued.
    InvalidToken,
    /// Leaves the stream open, unanswered.
    NoAnswer,
    /// Closes the connection without answering.
    Drop,
}

impl FcmAnswer {
    pub const UNREGISTERED: FcmAnswer = FcmAnswer::Error {
        status: 404,
        grpc_status: "NOT_FOUND",
        error_code: Some("UNREGISTERED"),
        retry_after: None,
    };
    pub const UNAVAILABLE: FcmAnswer = FcmAnswer::Error {
        status: 503,
        grpc_status: "UNAVAILABLE",
        error_code: Some("UNAVAILABLE"),
        retry_after: None,
    };
    pub const SENDER_ID_MISMATCH: FcmAnswer = FcmAnswer::Error {
        status: 403,
        grpc_status: "PERMISSION_DENIED",
        error_code: Some("SENDER_ID_MISMATCH"),
        retry_after: None,
    };

    pub fn quota_exceeded(retry_after: Option<u32>) -> FcmAnswer {
        FcmAnswer::Error {
            status: 429,
            grpc_status: "RESOURCE_EXHAUSTED",
            error_code: Some("QUOTA_EXCEEDED"),
            retry_after,
        }
    }
}

/// What the server answers a send that passed the access-token check.
pub type FcmScript = Arc<dyn Fn(&FcmSeen) -> FcmAnswer + Send + Sync>;

struct Issued {
    token: String,
    expires_at: u64,
    revoked: bool,
}

struct State {
    expires_in: u64,
    issued: Vec<Issued>,
    token_requests: usize,
    refusals: Vec<String>,
    unauthorized: usize,
    seen: Vec<FcmSeen>,
    sent: u64,
}

/// The running server. It stops when the test process ends.
pub struct FakeFcm {
    pub addr: SocketAddr,
    pub cert: TestCert,
    /// HTTP/2 connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    key: PKey<Private>,
    state: Arc<Mutex<State>>,
}

/// What the connection loop does with a request.
enum Action {
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    NoAnswer,
    Drop,
}

impl Action {
    fn json(status: u16, body: Value) -> Action {
        Action::Respond {
            status,
            headers: vec![("content-type", "application/json; charset=UTF-8".into())],
            body: body.to_string(),
        }
    }
}

impl FakeFcm {
    pub fn start(script: FcmScript) -> FakeFcm {
        let cert = TestCert::new();
        let identity = native_tls::Identity::from_pkcs8(&cert.cert_pem, &cert.key_pem).unwrap();
        let acceptor = native_tls::TlsAcceptor::builder(identity)
            .accept_alpn(&["h2"])
            .build()
            .unwrap();
        let acceptor = async_native_tls::TlsAcceptor::from(acceptor);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let public = PKey::public_key_from_pem(&key.public_key_to_pem().unwrap()).unwrap();
        let state = Arc::new(Mutex::new(State {
            expires_in: 3600,
            issued: Vec::new(),
            token_requests: 0,
            refusals: Vec::new(),
            unauthorized: 0,
            seen: Vec::new(),
            sent: 0,
        }));
        let connections = Arc::new(AtomicUsize::new(0));
        let server = Arc::new(Server {
            script,
            public,
            token_url: token_url(addr),
            state: Arc::clone(&state),
        });
        let counted = Arc::clone(&connections);
        thread::spawn(move || {
            let ex = smol::LocalExecutor::new();
            smol::block_on(ex.run(async {
                let listener = Async::new(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, server, counted) =
                        (acceptor.clone(), Arc::clone(&server), Arc::clone(&counted));
                    ex.spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let Ok(mut h2) = h2::server::handshake(tls.compat()).await else {
                            return;
                        };
                        counted.fetch_add(1, Ordering::SeqCst);
                        // Kept unanswered (not reset) until the connection ends.
                        let mut ignored = Vec::new();
                        while let Some(Ok((request, mut respond))) = h2.accept().await {
                            let (parts, mut incoming) = request.into_parts();
                            // The body's frames are read by the connection, which
                            // must be driven meanwhile (a body can span reads).
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
                            let action = server.answer(
                                parts.method.as_str(),
                                parts.uri.path(),
                                parts.headers,
                                &body,
                            );
                            let (status, headers, body) = match action {
                                Action::Drop => return,
                                Action::NoAnswer => {
                                    ignored.push(respond);
                                    continue;
                                }
                                Action::Respond {
                                    status,
                                    headers,
                                    body,
                                } => (status, headers, body),
                            };
                            let mut response =
                                Response::builder().status(StatusCode::from_u16(status).unwrap());
                            for (name, value) in headers {
                                response = response.header(name, value);
                            }
                            let Ok(mut stream) =
                                respond.send_response(response.body(()).unwrap(), false)
                            else {
                                continue;
                            };
                            let _ = stream.send_data(Bytes::from(body), true);
                        }
                    })
                    .detach();
                }
            }));
        });
        FakeFcm {
            addr,
            cert,
            connections,
            key,
            state,
        }
    }

    /// The service account's JSON key file, as Firebase console downloads
    /// it, pointing at this server's token endpoint.
    pub fn service_account(&self) -> String {
        let pem = String::from_utf8(self.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        json!({
            "type": "service_account",
            "project_id": PROJECT_ID,
            "private_key_id": KEY_ID,
            "private_key": pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_url(self.addr),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/test",
            "universe_domain": "googleapis.com"
        })
        .to_string()
    }

    /// `https://localhost:PORT/token`, the assertions' audience.
    pub fn token_url(&self) -> String {
        token_url(self.addr)
    }

    /// The `expires_in` of tokens issued from now on (default 3600).
    pub fn set_expires_in(&self, seconds: u64) {
        self.state.lock().unwrap().expires_in = seconds;
    }

    /// Every access token issued so far is refused from now on.
    pub fn revoke_tokens(&self) {
        for issued in &mut self.state.lock().unwrap().issued {
            issued.revoked = true;
        }
    }

    /// Requests to `/token`, granted or not.
    pub fn token_requests(&self) -> usize {
        self.state.lock().unwrap().token_requests
    }

    /// The access tokens issued so far, oldest first.
    pub fn issued(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.issued.iter().map(|i| i.token.clone()).collect()
    }

    /// Why each refused request was refused (`token: ...`, `send: ...`).
    pub fn refusals(&self) -> Vec<String> {
        self.state.lock().unwrap().refusals.clone()
    }

    /// Sends answered 401 for their access token.
    pub fn unauthorized(&self) -> usize {
        self.state.lock().unwrap().unauthorized
    }

    /// The sends that passed the access-token check, in order.
    pub fn seen(&self) -> Vec<FcmSeen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// A TLS client configuration that trusts this server.
    pub fn connector(&self) -> async_native_tls::TlsConnector {
        async_native_tls::TlsConnector::new()
            .add_root_certificate(self.cert.certificate())
            .request_alpns(&["h2"])
    }

    /// The server's certificate, PEM, for a CA file.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.cert.cert_pem.clone()
    }
}

fn token_url(addr: SocketAddr) -> String {
    format!("https://localhost:{}{TOKEN_PATH}", addr.port())
}

/// The server thread's half: the checks and answers.
struct Server {
    script: FcmScript,
    public: PKey<Public>,
    token_url: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    fn answer(&self, method: &str, path: &str, headers: HeaderMap, body: &[u8]) -> Action {
        match (method, path) {
            ("POST", TOKEN_PATH) => self.token(&headers, body),
            ("POST", SEND_PATH) => self.send(headers, body),
            _ => {
                self.refuse(format!("{method} {path}: no such route"));
                Action::Respond {
                    status: 404,
                    headers: vec![("content-type", "text/html; charset=UTF-8".into())],
                    body: "<!DOCTYPE html><title>Error 404 (Not Found)</title>".into(),
                }
            }
        }
    }

    fn refuse(&self, why: String) {
        self.state.lock().unwrap().refusals.push(why);
    }

    fn token(&self, headers: &HeaderMap, body: &[u8]) -> Action {
        self.state.lock().unwrap().token_requests += 1;
        match self.check_grant(headers, body) {
            Ok(()) => {
                let mut state = self.state.lock().unwrap();
                let token = format!("fake-token-{}", state.issued.len() + 1);
                let expires_in = state.expires_in;
                state.issued.push(Issued {
                    token: token.clone(),
                    expires_at: unix_now() + expires_in,
                    revoked: false,
                });
                Action::json(
                    200,
                    json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}),
                )
            }
            Err((error, why)) => {
                self.refuse(format!("token: {why}"));
                Action::json(400, json!({"error": error, "error_description": why}))
            }
        }
    }

    /// `Err((OAuth error, why))` for a grant Google would refuse.
    fn check_grant(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), (&'static str, String)> {
        let request = |why: &str| ("invalid_request", why.to_string());
        let grant = |why: &str| ("invalid_grant", why.to_string());
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return Err(request(&format!(
                "content-type {content_type:?} is not a form"
            )));
        }
        let form = parse_form(body).ok_or_else(|| request("the body is not a form"))?;
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if field("grant_type") != Some(GRANT_TYPE) {
            return Err((
                "unsupported_grant_type",
                format!("Invalid grant_type: {:?}", field("grant_type")),
            ));
        }
        let assertion = field("assertion").ok_or_else(|| request("no assertion"))?;
        let parts: Vec<&str> = assertion.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Err(grant("Invalid JWT: not three parts"));
        };
        let decode = |part: &str| {
            BASE64URL_NOPAD
                .decode(part.as_bytes())
                .map_err(|_| grant("Invalid JWT: a part is not base64url"))
        };
        let header: Value = serde_json::from_slice(&decode(header)?)
            .map_err(|_| grant("Invalid JWT: the header is not JSON"))?;
        if header["alg"] != "RS256" {
            return Err(grant(&format!(
                "Invalid JWT: alg {} is not RS256",
                header["alg"]
            )));
        }
        if !header["kid"].is_null() && header["kid"] != KEY_ID {
            return Err(grant("Invalid JWT: kid is not the key's id"));
        }
        // The signature before anything it signs is believed.
        let signed = &assertion[..header_claims_len(assertion)];
        let mut verifier = Verifier::new(MessageDigest::sha256(), &self.public).unwrap();
        verifier.set_rsa_padding(Padding::PKCS1).unwrap();
        if !verifier
            .verify_oneshot(&decode(signature)?, signed.as_bytes())
            .unwrap_or(false)
        {
            return Err(grant("Invalid JWT Signature."));
        }
        let claims: Value = serde_json::from_slice(&decode(claims)?)
            .map_err(|_| grant("Invalid JWT: the claims are not JSON"))?;
        if claims["iss"] != CLIENT_EMAIL {
            return Err(grant(&format!(
                "Invalid JWT: iss {} is not the account",
                claims["iss"]
            )));
        }
        if claims["aud"] != self.token_url.as_str() {
            return Err(grant(&format!(
                "Invalid JWT: aud {} is not {}",
                claims["aud"], self.token_url
            )));
        }
        let scopes = claims["scope"].as_str().unwrap_or("");
        if !scopes.split(' ').any(|s| s == SCOPE) {
            return Err(grant(&format!(
                "Invalid JWT: scope {scopes:?} lacks firebase.messaging"
            )));
        }
        let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
            return Err(grant("Invalid JWT: iat and exp must be whole seconds"));
        };
        let now = unix_now();
        if !(iat <= now && now <= exp) || exp - iat > 3600 {
            return Err(grant(&format!(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a \
                 reasonable timeframe (iat {iat}, exp {exp}, now {now})"
            )));
        }
        Ok(())
    }

    fn send(&self, headers: HeaderMap, body: &[u8]) -> Action {
        let access_token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_string();
        let now = unix_now();
        {
            let mut state = self.state.lock().unwrap();
            let valid = state
                .issued
                .iter()
                .any(|i| i.token == access_token && !i.revoked && now < i.expires_at);
            if !valid {
                state.unauthorized += 1;
                state
                    .refusals
                    .push(format!("send: access token {access_token:?} is not valid"));
                return Action::json(
                    401,
                    json!({"error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials. Expected \
                            OAuth 2 access token, login cookie or other valid authentication \
                            credential. See \
                            https://developers.google.com/identity/sign-in/web/devconsole-project.",
                        "status": "UNAUTHENTICATED"
                    }}),
                );
            }
        }
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|mut v| v.get_mut("message").map(Value::take));
        let token = message
            .as_ref()
            .and_then(|m| m.get("token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let (Some(message), Some(token)) = (message.clone(), token) else {
            self.refuse("send: the body is not {\"message\":{\"token\":...}}".into());
            return Action::json(
                400,
                json!({"error": {
                    "code": 400,
                    "message": "Recipient of the message is not set.",
                    "status": "INVALID_ARGUMENT",
                    "details": [{
                        "@type": BAD_REQUEST,
                        "fieldViolations": [{"field": "message", "description": "Recipient of the message is not set."}]
                    }]
                }}),
            );
        };
        let seen = FcmSeen {
            token: token.to_string(),
            message,
            headers,
            access_token,
        };
        let answer = (self.script)(&seen);
        let mut state = self.state.lock().unwrap();
        state.seen.push(seen);
        match answer {
            FcmAnswer::Ok => {
                state.sent += 1;
                Action::json(
                    200,
                    json!({"name": format!("projects/{PROJECT_ID}/messages/0:{}", state.sent)}),
                )
            }
            FcmAnswer::InvalidToken => Action::json(
                400,
                json!({"error": {
                    "code": 400,
                    "message": "The registration token is not a valid FCM registration token",
                    "status": "INVALID_ARGUMENT",
                    "details": [
                        {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"},
                        {"@type": BAD_REQUEST, "fieldViolations": [
                            {"field": "message.token", "description": "Invalid registration token"}
                        ]}
                    ]
                }}),
            ),
            FcmAnswer::Error {
                status,
                grpc_status,
                error_code,
                retry_after,
            } => {
                let mut error = json!({
                    "code": status,
                    "message": error_message(grpc_status, error_code),
                    "status": grpc_status,
                });
                if let Some(code) = error_code {
                    error["details"] = json!([{"@type": FCM_ERROR, "errorCode": code}]);
                }
                let mut action = Action::json(status, json!({ "error": error }));
                if let (Some(seconds), Action::Respond { headers, .. }) = (retry_after, &mut action)
                {
                    headers.push(("retry-after", seconds.to_string()));
                }
                action
            }
            FcmAnswer::NoAnswer => Action::NoAnswer,
            FcmAnswer::Drop => Action::Drop,
        }
    }
}

/// The `message` FCM writes with each error.
fn error_message(grpc_status: &str, error_code: Option<&str>) -> &'static str {
    match (error_code, grpc_status) {
        (Some("UNREGISTERED"), _) => "Requested entity was not found.",
        (Some("SENDER_ID_MISMATCH"), _) => "SenderId mismatch",
        (Some("QUOTA_EXCEEDED"), _) => {
            "Quota exceeded for quota metric 'Send requests' and limit 'Send requests per \
             minute' of service 'fcm.googleapis.com'."
        }
        (Some("UNAVAILABLE"), _) => "The service is currently unavailable.",
        (Some("INTERNAL"), _) => "Internal error encountered.",
        (Some("THIRD_PARTY_AUTH_ERROR"), _) => "Auth error from APNS or Web Push Service",
        (Some("INVALID_ARGUMENT"), _) | (None, "INVALID_ARGUMENT") => {
            "Request contains an invalid argument."
        }
        (None, "UNAUTHENTICATED") => {
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential."
        }
        (None, "PERMISSION_DENIED") => {
            "Permission 'cloudmessaging.messages.create' denied on resource \
             '//cloudresourcemanager.googleapis.com/projects/test-project' (or it may not exist)."
        }
        _ => "An error occurred.",
    }
}

/// The length of `header.claims`, the part of a JWT its signature covers.
fn header_claims_len(jwt: &str) -> usize {
    jwt.rfind('.').unwrap_or(jwt.len())
}

/// `application/x-www-form-urlencoded` pairs, decoded; `None` if a value is
/// not valid percent-encoded UTF-8.
fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// `config` sending to `fake` as FCM: the service account and the fake's CA
/// written to `scratch`, the send endpoint on localhost, the token endpoint
/// the account's `token_uri`; with a device registry in `scratch` if it has
/// none yet.
pub fn with_fcm(
    mut config: pushhub::Config,
    fake: &FakeFcm,
    scratch: &super::Scratch,
) -> pushhub::Config {
    use pushhub::push::fcm::settings::FcmSettings;
    use pushhub::push::sender::Origin;
    let credentials_file = scratch.path("service-account.json");
    std::fs::write(&credentials_file, fake.service_account()).unwrap();
    let ca = scratch.path("fcm-ca.pem");
    std::fs::write(&ca, fake.ca_pem()).unwrap();
    if config.apns_db.is_none() {
        config.apns_db = Some(scratch.path("devices.sqlite3"));
    }
    config.fcm = Some(FcmSettings {
        credentials_file,
        project_id: PROJECT_ID.into(),
        endpoint: Origin::new("localhost", fake.addr.port()),
        token_endpoint: None,
        ca_file: Some(ca),
    });
    config
}

/// A plain-uid hub with a registry, sending to `fake` as FCM.
pub fn hub_config(fake: &FakeFcm, scratch: &super::Scratch) -> pushhub::Config {
    with_fcm(super::plain_config(), fake, scratch)
}

/// Registers an FCM registration token for `uid` on the hub.
pub async fn register(backend: &mut super::Backend, uid: &str, token: &str) {
    let reply = backend
        .json(json!({"cmd": "register", "uid": uid, "fcm": token}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
}
