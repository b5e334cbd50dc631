//! `subs`: memory and CPU per channel subscription. N clients connect and log
//! in, and the hub's RSS is read once they are idle. Then every client is
//! subscribed server-side, through the text port, to its `--per-client`
//! channels among `--channels` (who is in which: [`crate::channels::Plan`]),
//! one round of one channel per client at a time, requests pipelined with
//! `--batch` uids each. The hub's `stats` must then count N×K subscriptions,
//! and its RSS is read again once idle.
//!
//! Reported: RSS per connection before any subscription, RSS growth per
//! subscription (over all of them, and the least-squares slope over the
//! rounds), the hub's CPU per subscription and the subscription rate.
//!
//! Last, a check: one publication to each of `--check` channels, then a
//! broadcast. The hub keeps each connection's messages in order, so once a
//! client has the broadcast it has every publication meant for it: each must
//! then have exactly the publications of its own channels.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use smol::Timer;

use crate::args::SubsArgs;
use crate::channels::{Plan, check_counts, name, subscribe_round};
use crate::client::Listener;
use crate::clock::{ms, now_ns};
use crate::common::Env;
use crate::notify::Notify;
use crate::report::say;
use crate::stats::least_squares_slope;
use crate::textport::{Backend, broadcast_index, broadcast_line, delivered, publish_line};

/// Bytes of data per message of the check.
const CHECK_SIZE: usize = 32;

/// What each client received during the check. Messages are tagged `b<t>-`:
/// `t` is the channel published to, or `channels` for the closing broadcast.
struct Inbox {
    fence: u32,
    /// Per client: the channels whose publication it got, in order.
    got: RefCell<Vec<Vec<u32>>>,
    /// Per client: whether it has the closing broadcast.
    fenced: RefCell<Vec<bool>>,
    n_fenced: Cell<u32>,
    /// Messages that were neither, or came after the closing broadcast.
    stray: Cell<u64>,
    closed: Cell<u32>,
    changed: Notify,
}

impl Inbox {
    fn new(n: u32, fence: u32) -> Inbox {
        Inbox {
            fence,
            got: RefCell::new(vec![Vec::new(); n as usize]),
            fenced: RefCell::new(vec![false; n as usize]),
            n_fenced: Cell::new(0),
            stray: Cell::new(0),
            closed: Cell::new(0),
            changed: Notify::default(),
        }
    }
}

impl Listener for Inbox {
    fn on_text(&self, conn: u32, prefix: &[u8], _len: u64, _now_ns: u64) {
        let mut fenced = self.fenced.borrow_mut();
        let Some(done) = fenced.get_mut(conn as usize) else {
            return;
        };
        match broadcast_index(prefix) {
            _ if *done => self.stray.set(self.stray.get() + 1),
            Some(t) if t == self.fence => {
                *done = true;
                self.n_fenced.set(self.n_fenced.get() + 1);
                self.changed.notify();
            }
            Some(ch) if ch < self.fence => self.got.borrow_mut()[conn as usize].push(ch),
            _ => self.stray.set(self.stray.get() + 1),
        }
    }

    fn on_close(&self, _conn: u32, _code: Option<u16>) {
        self.closed.set(self.closed.get() + 1);
        self.changed.notify();
    }
}

