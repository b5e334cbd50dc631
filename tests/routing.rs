//! Delivery: pushes reach every connection of their uid and nothing else,
//! broadcasts reach every authenticated connection, and a connection leaves the
//! uid index as soon as it closes, drops, or is kicked.

mod common;

use async_tungstenite::tungstenite::{Bytes, Message};
use common::*;
use serde_json::json;

#[test]
fn push_reaches_only_its_uid() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut alice = login_plain(&server, "alice").await;
        let mut bob = login_plain(&server, "bob").await;

        assert_eq!(backend.push("alice", "for alice").await, 1);
        assert_eq!(backend.push("bob", "for bob").await, 1);
        assert_eq!(backend.push("carol", "for nobody").await, 0);
        assert_eq!(next_text(&mut alice).await, "for alice");
        assert_eq!(next_text(&mut bob).await, "for bob");

        // Alice got nothing of Bob's: her next message is her next push.
        assert_eq!(backend.push("alice", "second").await, 1);
        assert_eq!(next_text(&mut alice).await, "second");
    });
}

#[test]
fn any_path_is_accepted() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        for (i, path) in ["/", "/push", "/a/b/c?x=1&y=2", "/ws?token="]
            .into_iter()
            .enumerate()
        {
            let uid = format!("path{i}");
            let mut client = connect(server.ws, path).await;
            send_text(&mut client, &uid).await;
            logged_in(&mut client).await;
            assert_eq!(backend.push(&uid, path).await, 1);
            assert_eq!(next_text(&mut client).await, path);
        }
    });
}

#[test]
fn every_connection_of_a_uid_receives() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut tabs = Vec::new();
        for _ in 0..3 {
            tabs.push(login_plain(&server, "u1").await);
        }
        assert_eq!(backend.connections("u1").await, 3);
        assert_eq!(backend.push("u1", "to every tab").await, 3);
        for tab in &mut tabs {
            assert_eq!(next_text(tab).await, "to every tab");
        }

        // Closing one leaves the others reachable.
        let mut first = tabs.remove(0);
        close_client(&mut first).await;
        assert_eq!(backend.connections("u1").await, 2);
        assert_eq!(backend.push("u1", "to the rest").await, 2);
        for tab in &mut tabs {
            assert_eq!(next_text(tab).await, "to the rest");
        }
    });
}

