//! `floor`: what one delivered message costs the kernel, measured in this
//! process, as the yardstick for the hub's CPU per message.
//!
//! N loopback TCP connections to a listener of our own. The connecting ends are
//! the receivers: on a separate thread, in a smol executor, each waits in epoll
//! (`Async::read`) as a real client does. The accepted ends are the senders: the
//! main thread does a blocking `write` of `--size` bytes to each, round-robin,
//! one round at a time, and waits until every receiver has read the round before
//! the next one, so that the receivers are always asleep in epoll when the data
//! arrives and the wake-up is charged to the sender, as it is in the hub.
//! Reported: the sending thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, around
//! the send loops only) per send.
//!
//! The sender and the receivers are pinned to two different CPUs when the
//! process may use two: the hub and its clients run on different cores, and a
//! wake-up across cores costs the sender more than one on its own core (where
//! the woken reader also preempts it).

use std::cell::Cell;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
use smol::io::AsyncReadExt;
use smol::{Async, LocalExecutor};

use crate::args::FloorArgs;
use crate::clock::{now_ns, thread_cpu_ns};
use crate::net;
use crate::report::{Report, say};

pub fn main(a: &FloorArgs) -> ExitCode {
    let report = Report::new("floor");
    let outcome = measure(a, &report);
    if let Some(rss) = pushhub::metrics::rss_bytes() {
        report.set("generator_rss_bytes", rss);
    }
    let code = match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report.set("error", e);
            ExitCode::from(1)
        }
    };
    eprintln!("pushhub-bench floor:\n{}", report.summary());
    println!("{}", report.json_line());
    code
}

fn measure(a: &FloorArgs, report: &Report) -> Result<(), String> {
    if a.n == 0 || a.size == 0 || a.rounds == 0 {
        return Err("--n, --size and --rounds must be at least 1".into());
    }
    // Both ends of every connection live in this process.
    let limit = net::nofile();
    if 2 * u64::from(a.n) + net::RESERVED_FDS > limit {
        return Err(format!(
            "{} sockets do not fit under the open-files limit of {limit}",
            2 * a.n
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(a.timeout_secs);
    report.set("n", a.n);
    report.set("size", a.size);

    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut senders = Vec::with_capacity(a.n as usize);
    let mut receivers = Vec::with_capacity(a.n as usize);
    for _ in 0..a.n {
        let receiver = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        receivers.push(Async::new(receiver).map_err(|e| format!("register: {e}"))?);
        let (sender, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        // As the hub does with its clients.
        sender.set_nodelay(true).map_err(|e| e.to_string())?;
        senders.push(sender);
    }

    let cpus = two_cpus();
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
    let round_bytes = u64::from(a.n) * a.size as u64;
    let (done_tx, done_rx) = mpsc::channel::<u64>();
    let receiving = thread::Builder::new()
        .name("floor-receivers".into())
        .spawn(move || {
            if let Some((_, cpu)) = cpus {
                // Unpinned, the receivers would only run elsewhere more often.
                let _ = pin(cpu);
            }
            receive(receivers, round_bytes, done_tx)
        })
        .map_err(|e| format!("cannot start the receiver thread: {e}"))?;

    let payload = vec![b'f'; a.size];
    let mut cpu_ns = 0u64;
    let mut wall_ns = 0u64;
    // Round 0 warms up (first wake-ups, page faults); rounds 1..=rounds count.
    let outcome = (|| {
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
            let left = deadline.saturating_duration_since(Instant::now());
            match done_rx.recv_timeout(left) {
                Ok(r) if r == u64::from(round) + 1 => {}
                Ok(r) => return Err(format!("receivers reported round {r} during round {round}")),
                Err(_) => {
                    return Err(format!(
                        "timed out in round {round} (--timeout-secs {})",
                        a.timeout_secs
                    ));
                }
            }
        }
        Ok(())
    })();
    // EOF ends every receiver task, then the thread.
    drop(senders);
    let _ = receiving.join();
    outcome?;

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
