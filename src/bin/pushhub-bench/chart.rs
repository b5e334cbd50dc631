//! `chart`: draws the hub's RSS against its connection count as an SVG, from
//! the `conns` results the generator wrote (one JSON line per run), and the
//! latest `subs` result as a bar at its connection count: the hub's RSS with
//! those connections idle, and once each has its subscriptions.
//!
//! Hand-written SVG: a few lines and labels do not need a plotting library.
//! The reference lines are the per-connection costs the project aims at and the
//! ones measured for the servers users pick instead (see BENCHMARKS.md).

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::Value;

use crate::args::ChartArgs;

/// Reads the results, writes the SVG.
pub fn main(args: &ChartArgs) -> ExitCode {
    let results = match std::fs::read_to_string(&args.input) {
        Ok(text) => text,
        Err(e) => {
            eprintln!(
                "pushhub-bench chart: cannot read {}: {e}",
                args.input.display()
            );
            return ExitCode::from(2);
        }
    };
    let series = series_from_results(&results);
    if series.is_empty() {
        eprintln!(
            "pushhub-bench chart: no `conns` result in {}: run `make bench-load` first",
            args.input.display()
        );
        return ExitCode::from(2);
    }
    let subs = subs_from_results(&results);
    if let Err(e) = std::fs::write(&args.output, svg(&series, subs.as_ref())) {
        eprintln!(
            "pushhub-bench chart: cannot write {}: {e}",
            args.output.display()
        );
        return ExitCode::from(1);
    }
    eprintln!("wrote {}", args.output.display());
    ExitCode::SUCCESS
}

/// One measured series: (connections, RSS bytes) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Reads every `conns` line of `jsonl` but the wss ones (`--tls`); the latest
/// run of each mode is kept.
pub fn series_from_results(jsonl: &str) -> Vec<Series> {
    let mut by_mode: Vec<Series> = Vec::new();
    for line in jsonl.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["bench"] != "conns" || v["tls"] == true {
            continue;
        }
        let mode = v["mode"].as_str().unwrap_or("plain").to_string();
        let mut points = vec![(0.0, v["idle_rss_bytes"].as_f64().unwrap_or(0.0))];
        for step in v["steps"].as_array().into_iter().flatten() {
            if let (Some(n), Some(rss)) = (step["n"].as_f64(), step["rss_bytes"].as_f64()) {
                points.push((n, rss));
            }
        }
        let label = format!("pushhub, {mode} mode");
        by_mode.retain(|s| s.label != label);
        by_mode.push(Series { label, points });
    }
    by_mode
}

/// A `subs` result: the hub's RSS at `n` connections, before and after each
/// was subscribed to `per_client` channels.
#[derive(Debug, PartialEq)]
pub struct Subs {
    pub n: f64,
    pub per_client: u64,
    pub connected: f64,
    pub subscribed: f64,
    pub bytes_per_subscription: f64,
}

/// The latest `subs` line of `jsonl` that succeeded (not over wss), if any.
pub fn subs_from_results(jsonl: &str) -> Option<Subs> {
    jsonl
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["bench"] == "subs" && v["tls"] != true && v.get("error").is_none())
        .find_map(|v| {
            Some(Subs {
                n: v["n"].as_f64()?,
                per_client: v["per_client"].as_u64()?,
                connected: v["rss_connected_bytes"].as_f64()?,
                subscribed: v["rss_subscribed_bytes"].as_f64()?,
                bytes_per_subscription: v["bytes_per_subscription"].as_f64()?,
            })
        })
}

/// Per-connection costs drawn as dashed lines from the idle RSS: (label, KiB).
const REFERENCES: [(&str, f64); 4] = [
    ("Workerman+event 5.4 KiB/conn", 5.4),
    ("Node ws 5.3 KiB/conn", 5.3),
    ("target 2 KiB/conn", 2.0),
    ("uWebSockets 1.0 KiB/conn = goal", 1.0),
];

/// A round step that cuts `max` into about five intervals: 1, 2 or 5 × 10^k.
fn nice_step(max: f64) -> f64 {
    let rough = (max / 5.0).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= rough)
        .unwrap_or(10.0 * magnitude)
}