pub async fn run(env: Rc<Env>, a: &SubsArgs) -> Result<(), String> {
    let hub = env.hub()?;
    let plan = Plan::new(a.n, a.per_client, a.channels)?;
    if a.batch == 0 || a.check == 0 {
        return Err("--batch and --check must be at least 1".into());
    }
    let report = &env.report;
    report.set("n", a.n);
    report.set("per_client", a.per_client);
    report.set("channels", a.channels);
    report.set("batch", a.batch);
    let inbox = Rc::new(Inbox::new(a.n, a.channels));
    let mut backend = env.backend().await?;
    env.wait_idle(&mut backend).await?;
    let idle_rss = hub.rss_bytes()?;
    report.set("idle_rss_bytes", idle_rss);
    let pool = env.open_clients(a.n, inbox.clone(), &mut backend).await?;
    let settle = Duration::from_millis(a.settle_ms);

    let measured = async {
        Timer::after(settle).await;
        let connected = hub.rss_bytes()?;
        report.set("rss_connected_bytes", connected);
        report.num(
            "rss_per_conn_over_idle_bytes",
            connected.saturating_sub(idle_rss) as f64 / f64::from(a.n),
            1,
        );
        let redis_connected = env.redis_memory()?;

        let mut points = vec![(0.0, connected as f64)];
        let mut rounds = Vec::new();
        let (t0, cpu0) = (now_ns(), hub.cpu_ns()?);
        let extras0 = env.extras_cpu_ns()?;
        for j in 0..a.per_client {
            subscribe_round(&mut backend, &plan, j, a.batch).await?;
            let subs = u64::from(a.n) * u64::from(j + 1);
            let rss = hub.rss_bytes()?;
            points.push((subs as f64, rss as f64));
            rounds.push(serde_json::json!({"subscriptions": subs, "rss_bytes": rss}));
        }
        let (dt, dc) = (now_ns() - t0, hub.cpu_ns()?.saturating_sub(cpu0));
        report.set("rounds", rounds);
        let total = plan.subscriptions() as f64;
        let cpu_us = dc as f64 / 1e3 / total;
        report.num("subscribe_ms", ms(dt), 1);
        report.num("subscriptions_per_s", total / (dt as f64 / 1e9), 0);
        report.num("hub_cpu_us_per_subscription", cpu_us, 3);

        let stats = check_counts(&mut backend, &plan).await?;
        report.set("subscriptions", stats.subscriptions);
        report.set("channels_used", stats.channels);
        Timer::after(settle).await;
        let subscribed = hub.rss_bytes()?;
        report.set("rss_subscribed_bytes", subscribed);
        // Read after the settle: a hub answers a subscribe before Redis has
        // confirmed the channel's route.
        env.report_extras("cpu_us_per_subscription_settled", &extras0, total)?;
        if let (Some(before), Some(after)) = (redis_connected, env.redis_memory()?) {
            report.set("redis_connected_used_memory", before);
            report.set("redis_subscribed_used_memory", after);
            report.num(
                "redis_bytes_per_channel",
                (after as f64 - before as f64) / stats.channels.max(1) as f64,
                1,
            );
        }
        let per_sub = (subscribed as f64 - connected as f64) / total;
        report.num("bytes_per_subscription", per_sub, 1);
        let slope = least_squares_slope(&points);
        if let Some(slope) = slope {
            report.num("slope_bytes_per_subscription", slope, 1);
        }
        say(&format!(
            "{} subscriptions ({} per client, {} channels) in {:.0} ms: hub RSS {:.1} → {:.1} MiB, \
             {per_sub:.1} B per subscription (slope {}), {cpu_us:.2} µs hub CPU each",
            plan.subscriptions(),
            a.per_client,
            stats.channels,
            ms(dt),
            connected as f64 / 1048576.0,
            subscribed as f64 / 1048576.0,
            slope.map_or("-".into(), |s| format!("{s:.1} B")),
        ));
        check(&env, &mut backend, &plan, a.check, &inbox).await
    };
    // Figures are reported as they are measured, so a timeout keeps them.
    env.bounded(measured)
        .await
        .unwrap_or_else(|| Err(env.timed_out()))?;
    env.check_none_closed(&pool)
}

