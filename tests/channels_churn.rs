//! Channel bookkeeping under churn, against the real binary: 10,000 v1
//! clients that each join channels, leave one and go (by a close frame, a
//! FIN or a reset) leave no channel, subscription, descriptor or memory
//! behind.

mod common;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use common::*;
use serde_json::{Value, json};
use smol::Async;
use smol::stream::StreamExt;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const CYCLES: usize = 10_000;
const WARM_UP: usize = 500;
/// RSS growth allowed over the cycles (allocator slack, not per-client state).
const RSS_MARGIN_KB: u64 = 2048;

async fn v1_client(ws: SocketAddr) -> Client {
    let stream = Async::<TcpStream>::connect(ws).await.unwrap();
    let mut request = format!("ws://{ws}/").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("pushhub.v1"),
    );
    within(
        STEP,
        "v1 handshake",
        async_tungstenite::client_async(request, stream),
    )
    .await
    .unwrap()
    .0
}

async fn frame(client: &mut Client) -> Value {
    serde_json::from_str(&next_text(client).await).unwrap()
}

/// One client's life: in, three channels (one of them its own), out of its
/// own, gone.
async fn cycle(ws: SocketAddr, i: usize) {
    let mut client = v1_client(ws).await;
    let uid = format!("c{i}");
    let chs = [
        format!("room:{}", i % 20),
        format!("solo:{i}"),
        "all".to_string(),
    ];
    let mut frames = vec![json!({"op":"auth","uid":uid})];
    frames.extend(chs.iter().map(|ch| json!({"op":"sub","ch":ch})));
    frames.push(json!({"op":"unsub","ch":chs[1]}));
    for f in &frames {
        send_text(&mut client, &f.to_string()).await;
    }
    assert_eq!(frame(&mut client).await["op"], "welcome");
    for _ in &chs {
        assert_eq!(frame(&mut client).await["op"], "subbed");
    }
    assert_eq!(frame(&mut client).await["op"], "unsubbed");
    match i % 3 {
        0 => {
            let _ = client.send(Message::Close(None)).await;
            let _ = within(STEP, "the close handshake", async {
                while let Some(Ok(_)) = client.next().await {}
            })
            .await;
        }
        1 => drop(client),
        _ => reset(client),
    }
}

/// Waits until the hub holds no client, channel or subscription; its stats.
async fn settled(backend: &mut Backend) -> Value {
    let deadline = Deadline::new(STEP, "every client gone");
    loop {
        let stats = backend.stats().await;
        if stats["connections"] == 0 && stats["channels"] == 0 && stats["subscriptions"] == 0 {
            return stats;
        }
        deadline.tick().await;
    }
}

#[test]
fn ten_thousand_subscribe_cycles_leave_nothing_behind() {
    let hub = Binary::start(
        &[
            "--ws",
            "127.0.0.1:0",
            "--text",
            "127.0.0.1:0",
            "--metrics",
            "off",
            "--allow-plain-uid",
            "--public-channel",
            "*",
            // This test is about the channel table: history keeps every
            // uid's and channel's position for --history-ttl by design,
            // bounded by --history-memory (tests/recovery.rs).
            "--history-size",
            "0",
        ],
        &[],
    );
    let pid = hub.child.id();
    run_long(Duration::from_secs(180), async {
        let mut backend = Backend::connect(hub.text).await;
        for i in 0..WARM_UP {
            cycle(hub.ws, i).await;
        }
        settled(&mut backend).await;
        let (fds, rss_kb) = (open_fds(pid), proc_status(pid, "VmRSS:"));
        for i in WARM_UP..WARM_UP + CYCLES {
            cycle(hub.ws, i).await;
        }
        let stats = settled(&mut backend).await;
        assert_eq!(stats["handshakes"], WARM_UP + CYCLES, "{stats}");
        assert_eq!(open_fds(pid), fds, "descriptors left behind");
        let grown = proc_status(pid, "VmRSS:").saturating_sub(rss_kb);
        assert!(
            grown < RSS_MARGIN_KB,
            "RSS grew by {grown} KiB over {CYCLES} cycles"
        );
    });
}
