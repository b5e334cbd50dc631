//! The hub's bounds: connection count, handshake deadline, heartbeats and idle
//! timeout, inbound message size, and slow consumers.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::{Error as WsError, Message};
use common::*;
use smol::future::FutureExt;

/// Connects from `source` (an address in 127.0.0.0/8), with `origin` if given.
async fn connect_as(
    ws: std::net::SocketAddr,
    source: [u8; 4],
    origin: Option<&str>,
) -> Result<Client, WsError> {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    // std cannot bind before connecting, so the socket is made with rustix.
    let fd = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .map_err(|e| WsError::Io(e.into()))?;
    rustix::net::bind(&fd, &std::net::SocketAddrV4::new(source.into(), 0))
        .map_err(|e| WsError::Io(e.into()))?;
    rustix::net::connect(&fd, &ws).map_err(|e| WsError::Io(e.into()))?;
    let stream = smol::Async::new(std::net::TcpStream::from(fd)).map_err(WsError::Io)?;
    let mut request = format!("ws://{ws}/").into_client_request()?;
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    let (client, _) = async_tungstenite::client_async(request, stream).await?;
    Ok(client)
}

#[test]
fn connections_per_address_are_limited() {
    let mut config = plain_config();
    config.max_connections_per_ip = Some(2);
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut first = within(
            STEP,
            "connecting",
            connect_as(server.ws, [127, 0, 0, 2], None),
        )
        .await
        .unwrap();
        let _second = within(
            STEP,
            "connecting",
            connect_as(server.ws, [127, 0, 0, 2], None),
        )
        .await
        .unwrap();
        let refused = within(
            STEP,
            "a refusal",
            connect_as(server.ws, [127, 0, 0, 2], None),
        )
        .await;
        assert!(
            refused.is_err(),
            "a third connection from one address was accepted"
        );
        // Another address is not affected.
        let _other = within(
            STEP,
            "connecting",
            connect_as(server.ws, [127, 0, 0, 3], None),
        )
        .await
        .unwrap();
        let stats = backend.stats().await;
        assert_eq!(stats["rejected_per_ip"], 1, "{stats}");
        assert_eq!(stats["connections"], 3, "{stats}");
        // Closing one frees a place for its address.
        close_client(&mut first).await;
        let deadline = Deadline::new(STEP, "a freed place");
        loop {
            if within(
                STEP,
                "connecting",
                connect_as(server.ws, [127, 0, 0, 2], None),
            )
            .await
            .is_ok()
            {
                break;
            }
            deadline.tick().await;
        }
    });
}

#[test]
fn browsers_from_other_origins_are_refused() {
    let mut config = plain_config();
    config.allow_origins = vec!["https://app.example.com".into()];
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let allowed = connect_as(server.ws, [127, 0, 0, 1], Some("https://app.example.com"));
        assert!(within(STEP, "an allowed origin", allowed).await.is_ok());
        let refused = connect_as(server.ws, [127, 0, 0, 1], Some("https://evil.example.com"));
        match within(STEP, "a refused origin", refused).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
            other => panic!("expected a 403, got {:?}", other.map(|_| "a connection")),
        }
        // Not a browser: no Origin, allowed.
        let native = connect_as(server.ws, [127, 0, 0, 1], None);
        assert!(
            within(STEP, "a client without Origin", native)
                .await
                .is_ok()
        );
        let stats = backend.stats().await;
        assert_eq!(stats["rejected_origin"], 1, "{stats}");
    });
}

#[test]
fn connections_beyond_the_limit_are_refused() {
    let mut config = plain_config();
    config.max_connections = 2;
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut first = login_plain(&server, "a").await;
        let mut second = login_plain(&server, "b").await;

        for _ in 0..2 {
            match within(STEP, "a refused handshake", try_connect(server.ws, "/")).await {
                Err(_) => {}
                Ok(_) => panic!("a third connection was accepted with --max-connections 2"),
            }
        }
        let stats = backend.stats().await;
        assert_eq!(stats["rejected"], 2, "{stats}");
        assert_eq!(stats["connections"], 2, "{stats}");

        // The admitted clients are unaffected.
        assert_eq!(backend.broadcast("still two").await, 2);
        assert_eq!(next_text(&mut first).await, "still two");
        assert_eq!(next_text(&mut second).await, "still two");

        // Closing one frees its place.
        close_client(&mut first).await;
        let mut third = login_plain(&server, "c").await;
        assert_eq!(backend.push("c", "welcome").await, 1);
        assert_eq!(next_text(&mut third).await, "welcome");
        assert_eq!(backend.stats().await["rejected"], 2);
    });
}