/// Publishes once to each of `count` channels, then broadcasts, and checks
/// that every client got exactly the publications of its channels.
async fn check(
    env: &Env,
    backend: &mut Backend,
    plan: &Plan,
    count: u32,
    inbox: &Inbox,
) -> Result<(), String> {
    let checked = check_channels(plan, count);
    let names: Vec<String> = checked.iter().map(|&ch| name(ch)).collect();
    let mut lines = Vec::new();
    for (&ch, ch_name) in checked.iter().zip(&names) {
        lines.extend_from_slice(&publish_line(ch_name, ch, CHECK_SIZE));
    }
    lines.extend_from_slice(&broadcast_line(plan.channels, CHECK_SIZE));
    let expected: Vec<u64> = checked
        .iter()
        .map(|&ch| plan.members(ch))
        .chain([plan.n])
        .map(u64::from)
        .collect();
    let deliveries: u64 = expected[..checked.len()].iter().sum();
    let mut replies = expected.iter().zip(&names);
    let mut fence_reply = None;
    backend
        .pipeline(&lines, expected.len(), |reply| {
            let got = delivered(reply)?;
            match replies.next() {
                Some((&want, ch)) if got != want => Err(format!(
                    "a publication to {ch} reached {got} connections; it has {want} members"
                )),
                Some(_) => Ok(()),
                None => {
                    fence_reply = Some(got);
                    Ok(())
                }
            }
        })
        .await?;
    if fence_reply != Some(u64::from(plan.n)) {
        return Err(format!(
            "the closing broadcast reached {fence_reply:?} of {} clients",
            plan.n
        ));
    }
    inbox
        .changed
        .until(|| inbox.n_fenced.get() == plan.n || inbox.closed.get() > 0)
        .await;
    let wrong = wrong_clients(plan, &checked, &inbox.got.borrow());
    let report = &env.report;
    report.set("check_channels", names.clone());
    report.set("check_deliveries", deliveries);
    report.set("check_clients_wrong", wrong);
    report.set("check_stray", inbox.stray.get());
    if inbox.closed.get() > 0 || wrong > 0 || inbox.stray.get() > 0 {
        return Err(format!(
            "check: {wrong} clients did not get exactly their channels' publications; {} \
             stray messages; {} clients closed",
            inbox.stray.get(),
            inbox.closed.get()
        ));
    }
    say(&format!(
        "check: publications to {} reached exactly their {deliveries} members",
        names.join(", ")
    ));
    Ok(())
}

/// `count` channels spread evenly over the plan's (all of them if fewer).
fn check_channels(plan: &Plan, count: u32) -> Vec<u32> {
    let count = count.min(plan.channels);
    (0..count)
        .map(|m| (u64::from(m) * u64::from(plan.channels) / u64::from(count)) as u32)
        .collect()
}

/// Clients whose received publications are not exactly, once each, those of
/// the `checked` channels they are in.
fn wrong_clients(plan: &Plan, checked: &[u32], got: &[Vec<u32>]) -> usize {
    (0..plan.n)
        .filter(|&i| {
            let mut received = got[i as usize].clone();
            received.sort_unstable();
            let expected: Vec<u32> = checked
                .iter()
                .copied()
                .filter(|&ch| plan.is_member(i, ch))
                .collect();
            received != expected
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_channels_are_spread() {
        let plan = Plan::new(100, 10, 1000).unwrap();
        assert_eq!(check_channels(&plan, 4), [0, 250, 500, 750]);
        assert_eq!(check_channels(&Plan::new(3, 2, 3).unwrap(), 5), [0, 1, 2]);
    }

    #[test]
    fn finds_clients_with_the_wrong_publications() {
        // Clients 0..4, two channels each of 4: 0 in c0 c1, 1 in c2 c3, 2 in
        // c0 c1, 3 in c2 c3.
        let plan = Plan::new(4, 2, 4).unwrap();
        let checked = [0, 3];
        let right = vec![vec![0], vec![3], vec![0], vec![3]];
        assert_eq!(wrong_clients(&plan, &checked, &right), 0);
        let twice = vec![vec![0, 0], vec![3], vec![0], vec![3]];
        assert_eq!(wrong_clients(&plan, &checked, &twice), 1);
        let missing = vec![vec![0], vec![], vec![0], vec![]];
        assert_eq!(wrong_clients(&plan, &checked, &missing), 2);
        let extra = vec![vec![0], vec![3], vec![3, 0], vec![3]];
        assert_eq!(wrong_clients(&plan, &checked, &extra), 1);
    }

    #[test]
    fn the_inbox_sorts_messages() {
        let inbox = Inbox::new(2, 1000);
        inbox.on_text(0, b"b250-xxx", 32, 0);
        inbox.on_text(0, b"b1000-xx", 32, 0);
        inbox.on_text(0, b"b500-xxx", 32, 0);
        inbox.on_text(1, b"hello", 5, 0);
        inbox.on_text(9, b"b1-", 3, 0);
        assert_eq!(*inbox.got.borrow(), [vec![250], vec![]]);
        assert_eq!(inbox.n_fenced.get(), 1);
        assert_eq!(inbox.stray.get(), 2, "after the broadcast, and untagged");
    }
}
