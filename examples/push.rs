//! A backend talking to pushhub's text port, with nothing but the standard
//! library and serde_json.
//!
//! Start a hub (`make run`, or `pushhub --allow-plain-uid`), connect a client as
//! `uid1` (open `examples/web.html`), then:
//!
//! ```text
//! cargo run --example push -- 127.0.0.1:5678 uid1 'hello'
//! ```
//!
//! Arguments, all optional: the text-port address (default `127.0.0.1:5678`),
//! the uid (default `uid1`) and the message (default `hello`).
//!
//! It sends three requests on one connection without waiting in between (the
//! hub answers them in order, one line each) and prints each reply:
//! 1. the Workerman original's form, `{"uid":..,...}`: the hub delivers the line
//!    itself and answers `ok` (the uid is online) or `fail`;
//! 2. a `push` command: the client receives `data`, the reply counts deliveries;
//! 3. a `stats` command.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:5678".to_string());
    let uid = args.next().unwrap_or_else(|| "uid1".to_string());
    let message = args.next().unwrap_or_else(|| "hello".to_string());

    let requests = [
        // The original form: no `cmd`; the whole line is what the client receives.
        json!({ "uid": uid, "message": message }),
        // A command: the client receives `data`; `id` comes back in the reply.
        json!({ "cmd": "push", "uid": uid, "data": message, "id": 1 }),
        json!({ "cmd": "stats", "id": 2 }),
    ];

    match send(&addr, &requests) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("push: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes every request, one JSON object per line, then reads and prints one
/// reply line per request: the hub answers in request order.
fn send(addr: &str, requests: &[Value]) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut batch = Vec::new();
    for request in requests {
        serde_json::to_writer(&mut batch, request)?;
        batch.push(b'\n');
    }
    (&stream).write_all(&batch)?;

    let mut replies = BufReader::new(&stream);
    let mut out = std::io::stdout().lock();
    for request in requests {
        let mut reply = String::new();
        if replies.read_line(&mut reply)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the hub closed the connection before answering",
            ));
        }
        writeln!(out, "> {request}\n< {}", reply.trim_end())?;
    }
    Ok(())
}
