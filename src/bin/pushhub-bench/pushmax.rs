//! `pushmax`: push throughput. With N clients open (and reading), pushes to
//! random uids are pipelined as fast as the hub takes them, with at most
//! `--window` requests unanswered (with `--peer`, in the original form,
//! answered `ok` or `fail`). Reported: pushes/s, the hub's CPU per push, and
//! whether every client received exactly what the replies say it was sent:
//! each push carries its sequence number, which must reach the uid it was
//! sent to, once.
//!
//! The clock runs from the first request to the moment the last reply is in
//! and every delivered message has arrived: the hub's whole work.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use smol::Timer;
use smol::future::try_zip;

use crate::args::PushMaxArgs;
use crate::client::Listener;
use crate::clock::now_ns;
use crate::common::Env;
use crate::notify::Notify;
use crate::report::say;
use crate::rng::Rng;
use crate::textport::pushed_data;

/// Most lines written in one system call.
const BATCH: u32 = 256;

/// How long delivered messages may take to arrive after the last reply.
const DRAIN: Duration = Duration::from_secs(5);

struct Tally {
    received: RefCell<Vec<u32>>,
    expected: RefCell<Vec<u32>>,
    /// The uid index of each push, by sequence number, as sent.
    target: RefCell<Vec<u32>>,
    /// Whether each push arrived.
    seen: RefCell<Vec<bool>>,
    arrived: Cell<u64>,
    duplicates: Cell<u64>,
    misrouted: Cell<u64>,
    garbled: Cell<u64>,
    changed: Notify,
}

impl Listener for Tally {
    fn on_text(&self, conn: u32, prefix: &[u8], _len: u64, _now_ns: u64) {
        if let Some(count) = self.received.borrow_mut().get_mut(conn as usize) {
            *count += 1;
        }
        self.arrived.set(self.arrived.get() + 1);
        let seq = pushed_data(prefix).and_then(|data| data.parse::<usize>().ok());
        let mut seen = self.seen.borrow_mut();
        match seq.filter(|&seq| seq < seen.len()) {
            None => self.garbled.set(self.garbled.get() + 1),
            Some(seq) if seen[seq] => self.duplicates.set(self.duplicates.get() + 1),
            Some(seq) => {
                seen[seq] = true;
                if self.target.borrow().get(seq) != Some(&conn) {
                    self.misrouted.set(self.misrouted.get() + 1);
                }
            }
        }
        self.changed.notify();
    }
}

pub async fn run(env: Rc<Env>, a: &PushMaxArgs) -> Result<(), String> {
    measure(&env, a.n, a.pushes, a.window).await
}

