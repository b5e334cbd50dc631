//! `sink`: a local stand-in for the push services, for benchmarks only. One
//! TLS listener in 127.0.0.0/8 (a throwaway self-signed certificate for
//! `localhost` made at start, written with its key to `--cert-out` so that
//! the hub can trust it as `--apns-ca-file`, `--fcm-ca-file`,
//! `--webpush-ca-file`), ALPN `h2`, the `h2` crate's server on this thread's
//! smol executor. It answers, without checking anything:
//!
//! - `POST /3/device/*` (APNs): 200 with an `apns-id`;
//! - `POST /token` (the OAuth token endpoint of FCM's service account): 200
//!   `{"access_token":"sink","expires_in":3600,"token_type":"Bearer"}`;
//! - `POST /v1/projects/*/messages:send` (FCM): 200
//!   `{"name":"projects/p/messages/1"}`;
//! - `POST /push/*` (Web Push): 201;
//! - anything else: 404.
//!
//! With `--hold`, the push services' requests are read and left unanswered
//! (their streams open until the connection ends), so that what a hub queues
//! can be measured. The token endpoint still answers: without an access
//! token an FCM hub sends nothing, and its messages would wait for the
//! token instead of for the service.
//!
//! It counts requests by kind, rewrites `--stats-file` with the counts (JSON)
//! every 100 ms while they change, and prints them on exit: after
//! `--seconds`, or on SIGTERM or SIGINT. `--write-service-account` writes a
//! service-account key file (an RSA 2048 key made at start, `token_uri` this
//! sink's `/token`, project id `bench`) for the hub's
//! `--fcm-credentials-file`.
//!
//! Bounded: at most `--max-connections` connections, 100 streams each, for
//! at most an hour.

use std::cell::{Cell, RefCell};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{SocketAddrV4, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use async_signal::{Signal, Signals};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509NameBuilder};
use serde_json::json;
use smol::stream::StreamExt;
use smol::{Async, LocalExecutor, Timer};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::args::SinkArgs;
use crate::net;

/// Longest run allowed.
const MAX_SECONDS: u64 = 3600;

/// Streams a connection may have open at once (the hub uses 16).
const MAX_STREAMS: u32 = 100;

/// How often `--stats-file` is rewritten while the counts change.
const STATS_EVERY: Duration = Duration::from_millis(100);

/// The project id of the service account written.
const PROJECT_ID: &str = "bench";

const TOKEN_BODY: &str = r#"{"access_token":"sink","expires_in":3600,"token_type":"Bearer"}"#;
const FCM_BODY: &str = r#"{"name":"projects/p/messages/1"}"#;

/// What a request is, by its method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Apns,
    Token,
    Fcm,
    WebPush,
    Other,
}

fn kind(method: &Method, path: &str) -> Kind {
    if method != Method::POST {
        return Kind::Other;
    }
    if path.starts_with("/3/device/") {
        Kind::Apns
    } else if path == "/token" {
        Kind::Token
    } else if path.starts_with("/v1/projects/") && path.ends_with("/messages:send") {
        Kind::Fcm
    } else if path.starts_with("/push/") {
        Kind::WebPush
    } else {
        Kind::Other
    }
}

/// The counts, printed at the end and written to `--stats-file`.
#[derive(Default)]
struct Counts {
    connections: Cell<u64>,
    refused_connections: Cell<u64>,
    open: Cell<u64>,
    requests: Cell<u64>,
    apns: Cell<u64>,
    token: Cell<u64>,
    fcm: Cell<u64>,
    webpush: Cell<u64>,
    other: Cell<u64>,
    /// Requests left unanswered (`--hold`).
    held: Cell<u64>,
    /// Bumped by every change, to know when to rewrite the file.
    version: Cell<u64>,
}

fn bump(cell: &Cell<u64>) {
    cell.set(cell.get() + 1);
}

impl Counts {
    fn count(&self, kind: Kind) {
        bump(&self.requests);
        bump(match kind {
            Kind::Apns => &self.apns,
            Kind::Token => &self.token,
            Kind::Fcm => &self.fcm,
            Kind::WebPush => &self.webpush,
            Kind::Other => &self.other,
        });
        bump(&self.version);
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "bench": "sink",
            "connections": self.connections.get(),
            "refused_connections": self.refused_connections.get(),
            "requests": self.requests.get(),
            "apns": self.apns.get(),
            "token": self.token.get(),
            "fcm": self.fcm.get(),
            "webpush": self.webpush.get(),
            "other": self.other.get(),
            "held": self.held.get(),
        })
    }
}

