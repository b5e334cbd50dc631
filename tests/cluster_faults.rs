//! The cluster's faults, each bounded in time: Redis killed then restarted, a
//! hub killed, Redis stalled, a hub stalled, a "Redis" that speaks garbage, a
//! wrong Redis password, and bad cluster flags. Local clients keep being
//! served, answers stay honest (never an ok without proof: `unconfirmed`, or
//! `fail` in the original form), and the cluster comes back by itself once
//! the fault ends. A bad flag stops the hub at start, without a panic.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{ask, *};
use common::redis::Redis;
use common::*;
use serde_json::{Value, json};
use smol::Timer;

/// The `--cluster-timeout` of the stall tests...
const TIMEOUT: &str = "300ms";
/// ...and the bound on their answers: the timeout plus slack.
const ANSWER: Duration = Duration::from_secs(3);
/// How soon the cluster must be whole again once a fault ends (the hubs'
/// reconnection backoff, about 5 s, and a margin).
const BACK: Duration = Duration::from_secs(6);

fn push(uid: &str, data: &str) -> Value {
    json!({"cmd":"push","uid":uid,"data":data})
}

#[track_caller]
fn assert_unconfirmed(reply: &Value, delivered: u64) {
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["delivered"], delivered, "{reply}");
    assert_eq!(reply["unconfirmed"], true, "{reply}");
}

/// The next text message that is not one of `stale` (messages sent during a
/// fault, which may still arrive late once it ends; each is skipped once).
async fn next_text_skipping(client: &mut Client, stale: &mut Vec<String>) -> String {
    loop {
        let text = next_text(client).await;
        match stale.iter().position(|s| *s == text) {
            Some(i) => {
                stale.remove(i);
            }
            None => return text,
        }
    }
}

