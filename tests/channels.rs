//! Channels from the text port, over real sockets: server-side subscriptions
//! of raw clients (the original's), publications, presence (`channels`,
//! `members`), the limits, the errors, and what a closing connection leaves.

mod common;

use common::*;
use serde_json::json;

#[test]
fn raw_clients_subscribed_by_a_backend_get_publications_as_plain_messages() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut a1 = login_plain(&server, "a").await;
        let mut a2 = login_plain(&server, "a").await;
        let mut b = login_plain(&server, "b").await;
        let reply = backend
            .json(json!({"cmd":"subscribe","uid":"a","ch":"room:1"}))
            .await;
        assert_eq!(reply, json!({"ok":true,"subscribed":2}));
        let reply = backend
            .json(json!({"cmd":"subscribe","uids":["a","b"],"chs":["room:1","room:2"],"id":7}))
            .await;
        // a's two connections were in room:1 already.
        assert_eq!(reply, json!({"ok":true,"id":7,"subscribed":4}));

        let reply = backend
            .json(json!({"cmd":"publish","ch":"room:1","data":{"text":"hi"}}))
            .await;
        assert_eq!(reply, json!({"ok":true,"delivered":3}));
        for client in [&mut a1, &mut a2, &mut b] {
            assert_eq!(next_text(client).await, r#"{"text":"hi"}"#);
        }
        // A string's contents, as for a push; several channels add up.
        let reply = backend
            .json(json!({"cmd":"publish","chs":["room:2","nobody-here","room:2"],"data":"two"}))
            .await;
        assert_eq!(reply, json!({"ok":true,"delivered":3}));
        for client in [&mut a1, &mut a2, &mut b] {
            assert_eq!(next_text(client).await, "two");
        }

        let reply = backend.json(json!({"cmd":"channels"})).await;
        assert_eq!(
            reply,
            json!({"ok":true,"channels":[
                {"ch":"room:1","connections":3},
                {"ch":"room:2","connections":3},
            ]})
        );
        let reply = backend.json(json!({"cmd":"members","ch":"room:1"})).await;
        assert_eq!(reply, json!({"ok":true,"uids":["a","b"],"connections":3}));
        let reply = backend.json(json!({"cmd":"members","ch":"none"})).await;
        assert_eq!(reply, json!({"ok":true,"uids":[],"connections":0}));

        let reply = backend
            .json(json!({"cmd":"unsubscribe","uid":"a","ch":"room:1"}))
            .await;
        assert_eq!(reply, json!({"ok":true,"unsubscribed":2}));
        let reply = backend
            .json(json!({"cmd":"publish","ch":"room:1","data":"left"}))
            .await;
        assert_eq!(reply, json!({"ok":true,"delivered":1}));
        assert_eq!(next_text(&mut b).await, "left");
        // The pushes the clients get are still theirs alone.
        assert_eq!(backend.push("a", "direct").await, 2);
        assert_eq!(next_text(&mut a1).await, "direct");

        let stats = backend.stats().await;
        assert_eq!(stats["channels"], 2, "{stats}");
        assert_eq!(stats["subscriptions"], 4, "{stats}");
        assert_eq!(stats["publications"], 3, "{stats}");
    });
}

#[test]
fn a_closed_connection_leaves_its_channels_and_an_empty_channel_goes() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let client = login_plain(&server, "u").await;
        let reply = backend
            .json(json!({"cmd":"subscribe","uid":"u","chs":["x","y"]}))
            .await;
        assert_eq!(reply["subscribed"], 2);
        drop(client);
        wait_connections(&mut backend, "u", 0).await;
        let reply = backend.json(json!({"cmd":"channels"})).await;
        assert_eq!(reply, json!({"ok":true,"channels":[]}));
        let reply = backend
            .json(json!({"cmd":"publish","ch":"x","data":1}))
            .await;
        assert_eq!(reply, json!({"ok":true,"delivered":0}));
        let stats = backend.stats().await;
        assert_eq!(
            (stats["channels"].clone(), stats["subscriptions"].clone()),
            (json!(0), json!(0))
        );
    });
}

#[test]
fn limits_refuse_by_reason_and_count() {
    let mut config = plain_config();
    config.max_subscriptions_per_connection = 2;
    config.max_channels = 3;
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let _u = login_plain(&server, "u").await;
        let _v = login_plain(&server, "v").await;
        let reply = backend
            .json(json!({"cmd":"subscribe","uid":"u","chs":["a","b","c"]}))
            .await;
        assert_eq!(
            reply,
            json!({"ok":true,"subscribed":2,"refused":{"too_many_subscriptions":1}})
        );
        let reply = backend
            .json(json!({"cmd":"subscribe","uid":"v","chs":["c","d"]}))
            .await;
        assert_eq!(
            reply,
            json!({"ok":true,"subscribed":1,"refused":{"too_many_channels":1}})
        );
        let stats = backend.stats().await;
        assert_eq!(
            stats["channel_errors"],
            json!({"too_many_channels":1,"too_many_subscriptions":1}),
            "{stats}"
        );
    });
}

#[test]
fn bad_channel_commands_get_typed_errors() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let long = "x".repeat(256);
        for (request, error) in [
            (
                json!({"cmd":"publish","ch":"a b","data":1}),
                "bad channel name: a channel name is printable ASCII without spaces or control characters",
            ),
            (
                json!({"cmd":"publish","ch":"room:*","data":1}),
                "bad channel name: `*` is reserved: it may only end a pattern, as in room:*",
            ),
            (
                json!({"cmd":"publish","ch":long,"data":1}),
                "bad channel name: a channel name is at most 255 bytes",
            ),
            (
                json!({"cmd":"publish","ch":"","data":1}),
                "bad channel name: a channel name must not be empty",
            ),
            (
                json!({"cmd":"publish","ch":"a","chs":["b"],"data":1}),
                "give `ch` or `chs`, not both",
            ),
            (json!({"cmd":"publish","data":1}), "missing field `ch`"),
            (json!({"cmd":"publish","ch":"a"}), "missing field `data`"),
            (
                json!({"cmd":"publish","ch":5,"data":1}),
                "`ch` must be a string",
            ),
            (
                json!({"cmd":"publish","chs":"a","data":1}),
                "`chs` must be an array of channel names",
            ),
            (json!({"cmd":"subscribe","ch":"a"}), "missing field `uid`"),
            (json!({"cmd":"unsubscribe","uid":"u"}), "missing field `ch`"),
            (json!({"cmd":"members"}), "missing field `ch`"),
            (
                json!({"cmd":"channels","prefix":1}),
                "`prefix` must be a string",
            ),
        ] {
            let reply = backend.json(request.clone()).await;
            assert_eq!(reply, json!({"ok":false,"error":error}), "{request}");
        }
        let stats = backend.stats().await;
        assert_eq!(stats["text_errors"]["bad_channel"], 4, "{stats}");
    });
}
