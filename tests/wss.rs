//! wss: the WebSocket port behind TLS (`--tls-cert`/`--tls-key` or
//! `--tls-pkcs12`), tested with real TLS clients (async-native-tls) over real
//! sockets: delivery, handshake failures and their deadline, slow consumers,
//! graceful shutdown, certificate reload on SIGHUP, PKCS#12 passwords, and the
//! command line's refusals.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_native_tls::{TlsConnector, TlsStream};
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use common::tls::TestCert;
use common::*;
use pushhub::Config;
use pushhub::ws::tls::{TlsFiles, TlsSettings};
use rustix::process::Signal;
use serde_json::{Value, json};
use smol::Async;

/// A wss client.
type Wss = WebSocketStream<TlsStream<Async<TcpStream>>>;

/// The certificate of the in-process hubs (RSA keys take a moment to make).
fn cert() -> &'static TestCert {
    static CERT: OnceLock<TestCert> = OnceLock::new();
    CERT.get_or_init(TestCert::new)
}

/// A client configuration that trusts `cert` (and the system's roots).
fn trusting(cert: &TestCert) -> TlsConnector {
    TlsConnector::new().add_root_certificate(cert.certificate())
}

/// Where a wss connection attempt failed (the errors are for the messages
/// of failed assertions).
#[derive(Debug)]
#[allow(dead_code)]
enum Failed {
    Tcp(std::io::Error),
    Tls(native_tls::Error),
    WebSocket(WsError),
}

/// Connects to `ws` as `name` with `connector`, then completes the WebSocket
/// handshake on `path` inside TLS.
async fn try_wss(
    ws: SocketAddr,
    connector: TlsConnector,
    name: &str,
    path: &str,
) -> Result<Wss, Failed> {
    let tcp = Async::<TcpStream>::connect(ws).await.map_err(Failed::Tcp)?;
    let tls = connector.connect(name, tcp).await.map_err(Failed::Tls)?;
    let url = format!("wss://{name}:{}{path}", ws.port());
    let (client, _response) = async_tungstenite::client_async(url, tls)
        .await
        .map_err(Failed::WebSocket)?;
    Ok(client)
}

/// A wss client of `ws` that trusts `cert`, handshakes done.
async fn wss(ws: SocketAddr, cert: &TestCert, path: &str) -> Wss {
    within(STEP, "TLS and WebSocket handshakes", {
        try_wss(ws, trusting(cert), "localhost", path)
    })
    .await
    .unwrap_or_else(|e| panic!("wss handshake on {path} failed: {e:?}"))
}

/// A wss client logged in as `uid` in plain-uid mode.
async fn wss_login(ws: SocketAddr, cert: &TestCert, uid: &str) -> Wss {
    let mut client = wss(ws, cert, "/").await;
    send_text(&mut client, uid).await;
    logged_in(&mut client).await;
    client
}

/// The DER of the certificate the server presented to `client`.
fn peer_der(client: &Wss) -> Vec<u8> {
    client
        .get_ref()
        .peer_certificate()
        .unwrap()
        .expect("the server presented no certificate")
        .to_der()
        .unwrap()
}

fn write(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap();
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An in-process hub serving wss with [`cert`], from PEM files in a scratch
/// directory.
struct WssHub {
    server: Server,
    _files: Scratch,
}

impl WssHub {
    fn start(mut config: Config) -> WssHub {
        let files = Scratch::new("wss");
        let (cert_path, key_path) = (files.path("cert.pem"), files.path("key.pem"));
        write(&cert_path, &cert().cert_pem);
        write(&key_path, &cert().key_pem);
        config.tls = Some(TlsSettings {
            files: TlsFiles::Pem {
                cert: cert_path,
                key: Some(key_path),
            },
            password: None,
        });
        WssHub {
            server: Server::start(config),
            _files: files,
        }
    }

    fn ws(&self) -> SocketAddr {
        self.server.ws
    }

    fn text(&self) -> SocketAddr {
        self.server.text
    }
}

/// How many handshakes failed for `reason`, per `stats`.
fn failures(stats: &Value, reason: &str) -> u64 {
    stats["handshake_failures"][reason].as_u64().unwrap_or(0)
}

/// Waits until `stats` counts `n` handshake failures for `reason`; returns the stats.
async fn wait_failures(backend: &mut Backend, reason: &str, n: u64) -> Value {
    let deadline = Deadline::new(STEP, format!("{n} handshake failures ({reason})"));
    loop {
        let stats = backend.stats().await;
        if failures(&stats, reason) == n {
            return stats;
        }
        deadline.tick().await;
    }
}

/// `GET /metrics` on the monitoring endpoint: the exposition.
fn metrics_body(addr: SocketAddr) -> String {
    let response = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// `len` bytes of text that differ from message to message and from place to
/// place, so that a lost, repeated or reordered piece shows.
fn payload(seed: usize, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = (seed as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut text = format!("{seed:08}");
    while text.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push(ALPHABET[(state % ALPHABET.len() as u64) as usize] as char);
    }
    text
}

/// A real TLS ClientHello record, as native-tls sends it first thing.
fn client_hello() -> Vec<u8> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(STEP)).unwrap();
        // Fails once the listening side has what it wants and closes.
        let _ = native_tls::TlsConnector::new()
            .unwrap()
            .connect("localhost", tcp);
    });
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(STEP)).unwrap();
    let mut header = [0u8; 5];
    peer.read_exact(&mut header).unwrap();
    assert_eq!(header[0], 0x16, "not a TLS handshake record: {header:?}");
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let mut body = vec![0u8; len];
    peer.read_exact(&mut body).unwrap();
    assert_eq!(body[0], 1, "not a ClientHello");
    drop(peer);
    client.join().unwrap();
    [&header[..], &body].concat()
}

