//! `pushhub-bench`: the load generator that measures a running hub.
//!
//! It runs as the hub does, on one thread with a smol `LocalExecutor`, with a
//! minimal WebSocket client of its own, so that the figures reflect the hub and
//! not the generator. Every run is bounded in count and in time
//! (`--timeout-secs`), refuses any address outside 127.0.0.0/8, prints a human
//! summary on stderr and exactly one JSON line on stdout
//! (`{"bench":"<name>", ...}`), and exits 0 only on success (1 on a failure or
//! a timeout, 2 on bad flags).
//!
//! Map:
//! - [`args`]: the flags of every subcommand.
//! - [`common`]: checked common flags, opening clients, waiting for the hub.
//! - [`client`]: the raw WebSocket client and the pool of them.
//! - [`codec`]: client frames out, the streaming decoder of server frames in.
//! - [`net`]: loopback checks, sockets bound to source addresses, fd limits.
//! - [`stream`]: a client's plain or TLS (`--tls`, wss) byte stream.
//! - [`textport`]: the pipelined text-port connection.
//! - [`proc`]: the hub's RSS and CPU time from /proc (and those of the
//!   processes measured beside it, `--extra-pid`).
//! - [`redis`]: a cluster's redis-server memory (`--redis`).
//! - [`stats`]: percentiles and slopes; [`rng`]: uid choice; [`clock`]: clocks.
//! - [`notify`]: task wake-ups; [`report`]: the JSON line and the summary.
//! - [`channels`]: which client is in which channel, and the pipelined
//!   `subscribe` requests that put them there.
//! - [`v1`]: the v1 client (subprotocol `pushhub.v1`), for positions.
//! - one module per subcommand: [`conns`] (with [`worker`]), [`push`],
//!   [`pushmax`], [`broadcast`] (and `publish`, its channel mode), [`subs`],
//!   [`slow`], [`history`], [`replay`], [`floor`], [`pushsvc`] (the push
//!   services' memory and CPU in the hub); [`chart`] draws the RSS chart
//!   from `conns` results, [`versus`] the side-by-side table of
//!   bench/versus.sh's runs against uWebSockets.js.
//! - `--peer`: the benches that also drive a server of the original's
//!   protocol that is not pushhub ([`PEER_BENCHES`]).
//! - [`sink`]: not a bench but a local stand-in for the push services (APNs,
//!   FCM, Web Push) that `pushsvc` measures the hub against.
#![forbid(unsafe_code)]

mod args;
mod broadcast;
mod channels;
mod chart;
mod client;
mod clock;
mod codec;
mod common;
mod conns;
mod floor;
mod history;
mod net;
mod notify;
mod proc;
mod push;
mod pushmax;
mod pushsvc;
mod redis;
mod replay;
mod report;
mod rng;
mod sink;
mod slow;
mod stats;
mod stream;
mod subs;
mod textport;
mod v1;
mod versus;
mod worker;

use std::future::Future;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use smol::{LocalExecutor, Timer};

use crate::args::{Cmd, CommonArgs, TopLevel};
use crate::broadcast::Fan;
use crate::common::Env;
use crate::report::Report;

/// How long past --timeout-secs a bench may take to report before it is cut off.
const OUTER_GRACE: Duration = Duration::from_secs(5);

/// The benches that need nothing of pushhub's own (`stats`, `online`,
/// channels, history), and so take `--peer`.
const PEER_BENCHES: [&str; 4] = ["conns", "broadcast", "push", "pushmax"];

fn main() -> ExitCode {
    // Fix the clock's origin before anything is timed.
    clock::now_ns();
    let top: TopLevel = match pushhub::config::from_command_line() {
        Ok(top) => top,
        Err(code) => return code,
    };
    pushhub::server::fd_limit::raise();
    match top.cmd {
        Cmd::Conns(a) => run_bench("conns", a.common(), async move |env| {
            conns::run(env, &a).await
        }),
        Cmd::Push(a) => run_bench("push", a.common(), async move |env| {
            push::run(env, &a).await
        }),
        Cmd::PushMax(a) => run_bench("pushmax", a.common(), async move |env| {
            pushmax::run(env, &a).await
        }),
        Cmd::Broadcast(a) => run_bench("broadcast", a.common(), async move |env| {
            broadcast::run(env, &a.fan(), Fan::Broadcast).await
        }),
        Cmd::Publish(a) => run_bench("publish", a.common(), async move |env| {
            broadcast::run(env, &a.fan(), Fan::Publish).await
        }),
        Cmd::Subs(a) => run_bench("subs", a.common(), async move |env| {
            subs::run(env, &a).await
        }),
        Cmd::Slow(a) => run_bench("slow", a.common(), async move |env| {
            slow::run(env, &a).await
        }),
        Cmd::History(a) => run_bench("history", a.common(), async move |env| {
            history::run(env, &a).await
        }),
        Cmd::Replay(a) => run_bench("replay", a.common(), async move |env| {
            replay::run(env, &a).await
        }),
        Cmd::PushSvc(a) => run_bench("pushsvc", a.common(), async move |env| {
            pushsvc::run(env, &a).await
        }),
        Cmd::Sink(a) => sink::main(&a),
        Cmd::Floor(a) => floor::main(&a),
        Cmd::Chart(a) => chart::main(&a),
        Cmd::VersusTable(a) => versus::main(&a),
        Cmd::FloorPeer(a) => floor::peer_main(&a),
        Cmd::Worker(a) => worker::main(&a),
    }
}

/// Runs one hub bench on this thread, bounded by `--timeout-secs`, then prints
/// the summary and the JSON line.
fn run_bench<F, Fut>(name: &str, args: CommonArgs, bench: F) -> ExitCode
where
    F: FnOnce(Rc<Env>) -> Fut,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    if args.peer && !PEER_BENCHES.contains(&name) {
        eprintln!(
            "pushhub-bench {name}: --peer is for {} only: this bench needs pushhub's own commands",
            PEER_BENCHES.join(", ")
        );
        return ExitCode::from(2);
    }
    let ex = Rc::new(LocalExecutor::new());
    let report = Rc::new(Report::new(name));
    let env = match Env::new(&args, Rc::clone(&ex), Rc::clone(&report)) {
        Ok(env) => Rc::new(env),
        Err(e) => {
            eprintln!("pushhub-bench {name}: {e}");
            return ExitCode::from(2);
        }
    };
    report.set("mode", env.mode.name());
    if let Some(label) = &args.label {
        report.set("label", label.as_str());
    }
    if args.tls {
        report.set("tls", true);
    }
    if args.peer {
        report.set("peer", true);
    }
    // The bench is a task of its own: the future given to `run` is polled
    // again whenever the executor wakes up for any task, and a bench polled
    // for nothing would retry its reads (one failed system call each time).
    let task = ex.spawn(bench(Rc::clone(&env)));
    // Benches stop their own waits at --timeout-secs and report what they
    // measured (Env::bounded); this guard only catches what they do after.
    let limit = Duration::from_secs(args.timeout_secs) + OUTER_GRACE;
    let outcome = smol::block_on(ex.run(smol::future::or(task, async {
        Timer::after(limit).await;
        Err(env.timed_out())
    })));
    report.finish(outcome)
}
