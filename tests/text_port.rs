//! The backend port: every malformed request gets an error reply and leaves the
//! connection usable, pipelined requests are answered in order, and an over-long
//! line closes only its own connection.

mod common;

use std::net::TcpStream;

use common::*;
use serde_json::{Value, json};
use smol::Async;
use smol::io::AsyncWriteExt;

/// A request known to work, sent after each bad one.
async fn probe(backend: &mut Backend, n: usize) {
    let reply = backend
        .json(json!({"cmd":"online","uid":"probe","id":format!("probe-{n}")}))
        .await;
    assert_eq!(
        reply,
        json!({"ok":true,"id":format!("probe-{n}"),"online":false,"connections":0}),
        "the request after bad line #{n} was not served"
    );
}

#[test]
fn every_bad_line_gets_an_error_and_the_connection_keeps_working() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        // (line, id expected in the reply, words the error must contain)
        let errors: &[(&[u8], Option<Value>, &str)] = &[
            (b"{", None, "invalid JSON"),
            (b"hello", None, "invalid JSON"),
            (b"{\"uid\":", None, "invalid JSON"),
            (b"{\"uid\":\"a\"} trailing", None, "invalid JSON"),
            (b"{\"uid\":\"a\",\"uid\":\"b\"}", None, "invalid JSON"),
            (b"[1,2]", None, "object"),
            (b"\"u1\"", None, "object"),
            (b"42", None, "object"),
            (b"null", None, "object"),
            (b"", None, "empty"),
            (b"   \t ", None, "empty"),
            (b"\xff\xfe{}", None, "UTF-8"),
            (b"{\"cmd\":\"ex\xffplode\"}", None, "UTF-8"),
            (b"{\"cmd\":\"explode\",\"id\":1}", Some(json!(1)), "explode"),
            (b"{\"cmd\":5,\"id\":\"t\"}", Some(json!("t")), "cmd"),
            (
                b"{\"cmd\":\"push\",\"uid\":\"u\",\"id\":{\"n\":[1]}}",
                Some(json!({"n":[1]})),
                "data",
            ),
            (b"{\"cmd\":\"push\",\"data\":1}", None, "uid"),
            (b"{\"cmd\":\"broadcast\"}", None, "data"),
            (b"{\"cmd\":\"online\"}", None, "uid"),
            (b"{\"cmd\":\"kick\",\"id\":null}", Some(Value::Null), "uid"),
            (
                b"{\"cmd\":\"push\",\"uid\":\"a\",\"uids\":[\"b\"],\"data\":1}",
                None,
                "not both",
            ),
            (
                b"{\"cmd\":\"online\",\"uid\":\"a\",\"uids\":[]}",
                None,
                "not both",
            ),
            (b"{\"cmd\":\"push\",\"uid\":[1],\"data\":1}", None, "`uid`"),
            (b"{\"cmd\":\"kick\",\"uid\":true}", None, "`uid`"),
            (b"{\"cmd\":\"online\",\"uid\":{}}", None, "`uid`"),
            (b"{\"cmd\":\"online\",\"uids\":\"u1\"}", None, "`uids`"),
            (b"{\"cmd\":\"online\",\"uids\":[{}]}", None, "`uids`"),
            (
                b"{\"cmd\":\"push\",\"uids\":[\"a\",null],\"data\":1}",
                None,
                "`uids`",
            ),
        ];
        let mut n = 0;
        for (line, id, says) in errors {
            let mut bytes = line.to_vec();
            bytes.push(b'\n');
            backend.send(&bytes).await;
            let reply = backend.line().await;
            let shown = String::from_utf8_lossy(line);
            let reply: Value = serde_json::from_str(&reply)
                .unwrap_or_else(|e| panic!("{shown:?}: reply {reply:?} is not JSON: {e}"));
            assert_eq!(reply["ok"], false, "{shown:?}: {reply}");
            let error = reply["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{shown:?}: {reply}"));
            assert!(error.contains(says), "{shown:?}: {error:?} lacks {says:?}");
            assert_eq!(reply.get("id"), id.as_ref(), "{shown:?}: {reply}");
            probe(&mut backend, n).await;
            n += 1;
        }

        // The original form (no `cmd`) with an unusable uid is answered `fail`.
        for line in [
            r#"{"percent":"88%"}"#,
            r#"{"uid":true}"#,
            r#"{"uid":null}"#,
            r#"{"uid":{"a":1}}"#,
            r#"{"uid":["u1"]}"#,
            r#"{}"#,
        ] {
            assert_eq!(backend.request(line).await, "fail", "{line}");
            probe(&mut backend, n).await;
            n += 1;
        }

        // Nothing above was counted as a push.
        let stats = backend.stats().await;
        assert_eq!(stats["pushes"], 0, "{stats}");
    });
}