// ---------------------------------------------------------------------------
// In process.

#[test]
fn wss_clients_authenticate_and_receive_pushes_and_broadcasts() {
    let mut config = token_config();
    config.auth.allow_plain_uid = true;
    let hub = WssHub::start(config);
    run(async {
        let mut backend = Backend::connect(hub.text()).await;
        // A token in the URL binds the client before the handshake's answer.
        let mut by_query = wss(hub.ws(), cert(), &format!("/?token={}", token("alice"))).await;
        assert!(peer_der(&by_query) == cert().der(), "another certificate");
        assert_eq!(backend.connections("alice").await, 1);
        // A token as the first message.
        let mut by_message = wss(hub.ws(), cert(), "/").await;
        send_text(&mut by_message, &token("alice")).await;
        wait_connections(&mut backend, "alice", 2).await;
        // A plain uid, greeted.
        let mut bob = wss_login(hub.ws(), cert(), "bob").await;

        // The Workerman original's push line, answered `ok`.
        let line = r#"{"uid":"alice","percent":"88%"}"#;
        assert_eq!(backend.request(line).await, "ok");
        assert_eq!(next_text(&mut by_query).await, line);
        assert_eq!(next_text(&mut by_message).await, line);
        assert_eq!(backend.push("bob", "for bob").await, 1);
        assert_eq!(next_text(&mut bob).await, "for bob");

        assert_eq!(backend.broadcast("to everyone").await, 3);
        for client in [&mut by_query, &mut by_message, &mut bob] {
            assert_eq!(next_text(client).await, "to everyone");
        }
        // Nothing else was queued for Alice's tabs: their next message is the next push.
        assert_eq!(backend.push("alice", "second").await, 2);
        assert_eq!(next_text(&mut by_query).await, "second");
        assert_eq!(next_text(&mut by_message).await, "second");

        let stats = backend.stats().await;
        assert_eq!(stats["connections"], 3, "{stats}");
        assert_eq!(stats["handshakes"], 3, "{stats}");
        assert_eq!(
            stats["handshake_failures"],
            serde_json::json!({}),
            "{stats}"
        );

        close_client(&mut bob).await;
        wait_connections(&mut backend, "bob", 0).await;
    });
}

/// A blocking OpenSSL client of `ws` that trusts [`cert`], set up by `setup`;
/// the handshake's outcome.
fn openssl_client(
    ws: SocketAddr,
    setup: impl FnOnce(&mut openssl::ssl::SslConnectorBuilder),
    session: Option<&openssl::ssl::SslSessionRef>,
) -> Result<openssl::ssl::SslStream<TcpStream>, String> {
    use openssl::ssl::{SslConnector, SslMethod};
    let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
    builder
        .cert_store_mut()
        .add_cert(openssl::x509::X509::from_pem(&cert().cert_pem).unwrap())
        .unwrap();
    setup(&mut builder);
    let mut ssl = builder
        .build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    if let Some(session) = session {
        // SAFETY: the session comes from a connection to this same server.
        unsafe { ssl.set_session(session).unwrap() };
    }
    let tcp = TcpStream::connect(ws).unwrap();
    tcp.set_read_timeout(Some(STEP)).unwrap();
    ssl.connect(tcp).map_err(|e| e.to_string())
}

/// A plain-uid login and a push over an established TLS stream, blocking.
fn login_and_push(tls: openssl::ssl::SslStream<TcpStream>, text: SocketAddr, uid: &str) {
    let url = format!("wss://localhost:{}/", 0);
    let (mut client, _) = async_tungstenite::tungstenite::client(url, tls).unwrap();
    client.send(Message::text(uid)).unwrap();
    // A ping's pong tells that the uid is taken (the hub greets no one).
    client.send(Message::Ping(Vec::new().into())).unwrap();
    loop {
        if let Message::Pong(_) = client.read().unwrap() {
            break;
        }
    }
    let mut backend = TcpStream::connect(text).unwrap();
    backend.set_read_timeout(Some(STEP)).unwrap();
    let line = format!("{{\"uid\":\"{uid}\",\"n\":1}}\n");
    backend.write_all(line.as_bytes()).unwrap();
    let mut answer = [0u8; 3];
    backend.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"ok\n");
    match client.read().unwrap() {
        Message::Text(text) => assert_eq!(text.as_str(), line.trim_end()),
        other => panic!("expected the push, got {other:?}"),
    }
}