/// The SVG document for `series`, and `subs` as a bar.
pub fn svg(series: &[Series], subs: Option<&Subs>) -> String {
    const W: f64 = 720.0;
    const H: f64 = 440.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 250.0;
    const TOP: f64 = 30.0;
    const BOTTOM: f64 = 50.0;
    let max_n = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1000.0, f64::max);
    let n_step = nice_step(max_n);
    let max_n = (max_n / n_step).ceil() * n_step;
    let idle = series
        .iter()
        .filter_map(|s| s.points.first().map(|p| p.1))
        .fold(f64::INFINITY, f64::min);
    let idle = if idle.is_finite() { idle } else { 0.0 };
    let max_rss = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(REFERENCES.iter().map(|r| idle + r.1 * 1024.0 * max_n))
        .chain(subs.map(|s| s.subscribed))
        .fold(1.0, f64::max);
    let rss_step = nice_step(max_rss / (1024.0 * 1024.0)) * 1024.0 * 1024.0;
    let max_rss = (max_rss / rss_step).ceil() * rss_step;
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |n: f64| LEFT + n / max_n * plot_w;
    let y = |rss: f64| TOP + plot_h - rss / max_rss * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="14">Hub RSS against idle authenticated connections</text>"#
    );
    // Axes and grid.
    for i in 0..=(max_n / n_step).round() as u32 {
        let n = n_step * f64::from(i);
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}" stroke="#eee"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{3:.0}</text>"##,
            x(n),
            TOP + plot_h,
            TOP + plot_h + 16.0,
            n
        );
    }
    for i in 0..=(max_rss / rss_step).round() as u32 {
        let rss = rss_step * f64::from(i);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#eee"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{4:.0}</text>"##,
            y(rss),
            LEFT + plot_w,
            LEFT - 6.0,
            y(rss) + 4.0,
            mib(rss)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{0:.1}" y="{1:.1}" text-anchor="middle">connections</text><text x="16" y="{2:.1}" transform="rotate(-90 16 {2:.1})" text-anchor="middle">RSS (MiB)</text>"#,
        LEFT + plot_w / 2.0,
        H - 12.0,
        TOP + plot_h / 2.0
    );
    let mut legend_y = TOP + 10.0;
    let mut legend = |out: &mut String, color: &str, dash: &str, label: &str| {
        let _ = writeln!(
            out,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{3:.1}" y="{4:.1}">{label}</text>"#,
            LEFT + plot_w + 12.0,
            legend_y,
            LEFT + plot_w + 36.0,
            LEFT + plot_w + 42.0,
            legend_y + 4.0
        );
        legend_y += 20.0;
    };
    let greys = ["#b55", "#c84", "#888", "#58a"];
    for ((label, kib), color) in REFERENCES.iter().zip(greys) {
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-dasharray="5 4"/>"#,
            x(0.0),
            y(idle),
            x(max_n),
            y(idle + kib * 1024.0 * max_n)
        );
        legend(&mut out, color, "5 4", label);
    }
    let colors = ["#000", "#d0a", "#0a8"];
    for (s, color) in series.iter().zip(colors.iter().cycle()) {
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(n, rss)| format!("{:.1},{:.1}", x(n), y(rss)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5"/>"#,
            path.join(" ")
        );
        for &(n, rss) in &s.points {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                x(n),
                y(rss)
            );
        }
        legend(&mut out, color, "", &s.label);
    }
    if let Some(s) = subs {
        const COLOR: &str = "#a60";
        let _ = writeln!(
            out,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="{COLOR}" stroke-width="3"/><circle cx="{0:.1}" cy="{2:.1}" r="4" fill="{COLOR}"/>"#,
            x(s.n),
            y(s.connected),
            y(s.subscribed)
        );
        let label = format!(
            "+{} subscriptions each: {:.0} B/sub",
            s.per_client, s.bytes_per_subscription
        );
        legend(&mut out, COLOR, "", &label);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_ws_conns_run_of_each_mode() {
        let jsonl = concat!(
            r#"{"bench":"conns","mode":"plain","idle_rss_bytes":1000,"steps":[{"n":10,"rss_bytes":2000}]}"#,
            "\n",
            r#"{"bench":"floor","cpu_us_per_send":12.0}"#,
            "\nnot json\n",
            r#"{"bench":"conns","mode":"plain","idle_rss_bytes":1000,"steps":[{"n":10,"rss_bytes":1500},{"n":20,"rss_bytes":2500}]}"#,
            "\n",
            // wss is not drawn.
            r#"{"bench":"conns","mode":"plain","tls":true,"idle_rss_bytes":1000,"steps":[{"n":10,"rss_bytes":9000}]}"#,
            "\n"
        );
        let series = series_from_results(jsonl);
        assert_eq!(series.len(), 1);
        assert_eq!(
            series[0].points,
            [(0.0, 1000.0), (10.0, 1500.0), (20.0, 2500.0)]
        );
        let svg = svg(&series, None);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("pushhub, plain mode"));
    }

    #[test]
    fn keeps_the_latest_successful_subs_run() {
        let jsonl = concat!(
            r#"{"bench":"subs","n":10,"per_client":2,"rss_connected_bytes":100,"rss_subscribed_bytes":200,"bytes_per_subscription":5.0}"#,
            "\n",
            r#"{"bench":"subs","n":20,"per_client":10,"rss_connected_bytes":1000,"rss_subscribed_bytes":8000,"bytes_per_subscription":35.2}"#,
            "\n",
            // A run that failed is not drawn.
            r#"{"bench":"subs","n":30,"per_client":10,"rss_connected_bytes":1000,"rss_subscribed_bytes":9000,"bytes_per_subscription":40.0,"error":"x"}"#,
            "\n"
        );
        let subs = subs_from_results(jsonl).unwrap();
        assert_eq!((subs.n, subs.subscribed), (20.0, 8000.0));
        let series = [Series {
            label: "pushhub, plain mode".into(),
            points: vec![(0.0, 500.0), (20.0, 1000.0)],
        }];
        assert!(svg(&series, Some(&subs)).contains("+10 subscriptions each: 35 B/sub"));
        assert_eq!(subs_from_results(r#"{"bench":"conns"}"#), None);
    }

    #[test]
    fn round_steps() {
        assert_eq!(nice_step(18_000.0), 5000.0);
        assert_eq!(nice_step(100.0), 20.0);
        assert_eq!(nice_step(9.0), 2.0);
        assert_eq!(nice_step(1.0), 0.2);
    }
}
