//! An echo backend: every message a client sends comes back to that same
//! connection, text as text and binary as binary. It is what the WebSocket
//! conformance run (`make conformance`) puts behind the hub, and a model of a
//! backend that answers clients.
//!
//! ```text
//! pushhub --allow-anonymous --upstream --ws 127.0.0.1:1234 --text 127.0.0.1:5678 &
//! cargo run --example echo -- --text 127.0.0.1:5678
//! ```
//!
//! It sends `{"cmd":"listen"}`, then turns each event
//! `{"event":"message","conn":C,"d":D[,"binary":true]}` into
//! `{"cmd":"push","conn":C,"data":D[,"binary":true]}`. `conn` and `d` are
//! copied as the hub wrote them (the JSON string of the text, or the base64
//! of the bytes), so nothing is decoded or re-escaped on the way back. It
//! exits when the hub closes the connection (status 0), or on an error reply
//! or a broken connection (status 1).
//!
//! Two threads: one reads the hub, one writes to it. The hub answers every
//! push and may stop reading requests while its answers are not read, so a
//! backend that pipelines must keep reading while it writes, or both sides
//! wait for each other. What waits between the threads is bounded by
//! `--max-pending`; past it a message is not echoed, and that is logged.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

use argh::FromArgs;
use pushhub::config::parse_size;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Echo every client message back to its connection, through the text port.
#[derive(FromArgs)]
struct Args {
    /// the hub's text port [default: 127.0.0.1:5678]
    #[argh(option, default = "String::from(\"127.0.0.1:5678\")")]
    text: String,

    /// longest line taken from the hub, e.g. 64MiB; an event for a client
    /// message of N bytes is about N bytes of JSON text, or 4N/3 of base64 for
    /// a binary one [default: 64MiB]
    #[argh(option, default = "64 << 20", from_str_fn(parse_size))]
    max_line_length: usize,

    /// bytes of echoes read but not yet written to the hub; a message past it
    /// is dropped, unless nothing is waiting [default: 64MiB]
    #[argh(option, default = "64 << 20", from_str_fn(parse_size))]
    max_pending: usize,
}

/// A line from the hub: a reply to one of our requests (it has `ok`) or an
/// event (it has `event`). Fields we do not use are ignored.
#[derive(Deserialize)]
struct Line<'a> {
    ok: Option<bool>,
    error: Option<String>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    conn: Option<&'a RawValue>,
    #[serde(borrow)]
    d: Option<&'a RawValue>,
    #[serde(default)]
    binary: bool,
}

#[derive(Serialize)]
struct Push<'a> {
    cmd: &'static str,
    conn: &'a RawValue,
    data: &'a RawValue,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    binary: bool,
}

