//! Soak and faults: for a while (`PUSHHUB_SOAK_SECONDS`, 10 s by default; `make
//! soak` runs longer), clients keep connecting, authenticating and leaving
//! every way a client can (close frame, reset, half-open, mid-frame), garbage
//! arrives on both ports, and a backend pushes and broadcasts all along. At the
//! end: every push acknowledged to a connected reader was received, in order;
//! the hub's descriptors are back to where they started, and its RSS within a
//! stated margin of where it was after warming up.
//!
//! The hub is the real binary, so that its RSS and descriptors are its own.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;
use smol::io::AsyncWriteExt;
use smol::stream::StreamExt;
use smol::{Async, LocalExecutor, Timer};

/// Readers that stay connected and must receive every acknowledged push.
const READERS: usize = 50;
/// Clients coming and going at once.
const CHURN: usize = 200;
/// RSS growth allowed between warm-up and the end.
const RSS_MARGIN: u64 = 4 << 20;

/// A client that stays, and must receive every push acknowledged for it.
struct Reader(Client);

impl Reader {
    async fn connect(ws: std::net::SocketAddr, uid: &str) -> Reader {
        let mut client = connect(ws, "/").await;
        send_text(&mut client, uid).await;
        logged_in(&mut client).await;
        Reader(client)
    }

    /// The next text message if one has arrived (reading also answers pings).
    async fn try_text(&mut self) -> Option<String> {
        loop {
            match smol::future::poll_once(self.0.next()).await {
                Some(Some(Ok(Message::Text(text)))) => return Some(text.as_str().to_string()),
                Some(Some(Ok(_))) => {}
                Some(other) => panic!("a reader lost its connection: {other:?}"),
                None => return None,
            }
        }
    }
}

/// A small deterministic generator: the soak is reproducible.
struct Rng(Cell<u64>);

impl Rng {
    fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.set(x);
        x
    }
}

/// One client that comes, maybe receives, and leaves some way.
async fn churn_once(ws: std::net::SocketAddr, uid: String, how: u64) {
    let Ok(mut client) = try_connect(ws, "/").await else {
        return;
    };
    if client.send(Message::text(uid)).await.is_err()
        || client.send(Message::Ping("in?".into())).await.is_err()
    {
        return;
    }
    // The pong: the login was handled.
    let _ = within(STEP, "a churn login", client.next()).await;
    match how % 4 {
        0 => {
            let _ = client.close(None).await;
        }
        1 => reset(client),
        2 => {
            // Half-open: stop writing, keep the socket a moment, then go.
            let stream = client.into_inner();
            let _ = stream.get_ref().shutdown(std::net::Shutdown::Write);
            Timer::after(Duration::from_millis(20)).await;
        }
        _ => {
            // Mid-frame: the start of a masked frame, then gone.
            let mut stream = client.into_inner();
            let _ = stream.write_all(&[0x81, 0xFE, 0x10]).await;
        }
    }
}

/// Garbage on the WebSocket port and the text port.
async fn garbage_once(server_ws: std::net::SocketAddr, text: std::net::SocketAddr, n: u64) {
    let target = if n.is_multiple_of(2) { server_ws } else { text };
    let Ok(mut stream) = Async::<std::net::TcpStream>::connect(target).await else {
        return;
    };
    let junk: Vec<u8> = (0..64)
        .map(|i| (n.wrapping_mul(31).wrapping_add(i) % 256) as u8)
        .collect();
    let _ = stream.write_all(&junk).await;
    let _ = stream.write_all(b"\n{\"cmd\":\n\xff\xfe\n").await;
}

#[test]
fn soak() {
    let seconds: u64 = std::env::var("PUSHHUB_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let hub = Binary::start(
        &[
            "--allow-plain-uid",
            "--ws",
            "127.0.0.1:0",
            "--text",
            "127.0.0.1:0",
            "--handshake-timeout",
            "1s",
        ],
        &[],
    );
    let pid = hub.child.id();
    let (ws, text) = (hub.ws, hub.text);
    let ex = LocalExecutor::new();
    smol::block_on(ex.run(async {
        let mut backend = Backend::connect(text).await;
        let mut readers = Vec::new();
        for i in 0..READERS {
            readers.push(Reader::connect(ws, &format!("r{i}")).await);
        }
        let fds_before = open_fds(pid);
        // Warm up the allocator with one round of churn before the baseline.
        for i in 0..CHURN {
            churn_once(ws, format!("w{i}"), i as u64).await;
        }
        let rss_before = proc_status(pid, "VmRSS:") * 1024;

        let stop = Instant::now() + Duration::from_secs(seconds);
        let rng = Rc::new(Rng(Cell::new(0x9e37_79b9_7f4a_7c15)));
        let comings = Rc::new(Cell::new(0u64));
        let churners: Vec<_> = (0..CHURN)
            .map(|worker| {
                let rng = Rc::clone(&rng);
                let comings = Rc::clone(&comings);
                ex.spawn(async move {
                    let mut round = 0u64;
                    while Instant::now() < stop {
                        let how = rng.next();
                        if how.is_multiple_of(10) {
                            garbage_once(ws, text, how).await;
                        } else {
                            churn_once(ws, format!("c{worker}-{round}"), how).await;
                        }
                        round += 1;
                        comings.set(comings.get() + 1);
                    }
                })
            })
            .collect();

        // The backend pushes to the readers and broadcasts, all along.
        let mut expected: Vec<Vec<String>> = vec![Vec::new(); READERS];
        let mut k = 0u64;
        while Instant::now() < stop {
            let r = (rng.next() % READERS as u64) as usize;
            let text = format!("p{k}");
            if backend.push(&format!("r{r}"), &text).await == 1 {
                expected[r].push(text);
            }
            if k.is_multiple_of(50) {
                let all = format!("b{k}");
                let reached = backend.broadcast(&all).await;
                assert!(reached >= READERS as u64, "a broadcast missed readers");
                for e in &mut expected {
                    e.push(all.clone());
                }
            }
            k += 1;
            // Let the readers drain as they go, as real clients do.
            for (r, reader) in readers.iter_mut().enumerate() {
                while let Some(text) = reader.try_text().await {
                    assert_eq!(Some(&text), expected[r].first(), "reader {r}");
                    expected[r].remove(0);
                }
            }
            Timer::after(Duration::from_millis(1)).await;
        }
        for churner in churners {
            churner.await;
        }
        for (r, reader) in readers.iter_mut().enumerate() {
            for want in std::mem::take(&mut expected[r]) {
                assert_eq!(next_text(&mut reader.0).await, want, "reader {r}");
            }
        }
        eprintln!(
            "soak: {k} pushes, {} clients or garbage senders came and went, over {seconds} s",
            comings.get()
        );

        // Everything that came and went is gone again.
        let deadline = Deadline::new(Duration::from_secs(10), "the hub's descriptors to settle");
        while open_fds(pid) > fds_before {
            deadline.tick().await;
        }
        let rss_after = proc_status(pid, "VmRSS:") * 1024;
        eprintln!("soak: RSS {rss_before} -> {rss_after} bytes, descriptors {fds_before}");
        assert!(
            rss_after <= rss_before + RSS_MARGIN,
            "RSS grew from {rss_before} to {rss_after} bytes"
        );
        let stats = backend.stats().await;
        assert_eq!(stats["connections"], READERS as u64, "{stats}");
    }));
}
