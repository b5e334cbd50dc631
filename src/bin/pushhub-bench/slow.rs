//! `slow`: clients that stop reading. `--readers` clients read everything;
//! `--slow` clients read the `--runup` broadcasts, then never read again
//! (their sockets stay open). Then `--broadcasts` big broadcasts go out, each
//! once every reader has the one before (a pace the readers set), while the
//! hub's RSS is sampled. At the end the slow clients read what is left: a close
//! frame or EOF means the hub dropped them.
//!
//! Reported: the hub's RSS before, at its peak and after; RSS growth per slow
//! client; how many slow clients the hub dropped (as the clients saw it, and
//! its `dropped` counter); whether every reader got every broadcast; and the
//! readers' latency during the run-up and once the slow clients stalled.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use smol::Timer;

use crate::args::SlowArgs;
use crate::client::{Listener, Parked};
use crate::clock::{ms, now_ns};
use crate::common::Env;
use crate::notify::Notify;
use crate::report::say;
use crate::stats::Summary;
use crate::textport::{broadcast_index, broadcast_line, delivered};

/// How long the slow clients get, at the end, to read what was queued for them.
const DRAIN: Duration = Duration::from_secs(15);

/// The hub's RSS is sampled once more this long after the drain.
const SETTLE: Duration = Duration::from_millis(500);

struct Tally {
    readers: u32,
    runup: u32,
    per_client: RefCell<Vec<u32>>,
    /// Per broadcast: readers that have it, all clients that have it, and when
    /// the last reader got it.
    have_readers: RefCell<Vec<u32>>,
    have_all: RefCell<Vec<u32>>,
    last_reader_ns: RefCell<Vec<u64>>,
    /// Set at the end: the slow clients read again.
    draining: Cell<bool>,
    parked: RefCell<Vec<Parked>>,
    /// Per client: whether the hub closed it.
    closed: RefCell<Vec<bool>>,
    /// Messages that were not the broadcast expected next at their client.
    misplaced: Cell<u64>,
    slow_closed: Cell<u32>,
    slow_close_1008: Cell<u32>,
    readers_closed: Cell<u32>,
    changed: Notify,
}

impl Tally {
    fn is_slow(&self, conn: u32) -> bool {
        conn >= self.readers
    }

    /// Whether every slow client is done at the end: closed, or caught up
    /// with every broadcast (each counted once, whichever came first).
    fn slow_settled(&self, total: u32) -> bool {
        let from = self.readers as usize;
        let per_client = self.per_client.borrow();
        let closed = self.closed.borrow();
        per_client[from..]
            .iter()
            .zip(&closed[from..])
            .all(|(&got, &closed)| closed || got >= total)
    }

    /// Why the run cannot go on: a reader closed, a slow client closed before
    /// the drain (it could only have been while it still read), or a message
    /// out of place. Any of them would leave a wait below unfinished.
    fn broken(&self) -> Option<String> {
        let slow_closed = if self.draining.get() {
            0
        } else {
            self.slow_closed.get()
        };
        (self.readers_closed.get() > 0 || slow_closed > 0 || self.misplaced.get() > 0).then(|| {
            format!(
                "the hub closed {} readers and {slow_closed} slow clients before they stalled; \
                 {} messages were not the broadcast expected next",
                self.readers_closed.get(),
                self.misplaced.get()
            )
        })
    }

    /// Waits until `done()` holds, or fails as soon as the run is broken.
    async fn until(&self, mut done: impl FnMut() -> bool) -> Result<(), String> {
        self.changed
            .until(|| done() || self.broken().is_some())
            .await;
        self.broken().map_or(Ok(()), Err)
    }
}

impl Listener for Tally {
    fn on_text(&self, conn: u32, prefix: &[u8], _len: u64, now_ns: u64) {
        let mut per_client = self.per_client.borrow_mut();
        let Some(count) = per_client.get_mut(conn as usize) else {
            return;
        };
        let k = *count as usize;
        *count += 1;
        if broadcast_index(prefix).is_some_and(|i| i as usize != k) {
            self.misplaced.set(self.misplaced.get() + 1);
        }
        if let Some(all) = self.have_all.borrow_mut().get_mut(k) {
            *all += 1;
        }
        if !self.is_slow(conn)
            && let Some(h) = self.have_readers.borrow_mut().get_mut(k)
        {
            *h += 1;
            let mut last = self.last_reader_ns.borrow_mut();
            last[k] = last[k].max(now_ns);
        }
        self.changed.notify();
    }

