//! `conns`: memory per connection. Connections are opened step by step; at each
//! step, once the hub has authenticated all of them and after `--settle-ms`, the
//! hub's RSS is sampled. Reported: the idle RSS, RSS per step, the slope per
//! connection (least squares over the steps, and first-to-last), the
//! connect+login rate, and the hub's CPU per connect+login.
//!
//! Up to `--per-process` connections, this process holds them. Beyond, every
//! step's new connections go to worker processes (see [`crate::worker`]), at
//! most `--per-process` each, because one process cannot hold them all.
//!
//! With `--peer` the text port is not used at all: a step's connections are
//! in once each client has its login's pong (the workers' ready lines say so
//! for theirs), and each row says `confirmed` instead of the hub's
//! `authenticated`.

use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};
use smol::Timer;

use crate::args::ConnsArgs;
use crate::client::{Ignore, Pool};
use crate::clock::{ms, now_ns};
use crate::common::Env;
use crate::report::{rounded, say};
use crate::stats::{least_squares_slope, two_point_slope};
use crate::worker::{self, Worker};

const DEFAULT_STEPS: [u32; 5] = [1000, 2000, 5000, 10000, 18000];

pub async fn run(env: Rc<Env>, a: &ConnsArgs) -> Result<(), String> {
    let hub = env.hub()?;
    let report = &env.report;
    let steps = parse_steps(a.steps.as_deref(), a.n)?;
    if a.per_process == 0 {
        return Err("--per-process must be at least 1".into());
    }
    let use_workers = a.n > a.per_process;
    crate::net::check_fits(a.n.min(a.per_process))?;
    report.set("n", a.n);
    report.set("per_process", a.per_process);
    report.set("sources", env.sources);

    let mut backend = if env.peer {
        None
    } else {
        Some(env.backend().await?)
    };
    let baseline = match &mut backend {
        Some(backend) => {
            env.wait_idle(backend).await?;
            backend.stats().await?.authenticated
        }
        None => 0,
    };
    let idle_rss = hub.rss_bytes()?;
    report.set("idle_rss_bytes", idle_rss);
    let idle_redis = env.redis_memory()?;
    if let Some(bytes) = idle_redis {
        report.set("redis_idle_used_memory", bytes);
    }
    say(&format!(
        "idle hub: {:.1} MiB RSS; opening {} connections in {} steps{}",
        idle_rss as f64 / 1048576.0,
        a.n,
        steps.len(),
        if use_workers {
            " (in worker processes)"
        } else {
            ""
        }
    ));

    let overflows0 = crate::proc::tcp_ext("ListenOverflows");
    let pool = Pool::new(Rc::clone(&env.ex), env.client_config(), Rc::new(Ignore));
    let mut workers: Vec<Worker> = Vec::new();
    let started = now_ns();
    let measure = async {
        let (mut opened, mut open_ns, mut cpu_ns) = (0u32, 0u64, 0u64);
        let mut points = Vec::new();
        let mut redis_points = Vec::new();
        let mut extras_ns = vec![0u64; env.extras.len()];
        let mut rows: Vec<Value> = Vec::new();
        for &step in &steps {
            let t0 = now_ns();
            let c0 = hub.cpu_ns()?;
            let x0 = env.extras_cpu_ns()?;
            if use_workers {
                let left = Duration::from_secs(env.args.timeout_secs)
                    .saturating_sub(Duration::from_nanos(t0 - started));
                let mut fresh = Vec::new();
                let mut from = opened;
                while from < step {
                    let to = step.min(from.saturating_add(a.per_process));
                    fresh.push(Worker::spawn(&env, from, to, left)?);
                    from = to;
                }
                for worker in &mut fresh {
                    worker.ready().await?;
                }
                workers.extend(fresh);
            } else {
                pool.spawn(opened..step);
                pool.settled(step).await;
                if pool.failed() > 0 {
                    return Err(format!(
                        "{} connections failed; first errors: {}",
                        pool.failed(),
                        pool.errors().join("; ")
                    ));
                }
            }
            let counted = match &mut backend {
                Some(backend) => {
                    let target = baseline + u64::from(step);
                    Some(env.wait_authenticated(backend, target).await? - baseline)
                }
                // Every connection so far is in: none failed.
                None => None,
            };
            let (dt, dc) = (now_ns() - t0, hub.cpu_ns()?.saturating_sub(c0));
            for (sum, used) in extras_ns.iter_mut().zip(env.extras_cpu_since(&x0)?) {
                *sum += used;
            }
            let added = step - opened;
            (opened, open_ns, cpu_ns) = (step, open_ns + dt, cpu_ns + dc);

            Timer::after(Duration::from_millis(a.settle_ms)).await;
            let rss = hub.rss_bytes()?;
            points.push((f64::from(step), rss as f64));
            let mut row = json!({
                "n": step,
                "rss_bytes": rss,
                "open_ms": rounded(ms(dt), 1),
                "hub_cpu_us_per_conn": rounded(dc as f64 / 1e3 / f64::from(added), 2),
            });
            match counted {
                Some(authenticated) => row["authenticated"] = authenticated.into(),
                None => row["confirmed"] = step.into(),
            }
            // Each uid's route is subscribed in Redis before its login is
            // answered, so by now Redis holds every one of them.
            if let Some(bytes) = env.redis_memory()? {
                redis_points.push((f64::from(step), bytes as f64));
                row["redis_used_memory"] = bytes.into();
            }
            rows.push(row);
            report.set("steps", rows.clone());
            say(&format!(
                "{step:>6} connections: hub RSS {:.1} MiB, +{added} in {:.0} ms ({:.1} µs hub CPU each)",
                rss as f64 / 1048576.0,
                ms(dt),
                dc as f64 / 1e3 / f64::from(added)
            ));
        }
        env.check_none_closed(&pool)?;
        if let Some(slope) = least_squares_slope(&points) {
            report.num("slope_bytes_per_conn", slope, 1);
        }
        if let Some(slope) = two_point_slope(&points) {
            report.num("slope_two_point_bytes_per_conn", slope, 1);
        }
        if let Some(slope) = least_squares_slope(&redis_points) {
            report.num("redis_slope_bytes_per_conn", slope, 1);
        }
        if let (Some(idle), Some(&(n, bytes))) = (idle_redis, redis_points.last()) {
            report.num(
                "redis_bytes_per_conn_over_idle",
                (bytes - idle as f64) / n,
                1,
            );
        }
        if let Some(&(n, rss)) = points.last() {
            report.num(
                "rss_per_conn_over_idle_bytes",
                (rss - idle_rss as f64) / n,
                1,
            );
        }
        // Connects the kernel dropped at a full accept queue wait a second for
        // their SYN to be sent again: that shows in the rate, and here.
        if let (Some(before), Some(after)) = (overflows0, crate::proc::tcp_ext("ListenOverflows")) {
            report.set("listen_overflows", after.saturating_sub(before));
        }
        let rate = f64::from(opened) / (open_ns as f64 / 1e9);
        let cpu_us = cpu_ns as f64 / 1e3 / f64::from(opened);
        report.num("connect_rate_per_s", rate, 0);
        report.num("hub_cpu_us_per_conn", cpu_us, 2);
        env.report_extras_cpu("cpu_us_per_conn", &extras_ns, f64::from(opened))?;
        env.ratio_to_floor("conn_ratio_to_floor", cpu_us);
        Ok(())
    };
    // The steps measured so far are in the report already.
    let outcome = env
        .bounded(measure)
        .await
        .unwrap_or_else(|| Err(env.timed_out()));
    worker::finish(workers).await;
    outcome
}

