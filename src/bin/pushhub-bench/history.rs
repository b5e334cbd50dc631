//! `history`: what the history for recovery costs. Three parts, against one
//! hub:
//!
//! 0. Each uid gets its stream first: a v1 client logs in as it, is
//!    welcomed with a position, and leaves (the hub keeps a uid's pushes only
//!    once a client has been given a position in its stream).
//! 1. **Fill.** Pushes of `--size` bytes go to offline uids `o0..o{uids-1}`
//!    in turn, pipelined `--chunk` at a time; nobody receives them, so only
//!    the history holds them. After each chunk the hub's `stats`
//!    (`history_messages`, `history_bytes`, `history_streams`) and its RSS
//!    are read. The history is full once a chunk adds fewer messages than it
//!    pushed: the byte cap (`--history-memory`) evicted some. A hub that kept
//!    nothing after the first chunk has history off; it gets `--max-fill`
//!    pushes, so that its RSS and CPU can be set beside a full one's.
//! 2. **Churn.** `--churn` times as many pushes again, each evicting an
//!    older message, then the RSS, then the RSS once idle: whether the
//!    memory stays where the cap put it.
//! 3. **CPU.** `--n` uids get their streams as in 0., then `--n` raw
//!    clients connect as them and `--pushes` pipelined pushes go
//!    to them, as `pushmax` does ([`crate::pushmax::measure`]), with the
//!    history full (each push keeps its frame and evicts the oldest).
//!
//! Reported: the hub's RSS per kept message (its growth over the fill, per
//! message, and the least-squares slope over the chunks once every stream
//! exists), next to what `history_bytes` accounts per message; the idle RSS
//! with a full history; the CPU per offline push; and pushmax's figures.

use std::rc::Rc;
use std::time::Duration;

use serde_json::json;
use smol::Timer;

use crate::args::HistoryArgs;
use crate::clock::{ms, now_ns};
use crate::common::Env;
use crate::net;
use crate::proc::HubProc;
use crate::report::{Report, say};
use crate::stats::least_squares_slope;
use crate::textport::{Backend, Stats, delivered, push_line};
use crate::v1::{Incoming, Since, V1Conn};

