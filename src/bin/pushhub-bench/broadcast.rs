//! `broadcast` and `publish`: fan-out to every client, by a `broadcast`, or
//! by a `publish` to one channel that every client is first subscribed to
//! (server-side, through the text port; see [`crate::channels`]).
//! (a) Single messages, one at a time: the time until the last of the N
//! clients has it; p50 and max over `--repeats`, and the hub's CPU per
//! delivered message. (b) `--burst` messages written in one go: the time until
//! every client has all of them, delivered messages per second, and the hub's
//! CPU per delivered message.
//!
//! The hub keeps each connection's messages in order, so a client's k-th
//! message must be message k: each message's `b<k>-` prefix is checked
//! against that, so that a lost or extra message fails the run instead of
//! being counted as another one. With `--peer`, a broadcast's data is a JSON
//! array holding that tag (see [`broadcast_array_line`]), which pushhub and the
//! original deliver alike.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use smol::future::try_zip;

use crate::args::FanArgs;
use crate::channels::{Plan, check_counts, name, subscribe_round};
use crate::client::Listener;
use crate::clock::{ms, now_ns};
use crate::common::Env;
use crate::notify::Notify;
use crate::report::say;
use crate::stats::Summary;
use crate::textport::{
    Replies, broadcast_array_line, broadcast_index, broadcast_line, delivered, publish_line,
};

/// Uids per subscribe request, in `publish` mode.
const SUBSCRIBE_BATCH: u32 = 500;

/// How the messages reach the clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fan {
    /// `broadcast`: to every authenticated connection.
    Broadcast,
    /// `publish` to channel c0, which every client is subscribed to.
    Publish,
}

impl Fan {
    /// The request line of message `k`; for a `--peer`, one that any server
    /// of the original's protocol delivers as pushhub does.
    fn line(self, k: u32, size: usize, peer: bool) -> Vec<u8> {
        match self {
            Fan::Broadcast if peer => broadcast_array_line(k, size),
            Fan::Broadcast => broadcast_line(k, size),
            Fan::Publish => publish_line(&name(0), k, size),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Fan::Broadcast => "broadcast",
            Fan::Publish => "publication",
        }
    }
}

/// Per message index: how many clients have it and when the last one got it.
struct Fanout {
    clients: u32,
    /// Messages each client has received so far.
    per_client: RefCell<Vec<u32>>,
    have: RefCell<Vec<u32>>,
    last_ns: RefCell<Vec<u64>>,
    /// Messages that were not the one expected next at their client.
    misplaced: Cell<u64>,
    /// Clients the hub closed.
    closed: Cell<u32>,
    changed: Notify,
}

impl Fanout {
    fn new(clients: u32, messages: u32) -> Fanout {
        Fanout {
            clients,
            per_client: RefCell::new(vec![0; clients as usize]),
            have: RefCell::new(vec![0; messages as usize]),
            last_ns: RefCell::new(vec![0; messages as usize]),
            misplaced: Cell::new(0),
            closed: Cell::new(0),
            changed: Notify::default(),
        }
    }

    /// Waits until every client has message `k`; returns when the last one
    /// got it. Fails as soon as a client is closed or gets a message out of
    /// place, since then not every client ever will.
    async fn all_have(&self, k: usize) -> Result<u64, String> {
        self.changed
            .until(|| {
                self.have.borrow().get(k) == Some(&self.clients)
                    || self.closed.get() > 0
                    || self.misplaced.get() > 0
            })
            .await;
        if self.closed.get() > 0 || self.misplaced.get() > 0 {
            return Err(format!(
                "waiting for message {k}: the hub closed {} clients; {} messages were not \
                 the one expected next",
                self.closed.get(),
                self.misplaced.get()
            ));
        }
        Ok(self.last_ns.borrow()[k])
    }
}

impl Listener for Fanout {
    fn on_text(&self, conn: u32, prefix: &[u8], _len: u64, now_ns: u64) {
        let mut per_client = self.per_client.borrow_mut();
        let Some(count) = per_client.get_mut(conn as usize) else {
            return;
        };
        let k = *count as usize;
        *count += 1;
        let mut have = self.have.borrow_mut();
        match have.get_mut(k) {
            // A data size under `b<k>-` carries no index: order is trusted then.
            Some(h) if broadcast_index(prefix).is_none_or(|i| i as usize == k) => {
                *h += 1;
                let mut last = self.last_ns.borrow_mut();
                last[k] = last[k].max(now_ns);
                if *h == self.clients {
                    self.changed.notify();
                }
            }
            _ => {
                self.misplaced.set(self.misplaced.get() + 1);
                self.changed.notify();
            }
        }
    }

    fn on_close(&self, _conn: u32, _code: Option<u16>) {
        self.closed.set(self.closed.get() + 1);
        self.changed.notify();
    }
}

