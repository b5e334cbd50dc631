//! What every hub bench shares: the checked common flags, the hub's process,
//! opening N clients and waiting until the hub has authenticated them (or,
//! with `--peer`, until each client's own pong says so), the form of a push,
//! and the ratio to the kernel's floor.

use std::future::Future;
use std::net::SocketAddrV4;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use native_tls::TlsConnector;
use pushhub::auth::Secret;
use pushhub::config::SECRET_ENV;
use pushhub::time::unix_now;
use smol::{LocalExecutor, Timer};

use crate::args::{CommonArgs, Mode};
use crate::client::{ClientConfig, Credential, Listener, Pool};
use crate::net;
use crate::proc::HubProc;
use crate::report::{Report, rounded, say};
use crate::stream;
use crate::textport::{Backend, PushForm};

/// How often the hub's `stats` is polled while waiting for it.
const POLL: Duration = Duration::from_millis(20);

/// How long to wait for a previous run's connections to leave the hub.
const IDLE_WAIT: Duration = Duration::from_secs(15);

/// Token lifetime: longer than any run.
const TOKEN_SECS: u64 = 24 * 3600;

pub struct Env {
    pub ex: Rc<LocalExecutor<'static>>,
    pub report: Rc<Report>,
    pub ws: SocketAddrV4,
    pub text: SocketAddrV4,
    pub mode: Mode,
    pub credential: Credential,
    pub hub: Option<HubProc>,
    pub sources: u8,
    pub concurrency: usize,
    pub floor_us: Option<f64>,
    /// `--tls`: the TLS settings of every client.
    pub tls: Option<TlsConnector>,
    /// `--extra-pid`: processes measured beside the hub, by name.
    pub extras: Vec<(String, HubProc)>,
    /// `--cluster`: `stats` summed over the cluster's nodes.
    pub cluster: bool,
    /// `--redis`: the cluster's redis-server, for its memory.
    pub redis: Option<SocketAddrV4>,
    /// `--peer`: a server of the original's protocol, with no `stats`.
    pub peer: bool,
    /// The flags as given, for the worker processes.
    pub args: CommonArgs,
    /// When --timeout-secs runs out.
    pub deadline: Instant,
}

impl Env {
    pub fn new(
        args: &CommonArgs,
        ex: Rc<LocalExecutor<'static>>,
        report: Rc<Report>,
    ) -> Result<Env, String> {
        let ws = net::loopback_v4(args.ws)?;
        let text = net::loopback_v4(args.text)?;
        if args.sources == 0 || args.sources == 255 {
            return Err("--sources must be 1 to 254".into());
        }
        if args.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if args.peer && (args.mode != Mode::Plain || args.cluster) {
            return Err(
                "--peer drives a server of the original's protocol: plain mode, no --cluster"
                    .into(),
            );
        }
        if let Some(f) = args.floor_us
            && (f.is_nan() || f <= 0.0)
        {
            return Err("--floor-us must be a positive number".into());
        }
        let credential = credential(args.mode, args.secret_file.as_deref())?;
        let tls = args.tls.then(stream::connector).transpose()?;
        let hub = args.hub_pid.map(HubProc::new).transpose()?;
        if let Some(hub) = &hub
            && !hub.listens_on(ws)?
        {
            return Err(format!(
                "--hub-pid {} does not hold the listener on {ws}: not the hub being measured",
                args.hub_pid.unwrap_or_default()
            ));
        }
        let mut extras: Vec<(String, HubProc)> = Vec::new();
        for extra in &args.extra_pids {
            if extras.iter().any(|(name, _)| *name == extra.name) {
                return Err(format!("--extra-pid {} is given twice", extra.name));
            }
            extras.push((extra.name.clone(), HubProc::new(extra.pid)?));
        }
        let redis = args.redis.map(net::loopback_v4).transpose()?;
        Ok(Env {
            ex,
            report,
            ws,
            text,
            mode: args.mode,
            credential,
            hub,
            sources: args.sources,
            concurrency: args.concurrency,
            floor_us: args.floor_us,
            tls,
            extras,
            cluster: args.cluster,
            redis,
            peer: args.peer,
            args: args.clone(),
            deadline: Instant::now() + Duration::from_secs(args.timeout_secs),
        })
    }

