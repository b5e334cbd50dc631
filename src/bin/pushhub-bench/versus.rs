//! `versus-table`: the side-by-side table of bench/versus.sh's latest run,
//! pushhub against uWebSockets.js, in Markdown. One row per figure: each
//! server's median over the run's rounds (with their range), the ratio
//! pushhub / uWS, and which of the two is better. With `--rewrite`, the
//! table replaces what a Markdown file holds between its [`BEGIN`] and
//! [`END`] lines (BENCHMARKS.md's section) instead of being printed.
//!
//! A run is the `versus-run` line that versus.sh writes first (date, N,
//! rounds, the machine, the servers' versions) and every line after it. The
//! line of a bench that failed (it has an `error`) is left out, and a figure
//! that a server has no line for is shown as not measured: nothing is
//! guessed.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::Value;

use crate::args::VersusTableArgs;

/// The line that opens the table's section in a Markdown file.
pub const BEGIN: &str = "<!-- versus:begin -->";
/// The line that closes it.
pub const END: &str = "<!-- versus:end -->";

pub fn main(a: &VersusTableArgs) -> ExitCode {
    match write_table(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushhub-bench versus-table: {e}");
            ExitCode::from(1)
        }
    }
}

fn write_table(a: &VersusTableArgs) -> Result<(), String> {
    let input = a.input.display();
    let jsonl =
        std::fs::read_to_string(&a.input).map_err(|e| format!("cannot read {input}: {e}"))?;
    let run = Run::latest(&jsonl)
        .ok_or_else(|| format!("no bench/versus.sh run in {input} (no versus-run line)"))??;
    let table = table(&run);
    let Some(path) = &a.rewrite else {
        print!("{table}");
        return Ok(());
    };
    let shown = path.display();
    let doc = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let doc = rewrite(&doc, &table).map_err(|e| format!("{shown}: {e}"))?;
    std::fs::write(path, doc).map_err(|e| format!("cannot write {shown}: {e}"))?;
    eprintln!("rewrote the side-by-side table in {shown}");
    Ok(())
}

/// What versus.sh says of its run, in the line it writes first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Meta {
    pub date: String,
    pub n: u64,
    pub repeats: u64,
    pub nproc: u64,
    pub kernel: String,
    /// Servers on CPU 0 and the generator on CPU 1 (taskset).
    #[serde(default)]
    pub pinned: bool,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub uws: Option<String>,
    /// uWS's broadcast: `loop` (a send per connection) or `publish` (a topic).
    #[serde(default)]
    pub uws_broadcast: Option<String>,
    /// The pushhub measured: the repository's commit, or the build given.
    #[serde(default)]
    pub pushhub: Option<String>,
}

/// The two servers, by the `server` of their lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Pushhub,
    Uws,
}

impl Server {
    fn key(self) -> &'static str {
        match self {
            Server::Pushhub => "pushhub",
            Server::Uws => "uws",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Server::Pushhub => "pushhub",
            Server::Uws => "uWS",
        }
    }
}

/// One run: its description and its benches' lines.
#[derive(Debug)]
pub struct Run {
    pub meta: Meta,
    pub lines: Vec<Value>,
}

impl Run {
    /// The last run of `jsonl`; `None` if it has none, an error if its
    /// `versus-run` line does not say what a run must.
    pub fn latest(jsonl: &str) -> Option<Result<Run, String>> {
        let mut run = None;
        for line in jsonl.lines() {
            let Ok(value) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if value["bench"] == "versus-run" {
                run = Some(
                    serde_json::from_value(value)
                        .map(|meta| Run {
                            meta,
                            lines: Vec::new(),
                        })
                        .map_err(|e| format!("a versus-run line without what it must say: {e}")),
                );
            } else if let Some(Ok(run)) = &mut run {
                run.lines.push(value);
            }
        }
        run
    }

