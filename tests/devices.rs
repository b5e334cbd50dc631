//! The APNs device registry through the text port: register, unregister,
//! devices; bad registrations refused with a clear error; acknowledged
//! registrations kept across a restart and a `kill -9`.

mod common;

use std::time::Duration;

use common::*;
use rustix::process::Signal;
use serde_json::{Value, json};

fn device(n: u32) -> String {
    format!("{n:08x}").repeat(8)
}

fn registry_config(scratch: &Scratch) -> pushhub::Config {
    let mut config = plain_config();
    config.apns_db = Some(scratch.path("devices.sqlite3"));
    config
}

fn error_of(reply: &Value) -> &str {
    assert_eq!(reply["ok"], false, "{reply}");
    reply["error"].as_str().unwrap()
}

#[test]
fn register_list_and_unregister() {
    let scratch = Scratch::new("basic");
    let server = Server::start(registry_config(&scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let register =
            |uid: &str, token: &str| json!({"cmd": "register", "uid": uid, "apns": token});
        assert_eq!(
            backend.json(register("u1", &device(1))).await,
            json!({"ok": true, "registered": "new"})
        );
        assert_eq!(
            backend
                .json(register("u1", &device(1).to_uppercase()))
                .await,
            json!({"ok": true, "registered": "unchanged"})
        );
        backend.json(register("u1", &device(2))).await;
        assert_eq!(
            backend
                .json(json!({"cmd": "devices", "uid": "u1", "id": 9}))
                .await,
            json!({"ok": true, "id": 9, "apns": [device(1), device(2)], "fcm": [], "webpush": []})
        );
        // Another user logs in on the second device: it is theirs now.
        assert_eq!(
            backend.json(register("u2", &device(2))).await,
            json!({"ok": true, "registered": "moved", "from": "u1"})
        );
        assert_eq!(
            backend.json(json!({"cmd": "devices", "uid": "u1"})).await,
            json!({"ok": true, "apns": [device(1)], "fcm": [], "webpush": []})
        );
        assert_eq!(
            backend
                .json(json!({"cmd": "unregister", "uid": "u2", "apns": device(2)}))
                .await,
            json!({"ok": true, "removed": 1})
        );
        backend.json(register("u1", &device(3))).await;
        assert_eq!(
            backend
                .json(json!({"cmd": "unregister", "uid": "u1"}))
                .await,
            json!({"ok": true, "removed": 2})
        );
        assert_eq!(
            backend.json(json!({"cmd": "devices", "uid": 42})).await,
            json!({"ok": true, "apns": [], "fcm": [], "webpush": []})
        );
    });
}

#[test]
fn every_kind_of_device_is_kept_in_the_file() {
    let scratch = Scratch::new("kinds");
    let server = Server::start(registry_config(&scratch));
    run(async {
        let mut a = Backend::connect(server.text).await;
        let mut b = Backend::connect(server.text).await;
        common::devices::every_kind_of_device(&mut a, &mut b).await;
    });
}

#[test]
fn bad_registrations_are_refused_clearly() {
    let scratch = Scratch::new("bad");
    let server = Server::start(registry_config(&scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let cases = [
            (
                json!({"cmd": "register", "uid": "u1", "apns": "abc"}),
                "hexadecimal digits",
            ),
            (
                json!({"cmd": "register", "uid": "u1", "apns": "zz".repeat(32)}),
                "hexadecimal digits",
            ),
            (
                json!({"cmd": "register", "uid": "u1", "apns": "ab".repeat(101)}),
                "hexadecimal digits",
            ),
            (
                json!({"cmd": "register", "uid": "u1", "apns": 12345}),
                "`apns` must be",
            ),
            (
                json!({"cmd": "register", "uid": "u1"}),
                "missing field `apns`",
            ),
            (
                json!({"cmd": "register", "apns": device(1)}),
                "missing field `uid`",
            ),
            (
                json!({"cmd": "register", "uids": ["u1"], "apns": device(1)}),
                "one `uid`",
            ),
            (json!({"cmd": "devices"}), "missing field `uid`"),
        ];
        for (request, expected) in cases {
            let reply = backend.json(request.clone()).await;
            let error = error_of(&reply);
            assert!(error.contains(expected), "{request} → {error}");
            // The connection keeps working after every refusal.
            assert_eq!(
                backend.json(json!({"cmd": "devices", "uid": "u1"})).await,
                json!({"ok": true, "apns": [], "fcm": [], "webpush": []})
            );
        }
    });
}

