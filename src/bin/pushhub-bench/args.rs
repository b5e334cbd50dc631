//! The command line: one subcommand per bench, plus the hidden `worker` that
//! `conns` runs in child processes. Flag names are an interface (the Makefile
//! and BENCHMARKS.md use them).
//!
//! argh has no flattening, so the flags every hub bench shares are written
//! once, in the `hub_bench!` macro that declares each bench's struct.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use argh::FromArgs;

/// Load generator for a running pushhub (on this machine's loopback only).
/// Every subcommand prints a summary on stderr and one JSON line on stdout.
#[derive(FromArgs, Debug)]
pub struct TopLevel {
    #[argh(subcommand)]
    pub cmd: Cmd,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Cmd {
    Conns(ConnsArgs),
    Push(PushArgs),
    PushMax(PushMaxArgs),
    Broadcast(BroadcastArgs),
    Publish(PublishArgs),
    Subs(SubsArgs),
    Slow(SlowArgs),
    History(HistoryArgs),
    Replay(ReplayArgs),
    PushSvc(PushSvcArgs),
    Sink(SinkArgs),
    Floor(FloorArgs),
    Chart(ChartArgs),
    VersusTable(VersusTableArgs),
    Worker(WorkerArgs),
    FloorPeer(FloorPeerArgs),
}

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Token,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "plain" => Ok(Mode::Plain),
            "token" => Ok(Mode::Token),
            _ => Err(format!("expected plain or token, got {s:?}")),
        }
    }
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Token => "token",
        }
    }
}

fn default_ws() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1234))
}

fn default_text() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5678))
}

fn default_sink() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 21443))
}

/// The flags every hub bench shares, as given.
#[derive(Debug, Clone)]
pub struct CommonArgs {
    pub ws: SocketAddr,
    pub text: SocketAddr,
    pub hub_pid: Option<u32>,
    pub mode: Mode,
    pub secret_file: Option<PathBuf>,
    pub sources: u8,
    pub concurrency: usize,
    pub timeout_secs: u64,
    pub floor_us: Option<f64>,
    pub tls: bool,
    pub extra_pids: Vec<ExtraPid>,
    pub cluster: bool,
    pub redis: Option<SocketAddr>,
    pub label: Option<String>,
    pub peer: bool,
}

/// `--extra-pid NAME=PID`: another process whose CPU time and RSS the run
/// reports beside the hub's (a second hub, redis-server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraPid {
    pub name: String,
    pub pid: u32,
}

impl FromStr for ExtraPid {
    type Err = String;
    fn from_str(s: &str) -> Result<ExtraPid, String> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=PID, got {s:?}"))?;
        // The name becomes a JSON key beside the others: keep it plain.
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!("the name of {s:?} must be letters, digits, - or _"));
        }
        let pid = pid
            .parse()
            .map_err(|_| format!("the pid of {s:?} is not a number"))?;
        Ok(ExtraPid {
            name: name.to_string(),
            pid,
        })
    }
}