/// Sends the original form for `uid` until it is answered `ok` (the earlier
/// lines go to `stale`), for at most `limit`; returns the line that was.
async fn until_ok(
    backend: &mut Backend,
    uid: &str,
    limit: Duration,
    stale: &mut Vec<String>,
) -> String {
    let deadline = Instant::now() + limit;
    for n in 0.. {
        let line = format!(r#"{{"uid":"{uid}","n":{n}}}"#);
        let reply = backend.request(&line).await;
        if reply == "ok" {
            return line;
        }
        assert_eq!(reply, "fail", "{line}");
        assert!(
            Instant::now() < deadline,
            "{uid} still `fail` after {limit:?}"
        );
        stale.push(line);
        Timer::after(Duration::from_millis(5)).await;
    }
    unreachable!()
}

#[test]
fn with_redis_killed_local_clients_are_served_and_answers_say_unconfirmed_until_it_is_back() {
    let mut cluster = Cluster::start(&["a", "b"]);
    let ([mut a, mut b], mut ua, mut ub) = run(async {
        let backends = cluster.backends().await;
        let ua = login_at(cluster.ws(0), "ua").await;
        let ub = login_at(cluster.ws(1), "ub").await;
        (backends, ua, ub)
    });
    let marks = [
        log_mark(&mut cluster.hubs[0]),
        log_mark(&mut cluster.hubs[1]),
    ];
    cluster.redis.kill();
    let mut stale = Vec::new();
    run(async {
        wait_redis_state(&mut a, "down", STEP).await;
        wait_redis_state(&mut b, "down", STEP).await;
        let before = counter(&mut a, "cluster_unconfirmed").await;
        let reply = a.json(push("ua", "local")).await;
        assert_unconfirmed(&reply, 1);
        assert_eq!(next_text(&mut ua).await, "local");
        let (reply, took) = timed(a.json(push("ub", "remote"))).await;
        assert_unconfirmed(&reply, 0);
        assert!(took < ANSWER, "{took:?}");
        stale.push("remote".to_string());
        let unconfirmed = counter(&mut a, "cluster_unconfirmed").await;
        assert_eq!(unconfirmed - before, 2);

        let line = r#"{"uid":"ua","percent":"1%"}"#;
        assert_eq!(a.request(line).await, "ok", "a local uid took it");
        assert_eq!(next_text(&mut ua).await, line);
        let line = r#"{"uid":"ub","percent":"2%"}"#;
        let (reply, took) = timed(a.request(line)).await;
        assert_eq!(reply, "fail", "ub is on b, out of reach");
        assert!(took < ANSWER, "{took:?}");
        stale.push(line.to_string());

        let hub = &cluster.hubs[0];
        assert_eq!(metric(hub, "pushhub_redis_up"), 0.0);
        let total = metric(hub, "pushhub_cluster_unconfirmed_total");
        assert!(total >= unconfirmed as f64, "{total} < {unconfirmed}");
        assert_eq!(healthz(hub), 503);
    });

    cluster.redis.restart();
    let until = Instant::now() + BACK;
    for (hub, mark) in cluster.hubs.iter_mut().zip(marks) {
        wait_connected_since(hub, mark, until);
    }
    run(async {
        // Both stayed connected throughout: their subscriptions come back
        // (the link is up a moment before Redis confirmed them all).
        let deadline = Deadline::new(BACK, "ub's route to be subscribed again");
        while a.connections("ub").await != 1 || b.connections("ua").await != 1 {
            deadline.tick().await;
        }
        let line = r#"{"uid":"ub","percent":"3%"}"#;
        assert_eq!(
            a.request(line).await,
            "ok",
            "{line} entering a after the restart"
        );
        assert_eq!(next_text_skipping(&mut ub, &mut stale).await, line);
        let line = r#"{"uid":"ua","percent":"4%"}"#;
        assert_eq!(
            b.request(line).await,
            "ok",
            "{line} entering b after the restart"
        );
        assert_eq!(next_text(&mut ua).await, line);
        let reply = a.json(push("ub", "back")).await;
        assert_eq!(reply, json!({"ok":true,"delivered":1}));
        assert_eq!(next_text(&mut ub).await, "back");
        for (backend, hub) in [&mut a, &mut b].into_iter().zip(&cluster.hubs) {
            assert_eq!(redis_state(backend).await, "up");
            assert_eq!(metric(hub, "pushhub_redis_up"), 1.0);
            assert_eq!(healthz(hub), 200);
        }
    });
}

#[test]
fn a_killed_hubs_uids_are_offline_within_two_seconds() {
    let mut cluster = Cluster::start(&["a", "b", "c"]);
    let (mut a, mut y_a, _b_clients) = run(async {
        let a = Backend::connect(cluster.text(0)).await;
        let y_a = login_at(cluster.ws(0), "y").await;
        let on_b = [
            login_at(cluster.ws(1), "x").await,
            login_at(cluster.ws(1), "y").await,
        ];
        (a, y_a, on_b)
    });
    let killed = Instant::now();
    cluster.hubs[1].child.kill().unwrap();
    cluster.hubs[1].wait(STEP);
    run(async {
        loop {
            let reply = a.json(push("x", "lost")).await;
            if reply == json!({"ok":true,"delivered":0}) {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(2),
                "2 s after b was killed, a push to its uid got {reply}"
            );
            Timer::after(Duration::from_millis(5)).await;
        }
        assert_eq!(a.request(r#"{"uid":"x","percent":"1%"}"#).await, "fail");
        let reply = a.json(json!({"cmd":"online","uid":"x"})).await;
        assert_eq!(reply, json!({"ok":true,"online":false,"connections":0}));
        let reply = a.json(push("y", "half")).await;
        assert_eq!(reply, json!({"ok":true,"delivered":1}));
        assert_eq!(next_text(&mut y_a).await, "half");
        let (nodes, reply) = cluster_stats(&mut a).await;
        assert!(reply.get("unconfirmed").is_none(), "{reply}");
        let ids: Vec<&Value> = nodes.iter().map(|n| &n["node"]).collect();
        assert_eq!(ids, [&json!("a"), &json!("c")], "{reply}");

        // x reconnects, to c: pushes entering a reach it.
        let mut x = login_at(cluster.ws(2), "x").await;
        let reply = a.json(push("x", "welcome back")).await;
        assert_eq!(reply, json!({"ok":true,"delivered":1}));
        assert_eq!(next_text(&mut x).await, "welcome back");
        let line = r#"{"uid":"x","percent":"2%"}"#;
        assert_eq!(a.request(line).await, "ok");
        assert_eq!(next_text(&mut x).await, line);
    });
}

#[test]
fn with_redis_stalled_answers_come_within_the_cluster_timeout_and_say_so() {
    let cluster = Cluster::start_with(&["a", "b"], &["--cluster-timeout", TIMEOUT]);
    run_long(Duration::from_secs(30), async {
        let mut a = Backend::connect(cluster.text(0)).await;
        let mut ua = login_at(cluster.ws(0), "ua").await;
        let mut ub = login_at(cluster.ws(1), "ub").await;
        let mut stale = Vec::new();
        {
            let _paused = RedisPaused::new(&cluster.redis);
            let (reply, took) = timed(a.json(push("ub", "stalled"))).await;
            assert_unconfirmed(&reply, 0);
            assert!(took < ANSWER, "{took:?}");
            stale.push("stalled".to_string());
            let line = r#"{"uid":"ub","percent":"1%"}"#;
            let (reply, took) = timed(a.request(line)).await;
            assert_eq!((reply.as_str(), took < ANSWER), ("fail", true), "{took:?}");
            stale.push(line.to_string());
            // Local clients are still served; whether b has ua too, nobody can say.
            let (reply, took) = timed(a.json(push("ua", "local"))).await;
            assert_unconfirmed(&reply, 1);
            assert!(took < ANSWER, "{took:?}");
            assert_eq!(next_text(&mut ua).await, "local");
            let line = r#"{"uid":"ua","percent":"2%"}"#;
            let (reply, took) = timed(a.request(line)).await;
            assert_eq!((reply.as_str(), took < ANSWER), ("ok", true), "{took:?}");
            assert_eq!(next_text(&mut ua).await, line);
            let unconfirmed = counter(&mut a, "cluster_unconfirmed").await;
            assert!(unconfirmed >= 2, "cluster_unconfirmed {unconfirmed}");
        }
        // Resumed: cross-hub pushes are confirmed again within a few seconds.
        let line = until_ok(&mut a, "ub", BACK, &mut stale).await;
        assert_eq!(next_text_skipping(&mut ub, &mut stale).await, line);
        let reply = a.json(push("ub", "confirmed")).await;
        assert_eq!(reply, json!({"ok":true,"delivered":1}));
        assert_eq!(next_text_skipping(&mut ub, &mut stale).await, "confirmed");
    });
}

#[test]
fn a_stalled_hub_is_answered_for_within_the_cluster_timeout() {
    let cluster = Cluster::start_with(&["a", "b"], &["--cluster-timeout", TIMEOUT]);
    run_long(Duration::from_secs(30), async {
        let mut a = Backend::connect(cluster.text(0)).await;
        let mut both_a = login_at(cluster.ws(0), "both").await;
        let mut both_b = login_at(cluster.ws(1), "both").await;
        let mut ub = login_at(cluster.ws(1), "ub").await;
        let mut stale = Vec::new();
        {
            let _stopped = HubStopped::new(&cluster.hubs[1]);
            let (reply, took) = timed(a.json(push("ub", "stalled"))).await;
            assert_unconfirmed(&reply, 0);
            assert!(took < ANSWER, "{took:?}");
            stale.push("stalled".to_string());
            let line = r#"{"uid":"ub","percent":"1%"}"#;
            let (reply, took) = timed(a.request(line)).await;
            assert_eq!((reply.as_str(), took < ANSWER), ("fail", true), "{took:?}");
            stale.push(line.to_string());
            // Only what was confirmed counts: a's own connection.
            let reply = a.json(push("both", "half")).await;
            assert_unconfirmed(&reply, 1);
            assert_eq!(next_text(&mut both_a).await, "half");
            let (nodes, reply) = cluster_stats(&mut a).await;
            assert_eq!(reply["unconfirmed"], true, "{reply}");
            assert_eq!(nodes.len(), 1, "{reply}");
            assert_eq!(nodes[0]["node"], "a", "{reply}");
            let unconfirmed = counter(&mut a, "cluster_unconfirmed").await;
            assert!(unconfirmed >= 3, "cluster_unconfirmed {unconfirmed}");
            let total = metric(&cluster.hubs[0], "pushhub_cluster_unconfirmed_total");
            assert_eq!(total, unconfirmed as f64);
        }
        // b catches up; its answers count again.
        let line = until_ok(&mut a, "ub", BACK, &mut stale).await;
        assert_eq!(next_text_skipping(&mut ub, &mut stale).await, line);
        for n in 0..3 {
            let reply = a.json(push("both", &format!("whole {n}"))).await;
            assert_eq!(reply, json!({"ok":true,"delivered":2}));
            assert_eq!(next_text(&mut both_a).await, format!("whole {n}"));
        }
        let mut late = vec!["half".to_string()];
        for n in 0..3 {
            assert_eq!(
                next_text_skipping(&mut both_b, &mut late).await,
                format!("whole {n}")
            );
        }
    });
}

#[test]
fn a_redis_that_speaks_garbage_leaves_the_hub_serving_its_clients() {
    let answers: [Option<&'static [u8]>; 5] = [
        Some(b"*-5\r\n$x\r\nhello\r\n"),
        None,
        Some(b"$99999999999999999999\r\n"),
        Some(b"*9223372036854775807\r\n"),
        Some(b"\x00\xff\xfe garbage\r\n\r\n-\r\n+\r\n:\r\n$-7\r\n"),
    ];
    let fakes: Vec<FakeRedis> = answers.iter().map(|a| FakeRedis::start(vec![*a])).collect();
    let extra = ["--allow-plain-uid", "--cluster-timeout", TIMEOUT];
    let mut hubs: Vec<Binary> = fakes
        .iter()
        .map(|fake| spawn_hub(&fake.url(), Some("g"), &extra, &[]))
        .collect();
    run(async {
        let mut served = Vec::new();
        for hub in &hubs {
            served.push((
                Backend::connect(hub.text).await,
                login_at(hub.ws, "u").await,
            ));
        }
        // Each hub met its garbage at least twice: it came through the first and tried again.
        let deadline = Deadline::new(
            Duration::from_secs(10),
            "every hub tried its fake Redis twice",
        );
        loop {
            for (i, (backend, client)) in served.iter_mut().enumerate() {
                let reply = backend.json(push("u", "local")).await;
                assert_eq!(reply["delivered"], 1, "hub #{i}: {reply}");
                assert_eq!(next_text(client).await, "local", "hub #{i}");
            }
            if fakes.iter().all(|f| f.accepted() >= 2) {
                break;
            }
            deadline.tick().await;
        }
        for (i, (backend, client)) in served.iter_mut().enumerate() {
            let line = r#"{"uid":"u","percent":"1%"}"#;
            assert_eq!(backend.request(line).await, "ok", "hub #{i}");
            assert_eq!(next_text(client).await, line, "hub #{i}");
            assert_eq!(redis_state(backend).await, "down", "hub #{i}");
        }
    });
    for (hub, answer) in hubs.iter_mut().zip(answers) {
        assert_eq!(metric(hub, "pushhub_redis_up"), 0.0, "{answer:?}");
        assert_alive(hub);
        let connected = hub.stderr.iter().find(|l| l.contains(CONNECTED));
        assert!(connected.is_none(), "{answer:?}: {connected:?}");
    }
}

#[test]
fn a_redis_password_comes_from_the_environment_or_a_file_and_a_wrong_one_leaves_the_hub_alone() {
    let redis = Redis::start_with(&["--requirepass", "s3cret"]);
    let url = redis.url();
    let scratch = Scratch::new("redis-password");
    std::fs::write(scratch.path("password"), "s3cret").unwrap();
    let file = scratch.path("password");
    let file = file.to_str().unwrap();
    let (plain, by_file) = (
        ["--allow-plain-uid"],
        ["--allow-plain-uid", "--redis-password-file", file],
    );
    let (good, wrong) = (
        ("PUSHHUB_REDIS_PASSWORD", "s3cret"),
        ("PUSHHUB_REDIS_PASSWORD", "not-it-x9"),
    );
    let mut hubs = [
        start_hub(&url, Some("a"), &plain, &[good]),
        start_hub(&url, Some("b"), &by_file, &[]),
        spawn_hub(&url, Some("c"), &plain, &[wrong]),
    ];
    // Redis says WRONGPASS; the hub may say it in its own words.
    let line = wait_for_line_since(
        &mut hubs[2],
        0,
        Instant::now() + STEP,
        "the auth failure",
        |l| {
            let l = l.to_lowercase();
            let failed = ["fail", "refused", "denied", "wrong", "invalid", "rejected"];
            l.contains("redis")
                && (l.contains("wrongpass")
                    || (l.contains("auth") || l.contains("password"))
                        && failed.iter().any(|f| l.contains(f)))
        },
    );
    assert!(
        !line.contains("not-it-x9"),
        "the password was logged: {line}"
    );
    run(async {
        let mut a = Backend::connect(hubs[0].text).await;
        let mut c = Backend::connect(hubs[2].text).await;
        let mut u = login_at(hubs[1].ws, "u").await;
        assert_eq!(a.request(r#"{"uid":"u","via":"a"}"#).await, "ok");
        assert_eq!(next_text(&mut u).await, r#"{"uid":"u","via":"a"}"#);
        // c serves its own clients alone.
        let stats = c.stats().await;
        assert_eq!(
            (stats["node"].clone(), stats["redis"].clone()),
            (json!("c"), json!("down")),
            "{stats}"
        );
        let mut w = login_at(hubs[2].ws, "w").await;
        let reply = c.json(json!({"cmd":"push","uid":"w","data":"local"})).await;
        assert_eq!(reply["delivered"], 1, "{reply}");
        assert_eq!(next_text(&mut w).await, "local");
        ask!(a, {"cmd":"push","uid":"w","data":"x"} => {"ok":true,"delivered":0});
    });
    for hub in &mut hubs {
        assert_alive(hub);
        for line in &hub.stderr {
            assert!(
                !line.contains("s3cret") && !line.contains("not-it-x9"),
                "a password was logged: {line}"
            );
        }
    }
}

/// A plain-uid hub on fresh ports, before the flags under test.
const PLAIN: [&str; 5] = [
    "--allow-plain-uid",
    "--ws",
    "127.0.0.1:0",
    "--text",
    "127.0.0.1:0",
];

#[test]
fn reuse_port_without_redis_is_refused() {
    let (status, _, stderr) = run_binary(&[&PLAIN[..], &["--reuse-port"]].concat(), &[]);
    assert_eq!(status.code(), Some(2), "{status}; stderr: {stderr}");
    assert!(
        stderr.contains("--reuse-port") && stderr.contains("--redis"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("WebSocket on"),
        "{stderr}"
    );
}

#[test]
fn bad_cluster_flags_exit_2_with_a_clear_message() {
    let some = "redis://127.0.0.1:1";
    let cases: [(&[&str], &str); 7] = [
        (&["--redis", "nonsense"], "--redis"),
        // A cluster's registry is in Redis: a file beside it would be a
        // second, partial one.
        (&["--redis", some, "--apns-db", "devices.db"], "--apns-db"),
        // A password is never a flag's value: command lines are visible in `ps`.
        (
            &["--redis", some, "--redis-password", "pw"],
            "--redis-password",
        ),
        (&["--redis", "http://127.0.0.1:6379"], "--redis"),
        (&["--redis", "redis://:pw@127.0.0.1:1"], "password"),
        (&["--redis", some, "--node-id", ""], "--node-id"),
        (
            &["--redis", some, "--cluster-timeout", "0"],
            "--cluster-timeout",
        ),
    ];
    for (flags, says) in cases {
        let (status, _, stderr) = run_binary(&[&PLAIN[..], flags].concat(), &[]);
        assert_eq!(
            status.code(),
            Some(2),
            "{flags:?}: {status}; stderr: {stderr}"
        );
        assert!(
            stderr.contains(says),
            "{flags:?}: stderr lacks {says:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
        if flags.contains(&"redis://:pw@127.0.0.1:1") {
            assert!(
                !stderr.contains("pw"),
                "the URL's password was printed: {stderr}"
            );
        }
    }
}