#[test]
fn push_data_forms_and_target_lists() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut u1 = login_plain(&server, "u1").await;
        let mut u2 = login_plain(&server, "u2").await;
        let mut n42 = login_plain(&server, "42").await;

        // A JSON string is delivered as its contents.
        let reply = backend
            .request(r#"{"cmd":"push","uid":"u1","data":"hi \"you\" \u00e9"}"#)
            .await;
        assert_eq!(reply, r#"{"ok":true,"delivered":1}"#);
        assert_eq!(next_text(&mut u1).await, "hi \"you\" é");

        // Any other JSON value is delivered as its JSON text, verbatim.
        backend
            .request(r#"{"cmd":"push","uid":"u1","data":{"a": [1, 2], "b":null}}"#)
            .await;
        assert_eq!(next_text(&mut u1).await, r#"{"a": [1, 2], "b":null}"#);
        backend
            .request(r#"{"cmd":"push","uid":"u1","data":7.5}"#)
            .await;
        assert_eq!(next_text(&mut u1).await, "7.5");

        // A numeric uid is its text.
        let reply = backend
            .request(r#"{"cmd":"push","uid":42,"data":"number"}"#)
            .await;
        assert_eq!(reply, r#"{"ok":true,"delivered":1}"#);
        assert_eq!(next_text(&mut n42).await, "number");

        // `uids`: each distinct uid once, even when listed twice; offline ones count 0.
        let reply = backend
            .json(json!({"cmd":"push","uids":["u1","u2","u1",42,"offline"],"data":"many","id":"m"}))
            .await;
        assert_eq!(reply, json!({"ok":true,"id":"m","delivered":3}));
        for client in [&mut u1, &mut u2, &mut n42] {
            assert_eq!(next_text(client).await, "many");
        }
        assert_eq!(backend.push("u1", "after many").await, 1);
        assert_eq!(
            next_text(&mut u1).await,
            "after many",
            "u1 got `many` twice"
        );

        let reply = backend
            .json(json!({"cmd":"push","uids":[],"data":"none"}))
            .await;
        assert_eq!(reply, json!({"ok":true,"delivered":0}));
    });
}

#[test]
fn close_takes_the_uid_offline_at_once() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut client = login_plain(&server, "u1").await;
        assert_eq!(backend.connections("u1").await, 1);
        assert_eq!(backend.request(r#"{"uid":"u1","n":1}"#).await, "ok");
        assert_eq!(next_text(&mut client).await, r#"{"uid":"u1","n":1}"#);

        close_client(&mut client).await;
        // The hub answered the close frame: the uid is already gone, no polling.
        assert_eq!(backend.connections("u1").await, 0);
        assert_eq!(backend.request(r#"{"uid":"u1","n":2}"#).await, "fail");
        assert_eq!(backend.push("u1", "late").await, 0);

        let stats = backend.stats().await;
        assert_eq!(stats["connections"], 0, "{stats}");
        assert_eq!(stats["authenticated"], 0, "{stats}");
        assert_eq!(stats["uids"], 0, "{stats}");
    });
}

#[test]
fn dropped_socket_is_cleaned_up() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;

        // A FIN without a close frame.
        let client = login_plain(&server, "fin").await;
        assert_eq!(backend.connections("fin").await, 1);
        drop(client);
        wait_connections(&mut backend, "fin", 0).await;
        assert_eq!(backend.request(r#"{"uid":"fin"}"#).await, "fail");

        // A TCP reset.
        let client = login_plain(&server, "rst").await;
        assert_eq!(backend.connections("rst").await, 1);
        reset(client);
        wait_connections(&mut backend, "rst", 0).await;
        assert_eq!(backend.request(r#"{"uid":"rst"}"#).await, "fail");

        // Dropped while a push to it was in flight.
        let client = login_plain(&server, "mid").await;
        assert_eq!(backend.push("mid", &"x".repeat(100_000)).await, 1);
        reset(client);
        wait_connections(&mut backend, "mid", 0).await;

        let deadline = Deadline::new(STEP, "every connection is gone");
        while backend.stats().await["connections"] != 0 {
            deadline.tick().await;
        }
        // The hub still serves new clients.
        let mut again = login_plain(&server, "fin").await;
        assert_eq!(backend.push("fin", "back").await, 1);
        assert_eq!(next_text(&mut again).await, "back");
    });
}

#[test]
fn broadcast_reaches_authenticated_connections_only() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut a1 = login_plain(&server, "a").await;
        let mut a2 = login_plain(&server, "a").await;
        let mut b = login_plain(&server, "b").await;
        let mut pending = connect(server.ws, "/").await;
        // The handshake is done: the pending connection is in the table.
        assert_eq!(backend.stats().await["connections"], 4);

        let reply = backend
            .json(json!({"cmd":"broadcast","data":"to all","id":1}))
            .await;
        assert_eq!(reply, json!({"ok":true,"id":1,"delivered":3}));
        for client in [&mut a1, &mut a2, &mut b] {
            assert_eq!(next_text(client).await, "to all");
        }
        let reply = backend
            .json(json!({"cmd":"broadcast","data":{"k":[true]}}))
            .await;
        assert_eq!(reply, json!({"ok":true,"delivered":3}));
        for client in [&mut a1, &mut a2, &mut b] {
            assert_eq!(next_text(client).await, r#"{"k":[true]}"#);
        }

        // The pending connection got neither: once it logs in, the next
        // broadcast is the first thing it reads.
        send_text(&mut pending, "late").await;
        logged_in(&mut pending).await;
        assert_eq!(backend.broadcast("now you too").await, 4);
        for client in [&mut a1, &mut a2, &mut b, &mut pending] {
            assert_eq!(next_text(client).await, "now you too");
        }

        // With nobody authenticated, a broadcast reaches nobody.
        for client in [&mut a1, &mut a2, &mut b, &mut pending] {
            close_client(client).await;
        }
        assert_eq!(backend.broadcast("empty room").await, 0);
    });
}

#[test]
fn kick_closes_every_connection_of_the_uid() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut k1 = login_plain(&server, "k").await;
        let mut k2 = login_plain(&server, "k").await;
        let mut other = login_plain(&server, "other").await;

        // A push accepted before the kick, in the same write: still delivered, then the close.
        backend
            .send(b"{\"cmd\":\"push\",\"uid\":\"k\",\"data\":\"goodbye\"}\n{\"cmd\":\"kick\",\"uid\":\"k\",\"id\":\"x\"}\n")
            .await;
        assert_eq!(backend.line().await, r#"{"ok":true,"delivered":2}"#);
        let reply: serde_json::Value = serde_json::from_str(&backend.line().await).unwrap();
        assert_eq!(reply, json!({"ok":true,"id":"x","kicked":2}));
        // Offline as soon as the kick is answered.
        assert_eq!(backend.connections("k").await, 0);
        assert_eq!(backend.push("k", "too late").await, 0);
        for client in [&mut k1, &mut k2] {
            assert_eq!(next_text(client).await, "goodbye");
            assert_eq!(expect_close(client).await, (4000, "kicked".to_string()));
            expect_end(client).await;
        }

        // Kicking nobody, and several at once.
        let reply = backend.json(json!({"cmd":"kick","uid":"nobody"})).await;
        assert_eq!(reply, json!({"ok":true,"kicked":0}));
        let mut k3 = login_plain(&server, "k").await;
        let reply = backend
            .json(json!({"cmd":"kick","uids":["k","k","nobody"]}))
            .await;
        assert_eq!(reply, json!({"ok":true,"kicked":1}));
        assert_eq!(expect_close(&mut k3).await.0, 4000);

        // The others are untouched, and a kicked uid may come back.
        assert_eq!(backend.push("other", "still here").await, 1);
        assert_eq!(next_text(&mut other).await, "still here");
        let mut back = login_plain(&server, "k").await;
        assert_eq!(backend.push("k", "welcome back").await, 1);
        assert_eq!(next_text(&mut back).await, "welcome back");
        assert_eq!(backend.stats().await["kicked"], 3);
    });
}

#[test]
fn online_for_one_and_many() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let _u1a = login_plain(&server, "u1").await;
        let _u1b = login_plain(&server, "u1").await;
        let _n7 = login_plain(&server, "7").await;

        let reply = backend.json(json!({"cmd":"online","uid":"u1"})).await;
        assert_eq!(reply, json!({"ok":true,"online":true,"connections":2}));
        let reply = backend
            .json(json!({"cmd":"online","uid":"ghost","id":[1]}))
            .await;
        assert_eq!(
            reply,
            json!({"ok":true,"id":[1],"online":false,"connections":0})
        );
        let reply = backend.json(json!({"cmd":"online","uid":7})).await;
        assert_eq!(reply, json!({"ok":true,"online":true,"connections":1}));

        let reply = backend
            .json(json!({"cmd":"online","uids":["u1","ghost",7],"id":9}))
            .await;
        assert_eq!(
            reply,
            json!({"ok":true,"id":9,"results":[
                {"uid":"u1","online":true,"connections":2},
                {"uid":"ghost","online":false,"connections":0},
                {"uid":"7","online":true,"connections":1},
            ]})
        );
        let reply = backend.json(json!({"cmd":"online","uids":[]})).await;
        assert_eq!(reply, json!({"ok":true,"results":[]}));
    });
}

