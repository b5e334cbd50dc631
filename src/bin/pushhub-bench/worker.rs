//! Connections beyond one process's open-files limit: `conns` re-executes this
//! binary as `pushhub-bench worker --from A --to B ...`. A worker opens the
//! clients uA..u(B-1), prints one JSON "ready" line on stdout, and holds them
//! (answering pings) until its stdin closes or its timeout passes.
//!
//! The parent side, [`Worker`], lives here too: the two ends of one small
//! protocol.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use smol::io::{AsyncBufReadExt, BufReader};
use smol::process::{Child, ChildStdout, Command, Stdio};
use smol::{LocalExecutor, Timer};

use crate::args::WorkerArgs;
use crate::client::{ClientConfig, Ignore, Pool};
use crate::clock::{ms, now_ns};
use crate::common::{Env, credential};
use crate::net;
use crate::stream;

/// How long a worker may take to exit once its stdin is closed.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// The worker process.
pub fn main(a: &WorkerArgs) -> ExitCode {
    match serve(a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pushhub-bench worker: {e}");
            println!("{}", json!({"ready": false, "error": e}));
            ExitCode::from(1)
        }
    }
}

fn serve(a: &WorkerArgs) -> Result<ExitCode, String> {
    let ws = net::loopback_v4(a.ws)?;
    if a.from >= a.to {
        return Err("--from must be below --to".into());
    }
    let credential = credential(a.mode, a.secret_file.as_deref())?;
    let tls = a.tls.then(stream::connector).transpose()?;
    let ex = Rc::new(LocalExecutor::new());
    let config = ClientConfig {
        ws,
        sources: a.sources,
        concurrency: a.concurrency,
        credential,
        rcvbuf: None,
        tls,
    };
    let pool = Pool::new(Rc::clone(&ex), config, Rc::new(Ignore));
    let limit = Duration::from_secs(a.timeout_secs);
    let n = a.to - a.from;
    let started = now_ns();
    smol::block_on(ex.run(async {
        pool.spawn(a.from..a.to);
        let settled = smol::future::or(
            async {
                pool.settled(n).await;
                true
            },
            async {
                Timer::after(limit).await;
                false
            },
        )
        .await;
        let ok = settled && pool.failed() == 0;
        let line = json!({
            "ready": ok,
            "opened": pool.ready(),
            "failed": pool.failed(),
            "elapsed_ms": ms(now_ns() - started),
            "errors": pool.errors(),
        });
        let mut out = io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write the ready line: {e}"))?;
        drop(out);
        if !ok {
            return Ok(ExitCode::from(1));
        }
        // Hold the connections (their tasks keep answering pings) until the
        // parent closes our stdin, or the timeout passes.
        let stdin_closed = smol::unblock(|| io::copy(&mut io::stdin(), &mut io::sink()));
        smol::future::or(
            async {
                let _ = stdin_closed.await;
            },
            async {
                let left = limit.saturating_sub(Duration::from_nanos(now_ns() - started));
                Timer::after(left).await;
            },
        )
        .await;
        Ok(ExitCode::SUCCESS)
    }))
}

/// What a worker says once its connections are open.
#[derive(Debug, Deserialize)]
struct Ready {
    ready: bool,
    #[serde(default)]
    opened: u32,
    #[serde(default)]
    failed: u32,
    #[serde(default)]
    errors: Vec<String>,
    #[serde(default)]
    error: Option<String>,
}

/// The parent's handle on one worker process.
pub struct Worker {
    child: Child,
    stdout: BufReader<ChildStdout>,
    from: u32,
    to: u32,
}

impl Worker {
    /// Starts a worker for uids `from..to`, with the parent's client flags.
    pub fn spawn(env: &Env, from: u32, to: u32, timeout: Duration) -> Result<Worker, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let mut command = Command::new(exe);
        command
            .arg("worker")
            .args(["--from", &from.to_string(), "--to", &to.to_string()])
            .args(["--ws", &env.ws.to_string(), "--mode", env.mode.name()])
            .args(["--sources", &env.sources.to_string()])
            .args(["--concurrency", &env.concurrency.to_string()])
            .args(["--timeout-secs", &timeout.as_secs().max(1).to_string()])
            // The secret travels as a path or in the inherited environment,
            // never as a flag value.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(path) = env.args.secret_file.as_deref().map(Path::as_os_str) {
            command.arg("--secret-file").arg(path);
        }
        if env.args.tls {
            command.arg("--tls");
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start a worker process: {e}"))?;
        let stdout = child.stdout.take().ok_or("the worker has no stdout pipe")?;
        Ok(Worker {
            child,
            stdout: BufReader::new(stdout),
            from,
            to,
        })
    }

    /// Waits for the ready line; fails unless every connection is open.
    pub async fn ready(&mut self) -> Result<(), String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading a worker's ready line: {e}"))?;
        let ready: Ready = serde_json::from_str(&line).map_err(|e| {
            format!(
                "worker u{}..u{}: no ready line ({e}): {line:?}",
                self.from, self.to
            )
        })?;
        if !ready.ready || ready.failed > 0 {
            return Err(format!(
                "worker u{}..u{}: {} opened, {} failed: {}",
                self.from,
                self.to,
                ready.opened,
                ready.failed,
                ready.error.unwrap_or_else(|| ready.errors.join("; "))
            ));
        }
        Ok(())
    }
}

/// Closes every worker's stdin (each lets its connections go and exits), then
/// waits for them together, killing any that is still there after
/// [`EXIT_GRACE`].
pub async fn finish(mut workers: Vec<Worker>) {
    for worker in &mut workers {
        drop(worker.child.stdin.take());
    }
    let deadline = Instant::now() + EXIT_GRACE;
    for mut worker in workers {
        let exited = smol::future::or(async { worker.child.status().await.is_ok() }, async {
            Timer::at(deadline).await;
            false
        })
        .await;
        if !exited && worker.child.kill().is_ok() {
            // Reaped here rather than left to the runtime's reaper.
            let _ = worker.child.status().await;
        }
    }
}
