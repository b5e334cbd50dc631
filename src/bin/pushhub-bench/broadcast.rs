//! `broadcast`: fan-out to every client. (a) Single broadcasts, one at a time:
//! the time until the last of the N clients has it; p50 and max over
//! `--repeats`, and the hub's CPU per delivered message. (b) `--burst`
//! broadcasts written in one go: the time until every client has all of them,
//! delivered messages per second, and the hub's CPU per delivered message.
//!
//! The hub keeps each connection's messages in order, so a client's k-th
//! message is broadcast k; counting per message index needs no parsing.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;

use crate::args::BroadcastArgs;
use crate::client::Listener;
use crate::clock::{ms, now_ns};
use crate::common::Env;
use crate::notify::Notify;
use crate::report::say;
use crate::stats::Summary;
use crate::textport::{Backend, Replies, Requests, delivered};

/// Per message index: how many clients have it and when the last one got it.
pub struct Fanout {
    clients: u32,
    /// Messages each client has received so far.
    per_client: RefCell<Vec<u32>>,
    have: RefCell<Vec<u32>>,
    last_ns: RefCell<Vec<u64>>,
    /// Messages beyond the expected count.
    extra: Cell<u64>,
    changed: Notify,
}

impl Fanout {
    pub fn new(clients: u32, messages: u32) -> Fanout {
        Fanout {
            clients,
            per_client: RefCell::new(vec![0; clients as usize]),
            have: RefCell::new(vec![0; messages as usize]),
            last_ns: RefCell::new(vec![0; messages as usize]),
            extra: Cell::new(0),
            changed: Notify::default(),
        }
    }

    /// Waits until every client has messages `0..=k`; returns when the last of
    /// message `k` arrived.
    async fn all_have(&self, k: usize) -> u64 {
        self.changed
            .until(|| self.have.borrow().get(k) == Some(&self.clients))
            .await;
        self.last_ns.borrow()[k]
    }
}

impl Listener for Fanout {
    fn on_text(&self, conn: u32, _prefix: &[u8], _len: u64, now_ns: u64) {
        let mut per_client = self.per_client.borrow_mut();
        let Some(count) = per_client.get_mut(conn as usize) else {
            return;
        };
        let k = *count as usize;
        *count += 1;
        let mut have = self.have.borrow_mut();
        match have.get_mut(k) {
            Some(h) => {
                *h += 1;
                let mut last = self.last_ns.borrow_mut();
                last[k] = last[k].max(now_ns);
                if *h == self.clients {
                    self.changed.notify();
                }
            }
            None => self.extra.set(self.extra.get() + 1),
        }
    }
}

