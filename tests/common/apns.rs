//! A server that plays APNs for the tests: TLS with a certificate made at test
//! time, ALPN `h2`, the `h2` crate's server on a smol executor of its own
//! thread. It records every request and answers each with the status and
//! reason its script gives, or with one of the misbehaviours below.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use smol::Async;
use tokio_util::compat::FuturesAsyncReadCompatExt;

pub use super::tls::TestCert;

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A script's status that closes the connection (TCP) without answering.
pub const DROP_CONNECTION: u16 = 0;

/// A script's status that sends GOAWAY (NO_ERROR) and closes the connection
/// without answering.
pub const GO_AWAY: u16 = 1;

/// A script's status that leaves the request unanswered, the connection open.
pub const NO_ANSWER: u16 = 2;

/// What the server answers: a status and, for errors, Apple's reason.
pub type Script = Arc<dyn Fn(&Seen) -> (u16, Option<&'static str>) + Send + Sync>;

/// The running server. It stops when the test process ends.
pub struct FakeApns {
    pub addr: SocketAddr,
    pub cert: TestCert,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// HTTP/2 connections accepted so far.
    pub connections: Arc<AtomicUsize>,
}

impl FakeApns {
    pub fn start(script: Script) -> FakeApns {
        FakeApns::start_batched(script, 1)
    }

    /// Like [`FakeApns::start`], but on each connection responses are held
    /// until `batch` requests wait, then all are answered: a client that does
    /// not keep `batch` streams in flight gets no answer.
    pub fn start_batched(script: Script, batch: usize) -> FakeApns {
        let cert = TestCert::new();
        let identity = native_tls::Identity::from_pkcs8(&cert.cert_pem, &cert.key_pem).unwrap();
        let acceptor = native_tls::TlsAcceptor::builder(identity)
            .accept_alpn(&["h2"])
            .build()
            .unwrap();
        let acceptor = async_native_tls::TlsAcceptor::from(acceptor);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        thread::spawn(move || {
            let ex = smol::LocalExecutor::new();
            smol::block_on(ex.run(async {
                let listener = Async::new(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, script, recorded, counted) = (
                        acceptor.clone(),
                        Arc::clone(&script),
                        Arc::clone(&recorded),
                        Arc::clone(&counted),
                    );
                    ex.spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let Ok(mut h2) = h2::server::handshake(tls.compat()).await else {
                            return;
                        };
                        counted.fetch_add(1, Ordering::SeqCst);
                        let mut held = Vec::new();
                        // Kept unanswered (not reset) until the connection ends.
                        let mut ignored = Vec::new();
                        while let Some(Ok((request, respond))) = h2.accept().await {
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
                            let seen = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                headers: parts.headers,
                                body: body.into(),
                            };
                            let (status, reason) = script(&seen);
                            recorded.lock().unwrap().push(seen.clone());
                            match status {
                                DROP_CONNECTION => return,
                                NO_ANSWER => {
                                    ignored.push(respond);
                                    continue;
                                }
                                GO_AWAY => {
                                    h2.abrupt_shutdown(h2::Reason::NO_ERROR);
                                    ignored.push(respond);
                                    continue;
                                }
                                _ => held.push((respond, status, reason)),
                            }
                            if held.len() < batch {
                                continue;
                            }
                            for (mut respond, status, reason) in held.drain(..) {
                                let response = Response::builder()
                                    .status(StatusCode::from_u16(status).unwrap())
                                    .header("apns-id", "00000000-0000-0000-0000-000000000001")
                                    .body(())
                                    .unwrap();
                                let body = reason.map(|r| format!(r#"{{"reason":"{r}"}}"#));
                                let Ok(mut stream) =
                                    respond.send_response(response, body.is_none())
                                else {
                                    continue;
                                };
                                if let Some(body) = body {
                                    let _ = stream.send_data(Bytes::from(body), true);
                                }
                            }
                        }
                    })
                    .detach();
                }
            }));
        });
        FakeApns {
            addr,
            cert,
            seen,
            connections,
        }
    }

    /// A TLS client configuration that trusts this server.
    pub fn connector(&self) -> async_native_tls::TlsConnector {
        async_native_tls::TlsConnector::new()
            .add_root_certificate(native_tls::Certificate::from_pem(&self.cert.cert_pem).unwrap())
            .request_alpns(&["h2"])
    }
}

/// A device token for tests: 64 hex digits from `n`.
pub fn device(n: u32) -> String {
    format!("{n:08x}").repeat(8)
}

/// A plain-uid hub with a registry, sending to `apns` with certificate auth.
pub fn hub_config(apns: &FakeApns, scratch: &super::Scratch) -> pushhub::Config {
    use pushhub::push::apns::settings::{ApnsSettings, Credentials, Endpoint};
    let ca = scratch.path("ca.pem");
    std::fs::write(&ca, &apns.cert.cert_pem).unwrap();
    // The fake server does not check the client certificate, but the hub
    // loads it exactly as it would Apple's.
    let client = TestCert::new();
    let identity = scratch.path("ck.pem");
    std::fs::write(&identity, [client.cert_pem, client.key_pem].concat()).unwrap();
    let mut config = super::plain_config();
    config.apns_db = Some(scratch.path("devices.sqlite3"));
    config.apns = Some(ApnsSettings {
        topic: "com.example.app".into(),
        credentials: Credentials::Certificate {
            file: identity,
            password: None,
        },
        endpoint: Endpoint {
            host: "localhost".into(),
            port: apns.addr.port(),
        },
        ca_file: Some(ca),
    });
    config
}

/// Registers an APNs device token for `uid` on the hub.
pub async fn register(backend: &mut super::Backend, uid: &str, token: &str) {
    let reply = backend
        .json(serde_json::json!({"cmd": "register", "uid": uid, "apns": token}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
}