    /// The lines of `server` for `bench`, over wss or not, that succeeded.
    fn results(&self, server: Server, bench: &str, tls: bool) -> impl Iterator<Item = &Value> {
        self.lines.iter().filter(move |v| {
            v["server"] == server.key()
                && v["bench"] == bench
                && (v["tls"] == true) == tls
                && v.get("error").is_none()
        })
    }

    /// `figure`'s value in each of `server`'s successful lines, one a round.
    pub fn values(&self, server: Server, figure: &Figure) -> Vec<f64> {
        self.results(server, figure.bench, figure.tls)
            .filter_map(|v| v[figure.key].as_f64())
            .collect()
    }

    /// The rounds in which `server`'s `bench` failed.
    fn failed_rounds(&self, server: Server, bench: &str, tls: bool) -> Vec<u64> {
        self.lines
            .iter()
            .filter(|v| {
                v["server"] == server.key()
                    && v["bench"] == bench
                    && (v["tls"] == true) == tls
                    && v.get("error").is_some()
            })
            .filter_map(|v| v["round"].as_u64())
            .collect()
    }

    /// Why `server` has no value for `figure`.
    fn why_missing(&self, server: Server, figure: &Figure) -> Missing {
        let failed = self.failed_rounds(server, figure.bench, figure.tls);
        if !failed.is_empty() {
            Missing::Failed(failed)
        } else if self
            .results(server, figure.bench, figure.tls)
            .next()
            .is_some()
        {
            Missing::NotInResults
        } else {
            Missing::NotRun
        }
    }

    /// What `server` negotiated over wss (versus.sh's `tls_negotiated`),
    /// each distinct value once.
    fn negotiated(&self, server: Server) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for v in self.lines.iter().filter(|v| v["server"] == server.key()) {
            if let Some(tls) = v["tls_negotiated"].as_str().filter(|t| !t.is_empty())
                && !seen.contains(&tls)
            {
                seen.push(tls);
            }
        }
        seen
    }
}

/// Why a server has no value for a figure.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Missing {
    /// Its bench is not in the run.
    NotRun,
    /// Its bench failed in these rounds (and succeeded in none).
    Failed(Vec<u64>),
    /// Its bench succeeded without this figure (a slope needs two steps).
    NotInResults,
}

impl Missing {
    /// What the table's cell says.
    fn cell(&self) -> String {
        match self {
            Missing::NotRun => "not run".into(),
            Missing::Failed(rounds) => {
                let rounds: Vec<String> = rounds.iter().map(u64::to_string).collect();
                format!("failed (round {})", rounds.join(", "))
            }
            Missing::NotInResults => "not in its results".into(),
        }
    }
}

/// How a figure is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes, shown in MiB.
    Mib,
    Bytes,
    Micros,
    PerSecond,
}

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// One row: a figure of a bench's JSON line.
#[derive(Debug)]
pub struct Figure {
    pub what: &'static str,
    pub bench: &'static str,
    pub tls: bool,
    pub key: &'static str,
    pub unit: Unit,
    pub better: Better,
}

const fn figure(
    what: &'static str,
    bench: &'static str,
    tls: bool,
    key: &'static str,
    unit: Unit,
    better: Better,
) -> Figure {
    Figure {
        what,
        bench,
        tls,
        key,
        unit,
        better,
    }
}