    fn on_close(&self, conn: u32, code: Option<u16>) {
        if let Some(closed) = self.closed.borrow_mut().get_mut(conn as usize) {
            *closed = true;
        }
        if self.is_slow(conn) {
            self.slow_closed.set(self.slow_closed.get() + 1);
            if code == Some(1008) {
                self.slow_close_1008.set(self.slow_close_1008.get() + 1);
            }
        } else {
            self.readers_closed.set(self.readers_closed.get() + 1);
        }
        self.changed.notify();
    }

    fn keep_reading(&self, conn: u32) -> bool {
        !self.is_slow(conn)
            || self.draining.get()
            || self.per_client.borrow().get(conn as usize) < Some(&self.runup)
    }

    fn park(&self, parked: Parked) {
        self.parked.borrow_mut().push(parked);
        self.changed.notify();
    }
}

pub async fn run(env: Rc<Env>, a: &SlowArgs) -> Result<(), String> {
    let hub = env.hub()?;
    if a.readers == 0 || a.slow == 0 || a.broadcasts == 0 {
        return Err("--readers, --slow and --broadcasts must be at least 1".into());
    }
    let report = &env.report;
    let (n, total) = (a.readers + a.slow, a.runup + a.broadcasts);
    report.set("readers", a.readers);
    report.set("slow", a.slow);
    report.set("size", a.size);
    report.set("runup", a.runup);
    report.set("broadcasts", a.broadcasts);
    if let Some(bytes) = a.slow_rcvbuf {
        report.set("slow_rcvbuf", bytes);
    }
    let tally = Rc::new(Tally {
        readers: a.readers,
        runup: a.runup,
        per_client: RefCell::new(vec![0; n as usize]),
        have_readers: RefCell::new(vec![0; total as usize]),
        have_all: RefCell::new(vec![0; total as usize]),
        last_reader_ns: RefCell::new(vec![0; total as usize]),
        draining: Cell::new(false),
        parked: RefCell::new(Vec::new()),
        closed: RefCell::new(vec![false; n as usize]),
        misplaced: Cell::new(0),
        slow_closed: Cell::new(0),
        slow_close_1008: Cell::new(0),
        readers_closed: Cell::new(0),
        changed: Notify::default(),
    });
    let mut control = env.backend().await?;
    let mut config = env.client_config();
    config.rcvbuf = a.slow_rcvbuf.map(|bytes| (a.readers..n, bytes));
    let pool = env
        .open_clients_with(n, tally.clone(), &mut control, config)
        .await?;
    let (requests, mut replies) = env.backend().await?.split();
    let mut broadcast = async |k: u32| -> Result<(u64, u64), String> {
        let sent = now_ns();
        requests.send(&broadcast_line(k, a.size)).await?;
        Ok((sent, delivered(replies.next().await?)?))
    };

    // The hub's RSS is sampled from the moment the slow clients stall until
    // they have read what the hub kept for them.
    let (peak, rss_before, rss_after_run) = (Cell::new(0u64), Cell::new(0u64), Cell::new(0u64));
    let (sampling, running) = (Cell::new(false), Cell::new(true));
    let sampler = async {
        while running.get() {
            if sampling.get()
                && let Ok(rss) = hub.rss_bytes()
            {
                peak.set(peak.get().max(rss));
            }
            Timer::after(Duration::from_millis(a.sample_ms.max(1))).await;
        }
    };
    let phases = async {
        let outcome = env
            .bounded(async {
                // Run-up: everyone reads.
                let mut runup_ns = Vec::new();
                for k in 0..a.runup {
                    let (sent, _) = broadcast(k).await?;
                    let i = k as usize;
                    tally.until(|| tally.have_all.borrow()[i] == n).await?;
                    runup_ns.push(tally.last_reader_ns.borrow()[i].saturating_sub(sent));
                }
                tally
                    .until(|| tally.parked.borrow().len() == a.slow as usize)
                    .await?;
                if let Some(s) = Summary::of(&mut runup_ns) {
                    report.num("runup_p50_ms", ms(s.p50), 3);
                    report.num("runup_max_ms", ms(s.max), 3);
                }

                // The slow clients have stopped reading.
                let dropped0 = control.stats().await?.dropped;
                let before = hub.rss_bytes()?;
                rss_before.set(before);
                peak.set(before);
                sampling.set(true);
                report.set("rss_before_bytes", before);
                say(&format!(
                    "{} slow clients stopped reading; hub RSS {:.1} MiB; {} broadcasts of {} bytes to go",
                    a.slow,
                    before as f64 / 1048576.0,
                    a.broadcasts,
                    a.size
                ));
                let mut main_ns = Vec::new();
                for k in a.runup..total {
                    let (sent, delivered) = broadcast(k).await?;
                    report.set("delivered_last", delivered);
                    let i = k as usize;
                    tally
                        .until(|| tally.have_readers.borrow()[i] == a.readers)
                        .await?;
                    main_ns.push(tally.last_reader_ns.borrow()[i].saturating_sub(sent));
                }
                rss_after_run.set(hub.rss_bytes()?);
                if let Some(s) = Summary::of(&mut main_ns) {
                    report.num("p50_ms", ms(s.p50), 3);
                    report.num("max_ms", ms(s.max), 3);
                }

                // The slow clients read again: what the hub kept for them, then
                // a close frame or EOF.
                tally.draining.set(true);
                for parked in tally.parked.take() {
                    pool.resume(parked);
                }
                smol::future::or(tally.changed.until(|| tally.slow_settled(total)), async {
                    Timer::after(DRAIN).await;
                })
                .await;
                let dropped = control.stats().await?.dropped;
                report.set("hub_dropped", dropped.saturating_sub(dropped0));
                Ok(())
            })
            .await
            .unwrap_or_else(|| Err(env.timed_out()));
        running.set(false);
        outcome
    };
    let ((), outcome) = smol::future::zip(sampler, phases).await;
    if outcome.is_ok() {
        Timer::after(SETTLE).await;
    }
    // Checked after `outcome`: a hub that died is better told by what the run
    // saw than by a missing /proc entry.
    let rss_after = hub.rss_bytes();
    let rss_before = rss_before.get();

    if let Ok(rss_after) = rss_after
        && rss_before > 0
    {
        let peak = peak.get().max(rss_after_run.get());
        report.set("rss_peak_bytes", peak);
        if rss_after_run.get() > 0 {
            report.set("rss_after_run_bytes", rss_after_run.get());
        }
        report.set("rss_after_bytes", rss_after);
        report.num(
            "rss_growth_per_slow_kib",
            peak.saturating_sub(rss_before) as f64 / 1024.0 / f64::from(a.slow),
            1,
        );
    }
    report.set("slow_disconnected", tally.slow_closed.get());
    report.set("slow_close_1008", tally.slow_close_1008.get());
    let per_client = tally.per_client.borrow();
    let readers_missing = per_client[..a.readers as usize]
        .iter()
        .filter(|&&c| c != total)
        .count();
    let slow_received_all = per_client[a.readers as usize..]
        .iter()
        .filter(|&&c| c >= total)
        .count();
    report.set("slow_received_all", slow_received_all);
    report.set("readers_received_all", readers_missing == 0);
    report.set("readers_missing", readers_missing);
    report.set("readers_closed", tally.readers_closed.get());
    report.set(
        "slow_received",
        per_client[a.readers as usize..].iter().sum::<u32>(),
    );
    if tally.misplaced.get() > 0 {
        report.set("misplaced", tally.misplaced.get());
    }
    outcome?;
    rss_after?;
    if readers_missing > 0 || tally.readers_closed.get() > 0 || tally.misplaced.get() > 0 {
        return Err(format!(
            "{readers_missing} readers missed broadcasts, {} readers were disconnected, \
             {} messages were not the broadcast expected next",
            tally.readers_closed.get(),
            tally.misplaced.get()
        ));
    }
    Ok(())
}