#[test]
fn stats_count_what_happened() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let fresh = backend.stats().await;
        for key in [
            "connections",
            "authenticated",
            "uids",
            "pushes",
            "broadcasts",
            "delivered",
            "dropped",
            "rejected",
            "auth_failures",
            "kicked",
            "idle_closed",
        ] {
            assert_eq!(fresh[key], 0, "{key} in {fresh}");
        }
        assert!(fresh["uptime_secs"].is_u64(), "{fresh}");
        assert!(fresh["rss_bytes"].as_u64().unwrap() > 0, "{fresh}");

        let mut u1a = login_plain(&server, "u1").await;
        let mut u1b = login_plain(&server, "u1").await;
        let mut u2 = login_plain(&server, "u2").await;
        let _pending = connect(server.ws, "/").await;
        let mut refused = connect(server.ws, "/").await;
        send_text(&mut refused, "").await; // not a usable uid
        assert_eq!(expect_close(&mut refused).await.0, 4001);

        assert_eq!(backend.push("u1", "p").await, 2); // pushes 1, delivered 2
        assert_eq!(backend.request(r#"{"uid":"u2","x":1}"#).await, "ok"); // pushes 2, delivered 3
        assert_eq!(backend.push("nobody", "p").await, 0); // pushes 3
        assert_eq!(backend.broadcast("b").await, 3); // broadcasts 1, delivered 6
        for client in [&mut u1a, &mut u1b] {
            assert_eq!(next_text(client).await, "p");
            assert_eq!(next_text(client).await, "b");
        }
        assert_eq!(next_text(&mut u2).await, r#"{"uid":"u2","x":1}"#);
        assert_eq!(next_text(&mut u2).await, "b");

        let reply = backend.json(json!({"cmd":"stats","id":"s"})).await;
        assert_eq!(reply["id"], "s");
        assert_eq!(reply["connections"], 4, "{reply}");
        assert_eq!(reply["authenticated"], 3, "{reply}");
        assert_eq!(reply["uids"], 2, "{reply}");
        assert_eq!(reply["pushes"], 3, "{reply}");
        assert_eq!(reply["broadcasts"], 1, "{reply}");
        assert_eq!(reply["delivered"], 6, "{reply}");
        assert_eq!(reply["auth_failures"], 1, "{reply}");
        assert_eq!(reply["dropped"], 0, "{reply}");
        assert_eq!(reply["rejected"], 0, "{reply}");
        assert_eq!(reply["kicked"], 0, "{reply}");
        assert_eq!(reply["idle_closed"], 0, "{reply}");

        backend.json(json!({"cmd":"kick","uid":"u2"})).await;
        assert_eq!(expect_close(&mut u2).await.0, 4000);
        let reply = backend.stats().await;
        assert_eq!(reply["kicked"], 1, "{reply}");
        assert_eq!(reply["authenticated"], 2, "{reply}");
        assert_eq!(reply["uids"], 1, "{reply}");
    });
}

