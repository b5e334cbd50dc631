//! `replay`: a reconnect storm of v1 clients ([`crate::v1`]). Three waves
//! and the messages between them, against one hub:
//!
//! 1. **Join.** N clients `u0..u{n-1}` connect and `auth` (with `--via
//!    publish`, then `sub` to c0), and note the positions the answers give.
//!    Then they all leave (their sockets closed), and the hub is waited for
//!    until it holds no connection.
//! 2. **The messages they miss.** The backend pushes K messages to each uid
//!    (`--via push`, N×K messages, a stream each) or publishes K to c0
//!    (`--via publish`, K messages, one stream whose frames every replay
//!    shares), pipelined; nobody is connected, so only the history keeps them.
//! 3. **Storm 0.** All reconnect at once without `since`: nothing replayed.
//!    The baseline: the cost of N reconnects arriving together, found after
//!    the messages, as the storm finds the hub. They leave again.
//! 4. **The storm.** All reconnect at once with `since`. A client is done
//!    once it has its answers and, for each stream recovered, every message
//!    it missed (checked in order against the positions). With `--stall`,
//!    each client stops reading once it has its answers (on a socket with
//!    SO_RCVBUF `--rcvbuf`), and the hub's RSS and the kernel's TCP memory
//!    are read `--settle-ms` after the last answer: every replay then waits
//!    unread, in the hub's queues or in the kernel. Then they read the rest.
//!
//! "At once": every client's task starts together, `--concurrency` of them
//! in the TCP connect and upgrade at a time (the listen backlog is the
//! kernel's 4096 at most; `ListenOverflows` is reported).
//!
//! Reported per wave: the time until the last client is done (and p50, p99),
//! clients recovered and told `recovered:false`, the messages replayed (as
//! the clients counted them, and the hub's `replayed`), the hub's CPU, and
//! its RSS before, at its peak (sampled every `--sample-ms`) and after.
//! The storm's CPU and peak RSS above storm 0's are the recovery's own, also
//! per replayed message: storm 0 left the memory of N connections free for
//! the storm's. `--expect` says what every client of the storm must be
//! told; anything else fails the run.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use pushhub::hub::Pos;
use smol::Timer;
use smol::lock::Semaphore;

use crate::args::{Expect, ReplayArgs, Via};
use crate::channels::name;
use crate::client::Credential;
use crate::clock::{ms, now_ns, thread_cpu_ns};
use crate::common::Env;
use crate::net;
use crate::notify::Notify;
use crate::proc::{HubProc, tcp_ext, tcp_kernel_bytes};
use crate::report::{Report, say};
use crate::stats::Summary;
use crate::textport::{Backend, Stats, delivered, publish_line, push_line};
use crate::v1::{Incoming, Kind, Since, V1Conn};

/// Requests per pipelined write while sending what the clients miss.
const SEND_CHUNK: usize = 5000;

/// Error messages kept for the report; the rest are only counted.
const MAX_ERRORS_KEPT: usize = 8;

/// Where a client stands: its uid's and the broadcasts' positions, and the
/// channel's (`--via publish`).
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    since: Since,
    ch: Option<Pos>,
}

/// What one client of a wave saw.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    done_ns: u64,
    /// Every stream it asked about was recovered.
    recovered: bool,
    /// At least one was answered `recovered:false`.
    gap: bool,
    replayed: u64,
    /// Messages not at the position expected next in their stream.
    misordered: u64,
    /// Where it stands now, from its answers.
    mark: Mark,
}

/// What every client task of a wave shares.
struct Wave {
    env: Rc<Env>,
    via: Via,
    credential: Credential,
    opening: Semaphore,
    /// `--stall`: clients stop reading once they have their answers, until
    /// the wave resumes them; with this SO_RCVBUF.
    stall: Option<Option<usize>>,
    seen: RefCell<Vec<Seen>>,
    conns: RefCell<Vec<V1Conn>>,
    stalled: RefCell<Vec<(u32, V1Conn, Follow)>>,
    answered: Cell<u32>,
    done: Cell<u32>,
    failed: Cell<u32>,
    errors: RefCell<Vec<String>>,
    changed: Notify,
}