/// serde reads a JSON `null` in an `Option` field as an absent field, so a null
/// `cmd` turns a command into the original form and a null `data` is "missing".
#[test]
fn null_cmd_is_a_wrong_typed_cmd() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut client = login_plain(&server, "u1").await;
        let reply = backend.request(r#"{"cmd":null,"uid":"u1","id":3}"#).await;
        let reply: Value = serde_json::from_str(&reply)
            .unwrap_or_else(|_| panic!("a null cmd was taken for the original form: {reply:?}"));
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["id"], 3, "{reply}");
        assert!(reply["error"].as_str().unwrap().contains("cmd"), "{reply}");
        // Nothing was delivered: the next message is the next push.
        assert_eq!(backend.push("u1", "next").await, 1);
        assert_eq!(next_text(&mut client).await, "next");
    });
}

/// `data` that is not a string is delivered as its JSON text; `null` is JSON too.
#[test]
fn null_data_is_pushed_as_its_json_text() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut client = login_plain(&server, "u1").await;
        for (data, text) in [
            ("false", "false"),
            ("0", "0"),
            ("[]", "[]"),
            ("null", "null"),
        ] {
            let reply = backend
                .request(&format!(r#"{{"cmd":"push","uid":"u1","data":{data}}}"#))
                .await;
            assert_eq!(reply, r#"{"ok":true,"delivered":1}"#, "data {data}");
            assert_eq!(next_text(&mut client).await, text);
        }
    });
}

#[test]
fn several_bad_lines_in_one_write_are_answered_in_order() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let _u1 = login_plain(&server, "u1").await;
        backend
            .send(
                b"{\"cmd\":\"nope\",\"id\":1}\n\n{\"uid\":\"u1\"}\r\n[]\n{\"uid\":false}\n\
                  {\"cmd\":\"online\",\"uid\":\"u1\",\"id\":2}\n",
            )
            .await;
        let first: Value = serde_json::from_str(&backend.line().await).unwrap();
        assert_eq!((&first["ok"], &first["id"]), (&json!(false), &json!(1)));
        let empty: Value = serde_json::from_str(&backend.line().await).unwrap();
        assert_eq!(empty["ok"], false);
        assert_eq!(backend.line().await, "ok");
        let array: Value = serde_json::from_str(&backend.line().await).unwrap();
        assert_eq!(array["ok"], false);
        assert_eq!(backend.line().await, "fail");
        assert_eq!(
            backend.line().await,
            r#"{"ok":true,"id":2,"online":true,"connections":1}"#
        );
    });
}

#[test]
fn last_line_without_newline_is_answered_at_eof() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut client = login_plain(&server, "u1").await;
        backend
            .send(b"{\"cmd\":\"stats\",\"id\":1}\n{\"uid\":\"u1\",\"last\":true}")
            .await;
        backend
            .stream
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        let stats: Value = serde_json::from_str(&backend.line().await).unwrap();
        assert_eq!(stats["id"], 1);
        assert_eq!(backend.line().await, "ok");
        backend.expect_eof().await;
        assert_eq!(next_text(&mut client).await, r#"{"uid":"u1","last":true}"#);
    });
}

/// Sends `n` pushes to one client in a single write, and checks that every
/// reply and every message arrives, each in order; `data(i)` is push i's text.
fn pipelined_burst(n: usize, data: impl Fn(usize) -> String) {
    let server = Server::start(plain_config());
    run(async {
        let mut client = login_plain(&server, "u1").await;
        let mut backend = Backend::connect(server.text).await;
        let mut burst = Vec::new();
        for i in 0..n {
            let line = serde_json::json!({"cmd": "push", "uid": "u1", "data": data(i), "id": i});
            burst.extend_from_slice(format!("{line}\n").as_bytes());
        }
        let Backend { stream, buf } = &mut backend;
        let stream: &Async<TcpStream> = stream;
        let write = async {
            within(STEP, "writing the burst", (&*stream).write_all(&burst))
                .await
                .unwrap();
        };
        let replies = async {
            for i in 0..n {
                let line = within(STEP, "a pipelined reply", read_line(stream, buf))
                    .await
                    .unwrap_or_else(|| panic!("the text port closed after {i} replies"));
                assert_eq!(
                    line,
                    format!("{{\"ok\":true,\"id\":{i},\"delivered\":1}}"),
                    "reply #{i}: was the receiver dropped?"
                );
            }
        };
        let messages = async {
            for i in 0..n {
                assert!(next_text(&mut client).await == data(i), "message #{i}");
            }
        };
        smol::future::zip(write, smol::future::zip(replies, messages)).await;

        let stats = backend.stats().await;
        assert_eq!(stats["pushes"], n as u64, "{stats}");
        assert_eq!(stats["delivered"], n as u64, "{stats}");
        assert_eq!(stats["dropped"], 0, "{stats}");
    });
}