/// The rows, in order.
pub const FIGURES: [Figure; 14] = [
    figure(
        "idle RSS",
        "conns",
        false,
        "idle_rss_bytes",
        Unit::Mib,
        Better::Lower,
    ),
    figure(
        "idle RSS, serving wss",
        "conns",
        true,
        "idle_rss_bytes",
        Unit::Mib,
        Better::Lower,
    ),
    figure(
        "RSS per idle ws connection",
        "conns",
        false,
        "slope_bytes_per_conn",
        Unit::Bytes,
        Better::Lower,
    ),
    figure(
        "RSS per idle wss connection",
        "conns",
        true,
        "slope_bytes_per_conn",
        Unit::Bytes,
        Better::Lower,
    ),
    figure(
        "CPU per connect + login, ws",
        "conns",
        false,
        "hub_cpu_us_per_conn",
        Unit::Micros,
        Better::Lower,
    ),
    figure(
        "CPU per connect + TLS handshake + login, wss",
        "conns",
        true,
        "hub_cpu_us_per_conn",
        Unit::Micros,
        Better::Lower,
    ),
    figure(
        "CPU per delivered broadcast message, ws (one broadcast at a time)",
        "broadcast",
        false,
        "single_hub_cpu_us_per_msg",
        Unit::Micros,
        Better::Lower,
    ),
    figure(
        "CPU per delivered broadcast message, wss (one broadcast at a time)",
        "broadcast",
        true,
        "single_hub_cpu_us_per_msg",
        Unit::Micros,
        Better::Lower,
    ),
    figure(
        "back-to-back broadcasts, ws: messages delivered per second",
        "broadcast",
        false,
        "burst_msgs_per_s",
        Unit::PerSecond,
        Better::Higher,
    ),
    figure(
        "back-to-back broadcasts, wss: messages delivered per second",
        "broadcast",
        true,
        "burst_msgs_per_s",
        Unit::PerSecond,
        Better::Higher,
    ),
    figure(
        "push latency p50 at a fixed rate",
        "push",
        false,
        "p50_us",
        Unit::Micros,
        Better::Lower,
    ),
    figure(
        "push latency p99 at a fixed rate",
        "push",
        false,
        "p99_us",
        Unit::Micros,
        Better::Lower,
    ),
    figure(
        "pipelined pushes per second, every one delivered",
        "pushmax",
        false,
        "pushes_per_s",
        Unit::PerSecond,
        Better::Higher,
    ),
    figure(
        "CPU per pipelined push",
        "pushmax",
        false,
        "hub_cpu_us_per_push",
        Unit::Micros,
        Better::Lower,
    ),
];

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// `x` with a comma between each group of three digits, no decimals.
fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if x.round() < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// `x` as a number in `unit`, without the unit's name.
fn number(x: f64, unit: Unit) -> String {
    match unit {
        Unit::Mib => format!("{:.1}", x / 1048576.0),
        Unit::Micros if x.abs() < 10.0 => format!("{x:.2}"),
        Unit::Micros if x.abs() < 100.0 => format!("{x:.1}"),
        Unit::Bytes | Unit::Micros | Unit::PerSecond => grouped(x),
    }
}

fn with_unit(x: f64, unit: Unit) -> String {
    let n = number(x, unit);
    match unit {
        Unit::Mib => format!("{n} MiB"),
        Unit::Bytes => format!("{n} B"),
        Unit::Micros => format!("{n} µs"),
        Unit::PerSecond => format!("{n} /s"),
    }
}

/// A server's cell: the median, and the range when there are several rounds.
fn cell(values: &[f64], unit: Unit) -> Option<String> {
    let mid = median(values)?;
    let mut text = with_unit(mid, unit);
    if values.len() > 1 {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let _ = write!(text, " ({}–{})", number(min, unit), number(max, unit));
    }
    Some(text)
}

/// The server whose median is better, by `better`.
fn winner(pushhub: f64, uws: f64, better: Better) -> &'static str {
    let pushhub_wins = match better {
        Better::Lower => pushhub < uws,
        Better::Higher => pushhub > uws,
    };
    if pushhub == uws {
        "equal"
    } else if pushhub_wins {
        Server::Pushhub.name()
    } else {
        Server::Uws.name()
    }
}

