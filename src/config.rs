//! Command-line flags and the validated [`Config`] they become.
//!
//! Flags are parsed once by argh into [`Flags`], then checked and turned into a
//! [`Config`] that the rest of the crate trusts. Secrets are read here, from a
//! file or the environment, never from a flag value (flags are visible in `ps`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argh::FromArgs;

use crate::auth::{AuthConfig, Secret};
use crate::channel::Pattern;
use crate::cluster::settings::ClusterFlags;
use crate::cluster::{self, ClusterConfig};
use crate::push::apns::settings::{self, ApnsFlags, ApnsSettings};
use crate::push::fcm::settings::{FcmFlags, FcmSettings};
use crate::push::webpush::settings::VapidSettings;
use crate::ws::tls::{TlsFiles, TlsSettings};

/// Environment variable that may hold the token secret instead of `--secret-file`.
pub const SECRET_ENV: &str = "PUSHHUB_SECRET";

/// Environment variable that may hold the APNs certificate's password.
pub const APNS_CERT_PASSWORD_ENV: &str = "PUSHHUB_APNS_CERT_PASSWORD";

/// Environment variable that may hold the wss certificate's password.
pub const TLS_PASSWORD_ENV: &str = "PUSHHUB_TLS_PASSWORD";

/// The environment variable that may hold the Redis password.
pub const REDIS_PASSWORD_ENV: &str = "PUSHHUB_REDIS_PASSWORD";

/// The largest size any size flag takes. A message is held whole in memory, so
/// more would be a mistake on any server this runs on; it also keeps every
/// frame's length within a `u32`.
pub const MAX_SIZE: usize = 1 << 30;

/// Sockets kept back from the open-files limit for listeners, backends, logs and stdio
/// when `--max-connections` is not given.
pub const RESERVED_FDS: u64 = 64;

/// pushhub: a single-threaded WebSocket push hub. Browsers and apps connect to the
/// WebSocket port and authenticate as a uid; backends push JSON lines to the text port.
#[derive(FromArgs, Debug)]
pub struct Flags {
    /// the WebSocket listen address [default: 0.0.0.0:1234]
    #[argh(option, default = "default_ws()")]
    pub ws: SocketAddr,

    /// text-port (backend) listen address; keep it private [default: 127.0.0.1:5678]
    #[argh(option, default = "default_text()")]
    pub text: SocketAddr,

    /// address of /metrics (Prometheus) and /healthz; keep it private, or
    /// "off" [default: 127.0.0.1:5679]
    #[argh(option, default = "default_metrics()", from_str_fn(parse_metrics))]
    pub metrics: Option<SocketAddr>,

    /// serve wss: the certificate chain (PEM), leaf first; the key may be in
    /// the same file; SIGHUP reloads it [default: none, plain ws]
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,

    /// the private key (PEM) of --tls-cert [default: in the --tls-cert file]
    #[argh(option)]
    pub tls_key: Option<PathBuf>,

    /// serve wss with a PKCS#12 archive (certificate, chain and key) instead
    /// of --tls-cert [default: none]
    #[argh(option)]
    pub tls_pkcs12: Option<PathBuf>,

    /// file holding the password of --tls-pkcs12 or of an encrypted --tls-key
    /// (PUSHHUB_TLS_PASSWORD works too) [default: none]
    #[argh(option)]
    pub tls_password_file: Option<PathBuf>,

    /// accept a bare uid as the first message (the Workerman original's protocol):
    /// any client can then claim any uid [default: off]
    #[argh(switch)]
    pub allow_plain_uid: bool,

    /// answer a plain-uid login with "login success, your uid is UID" (the
    /// Workerman manual's variant; the original push.php sends nothing)
    /// [default: off]
    #[argh(switch)]
    pub login_reply: bool,

    /// file holding the HS256 token secret (PUSHHUB_SECRET works too) [default: none]
    #[argh(option)]
    pub secret_file: Option<PathBuf>,

    /// let clients connect without credentials: live at once, with a
    /// connection id and no uid; they get broadcasts and public channels and
    /// may send up. Alone, no message is ever taken as a credential [default: off]
    #[argh(switch)]
    pub allow_anonymous: bool,

    /// send a raw client's messages after it authenticated (text and binary)
    /// up to the listening backends ({"cmd":"listen"}) [default: off]
    #[argh(switch)]
    pub upstream: bool,

    /// bytes of events held for one listening backend that does not read;
    /// events past it are dropped and counted [default: 4MiB]
    #[argh(option, default = "4 << 20", from_str_fn(parse_size))]
    pub max_listener_buffer: usize,