/// TLS 1.3 by default and TLS 1.2 for clients that stop there, both serving
/// WebSocket clients; older versions and suites without AEAD or forward
/// secrecy are refused; a ticket resumes a session without a full handshake.
#[test]
fn tls_versions_suites_and_resumption() {
    use openssl::ssl::{SslSessionCacheMode, SslVersion};
    let mut config = plain_config();
    config.auth.allow_plain_uid = true;
    let hub = WssHub::start(config);
    let (ws, text) = (hub.ws(), hub.text());

    let tls13 = openssl_client(ws, |_| {}, None).unwrap();
    assert_eq!(tls13.ssl().version_str(), "TLSv1.3");
    login_and_push(tls13, text, "modern");

    let tls12 = openssl_client(
        ws,
        |b| b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(tls12.ssl().version_str(), "TLSv1.2");
    let suite = tls12.ssl().current_cipher().unwrap().name();
    assert!(
        suite.starts_with("ECDHE-") && !suite.contains("CBC"),
        "{suite}"
    );
    login_and_push(tls12, text, "older");

    // TLS 1.1, which the client allows only at security level 0.
    let tls11 = openssl_client(
        ws,
        |b| {
            b.set_security_level(0);
            b.set_min_proto_version(Some(SslVersion::TLS1_1)).unwrap();
            b.set_max_proto_version(Some(SslVersion::TLS1_1)).unwrap();
            b.set_cipher_list("DEFAULT@SECLEVEL=0").unwrap();
        },
        None,
    );
    assert!(tls11.is_err(), "TLS 1.1 was accepted");
    // CBC suites, and RSA key exchange without forward secrecy.
    for suites in [
        "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384",
        "AES128-GCM-SHA256",
    ] {
        let refused = openssl_client(
            ws,
            |b| {
                b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
                b.set_cipher_list(suites).unwrap();
            },
            None,
        );
        assert!(refused.is_err(), "{suites} was accepted");
    }

    // Resumption, TLS 1.3 and 1.2: the ticket of a first connection.
    for max in [SslVersion::TLS1_3, SslVersion::TLS1_2] {
        let ticket = std::sync::Arc::new(std::sync::Mutex::new(None));
        let setup = |b: &mut openssl::ssl::SslConnectorBuilder| {
            b.set_max_proto_version(Some(max)).unwrap();
            b.set_session_cache_mode(SslSessionCacheMode::CLIENT);
            let ticket = std::sync::Arc::clone(&ticket);
            b.set_new_session_callback(move |_, session| *ticket.lock().unwrap() = Some(session));
        };
        let mut first = openssl_client(ws, setup, None).unwrap();
        // TLS 1.3 tickets come after the handshake: read until one is in.
        first.get_mut().set_nonblocking(true).unwrap();
        let deadline = Instant::now() + STEP;
        while ticket.lock().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{max:?}: no ticket from the hub");
            let _ = first.read(&mut [0u8; 16]);
            std::thread::sleep(Duration::from_millis(5));
        }
        let session = ticket.lock().unwrap().take().unwrap();
        let again = openssl_client(ws, setup, Some(&session)).unwrap();
        assert!(
            again.ssl().session_reused(),
            "{max:?}: the ticket was not taken"
        );
    }
}

/// 200 KB messages span many TLS records (16 KiB each at most); thirty of them
/// at once are more than the socket buffers take, so the hub's writes stop and
/// resume, mid-record. Every byte arrives, in order.
#[test]
fn large_messages_arrive_intact_over_many_records() {
    const SIZE: usize = 200 * 1024;
    const N: usize = 30;
    let mut config = plain_config();
    config.max_queue_bytes = 16 << 20;
    let hub = WssHub::start(config);
    run(async {
        let mut backend = Backend::connect(hub.text()).await;
        let mut reader = wss_login(hub.ws(), cert(), "big").await;
        let mut bystander = wss_login(hub.ws(), cert(), "small").await;
        // Pushed before any is read.
        for i in 0..N {
            assert_eq!(backend.push("big", &payload(i, SIZE)).await, 1);
        }
        // The premise: the socket took what it could and the rest waits in the hub.
        let queued = sample(&metrics_body(hub.server.metrics), "pushhub_queued_bytes");
        assert!(queued.unwrap() > 0.0, "nothing waits: {queued:?}");
        // Another connection is served meanwhile.
        assert_eq!(backend.push("small", "meanwhile").await, 1);
        assert_eq!(next_text(&mut bystander).await, "meanwhile");
        for i in 0..N {
            let got = next_text(&mut reader).await;
            assert_eq!(got.len(), SIZE, "message #{i}");
            assert!(got == payload(i, SIZE), "message #{i} arrived damaged");
        }
        let stats = backend.stats().await;
        assert_eq!(stats["dropped"], 0, "{stats}");
    });
}

#[test]
fn plain_ws_on_the_wss_port_is_refused_and_counted() {
    let hub = WssHub::start(plain_config());
    run(async {
        let mut backend = Backend::connect(hub.text()).await;
        let mut steady = wss_login(hub.ws(), cert(), "steady").await;

        let refused = within(STEP, "a plain ws handshake", try_connect(hub.ws(), "/")).await;
        assert!(refused.is_err(), "a plain ws client got a WebSocket");
        // What such a client reads back is no HTTP answer.
        let mut raw = TcpStream::connect(hub.ws()).unwrap();
        raw.set_read_timeout(Some(STEP)).unwrap();
        raw.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = raw.read_to_end(&mut answer);
        assert!(
            !answer.starts_with(b"HTTP/"),
            "the wss port answered plain HTTP: {:?}",
            String::from_utf8_lossy(&answer)
        );

        let stats = wait_failures(&mut backend, "tls", 2).await;
        assert_eq!(stats["handshakes"], 1, "{stats}");
        assert_eq!(stats["connections"], 1, "{stats}");
        let body = metrics_body(hub.server.metrics);
        assert_eq!(
            sample(&body, "pushhub_handshake_failures_total{reason=\"tls\"}"),
            Some(2.0),
            "{body}"
        );
        // The certificate's expiry, for alerts: the test certificate is valid
        // for two days.
        let in_two_days = (pushhub::time::unix_now() + 2 * 86_400) as f64;
        let expiry = sample(&body, "pushhub_tls_certificate_expiry_timestamp_seconds");
        assert!(
            expiry.is_some_and(|at| (at - in_two_days).abs() < 120.0),
            "{body}"
        );
        let at = stats["tls_certificate_expires_at"].as_f64();
        assert!(
            at.is_some_and(|at| (at - in_two_days).abs() < 120.0),
            "{stats}"
        );

        // The wss client connected all along did not notice.
        assert_eq!(backend.push("steady", "still here").await, 1);
        assert_eq!(next_text(&mut steady).await, "still here");
        close_client(&mut steady).await;
    });
}