/// The request line of broadcast `k`: `size` bytes of data starting with `b<k>`.
fn broadcast_line(k: u32, size: usize) -> Vec<u8> {
    let mut data = format!("b{k}-");
    data.truncate(size);
    data.extend(std::iter::repeat_n('x', size - data.len()));
    let mut line = Vec::with_capacity(size + 32);
    let _ = writeln!(line, r#"{{"cmd":"broadcast","data":"{data}"}}"#);
    line
}

/// Reads `count` broadcast replies; returns how many did not reach `n` clients.
async fn check_replies(replies: &mut Replies, count: u32, n: u32) -> Result<u32, String> {
    let mut short = 0;
    for _ in 0..count {
        let reply = replies
            .next()
            .await
            .map_err(|e| format!("text port read: {e}"))?;
        if delivered(reply)? != u64::from(n) {
            short += 1;
        }
    }
    Ok(short)
}

async fn send(requests: &Requests, lines: &[u8]) -> Result<(), String> {
    requests
        .send(lines)
        .await
        .map_err(|e| format!("text port write: {e}"))
}

pub async fn run(env: Rc<Env>, a: &BroadcastArgs) -> Result<(), String> {
    let hub = env.hub()?;
    if a.n == 0 || a.repeats == 0 || a.burst == 0 {
        return Err("--n, --repeats and --burst must be at least 1".into());
    }
    let report = &env.report;
    report.set("n", a.n);
    report.set("size", a.size);
    report.set("repeats", a.repeats);
    let fanout = Rc::new(Fanout::new(a.n, a.repeats + a.burst));
    let mut backend = Backend::connect(env.text).await?;
    let pool = env.open_clients(a.n, fanout.clone(), &mut backend).await?;
    let (requests, mut replies) = backend.split();
    let deliveries = f64::from(a.n);
    let short = Cell::new(0u32);

    let measured = async {
        // (a) One at a time.
        let mut times = Vec::new();
        let cpu0 = hub.cpu_ns()?;
        for k in 0..a.repeats {
            let line = broadcast_line(k, a.size);
            let sent = now_ns();
            send(&requests, &line).await?;
            let last = fanout.all_have(k as usize).await;
            times.push(last.saturating_sub(sent));
            short.set(short.get() + check_replies(&mut replies, 1, a.n).await?);
        }
        let single_cpu_us =
            hub.cpu_ns()?.saturating_sub(cpu0) as f64 / 1e3 / (f64::from(a.repeats) * deliveries);
        if let Some(s) = Summary::of(&mut times) {
            report.num("single_p50_ms", ms(s.p50), 3);
            report.num("single_max_ms", ms(s.max), 3);
            say(&format!(
                "single broadcast to {}: p50 {:.2} ms, max {:.2} ms, {single_cpu_us:.3} µs hub CPU per delivery",
                a.n,
                ms(s.p50),
                ms(s.max)
            ));
        }
        report.num("single_hub_cpu_us_per_msg", single_cpu_us, 3);
        env.ratio_to_floor("single_ratio_to_floor", single_cpu_us);

        // (b) Back to back, in one write.
        let mut lines = Vec::new();
        for k in a.repeats..a.repeats + a.burst {
            lines.extend_from_slice(&broadcast_line(k, a.size));
        }
        report.set("burst", a.burst);
        let cpu0 = hub.cpu_ns()?;
        let sent = now_ns();
        send(&requests, &lines).await?;
        let mut last = 0;
        for k in a.repeats..a.repeats + a.burst {
            last = last.max(fanout.all_have(k as usize).await);
        }
        let burst_ns = last.saturating_sub(sent).max(1);
        let burst_msgs = f64::from(a.burst) * deliveries;
        let burst_cpu_us = hub.cpu_ns()?.saturating_sub(cpu0) as f64 / 1e3 / burst_msgs;
        short.set(short.get() + check_replies(&mut replies, a.burst, a.n).await?);
        report.num("burst_ms", ms(burst_ns), 3);
        report.num("burst_msgs_per_s", burst_msgs / (burst_ns as f64 / 1e9), 0);
        report.num("burst_hub_cpu_us_per_msg", burst_cpu_us, 3);
        env.ratio_to_floor("burst_ratio_to_floor", burst_cpu_us);
        if fanout.extra.get() > 0 {
            report.set("unexpected_messages", fanout.extra.get());
        }
        Ok::<(), String>(())
    };
    // Figures are reported as they are measured, so a timeout keeps them.
    env.bounded(measured)
        .await
        .unwrap_or_else(|| Err(env.timed_out()))?;
    env.check_none_closed(&pool)?;
    if short.get() > 0 {
        return Err(format!(
            "{} broadcasts were delivered to fewer than {} clients",
            short.get(),
            a.n
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_lines_have_the_size_asked() {
        let line = broadcast_line(7, 32);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let data = v["data"].as_str().unwrap();
        assert_eq!(data.len(), 32);
        assert!(data.starts_with("b7-x"));
        assert_eq!(line.last(), Some(&b'\n'));
        let tiny: serde_json::Value = serde_json::from_slice(&broadcast_line(123, 2)).unwrap();
        assert_eq!(tiny["data"], "b1");
        let empty: serde_json::Value = serde_json::from_slice(&broadcast_line(1, 0)).unwrap();
        assert_eq!(empty["data"], "");
    }
}
