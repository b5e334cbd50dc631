//! The v1 client protocol over real sockets, with a real WebSocket client
//! that offers `pushhub.v1`: negotiation both ways, every op and every error,
//! each grant rule and its refusal, messages of each kind, and the channel
//! figures in `stats`.

mod common;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use common::*;
use pushhub::auth::{Grants, mint_with_grants};
use pushhub::channel::Pattern;
use pushhub::time::unix_now;
use serde_json::{Value, json};
use smol::Async;
use smol::stream::StreamExt;
use std::net::{SocketAddr, TcpStream};

/// A client that offers `pushhub.v1` (and whether the hub chose it).
async fn v1_connect(ws: SocketAddr, path: &str) -> (Client, Option<String>) {
    let stream = Async::<TcpStream>::connect(ws).await.unwrap();
    let mut request = format!("ws://{ws}{path}").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("chat, pushhub.v1"),
    );
    let (client, response) = within(
        STEP,
        "v1 handshake",
        async_tungstenite::client_async(request, stream),
    )
    .await
    .unwrap();
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (client, chosen)
}

async fn send(client: &mut Client, frame: Value) {
    send_text(client, &frame.to_string()).await;
}

/// The next v1 frame, as JSON, without the fields that differ from run to
/// run: positions (`pos`, checked for their form here; what they mean is
/// tests/recovery.rs's) and a `welcome`'s connection id.
async fn frame(client: &mut Client) -> Value {
    let text = next_text(client).await;
    let mut frame: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"));
    let object = frame.as_object_mut().expect("a JSON object");
    if let Some(pos) = object.remove("pos") {
        let positions: Vec<&Value> = match &pos {
            Value::Object(streams) => streams
                .iter()
                .flat_map(|(k, v)| match (k.as_str(), v) {
                    ("chs", Value::Object(chs)) => chs.values().collect(),
                    _ => vec![v],
                })
                .collect(),
            one => vec![one],
        };
        for p in positions {
            let p = p.as_str().unwrap_or_else(|| panic!("pos in {text}"));
            let (epoch, offset) = p.split_once(':').unwrap_or_else(|| panic!("{p}"));
            assert!(u64::from_str_radix(epoch, 16).is_ok(), "{p} in {text}");
            assert!(offset.parse::<u64>().is_ok(), "{p} in {text}");
        }
    }
    if object["op"] == "welcome" {
        let conn = object
            .remove("conn")
            .unwrap_or_else(|| panic!("no conn: {text}"));
        assert!(
            conn.as_str().is_some_and(|c| c.parse::<u64>().is_ok()),
            "{text}"
        );
    }
    frame
}

/// A message's text without its position, for comparing bytes as sent.
fn without_pos(text: &str) -> String {
    let Some(at) = text.find(r#","pos":""#) else {
        return text.to_string();
    };
    let end = text[at + 8..].find('"').expect("a closing quote") + at + 9;
    format!("{}{}", &text[..at], &text[end..])
}

/// Sends `request` and returns the answer.
async fn ask(client: &mut Client, request: Value) -> Value {
    send(client, request).await;
    frame(client).await
}

/// A v1 client logged in with `auth`, past its `welcome`.
async fn v1_login(server: &Server, credential: Value) -> (Client, Value) {
    let (mut client, chosen) = v1_connect(server.ws, "/").await;
    assert_eq!(chosen.as_deref(), Some("pushhub.v1"));
    let mut auth = json!({"op":"auth"});
    auth.as_object_mut()
        .unwrap()
        .extend(credential.as_object().unwrap().clone());
    let welcome = ask(&mut client, auth).await;
    (client, welcome)
}

fn granted(uid: &str, channels: &[&str], publish: &[&str], subs: &[&str]) -> String {
    let patterns = |list: &[&str]| list.iter().map(|p| Pattern::parse(p).unwrap()).collect();
    let grants = Grants {
        channels: patterns(channels),
        publish: patterns(publish),
        subs: subs.iter().map(|s| s.to_string()).collect(),
    };
    mint_with_grants(&secret(), uid, unix_now() + 3600, &grants)
}

fn both_config() -> pushhub::Config {
    let mut config = token_config();
    config.auth.allow_plain_uid = true;
    config
}