#[test]
fn stalled_tls_handshakes_are_closed_at_the_deadline_and_free_their_place() {
    let hello = client_hello();
    let mut config = plain_config();
    config.max_connections = 2;
    config.handshake_timeout = Duration::from_millis(300);
    let hub = WssHub::start(config);
    run(async {
        let mut backend = Backend::connect(hub.text()).await;
        // One connects and sends nothing, the other half a ClientHello: together
        // they hold both places.
        let silent = TcpStream::connect(hub.ws()).unwrap();
        let mut half = TcpStream::connect(hub.ws()).unwrap();
        half.write_all(&hello[..hello.len() / 2]).unwrap();
        let connected = Instant::now();

        // While they do, a wss client is refused.
        let deadline = Deadline::new(STEP, "a third connection is refused");
        while try_wss(hub.ws(), trusting(cert()), "localhost", "/")
            .await
            .is_ok()
        {
            deadline.tick().await;
        }
        assert!(backend.stats().await["rejected"].as_u64().unwrap() >= 1);

        let (silent_closed, half_closed) =
            smol::unblock(move || (wait_closed(silent, STEP), wait_closed(half, STEP))).await;
        for (what, closed) in [("silent", silent_closed), ("half", half_closed)] {
            let after = closed - connected;
            assert!(
                after >= Duration::from_millis(250),
                "{what} closed after only {after:?}"
            );
            assert!(
                after < Duration::from_secs(2),
                "{what} closed only after {after:?}, long after the 300 ms deadline"
            );
        }
        let stats = wait_failures(&mut backend, "timeout", 2).await;
        assert_eq!(failures(&stats, "tls"), 0, "{stats}");
        assert_eq!(stats["connections"], 0, "{stats}");

        // Their places are free again.
        let mut first = wss_login(hub.ws(), cert(), "u1").await;
        let mut second = wss_login(hub.ws(), cert(), "u2").await;
        assert_eq!(backend.broadcast("in").await, 2);
        assert_eq!(next_text(&mut first).await, "in");
        assert_eq!(next_text(&mut second).await, "in");
        assert_eq!(backend.stats().await["connections"], 2);
    });
}

#[test]
fn clients_that_do_not_trust_the_certificate_fail_and_others_are_served() {
    let hub = WssHub::start(plain_config());
    let stranger = TestCert::new();
    run(async {
        let mut backend = Backend::connect(hub.text()).await;
        let mut steady = wss_login(hub.ws(), cert(), "steady").await;

        for (what, connector, name) in [
            ("the system's roots only", TlsConnector::new(), "localhost"),
            ("another certificate", trusting(&stranger), "localhost"),
            (
                "our certificate, another name",
                trusting(cert()),
                "example.com",
            ),
        ] {
            let attempt = within(STEP, what, try_wss(hub.ws(), connector, name, "/")).await;
            match attempt {
                Err(Failed::Tls(_)) => {}
                Err(other) => panic!("{what}: failed, but not in TLS: {other:?}"),
                Ok(_) => panic!("{what}: the client accepted the certificate"),
            }
        }
        // The hub saw those clients give up in their TLS handshakes.
        let stats = wait_failures(&mut backend, "tls", 3).await;
        assert_eq!(stats["handshakes"], 1, "{stats}");

        assert_eq!(backend.push("steady", "unaffected").await, 1);
        assert_eq!(next_text(&mut steady).await, "unaffected");
        let mut late = wss_login(hub.ws(), cert(), "late").await;
        assert_eq!(backend.push("late", "welcome").await, 1);
        assert_eq!(next_text(&mut late).await, "welcome");
    });
}

/// A client that stops reading while broadcasts go out is dropped with 1008; a
/// client that reads receives every message, in order; the hub serves on.
///
/// With 12 KiB messages each record holds one message, so when the slow
/// client's socket fills up, a whole message is sealed in OpenSSL and waiting:
/// the hub must finish it before its close frame.
#[test]
fn slow_wss_consumers_are_dropped_and_readers_get_everything() {
    slow_consumer_case(12 * 1024, 1);
}

/// The same with 4 KiB messages sent three at a time: the messages queued for
/// the slow client are coalesced, three to a record, so the record OpenSSL
/// holds when the socket fills up spans several messages, all of which must
/// go out before the close frame.
#[test]
fn slow_wss_consumers_with_coalesced_records() {
    slow_consumer_case(4 * 1024, 3);
}