    /// Runs `fut` until the deadline of --timeout-secs; `None` if it ran out.
    pub async fn bounded<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        smol::future::or(async { Some(fut.await) }, async {
            Timer::at(self.deadline).await;
            None
        })
        .await
    }

    /// The error of a run that ran out of time.
    pub fn timed_out(&self) -> String {
        format!(
            "timed out after {} s (--timeout-secs); figures so far are reported",
            self.args.timeout_secs
        )
    }

    /// The hub's process, for benches that report its memory or CPU.
    pub fn hub(&self) -> Result<&HubProc, String> {
        self.hub
            .as_ref()
            .ok_or_else(|| "--hub-pid is required: this bench reads the hub's /proc".to_string())
    }

    /// The hub's CPU time now, or 0 without --hub-pid.
    pub fn hub_cpu_ns(&self) -> Result<u64, String> {
        self.hub.as_ref().map_or(Ok(0), HubProc::cpu_ns)
    }

    /// A text-port connection, asking `stats` of the whole cluster with
    /// `--cluster`.
    pub async fn backend(&self) -> Result<Backend, String> {
        Ok(Backend::connect(self.text).await?.cluster(self.cluster))
    }

    /// The CPU time of each `--extra-pid` process now, in their order.
    pub fn extras_cpu_ns(&self) -> Result<Vec<u64>, String> {
        self.extras.iter().map(|(_, p)| p.cpu_ns()).collect()
    }

    /// Reports, for each `--extra-pid` process, its CPU time since `since`
    /// (from [`Env::extras_cpu_ns`]) per unit of work, in µs, as
    /// `"procs"."NAME"."<key>"`, and its RSS now. The hub's own figures keep
    /// their keys: a run without `--extra-pid` reports what it always did.
    pub fn report_extras(&self, key: &str, since: &[u64], units: f64) -> Result<(), String> {
        let used = self.extras_cpu_since(since)?;
        self.report_extras_cpu(key, &used, units)
    }

    /// The CPU time each `--extra-pid` process used since `since`, in ns.
    pub fn extras_cpu_since(&self, since: &[u64]) -> Result<Vec<u64>, String> {
        let now = self.extras_cpu_ns()?;
        Ok(now
            .iter()
            .zip(since)
            .map(|(n, s)| n.saturating_sub(*s))
            .collect())
    }

    /// [`Env::report_extras`] for CPU times already measured (`used_ns`, in
    /// the order of the processes), for benches that add up several parts.
    pub fn report_extras_cpu(&self, key: &str, used_ns: &[u64], units: f64) -> Result<(), String> {
        for ((name, proc), &cpu_ns) in self.extras.iter().zip(used_ns) {
            self.report
                .set_in("procs", name, key, rounded(cpu_ns as f64 / 1e3 / units, 3));
            self.report
                .set_in("procs", name, "rss_bytes", proc.rss_bytes()?);
        }
        Ok(())
    }

    /// Reports `key`: the machine's steal time since `since` (from
    /// [`crate::proc::steal_ns`]), in ms, where /proc/stat tells it.
    pub fn report_steal(&self, key: &str, since: Option<u64>) {
        if let (Some(before), Some(now)) = (since, crate::proc::steal_ns()) {
            self.report
                .num(key, now.saturating_sub(before) as f64 / 1e6, 0);
        }
    }

    /// Redis's `used_memory` now, with `--redis`.
    pub fn redis_memory(&self) -> Result<Option<u64>, String> {
        self.redis.map(crate::redis::used_memory).transpose()
    }

    /// How pushes are asked for: the original form for a `--peer`.
    pub fn push_form(&self) -> PushForm {
        if self.peer {
            PushForm::Original
        } else {
            PushForm::Command
        }
    }

    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            ws: self.ws,
            sources: self.sources,
            concurrency: self.concurrency,
            credential: self.credential.clone(),
            rcvbuf: None,
            tls: self.tls.clone(),
        }
    }

    /// Opens the clients u0..u{n-1} and waits until the hub has authenticated
    /// every one of them. Fails if any could not connect or log in. With
    /// `--peer`, `backend` is not asked anything: each client is in once its
    /// pong is back (plain mode's confirmation), which is all a server
    /// without `stats` can tell.
    pub async fn open_clients(
        &self,
        n: u32,
        listener: Rc<dyn Listener>,
        backend: &mut Backend,
    ) -> Result<Pool, String> {
        self.open_clients_with(n, listener, backend, self.client_config())
            .await
    }

    /// [`Env::open_clients`] with client settings of the caller's.
    pub async fn open_clients_with(
        &self,
        n: u32,
        listener: Rc<dyn Listener>,
        backend: &mut Backend,
        config: ClientConfig,
    ) -> Result<Pool, String> {
        net::check_fits(n)?;
        let pool = Pool::new(Rc::clone(&self.ex), config, listener);
        let started = crate::clock::now_ns();
        // Bounded as a whole: a hub that stalls during set-up (a `stats` left
        // unanswered) must not hold the run past --timeout-secs either.
        self.bounded(async {
            let baseline = if self.peer {
                None
            } else {
                self.wait_idle(backend).await?;
                Some(backend.stats().await?.authenticated)
            };
            pool.spawn(0..n);
            pool.settled(n).await;
            if pool.failed() > 0 {
                return Err(format!(
                    "{} of {n} connections failed; first errors: {}",
                    pool.failed(),
                    pool.errors().join("; ")
                ));
            }
            let Some(baseline) = baseline else {
                return Ok(());
            };
            self.wait_authenticated(backend, baseline + u64::from(n))
                .await?;
            self.check_online(backend, n).await
        })
        .await
        .unwrap_or_else(|| {
            Err(format!(
                "{}: {} of {n} clients ready, {} failed",
                self.timed_out(),
                pool.ready(),
                pool.failed()
            ))
        })?;
        let secs = crate::clock::ms(crate::clock::now_ns() - started) / 1e3;
        say(&format!(
            "{n} clients connected and authenticated in {secs:.2} s ({} mode{}{})",
            self.mode.name(),
            if self.tls.is_some() { ", wss" } else { "" },
            if self.peer {
                ", logins confirmed by the clients' pongs"
            } else {
                ""
            }
        ));
        Ok(pool)
    }

    /// Waits until the hub holds no WebSocket connection: the clients of a
    /// previous run may still be closing, and would blur every figure.
    pub async fn wait_idle(&self, backend: &mut Backend) -> Result<(), String> {
        let deadline = crate::clock::now_ns() + IDLE_WAIT.as_nanos() as u64;
        loop {
            let stats = backend.stats().await?;
            if stats.connections == 0 {
                return Ok(());
            }
            if crate::clock::now_ns() > deadline {
                return Err(format!(
                    "the hub is not idle: {} WebSocket connections still open after {} s",
                    stats.connections,
                    IDLE_WAIT.as_secs()
                ));
            }
            Timer::after(POLL).await;
        }
    }

    /// Checks that the first and the last client are online under their uids:
    /// a hub that took the credentials for something else (a plain-uid hub
    /// given tokens) still counts them as authenticated.
    async fn check_online(&self, backend: &mut Backend, n: u32) -> Result<(), String> {
        let request = format!(r#"{{"cmd":"online","uids":["u0","u{}"]}}"#, n - 1);
        let reply = backend.request(&request).await?;
        let results = reply["results"].as_array().cloned().unwrap_or_default();
        if results.len() != 2 || results.iter().any(|r| r["online"] != true) {
            return Err(format!(
                "the hub authenticated the clients, but u0 and u{} are not both online \
                 (--mode {} against a hub in the other mode?): {reply}",
                n - 1,
                self.mode.name()
            ));
        }
        Ok(())
    }

    /// Polls the hub's `stats` until `authenticated` reaches `target`. Plain-mode
    /// clients know they are in once the ping after their uid is answered;
    /// token-mode ones get no answer, so this is how a bench knows they are.
    pub async fn wait_authenticated(
        &self,
        backend: &mut Backend,
        target: u64,
    ) -> Result<u64, String> {
        loop {
            let stats = backend.stats().await?;
            if stats.authenticated >= target {
                return Ok(stats.authenticated);
            }
            if self.mode == Mode::Plain {
                // Greeted means bound: a shortfall is a connection lost since.
                return Err(format!(
                    "the hub has {} authenticated connections, expected {target}",
                    stats.authenticated
                ));
            }
            Timer::after(POLL).await;
        }
    }

    /// Fails if the hub closed any of the pool's clients during the run.
    pub fn check_none_closed(&self, pool: &Pool) -> Result<(), String> {
        if pool.closed() > 0 {
            self.report.set("clients_closed", pool.closed());
            return Err(format!(
                "the hub closed {} clients during the run; first errors: {}",
                pool.closed(),
                pool.errors().join("; ")
            ));
        }
        Ok(())
    }

    /// Adds `key` = `cpu_us` / floor to the report when --floor-us is given.
    pub fn ratio_to_floor(&self, key: &str, cpu_us: f64) {
        if let Some(floor) = self.floor_us {
            self.report.num(key, cpu_us / floor, 2);
        }
    }
}

/// The clients' credential: plain uids, or tokens minted with the hub's secret
/// (from a file or the environment, never from a flag value).
pub fn credential(mode: Mode, secret_file: Option<&Path>) -> Result<Credential, String> {
    match mode {
        Mode::Plain => Ok(Credential::Plain),
        Mode::Token => {
            let raw = match secret_file {
                Some(path) => std::fs::read(path)
                    .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?,
                None => std::env::var(SECRET_ENV)
                    .map_err(|_| format!("--mode token needs --secret-file PATH or {SECRET_ENV}"))?
                    .into_bytes(),
            };
            let secret = Secret::from_file_contents(&raw).ok_or("the token secret is empty")?;
            Ok(Credential::Token {
                secret,
                exp: unix_now() + TOKEN_SECS,
            })
        }
    }
}