#[test]
fn negotiation_both_ways() {
    let server = Server::start(plain_config());
    run(async {
        let (_v1, chosen) = v1_connect(server.ws, "/").await;
        assert_eq!(chosen.as_deref(), Some("pushhub.v1"));
        // A raw client: no subprotocol, and the original's silent login.
        let mut raw = login_plain(&server, "raw").await;
        let mut backend = Backend::connect(server.text).await;
        assert_eq!(backend.push("raw", "plain text").await, 1);
        assert_eq!(next_text(&mut raw).await, "plain text");
    });
}

#[test]
fn messages_of_each_kind_and_ping() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, welcome) = v1_login(&server, json!({"uid":"u1","id":1})).await;
        assert_eq!(welcome, json!({"op":"welcome","uid":"u1","subs":[],"id":1}));
        assert_eq!(backend.push("u1", "hello").await, 1);
        assert_eq!(frame(&mut client).await, json!({"op":"msg","d":"hello"}));
        // JSON data exactly as the backend wrote it.
        let reply = backend
            .json(json!({"cmd":"push","uid":"u1","data":{"a":[1,2]}}))
            .await;
        assert_eq!(reply["delivered"], 1);
        assert_eq!(
            without_pos(&next_text(&mut client).await),
            r#"{"op":"msg","d":{"a":[1,2]}}"#
        );
        // The original form: the whole line is `d`.
        let line = r#"{"uid":"u1","percent":"88%"}"#;
        assert_eq!(backend.request(line).await, "ok");
        assert_eq!(
            without_pos(&next_text(&mut client).await),
            format!(r#"{{"op":"msg","d":{line}}}"#)
        );
        assert_eq!(backend.broadcast("to all").await, 1);
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"msg","all":true,"d":"to all"})
        );
        assert_eq!(
            ask(&mut client, json!({"op":"ping","id":"p"})).await,
            json!({"op":"pong","id":"p"})
        );
    });
}

#[test]
fn grants_allow_and_refuse() {
    let mut config = both_config();
    config.public_channels = vec![Pattern::parse("news").unwrap()];
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let token = granted("alice", &["room:*"], &["room:1"], &["room:lobby"]);
        let (mut alice, welcome) = v1_login(&server, json!({"token":token})).await;
        assert_eq!(
            welcome,
            json!({"op":"welcome","uid":"alice","subs":["room:lobby"]})
        );
        // Its `channels` grant, a user channel, a public one.
        for ch in ["room:1", "inbox#alice", "news"] {
            assert_eq!(
                ask(&mut alice, json!({"op":"sub","ch":ch,"id":ch})).await,
                json!({"op":"subbed","ch":ch,"id":ch})
            );
        }
        // Subscribing again is answered the same.
        assert_eq!(
            ask(&mut alice, json!({"op":"sub","ch":"news"})).await,
            json!({"op":"subbed","ch":"news"})
        );
        // Refused: no grant, another uid's user channel.
        for ch in ["admin", "inbox#bob", "inbox#alice2"] {
            assert_eq!(
                ask(&mut alice, json!({"op":"sub","ch":ch})).await,
                json!({"op":"error","code":403,"reason":"no grant allows this channel","ch":ch})
            );
        }
        // A plain-uid client: public channels and its own user channel only.
        let (mut bob, _) = v1_login(&server, json!({"uid":"bob"})).await;
        assert_eq!(
            ask(&mut bob, json!({"op":"sub","ch":"news"})).await["op"],
            "subbed"
        );
        assert_eq!(
            ask(&mut bob, json!({"op":"sub","ch":"inbox#bob"})).await["op"],
            "subbed"
        );
        assert_eq!(
            ask(&mut bob, json!({"op":"sub","ch":"room:1"})).await["code"],
            403
        );
        // A raw client in room:1, subscribed by the backend.
        let mut raw = login_plain(&server, "carol").await;
        let reply = backend
            .json(json!({"cmd":"subscribe","uid":"carol","ch":"room:1"}))
            .await;
        assert_eq!(reply["subscribed"], 1);

        // Publishing: its `publish` grant only.
        assert_eq!(
            ask(
                &mut alice,
                json!({"op":"pub","ch":"room:1","d":{"t":"hi"},"id":9})
            )
            .await,
            json!({"op":"msg","ch":"room:1","d":{"t":"hi"}}),
            "the publisher is a subscriber: its copy comes first"
        );
        assert_eq!(
            frame(&mut alice).await,
            json!({"op":"pubbed","ch":"room:1","delivered":2,"id":9})
        );
        assert_eq!(next_text(&mut raw).await, r#"{"t":"hi"}"#);
        // Without an id, a publication is not answered; a string reaches
        // raw clients as its contents.
        send(&mut alice, json!({"op":"pub","ch":"room:1","d":"plain"})).await;
        assert_eq!(
            frame(&mut alice).await,
            json!({"op":"msg","ch":"room:1","d":"plain"})
        );
        assert_eq!(next_text(&mut raw).await, "plain");
        for ch in ["room:2", "news"] {
            assert_eq!(
                ask(&mut alice, json!({"op":"pub","ch":ch,"d":1})).await,
                json!({"op":"error","code":403,"reason":"no grant allows this channel","ch":ch})
            );
        }
        assert_eq!(
            ask(&mut bob, json!({"op":"pub","ch":"news","d":1})).await["code"],
            403
        );
        let stats = backend.stats().await;
        assert_eq!(stats["channel_errors"]["forbidden"], 7, "{stats}");
        assert_eq!(stats["publications"], 2, "{stats}");
    });
}