/// Ten thousand pushes in one write: every reply, in order, and every message, in order.
#[test]
fn pipelined_pushes_are_answered_in_order() {
    pipelined_burst(10_000, |i| format!("m{i}"));
}

/// Pipelined pushes of 1 KiB each: a read of the text port holds far fewer lines
/// than the line budget, so only yielding after every read lets the receiving
/// connection drain its queue while the burst is being handled.
#[test]
fn pipelined_kilobyte_pushes_do_not_starve_the_receiver() {
    let pad = "k".repeat(1000);
    pipelined_burst(3000, |i| format!("{i:06}{pad}"));
}

#[test]
fn an_over_long_line_closes_only_its_connection() {
    let mut config = plain_config();
    config.max_line_length = 256;
    let server = Server::start(config);
    run(async {
        let mut client = login_plain(&server, "u1").await;
        let mut other = Backend::connect(server.text).await;
        assert_eq!(other.push("u1", "before").await, 1);
        assert_eq!(next_text(&mut client).await, "before");

        // A line at the limit is fine.
        let mut at_limit = Backend::connect(server.text).await;
        let line = format!(r#"{{"uid":"u1","pad":"{}"}}"#, "p".repeat(256 - 21));
        assert_eq!(line.len(), 256);
        assert_eq!(at_limit.request(&line).await, "ok");
        assert_eq!(next_text(&mut client).await, line);

        // Requests before the long line are answered, then the error, then EOF.
        let mut long = Backend::connect(server.text).await;
        let mut bytes = b"{\"cmd\":\"online\",\"uid\":\"u1\",\"id\":1}\n".to_vec();
        bytes
            .extend_from_slice(format!(r#"{{"uid":"u1","pad":"{}"}}"#, "p".repeat(237)).as_bytes());
        bytes.extend_from_slice(b"\n{\"cmd\":\"stats\"}\n");
        long.send(&bytes).await;
        assert_eq!(
            long.line().await,
            r#"{"ok":true,"id":1,"online":true,"connections":1}"#
        );
        let error: Value = serde_json::from_str(&long.line().await).unwrap();
        assert_eq!(error["ok"], false, "{error}");
        assert!(error["error"].as_str().unwrap().contains("256"), "{error}");
        long.expect_eof().await;

        // A line that never ends is refused once it passes the limit.
        let mut endless = Backend::connect(server.text).await;
        endless.send(&[b'x'; 4096]).await;
        let error: Value = serde_json::from_str(&endless.line().await).unwrap();
        assert_eq!(error["ok"], false, "{error}");
        endless.expect_eof().await;

        // Nothing of the long lines was delivered, and the other backends still work.
        assert_eq!(other.push("u1", "after").await, 1);
        assert_eq!(next_text(&mut client).await, "after");
        assert_eq!(at_limit.request(r#"{"uid":"u1","again":1}"#).await, "ok");
        assert_eq!(next_text(&mut client).await, r#"{"uid":"u1","again":1}"#);
        let stats = other.stats().await;
        assert_eq!(stats["pushes"], 4, "{stats}");
    });
}

#[test]
fn a_long_line_within_the_limit_spans_many_reads() {
    let mut config = plain_config();
    config.max_line_length = 1 << 20;
    config.max_queue_bytes = 1 << 20;
    let server = Server::start(config);
    run(async {
        let mut client = login_plain(&server, "u1").await;
        let mut backend = Backend::connect(server.text).await;
        // 600 KiB: several times the hub's read chunk.
        let data = "d".repeat(600 * 1024);
        let request = json!({"cmd":"push","uid":"u1","data":data,"id":"big"}).to_string();
        let reply = async { backend.request(&request).await };
        let message = async { next_text(&mut client).await };
        let (reply, message) = smol::future::zip(reply, message).await;
        assert_eq!(reply, r#"{"ok":true,"id":"big","delivered":1}"#);
        assert_eq!(message.len(), data.len());
        assert!(message == data);
    });
}
