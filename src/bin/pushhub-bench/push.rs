//! `push`: delivery latency at a fixed rate. With N clients open, push lines
//! `{"cmd":"push","uid":"u<random>","data":"<seq> <send-ns>"}` (with `--peer`,
//! the original form `{"uid":..,"data":..}`, answered `ok` or `fail`) go out
//! on one pipelined text-port connection, line k at t0 + k/rate (a late line
//! goes out at once: none is skipped). Replies are read by their own task, so
//! a slow one never holds the sender. Each client notes when each message
//! arrives; latency = arrival − send time, both on this process's monotonic
//! clock.
//!
//! Reported: p50/p90/p99/max latency, replies `delivered:1` (ok) and
//! `delivered:0` (fail), and pushes acknowledged but never received (lost).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use smol::Timer;
use smol::future::try_zip;

use crate::args::PushArgs;
use crate::client::Listener;
use crate::clock::{instant_at, ms, now_ns};
use crate::common::Env;
use crate::notify::Notify;
use crate::report::say;
use crate::rng::Rng;
use crate::stats::Summary;
use crate::textport::pushed_data;

/// Most lines written in one system call when the sender is behind.
const MAX_BATCH: u64 = 1024;

/// What the clients and the reply reader record, per push sequence number.
#[derive(Default)]
struct Tally {
    /// The uid index each push went to.
    target: RefCell<Vec<u32>>,
    /// Whether the push arrived.
    received: RefCell<Vec<bool>>,
    /// The reply's `delivered`.
    acked: RefCell<Vec<u8>>,
    latencies_ns: RefCell<Vec<u64>>,
    arrived: Cell<u64>,
    duplicates: Cell<u64>,
    misrouted: Cell<u64>,
    garbled: Cell<u64>,
    changed: Notify,
}

impl Listener for Tally {
    fn on_text(&self, conn: u32, prefix: &[u8], _len: u64, now_ns: u64) {
        let Some((seq, sent_ns)) = parse_data(prefix) else {
            self.garbled.set(self.garbled.get() + 1);
            return;
        };
        let mut received = self.received.borrow_mut();
        let Some(slot) = received.get_mut(seq) else {
            self.garbled.set(self.garbled.get() + 1);
            return;
        };
        if *slot {
            self.duplicates.set(self.duplicates.get() + 1);
            return;
        }
        *slot = true;
        if self.target.borrow().get(seq) != Some(&conn) {
            self.misrouted.set(self.misrouted.get() + 1);
        }
        self.latencies_ns
            .borrow_mut()
            .push(now_ns.saturating_sub(sent_ns));
        self.arrived.set(self.arrived.get() + 1);
        self.changed.notify();
    }
}