    /// messages kept per stream (a uid's, a channel's, the broadcasts) for
    /// v1 clients to recover after a reconnect; 0 turns history off [default: 100]
    #[argh(option, default = "100")]
    pub history_size: usize,

    /// the same for uid streams only, overriding --history-size [default: --history-size]
    #[argh(option)]
    pub history_size_uid: Option<usize>,

    /// the same for channel streams only [default: --history-size]
    #[argh(option)]
    pub history_size_channel: Option<usize>,

    /// the same for the broadcast stream [default: --history-size]
    #[argh(option)]
    pub history_size_broadcast: Option<usize>,

    /// how long a kept message stays recoverable [default: 10m]
    #[argh(
        option,
        default = "Duration::from_secs(600)",
        from_str_fn(parse_duration)
    )]
    pub history_ttl: Duration,

    /// bytes the whole history may hold, hub-wide; the oldest messages are
    /// evicted past it (a cluster keeps its history in Redis, bounded by
    /// Redis's maxmemory instead) [default: 16MiB]
    #[argh(option, default = "16 << 20", from_str_fn(parse_size))]
    pub history_memory: usize,

    /// most messages one recovery replays; a client further behind is told
    /// it was not recovered [default: 500]
    #[argh(option, default = "500")]
    pub replay_max_messages: usize,

    /// most bytes one recovery replays [default: 128KiB]
    #[argh(option, default = "128 * 1024", from_str_fn(parse_size))]
    pub replay_max_bytes: usize,

    /// a channel pattern every authenticated client may subscribe to, plain-uid
    /// ones included: a name, or a prefix ending in * (repeatable) [default: none]
    #[argh(option)]
    pub public_channel: Vec<String>,

    /// most channels one connection may be subscribed to [default: 128]
    #[argh(option, default = "128")]
    pub max_subscriptions_per_connection: usize,

    /// most channels with subscribers at once, hub-wide [default: 100000]
    #[argh(option, default = "100_000")]
    pub max_channels: usize,

    /// most WebSocket connections held at once [default: open-files limit - 64]
    #[argh(option)]
    pub max_connections: Option<u64>,

    /// most WebSocket connections from one client address [default: no limit]
    #[argh(option)]
    pub max_connections_per_ip: Option<usize>,

    /// a browser Origin allowed to connect, e.g. https://app.example.com
    /// (repeatable); without any, every origin is [default: all]
    #[argh(option)]
    pub allow_origin: Vec<String>,

    /// time a client has to complete the WebSocket handshake (and the TLS one,
    /// with wss) [default: 5s]
    #[argh(
        option,
        default = "Duration::from_secs(5)",
        from_str_fn(parse_duration)
    )]
    pub handshake_timeout: Duration,

    /// time a client has to authenticate after the handshake [default: 10s]
    #[argh(
        option,
        default = "Duration::from_secs(10)",
        from_str_fn(parse_duration)
    )]
    pub auth_timeout: Duration,

    /// ping a connection that has sent nothing for this long [default: 25s]
    #[argh(
        option,
        default = "Duration::from_secs(25)",
        from_str_fn(parse_duration)
    )]
    pub ping_interval: Duration,

    /// close a connection that has sent nothing (not even a pong) for this long [default: 60s]
    #[argh(
        option,
        default = "Duration::from_secs(60)",
        from_str_fn(parse_duration)
    )]
    pub idle_timeout: Duration,

    /// largest message a client may send, e.g. 4KiB [default: 64KiB]
    #[argh(option, default = "64 * 1024", from_str_fn(parse_size))]
    pub max_message_size: usize,

    /// messages queued for one client before it is dropped as a slow consumer [default: 1024]
    #[argh(option, default = "1024")]
    pub max_queue_messages: usize,

    /// bytes (frames) queued for one client before it is dropped as a slow consumer [default: 256KiB]
    #[argh(option, default = "256 * 1024", from_str_fn(parse_size))]
    pub max_queue_bytes: usize,

    /// longest text-port line; a longer one is refused and its connection closed [default: 1MiB]
    #[argh(option, default = "1024 * 1024", from_str_fn(parse_size))]
    pub max_line_length: usize,

    /// on SIGINT/SIGTERM, time allowed to close every connection before exiting [default: 5s]
    #[argh(
        option,
        default = "Duration::from_secs(5)",
        from_str_fn(parse_duration)
    )]
    pub shutdown_timeout: Duration,

    /// SQLite file of the device registry (created if missing); without
    /// it, register/unregister/devices are refused. In a cluster (--redis)
    /// the registry is in Redis instead [default: none]
    #[argh(option)]
    pub devices_db: Option<PathBuf>,

    /// the former name of --devices-db, still taken [default: none]
    #[argh(option)]
    pub apns_db: Option<PathBuf>,

    /// APNs token auth: the .p8 auth key file [default: none]
    #[argh(option)]
    pub apns_key_file: Option<PathBuf>,

    /// APNs token auth: the key's 10-character id [default: none]
    #[argh(option)]
    pub apns_key_id: Option<String>,

    /// APNs token auth: your 10-character Apple team id [default: none]
    #[argh(option)]
    pub apns_team_id: Option<String>,

    /// the app's bundle id, sent to APNs as apns-topic (with Apple's suffix for
    /// the push type, e.g. .voip) [default: none]
    #[argh(option)]
    pub apns_topic: Option<String>,

    /// APNs certificate auth: PKCS#12 or PEM certificate with its key, such as
    /// the original's ck.pem [default: none]
    #[argh(option)]
    pub apns_cert_file: Option<PathBuf>,

    /// file holding the certificate's password (PUSHHUB_APNS_CERT_PASSWORD works
    /// too) [default: none]
    #[argh(option)]
    pub apns_cert_password_file: Option<PathBuf>,

    /// use Apple's development (sandbox) APNs endpoint [default: production]
    #[argh(switch)]
    pub apns_sandbox: bool,

    /// an APNs endpoint instead of Apple's, https://HOST[:PORT] (tests,
    /// proxies) [default: Apple's]
    #[argh(option)]
    pub apns_endpoint: Option<String>,

    /// a CA certificate (PEM) to trust for --apns-endpoint [default: the
    /// system's]
    #[argh(option)]
    pub apns_ca_file: Option<PathBuf>,

    /// send one test notification to this APNs device token (hex), print
    /// Apple's answer and exit, instead of running the hub [default: none]
    #[argh(option)]
    pub apns_test: Option<String>,

    /// web push: the VAPID private key (PEM P-256, as pushhub vapid-keygen
    /// or openssl ecparam -genkey -name prime256v1 write it); its public
    /// key is what pages subscribe with [default: none]
    #[argh(option)]
    pub vapid_key_file: Option<PathBuf>,

    /// web push: the contact push services may write to about this
    /// server's messages, mailto:ADDRESS or an https: URL; needed with
    /// --vapid-key-file [default: none]
    #[argh(option)]
    pub vapid_subject: Option<String>,

    /// a CA certificate (PEM) to trust for Web Push endpoints (tests,
    /// proxies) [default: the system's]
    #[argh(option)]
    pub webpush_ca_file: Option<PathBuf>,

    /// send one test Web Push message to the subscription in this JSON file
    /// (as PushSubscription.toJSON() gives it), print the push service's
    /// answer and exit, instead of running the hub [default: none]
    #[argh(option)]
    pub webpush_test: Option<PathBuf>,

    /// android: the Firebase service account's JSON key file (Firebase
    /// console, Project settings, Service accounts); the project id is read
    /// from it [default: none]
    #[argh(option)]
    pub fcm_credentials_file: Option<PathBuf>,

    /// an FCM endpoint instead of Google's, https://HOST[:PORT] (tests,
    /// proxies) [default: https://fcm.googleapis.com]
    #[argh(option)]
    pub fcm_endpoint: Option<String>,

    /// the OAuth token endpoint's URL for FCM's access tokens (tests,
    /// proxies) [default: the key file's token_uri]
    #[argh(option)]
    pub fcm_token_endpoint: Option<String>,

    /// a CA certificate (PEM) to trust for --fcm-endpoint and
    /// --fcm-token-endpoint [default: the system's]
    #[argh(option)]
    pub fcm_ca_file: Option<PathBuf>,

    /// send one test message to this FCM registration token, print FCM's
    /// answer and exit, instead of running the hub [default: none]
    #[argh(option)]
    pub fcm_test: Option<String>,

    /// cluster mode: the Redis (or Valkey) that several hubs share, as
    /// redis://HOST[:PORT][/DB], redis://USER@HOST:PORT or unix:///PATH;
    /// the password from --redis-password-file or PUSHHUB_REDIS_PASSWORD
    /// [default: none, one hub alone]
    #[argh(option)]
    pub redis: Option<String>,

    /// file holding the Redis password (PUSHHUB_REDIS_PASSWORD works too)
    /// [default: none]
    #[argh(option)]
    pub redis_password_file: Option<PathBuf>,

    /// this hub's name in the cluster: letters, digits, '.', '_' or '-', up
    /// to 64 [default: random at each start]
    #[argh(option)]
    pub node_id: Option<String>,

    /// what the cluster's Redis channel names begin with: hubs with another
    /// prefix on the same Redis are another cluster [default: pushhub]
    #[argh(option, default = "String::from(\"pushhub\")")]
    pub redis_prefix: String,

    /// share the WebSocket and text ports with the other hubs of this box
    /// (SO_REUSEPORT; the kernel spreads connections over them): one hub
    /// per core. Needs --redis [default: off]
    #[argh(switch)]
    pub reuse_port: bool,

    /// how long a hub waits for the others to confirm a request before its
    /// answer says unconfirmed [default: 1s]
    #[argh(
        option,
        default = "Duration::from_secs(1)",
        from_str_fn(parse_duration)
    )]
    pub cluster_timeout: Duration,

    /// log level: error, warn, info, debug or trace [default: info]
    #[argh(option, default = "log::LevelFilter::Info", from_str_fn(parse_level))]
    pub log_level: log::LevelFilter,
}