/// Broadcasts `size`-byte messages, `burst` at a time, to a client that reads
/// and one that does not, until the second is dropped.
fn slow_consumer_case(size: usize, burst: usize) {
    let mut config = plain_config();
    config.max_queue_bytes = 256 * 1024;
    let hub = WssHub::start(config);
    run(async {
        let mut backend = Backend::connect(hub.text()).await;
        let mut slow = wss_login(hub.ws(), cert(), "slow").await;
        let mut fast = wss_login(hub.ws(), cert(), "fast").await;

        // Lock-step: each burst of broadcasts is read by the fast client
        // before the next goes out, while the slow one never reads.
        let mut sent = 0usize;
        let mut after_drop = None;
        while after_drop.is_none_or(|n| n < 20) {
            let lines: String = (sent..sent + burst)
                .map(|k| {
                    format!(
                        "{}\n",
                        json!({"cmd": "broadcast", "data": payload(k, size)})
                    )
                })
                .collect();
            backend.send(lines.as_bytes()).await;
            for k in sent..sent + burst {
                let reply: Value = serde_json::from_str(&backend.line().await).unwrap();
                match (reply["delivered"].as_u64(), after_drop) {
                    (Some(2), None) => {}
                    (Some(1), None) => after_drop = Some(0),
                    (Some(1), Some(n)) => after_drop = Some(n + 1),
                    other => panic!("broadcast #{k}: unexpected {other:?}"),
                }
            }
            for k in sent..sent + burst {
                let got = next_text(&mut fast).await;
                assert!(
                    got == payload(k, size),
                    "the reader missed, damaged or reordered message #{k}"
                );
            }
            sent += burst;
            // 24 MiB without a drop means the queue bound is not enforced.
            assert!(sent * size < 24 << 20, "the slow client was never dropped");
        }

        let stats = backend.stats().await;
        assert_eq!(stats["dropped"], 1, "{stats}");
        assert_eq!(backend.connections("slow").await, 0);
        assert_eq!(backend.connections("fast").await, 1);

        // The slow client finds the start of the stream, whole messages in
        // order, then the close frame: the record OpenSSL had sealed when the
        // socket filled up is finished first (over TLS, a write refused for
        // want of room must be retried with the same bytes).
        let mut received = 0usize;
        let ending = loop {
            match next_message(&mut slow).await {
                Some(Ok(Message::Text(text))) => {
                    assert!(text.as_str() == payload(received, size), "#{received}");
                    received += 1;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(Some(frame)))) => {
                    break (u16::from(frame.code), frame.reason.as_str().to_string());
                }
                other => panic!("after {received} messages, instead of a close frame: {other:?}"),
            }
        };
        assert!(received < sent, "the slow client got everything");
        assert_eq!(
            ending,
            (1008, "slow consumer: outbound queue full".to_string())
        );
        expect_end(&mut slow).await;

        // The hub is fine: the reader and a newcomer are served.
        assert_eq!(backend.push("fast", "last").await, 1);
        assert_eq!(next_text(&mut fast).await, "last");
        let mut fresh = wss_login(hub.ws(), cert(), "fresh").await;
        assert_eq!(backend.broadcast("after").await, 2);
        assert_eq!(next_text(&mut fresh).await, "after");
        assert_eq!(next_text(&mut fast).await, "after");
    });
}

/// A shutdown writes what was accepted for a wss client before its close
/// frame (1001), as for plain ws.
#[test]
fn shutdown_delivers_the_backlog_over_wss_then_closes_with_1001() {
    const N: usize = 100;
    const SIZE: usize = 64 * 1024;
    let mut config = plain_config();
    config.max_queue_bytes = 64 << 20;
    config.shutdown_timeout = Duration::from_secs(5);
    let mut hub = WssHub::start(config);
    run(async {
        let mut backend = Backend::connect(hub.text()).await;
        let mut client = wss_login(hub.ws(), cert(), "backlog").await;
        let mut idle = wss(hub.ws(), cert(), "/").await;
        // 6.25 MiB the client does not read yet: more than the socket buffers
        // hold, so part of it is still in the hub's queue at shutdown.
        for i in 0..N {
            assert_eq!(backend.push("backlog", &payload(i, SIZE)).await, 1);
        }
        let queued = sample(&metrics_body(hub.server.metrics), "pushhub_queued_bytes");
        assert!(queued.unwrap() > 0.0, "nothing waits: {queued:?}");
        hub.server.trigger_shutdown();
        // The client is busy for a moment before it reads on (the scenario,
        // within the hub's close grace of 2 s; not a synchronisation).
        smol::Timer::after(Duration::from_millis(300)).await;
        for i in 0..N {
            match next_message(&mut client).await {
                Some(Ok(Message::Text(text))) => {
                    assert!(text.as_str() == payload(i, SIZE), "message #{i} damaged")
                }
                other => panic!("message #{i} of {N} was lost to the shutdown: got {other:?}"),
            }
        }
        for client in [&mut client, &mut idle] {
            assert_eq!(
                expect_close(client).await,
                (1001, "server shutting down".to_string())
            );
            expect_end(client).await;
        }
    });
    hub.server.stop(Duration::from_secs(10)).unwrap();
}

// ---------------------------------------------------------------------------
// The binary.

const EPHEMERAL: [&str; 5] = [
    "--ws",
    "127.0.0.1:0",
    "--text",
    "127.0.0.1:0",
    "--allow-plain-uid",
];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    EPHEMERAL
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

/// The binary serves wss with `cert`: a client trusting it logs in, sees it,
/// and receives a push.
fn check_serves(hub: &Binary, cert: &TestCert) {
    let (ws, text) = (hub.ws, hub.text);
    run(async {
        let mut backend = Backend::connect(text).await;
        let mut client = wss_login(ws, cert, "u").await;
        assert!(peer_der(&client) == cert.der(), "another certificate");
        assert_eq!(backend.push("u", "over wss").await, 1);
        assert_eq!(next_text(&mut client).await, "over wss");
        close_client(&mut client).await;
    });
}