/// Declares a hub bench's flags: its own, then the shared ones.
macro_rules! hub_bench {
    // The bench's own fields pass through as raw tokens: argh must see
    // `Option<..>` spelled out, which a `ty` fragment would hide.
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($fields:tt)* }
    ) => {
        #[derive(FromArgs, Debug)]
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// the hub's WebSocket address, in 127.0.0.0/8 (default 127.0.0.1:1234)
            #[argh(option, default = "default_ws()")]
            pub ws: SocketAddr,
            /// the hub's text port, in 127.0.0.0/8 (default 127.0.0.1:5678)
            #[argh(option, default = "default_text()")]
            pub text: SocketAddr,
            /// pid of the hub, to read its memory and CPU time from /proc
            #[argh(option)]
            pub hub_pid: Option<u32>,
            /// plain (the uid as first message, needs --allow-plain-uid) or token
            /// (a signed token as first message); default plain
            #[argh(option, default = "Mode::Plain")]
            pub mode: Mode,
            /// file holding the hub's token secret, for --mode token (or set
            /// PUSHHUB_SECRET)
            #[argh(option)]
            pub secret_file: Option<PathBuf>,
            /// spread connections over the source addresses 127.0.0.1 to
            /// 127.0.0.K (default 8)
            #[argh(option, default = "8")]
            pub sources: u8,
            /// connections being opened at once (default 256)
            #[argh(option, default = "256")]
            pub concurrency: usize,
            /// give up after this many seconds: report what was measured and exit
            /// 1 (default 120)
            #[argh(option, default = "120")]
            pub timeout_secs: u64,
            /// CPU µs per send measured by `floor`: adds ratios to that floor
            #[argh(option)]
            pub floor_us: Option<f64>,
            /// wss: a TLS handshake before the WebSocket one, for a hub started
            /// with --tls-cert or --tls-pkcs12. The hub's certificate is NOT
            /// verified (any one is accepted, as a throwaway self-signed one must
            /// be): for benchmarking on loopback only
            #[argh(switch)]
            pub tls: bool,
            /// NAME=PID of another process to measure beside the hub (a second
            /// hub, redis-server): its CPU time over each measured part and its
            /// RSS go under "procs"."NAME" in the JSON; repeatable
            #[argh(option)]
            pub extra_pid: Vec<ExtraPid>,
            /// the hubs form a cluster: `stats` is asked with "cluster":true and
            /// summed over the nodes, so that clients held by any hub count
            #[argh(switch)]
            pub cluster: bool,
            /// the cluster's redis-server (in 127.0.0.0/8): benches that measure
            /// memory also report its used_memory (INFO memory)
            #[argh(option)]
            pub redis: Option<SocketAddr>,
            /// a name for this run, copied into the JSON as "label"
            #[argh(option)]
            pub label: Option<String>,
            /// drive the server as a peer of the original push.php, which
            /// need not be pushhub (bench/versus.sh drives uWebSockets.js and
            /// pushhub so): no greeting and no `stats` or `online` is
            /// expected, so a login counts once the pong to the ping sent
            /// after the uid is back, and the server is measured from /proc
            /// only; pushes go in the original form {"uid":..,"data":..},
            /// answered ok or fail; broadcast data is a JSON array, which
            /// pushhub and the original deliver as sent. Plain mode; conns,
            /// broadcast, push and pushmax only
            #[argh(switch)]
            pub peer: bool,
        }

        impl $name {
            pub fn common(&self) -> CommonArgs {
                CommonArgs {
                    ws: self.ws,
                    text: self.text,
                    hub_pid: self.hub_pid,
                    mode: self.mode,
                    secret_file: self.secret_file.clone(),
                    sources: self.sources,
                    concurrency: self.concurrency,
                    timeout_secs: self.timeout_secs,
                    floor_us: self.floor_us,
                    tls: self.tls,
                    extra_pids: self.extra_pid.clone(),
                    cluster: self.cluster,
                    redis: self.redis,
                    label: self.label.clone(),
                    peer: self.peer,
                }
            }
        }
    };
}

hub_bench! {
    /// Open connections step by step; the hub's RSS at each step, the slope per
    /// connection, the connect+login rate and the hub's CPU per login.
    #[argh(subcommand, name = "conns")]
    pub struct ConnsArgs {
        /// connections in all (default 18000)
        #[argh(option, default = "18000")]
        pub n: u32,
        /// comma-separated connection counts at which to sample the hub's RSS
        /// (default 1000,2000,5000,10000,18000, cut at --n; --n is always the last)
        #[argh(option)]
        pub steps: Option<String>,
        /// wait this long at each step before sampling (default 1000)
        #[argh(option, default = "1000")]
        pub settle_ms: u64,
        /// connections per process: beyond it, child processes hold them
        /// (default 16000)
        #[argh(option, default = "16000")]
        pub per_process: u32,
    }
}

hub_bench! {
    /// Pushes to random uids at a fixed rate: delivery latency percentiles,
    /// failures and pushes acknowledged but never received.
    #[argh(subcommand, name = "push")]
    pub struct PushArgs {
        /// connections (uids u0..u{n-1}) (default 10000)
        #[argh(option, default = "10000")]
        pub n: u32,
        /// pushes per second (default 5000)
        #[argh(option, default = "5000")]
        pub rate: u32,
        /// seconds of pushing (default 10)
        #[argh(option, default = "10")]
        pub duration_secs: u32,
        /// how long to wait for stragglers after the last reply (default 1000)
        #[argh(option, default = "1000")]
        pub grace_ms: u64,
    }
}