#[test]
fn clients_that_never_finish_the_handshake_are_closed_and_free_their_place() {
    let mut config = plain_config();
    config.max_connections = 2;
    config.handshake_timeout = Duration::from_millis(300);
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        // One sends nothing at all, one half a request: together they hold both places.
        let silent = TcpStream::connect(server.ws).unwrap();
        let mut half = TcpStream::connect(server.ws).unwrap();
        std::io::Write::write_all(&mut half, b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        let connected = Instant::now();

        // While they do, a real client is refused.
        let deadline = Deadline::new(STEP, "a third connection is refused");
        while try_connect(server.ws, "/").await.is_ok() {
            deadline.tick().await;
        }
        assert!(backend.stats().await["rejected"].as_u64().unwrap() >= 1);

        let (silent_closed, half_closed) =
            smol::unblock(move || (wait_closed(silent, STEP), wait_closed(half, STEP))).await;
        for (what, closed) in [("silent", silent_closed), ("half", half_closed)] {
            let after = closed - connected;
            assert!(
                after >= Duration::from_millis(250),
                "{what} closed after only {after:?}"
            );
        }

        // Their places are free again.
        let mut first = login_plain(&server, "u1").await;
        let mut second = login_plain(&server, "u2").await;
        assert_eq!(backend.broadcast("in").await, 2);
        assert_eq!(next_text(&mut first).await, "in");
        assert_eq!(next_text(&mut second).await, "in");
        let stats = backend.stats().await;
        assert_eq!(stats["connections"], 2, "{stats}");
    });
}

#[test]
fn silent_clients_are_pinged() {
    let mut config = plain_config();
    config.ping_interval = Duration::from_millis(100);
    config.idle_timeout = Duration::from_secs(5);
    let server = Server::start(config);
    run(async {
        let mut client = login_plain(&server, "u1").await;
        let started = Instant::now();
        match next_message(&mut client).await {
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected a ping, got {other:?}"),
        }
        let after = started.elapsed();
        assert!(
            after >= Duration::from_millis(50),
            "pinged after only {after:?}"
        );
    });
}

#[test]
fn clients_that_answer_pings_stay_open() {
    let mut config = plain_config();
    config.ping_interval = Duration::from_millis(100);
    config.idle_timeout = Duration::from_millis(300);
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut client = login_plain(&server, "u1").await;
        // Keep reading (tungstenite answers each ping) for over three idle timeouts.
        let mut pings = 0;
        let reading = async {
            loop {
                match next_message(&mut client).await {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    other => panic!("an answering client got {other:?}"),
                }
            }
        };
        reading
            .or(async {
                smol::Timer::after(Duration::from_millis(1000)).await;
            })
            .await;
        assert!(pings >= 3, "only {pings} pings in a second");
        assert_eq!(backend.push("u1", "alive").await, 1);
        assert_eq!(next_text(&mut client).await, "alive");
        let stats = backend.stats().await;
        assert_eq!(stats["idle_closed"], 0, "{stats}");
    });
}

#[test]
fn clients_that_never_answer_are_closed_at_the_idle_timeout() {
    let mut config = plain_config();
    config.ping_interval = Duration::from_millis(100);
    config.idle_timeout = Duration::from_millis(300);
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let started = Instant::now();
        // This client stops reading (so never answers a ping) once logged in.
        let mut deaf = login_plain(&server, "deaf").await;
        wait_connections(&mut backend, "deaf", 0).await;
        let after = started.elapsed();
        assert!(
            after >= Duration::from_millis(250),
            "closed after only {after:?}"
        );
        let stats = backend.stats().await;
        assert_eq!(stats["idle_closed"], 1, "{stats}");
        assert_eq!(backend.request(r#"{"uid":"deaf"}"#).await, "fail");

        // What it finds once it reads: a ping, then the idle close.
        let mut pinged = false;
        loop {
            match next_message(&mut deaf).await {
                Some(Ok(Message::Ping(_))) => pinged = true,
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(u16::from(frame.code), 4003, "{frame:?}");
                    assert_eq!(frame.reason.as_str(), "idle timeout");
                    break;
                }
                other => panic!("expected a ping then close 4003, got {other:?}"),
            }
        }
        assert!(pinged, "closed without being pinged first");
    });
}