fn default_ws() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 1234))
}

fn default_text() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5678))
}

fn default_metrics() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 5679)))
}

fn parse_metrics(s: &str) -> Result<Option<SocketAddr>, String> {
    if s == "off" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("`{s}` is not an address like 127.0.0.1:5679, or off"))
}

/// The bounds of the history kept for recovery (`--history-*`, `--replay-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per stream of each kind; 0: none, and no positions.
    pub size_uid: usize,
    pub size_channel: usize,
    pub size_broadcast: usize,
    pub ttl: Duration,
    /// Bytes of the whole history, hub-wide.
    pub memory: usize,
    /// Most messages and bytes one recovery may replay.
    pub replay_messages: usize,
    pub replay_bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            size_uid: 100,
            size_channel: 100,
            size_broadcast: 100,
            ttl: Duration::from_secs(600),
            memory: 16 << 20,
            replay_messages: 500,
            replay_bytes: 128 * 1024,
        }
    }
}

/// Everything the hub needs to run, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub auth: AuthConfig,
    /// `--login-reply`: greet a plain-uid login.
    pub login_reply: bool,
    /// `--public-channel`: channels any authenticated client may subscribe to.
    pub public_channels: Vec<Pattern>,
    /// `--allow-anonymous`: connections are live without credentials.
    pub allow_anonymous: bool,
    /// `--upstream`: raw clients' messages go to the listeners.
    pub upstream: bool,
    pub max_listener_buffer: usize,
    pub history: HistoryLimits,
    pub max_subscriptions_per_connection: usize,
    pub max_channels: usize,
    pub max_connections: usize,
    /// Most connections from one client address; `None`: no limit.
    pub max_connections_per_ip: Option<usize>,
    /// Browser origins allowed to connect; empty: every origin.
    pub allow_origins: Vec<String>,
    pub handshake_timeout: Duration,
    pub auth_timeout: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub max_message_size: usize,
    pub max_queue_messages: usize,
    pub max_queue_bytes: usize,
    pub max_line_length: usize,
    pub shutdown_timeout: Duration,
    /// wss: the WebSocket port's certificate; `None`: plain ws.
    pub tls: Option<TlsSettings>,
    /// The APNs device registry's database file.
    pub apns_db: Option<PathBuf>,
    /// Where and how to send to APNs, if at all.
    pub apns: Option<ApnsSettings>,
    /// `--apns-test`, `--fcm-test`, `--webpush-test`: one test message to
    /// send instead of running the hub.
    pub push_test: Option<PushTest>,
    /// Web Push's VAPID key and subject, if given.
    pub vapid: Option<VapidSettings>,
    /// Where and how to send to FCM, if at all.
    pub fcm: Option<FcmSettings>,
    /// `--redis`: cluster mode.
    pub cluster: Option<ClusterConfig>,
    /// `--reuse-port`: the ports are shared with this box's other hubs.
    pub reuse_port: bool,
}

