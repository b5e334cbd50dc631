//! `floor`: what one delivered message costs the kernel, measured in this
//! process, as the yardstick for the hub's CPU per message.
//!
//! N loopback TCP connections to a listener of our own. The connecting ends are
//! the receivers: in a child process (`floor-peer`, so that N can be as large
//! as the hub's connection count under a per-process open-files limit), in a
//! smol executor, each waits in epoll (`Async::read`) as a real client does.
//! The accepted ends are the senders: this process does a blocking `write` of
//! `--size` bytes to each, round-robin, one round at a time, and waits until
//! every receiver has read the round before the next one, so that the receivers
//! are always asleep in epoll when the data arrives and the wake-up is charged
//! to the sender, as it is in the hub.
//! Reported: the sending thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, around
//! the send loops only) per send.
//!
//! The sender and the receivers are pinned to two different CPUs when the
//! process may use two: the hub and its clients run on different cores, and a
//! wake-up across cores costs the sender more than one on its own core (where
//! the woken reader also preempts it).

use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::rc::Rc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
use smol::io::AsyncReadExt;
use smol::{Async, LocalExecutor};

use crate::args::{FloorArgs, FloorPeerArgs};
use crate::clock::{now_ns, thread_cpu_ns};
use crate::net;
use crate::report::{Report, say};

/// How long the receivers get to exit on their own once the senders close.
const PEER_EXIT: Duration = Duration::from_secs(2);

pub fn main(a: &FloorArgs) -> ExitCode {
    let report = Report::new("floor");
    let outcome = measure(a, &report);
    report.finish(outcome)
}