/// The measurement itself, also run by `history` (with history on and off):
/// `n` clients, `pushes` pushes to random ones, `window` in flight.
pub async fn measure(env: &Env, n: u32, pushes: u32, window: u32) -> Result<(), String> {
    let hub = env.hub()?;
    if n == 0 || pushes == 0 || window == 0 {
        return Err("--n, --pushes and --window must be at least 1".into());
    }
    let report = &env.report;
    report.set("n", n);
    report.set("window", window);
    let tally = Rc::new(Tally {
        received: RefCell::new(vec![0; n as usize]),
        expected: RefCell::new(vec![0; n as usize]),
        target: RefCell::new(Vec::with_capacity(pushes as usize)),
        seen: RefCell::new(vec![false; pushes as usize]),
        arrived: Cell::new(0),
        duplicates: Cell::new(0),
        misrouted: Cell::new(0),
        garbled: Cell::new(0),
        changed: Notify::default(),
    });
    let mut backend = env.backend().await?;
    let pool = env.open_clients(n, tally.clone(), &mut backend).await?;
    let (requests, mut replies) = backend.split();
    say(&format!(
        "pipelining {pushes} pushes to {n} clients, window {window}"
    ));

    let form = env.push_form();
    let acked = Cell::new(0u32);
    let room = Notify::default();
    let (ok, fail, delivered_total) = (Cell::new(0u64), Cell::new(0u64), Cell::new(0u64));
    let cpu0 = hub.cpu_ns()?;
    let extras0 = env.extras_cpu_ns()?;
    let steal0 = crate::proc::steal_ns();
    let t0 = now_ns();
    let sender = async {
        let mut rng = Rng::new(t0 ^ 0xfeed);
        let mut lines = Vec::with_capacity(BATCH as usize * 64);
        let mut sent = 0u32;
        while sent < pushes {
            room.until(|| sent - acked.get() < window).await;
            let k = (window - (sent - acked.get()))
                .min(pushes - sent)
                .min(BATCH);
            lines.clear();
            for seq in sent..sent + k {
                let uid = rng.below(n);
                tally.target.borrow_mut().push(uid);
                form.write(&mut lines, uid, format_args!("{seq}"));
            }
            requests.send(&lines).await?;
            sent += k;
        }
        Ok::<(), String>(())
    };
    let reader = async {
        // Replies come in the order of the requests.
        for seq in 0..pushes as usize {
            let got = form.delivered(replies.next().await?)?;
            let uid = *tally
                .target
                .borrow()
                .get(seq)
                .ok_or("a reply to no request")?;
            if got >= 1 {
                ok.set(ok.get() + 1);
                delivered_total.set(delivered_total.get() + got);
                tally.expected.borrow_mut()[uid as usize] += got as u32;
            } else {
                fail.set(fail.get() + 1);
            }
            acked.set(acked.get() + 1);
            room.notify();
        }
        Ok::<(), String>(())
    };
    let replied = Cell::new(0u64);
    let outcome = env
        .bounded(async {
            // Either side failing ends both: the sender waits for room that
            // only the reader makes.
            try_zip(sender, reader).await?;
            replied.set(now_ns());
            let drained = smol::future::or(
                async {
                    tally
                        .changed
                        .until(|| tally.arrived.get() >= delivered_total.get())
                        .await;
                    true
                },
                async {
                    Timer::after(DRAIN).await;
                    false
                },
            )
            .await;
            Ok(drained)
        })
        .await
        .unwrap_or_else(|| Err(env.timed_out()));
    let done = now_ns();
    // Checked after `outcome`: a hub that died is better told by what the run
    // saw than by a missing /proc entry.
    let cpu_ns = hub.cpu_ns().map(|c| c.saturating_sub(cpu0));
    env.report_steal("steal_ms", steal0);
    let extras = env.report_extras("cpu_us_per_push", &extras0, f64::from(acked.get().max(1)));

    // What was answered, whether or not the run finished.
    report.set("pushes", acked.get());
    if acked.get() > 0 {
        let pushes = f64::from(acked.get());
        report.num("pushes_per_s", pushes / ((done - t0) as f64 / 1e9), 0);
        if let Ok(cpu_ns) = cpu_ns {
            let cpu_us = cpu_ns as f64 / 1e3 / pushes;
            report.num("hub_cpu_us_per_push", cpu_us, 3);
            report.num("hub_cpu_s_per_1000", cpu_us / 1e3, 5);
            env.ratio_to_floor("push_ratio_to_floor", cpu_us);
        }
        if replied.get() > 0 {
            report.num(
                "replies_per_s",
                pushes / ((replied.get() - t0) as f64 / 1e9),
                0,
            );
        }
    }
    report.set("ok", ok.get());
    report.set("fail", fail.get());
    report.set("delivered", delivered_total.get());
    report.set("received", tally.arrived.get());
    let short = {
        let received = tally.received.borrow();
        let expected = tally.expected.borrow();
        received
            .iter()
            .zip(expected.iter())
            .filter(|(r, e)| r != e)
            .count()
    };
    report.set("clients_short", short);
    let (duplicates, misrouted, garbled) = (
        tally.duplicates.get(),
        tally.misrouted.get(),
        tally.garbled.get(),
    );
    for (key, count) in [
        ("duplicates", duplicates),
        ("misrouted", misrouted),
        ("garbled", garbled),
    ] {
        if count > 0 {
            report.set(key, count);
        }
    }
    let drained = outcome?;
    cpu_ns?;
    extras?;
    env.check_none_closed(&pool)?;
    if !drained || short > 0 || fail.get() > 0 || duplicates + misrouted + garbled > 0 {
        return Err(format!(
            "{} of {} delivered messages arrived; {short} clients did not get exactly their \
             pushes; {} pushes to online uids answered delivered:0 (or fail); {duplicates} \
             duplicates, {misrouted} misrouted, {garbled} unreadable",
            tally.arrived.get(),
            delivered_total.get(),
            fail.get()
        ));
    }
    Ok(())
}