/// A stream as one client follows it during a wave.
#[derive(Debug, Default)]
struct Track {
    /// The position the next message must follow.
    last: Option<Pos>,
    /// Messages to come, once the answer said.
    expect: Option<u64>,
    got: u64,
}

impl Track {
    fn new(since: Option<Pos>) -> Track {
        Track {
            last: since,
            ..Track::default()
        }
    }

    /// The answer came: `recovered` for a `since` (if one was given) and
    /// the stream's position now.
    fn answered(&mut self, recovered: Option<bool>, now: Option<Pos>, seen: &mut Seen) {
        self.expect = Some(match (recovered, self.last, now) {
            (Some(true), Some(since), Some(now)) => now.offset.saturating_sub(since.offset),
            (Some(false), _, _) => {
                seen.gap = true;
                0
            }
            _ => 0,
        });
        if recovered == Some(false) {
            self.last = now;
        }
    }

    fn message(&mut self, pos: Option<Pos>, seen: &mut Seen) {
        self.got += 1;
        let follows = match (self.last, pos) {
            (Some(last), Some(pos)) => pos.epoch == last.epoch && pos.offset == last.offset + 1,
            _ => false,
        };
        if self.expect.is_none() || !follows {
            seen.misordered += 1;
        }
        self.last = pos.or(self.last);
    }

    fn complete(&self) -> bool {
        self.expect.is_some_and(|e| self.got >= e)
    }
}

/// One client's way through its answers and what it missed.
#[derive(Debug)]
struct Follow {
    publish: bool,
    /// It gave positions (`since`): a reconnect, not the join.
    recovering: bool,
    uid: Track,
    all: Track,
    ch: Track,
    welcomed: bool,
    subbed: bool,
    seen: Seen,
}

impl Follow {
    fn new(mark: Option<Mark>, publish: bool) -> Follow {
        let since = mark.map(|m| m.since).unwrap_or_default();
        Follow {
            publish,
            recovering: mark.is_some(),
            uid: Track::new(since.uid),
            all: Track::new(since.all),
            ch: Track::new(mark.and_then(|m| m.ch)),
            welcomed: false,
            subbed: !publish,
            seen: Seen::default(),
        }
    }

    /// Every answer is in (`welcome`, and `subbed` with --via publish).
    fn answered(&self) -> bool {
        self.welcomed && self.subbed
    }

    fn done(&self) -> bool {
        self.answered()
            && self.uid.complete()
            && self.all.complete()
            && (!self.publish || self.ch.complete())
    }

    fn take(&mut self, frame: Incoming) -> Result<(), String> {
        let seen = &mut self.seen;
        match frame {
            Incoming::Welcome {
                pos,
                recovered_uid,
                recovered_all,
            } => {
                if self.welcomed {
                    return Err("a second welcome".into());
                }
                self.welcomed = true;
                self.uid.answered(recovered_uid, pos.uid, seen);
                self.all.answered(recovered_all, pos.all, seen);
                seen.mark.since = pos;
            }
            Incoming::Subbed { pos, recovered } => {
                if self.subbed {
                    return Err("a subbed not asked for".into());
                }
                self.subbed = true;
                self.ch.answered(recovered, pos, seen);
                seen.mark.ch = pos;
            }
            Incoming::Msg { kind, pos } => {
                let track = match kind {
                    Kind::Uid => &mut self.uid,
                    Kind::All => &mut self.all,
                    Kind::Channel => &mut self.ch,
                };
                track.message(pos, seen);
            }
            Incoming::Error { code, reason } => {
                return Err(format!("the hub answered error {code}: {reason}"));
            }
            Incoming::Closed(code) => {
                return Err(format!("the hub closed the connection (code {code:?})"));
            }
            Incoming::Other => {}
        }
        Ok(())
    }