/// The bench's parameters, from a line of it that succeeded, for the notes.
fn parameters(run: &Run, bench: &str) -> Option<String> {
    let v = run
        .results(Server::Pushhub, bench, false)
        .chain(run.results(Server::Uws, bench, false))
        .next()?;
    let num = |key: &str| v[key].as_f64().map(grouped).unwrap_or_else(|| "?".into());
    Some(match bench {
        "conns" => {
            let steps: Vec<String> = v["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["n"].as_f64().map(grouped))
                .collect();
            format!(
                "`conns`: RSS read idle, then at {} connections; the slope is the least-squares \
                 one over those readings",
                steps.join(", ")
            )
        }
        "broadcast" => format!(
            "`broadcast`: {}-byte messages to {} clients, {} one at a time, then {} written back \
             to back",
            num("size"),
            num("n"),
            num("repeats"),
            num("burst")
        ),
        "push" => format!(
            "`push`: {} pushes/s for {} s to random uids among {} clients",
            num("rate"),
            num("duration_secs"),
            num("n")
        ),
        "pushmax" => format!(
            "`pushmax`: {} pushes to random uids among {} clients, {} in flight",
            num("pushes"),
            num("n"),
            num("window")
        ),
        _ => return None,
    })
}

/// The Markdown: a paragraph on the run, the table, then notes.
pub fn table(run: &Run) -> String {
    let m = &run.meta;
    let mut out = String::new();
    let unknown = || "?".to_string();
    let broadcast = match m.uws_broadcast.as_deref() {
        Some("publish") => "broadcasting through a uWS topic (`publish`)",
        _ => "broadcasting with a send per connection (`loop`, as the original)",
    };
    let _ = writeln!(
        out,
        "Run of {}: N = {}, {} round{} alternating pushhub and uWS{}. {} cores, Linux {}. \
         Node.js {}, uWebSockets.js {}, {broadcast}; pushhub: {}. Medians over the rounds, \
         with their range.",
        m.date,
        grouped(m.n as f64),
        m.repeats,
        if m.repeats == 1 { "" } else { "s" },
        if m.pinned {
            ", each server on CPU 0 and the generator on CPU 1"
        } else {
            ", unpinned"
        },
        m.nproc,
        m.kernel,
        m.node.clone().unwrap_or_else(unknown),
        m.uws.clone().unwrap_or_else(unknown),
        m.pushhub.clone().unwrap_or_else(unknown),
    );
    out.push('\n');
    out.push_str("| figure | pushhub | uWS | pushhub / uWS | better |\n");
    out.push_str("|---|---|---|---|---|\n");
    let mut not_run = Vec::new();
    for f in &FIGURES {
        let (ours, theirs) = (run.values(Server::Pushhub, f), run.values(Server::Uws, f));
        let missing = |server: Server| run.why_missing(server, f);
        if ours.is_empty()
            && theirs.is_empty()
            && missing(Server::Pushhub) == Missing::NotRun
            && missing(Server::Uws) == Missing::NotRun
        {
            not_run.push(f.what);
            continue;
        }
        let shown = |values: &[f64], server: Server| {
            cell(values, f.unit).unwrap_or_else(|| missing(server).cell())
        };
        let (a, b) = (shown(&ours, Server::Pushhub), shown(&theirs, Server::Uws));
        let (ratio, better) = match (median(&ours), median(&theirs)) {
            (Some(p), Some(u)) if u != 0.0 => (format!("{:.2}×", p / u), winner(p, u, f.better)),
            _ => ("".into(), ""),
        };
        let _ = writeln!(out, "| {} | {a} | {b} | {ratio} | {better} |", f.what);
    }
    out.push('\n');
    if !not_run.is_empty() {
        let _ = writeln!(out, "Not in this run: {}.\n", not_run.join("; "));
    }
    let notes: Vec<String> = ["conns", "broadcast", "push", "pushmax"]
        .iter()
        .filter_map(|bench| parameters(run, bench))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "{}.", notes.join("; "));
    }
    let tls: Vec<String> = [Server::Pushhub, Server::Uws]
        .iter()
        .filter_map(|&server| {
            let seen = run.negotiated(server);
            (!seen.is_empty()).then(|| format!("{} {}", server.name(), seen.join(" or ")))
        })
        .collect();
    if !tls.is_empty() {
        let _ = writeln!(
            out,
            "\nOver wss, with an OpenSSL client such as the generator's, each server \
             negotiated: {}.",
            tls.join("; ")
        );
    }
    out
}