hub_bench! {
    /// Pipelined pushes as fast as the hub takes them: pushes/s and hub CPU per
    /// push, and a check that every client received its share.
    #[argh(subcommand, name = "pushmax")]
    pub struct PushMaxArgs {
        /// connections (default 1000)
        #[argh(option, default = "1000")]
        pub n: u32,
        /// pushes in all (default 200000)
        #[argh(option, default = "200000")]
        pub pushes: u32,
        /// most requests unanswered at any time (default 2000)
        #[argh(option, default = "2000")]
        pub window: u32,
    }
}

/// The flags of the fan-out benches (`broadcast`, `publish`), as one value.
#[derive(Debug, Clone, Copy)]
pub struct FanArgs {
    pub n: u32,
    pub repeats: u32,
    pub size: usize,
    pub burst: u32,
}

/// Declares a fan-out bench: the flags of [`FanArgs`], then the shared ones.
macro_rules! fan_bench {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {}
    ) => {
        hub_bench! {
            $(#[$meta])*
            pub struct $name {
                /// connections (default 18000)
                #[argh(option, default = "18000")]
                pub n: u32,
                /// single messages, one after the other (default 10)
                #[argh(option, default = "10")]
                pub repeats: u32,
                /// bytes of data per message (default 32)
                #[argh(option, default = "32")]
                pub size: usize,
                /// messages written back to back (default 20)
                #[argh(option, default = "20")]
                pub burst: u32,
            }
        }

        impl $name {
            pub fn fan(&self) -> FanArgs {
                FanArgs {
                    n: self.n,
                    repeats: self.repeats,
                    size: self.size,
                    burst: self.burst,
                }
            }
        }
    };
}

fan_bench! {
    /// Broadcasts to every client: time until all have one, and a burst
    /// written in one go; hub CPU per delivered message.
    #[argh(subcommand, name = "broadcast")]
    pub struct BroadcastArgs {}
}

fan_bench! {
    /// `broadcast`, but every client is first subscribed (through the text
    /// port) to one channel, c0, and the messages are publications to it.
    #[argh(subcommand, name = "publish")]
    pub struct PublishArgs {}
}

hub_bench! {
    /// Memory and CPU per channel subscription: N clients connect, then each is
    /// subscribed server-side to --per-client channels among --channels; the
    /// hub's RSS before and after, and a check that publications reach exactly
    /// their channels' members.
    #[argh(subcommand, name = "subs")]
    pub struct SubsArgs {
        /// connections (default 18000)
        #[argh(option, default = "18000")]
        pub n: u32,
        /// channels each client is subscribed to (default 10)
        #[argh(option, default = "10")]
        pub per_client: u32,
        /// channels in all, c0..c{channels-1}: client i's j-th is
        /// c{(i*per_client + j) % channels} (default 1000)
        #[argh(option, default = "1000")]
        pub channels: u32,
        /// uids per subscribe request (default 500)
        #[argh(option, default = "500")]
        pub batch: u32,
        /// channels published to in the final check (default 4)
        #[argh(option, default = "4")]
        pub check: u32,
        /// wait this long before each idle RSS reading (default 1000)
        #[argh(option, default = "1000")]
        pub settle_ms: u64,
    }
}

hub_bench! {
    /// Clients that stop reading while big broadcasts go on: the hub's memory,
    /// whom it drops, and whether the readers still get everything.
    #[argh(subcommand, name = "slow")]
    pub struct SlowArgs {
        /// clients that read everything (default 1000)
        #[argh(option, default = "1000")]
        pub readers: u32,
        /// clients that stop reading after the run-up (default 100)
        #[argh(option, default = "100")]
        pub slow: u32,
        /// bytes of data per broadcast (default 65536)
        #[argh(option, default = "65536")]
        pub size: usize,
        /// broadcasts once the slow clients stopped reading (default 200)
        #[argh(option, default = "200")]
        pub broadcasts: u32,
        /// broadcasts before that, read by every client (default 10)
        #[argh(option, default = "10")]
        pub runup: u32,
        /// hub RSS sampling interval during the run (default 20)
        #[argh(option, default = "20")]
        pub sample_ms: u64,
        /// receive buffer of the slow clients' sockets in bytes (default: the
        /// kernel's), to reach the hub's queue bounds with less data
        #[argh(option)]
        pub slow_rcvbuf: Option<usize>,
    }
}

