//! Authentication over real sockets: plain uids (the original's silent login,
//! the greeting of `--login-reply`, the original-form backend), HS256 tokens as the first message or in the query,
//! every kind of refusal (close 4001, nothing bound), mixed mode and the
//! authentication deadline (close 4002).

mod common;

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::{Bytes, Message};
use common::*;
use data_encoding::BASE64URL_NOPAD;
use hmac::{Hmac, KeyInit, Mac};
use pushhub::auth::{Secret, mint};
use pushhub::time::unix_now;
use serde_json::json;
use sha2::Sha256;

/// Signs arbitrary header and claims JSON with `secret`, as any JWT library would.
fn sign(header: &str, claims: &str, secret: &[u8]) -> String {
    let mut token = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.as_bytes()),
        BASE64URL_NOPAD.encode(claims.as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(token.as_bytes());
    token.push('.');
    token.push_str(&BASE64URL_NOPAD.encode(&mac.finalize().into_bytes()));
    token
}

const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Tokens for "victim" that must all be refused, with what the close reason says.
fn bad_tokens() -> Vec<(&'static str, String, &'static str)> {
    let later = unix_now() + 3600;
    let other = Secret::from_file_contents(b"a guessed secret").unwrap();
    let good = token("victim");
    let mut tampered: Vec<&str> = good.split('.').collect();
    let forged_claims =
        BASE64URL_NOPAD.encode(format!(r#"{{"sub":"admin","exp":{later}}}"#).as_bytes());
    tampered[1] = &forged_claims;
    vec![
        (
            "bad signature",
            mint(&other, "victim", later),
            "bad token signature",
        ),
        (
            "tampered payload",
            tampered.join("."),
            "bad token signature",
        ),
        (
            "expired",
            mint(&secret(), "victim", unix_now() - 10),
            "token expired",
        ),
        (
            "missing exp",
            sign(HS256, r#"{"sub":"victim"}"#, SECRET),
            "token has no exp claim",
        ),
        (
            "not yet valid",
            sign(
                HS256,
                &format!(r#"{{"sub":"victim","exp":{later},"nbf":{later}}}"#),
                SECRET,
            ),
            "nbf",
        ),
        (
            "alg none",
            sign(
                r#"{"alg":"none"}"#,
                &format!(r#"{{"sub":"victim","exp":{later}}}"#),
                SECRET,
            ),
            "HS256",
        ),
        (
            "empty sub",
            sign(HS256, &format!(r#"{{"sub":"","exp":{later}}}"#), SECRET),
            "sub",
        ),
        ("garbage", "not.a.token".to_string(), "malformed"),
        ("plain uid", "victim".to_string(), "malformed"),
        ("empty", String::new(), "malformed"),
        ("huge", "x".repeat(5000), "malformed"),
    ]
}

/// The original's browser code (`ws.send(uid)` on open, every message read as
/// a push) and its backend, unchanged: the login is answered with nothing, so
/// the first message the page gets is the first push.
#[test]
fn plain_uid_login_is_silent_and_workerman_backend() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut client = connect(server.ws, "/").await;
        send_text(&mut client, "uid1").await;
        // Fails if anything but the pong comes back (a greeting, say).
        logged_in(&mut client).await;
        let mut numeric = login_plain(&server, "42").await;
        let mut unicode = login_plain(&server, "用户 1").await;

        // The original push.php backend: one JSON object per line, `ok` or `fail`,
        // and the line itself is what the client receives.
        let line = r#"{"uid":"uid1","percent":"88%",  "nested" : {"a":[1,2.50]}}"#;
        assert_eq!(backend.request(line).await, "ok");
        assert_eq!(next_text(&mut client).await, line);
        let line = r#"{"uid":42,"msg":"numeric uid"}"#;
        assert_eq!(backend.request(line).await, "ok");
        assert_eq!(next_text(&mut numeric).await, line);
        let line = r#"{"uid":"\u7528\u6237 1","msg":"escaped uid"}"#;
        assert_eq!(backend.request(line).await, "ok");
        assert_eq!(next_text(&mut unicode).await, line);
        // CRLF line endings are accepted; the \r is not part of the message.
        backend.send(b"{\"uid\":\"uid1\",\"crlf\":true}\r\n").await;
        assert_eq!(backend.line().await, "ok");
        assert_eq!(
            next_text(&mut client).await,
            r#"{"uid":"uid1","crlf":true}"#
        );
        // Workerman's Text protocol trims every \r before the \n.
        backend.send(b"{\"uid\":\"uid1\",\"cr\":2}\r\r\n").await;
        assert_eq!(backend.line().await, "ok");
        assert_eq!(next_text(&mut client).await, r#"{"uid":"uid1","cr":2}"#);

        assert_eq!(backend.request(r#"{"uid":"offline","x":1}"#).await, "fail");
        assert_eq!(backend.request(r#"{"percent":"no uid"}"#).await, "fail");
    });
}

/// `--login-reply`: the Workerman manual's greeting, before the first push.
#[test]
fn login_reply_greets_a_plain_uid_login_first() {
    let mut config = plain_config();
    config.login_reply = true;
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut client = connect(server.ws, "/").await;
        send_text(&mut client, "uid1").await;
        assert_eq!(
            next_text(&mut client).await,
            "login success, your uid is uid1"
        );
        assert_eq!(backend.request(r#"{"uid":"uid1","n":1}"#).await, "ok");
        assert_eq!(next_text(&mut client).await, r#"{"uid":"uid1","n":1}"#);
        // Token logins are never greeted, even with the flag.
        let mut config = token_config();
        config.login_reply = true;
        let tokens = Server::start(config);
        let mut backend = Backend::connect(tokens.text).await;
        let mut by_token = login_token(&tokens, &mut backend, "t1").await;
        assert_eq!(backend.push("t1", "first").await, 1);
        assert_eq!(next_text(&mut by_token).await, "first");
    });
}

#[test]
fn plain_mode_refuses_unusable_uids() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let long = "x".repeat(257);
        for bad in ["", "a\nb", "tab\there", long.as_str()] {
            let mut client = connect(server.ws, "/").await;
            send_text(&mut client, bad).await;
            let (code, reason) = expect_close(&mut client).await;
            assert_eq!(code, 4001, "{bad:?}: {reason}");
            assert!(reason.starts_with("unauthorized:"), "{bad:?}: {reason}");
            expect_end(&mut client).await;
        }
        let stats = backend.stats().await;
        assert_eq!(stats["auth_failures"], 4, "{stats}");
        assert_eq!(stats["authenticated"], 0, "{stats}");
        assert_eq!(stats["uids"], 0, "{stats}");
        assert_eq!(backend.connections("uid1").await, 0);
        // 256 bytes is still a uid.
        let _max = login_plain(&server, &"y".repeat(256)).await;
    });
}

#[test]
fn token_as_first_message() {
    let server = Server::start(token_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut client = login_token(&server, &mut backend, "alice").await;
        // No greeting in token mode: the push is the first thing the client reads.
        assert_eq!(backend.push("alice", "hello alice").await, 1);
        assert_eq!(next_text(&mut client).await, "hello alice");
        // A second connection of the same uid.
        let mut second = login_token(&server, &mut backend, "alice").await;
        assert_eq!(backend.push("alice", "both").await, 2);
        assert_eq!(next_text(&mut client).await, "both");
        assert_eq!(next_text(&mut second).await, "both");
        // Surrounding whitespace around the token is tolerated.
        let before = backend.connections("bob").await;
        let mut bob = connect(server.ws, "/").await;
        send_text(&mut bob, &format!("  {}\n", token("bob"))).await;
        wait_connections(&mut backend, "bob", before + 1).await;
        assert_eq!(backend.push("bob", "hi bob").await, 1);
        assert_eq!(next_text(&mut bob).await, "hi bob");
    });
}

#[test]
fn token_in_query_is_bound_before_the_handshake_answer() {
    let server = Server::start(token_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        for path in [
            format!("/?token={}", token("q")),
            format!("/socket?foo=1&token={}&bar=2", token("q")),
        ]
        .iter()
        {
            let mut client = connect(server.ws, path).await;
            // No polling: the connection is bound as soon as the handshake is answered.
            assert_eq!(backend.connections("q").await, 1, "{path}");
            assert_eq!(backend.push("q", path).await, 1);
            assert_eq!(next_text(&mut client).await, *path);
            close_client(&mut client).await;
        }
        assert_eq!(backend.connections("q").await, 0);
    });
}

/// Without a secret, a `token` query parameter means nothing: the first message
/// is still the uid.
#[test]
fn plain_mode_ignores_a_query_token() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut client = connect(server.ws, &format!("/?token={}", token("t"))).await;
        assert_eq!(backend.stats().await["authenticated"], 0);
        send_text(&mut client, "plain").await;
        logged_in(&mut client).await;
        assert_eq!(backend.connections("t").await, 0);
        assert_eq!(backend.connections("plain").await, 1);
    });
}

#[test]
fn bad_tokens_are_refused_with_4001() {
    let server = Server::start(token_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let cases = bad_tokens();
        for (what, bad, says) in &cases {
            let mut client = connect(server.ws, "/").await;
            send_text(&mut client, bad).await;
            let (code, reason) = expect_close(&mut client).await;
            assert_eq!(code, 4001, "{what}: {reason}");
            assert!(reason.starts_with("unauthorized:"), "{what}: {reason}");
            assert!(reason.contains(says), "{what}: {reason:?} lacks {says:?}");
            expect_end(&mut client).await;
        }
        // The same tokens in the query: the handshake completes, then 4001.
        for (what, bad, _) in &cases {
            if bad.is_empty() || bad.len() > 4096 {
                continue;
            }
            let mut client = connect(server.ws, &format!("/?token={bad}")).await;
            let (code, reason) = expect_close(&mut client).await;
            assert_eq!(code, 4001, "query {what}: {reason}");
            assert!(
                reason.starts_with("unauthorized:"),
                "query {what}: {reason}"
            );
        }
        assert_eq!(backend.connections("victim").await, 0);
        assert_eq!(backend.connections("admin").await, 0);
        let stats = backend.stats().await;
        assert_eq!(stats["authenticated"], 0, "{stats}");
        assert_eq!(stats["uids"], 0, "{stats}");
        let query_cases = cases
            .iter()
            .filter(|(_, bad, _)| !bad.is_empty() && bad.len() <= 4096)
            .count();
        assert_eq!(
            stats["auth_failures"],
            (cases.len() + query_cases) as u64,
            "{stats}"
        );

        // The hub is unharmed: a good token still works.
        let mut ok = login_token(&server, &mut backend, "victim").await;
        assert_eq!(backend.push("victim", "fine").await, 1);
        assert_eq!(next_text(&mut ok).await, "fine");
    });
}

/// A binary first message is refused like a bad credential, in either mode, and
/// counted like one.
#[test]
fn binary_first_message_is_refused_and_counted() {
    for config in [plain_config(), token_config()] {
        let server = Server::start(config);
        run(async {
            let mut backend = Backend::connect(server.text).await;
            let mut client = connect(server.ws, "/").await;
            let credential = token("victim");
            within(
                STEP,
                "sending binary",
                client.send(Message::Binary(Bytes::from(credential.into_bytes()))),
            )
            .await
            .unwrap();
            let (code, reason) = expect_close(&mut client).await;
            assert_eq!(code, 4001, "{reason}");
            assert!(reason.starts_with("unauthorized:"), "{reason}");
            expect_end(&mut client).await;

            assert_eq!(backend.connections("victim").await, 0);
            let stats = backend.stats().await;
            assert_eq!(stats["authenticated"], 0, "{stats}");
            assert_eq!(stats["connections"], 0, "{stats}");
            assert_eq!(
                stats["auth_failures"], 1,
                "a refused binary credential is an authentication failure: {stats}"
            );
        });
    }
}

#[test]
fn mixed_mode_accepts_tokens_and_plain_uids() {
    let mut config = token_config();
    config.auth.allow_plain_uid = true;
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        // A token: bound to its sub, no greeting.
        let mut by_token = login_token(&server, &mut backend, "t1").await;
        assert_eq!(backend.push("t1", "token user").await, 1);
        assert_eq!(next_text(&mut by_token).await, "token user");
        // A plain uid.
        let mut by_uid = login_plain(&server, "p1").await;
        assert_eq!(backend.push("p1", "plain user").await, 1);
        assert_eq!(next_text(&mut by_uid).await, "plain user");
        // In the query.
        let mut by_query = connect(server.ws, &format!("/?token={}", token("t2"))).await;
        assert_eq!(backend.push("t2", "query user").await, 1);
        assert_eq!(next_text(&mut by_query).await, "query user");

        // A `token` in the query is always a signed token, never a plain uid.
        let mut plain_in_query = connect(server.ws, "/?token=p2").await;
        let (code, reason) = expect_close(&mut plain_in_query).await;
        assert_eq!(code, 4001, "{reason}");
        assert_eq!(backend.connections("p2").await, 0);

        // Anything shaped like a token is verified as one, even with plain uids allowed.
        let forged = mint(
            &Secret::from_file_contents(b"guess").unwrap(),
            "admin",
            unix_now() + 60,
        );
        let expired = mint(&secret(), "admin", unix_now() - 10);
        for bad in [forged, expired] {
            let mut client = connect(server.ws, "/").await;
            send_text(&mut client, &bad).await;
            let (code, reason) = expect_close(&mut client).await;
            assert_eq!(code, 4001, "{reason}");
            assert!(reason.starts_with("unauthorized:"), "{reason}");
        }
        assert_eq!(backend.connections("admin").await, 0);
        let reply = backend
            .json(json!({"cmd":"online","uids":["t1","p1","t2"]}))
            .await;
        for result in reply["results"].as_array().unwrap() {
            assert_eq!(result["connections"], 1, "{reply}");
        }
    });
}