#[test]
fn without_a_registry_device_commands_say_how_to_get_one() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let reply = backend
            .json(json!({"cmd": "register", "uid": "u1", "apns": device(1)}))
            .await;
        assert!(error_of(&reply).contains("--devices-db"), "{reply}");
        assert_eq!(backend.push("u1", "still works").await, 0);
    });
}

#[test]
fn the_registry_survives_a_restart() {
    let scratch = Scratch::new("restart");
    let server = Server::start(registry_config(&scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        backend
            .json(json!({"cmd": "register", "uid": "u1", "apns": device(7)}))
            .await;
    });
    server.stop(Duration::from_secs(5)).unwrap();
    let server = Server::start(registry_config(&scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        assert_eq!(
            backend.json(json!({"cmd": "devices", "uid": "u1"})).await,
            json!({"ok": true, "apns": [device(7)], "fcm": [], "webpush": []})
        );
    });
}

/// Every registration acknowledged before a `kill -9` is there after it.
#[test]
fn acknowledged_registrations_survive_kill_9() {
    const N: u32 = 500;
    let scratch = Scratch::new("kill9");
    let db = scratch.path("devices.sqlite3");
    let db = db.to_str().unwrap();
    let args = [
        "--allow-plain-uid",
        "--ws",
        "127.0.0.1:0",
        "--text",
        "127.0.0.1:0",
        "--apns-db",
        db,
    ];
    let mut hub = Binary::start(&args, &[]);
    run(async {
        let mut backend = Backend::connect(hub.text).await;
        // Pipelined: all requests in one write, then every acknowledgement.
        let mut burst = String::new();
        for i in 0..N {
            let request =
                json!({"cmd": "register", "uid": format!("u{}", i % 50), "apns": device(i)});
            burst.push_str(&format!("{request}\n"));
        }
        backend.send(burst.as_bytes()).await;
        for i in 0..N {
            let reply: Value = serde_json::from_str(&backend.line().await).unwrap();
            assert_eq!(
                reply,
                json!({"ok": true, "registered": "new"}),
                "reply #{i}"
            );
        }
    });
    hub.signal(Signal::KILL);
    hub.wait(Duration::from_secs(5));

    // Restarted with the flag's new name: the same file.
    let mut args = args;
    args[5] = "--devices-db";
    let hub = Binary::start(&args, &[]);
    run(async {
        let mut backend = Backend::connect(hub.text).await;
        let mut total = 0;
        for uid in 0..50 {
            let reply = backend
                .json(json!({"cmd": "devices", "uid": format!("u{uid}")}))
                .await;
            total += reply["apns"].as_array().unwrap().len();
        }
        assert_eq!(total, N as usize);
    });
}

#[test]
fn a_registry_that_cannot_be_opened_stops_the_start() {
    let scratch = Scratch::new("unopenable");
    std::fs::write(scratch.path("devices.sqlite3"), vec![b'x'; 4096]).unwrap();
    let db = scratch.path("devices.sqlite3");
    let (status, _, stderr) = run_binary(
        &[
            "--allow-plain-uid",
            "--ws",
            "127.0.0.1:0",
            "--text",
            "127.0.0.1:0",
            "--devices-db",
            db.to_str().unwrap(),
        ],
        &[],
    );
    // A configuration error (status 2, which systemd does not restart on),
    // found before anything listens.
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot open the device registry"),
        "{stderr}"
    );
    assert!(!stderr.contains("WebSocket on"), "{stderr}");
}