hub_bench! {
    /// History's memory and CPU: pushes to offline uids until the history is
    /// full (--history-memory), with the hub's RSS and `stats` along the way;
    /// then more, which evict; then pipelined pushes to online raw clients
    /// (pushmax's measurement), to compare with a hub run with
    /// --history-size 0.
    #[argh(subcommand, name = "history")]
    pub struct HistoryArgs {
        /// offline uids o0..o{uids-1}, pushed to in turn (default 10000)
        #[argh(option, default = "10000")]
        pub uids: u32,
        /// bytes of data per push (default 32)
        #[argh(option, default = "32")]
        pub size: usize,
        /// pushes between two readings of the hub's stats and RSS (default 5000)
        #[argh(option, default = "5000")]
        pub chunk: u32,
        /// most pushes while filling; a hub that keeps nothing (history off)
        /// gets exactly this many (default 400000)
        #[argh(option, default = "400000")]
        pub max_fill: u32,
        /// once full, push this many times the kept messages again, all
        /// evicting older ones, and read the RSS again (default 1.0)
        #[argh(option, default = "1.0")]
        pub churn: f64,
        /// online raw clients for the CPU part; 0 skips it (default 10000)
        #[argh(option, default = "10000")]
        pub n: u32,
        /// pushes in the CPU part (default 300000)
        #[argh(option, default = "300000")]
        pub pushes: u32,
        /// most push requests unanswered in the CPU part (default 2000)
        #[argh(option, default = "2000")]
        pub window: u32,
        /// wait this long before each idle RSS reading (default 1000)
        #[argh(option, default = "1000")]
        pub settle_ms: u64,
    }
}

/// How the messages that the clients miss are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `push` to each client's uid: a stream per client.
    Push,
    /// `publish` to channel c0, which every client subscribes to: one
    /// stream, its frames shared by every replay.
    Publish,
}

impl FromStr for Via {
    type Err = String;
    fn from_str(s: &str) -> Result<Via, String> {
        match s {
            "push" => Ok(Via::Push),
            "publish" => Ok(Via::Publish),
            _ => Err(format!("expected push or publish, got {s:?}")),
        }
    }
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Push => "push",
            Via::Publish => "publish",
        }
    }
}

/// What a storm's clients must be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every client recovered, with all it missed.
    Recovered,
    /// Every client told `recovered:false`, nothing replayed.
    Gap,
}

impl FromStr for Expect {
    type Err = String;
    fn from_str(s: &str) -> Result<Expect, String> {
        match s {
            "recovered" => Ok(Expect::Recovered),
            "gap" => Ok(Expect::Gap),
            _ => Err(format!("expected recovered or gap, got {s:?}")),
        }
    }
}

hub_bench! {
    /// A reconnect storm of v1 clients: N clients take their positions and
    /// leave; the backend sends K messages to each (--via push) or to a
    /// channel they share (--via publish, needs the hub's --public-channel
    /// c0); the clients reconnect all together without `since` (storm 0, the
    /// baseline), leave, then all reconnect with `since`. Reported per
    /// storm: recovered counts, time until every client has its replay, the
    /// hub's CPU, and its peak RSS.
    #[argh(subcommand, name = "replay")]
    pub struct ReplayArgs {
        /// v1 clients, uids u0..u{n-1} (default 5000)
        #[argh(option, default = "5000")]
        pub n: u32,
        /// messages each client misses (default 20)
        #[argh(option, default = "20")]
        pub k: u32,
        /// push (to each uid) or publish (to channel c0) (default push)
        #[argh(option, default = "Via::Push")]
        pub via: Via,
        /// bytes of data per message (default 32)
        #[argh(option, default = "32")]
        pub size: usize,
        /// what every client must be told: recovered (all it missed
        /// replayed) or gap (recovered:false) (default recovered)
        #[argh(option, default = "Expect::Recovered")]
        pub expect: Expect,
        /// in the storm, clients stop reading once they have their answers
        /// (welcome, subbed), and read the rest only after --settle-ms: the
        /// hub's RSS while it holds every replay it could not write
        #[argh(switch)]
        pub stall: bool,
        /// SO_RCVBUF of the storm's sockets with --stall, in bytes (default:
        /// the kernel's), so that less of each replay fits in the kernel
        #[argh(option)]
        pub rcvbuf: Option<usize>,
        /// hub RSS sampling interval during a storm (default 5)
        #[argh(option, default = "5")]
        pub sample_ms: u64,
        /// wait this long before each idle RSS reading (default 1000)
        #[argh(option, default = "1000")]
        pub settle_ms: u64,
    }
}