#[test]
fn messages_after_login_are_ignored() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut client = login_plain(&server, "u1").await;

        // Text that looks like another uid does not rebind the connection.
        send_text(&mut client, "u2").await;
        send_text(&mut client, r#"{"cmd":"kick","uid":"u1"}"#).await;
        within(
            STEP,
            "sending binary",
            client.send(Message::Binary(Bytes::from_static(&[0, 1, 2, 255]))),
        )
        .await
        .unwrap();
        // A ping is answered with a pong carrying its payload.
        within(
            STEP,
            "sending a ping",
            client.send(Message::Ping(Bytes::from_static(b"are you there"))),
        )
        .await
        .unwrap();
        loop {
            match next_message(&mut client).await {
                Some(Ok(Message::Pong(payload))) => {
                    assert_eq!(&payload[..], b"are you there");
                    break;
                }
                Some(Ok(Message::Ping(_))) => {}
                other => panic!("expected a pong, got {other:?}"),
            }
        }

        assert_eq!(backend.connections("u1").await, 1);
        assert_eq!(backend.connections("u2").await, 0);
        assert_eq!(backend.push("u1", "still u1").await, 1);
        assert_eq!(next_text(&mut client).await, "still u1");
        let stats = backend.stats().await;
        assert_eq!(stats["authenticated"], 1, "{stats}");
        assert_eq!(stats["auth_failures"], 0, "{stats}");
    });
}