impl Default for Config {
    /// The flag defaults, with no way to authenticate and room for 1,000 connections.
    fn default() -> Self {
        Config {
            auth: AuthConfig::default(),
            login_reply: false,
            public_channels: Vec::new(),
            allow_anonymous: false,
            upstream: false,
            max_listener_buffer: 4 << 20,
            history: HistoryLimits::default(),
            max_subscriptions_per_connection: 128,
            max_channels: 100_000,
            max_connections: 1000,
            max_connections_per_ip: None,
            allow_origins: Vec::new(),
            handshake_timeout: Duration::from_secs(5),
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            max_message_size: 64 * 1024,
            max_queue_messages: 1024,
            max_queue_bytes: 256 * 1024,
            max_line_length: 1024 * 1024,
            shutdown_timeout: Duration::from_secs(5),
            tls: None,
            apns_db: None,
            apns: None,
            push_test: None,
            vapid: None,
            fcm: None,
            cluster: None,
            reuse_port: false,
        }
    }
}

/// Why the flags (or the secret they point at) cannot make a [`Config`].
#[derive(Debug)]
pub enum ConfigError {
    /// Neither plain uids nor a token secret: no client could ever authenticate.
    NoAuth,
    SecretFile(PathBuf, std::io::Error),
    EmptySecret(String),
    Invalid(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::NoAuth => write!(
                f,
                "no way for clients to authenticate: give --secret-file PATH (or set \
                 {SECRET_ENV}) to verify signed tokens, --allow-plain-uid to accept \
                 bare uids as the Workerman original did, or --allow-anonymous to \
                 let clients in without credentials"
            ),
            ConfigError::SecretFile(path, e) => {
                write!(f, "cannot read the secret file {}: {e}", path.display())
            }
            ConfigError::EmptySecret(from) => write!(f, "the token secret from {from} is empty"),
            ConfigError::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Flags {
    /// Checks the flags and reads the secrets. `env` holds the environment
    /// variables that may carry secrets, passed in so that tests need not touch
    /// the process environment; `fd_limit` is the open-files limit the process
    /// runs with.
    pub fn into_config(self, env: Env, fd_limit: u64) -> Result<Config, ConfigError> {
        let mut cluster = cluster::settings::from_flags(
            ClusterFlags {
                redis: self.redis.as_deref(),
                password_file: self.redis_password_file.as_deref(),
                node_id: self.node_id.as_deref(),
                prefix: &self.redis_prefix,
                timeout: self.cluster_timeout,
                max_line_length: self.max_line_length,
            },
            env.redis_password,
        )
        .map_err(ConfigError::Invalid)?;
        if self.reuse_port && cluster.is_none() {
            return Err(invalid(
                "--reuse-port needs --redis URL: hubs sharing a port without a shared uid \
                 space would answer fail for each other's clients",
            ));
        }
        let mut history = self.history_limits()?;
        if let Some(cluster) = &mut cluster {
            // A cluster keeps its streams' history in Redis, where every hub
            // reads it; none is kept here, so no position is ever a hub's own.
            cluster.history = history;
            history.size_uid = 0;
            history.size_channel = 0;
            history.size_broadcast = 0;
        }
        let tls = self.tls_settings(env.tls_password)?;
        let apns = settings::from_flags(
            ApnsFlags {
                key_file: self.apns_key_file,
                key_id: self.apns_key_id,
                team_id: self.apns_team_id,
                topic: self.apns_topic,
                cert_file: self.apns_cert_file,
                cert_password_file: self.apns_cert_password_file,
                sandbox: self.apns_sandbox,
                endpoint: self.apns_endpoint,
                ca_file: self.apns_ca_file,
            },
            env.apns_cert_password,
        )
        .map_err(ConfigError::Invalid)?;
        if self.devices_db.is_some() && self.apns_db.is_some() {
            return Err(invalid(
                "--devices-db and --apns-db name the same file (--apns-db is its former name): \
                 give one",
            ));
        }
        let devices_db = self.devices_db.or(self.apns_db);
        let in_cluster = self.redis.is_some();
        if in_cluster && devices_db.is_some() {
            return Err(invalid(
                "--devices-db (or --apns-db) and --redis: a cluster keeps its device \
                 registry in Redis, shared by every hub; drop it (README, \"Running several hubs\", \
                 says how to copy a file's registrations into Redis)",
            ));
        }
        let vapid = crate::push::webpush::settings::from_flags(
            self.vapid_key_file,
            self.vapid_subject.as_deref(),
            self.webpush_ca_file,
        )
        .map_err(ConfigError::Invalid)?;
        let fcm = crate::push::fcm::settings::from_flags(FcmFlags {
            credentials_file: self.fcm_credentials_file,
            endpoint: self.fcm_endpoint,
            token_endpoint: self.fcm_token_endpoint,
            ca_file: self.fcm_ca_file,
        })
        .map_err(ConfigError::Invalid)?;
        let push_test = match (self.apns_test, self.fcm_test, self.webpush_test) {
            (None, None, None) => None,
            (Some(token), None, None) => Some(PushTest::Apns(token)),
            (None, Some(token), None) => Some(PushTest::Fcm(token)),
            (None, None, Some(file)) => Some(PushTest::WebPush(file)),
            _ => {
                return Err(invalid(
                    "give one of --apns-test, --fcm-test and --webpush-test",
                ));
            }
        };
        if push_test.is_none() && devices_db.is_none() && !in_cluster {
            for (configured, service) in [
                (apns.is_some(), "APNs"),
                (fcm.is_some(), "FCM"),
                (vapid.is_some(), "Web Push"),
            ] {
                if configured {
                    return Err(ConfigError::Invalid(format!(
                        "{service} needs --devices-db PATH: the registry of the uids' devices"
                    )));
                }
            }
        }
        let secret = read_secret(self.secret_file.as_deref(), env.secret)?;
        // A push test sends one message and exits: no hub, no clients.
        if secret.is_none() && !self.allow_plain_uid && !self.allow_anonymous && push_test.is_none()
        {
            return Err(ConfigError::NoAuth);
        }
        let max_connections = match self.max_connections {
            Some(0) => return Err(invalid("--max-connections must be at least 1")),
            Some(n) => n,
            None => fd_limit.saturating_sub(RESERVED_FDS).max(1),
        };
        if self.idle_timeout <= self.ping_interval {
            return Err(invalid(
                "--idle-timeout must be longer than --ping-interval, or idle clients \
                 are closed before they are pinged",
            ));
        }
        for (name, d) in [
            ("--handshake-timeout", self.handshake_timeout),
            ("--auth-timeout", self.auth_timeout),
            ("--ping-interval", self.ping_interval),
        ] {
            if d.is_zero() {
                return Err(invalid(&format!("{name} must be longer than zero")));
            }
        }
        let public_channels = self
            .public_channel
            .iter()
            .map(|p| {
                Pattern::parse(p).map_err(|e| invalid(&format!("--public-channel `{p}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (name, n) in [
            (
                "--max-subscriptions-per-connection",
                self.max_subscriptions_per_connection,
            ),
            ("--max-channels", self.max_channels),
        ] {
            if n == 0 {
                return Err(invalid(&format!("{name} must be at least 1")));
            }
            // The channel table indexes both in 32 bits.
            if u32::try_from(n).is_err() {
                return Err(invalid(&format!("{name} must be at most {}", u32::MAX)));
            }
        }
        for (name, n) in [
            ("--max-message-size", self.max_message_size),
            ("--max-queue-messages", self.max_queue_messages),
            ("--max-queue-bytes", self.max_queue_bytes),
            ("--max-line-length", self.max_line_length),
            ("--max-listener-buffer", self.max_listener_buffer),
        ] {
            if n == 0 {
                return Err(invalid(&format!("{name} must be at least 1")));
            }
            if n > MAX_SIZE {
                return Err(invalid(&format!(
                    "{name} must be at most {MAX_SIZE} (1GiB)"
                )));
            }
        }
        Ok(Config {
            auth: AuthConfig {
                allow_plain_uid: self.allow_plain_uid,
                secret,
            },
            login_reply: self.login_reply,
            public_channels,
            allow_anonymous: self.allow_anonymous,
            upstream: self.upstream,
            max_listener_buffer: self.max_listener_buffer,
            history,
            max_subscriptions_per_connection: self.max_subscriptions_per_connection,
            max_channels: self.max_channels,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            max_connections_per_ip: match self.max_connections_per_ip {
                Some(0) => return Err(invalid("--max-connections-per-ip must be at least 1")),
                n => n,
            },
            allow_origins: self
                .allow_origin
                .iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
            handshake_timeout: self.handshake_timeout,
            auth_timeout: self.auth_timeout,
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            max_message_size: self.max_message_size,
            max_queue_messages: self.max_queue_messages,
            max_queue_bytes: self.max_queue_bytes,
            max_line_length: self.max_line_length,
            shutdown_timeout: self.shutdown_timeout,
            tls,
            apns_db: devices_db,
            apns,
            push_test,
            vapid,
            fcm,
            cluster,
            reuse_port: self.reuse_port,
        })
    }
}

/// A test message to send instead of running the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushTest {
    /// `--apns-test`: to this device token.
    Apns(String),
    /// `--fcm-test`: to this registration token.
    Fcm(String),
    /// `--webpush-test`: to the subscription in this file.
    WebPush(PathBuf),
}

impl Flags {
    /// The `--history-*` and `--replay-*` flags, checked.
    fn history_limits(&self) -> Result<HistoryLimits, ConfigError> {
        let size = |kind: Option<usize>| kind.unwrap_or(self.history_size);
        let limits = HistoryLimits {
            size_uid: size(self.history_size_uid),
            size_channel: size(self.history_size_channel),
            size_broadcast: size(self.history_size_broadcast),
            ttl: self.history_ttl,
            memory: self.history_memory,
            replay_messages: self.replay_max_messages,
            replay_bytes: self.replay_max_bytes,
        };
        for (name, n) in [
            ("--history-size", limits.size_uid),
            ("--history-size", limits.size_channel),
            ("--history-size", limits.size_broadcast),
            ("--history-memory", limits.memory),
            ("--replay-max-bytes", limits.replay_bytes),
        ] {
            if n > MAX_SIZE {
                return Err(invalid(&format!(
                    "{name} must be at most {MAX_SIZE} (1GiB)"
                )));
            }
        }
        if limits.ttl.is_zero() {
            return Err(invalid("--history-ttl must be longer than zero"));
        }
        if limits.replay_messages == 0 || limits.replay_bytes == 0 {
            return Err(invalid(
                "--replay-max-messages and --replay-max-bytes must be at least 1",
            ));
        }
        Ok(limits)
    }

    /// The `--tls-*` flags, checked, with the password read. The files
    /// themselves are read when the acceptor is built.
    fn tls_settings(
        &self,
        env_password: Option<String>,
    ) -> Result<Option<TlsSettings>, ConfigError> {
        let files = match (&self.tls_cert, &self.tls_key, &self.tls_pkcs12) {
            (None, None, None) => {
                if self.tls_password_file.is_some() {
                    return Err(invalid(
                        "--tls-password-file needs --tls-cert or --tls-pkcs12",
                    ));
                }
                return Ok(None);
            }
            (Some(cert), key, None) => TlsFiles::Pem {
                cert: cert.clone(),
                key: key.clone(),
            },
            (None, None, Some(archive)) => TlsFiles::Pkcs12(archive.clone()),
            (None, Some(_), None) => {
                return Err(invalid(
                    "--tls-key needs --tls-cert: the certificate it belongs to",
                ));
            }
            (_, _, Some(_)) => {
                return Err(invalid(
                    "give --tls-pkcs12 or --tls-cert (with --tls-key), not both",
                ));
            }
        };
        let password = Secret::password(self.tls_password_file.as_deref(), env_password)
            .map_err(ConfigError::Invalid)?;
        Ok(Some(TlsSettings { files, password }))
    }
}

/// Parses this process's command line into `T` (the load generator's flags;
/// the hub's go through `cli::dispatch`, which adds the commands and parses
/// them the same way). `--help` prints to stdout and exits 0; a bad flag exits
/// 2, like every other configuration error.
pub fn from_command_line<T: FromArgs>() -> Result<T, std::process::ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (command, rest) = args
        .split_first()
        .map_or(("pushhub", &[][..]), |(c, r)| (*c, r));
    T::from_args(&[command], rest).map_err(|exit| match exit.status {
        Ok(()) => {
            println!("{}", exit.output);
            std::process::ExitCode::SUCCESS
        }
        Err(()) => {
            eprintln!("{}", exit.output);
            std::process::ExitCode::from(2)
        }
    })
}

/// The token secret: from `file` if one is given, else from `env_value` (that
/// of [`SECRET_ENV`]); `None` if neither. Surrounding whitespace is not part
/// of it, and an empty one is an error. The hub and `pushhub token` both read
/// it here: given the same file or variable, they hold the same key.
pub fn read_secret(
    file: Option<&Path>,
    env_value: Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    match (file, env_value) {
        (Some(path), _) => Secret::read(path)
            .map_err(|e| ConfigError::SecretFile(path.to_path_buf(), e))?
            .ok_or_else(|| ConfigError::EmptySecret(path.display().to_string()))
            .map(Some),
        (None, Some(value)) => Secret::from_file_contents(value.as_bytes())
            .ok_or_else(|| ConfigError::EmptySecret(SECRET_ENV.to_string()))
            .map(Some),
        (None, None) => Ok(None),
    }
}

/// The environment variables that may hold secrets.
#[derive(Debug, Default)]
pub struct Env {
    /// [`SECRET_ENV`].
    pub secret: Option<String>,
    /// [`APNS_CERT_PASSWORD_ENV`].
    pub apns_cert_password: Option<String>,
    /// [`TLS_PASSWORD_ENV`].
    pub tls_password: Option<String>,
    /// [`REDIS_PASSWORD_ENV`].
    pub redis_password: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        Env {
            secret: std::env::var(SECRET_ENV).ok(),
            apns_cert_password: std::env::var(APNS_CERT_PASSWORD_ENV).ok(),
            tls_password: std::env::var(TLS_PASSWORD_ENV).ok(),
            redis_password: std::env::var(REDIS_PASSWORD_ENV).ok(),
        }
    }
}

fn invalid(msg: &str) -> ConfigError {
    ConfigError::Invalid(msg.to_string())
}

/// Splits `" 64KiB"` into the trimmed text, its leading digits and the rest.
fn number_and_unit(s: &str) -> (&str, &str, &str) {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    (s, digits, unit.trim())
}

/// Parses `250ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (s, digits, unit) = number_and_unit(s);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: use e.g. 500ms, 10s, 2m or 1h"))?;
    let millis = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        other => {
            return Err(format!(
                "unknown duration unit `{other}`: use ms, s, m or h"
            ));
        }
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration `{s}` is too long"))
}

/// Parses a byte count: `4096`, `64KiB`, `1MiB` (also `k`/`KB`/`M`/`MB`, all powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let (s, digits, unit) = number_and_unit(s);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size: use e.g. 4096, 64KiB or 1MiB"))?;
    let factor: usize = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}`: use KiB, MiB or GiB")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("unknown log level `{s}`: use error, warn, info, debug or trace"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_secret(value: &str) -> Env {
        Env {
            secret: Some(value.into()),
            ..Env::default()
        }
    }

    fn flags(args: &[&str]) -> Result<Flags, String> {
        Flags::from_args(&["pushhub"], args).map_err(|e| e.output)
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn refuses_to_start_without_auth() {
        let err = flags(&[])
            .unwrap()
            .into_config(Env::default(), 20_000)
            .unwrap_err();
        assert!(matches!(err, ConfigError::NoAuth));
        assert!(err.to_string().contains("--secret-file"));
    }

    #[test]
    fn secret_from_env_and_default_capacity() {
        let config = flags(&[])
            .unwrap()
            .into_config(env_secret("s3cret"), 20_000)
            .unwrap();
        assert!(config.auth.secret.is_some());
        assert!(!config.auth.allow_plain_uid);
        assert_eq!(config.max_connections, 20_000 - RESERVED_FDS as usize);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(flags(&["--ws", "nowhere"]).is_err());
        assert!(flags(&["--max-connections", "-3"]).is_err());
        let err = flags(&["--allow-plain-uid", "--secret-file", "/nonexistent/secret"])
            .unwrap()
            .into_config(Env::default(), 100)
            .unwrap_err();
        assert!(matches!(err, ConfigError::SecretFile(..)));
        let err = flags(&[
            "--allow-plain-uid",
            "--ping-interval",
            "60s",
            "--idle-timeout",
            "30s",
        ])
        .unwrap()
        .into_config(Env::default(), 100)
        .unwrap_err();
        assert!(err.to_string().contains("--idle-timeout"));
        let err = flags(&[])
            .unwrap()
            .into_config(env_secret(" \n"), 100)
            .unwrap_err();
        assert!(matches!(err, ConfigError::EmptySecret(_)));
        let err = flags(&["--allow-plain-uid", "--max-line-length", "2GiB"])
            .unwrap()
            .into_config(Env::default(), 100)
            .unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }

    fn tls_config(args: &[&str], env: Env) -> Result<Option<TlsSettings>, String> {
        let mut all = vec!["--allow-plain-uid"];
        all.extend_from_slice(args);
        let config = flags(&all).unwrap().into_config(env, 100);
        config.map(|c| c.tls).map_err(|e| e.to_string())
    }

    #[test]
    fn tls_flags() {
        assert!(tls_config(&[], Env::default()).unwrap().is_none());
        let pem = tls_config(
            &["--tls-cert", "c.pem", "--tls-key", "k.pem"],
            Env::default(),
        );
        assert!(matches!(
            pem.unwrap().unwrap().files,
            TlsFiles::Pem { key: Some(_), .. }
        ));
        let env = Env {
            tls_password: Some("pw\n".into()),
            ..Env::default()
        };
        let p12 = tls_config(&["--tls-pkcs12", "a.p12"], env)
            .unwrap()
            .unwrap();
        assert!(matches!(p12.files, TlsFiles::Pkcs12(_)));
        assert_eq!(p12.password.unwrap().expose(), b"pw");
        for (args, says) in [
            (&["--tls-key", "k.pem"][..], "--tls-key needs --tls-cert"),
            (&["--tls-cert", "c", "--tls-pkcs12", "a"][..], "not both"),
            (&["--tls-key", "k", "--tls-pkcs12", "a"][..], "not both"),
            (&["--tls-password-file", "p"][..], "needs --tls-cert"),
            (
                &["--tls-pkcs12", "a", "--tls-password-file", "/nonexistent/p"][..],
                "cannot read the password file",
            ),
        ] {
            let err = tls_config(args, Env::default()).unwrap_err();
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
}