/// What `pushsvc` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The hub's RSS once settled.
    Idle,
    /// RSS per notification queued for a push service that does not answer.
    Queued,
    /// Hub CPU per message a push service was sent.
    Cpu,
}

impl FromStr for Measure {
    type Err = String;
    fn from_str(s: &str) -> Result<Measure, String> {
        match s {
            "idle" => Ok(Measure::Idle),
            "queued" => Ok(Measure::Queued),
            "cpu" => Ok(Measure::Cpu),
            _ => Err(format!("expected idle, queued or cpu, got {s:?}")),
        }
    }
}

/// Which push services the hub was given (`pushsvc --provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    None,
    Apns,
    Fcm,
    WebPush,
    All,
}

impl FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Provider, String> {
        match s {
            "none" => Ok(Provider::None),
            "apns" => Ok(Provider::Apns),
            "fcm" => Ok(Provider::Fcm),
            "webpush" => Ok(Provider::WebPush),
            "all" => Ok(Provider::All),
            _ => Err(format!(
                "expected none, apns, fcm, webpush or all, got {s:?}"
            )),
        }
    }
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::None => "none",
            Provider::Apns => "apns",
            Provider::Fcm => "fcm",
            Provider::WebPush => "webpush",
            Provider::All => "all",
        }
    }
}

hub_bench! {
    /// The push services in the hub, against `pushhub-bench sink`: its idle
    /// RSS with a provider configured, the bytes per notification queued for
    /// a service that does not answer (sink --hold), or its CPU per message
    /// sent (an answering sink, --sink-stats counting them).
    #[argh(subcommand, name = "pushsvc")]
    pub struct PushSvcArgs {
        /// idle, queued or cpu
        #[argh(option)]
        pub measure: Measure,
        /// the push service the hub was configured with: none, apns, fcm,
        /// webpush or all (none and all: idle only)
        #[argh(option)]
        pub provider: Provider,
        /// devices registered to the uid pushed to, `q` (default 1000)
        #[argh(option, default = "1000")]
        pub devices: u32,
        /// the sink's address, in 127.0.0.0/8: the Web Push endpoints
        /// registered are https://localhost:PORT/push/ID (default
        /// 127.0.0.1:21443)
        #[argh(option, default = "default_sink()")]
        pub sink: SocketAddr,
        /// the sink's --stats-file, for the messages it counted (cpu)
        #[argh(option)]
        pub sink_stats: Option<PathBuf>,
        /// idle: wait this long before reading the RSS; queued: this long
        /// after the push (default 2000)
        #[argh(option, default = "2000")]
        pub settle_ms: u64,
        /// cpu: seconds of pushes to `q` (default 5)
        #[argh(option, default = "5")]
        pub duration_secs: u32,
        /// cpu: pushes in flight, each to every device of `q` (default 2)
        #[argh(option, default = "2")]
        pub window: u32,
    }
}

/// A local stand-in for the push services, for benchmarks only: APNs, FCM
/// with its OAuth token endpoint, and Web Push, on one TLS listener (h2) with
/// a throwaway certificate; it counts requests and prints them on exit.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "sink")]
pub struct SinkArgs {
    /// address to listen on, in 127.0.0.0/8 (default 127.0.0.1:21443)
    #[argh(option, default = "default_sink()")]
    pub listen: SocketAddr,
    /// write the sink's self-signed certificate for localhost, and its key,
    /// here (PEM): the hub's --apns-ca-file, --fcm-ca-file, --webpush-ca-file
    #[argh(option)]
    pub cert_out: PathBuf,
    /// write a service-account key file here (a new RSA 2048 key, project
    /// "bench", token_uri this sink's /token): the hub's --fcm-credentials-file
    #[argh(option)]
    pub write_service_account: Option<PathBuf>,
    /// leave the push services' requests unanswered, their streams open
    /// (the token endpoint still answers): for measuring queued messages
    #[argh(switch)]
    pub hold: bool,
    /// stop after this many seconds, at most 3600 (default 60); SIGTERM and
    /// SIGINT stop it sooner
    #[argh(option, default = "60")]
    pub seconds: u64,
    /// rewrite this file with the counts (one JSON object) every 100 ms
    /// while they change, and at exit
    #[argh(option)]
    pub stats_file: Option<PathBuf>,
    /// most connections at once; more are closed at once (default 64)
    #[argh(option, default = "64")]
    pub max_connections: usize,
}

