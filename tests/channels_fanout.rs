//! One channel with 18,000 subscribers, against the real binary: every
//! subscriber gets every publication exactly once, in order, and the replies
//! count them all. The clients are minimal raw WebSocket clients (a handshake,
//! a masked uid, a ping), so that 18,000 of them fit in this process.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::json;
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

const SUBSCRIBERS: usize = 18_000;
const PUBLICATIONS: usize = 3;

/// A client frame: final, masked with a zero key (the hub must unmask it,
/// and a zero key keeps the payload readable here).
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

/// Connects, upgrades, logs in as `uid` and waits for the pong that says the
/// login was handled. Returns the socket and what it read past the pong.
async fn raw_client(ws: SocketAddr, uid: &str) -> (Async<TcpStream>, Vec<u8>) {
    let mut stream = Async::<TcpStream>::connect(ws).await.unwrap();
    let mut request = format!(
        "GET / HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    request.extend(masked(0x1, uid.as_bytes()));
    request.extend(masked(0x9, b""));
    stream.write_all(&request).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "{uid}: closed during the login");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let frames = &buf[head + 4..];
            // The pong: 0x8A, length 0.
            if frames.len() >= 2 {
                assert_eq!(&frames[..2], [0x8A, 0], "{uid}: expected the pong");
                return (stream, frames[2..].to_vec());
            }
        }
    }
}

/// Reads text frames until `n` have come; returns their payloads.
async fn read_texts(stream: &mut Async<TcpStream>, mut buf: Vec<u8>, n: usize) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        while buf.len() >= 2 && (buf[1] as usize) < 126 && buf.len() >= 2 + buf[1] as usize {
            let len = buf[1] as usize;
            assert_eq!(buf[0], 0x81, "a final text frame");
            texts.push(String::from_utf8(buf[2..2 + len].to_vec()).unwrap());
            buf.drain(..2 + len);
        }
        if texts.len() >= n {
            return texts;
        }
        let mut chunk = [0u8; 512];
        let read = within(STEP, "a publication", stream.read(&mut chunk)).await;
        let got = read.unwrap();
        assert!(got > 0, "closed before {n} publications");
        buf.extend_from_slice(&chunk[..got]);
    }
}

#[test]
fn a_channel_of_18000_subscribers_gets_every_publication_once() {
    // The hub and this process each hold every subscriber's socket.
    let limit = pushhub::server::fd_limit::raise();
    assert!(
        limit >= SUBSCRIBERS as u64 + 200,
        "this test needs an open-files limit of {} (it is {limit})",
        SUBSCRIBERS + 200
    );
    let hub = Binary::start(
        &[
            "--ws",
            "127.0.0.1:0",
            "--text",
            "127.0.0.1:0",
            "--metrics",
            "off",
            "--allow-plain-uid",
            // Connecting 18,000 clients one by one may take longer than the
            // default ping interval on a busy machine: the subscribers read
            // text frames only, so no ping may come between them.
            "--ping-interval",
            "10m",
            "--idle-timeout",
            "20m",
        ],
        &[],
    );
    run_long(Duration::from_secs(180), async {
        let mut clients = Vec::with_capacity(SUBSCRIBERS);
        for i in 0..SUBSCRIBERS {
            clients.push(raw_client(hub.ws, &format!("s{i}")).await);
        }
        let mut backend = Backend::connect(hub.text).await;
        let uids: Vec<String> = (0..SUBSCRIBERS).map(|i| format!("s{i}")).collect();
        let mut subscribed = 0;
        for batch in uids.chunks(1000) {
            let reply = backend
                .json(json!({"cmd":"subscribe","uids":batch,"ch":"big"}))
                .await;
            subscribed += reply["subscribed"].as_u64().unwrap();
        }
        assert_eq!(subscribed, SUBSCRIBERS as u64);
        let reply = backend.json(json!({"cmd":"members","ch":"big"})).await;
        assert_eq!(reply["connections"], SUBSCRIBERS);
        for k in 0..PUBLICATIONS {
            let reply = backend
                .json(json!({"cmd":"publish","ch":"big","data":format!("p{k}")}))
                .await;
            assert_eq!(reply["delivered"], SUBSCRIBERS, "publication {k}");
        }
        let expected: Vec<String> = (0..PUBLICATIONS).map(|k| format!("p{k}")).collect();
        for (i, (stream, rest)) in clients.iter_mut().enumerate() {
            let texts = read_texts(stream, std::mem::take(rest), PUBLICATIONS).await;
            assert_eq!(texts, expected, "subscriber {i}");
        }
        let stats = backend.stats().await;
        assert_eq!(stats["dropped"], 0, "{stats}");
        assert_eq!(stats["subscriptions"], SUBSCRIBERS, "{stats}");
    });
}