/// SIGHUP re-reads the certificate files: new clients get the new certificate,
/// open ones stay; bad files are refused, logged and counted, and the previous
/// certificate stays.
#[test]
fn sighup_reloads_the_certificate_for_new_connections() {
    let dir = Scratch::new("wss-sighup");
    let (a, b) = (TestCert::new(), TestCert::new());
    let (cert_path, key_path) = (dir.path("cert.pem"), dir.path("key.pem"));
    write(&cert_path, &a.cert_pem);
    write(&key_path, &a.key_pem);
    let mut hub = Binary::start(
        &args(&["--tls-cert", arg(&cert_path), "--tls-key", arg(&key_path)]),
        &[],
    );
    let line = hub.wait_for_line("WebSocket on");
    assert!(line.contains("wss://"), "{line}");
    // A certificate this close to its end is a warning in the log.
    let line = hub.wait_for_line("the wss certificate expires in");
    assert!(
        line.contains("WARN") && line.ends_with("; renew it"),
        "{line}"
    );
    let (ws, text) = (hub.ws, hub.text);

    // The handshake also shows that the hub is in its loop, SIGHUP handled.
    let (mut backend, mut first) = run(async {
        let backend = Backend::connect(text).await;
        let first = wss_login(ws, &a, "first").await;
        assert!(peer_der(&first) == a.der(), "not certificate A");
        (backend, first)
    });

    write(&cert_path, &b.cert_pem);
    write(&key_path, &b.key_pem);
    hub.signal(Signal::HUP);
    hub.wait_for_line("SIGHUP: reloaded the certificate");
    let mut second = run(async {
        // The open connection keeps its session.
        assert_eq!(backend.push("first", "after the reload").await, 1);
        assert_eq!(next_text(&mut first).await, "after the reload");
        assert!(peer_der(&first) == a.der());
        let second = wss_login(ws, &b, "second").await;
        assert!(peer_der(&second) == b.der(), "not certificate B");
        // A client that trusts only A is now shown B.
        match try_wss(ws, trusting(&a), "localhost", "/").await {
            Err(Failed::Tls(_)) => {}
            other => panic!("a client trusting only A: {other:?}"),
        }
        second
    });

    write(&key_path, b"-----BEGIN PRIVATE KEY-----\nnot a key\n");
    hub.signal(Signal::HUP);
    let line = hub.wait_for_line("still serving the previous certificate");
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(arg(&key_path)),
        "the error does not name the key: {line}"
    );
    run(async {
        let third = wss_login(ws, &b, "third").await;
        assert!(
            peer_der(&third) == b.der(),
            "not certificate B after a failed reload"
        );
        assert_eq!(backend.broadcast("still up").await, 3);
        assert_eq!(next_text(&mut first).await, "still up");
        assert_eq!(next_text(&mut second).await, "still up");
        let stats = backend.stats().await;
        assert_eq!(stats["tls_reloads"], 1, "{stats}");
        assert_eq!(stats["tls_reload_failures"], 1, "{stats}");
    });

    // Connections of both certificates are closed gracefully.
    hub.signal(Signal::TERM);
    run(async {
        for client in [&mut first, &mut second] {
            assert_eq!(expect_close(client).await.0, 1001);
            expect_end(client).await;
        }
    });
    let status = hub.wait(STEP);
    assert!(status.success(), "{status}; stderr: {:#?}", hub.stderr);
}

/// Once the hub has logged its addresses, it is up: a SIGHUP from then on (a
/// `systemctl reload` right after a start, a certbot hook) reloads, and must
/// not stop it. Under systemd, a death by SIGHUP is a clean exit, not a
/// failure: `Restart=on-failure` would leave the hub down.
///
/// A long certificate chain makes the start slow: when the handlers were
/// installed only once the hub ran, after the certificate was read a second
/// time, a SIGHUP in that window killed it every time.
#[test]
fn sighup_right_after_the_hub_is_ready_does_not_stop_it() {
    let dir = Scratch::new("wss-early-sighup");
    let intermediate = TestCert::new();
    let mut chain = cert().cert_pem.clone();
    for _ in 0..300 {
        chain.extend_from_slice(&intermediate.cert_pem);
    }
    let (cert_path, key_path) = (dir.path("chain.pem"), dir.path("key.pem"));
    write(&cert_path, &chain);
    write(&key_path, &cert().key_pem);
    let mut hub = Binary::start(
        &args(&["--tls-cert", arg(&cert_path), "--tls-key", arg(&key_path)]),
        &[],
    );
    hub.signal(Signal::HUP);
    hub.wait_for_line("SIGHUP: reloaded the certificate");
    let text = hub.text;
    run(async {
        let mut backend = Backend::connect(text).await;
        assert_eq!(backend.stats().await["tls_reloads"], 1);
    });
    assert!(
        hub.child.try_wait().unwrap().is_none(),
        "stderr: {:#?}",
        hub.stderr
    );
}