#[test]
fn inbound_messages_over_the_size_limit_close_with_1009() {
    let mut config = plain_config();
    config.max_message_size = 1024;
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut client = login_plain(&server, "u1").await;
        // At the limit: accepted (and ignored).
        send_text(&mut client, &"a".repeat(1024)).await;
        assert_eq!(backend.push("u1", "fine").await, 1);
        assert_eq!(next_text(&mut client).await, "fine");
        // Over it: closed.
        send_text(&mut client, &"b".repeat(1025)).await;
        let (code, reason) = expect_close(&mut client).await;
        assert_eq!(code, 1009, "{reason}");
        assert_eq!(backend.connections("u1").await, 0);

        // Before authenticating too.
        let mut stranger = connect(server.ws, "/").await;
        send_text(&mut stranger, &"c".repeat(50_000)).await;
        assert_eq!(expect_close(&mut stranger).await.0, 1009);

        // Outbound messages are not bound by the inbound limit.
        let mut big = login_plain(&server, "big").await;
        assert_eq!(backend.push("big", &"d".repeat(10_000)).await, 1);
        assert_eq!(next_text(&mut big).await.len(), 10_000);
    });
}

/// A client that stops reading while large broadcasts go out is dropped; a client
/// that reads receives every message, in order.
#[test]
fn slow_consumers_are_dropped_and_readers_get_everything() {
    const SIZE: usize = 64 * 1024;
    let mut config = plain_config();
    config.max_queue_bytes = 256 * 1024;
    config.max_queue_messages = 1024;
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut slow = login_plain(&server, "slow").await;
        let mut fast = login_plain(&server, "fast").await;
        let pad = "p".repeat(SIZE - 12);

        // Lock-step: each broadcast is read by the fast client before the next
        // goes out, while the slow one never reads. The slow one's socket
        // buffers fill, then its queue, and the hub drops it.
        let mut sent = 0u64;
        let mut after_drop = None;
        while after_drop.is_none_or(|n| n < 20) {
            let text = format!("{sent:>12}{pad}");
            let delivered = backend.broadcast(&text).await;
            sent += 1;
            match (delivered, after_drop) {
                (2, None) => {}
                (1, None) => after_drop = Some(0),
                (1, Some(n)) => after_drop = Some(n + 1),
                other => panic!("broadcast #{sent}: unexpected {other:?}"),
            }
            let got = next_text(&mut fast).await;
            assert!(
                got == text,
                "the reader missed or reordered message #{sent}"
            );
            // 64 MiB without a drop means the queue bound is not enforced.
            assert!(sent < 1024, "the slow client was never dropped");
        }

        let stats = backend.stats().await;
        assert!(stats["dropped"].as_u64().unwrap() >= 1, "{stats}");
        assert_eq!(backend.connections("slow").await, 0);
        assert_eq!(backend.connections("fast").await, 1);

        // The slow client finds part of the stream, then the end of its connection.
        let mut received = 0u64;
        let ending = loop {
            match next_message(&mut slow).await {
                Some(Ok(Message::Text(_))) => received += 1,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(frame))) => break format!("close {frame:?}"),
                Some(Err(WsError::ConnectionClosed)) | None => break "end".to_string(),
                Some(Err(e)) => break format!("error {e}"),
                Some(Ok(other)) => panic!("unexpected {other:?}"),
            }
        };
        assert!(received < sent, "the slow client got everything ({ending})");
        if ending.starts_with("close") {
            assert!(ending.contains("Policy"), "{ending}");
        }
        assert_eq!(backend.push("fast", "last").await, 1);
        assert_eq!(next_text(&mut fast).await, "last");
    });
}