#[test]
fn every_error_keeps_the_connection() {
    let mut config = plain_config();
    config.public_channels = vec![Pattern::parse("*").unwrap()];
    config.max_subscriptions_per_connection = 2;
    config.max_channels = 3;
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, _) = v1_connect(server.ws, "/").await;
        // Before auth.
        assert_eq!(
            ask(&mut client, json!({"op":"sub","ch":"a","id":1})).await,
            json!({"op":"error","code":401,"reason":"authenticate first: send an auth op","ch":"a","id":1})
        );
        assert_eq!(
            ask(&mut client, json!({"op":"ping"})).await,
            json!({"op":"pong"})
        );
        let welcome = ask(&mut client, json!({"op":"auth","uid":"u"})).await;
        assert_eq!(welcome["op"], "welcome");
        for (request, code, kind_reason) in [
            (
                json!({"op":"auth","uid":"u"}),
                409,
                "this connection is already authenticated",
            ),
            (
                json!({"op":"unsub","ch":"never"}),
                404,
                "not subscribed to this channel",
            ),
            (
                json!({"op":"sub","ch":"a b"}),
                422,
                "bad channel name: a channel name is printable ASCII without spaces or control characters",
            ),
            (
                json!({"op":"sub","ch":"x*"}),
                422,
                "bad channel name: `*` is reserved: it may only end a pattern, as in room:*",
            ),
            (json!({"op":"sub"}), 400, "missing field `ch`"),
            (json!({"op":"sub","ch":5}), 400, "`ch` must be a string"),
            (
                json!({"op":"teleport"}),
                400,
                "unknown op: expected auth, sub, unsub, pub, ping, ack or send",
            ),
            (json!({"no":"op"}), 400, "missing field `op`"),
            (json!([1, 2]), 400, "a v1 frame must be a JSON object"),
            (json!({"op":"pub","ch":"a"}), 400, "missing field `d`"),
        ] {
            let answer = ask(&mut client, request.clone()).await;
            assert_eq!(answer["op"], "error", "{request}");
            assert_eq!(answer["code"], code, "{request}: {answer}");
            assert_eq!(answer["reason"], kind_reason, "{request}: {answer}");
        }
        // The limits.
        for ch in ["a", "b"] {
            assert_eq!(
                ask(&mut client, json!({"op":"sub","ch":ch})).await["op"],
                "subbed"
            );
        }
        assert_eq!(
            ask(&mut client, json!({"op":"sub","ch":"c"})).await["code"],
            429
        );
        let (mut other, _) = v1_login(&server, json!({"uid":"v"})).await;
        assert_eq!(
            ask(&mut other, json!({"op":"sub","ch":"c"})).await["op"],
            "subbed"
        );
        assert_eq!(
            ask(&mut other, json!({"op":"sub","ch":"d"})).await["code"],
            503
        );
        // Still connected, still served.
        assert_eq!(backend.push("u", "still here").await, 1);
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"msg","d":"still here"})
        );
        let stats = backend.stats().await;
        assert_eq!(
            stats["channel_errors"],
            json!({"bad_channel":2,"not_subscribed":1,"too_many_channels":1,"too_many_subscriptions":1}),
            "{stats}"
        );
        assert_eq!(
            stats["v1_errors"],
            json!({"already_authenticated":1,"bad_request":5,"unauthenticated":1,"unknown_op":1}),
            "{stats}"
        );
    });
}