/// The kernel's floor for one delivered message: blocking sends to N loopback
/// sockets whose readers wait in epoll, CPU per send on the sending thread.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "floor")]
pub struct FloorArgs {
    /// connections (default 1000)
    #[argh(option, default = "1000")]
    pub n: u32,
    /// bytes per send (default 34: a 32-byte text message in its frame)
    #[argh(option, default = "34")]
    pub size: usize,
    /// measured rounds of one send per connection, after one warm-up round
    /// (default 20)
    #[argh(option, default = "20")]
    pub rounds: u32,
    /// give up after this many seconds (default 120)
    #[argh(option, default = "120")]
    pub timeout_secs: u64,
}

/// Draw the hub's RSS against its connection count (SVG) from the `conns`
/// results in a JSON-lines file.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "chart")]
pub struct ChartArgs {
    /// the results file, one JSON line per bench (default bench/results/load.jsonl)
    #[argh(option, default = "\"bench/results/load.jsonl\".into()")]
    pub input: std::path::PathBuf,
    /// where to write the SVG (default bench/rss.svg)
    #[argh(option, default = "\"bench/rss.svg\".into()")]
    pub output: std::path::PathBuf,
}

/// Print the side-by-side table of the latest bench/versus.sh run (pushhub
/// against uWebSockets.js) as Markdown, or put it into a document between its
/// `<!-- versus:begin -->` and `<!-- versus:end -->` lines.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "versus-table")]
pub struct VersusTableArgs {
    /// the results file, one JSON line per bench (default
    /// bench/results/versus.jsonl)
    #[argh(option, default = "\"bench/results/versus.jsonl\".into()")]
    pub input: PathBuf,
    /// rewrite the section of this Markdown file between the markers with
    /// the table, instead of printing it
    #[argh(option)]
    pub rewrite: Option<PathBuf>,
}

/// (internal, run by `floor`) connect N receivers to the floor's listener, read
/// in epoll, and print one line per completed round.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "floor-peer")]
pub struct FloorPeerArgs {
    /// the floor's listener
    #[argh(option)]
    pub connect: SocketAddr,
    /// connections
    #[argh(option)]
    pub n: u32,
    /// bytes per send
    #[argh(option)]
    pub size: usize,
    /// the CPU to run on
    #[argh(option)]
    pub cpu: Option<usize>,
}

/// (internal, run by `conns`) open connections u<from>..u<to-1>, print one
/// ready line, hold them until stdin closes.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "worker")]
pub struct WorkerArgs {
    /// first uid index
    #[argh(option)]
    pub from: u32,
    /// one past the last uid index
    #[argh(option)]
    pub to: u32,
    /// the hub's WebSocket address
    #[argh(option, default = "default_ws()")]
    pub ws: SocketAddr,
    /// plain or token
    #[argh(option, default = "Mode::Plain")]
    pub mode: Mode,
    /// file holding the token secret (or PUSHHUB_SECRET)
    #[argh(option)]
    pub secret_file: Option<PathBuf>,
    /// source addresses 127.0.0.1 to 127.0.0.K
    #[argh(option, default = "8")]
    pub sources: u8,
    /// connections being opened at once
    #[argh(option, default = "256")]
    pub concurrency: usize,
    /// exit after this many seconds even if stdin stays open
    #[argh(option, default = "120")]
    pub timeout_secs: u64,
    /// wss, without verifying the hub's certificate (see `conns --help`)
    #[argh(switch)]
    pub tls: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_extra_pids() {
        assert_eq!(
            "hub_b=42".parse::<ExtraPid>(),
            Ok(ExtraPid {
                name: "hub_b".into(),
                pid: 42
            })
        );
        assert!("42".parse::<ExtraPid>().is_err());
        assert!("=42".parse::<ExtraPid>().is_err());
        assert!("a\"b=42".parse::<ExtraPid>().is_err());
        assert!("redis=x".parse::<ExtraPid>().is_err());
    }
}
