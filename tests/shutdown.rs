//! Graceful shutdown: every client gets a "going away" close (1001), what was
//! already accepted for it is delivered first, and the hub returns (in process)
//! or exits 0 (the binary, on SIGTERM or SIGINT).

mod common;

use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use common::*;
use rustix::process::Signal;

#[test]
fn shutdown_closes_every_client_with_1001() {
    let mut server = Server::start(plain_config());
    let mut backend = run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut a1 = login_plain(&server, "a").await;
        let mut a2 = login_plain(&server, "a").await;
        let mut b = login_plain(&server, "b").await;
        let mut pending = connect(server.ws, "/").await;
        assert_eq!(backend.stats().await["connections"], 4);

        server.trigger_shutdown();
        for client in [&mut a1, &mut a2, &mut b, &mut pending] {
            assert_eq!(
                expect_close(client).await,
                (1001, "server shutting down".to_string())
            );
        }
        backend
    });
    server.stop(Duration::from_secs(5)).unwrap();
    // Backend connections end with the hub. (The listeners are gone too, but a
    // freed port may already belong to another test's listener, so that is not
    // checked by connecting.)
    run(async { backend.expect_eof().await });
}

#[test]
fn shutdown_with_no_clients_returns_at_once() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        assert_eq!(backend.stats().await["connections"], 0);
    });
    // Well under the shutdown timeout: nothing to wait for.
    server.stop(Duration::from_millis(500)).unwrap();
}

/// A shutdown delivers what was accepted for a client before closing it, as a
/// kick does: a client still reading its backlog gets all of it, then 1001.
#[test]
fn shutdown_delivers_what_was_queued_then_closes() {
    const N: usize = 200;
    const SIZE: usize = 64 * 1024;
    let mut config = plain_config();
    config.max_queue_messages = 10_000;
    config.max_queue_bytes = 64 << 20;
    config.shutdown_timeout = Duration::from_secs(5);
    let mut server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut client = login_plain(&server, "backlog").await;
        // 12.5 MiB the client does not read yet: more than the socket buffers
        // hold, so most of it is still in the hub's queue at shutdown.
        let pad = "b".repeat(SIZE - 8);
        for i in 0..N {
            assert_eq!(backend.push("backlog", &format!("{i:08}{pad}")).await, 1);
        }
        server.trigger_shutdown();
        // The client is busy for a moment before it reads on: well within both
        // the shutdown timeout (5 s) and the hub's close grace (2 s). This is
        // the scenario, not a synchronisation.
        smol::Timer::after(Duration::from_millis(300)).await;
        for i in 0..N {
            let text = match next_message(&mut client).await {
                Some(Ok(Message::Text(text))) => text,
                other => panic!("message #{i} of {N} was lost to the shutdown: got {other:?}"),
            };
            assert!(text.starts_with(&format!("{i:08}")), "message #{i}");
            assert_eq!(text.len(), SIZE);
        }
        assert_eq!(expect_close(&mut client).await.0, 1001);
    });
    server.stop(Duration::from_secs(10)).unwrap();
}

#[test]
fn the_binary_stops_gracefully_on_sigterm_and_sigint() {
    for signal in [Signal::TERM, Signal::INT] {
        let mut hub = Binary::start(
            &[
                "--ws",
                "127.0.0.1:0",
                "--text",
                "127.0.0.1:0",
                "--allow-plain-uid",
                "--shutdown-timeout",
                "3s",
            ],
            &[],
        );
        let (ws, text) = (hub.ws, hub.text);
        let mut clients = run(async {
            let mut backend = Backend::connect(text).await;
            let mut clients = Vec::new();
            for uid in ["x", "x", "y"] {
                let mut client = connect(ws, "/").await;
                send_text(&mut client, uid).await;
                logged_in(&mut client).await;
                clients.push(client);
            }
            clients.push(connect(ws, "/").await); // not authenticated
            assert_eq!(backend.stats().await["connections"], 4);
            clients
        });

        hub.signal(signal);
        run(async {
            for client in &mut clients {
                assert_eq!(
                    expect_close(client).await,
                    (1001, "server shutting down".to_string()),
                    "after {signal:?}"
                );
                // Reading on sends the client's reply, which ends the close
                // handshake: the hub need not wait out its close grace.
                expect_end(client).await;
            }
        });
        let status = hub.wait(STEP);
        assert!(
            status.success(),
            "exit status {status} after {signal:?}; stderr: {:#?}",
            hub.stderr
        );
        assert!(
            hub.stderr.iter().any(|l| l.contains("stopped")),
            "stderr: {:#?}",
            hub.stderr
        );
    }
}