/// `<seq> <send-ns>`, as the sender writes it, from what a client received
/// (the data, or the original form's line around it).
fn parse_data(text: &[u8]) -> Option<(usize, u64)> {
    let (seq, sent) = pushed_data(text)?.split_once(' ')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

pub async fn run(env: Rc<Env>, a: &PushArgs) -> Result<(), String> {
    if a.n == 0 || a.rate == 0 || a.duration_secs == 0 {
        return Err("--n, --rate and --duration-secs must be at least 1".into());
    }
    let report = &env.report;
    let total = u64::from(a.rate) * u64::from(a.duration_secs);
    report.set("n", a.n);
    report.set("rate", a.rate);
    report.set("duration_secs", a.duration_secs);
    let tally = Rc::new(Tally::default());
    tally.received.replace(vec![false; total as usize]);
    tally.acked.replace(vec![0; total as usize]);
    tally.target.replace(Vec::with_capacity(total as usize));

    let mut backend = env.backend().await?;
    let pool = env.open_clients(a.n, tally.clone(), &mut backend).await?;
    let (requests, mut replies) = backend.split();
    say(&format!(
        "pushing {total} messages at {}/s for {} s",
        a.rate, a.duration_secs
    ));

    let form = env.push_form();
    let cpu0 = env.hub_cpu_ns()?;
    let extras0 = env.extras_cpu_ns()?;
    let steal0 = crate::proc::steal_ns();
    let t0 = now_ns();
    let (max_lag_ns, max_lag_at_ns, last_send_ns) =
        (Cell::new(0u64), Cell::new(0u64), Cell::new(t0));
    let (ok, fail) = (Cell::new(0u64), Cell::new(0u64));
    let sender = async {
        let mut rng = Rng::new(t0 ^ 0x5eed);
        let mut next = 0u64;
        let mut lines = Vec::with_capacity(128 * 1024);
        while next < total {
            let now = now_ns();
            // Line k is due at t0 + k/rate: send every line due by now.
            let due = (u128::from(now - t0) * u128::from(a.rate) / 1_000_000_000) as u64 + 1;
            let due = due.min(total).min(next + MAX_BATCH);
            if due > next {
                let scheduled = t0 + (u128::from(next) * 1_000_000_000 / u128::from(a.rate)) as u64;
                let lag = now.saturating_sub(scheduled);
                if lag > max_lag_ns.get() {
                    max_lag_ns.set(lag);
                    max_lag_at_ns.set(scheduled - t0);
                }
                lines.clear();
                for seq in next..due {
                    let uid = rng.below(a.n);
                    tally.target.borrow_mut().push(uid);
                    // The send time is taken per batch, just before the write.
                    form.write(&mut lines, uid, format_args!("{seq} {now}"));
                }
                requests.send(&lines).await?;
                last_send_ns.set(now_ns());
                next = due;
                continue;
            }
            let at = t0 + (u128::from(next) * 1_000_000_000 / u128::from(a.rate)) as u64;
            Timer::at(instant_at(at)).await;
        }
        Ok::<(), String>(())
    };
    let reader = async {
        for seq in 0..total as usize {
            let n = form.delivered(replies.next().await?)?;
            if n >= 1 {
                ok.set(ok.get() + 1);
            } else {
                fail.set(fail.get() + 1);
            }
            tally.acked.borrow_mut()[seq] = n.min(255) as u8;
        }
        Ok::<(), String>(())
    };
    let replied_ns = Cell::new(0u64);
    let outcome = env
        .bounded(async {
            // Either side failing ends both: a reader stuck on a refused
            // request must not keep the sender going, nor the reverse.
            try_zip(sender, reader).await?;
            replied_ns.set(now_ns());
            // Stragglers: wait until every acknowledged push arrived, or the grace ends.
            smol::future::or(
                tally.changed.until(|| tally.arrived.get() >= ok.get()),
                async {
                    Timer::after(Duration::from_millis(a.grace_ms)).await;
                },
            )
            .await;
            Ok(())
        })
        .await
        .unwrap_or_else(|| Err(env.timed_out()));
    // Read now, checked after `outcome`: a hub that died is better told by
    // what the run saw than by a missing /proc entry.
    let cpu_ns = env.hub_cpu_ns().map(|c| c.saturating_sub(cpu0));
    let sent_f = tally.target.borrow().len().max(1) as f64;
    let extras = env.report_extras("cpu_us_per_push", &extras0, sent_f);
    env.report_steal("steal_ms", steal0);
    // What went out, whether or not the run finished.
    let sent = tally.target.borrow().len() as u64;

    let lost = {
        let received = tally.received.borrow();
        let acked = tally.acked.borrow();
        acked
            .iter()
            .zip(received.iter())
            .filter(|&(&n, &got)| n >= 1 && !got)
            .count()
    };
    report.set("sent", sent);
    report.set("ok", ok.get());
    report.set("fail", fail.get());
    report.set("lost", lost);
    report.set("received", tally.arrived.get());
    let mut latencies = tally.latencies_ns.take();
    if let Some(s) = Summary::of(&mut latencies) {
        report.num("p50_us", s.p50 as f64 / 1e3, 1);
        report.num("p90_us", s.p90 as f64 / 1e3, 1);
        report.num("p99_us", s.p99 as f64 / 1e3, 1);
        report.num("max_us", s.max as f64 / 1e3, 1);
    }
    let send_secs = (last_send_ns.get() - t0) as f64 / 1e9;
    if send_secs > 0.0 {
        report.num("achieved_rate", sent as f64 / send_secs, 0);
    }
    report.num("max_send_lag_us", max_lag_ns.get() as f64 / 1e3, 1);
    report.num("max_send_lag_at_ms", ms(max_lag_at_ns.get()), 1);
    if replied_ns.get() > 0 {
        report.num("replies_done_ms", ms(replied_ns.get() - t0), 1);
    }
    for (key, cell) in [
        ("duplicates", &tally.duplicates),
        ("misrouted", &tally.misrouted),
        ("garbled", &tally.garbled),
    ] {
        if cell.get() > 0 {
            report.set(key, cell.get());
        }
    }
    if let (Some(_), Ok(cpu_ns)) = (&env.hub, &cpu_ns)
        && sent > 0
    {
        let cpu_us = *cpu_ns as f64 / 1e3 / sent as f64;
        report.num("hub_cpu_us_per_push", cpu_us, 2);
        env.ratio_to_floor("push_ratio_to_floor", cpu_us);
    }
    outcome?;
    cpu_ns?;
    extras?;
    env.check_none_closed(&pool)?;
    let (misrouted, garbled) = (tally.misrouted.get(), tally.garbled.get());
    if lost > 0 || fail.get() > 0 || misrouted > 0 || garbled > 0 {
        // Every uid pushed to is online: a `delivered:0` is a failure too.
        return Err(format!(
            "{lost} pushes acknowledged but never received, {} answered delivered:0 \
             (or fail), {misrouted} misrouted, {garbled} unreadable",
            fail.get()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_push_data() {
        assert_eq!(parse_data(b"12 3456"), Some((12, 3456)));
        assert_eq!(parse_data(b"12"), None);
        assert_eq!(parse_data(b"x 1"), None);
        assert_eq!(parse_data(b"login success"), None);
        assert_eq!(
            parse_data(br#"{"uid":"u3","data":"12 3456"}"#),
            Some((12, 3456))
        );
        assert_eq!(parse_data(br#"{"uid":"u3","data":"12"}"#), None);
    }
}