/// Reads `count` replies; each must say it reached all `n` clients. Read
/// while the clients are awaited, so that a refused or short message fails
/// the run at once rather than at --timeout-secs.
async fn check_replies(replies: &mut Replies, count: u32, n: u32) -> Result<(), String> {
    for _ in 0..count {
        let reached = delivered(replies.next().await?)?;
        if reached != u64::from(n) {
            return Err(format!("a message reached {reached} of {n} clients"));
        }
    }
    Ok(())
}

pub async fn run(env: Rc<Env>, a: &FanArgs, fan: Fan) -> Result<(), String> {
    let hub = env.hub()?;
    if a.n == 0 || a.repeats == 0 || a.burst == 0 {
        return Err("--n, --repeats and --burst must be at least 1".into());
    }
    if env.peer && a.size < 4 {
        return Err("--peer sends the data as a JSON array: --size must be at least 4".into());
    }
    let report = &env.report;
    report.set("n", a.n);
    report.set("size", a.size);
    report.set("repeats", a.repeats);
    let fanout = Rc::new(Fanout::new(a.n, a.repeats + a.burst));
    let mut backend = env.backend().await?;
    let pool = env.open_clients(a.n, fanout.clone(), &mut backend).await?;
    if fan == Fan::Publish {
        let plan = Plan::new(a.n, 1, 1)?;
        let t0 = now_ns();
        env.bounded(async {
            subscribe_round(&mut backend, &plan, 0, SUBSCRIBE_BATCH).await?;
            check_counts(&mut backend, &plan).await
        })
        .await
        .unwrap_or_else(|| Err(env.timed_out()))?;
        report.set("channel", name(0));
        report.num("subscribe_ms", ms(now_ns() - t0), 1);
        say(&format!("{} clients subscribed to {}", a.n, name(0)));
    }
    let (requests, mut replies) = backend.split();
    let deliveries = f64::from(a.n);

    let measured = async {
        // (a) One at a time.
        let mut times = Vec::new();
        let cpu0 = hub.cpu_ns()?;
        let extras0 = env.extras_cpu_ns()?;
        let steal0 = crate::proc::steal_ns();
        for k in 0..a.repeats {
            let line = fan.line(k, a.size, env.peer);
            let sent = now_ns();
            requests.send(&line).await?;
            let (last, ()) = try_zip(
                fanout.all_have(k as usize),
                check_replies(&mut replies, 1, a.n),
            )
            .await?;
            times.push(last.saturating_sub(sent));
        }
        let single_cpu_us =
            hub.cpu_ns()?.saturating_sub(cpu0) as f64 / 1e3 / (f64::from(a.repeats) * deliveries);
        if let Some(s) = Summary::of(&mut times) {
            report.num("single_p50_ms", ms(s.p50), 3);
            report.num("single_max_ms", ms(s.max), 3);
            say(&format!(
                "single {} to {}: p50 {:.2} ms, max {:.2} ms, {single_cpu_us:.3} µs hub CPU per delivery",
                fan.noun(),
                a.n,
                ms(s.p50),
                ms(s.max)
            ));
        }
        report.num("single_hub_cpu_us_per_msg", single_cpu_us, 3);
        env.report_extras(
            "single_cpu_us_per_msg",
            &extras0,
            f64::from(a.repeats) * deliveries,
        )?;
        env.ratio_to_floor("single_ratio_to_floor", single_cpu_us);

        // (b) Back to back, in one write.
        let mut lines = Vec::new();
        for k in a.repeats..a.repeats + a.burst {
            lines.extend_from_slice(&fan.line(k, a.size, env.peer));
        }
        report.set("burst", a.burst);
        let cpu0 = hub.cpu_ns()?;
        let extras0 = env.extras_cpu_ns()?;
        let sent = now_ns();
        requests.send(&lines).await?;
        let all_have_all = async {
            let mut last = 0;
            for k in a.repeats..a.repeats + a.burst {
                last = last.max(fanout.all_have(k as usize).await?);
            }
            Ok(last)
        };
        let (last, ()) = try_zip(all_have_all, check_replies(&mut replies, a.burst, a.n)).await?;
        let burst_ns = last.saturating_sub(sent).max(1);
        let burst_msgs = f64::from(a.burst) * deliveries;
        let burst_cpu_us = hub.cpu_ns()?.saturating_sub(cpu0) as f64 / 1e3 / burst_msgs;
        report.num("burst_ms", ms(burst_ns), 3);
        report.num("burst_msgs_per_s", burst_msgs / (burst_ns as f64 / 1e9), 0);
        report.num("burst_hub_cpu_us_per_msg", burst_cpu_us, 3);
        env.report_extras("burst_cpu_us_per_msg", &extras0, burst_msgs)?;
        env.ratio_to_floor("burst_ratio_to_floor", burst_cpu_us);
        env.report_steal("steal_ms", steal0);
        Ok::<(), String>(())
    };
    // Figures are reported as they are measured, so a timeout keeps them.
    env.bounded(measured)
        .await
        .unwrap_or_else(|| Err(env.timed_out()))?;
    env.check_none_closed(&pool)
}