#[test]
fn sighup_without_tls_only_logs() {
    let mut hub = Binary::start(&args(&[]), &[]);
    let (ws, text) = (hub.ws, hub.text);
    let mut client = run(async {
        // Logged in: the hub is in its loop, SIGHUP handled.
        let mut client = connect(ws, "/").await;
        send_text(&mut client, "u").await;
        logged_in(&mut client).await;
        client
    });
    hub.signal(Signal::HUP);
    hub.wait_for_line("nothing to reload");
    assert!(
        hub.child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the hub; stderr: {:#?}",
        hub.stderr
    );
    run(async {
        let mut backend = Backend::connect(text).await;
        assert_eq!(backend.push("u", "still serving").await, 1);
        assert_eq!(next_text(&mut client).await, "still serving");
        let stats = backend.stats().await;
        assert_eq!(stats["tls_reloads"], 0, "{stats}");
        assert_eq!(stats["tls_reload_failures"], 0, "{stats}");
    });
}

#[test]
fn pkcs12_with_the_password_from_a_file_or_the_environment() {
    const PASSWORD: &str = "p12 pass-phrase";
    let cert = TestCert::new();
    let dir = Scratch::new("wss-p12");
    let archive = dir.path("hub.p12");
    write(&archive, &cert.pkcs12(PASSWORD));
    // As `echo` writes it: the newline is not part of the password.
    let password_file = dir.path("password");
    write(&password_file, format!("{PASSWORD}\n").as_bytes());

    let hub = Binary::start(
        &args(&[
            "--tls-pkcs12",
            arg(&archive),
            "--tls-password-file",
            arg(&password_file),
        ]),
        &[],
    );
    check_serves(&hub, &cert);
    drop(hub);

    let hub = Binary::start(
        &args(&["--tls-pkcs12", arg(&archive)]),
        &[("PUSHHUB_TLS_PASSWORD", PASSWORD)],
    );
    check_serves(&hub, &cert);
    drop(hub);

    // An encrypted PEM key takes its password the same way.
    let (cert_path, key_path) = (dir.path("cert.pem"), dir.path("key.pem"));
    write(&cert_path, &cert.cert_pem);
    write(&key_path, &cert.encrypted_key_pem(PASSWORD));
    let hub = Binary::start(
        &args(&[
            "--tls-cert",
            arg(&cert_path),
            "--tls-key",
            arg(&key_path),
            "--tls-password-file",
            arg(&password_file),
        ]),
        &[],
    );
    check_serves(&hub, &cert);
}

#[test]
fn a_wrong_pkcs12_password_is_a_configuration_error_that_does_not_show_it() {
    const PASSWORD: &str = "the-right-one";
    const WRONG: &str = "hunter2-guess";
    let cert = TestCert::new();
    let dir = Scratch::new("wss-p12-wrong");
    let archive = dir.path("hub.p12");
    write(&archive, &cert.pkcs12(PASSWORD));
    let wrong_file = dir.path("wrong-password");
    write(&wrong_file, WRONG.as_bytes());

    let from_file = args(&[
        "--tls-pkcs12",
        arg(&archive),
        "--tls-password-file",
        arg(&wrong_file),
    ]);
    let from_env = args(&["--tls-pkcs12", arg(&archive)]);
    for (argv, env) in [
        (&from_file, vec![]),
        (&from_env, vec![("PUSHHUB_TLS_PASSWORD", WRONG)]),
    ] {
        let (status, _, stderr) = run_binary(argv, &env);
        assert_eq!(
            status.code(),
            Some(2),
            "{argv:?}: {status}; stderr: {stderr}"
        );
        assert!(
            stderr.contains(arg(&archive)),
            "the file is not named: {stderr}"
        );
        assert!(stderr.contains("wrong password"), "{stderr}");
        assert!(!stderr.contains(WRONG), "the password was shown: {stderr}");
        assert!(
            !stderr.contains(PASSWORD),
            "the password was shown: {stderr}"
        );
        assert!(!stderr.contains("WebSocket on"), "it started: {stderr}");
    }
}

#[test]
fn bad_tls_flags_and_files_exit_2_with_a_clear_message() {
    let dir = Scratch::new("wss-cli");
    let cert = cert();
    let stranger = TestCert::new();
    let (cert_path, key_path) = (dir.path("cert.pem"), dir.path("key.pem"));
    write(&cert_path, &cert.cert_pem);
    write(&key_path, &cert.key_pem);
    let other_key = dir.path("other-key.pem");
    write(&other_key, &stranger.key_pem);
    let archive = dir.path("hub.p12");
    write(&archive, &cert.pkcs12("pw"));
    let password = dir.path("password");
    write(&password, b"pw\n");
    let missing = dir.path("no-such-cert.pem");
    let missing_password = dir.path("no-such-password");
    let (cert_arg, key_arg) = (arg(&cert_path), arg(&key_path));

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            args(&["--tls-key", key_arg]),
            vec!["--tls-key needs --tls-cert"],
        ),
        (
            args(&["--tls-pkcs12", arg(&archive), "--tls-cert", cert_arg]),
            vec!["--tls-pkcs12", "--tls-cert", "not both"],
        ),
        (
            args(&[
                "--tls-pkcs12",
                arg(&archive),
                "--tls-key",
                key_arg,
                "--tls-password-file",
                arg(&password),
            ]),
            vec!["not both"],
        ),
        (
            args(&["--tls-password-file", arg(&password)]),
            vec!["--tls-password-file needs --tls-cert or --tls-pkcs12"],
        ),
        (
            args(&["--tls-cert", arg(&missing), "--tls-key", key_arg]),
            vec!["no-such-cert.pem", "cannot read"],
        ),
        (
            args(&["--tls-cert", cert_arg, "--tls-key", arg(&other_key)]),
            vec!["cert.pem", "other-key.pem", "does not belong"],
        ),
        (
            // The key is in neither file.
            args(&["--tls-cert", cert_arg]),
            vec!["cert.pem", "no private key"],
        ),
        (
            args(&[
                "--tls-pkcs12",
                arg(&archive),
                "--tls-password-file",
                arg(&missing_password),
            ]),
            vec!["no-such-password"],
        ),
        (
            args(&["--tls-pkcs12", arg(&archive)]),
            vec!["hub.p12", "no password"],
        ),
    ];
    for (argv, says) in cases {
        let (status, _, stderr) = run_binary(&argv, &[]);
        assert_eq!(
            status.code(),
            Some(2),
            "{argv:?}: {status}; stderr: {stderr}"
        );
        for text in says {
            assert!(
                stderr.contains(text),
                "{argv:?}: stderr lacks {text:?}: {stderr}"
            );
        }
        assert!(
            !stderr.contains("WebSocket on"),
            "{argv:?} started: {stderr}"
        );
    }
}