    /// Reads until done, or (`answers_only`) until the answers are in.
    async fn follow(&mut self, conn: &mut V1Conn, answers_only: bool) -> Result<(), String> {
        while !(self.done() || answers_only && self.answered()) {
            self.take(conn.next().await?)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Seen {
        self.seen.done_ns = now_ns();
        self.seen.replayed = self.uid.got + self.all.got + self.ch.got;
        self.seen.recovered = self.recovering && !self.seen.gap;
        self.seen
    }
}

impl Wave {
    fn new(env: &Rc<Env>, via: Via, n: u32, stall: Option<Option<usize>>) -> Rc<Wave> {
        Rc::new(Wave {
            env: Rc::clone(env),
            via,
            credential: env.credential.clone(),
            opening: Semaphore::new(env.concurrency),
            stall,
            seen: RefCell::new(vec![Seen::default(); n as usize]),
            conns: RefCell::new(Vec::with_capacity(n as usize)),
            stalled: RefCell::new(Vec::new()),
            answered: Cell::new(0),
            done: Cell::new(0),
            failed: Cell::new(0),
            errors: RefCell::new(Vec::new()),
            changed: Notify::default(),
        })
    }

    /// Client `i`'s visit: connect, `auth` (and `sub`) with `mark`'s
    /// positions as `since` if given, and read until it has what it missed
    /// (with --stall, only its answers: the wave resumes it later).
    async fn visit(self: Rc<Self>, i: u32, mark: Option<Mark>) {
        let mut follow = Follow::new(mark, self.via == Via::Publish);
        let stall = self.stall.is_some();
        match self.session(i, mark, &mut follow, stall).await {
            Ok(conn) if stall => {
                self.stalled.borrow_mut().push((i, conn, follow));
                self.answered.set(self.answered.get() + 1);
            }
            Ok(conn) => self.finished(i, conn, follow),
            Err(e) => self.fail(i, e),
        }
        self.changed.notify();
    }

    /// A stalled client reads again, to the end of what it missed.
    async fn resume(self: Rc<Self>, i: u32, mut conn: V1Conn, mut follow: Follow) {
        match follow.follow(&mut conn, false).await {
            Ok(()) => self.finished(i, conn, follow),
            Err(e) => self.fail(i, e),
        }
        self.changed.notify();
    }

    fn finished(&self, i: u32, conn: V1Conn, follow: Follow) {
        self.seen.borrow_mut()[i as usize] = follow.finish();
        self.conns.borrow_mut().push(conn);
        self.done.set(self.done.get() + 1);
    }

    fn fail(&self, i: u32, e: String) {
        self.failed.set(self.failed.get() + 1);
        let mut errors = self.errors.borrow_mut();
        if errors.len() < MAX_ERRORS_KEPT {
            errors.push(format!("u{i}: {e}"));
        }
    }

    async fn session(
        &self,
        i: u32,
        mark: Option<Mark>,
        follow: &mut Follow,
        answers_only: bool,
    ) -> Result<V1Conn, String> {
        let mut conn = {
            let _permit = self.opening.acquire().await;
            let src = net::source(i, self.env.sources);
            V1Conn::connect(self.env.ws, src, self.stall.flatten()).await?
        };
        let uid = format!("u{i}");
        let since = mark.map(|m| m.since).unwrap_or_default();
        conn.auth(&self.credential, &uid, since).await?;
        if self.via == Via::Publish {
            conn.sub(&name(0), mark.and_then(|m| m.ch)).await?;
        }
        follow.follow(&mut conn, answers_only).await?;
        Ok(conn)
    }
}

/// What a wave measured.
struct Outcome {
    seen: Vec<Seen>,
    conns: Vec<V1Conn>,
    /// When the wave's clients were started, and until the last was done.
    started_ns: u64,
    elapsed_ns: u64,
    hub_cpu_ns: u64,
    gen_cpu_ns: u64,
    rss_before: u64,
    rss_peak: u64,
    rss_after: u64,
    before: Stats,
    after: Stats,
    overflows: Option<u64>,
    /// With --stall: the hub's RSS while every client held its replay unread.
    stalled_rss: Option<u64>,
    /// The kernel's TCP memory before the wave, and (--stall) while stalled.
    kernel_before: Option<u64>,
    stalled_kernel: Option<u64>,
}

/// Runs one wave: every client at once, `marks` as their `since` (none for
/// the join), while the hub's RSS is sampled.
async fn wave(
    env: &Rc<Env>,
    a: &ReplayArgs,
    hub: &HubProc,
    backend: &mut Backend,
    marks: Option<&[Mark]>,
    stall: Option<Option<usize>>,
) -> Result<Outcome, String> {
    let w = Wave::new(env, a.via, a.n, stall);
    let before = backend.stats().await?;
    let rss_before = hub.rss_bytes()?;
    let peak = Cell::new(rss_before);
    let kernel_before = tcp_kernel_bytes();
    let running = Cell::new(true);
    let overflows0 = tcp_ext("ListenOverflows");
    let (cpu0, gen0, t0) = (hub.cpu_ns()?, thread_cpu_ns(), now_ns());
    for i in 0..a.n {
        let mark = marks.map(|m| m[i as usize]);
        env.ex.spawn(Rc::clone(&w).visit(i, mark)).detach();
    }
    let sampler = async {
        while running.get() {
            if let Ok(rss) = hub.rss_bytes() {
                peak.set(peak.get().max(rss));
            }
            Timer::after(Duration::from_millis(a.sample_ms.max(1))).await;
        }
    };
    let (stalled_rss, stalled_kernel) = (Cell::new(None), Cell::new(None));
    let all_in = async {
        if stall.is_some() {
            // Every client has its answers and reads no more: what the hub
            // could not write stays in its queues.
            w.changed
                .until(|| w.answered.get() + w.failed.get() >= a.n)
                .await;
            Timer::after(Duration::from_millis(a.settle_ms)).await;
            stalled_rss.set(hub.rss_bytes().ok());
            stalled_kernel.set(tcp_kernel_bytes());
            for (i, conn, follow) in w.stalled.take() {
                env.ex.spawn(Rc::clone(&w).resume(i, conn, follow)).detach();
            }
        }
        w.changed
            .until(|| w.done.get() + w.failed.get() >= a.n)
            .await;
        running.set(false);
    };
    smol::future::zip(sampler, all_in).await;
    let elapsed_ns = now_ns() - t0;
    let hub_cpu_ns = hub.cpu_ns()?.saturating_sub(cpu0);
    let gen_cpu_ns = thread_cpu_ns().saturating_sub(gen0);
    let rss_after = hub.rss_bytes()?;
    let peak = peak.get().max(rss_after);
    let overflows = overflows0
        .zip(tcp_ext("ListenOverflows"))
        .map(|(a, b)| b - a);
    let after = backend.stats().await?;
    if w.failed.get() > 0 {
        let failures: Vec<String> = after
            .handshake_failures
            .iter()
            .map(|(reason, n)| {
                let before = before.handshake_failures.get(reason).copied().unwrap_or(0);
                format!("{reason} {}", n - before)
            })
            .collect();
        return Err(format!(
            "{} of {} clients failed (the hub refused {} at --max-connections; handshake \
             failures: {}); first errors: {}",
            w.failed.get(),
            a.n,
            after.rejected - before.rejected,
            failures.join(", "),
            w.errors.borrow().join("; ")
        ));
    }
    Ok(Outcome {
        seen: w.seen.take(),
        conns: w.conns.take(),
        started_ns: t0,
        elapsed_ns,
        hub_cpu_ns,
        gen_cpu_ns,
        rss_before,
        rss_peak: peak,
        rss_after,
        before,
        after,
        overflows,
        stalled_rss: stalled_rss.get(),
        kernel_before,
        stalled_kernel: stalled_kernel.get(),
    })
}

impl Outcome {
    fn replayed(&self) -> u64 {
        self.seen.iter().map(|s| s.replayed).sum()
    }

    /// How far the hub's RSS rose above where the wave found it.
    fn rss_growth(&self) -> i64 {
        self.rss_peak as i64 - self.rss_before as i64
    }

    fn hub_replayed(&self) -> u64 {
        self.after.replayed - self.before.replayed
    }

    /// Reports the wave's figures, each key prefixed with `label`.
    fn report(&self, report: &Report, label: &str) {
        let key = |k: &str| format!("{label}_{k}");
        report.num(&key("ms"), ms(self.elapsed_ns), 1);
        let mut done: Vec<u64> = self
            .seen
            .iter()
            .map(|s| s.done_ns.saturating_sub(self.started_ns))
            .collect();
        if let Some(s) = Summary::of(&mut done) {
            report.num(&key("done_p50_ms"), ms(s.p50), 1);
            report.num(&key("done_p99_ms"), ms(s.p99), 1);
        }
        let recovered = self.seen.iter().filter(|s| s.recovered).count();
        let gap = self.seen.iter().filter(|s| s.gap).count();
        report.set(&key("recovered"), recovered);
        report.set(&key("not_recovered"), gap);
        report.set(&key("replayed_received"), self.replayed());
        report.set(&key("hub_replayed"), self.hub_replayed());
        report.set(
            &key("hub_recoveries"),
            self.after.recoveries - self.before.recoveries,
        );
        report.set(
            &key("hub_recoveries_failed"),
            self.after.recoveries_failed - self.before.recoveries_failed,
        );
        let misordered: u64 = self.seen.iter().map(|s| s.misordered).sum();
        report.set(&key("misordered"), misordered);
        report.num(&key("hub_cpu_ms"), ms(self.hub_cpu_ns), 1);
        report.num(
            &key("hub_cpu_us_per_client"),
            self.hub_cpu_ns as f64 / 1e3 / self.seen.len().max(1) as f64,
            2,
        );
        report.num(&key("generator_cpu_ms"), ms(self.gen_cpu_ns), 1);
        report.set(&key("rss_before_bytes"), self.rss_before);
        report.set(&key("rss_peak_bytes"), self.rss_peak);
        report.set(&key("rss_after_bytes"), self.rss_after);
        report.set(&key("rss_growth_bytes"), self.rss_growth());
        if let Some(o) = self.overflows {
            report.set(&key("listen_overflows"), o);
        }
        if let Some(rss) = self.stalled_rss {
            report.set(&key("rss_stalled_bytes"), rss);
        }
        if let (Some(before), Some(stalled)) = (self.kernel_before, self.stalled_kernel) {
            report.set(&key("kernel_tcp_before_bytes"), before);
            report.set(&key("kernel_tcp_stalled_bytes"), stalled);
        }
        say(&format!(
            "{label}: {} clients in {:.0} ms, {recovered} recovered, {gap} not, {} messages \
             replayed (hub: {}), hub CPU {:.0} ms, hub RSS {:.1} → peak {:.1} MiB",
            self.seen.len(),
            ms(self.elapsed_ns),
            self.replayed(),
            self.hub_replayed(),
            ms(self.hub_cpu_ns),
            self.rss_before as f64 / 1048576.0,
            self.rss_peak as f64 / 1048576.0,
        ));
    }

    fn marks(&self) -> Vec<Mark> {
        self.seen.iter().map(|s| s.mark).collect()
    }
}

pub async fn run(env: Rc<Env>, a: &ReplayArgs) -> Result<(), String> {
    let hub = env.hub()?;
    if a.n == 0 {
        return Err("--n must be at least 1".into());
    }
    if env.tls.is_some() {
        return Err("replay speaks v1 over plain ws only".into());
    }
    net::check_fits(a.n)?;
    let report = &env.report;
    report.set("n", a.n);
    report.set("k", a.k);
    report.set("via", a.via.name());
    report.set("size", a.size);
    report.set(
        "expect",
        match a.expect {
            Expect::Recovered => "recovered",
            Expect::Gap => "gap",
        },
    );
    if a.stall {
        report.set("stall", true);
        if let Some(bytes) = a.rcvbuf {
            report.set("rcvbuf", bytes);
        }
    }
    report.set("concurrency", env.concurrency);
    let settle = Duration::from_millis(a.settle_ms);
    let mut backend = env.backend().await?;

    let measured = async {
        env.wait_idle(&mut backend).await?;
        Timer::after(settle).await;
        report.set("idle_rss_bytes", hub.rss_bytes()?);

        // 1. Join, then leave.
        let join = wave(&env, a, hub, &mut backend, None, None).await?;
        let marks = join.marks();
        if marks.iter().any(|m| m.since.uid.is_none()) {
            return Err("the hub gave no positions: is its history off (--history-size 0)?".into());
        }
        if a.via == Via::Publish && marks.iter().any(|m| m.ch.is_none()) {
            return Err("the hub gave no position for c0 (--history-size-channel 0?)".into());
        }
        report.num("join_ms", ms(join.elapsed_ns), 1);
        report.num(
            "join_hub_cpu_us_per_client",
            join.hub_cpu_ns as f64 / 1e3 / f64::from(a.n),
            2,
        );
        report.set("join_rss_peak_bytes", join.rss_peak);
        say(&format!(
            "{} v1 clients joined in {:.0} ms; hub RSS {:.1} → {:.1} MiB",
            a.n,
            ms(join.elapsed_ns),
            join.rss_before as f64 / 1048576.0,
            join.rss_peak as f64 / 1048576.0
        ));
        leave(&env, &mut backend, join).await?;

        // 2. What they miss.
        send_missed(&env, a, hub, &mut backend).await?;
        Timer::after(settle).await;

        // 3. Storm 0: the same reconnects without `since`, so nothing
        // replayed; after the messages, so that it finds the heap as the
        // storm will (they took memory the join had left free).
        let storm0 = wave(&env, a, hub, &mut backend, None, None).await?;
        storm0.report(report, "storm0");
        let (storm0_cpu, storm0_peak) = (storm0.hub_cpu_ns, storm0.rss_peak);
        if storm0.replayed() > 0 {
            return Err("storm 0: clients that asked for nothing got messages".into());
        }
        leave(&env, &mut backend, storm0).await?;
        Timer::after(settle).await;

        // 4. The storm, from the join's positions.
        let stall = a.stall.then_some(a.rcvbuf);
        let storm = wave(&env, a, hub, &mut backend, Some(&marks), stall).await?;
        storm.report(report, "storm");
        // The storm's cost above storm 0's: the recovery's own. On a noisy
        // machine the difference can come out negative for small replays.
        let replayed = storm.replayed();
        let extra_cpu_ns = storm.hub_cpu_ns as f64 - storm0_cpu as f64;
        let extra_rss = storm.rss_peak as i64 - storm0_peak as i64;
        report.num("replay_hub_cpu_ms", extra_cpu_ns / 1e6, 1);
        report.set("replay_rss_over_storm0_bytes", extra_rss);
        report.num(
            "replay_rss_over_storm0_per_client_bytes",
            extra_rss as f64 / f64::from(a.n),
            1,
        );
        if replayed > 0 {
            report.num(
                "hub_cpu_us_per_replayed_message",
                extra_cpu_ns / 1e3 / replayed as f64,
                3,
            );
            report.num(
                "replay_rss_over_storm0_per_replayed_message_bytes",
                extra_rss as f64 / replayed as f64,
                2,
            );
        }
        let result = check(a, &storm);
        leave(&env, &mut backend, storm).await?;
        Timer::after(settle).await;
        report.set("rss_end_idle_bytes", hub.rss_bytes()?);
        result
    };
    env.bounded(measured)
        .await
        .unwrap_or_else(|| Err(env.timed_out()))
}

/// Closes every client of a wave and waits until the hub holds none.
async fn leave(env: &Env, backend: &mut Backend, wave: Outcome) -> Result<(), String> {
    drop(wave.conns);
    env.wait_idle(backend).await
}

/// Sends the K messages each client misses, to nobody online.
async fn send_missed(
    env: &Env,
    a: &ReplayArgs,
    hub: &HubProc,
    backend: &mut Backend,
) -> Result<(), String> {
    let report = &env.report;
    let lines: Vec<Vec<u8>> = match a.via {
        Via::Push => (0..a.k)
            .flat_map(|k| (0..a.n).map(move |i| push_line(&format!("u{i}"), k, a.size)))
            .collect(),
        Via::Publish => (0..a.k)
            .map(|k| publish_line(&name(0), k, a.size))
            .collect(),
    };
    let before = backend.stats().await?;
    let (t0, cpu0) = (now_ns(), hub.cpu_ns()?);
    for chunk in lines.chunks(SEND_CHUNK) {
        backend
            .pipeline(&chunk.concat(), chunk.len(), |reply| {
                match delivered(reply)? {
                    0 => Ok(()),
                    n => Err(format!(
                        "a message to the absent clients reached {n} connections"
                    )),
                }
            })
            .await?;
    }
    let cpu = hub.cpu_ns()?.saturating_sub(cpu0);
    let after = backend.stats().await?;
    report.set("sent", lines.len());
    report.num("send_ms", ms(now_ns() - t0), 1);
    report.num(
        "send_hub_cpu_us_per_msg",
        cpu as f64 / 1e3 / lines.len().max(1) as f64,
        3,
    );
    report.set("history_messages", after.history_messages);
    report.set("history_bytes", after.history_bytes);
    report.set("history_streams", after.history_streams);
    say(&format!(
        "sent {} messages to the absent clients; the history keeps {} ({} before) in {:.1} MiB",
        lines.len(),
        after.history_messages,
        before.history_messages,
        after.history_bytes as f64 / 1048576.0
    ));
    Ok(())
}

/// Whether the storm's clients were told what `--expect` says.
fn check(a: &ReplayArgs, storm: &Outcome) -> Result<(), String> {
    let n = u64::from(a.n);
    let recovered = storm.seen.iter().filter(|s| s.recovered).count() as u64;
    let gap = storm.seen.iter().filter(|s| s.gap).count() as u64;
    let misordered: u64 = storm.seen.iter().map(|s| s.misordered).sum();
    // Either way each client misses K: its uid's K pushes, or c0's K
    // publications.
    let missed = u64::from(a.k);
    if misordered > 0 {
        return Err(format!("{misordered} replayed messages out of order"));
    }
    match a.expect {
        Expect::Recovered => {
            let short = storm.seen.iter().filter(|s| s.replayed != missed).count();
            if recovered != n || short > 0 {
                return Err(format!(
                    "expected every client recovered with its {missed} messages: {recovered} of \
                     {n} recovered, {short} did not get exactly {missed}"
                ));
            }
        }
        Expect::Gap => {
            if gap != n || storm.replayed() > 0 {
                return Err(format!(
                    "expected every client told recovered:false: {gap} of {n} were, {} \
                     messages replayed",
                    storm.replayed()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(offset: u64) -> Pos {
        Pos { epoch: 7, offset }
    }

    #[test]
    fn a_track_expects_what_was_missed_in_order() {
        let mut seen = Seen::default();
        let mut t = Track::new(Some(pos(3)));
        assert!(!t.complete(), "not before the answer");
        t.answered(Some(true), Some(pos(5)), &mut seen);
        assert!(!t.complete());
        t.message(Some(pos(4)), &mut seen);
        t.message(Some(pos(5)), &mut seen);
        assert!(t.complete());
        assert_eq!((seen.misordered, seen.gap), (0, false));
        // A gap, then the stream goes on from the answer's position.
        let mut t = Track::new(Some(pos(3)));
        t.answered(Some(false), Some(pos(900)), &mut seen);
        assert!(seen.gap && t.complete());
        t.message(Some(pos(901)), &mut seen);
        assert_eq!(seen.misordered, 0);
        // Skipping a position, or a message before the answer: misordered.
        let mut seen = Seen::default();
        let mut t = Track::new(Some(pos(3)));
        t.message(Some(pos(4)), &mut seen);
        t.answered(Some(true), Some(pos(6)), &mut seen);
        t.message(Some(pos(6)), &mut seen);
        assert_eq!(seen.misordered, 2);
        // Asked nothing (the join): nothing expected.
        let mut t = Track::new(None);
        t.answered(None, Some(pos(0)), &mut seen);
        assert!(t.complete());
    }
}