#[test]
fn unauthenticated_clients_are_closed_at_the_auth_deadline() {
    let mut config = plain_config();
    config.auth_timeout = Duration::from_millis(300);
    config.ping_interval = Duration::from_secs(10);
    config.idle_timeout = Duration::from_secs(20);
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut prompt = login_plain(&server, "prompt").await;
        let started = Instant::now();
        let mut silent = connect(server.ws, "/").await;
        let (code, reason) = expect_close(&mut silent).await;
        let waited = started.elapsed();
        assert_eq!(
            (code, reason.as_str()),
            (4002, "authentication timeout"),
            "after {waited:?}"
        );
        assert!(
            waited >= Duration::from_millis(250),
            "closed after only {waited:?}"
        );
        expect_end(&mut silent).await;

        // Authenticating in time is enough: the prompt client (older than the
        // silent one) is still there.
        assert_eq!(backend.push("prompt", "still here").await, 1);
        assert_eq!(next_text(&mut prompt).await, "still here");
        let stats = backend.stats().await;
        assert_eq!(stats["auth_failures"], 1, "{stats}");
        assert_eq!(stats["connections"], 1, "{stats}");

        // Messages other than text or binary do not count as authenticating.
        let mut pinger = connect(server.ws, "/").await;
        within(
            STEP,
            "sending a ping",
            pinger.send(Message::Ping(Bytes::from_static(b"p"))),
        )
        .await
        .unwrap();
        assert_eq!(expect_close(&mut pinger).await.0, 4002);
    });
}