/// Logs a v1 client in as each of `uids` in turn (`--concurrency` at a
/// time), waits for its welcome and closes it: the uid's stream then exists.
async fn introduce(env: &Rc<Env>, uids: Vec<String>) -> Result<(), String> {
    let (ws, sources) = (env.ws, env.sources);
    let per = uids.len().div_ceil(env.concurrency.max(1));
    let tasks: Vec<_> = uids
        .chunks(per.max(1))
        .enumerate()
        .map(|(lane, chunk)| {
            let (chunk, credential) = (chunk.to_vec(), env.credential.clone());
            env.ex.spawn(async move {
                for (i, uid) in chunk.iter().enumerate() {
                    let src = net::source((lane * per + i) as u32, sources);
                    let mut conn = V1Conn::connect(ws, src, None).await?;
                    conn.auth(&credential, uid, Since::default()).await?;
                    match conn.next().await? {
                        Incoming::Welcome { .. } => {}
                        other => return Err(format!("{uid}: expected a welcome, got {other:?}")),
                    }
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// One reading after a chunk.
#[derive(Debug, Clone, Copy)]
struct Point {
    pushes: u32,
    messages: u64,
    bytes: u64,
    streams: u64,
    rss: u64,
}

pub async fn run(env: Rc<Env>, a: &HistoryArgs) -> Result<(), String> {
    let hub = env.hub()?;
    if a.uids == 0 || a.chunk == 0 || a.max_fill == 0 {
        return Err("--uids, --chunk and --max-fill must be at least 1".into());
    }
    if !(a.churn >= 0.0 && a.churn <= 100.0) {
        return Err("--churn must be between 0 and 100".into());
    }
    let report = &env.report;
    report.set("uids", a.uids);
    report.set("size", a.size);
    report.set("chunk", a.chunk);
    let mut backend = env.backend().await?;
    let settle = Duration::from_millis(a.settle_ms);

    let memory = async {
        env.wait_idle(&mut backend).await?;
        Timer::after(settle).await;
        let idle = hub.rss_bytes()?;
        report.set("idle_rss_bytes", idle);
        let start = backend.stats().await?;
        if start.history_messages > 0 {
            return Err(format!(
                "the hub already keeps {} messages: start a fresh hub",
                start.history_messages
            ));
        }
        introduce(&env, (0..a.uids).map(|i| format!("o{i}")).collect()).await?;
        let mut filler = Filler {
            uids: a.uids,
            size: a.size,
            pushed: 0,
        };

        // 1. Fill.
        let (t0, cpu0) = (now_ns(), hub.cpu_ns()?);
        let mut points = Vec::new();
        let mut last = 0u64;
        let history_on = loop {
            let count = a.chunk.min(a.max_fill - filler.pushed);
            filler.push(&mut backend, count).await?;
            let p = point(&mut backend, hub, filler.pushed).await?;
            points.push(p);
            let gained = p.messages.saturating_sub(last);
            last = p.messages;
            if p.messages == 0 && filler.pushed >= a.chunk {
                if filler.pushed >= a.max_fill {
                    break false;
                }
                continue;
            }
            if gained < u64::from(count) {
                break true;
            }
            if filler.pushed >= a.max_fill {
                return Err(format!(
                    "{} pushes did not fill the history ({} messages, {} bytes kept): \
                     raise --max-fill",
                    filler.pushed, p.messages, p.bytes
                ));
            }
        };
        let fill_cpu = hub.cpu_ns()?.saturating_sub(cpu0);
        let fill_ns = now_ns() - t0;
        let full = *points.last().ok_or("no reading")?;
        report.set("history", if history_on { "on" } else { "off" });
        report.set("fill_pushes", filler.pushed);
        report.num("fill_ms", ms(fill_ns), 1);
        let per_push = fill_cpu as f64 / 1e3 / f64::from(filler.pushed);
        report.num("fill_hub_cpu_us_per_push", per_push, 3);
        report.set("rss_full_bytes", full.rss);
        report.set(
            "points",
            points
                .iter()
                .map(|p| {
                    json!({"pushes": p.pushes, "messages": p.messages, "bytes": p.bytes,
                           "streams": p.streams, "rss_bytes": p.rss})
                })
                .collect::<Vec<_>>(),
        );
        if history_on {
            report_full(report, idle, &full, &points, a.uids);
        } else {
            report.num(
                "rss_growth_per_push_bytes",
                full.rss.saturating_sub(idle) as f64 / f64::from(filler.pushed),
                2,
            );
            say(&format!(
                "history off: {} offline pushes kept nothing; hub RSS {:.1} → {:.1} MiB, \
                 {per_push:.2} µs hub CPU per push",
                filler.pushed,
                idle as f64 / 1048576.0,
                full.rss as f64 / 1048576.0
            ));
        }

        // 2. Churn.
        if history_on && a.churn > 0.0 {
            let more = (full.messages as f64 * a.churn).round() as u32;
            let (cpu0, from) = (hub.cpu_ns()?, filler.pushed);
            while filler.pushed - from < more {
                let count = a.chunk.min(more - (filler.pushed - from));
                filler.push(&mut backend, count).await?;
            }
            let cpu = hub.cpu_ns()?.saturating_sub(cpu0);
            let p = point(&mut backend, hub, filler.pushed).await?;
            report.set("churn_pushes", more);
            report.num(
                "churn_hub_cpu_us_per_push",
                cpu as f64 / 1e3 / f64::from(more.max(1)),
                3,
            );
            report.set("churn_history_messages", p.messages);
            report.set("churn_history_bytes", p.bytes);
            report.set("rss_churned_bytes", p.rss);
        }
        Timer::after(settle).await;
        let rss = hub.rss_bytes()?;
        let end = backend.stats().await?;
        report.set("rss_full_idle_bytes", rss);
        report.set("final_history_messages", end.history_messages);
        report.set("final_history_bytes", end.history_bytes);
        say(&format!(
            "idle after the pushes: hub RSS {:.1} MiB ({:.1} MiB idle before), \
             {} messages in {:.1} MiB of history_bytes",
            rss as f64 / 1048576.0,
            idle as f64 / 1048576.0,
            end.history_messages,
            end.history_bytes as f64 / 1048576.0
        ));
        Ok::<(), String>(())
    };
    env.bounded(memory)
        .await
        .unwrap_or_else(|| Err(env.timed_out()))?;
    drop(backend);

    // 3. CPU per push to online raw clients, the history as it was left;
    // their uids get their streams now (new streams queue behind the fill).
    if a.n > 0 {
        introduce(&env, (0..a.n).map(|i| format!("u{i}")).collect()).await?;
        crate::pushmax::measure(&env, a.n, a.pushes, a.window).await?;
    }
    Ok(())
}

/// Pushes to the offline uids, in turn.
struct Filler {
    uids: u32,
    size: usize,
    pushed: u32,
}

impl Filler {
    /// Pipelines `count` pushes; each must reach nobody.
    async fn push(&mut self, backend: &mut Backend, count: u32) -> Result<(), String> {
        let mut lines = Vec::with_capacity(count as usize * (self.size + 48));
        for k in self.pushed..self.pushed + count {
            let uid = format!("o{}", k % self.uids);
            lines.extend_from_slice(&push_line(&uid, k, self.size));
        }
        backend
            .pipeline(&lines, count as usize, |reply| match delivered(reply)? {
                0 => Ok(()),
                n => Err(format!(
                    "a push to an offline uid reached {n} connections: is another client \
                     connected as o<i>?"
                )),
            })
            .await?;
        self.pushed += count;
        Ok(())
    }
}

async fn point(backend: &mut Backend, hub: &HubProc, pushes: u32) -> Result<Point, String> {
    let Stats {
        history_messages,
        history_bytes,
        history_streams,
        ..
    } = backend.stats().await?;
    Ok(Point {
        pushes,
        messages: history_messages,
        bytes: history_bytes,
        streams: history_streams,
        rss: hub.rss_bytes()?,
    })
}

/// The figures of a full history: RSS and accounting per kept message.
fn report_full(report: &Report, idle: u64, full: &Point, points: &[Point], uids: u32) {
    report.set("history_messages", full.messages);
    report.set("history_bytes", full.bytes);
    report.set("history_streams", full.streams);
    let messages = full.messages.max(1) as f64;
    let accounted = full.bytes as f64 / messages;
    let rss = full.rss.saturating_sub(idle) as f64 / messages;
    report.num("accounted_bytes_per_message", accounted, 1);
    report.num("rss_bytes_per_message", rss, 1);
    report.num("rss_to_accounted", rss / accounted, 3);
    // Once every stream exists, a chunk adds messages only: the slopes are
    // per message, streams aside. The last point is past the cap.
    let grown: Vec<&Point> = points[..points.len() - 1]
        .iter()
        .filter(|p| p.pushes >= uids)
        .collect();
    let slope = |f: &dyn Fn(&Point) -> f64| {
        least_squares_slope(
            &grown
                .iter()
                .map(|p| (p.messages as f64, f(p)))
                .collect::<Vec<_>>(),
        )
    };
    let rss_slope = slope(&|p| p.rss as f64);
    let bytes_slope = slope(&|p| p.bytes as f64);
    if let (Some(r), Some(b)) = (rss_slope, bytes_slope) {
        report.set("slope_points", grown.len());
        report.num("slope_rss_bytes_per_message", r, 1);
        report.num("slope_accounted_bytes_per_message", b, 1);
    }
    say(&format!(
        "history full: {} messages in {} streams, history_bytes {:.1} MiB ({accounted:.0} B per \
         message); hub RSS {:.1} → {:.1} MiB ({rss:.0} B per message; slope {} B RSS vs {} B \
         accounted)",
        full.messages,
        full.streams,
        full.bytes as f64 / 1048576.0,
        idle as f64 / 1048576.0,
        full.rss as f64 / 1048576.0,
        rss_slope.map_or("-".into(), |s| format!("{s:.0}")),
        bytes_slope.map_or("-".into(), |s| format!("{s:.0}")),
    ));
}