pub fn main(a: &SinkArgs) -> ExitCode {
    let addr = match check(a) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("pushhub-bench sink: {e}");
            return ExitCode::from(2);
        }
    };
    match run(a, addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushhub-bench sink: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(a: &SinkArgs) -> Result<SocketAddrV4, String> {
    let addr = net::loopback_v4(a.listen)?;
    if a.seconds == 0 || a.seconds > MAX_SECONDS {
        return Err(format!("--seconds must be 1 to {MAX_SECONDS}"));
    }
    if a.max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    Ok(addr)
}

fn run(a: &SinkArgs, addr: SocketAddrV4) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("the listener's address: {e}"))?
        .port();
    let (cert_pem, key_pem) = certificate().map_err(|e| format!("the certificate: {e}"))?;
    write_private(&a.cert_out, &[cert_pem.as_slice(), &key_pem].concat())?;
    if let Some(path) = &a.write_service_account {
        let account =
            service_account(port).map_err(|e| format!("the service account's key: {e}"))?;
        write_private(path, account.as_bytes())?;
    }
    let identity = native_tls::Identity::from_pkcs8(&cert_pem, &key_pem)
        .map_err(|e| format!("the TLS identity: {e}"))?;
    let acceptor = native_tls::TlsAcceptor::builder(identity)
        .accept_alpn(&["h2"])
        .build()
        .map_err(|e| format!("the TLS acceptor: {e}"))?;
    let acceptor = async_native_tls::TlsAcceptor::from(acceptor);
    let listener = Async::new(listener).map_err(|e| format!("the listener: {e}"))?;
    let mut signals = Signals::new([Signal::Term, Signal::Int])
        .map_err(|e| format!("cannot catch SIGTERM: {e}"))?;
    eprintln!(
        "pushhub-bench sink: https://localhost:{port} ({}), for {} s; certificate in {}",
        if a.hold {
            "holding the push services' requests"
        } else {
            "answering"
        },
        a.seconds,
        a.cert_out.display()
    );

    let ex = Rc::new(LocalExecutor::new());
    let counts = Rc::new(Counts::default());
    let stats_task = a
        .stats_file
        .clone()
        .map(|path| ex.spawn(write_stats(path, Rc::clone(&counts))));
    let serve = accept_loop(
        Rc::clone(&ex),
        listener,
        acceptor,
        Rc::clone(&counts),
        a.hold,
        a.max_connections,
    );
    let seconds = a.seconds;
    let why = smol::block_on(ex.run(smol::future::or(
        serve,
        smol::future::or(
            async move {
                Timer::after(Duration::from_secs(seconds)).await;
                format!("{seconds} s passed")
            },
            async move {
                match signals.next().await {
                    Some(Ok(signal)) => format!("{signal:?}"),
                    _ => "a signal".into(),
                }
            },
        ),
    )));
    drop(stats_task);
    if let Some(path) = &a.stats_file {
        write_stats_once(path, &counts)?;
    }
    let line = counts.json();
    eprintln!(
        "pushhub-bench sink: stopped ({why}): {} connections, {} requests (APNs {}, token {}, \
         FCM {}, Web Push {}, other {}), {} held",
        counts.connections.get(),
        counts.requests.get(),
        counts.apns.get(),
        counts.token.get(),
        counts.fcm.get(),
        counts.webpush.get(),
        counts.other.get(),
        counts.held.get()
    );
    println!("{line}");
    Ok(())
}

/// Accepts connections until the process stops; returns only on a listener
/// error.
async fn accept_loop(
    ex: Rc<LocalExecutor<'static>>,
    listener: Async<TcpListener>,
    acceptor: async_native_tls::TlsAcceptor,
    counts: Rc<Counts>,
    hold: bool,
    max_connections: usize,
) -> String {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => return format!("accept failed: {e}"),
        };
        if counts.open.get() >= max_connections as u64 {
            bump(&counts.refused_connections);
            continue;
        }
        let (acceptor, counts, inner) = (acceptor.clone(), Rc::clone(&counts), Rc::clone(&ex));
        ex.spawn(async move {
            bump(&counts.open);
            if let Err(e) = connection(&inner, tcp, &acceptor, &counts, hold).await {
                eprintln!("pushhub-bench sink: a connection ended: {e}");
            }
            counts.open.set(counts.open.get() - 1);
        })
        .detach();
    }
}