/// `doc` with the lines between its [`BEGIN`] and [`END`] lines replaced by
/// `table`, a blank line on each side.
pub fn rewrite(doc: &str, table: &str) -> Result<String, String> {
    let line_at = |marker: &str| {
        let mut at = 0;
        for line in doc.split_inclusive('\n') {
            if line.trim_end() == marker {
                return Some((at, at + line.len()));
            }
            at += line.len();
        }
        None
    };
    let (Some((_, body)), Some((end, _))) = (line_at(BEGIN), line_at(END)) else {
        return Err(format!("no {BEGIN} line followed by an {END} line"));
    };
    if end < body {
        return Err(format!("{END} comes before {BEGIN}"));
    }
    Ok(format!(
        "{}\n{}\n{}",
        &doc[..body],
        table.trim_end_matches('\n').to_owned() + "\n",
        &doc[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = r#"{"bench":"versus-run","date":"2026-12-04","n":2000,"repeats":2,"nproc":2,"kernel":"6.18.0","pinned":true,"node":"v20.20.2","uws":"20.30.0","uws_broadcast":"loop","pushhub":"abc1234"}"#;

    fn run_of(lines: &[&str]) -> Run {
        let mut jsonl = String::from(META);
        for line in lines {
            jsonl.push('\n');
            jsonl.push_str(line);
        }
        Run::latest(&jsonl).unwrap().unwrap()
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0]), Some(3.0));
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn takes_the_last_run_only() {
        let jsonl = format!(
            "{META}\n{}\nnot json\n{}\n{}\n",
            r#"{"server":"pushhub","round":1,"bench":"pushmax","pushes_per_s":1}"#,
            META.replace("2026-12-04", "2026-12-05"),
            r#"{"server":"pushhub","round":1,"bench":"pushmax","pushes_per_s":2}"#,
        );
        let run = Run::latest(&jsonl).unwrap().unwrap();
        assert_eq!(run.meta.date, "2026-12-05");
        assert_eq!(run.meta.n, 2000);
        assert_eq!(run.lines.len(), 1);
        assert!(Run::latest(r#"{"bench":"conns"}"#).is_none());
        assert!(
            Run::latest(r#"{"bench":"versus-run","date":"x"}"#)
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn values_by_server_bench_and_tls_without_failures() {
        let run = run_of(&[
            r#"{"server":"pushhub","round":1,"bench":"conns","slope_bytes_per_conn":740.0}"#,
            r#"{"server":"pushhub","round":1,"bench":"conns","tls":true,"slope_bytes_per_conn":13800.0}"#,
            r#"{"server":"uws","round":1,"bench":"conns","slope_bytes_per_conn":1100.0}"#,
            r#"{"server":"pushhub","round":2,"bench":"conns","slope_bytes_per_conn":730.0}"#,
            r#"{"server":"uws","round":2,"bench":"conns","slope_bytes_per_conn":900.0,"error":"x"}"#,
        ]);
        let ws = &FIGURES[2];
        assert_eq!(ws.key, "slope_bytes_per_conn");
        assert!(!ws.tls);
        assert_eq!(run.values(Server::Pushhub, ws), [740.0, 730.0]);
        assert_eq!(run.values(Server::Uws, ws), [1100.0]);
        assert_eq!(run.values(Server::Pushhub, &FIGURES[3]), [13800.0]);
        assert_eq!(run.failed_rounds(Server::Uws, "conns", false), [2]);
    }

    #[test]
    fn the_table_compares_medians_and_says_what_is_missing() {
        let run = run_of(&[
            r#"{"server":"pushhub","round":1,"bench":"pushmax","n":2000,"window":2000,"pushes":300000,"pushes_per_s":120000}"#,
            r#"{"server":"uws","round":1,"bench":"pushmax","pushes_per_s":60000}"#,
            r#"{"server":"pushhub","round":2,"bench":"pushmax","pushes_per_s":100000}"#,
            r#"{"server":"uws","round":2,"bench":"pushmax","pushes_per_s":40000}"#,
            r#"{"server":"pushhub","round":1,"bench":"push","p99_us":90.0}"#,
            r#"{"server":"uws","round":1,"bench":"push","p99_us":45.0}"#,
            r#"{"server":"uws","round":1,"bench":"conns","tls":true,"error":"timed out","tls_negotiated":"TLSv1.3 X"}"#,
            r#"{"server":"pushhub","round":1,"bench":"conns","tls":true,"idle_rss_bytes":1048576,"tls_negotiated":"TLSv1.2 Y"}"#,
        ]);
        let table = table(&run);
        assert!(
            table.starts_with("Run of 2026-12-04: N = 2,000, 2 rounds"),
            "{table}"
        );
        assert!(
            table.contains(
                "| pipelined pushes per second, every one delivered | 110,000 /s (100,000–120,000) \
                 | 50,000 /s (40,000–60,000) | 2.20× | pushhub |"
            ),
            "{table}"
        );
        assert!(
            table
                .contains("| push latency p99 at a fixed rate | 90.0 µs | 45.0 µs | 2.00× | uWS |"),
            "{table}"
        );
        assert!(!table.contains("| idle RSS |"), "{table}");
        assert!(table.contains("Not in this run: idle RSS; RSS per idle ws connection;"));
        assert!(table.contains("| idle RSS, serving wss | 1.0 MiB | failed (round 1) |  |  |"));
        assert!(table.contains(
            "| RSS per idle wss connection | not in its results | failed (round 1) |  |  |"
        ));
        assert!(table.contains("negotiated: pushhub TLSv1.2 Y; uWS TLSv1.3 X."));
        assert!(table.contains("`pushmax`: 300,000 pushes to random uids among 2,000 clients"));
    }

    #[test]
    fn numbers() {
        assert_eq!(grouped(1234567.4), "1,234,567");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(-1234.0), "-1,234");
        assert_eq!(with_unit(5337088.0, Unit::Mib), "5.1 MiB");
        assert_eq!(with_unit(13778.0, Unit::Bytes), "13,778 B");
        assert_eq!(with_unit(7.854, Unit::Micros), "7.85 µs");
        assert_eq!(with_unit(34.04, Unit::Micros), "34.0 µs");
        assert_eq!(with_unit(225.4, Unit::Micros), "225 µs");
        assert_eq!(with_unit(2209530.0, Unit::PerSecond), "2,209,530 /s");
        assert_eq!(winner(1.0, 2.0, Better::Lower), "pushhub");
        assert_eq!(winner(1.0, 2.0, Better::Higher), "uWS");
        assert_eq!(winner(2.0, 2.0, Better::Higher), "equal");
    }

    #[test]
    fn rewrites_between_the_markers() {
        let doc = format!("# B\n\nintro\n{BEGIN}\nold\ntable\n{END}\nafter\n");
        let new = rewrite(&doc, "| a |\n").unwrap();
        assert_eq!(
            new,
            format!("# B\n\nintro\n{BEGIN}\n\n| a |\n\n{END}\nafter\n")
        );
        // Again: the same document.
        assert_eq!(rewrite(&new, "| a |").unwrap(), new);
        assert!(rewrite("no markers\n", "x").is_err());
        assert!(rewrite(&format!("{END}\n{BEGIN}\n"), "x").is_err());
        assert!(rewrite(&format!("{BEGIN}\n"), "x").is_err());
    }
}