#[test]
fn what_no_v1_client_sends_closes_with_4004() {
    let server = Server::start(plain_config());
    run(async {
        let (mut client, _) = v1_connect(server.ws, "/").await;
        send_text(&mut client, "uid1").await;
        let (code, reason) = expect_close(&mut client).await;
        assert_eq!((code, reason.as_str()), (4004, "a v1 frame must be JSON"));
        let (mut client, _) = v1_login(&server, json!({"uid":"u"})).await;
        within(STEP, "sending", client.send(Message::binary(vec![1, 2])))
            .await
            .unwrap();
        let (code, reason) = expect_close(&mut client).await;
        assert_eq!((code, reason.as_str()), (4004, "v1 frames are text frames"));
    });
}

#[test]
fn refused_credentials_close_with_4001() {
    let server = Server::start(token_config());
    run(async {
        for (credential, reason) in [
            (
                json!({"uid":"u"}),
                "unauthorized: this hub takes tokens only: send a token",
            ),
            (json!({"token":"x.y.z"}), "unauthorized: malformed token"),
        ] {
            let (mut client, _) = v1_connect(server.ws, "/").await;
            let mut auth = json!({"op":"auth"});
            auth.as_object_mut()
                .unwrap()
                .extend(credential.as_object().unwrap().clone());
            send(&mut client, auth).await;
            let (code, got) = expect_close(&mut client).await;
            assert_eq!((code, got.as_str()), (4001, reason));
        }
    });
    let server = Server::start(plain_config());
    run(async {
        let (mut client, _) = v1_connect(server.ws, "/").await;
        send(&mut client, json!({"op":"auth","token":"x.y.z"})).await;
        let (code, got) = expect_close(&mut client).await;
        assert_eq!(
            (code, got.as_str()),
            (
                4001,
                "unauthorized: this hub verifies no tokens: send a uid"
            )
        );
    });
}

#[test]
fn a_token_in_the_url_is_welcomed_unasked() {
    let server = Server::start(both_config());
    run(async {
        let token = granted("t1", &[], &[], &["inbox#t1", "feed"]);
        let (mut client, chosen) = v1_connect(server.ws, &format!("/?token={token}")).await;
        assert_eq!(chosen.as_deref(), Some("pushhub.v1"));
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"welcome","uid":"t1","subs":["inbox#t1","feed"]})
        );
        assert_eq!(
            ask(&mut client, json!({"op":"auth","uid":"again"})).await["code"],
            409
        );
    });
}

#[test]
fn backend_subscriptions_are_announced() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, _) = v1_login(&server, json!({"uid":"u"})).await;
        let reply = backend
            .json(json!({"cmd":"subscribe","uid":"u","ch":"ops"}))
            .await;
        assert_eq!(reply["subscribed"], 1);
        assert_eq!(frame(&mut client).await, json!({"op":"subbed","ch":"ops"}));
        let reply = backend
            .json(json!({"cmd":"publish","ch":"ops","data":[1]}))
            .await;
        assert_eq!(reply["delivered"], 1);
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"msg","ch":"ops","d":[1]})
        );
        let reply = backend
            .json(json!({"cmd":"unsubscribe","uid":"u","ch":"ops"}))
            .await;
        assert_eq!(reply["unsubscribed"], 1);
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"unsubbed","ch":"ops"})
        );
        let reply = backend.json(json!({"cmd":"members","ch":"ops"})).await;
        assert_eq!(reply["connections"], 0);
        drop(client.next());
    });
}