/// Serves one connection: each request a task of its own, the held ones'
/// answers kept until the connection ends.
async fn connection(
    ex: &Rc<LocalExecutor<'static>>,
    tcp: Async<std::net::TcpStream>,
    acceptor: &async_native_tls::TlsAcceptor,
    counts: &Rc<Counts>,
    hold: bool,
) -> Result<(), String> {
    let _ = tcp.get_ref().set_nodelay(true);
    let tls = acceptor
        .accept(tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut h2 = h2::server::Builder::new()
        .max_concurrent_streams(MAX_STREAMS)
        .handshake::<_, Bytes>(tls.compat())
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    bump(&counts.connections);
    bump(&counts.version);
    let held = Rc::new(RefCell::new(Vec::new()));
    // The tasks of this connection's requests, dropped (cancelled) with it.
    let mut tasks = Vec::new();
    while let Some(accepted) = h2.accept().await {
        let (request, respond) = accepted.map_err(|e| format!("HTTP/2: {e}"))?;
        let kind = kind(request.method(), request.uri().path());
        counts.count(kind);
        let (held, counts) = (Rc::clone(&held), Rc::clone(counts));
        tasks.retain(|t: &smol::Task<()>| !t.is_finished());
        tasks.push(ex.spawn(async move {
            let mut body = request.into_body();
            // Read (and let the peer send more) to the end of the body.
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            let held_kind = hold && kind != Kind::Token && kind != Kind::Other;
            if held_kind {
                bump(&counts.held);
                bump(&counts.version);
                held.borrow_mut().push(respond);
            } else {
                answer(respond, kind, counts.requests.get());
            }
        }));
    }
    Ok(())
}

fn answer(mut respond: h2::server::SendResponse<Bytes>, kind: Kind, n: u64) {
    let (status, body) = match kind {
        Kind::Apns => (StatusCode::OK, None),
        Kind::Token => (StatusCode::OK, Some(TOKEN_BODY)),
        Kind::Fcm => (StatusCode::OK, Some(FCM_BODY)),
        Kind::WebPush => (StatusCode::CREATED, None),
        Kind::Other => (StatusCode::NOT_FOUND, None),
    };
    let mut response = Response::builder().status(status);
    if kind == Kind::Apns {
        response = response.header("apns-id", format!("00000000-0000-0000-0000-{n:012x}"));
    }
    if body.is_some() {
        response = response.header("content-type", "application/json; charset=UTF-8");
    }
    let Ok(response) = response.body(()) else {
        return;
    };
    let Ok(mut stream) = respond.send_response(response, body.is_none()) else {
        return;
    };
    if let Some(body) = body {
        let _ = stream.send_data(Bytes::from_static(body.as_bytes()), true);
    }
}

/// Rewrites `path` with the counts whenever they changed, every
/// [`STATS_EVERY`].
async fn write_stats(path: std::path::PathBuf, counts: Rc<Counts>) {
    let mut written = None;
    loop {
        let version = counts.version.get();
        if written != Some(version) {
            if let Err(e) = write_stats_once(&path, &counts) {
                eprintln!("pushhub-bench sink: {e}");
            }
            written = Some(version);
        }
        Timer::after(STATS_EVERY).await;
    }
}

/// Writes the counts to a file beside `path` and renames it over `path`, so
/// that a reader never sees half of it.
fn write_stats_once(path: &Path, counts: &Counts) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    fs::write(&tmp, format!("{}\n", counts.json()))
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes a file readable by its owner only (a private key is in it).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A self-signed certificate for `localhost` and 127.0.0.1 (EC P-256, valid
/// for two days), and its key as PKCS#8, both PEM.
fn certificate() -> Result<(Vec<u8>, Vec<u8>), openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "localhost")?;
    let name = name.build();
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(&key)?;
    let (from, until) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(2)?);
    builder.set_not_before(&from)?;
    builder.set_not_after(&until)?;
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&builder.x509v3_context(None, None))?;
    builder.append_extension(san)?;
    builder.sign(&key, MessageDigest::sha256())?;
    Ok((builder.build().to_pem()?, key.private_key_to_pem_pkcs8()?))
}

/// A service-account key file as Firebase console writes one, with a new
/// RSA 2048 key, its `token_uri` this sink's token endpoint.
fn service_account(port: u16) -> Result<String, openssl::error::ErrorStack> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let pem = String::from_utf8_lossy(&key.private_key_to_pem_pkcs8()?).into_owned();
    let mut id = [0u8; 20];
    openssl::rand::rand_bytes(&mut id)?;
    let key_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Ok(json!({
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": format!("pushhub-bench@{PROJECT_ID}.iam.gserviceaccount.com"),
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": format!("https://localhost:{port}/token"),
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path() {
        let post = Method::POST;
        assert_eq!(kind(&post, "/3/device/00ff"), Kind::Apns);
        assert_eq!(kind(&post, "/token"), Kind::Token);
        assert_eq!(kind(&post, "/v1/projects/bench/messages:send"), Kind::Fcm);
        assert_eq!(kind(&post, "/push/abc"), Kind::WebPush);
        assert_eq!(kind(&post, "/v1/projects/bench/other"), Kind::Other);
        assert_eq!(kind(&Method::GET, "/push/abc"), Kind::Other);
    }

    #[test]
    fn writes_a_service_account_the_hub_reads() {
        let dir = std::env::temp_dir().join(format!("pushhub-sink-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sa.json");
        write_private(&path, service_account(21443).unwrap().as_bytes()).unwrap();
        let account = pushhub::push::fcm::credentials::ServiceAccount::load(&path).unwrap();
        assert_eq!(account.project_id, PROJECT_ID);
        assert_eq!(account.token_uri, "https://localhost:21443/token");
        fs::remove_dir_all(&dir).unwrap();
    }
}