/// What one churning wss client does before it goes.
#[derive(Clone, Copy)]
enum Leaving {
    /// Logs in, then sends a close frame.
    Closes,
    /// Logs in, then resets the connection.
    Resets,
    /// Sends half a ClientHello, then goes.
    MidHandshake,
    /// Completes TLS, then sends bytes that are no HTTP request.
    Garbage,
    /// Logs in, then sends the start of a frame and goes.
    MidFrame,
}

/// One blocking wss client: TLS with `tls`, then as `how` says.
fn churn_wss(ws: SocketAddr, tls: &native_tls::TlsConnector, uid: &str, how: Leaving) {
    use async_tungstenite::tungstenite;
    let tcp = TcpStream::connect(ws).unwrap();
    tcp.set_read_timeout(Some(STEP)).unwrap();
    if let Leaving::MidHandshake = how {
        let hello = client_hello();
        let _ = (&tcp).write_all(&hello[..hello.len() / 2]);
        return;
    }
    let raw = tcp.try_clone().unwrap();
    let mut stream = tls.connect("localhost", tcp).expect("TLS handshake");
    if let Leaving::Garbage = how {
        let _ = stream.write_all(b"\x00\x01 not a request\r\n\r\n");
        let _ = stream.read(&mut [0u8; 256]);
        return;
    }
    let url = format!("wss://localhost:{}/", ws.port());
    let (mut client, _) = tungstenite::client(url, stream).expect("WebSocket handshake");
    client.send(Message::text(uid)).unwrap();
    // The pong proves the login was handled (the hub answers it with nothing).
    client.send(Message::Ping("in?".into())).unwrap();
    assert!(matches!(client.read().unwrap(), Message::Pong(_)));
    match how {
        Leaving::Closes => {
            client.close(None).unwrap();
            while client.read().is_ok() {}
        }
        Leaving::Resets => {
            rustix::net::sockopt::set_socket_linger(&raw, Some(Duration::ZERO)).unwrap();
        }
        Leaving::MidFrame => {
            let _ = client.get_mut().write_all(&[0x81, 0xFE, 0x10]);
        }
        Leaving::MidHandshake | Leaving::Garbage => unreachable!(),
    }
}

/// Clients that come over wss and leave every way (close, reset, mid-TLS
/// handshake, garbage, mid-frame) leave nothing behind: the hub's descriptors
/// are back where they were, its RSS within a margin, and it still serves.
#[test]
fn wss_churn_leaves_nothing_behind() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 100;
    const WAYS: [Leaving; 5] = [
        Leaving::Closes,
        Leaving::Resets,
        Leaving::MidHandshake,
        Leaving::Garbage,
        Leaving::MidFrame,
    ];
    let dir = Scratch::new("wss-churn");
    let (cert_path, key_path) = (dir.path("cert.pem"), dir.path("key.pem"));
    write(&cert_path, &cert().cert_pem);
    write(&key_path, &cert().key_pem);
    let hub = Binary::start(
        &args(&[
            "--tls-cert",
            arg(&cert_path),
            "--tls-key",
            arg(&key_path),
            "--handshake-timeout",
            "500ms",
        ]),
        &[],
    );
    let pid = hub.child.id();
    let tls = native_tls::TlsConnector::builder()
        .add_root_certificate(cert().certificate())
        .build()
        .unwrap();
    let churn = |rounds: usize| {
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let tls = &tls;
                scope.spawn(move || {
                    for round in 0..rounds {
                        let how = WAYS[(t + round) % WAYS.len()];
                        churn_wss(hub.ws, tls, &format!("c{t}-{round}"), how);
                    }
                });
            }
        });
    };
    let settle = |fds: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while open_fds(pid) > fds {
            assert!(Instant::now() < deadline, "descriptors still above {fds}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let fds_before = open_fds(pid);
    // One round to warm up the allocator before the baseline.
    churn(WAYS.len());
    settle(fds_before);
    let rss_before = proc_status(pid, "VmRSS:") * 1024;
    churn(ROUNDS);
    settle(fds_before);
    let rss_after = proc_status(pid, "VmRSS:") * 1024;
    eprintln!(
        "wss churn: {} clients; RSS {rss_before} -> {rss_after} bytes",
        THREADS * ROUNDS
    );
    assert!(
        rss_after <= rss_before + (4 << 20),
        "RSS grew from {rss_before} to {rss_after} bytes"
    );
    check_serves(&hub, cert());
    run(async {
        let mut backend = Backend::connect(hub.text).await;
        let stats = backend.stats().await;
        assert_eq!(stats["connections"], 0, "{stats}");
        // Each way of leaving after the handshake is counted as what it was.
        let each = (THREADS * ROUNDS / WAYS.len()) as u64;
        assert!(failures(&stats, "tls") >= each, "{stats}");
        assert!(failures(&stats, "malformed") >= each, "{stats}");
    });
}