/// The connection counts to sample at: increasing, each at most `n`, ending at `n`.
fn parse_steps(spec: Option<&str>, n: u32) -> Result<Vec<u32>, String> {
    if n == 0 {
        return Err("--n must be at least 1".into());
    }
    let mut steps: Vec<u32> = match spec {
        None => DEFAULT_STEPS.iter().copied().filter(|&s| s < n).collect(),
        Some(spec) => spec
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("--steps: {s:?} is not a connection count"))
            })
            .collect::<Result<_, _>>()?,
    };
    if steps.first() == Some(&0) || steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err("--steps must be increasing counts above 0".into());
    }
    if steps.last().is_some_and(|&last| last > n) {
        return Err(format!("--steps go beyond --n {n}"));
    }
    if steps.last() != Some(&n) {
        steps.push(n);
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(
            parse_steps(None, 18000).unwrap(),
            [1000, 2000, 5000, 10000, 18000]
        );
        assert_eq!(parse_steps(None, 3000).unwrap(), [1000, 2000, 3000]);
        assert_eq!(parse_steps(None, 500).unwrap(), [500]);
        assert_eq!(parse_steps(Some("10, 20"), 20).unwrap(), [10, 20]);
        assert_eq!(parse_steps(Some("10,20"), 30).unwrap(), [10, 20, 30]);
        assert!(parse_steps(Some("20,10"), 30).is_err());
        assert!(parse_steps(Some("10,10"), 30).is_err());
        assert!(parse_steps(Some("0,10"), 30).is_err());
        assert!(parse_steps(Some("10,x"), 30).is_err());
        assert!(parse_steps(Some("10,40"), 30).is_err());
        assert!(parse_steps(None, 0).is_err());
    }
}