fn measure(a: &FloorArgs, report: &Report) -> Result<(), String> {
    if a.n == 0 || a.size == 0 || a.rounds == 0 {
        return Err("--n, --size and --rounds must be at least 1".into());
    }
    // One end of every connection lives in this process, the other in the peer.
    net::check_fits(a.n)?;
    let deadline = Instant::now() + Duration::from_secs(a.timeout_secs);
    report.set("n", a.n);
    report.set("size", a.size);

    let cpus = two_cpus();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut command = Command::new(exe);
    command
        .args(["floor-peer", "--connect", &addr.to_string()])
        .args(["--n", &a.n.to_string(), "--size", &a.size.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some((_, receiver_cpu)) = cpus {
        command.args(["--cpu", &receiver_cpu.to_string()]);
    }
    let mut peer = Peer::spawn(&mut command, deadline)?;
    let mut rounds_done = BufReader::new(peer.child.stdout.take().ok_or("no pipe to the peer")?);
    // Declared after `peer`, so dropped before it: the receivers see EOF and
    // exit on their own before the peer is reaped.
    let mut senders = accept_all(&listener, a.n, &mut peer.child, deadline)?;
    // Every receiver is connected once the peer says so (round 0).
    expect_round(&mut rounds_done, 0)?;

    match cpus {
        Some((sender_cpu, receiver_cpu)) => {
            pin(sender_cpu)?;
            report.set("sender_cpu", sender_cpu);
            report.set("receiver_cpu", receiver_cpu);
        }
        None => {
            say("only one CPU allowed: the sender and the receivers share it (not the hub's case)");
            report.set("threads_share_a_cpu", true);
        }
    }

    let payload = vec![b'f'; a.size];
    let mut cpu_ns = 0u64;
    let mut wall_ns = 0u64;
    // Round 0 warms up (first wake-ups, page faults); rounds 1..=rounds count.
    for round in 0..=a.rounds {
        let (c0, w0) = (thread_cpu_ns(), now_ns());
        for sender in &mut senders {
            sender
                .write_all(&payload)
                .map_err(|e| format!("send: {e}"))?;
        }
        let (c1, w1) = (thread_cpu_ns(), now_ns());
        if round > 0 {
            cpu_ns += c1 - c0;
            wall_ns += w1 - w0;
        }
        expect_round(&mut rounds_done, u64::from(round) + 1)
            .map_err(|e| format!("{e} (round {round}; --timeout-secs {})", a.timeout_secs))?;
    }

    let sends = u64::from(a.rounds) * u64::from(a.n);
    let cpu_us = cpu_ns as f64 / 1e3 / sends as f64;
    report.set("rounds", a.rounds);
    report.set("sends", sends);
    report.num("cpu_us_per_send", cpu_us, 3);
    report.num("wall_us_per_send", wall_ns as f64 / 1e3 / sends as f64, 3);
    say(&format!(
        "{sends} sends of {} bytes to receivers waiting in epoll: {cpu_us:.3} µs CPU each",
        a.size
    ));
    Ok(())
}

/// The receivers' process (`floor-peer`). It cannot outlive the run: a
/// watchdog thread kills it at the deadline (the sender may be blocked in a
/// write to it or a read of its report), and dropping this reaps it.
struct Peer {
    child: Child,
    watchdog: Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>,
}

impl Peer {
    fn spawn(command: &mut Command, deadline: Instant) -> Result<Peer, String> {
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start the receivers: {e}"))?;
        let pid = Pid::from_child(&child);
        let (stop, stopped) = mpsc::channel::<()>();
        let left = deadline.saturating_duration_since(Instant::now());
        let watchdog = thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(left) {
                // Not reaped yet (only `drop` reaps, after stopping this
                // thread), so the pid is still the peer's.
                let _ = kill_process(pid, Signal::KILL);
            }
        });
        Ok(Peer {
            child,
            watchdog: Some((stop, watchdog)),
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Stop the watchdog first: once the peer is reaped, its pid may be
        // given to another process.
        if let Some((stop, watchdog)) = self.watchdog.take() {
            drop(stop);
            let _ = watchdog.join();
        }
        let grace = Instant::now() + PEER_EXIT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < grace {
            thread::sleep(Duration::from_millis(10));
        }
        // Both are no-ops on a peer that already exited and was reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Accepts the peer's `n` connections, unless the peer dies or time runs out.
fn accept_all(
    listener: &TcpListener,
    n: u32,
    peer: &mut Child,
    deadline: Instant,
) -> Result<Vec<TcpStream>, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut senders = Vec::with_capacity(n as usize);
    while senders.len() < n as usize {
        match listener.accept() {
            Ok((sender, _)) => {
                sender.set_nonblocking(false).map_err(|e| e.to_string())?;
                // As the hub does with its clients.
                sender.set_nodelay(true).map_err(|e| e.to_string())?;
                senders.push(sender);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = peer.try_wait() {
                    return Err(format!(
                        "the receivers exited ({status}) after {} connections",
                        senders.len()
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!("timed out after {} connections", senders.len()));
                }
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    Ok(senders)
}

/// Reads the peer's next line, which must say that `round` is complete.
fn expect_round(lines: &mut impl BufRead, round: u64) -> Result<(), String> {
    let mut line = String::new();
    match lines.read_line(&mut line) {
        Ok(0) | Err(_) => Err("the receivers are gone".into()),
        Ok(_) if line.trim() == round.to_string() => Ok(()),
        Ok(_) => Err(format!(
            "the receivers reported {:?}, expected round {round}",
            line.trim()
        )),
    }
}

/// The `floor-peer` process: connects the receivers, says "0" once they are
/// all connected, then one line per round that every receiver has read.
pub fn peer_main(a: &FloorPeerArgs) -> ExitCode {
    if let Some(cpu) = a.cpu {
        let _ = pin(cpu);
    }
    let dst = match net::loopback_v4(a.connect) {
        Ok(dst) => dst,
        Err(e) => {
            eprintln!("pushhub-bench floor-peer: {e}");
            return ExitCode::from(2);
        }
    };
    // From several source addresses, as the load benches do: one address runs
    // out of ephemeral ports after a few back-to-back runs.
    let connected = smol::block_on(async {
        let mut receivers = Vec::with_capacity(a.n as usize);
        for i in 0..a.n {
            receivers.push(net::connect_from(net::source(i, 8), dst, None).await?);
        }
        Ok::<_, std::io::Error>(receivers)
    });
    let receivers = match connected {
        Ok(receivers) => receivers,
        Err(e) => {
            eprintln!("pushhub-bench floor-peer: connect: {e}");
            return ExitCode::from(1);
        }
    };
    let (done_tx, done_rx) = mpsc::channel::<u64>();
    let round_bytes = u64::from(a.n) * a.size as u64;
    let receiving = thread::spawn(move || receive(receivers, round_bytes, done_tx));
    let mut out = std::io::stdout().lock();
    if writeln!(out, "0").and_then(|()| out.flush()).is_err() {
        return ExitCode::from(1);
    }
    for round in done_rx {
        if writeln!(out, "{round}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    let _ = receiving.join();
    ExitCode::SUCCESS
}

/// Two CPUs this process may run on, if it may run on two.
fn two_cpus() -> Option<(usize, usize)> {
    let allowed = sched_getaffinity(None).ok()?;
    let mut cpus = (0..CpuSet::MAX_CPU).filter(|&cpu| allowed.is_set(cpu));
    Some((cpus.next()?, cpus.next()?))
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).map_err(|e| format!("cannot pin a thread to CPU {cpu}: {e}"))
}

/// The receiver thread: one task per connection, each waiting in epoll. Reports
/// each completed round (every receiver has read it) to the sender.
fn receive(receivers: Vec<Async<TcpStream>>, round_bytes: u64, done: mpsc::Sender<u64>) {
    let ex = LocalExecutor::new();
    let total = Rc::new(Cell::new(0u64));
    let mut tasks = Vec::with_capacity(receivers.len());
    for mut stream in receivers {
        let (total, done) = (Rc::clone(&total), done.clone());
        tasks.push(ex.spawn(async move {
            let mut buf = [0u8; 256];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                total.set(total.get() + n as u64);
                if total.get() % round_bytes == 0 {
                    let _ = done.send(total.get() / round_bytes);
                }
            }
        }));
    }
    smol::block_on(ex.run(async {
        for task in tasks {
            task.await;
        }
    }));
}