/// A line held while it is read: past this, its buffer is given back once
/// the line is handled, so one large message does not keep a large buffer.
const KEPT_LINE: usize = 1 << 20;

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    match run(&args) {
        Ok(()) => {
            eprintln!("echo: the hub closed the connection");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo: {}: {e}", args.text);
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let stream = TcpStream::connect(&args.text).map_err(|e| format!("cannot connect: {e}"))?;
    let mut writer = stream
        .try_clone()
        .map_err(|e| format!("cannot share the socket: {e}"))?;
    writer
        .write_all(b"{\"cmd\":\"listen\"}\n")
        .map_err(|e| format!("cannot send listen: {e}"))?;

    let pending = Arc::new(AtomicUsize::new(0));
    let (to_writer, from_reader) = mpsc::channel::<Vec<u8>>();
    let written = Arc::clone(&pending);
    let writer = thread::spawn(move || write_loop(writer, &from_reader, &written));

    let read = read_loop(&stream, args, &to_writer, &pending);
    drop(to_writer);
    if read.is_err() {
        // Nothing more is worth writing, and a writer blocked on a hub that
        // does not read would never end.
        let _ = stream.shutdown(Shutdown::Both);
    }
    // The writer ends once it has written what was queued, or at its first
    // error.
    let write = writer
        .join()
        .unwrap_or_else(|_| Err("the writer thread panicked".into()));
    match read? {
        // Echoes still queued when the hub left have nobody to go to.
        Ended::HubClosed => Ok(()),
        Ended::WriterStopped => write.map_err(|e| format!("writing to the hub failed: {e}")),
    }
}

/// Why reading stopped without an error of its own.
enum Ended {
    HubClosed,
    /// The writer gave up (its error is the one to report).
    WriterStopped,
}

fn read_loop(
    stream: &TcpStream,
    args: &Args,
    to_writer: &mpsc::Sender<Vec<u8>>,
    pending: &AtomicUsize,
) -> Result<Ended, String> {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = Vec::new();
    let mut listening = false;
    let mut dropped = 0u64;
    loop {
        line.clear();
        if line.capacity() > KEPT_LINE {
            line = Vec::new();
        }
        let limit = args.max_line_length as u64 + 1;
        let n = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading from the hub failed: {e}"))?;
        if n == 0 {
            return Ok(Ended::HubClosed);
        }
        if line.last() != Some(&b'\n') {
            if line.len() as u64 == limit {
                return Err(format!(
                    "the hub sent a line over --max-line-length {} bytes; raise it",
                    args.max_line_length
                ));
            }
            // The hub closed in the middle of a line: nothing to answer.
            return Ok(Ended::HubClosed);
        }
        let parsed: Line = serde_json::from_slice(&line).map_err(|e| {
            format!(
                "not a text-port line ({e}): {}",
                String::from_utf8_lossy(&line[..line.len().min(200)]).trim_end()
            )
        })?;
        match parsed {
            Line {
                ok: Some(false),
                error,
                ..
            } => {
                let error = error.unwrap_or_default();
                return Err(match listening {
                    false => format!("listen was refused: {error} (does this hub take listen?)"),
                    true => format!("a push was refused: {error}"),
                });
            }
            Line { ok: Some(true), .. } if !listening => {
                listening = true;
                eprintln!("echo: listening to {}", args.text);
            }
            // A push's reply: delivered or not (the client may have left), it
            // needs nothing more.
            Line { ok: Some(true), .. } => {}
            Line {
                event: Some(event),
                conn: Some(conn),
                d: Some(data),
                binary,
                ..
            } if event == "message" => {
                let mut push = serde_json::to_vec(&Push {
                    cmd: "push",
                    conn,
                    data,
                    binary,
                })
                .map_err(|e| format!("cannot encode a push: {e}"))?;
                push.push(b'\n');
                // Bounded, but never so tightly that one big message cannot
                // pass when nothing else waits.
                let waiting = pending.load(Ordering::Acquire);
                if waiting > 0 && waiting + push.len() > args.max_pending {
                    dropped += 1;
                    eprintln!(
                        "echo: not echoing {} bytes to connection {conn}: {waiting} bytes \
                         are waiting to be written (--max-pending); {dropped} dropped so far",
                        data.get().len()
                    );
                    continue;
                }
                pending.fetch_add(push.len(), Ordering::AcqRel);
                if to_writer.send(push).is_err() {
                    return Ok(Ended::WriterStopped);
                }
            }
            // Other events (a client opening or closing, say) need no answer.
            Line { event: Some(_), .. } => {}
            Line { .. } => {
                return Err(format!(
                    "a line with neither `ok` nor `event`: {}",
                    String::from_utf8_lossy(&line[..line.len().min(200)]).trim_end()
                ));
            }
        }
    }
}

/// Writes the pushes in order, handing the kernel everything that is queued
/// at once (the hub answers pipelined requests in order, so nothing waits for
/// a reply).
fn write_loop(
    stream: TcpStream,
    queue: &mpsc::Receiver<Vec<u8>>,
    pending: &AtomicUsize,
) -> Result<(), String> {
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    let written = (|| {
        while let Ok(mut push) = queue.recv() {
            loop {
                out.write_all(&push)?;
                pending.fetch_sub(push.len(), Ordering::AcqRel);
                match queue.try_recv() {
                    Ok(next) => push = next,
                    Err(_) => break,
                }
            }
            out.flush()?;
        }
        Ok(())
    })();
    written.map_err(|e: std::io::Error| {
        // Wakes the reader, which would otherwise wait for the hub forever.
        let _ = out.get_ref().shutdown(Shutdown::Both);
        e.to_string()
    })
}
