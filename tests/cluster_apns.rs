//! APNs in a cluster: two hubs sharing the device registry in Redis, and a
//! real TLS + HTTP/2 server playing APNs. A registration through any hub is
//! known to all, and outlives the hub that took it; a push with `apns` goes
//! to each device once, sent by the hub the push entered after every hub
//! answered for its uids; a device Apple says is gone is gone for every
//! hub; while Redis is down, device commands and the APNs part of a push
//! say so instead of guessing.

mod common;

use std::sync::Arc;

use common::apns::{FakeApns, TestCert, device, register};
use common::cluster::*;
use common::redis::Redis;
use common::*;
use serde_json::{Value, json};

/// Plain-uid hub flags with APNs (certificate auth) to `apns`, its files
/// in `scratch`.
fn apns_flags(apns: &FakeApns, scratch: &Scratch) -> Vec<String> {
    let ca = scratch.path("ca.pem");
    std::fs::write(&ca, &apns.cert.cert_pem).unwrap();
    let client = TestCert::new();
    let identity = scratch.path("ck.pem");
    std::fs::write(&identity, [client.cert_pem, client.key_pem].concat()).unwrap();
    [
        "--allow-plain-uid".to_string(),
        "--apns-topic".into(),
        "com.example.app".into(),
        "--apns-cert-file".into(),
        identity.display().to_string(),
        "--apns-endpoint".into(),
        format!("https://localhost:{}", apns.addr.port()),
        "--apns-ca-file".into(),
        ca.display().to_string(),
    ]
    .into()
}

/// A fake APNs that accepts everything, and hubs a and b with APNs to it
/// over one Redis, their files in a scratch directory named `name` (kept
/// for the hubs' lives).
fn apns_cluster(name: &str) -> (FakeApns, Scratch, Cluster) {
    apns_cluster_with(name, Arc::new(|_| (200, None)))
}

fn apns_cluster_with(name: &str, script: common::apns::Script) -> (FakeApns, Scratch, Cluster) {
    let apns = FakeApns::start(script);
    let scratch = Scratch::new(name);
    let flags = apns_flags(&apns, &scratch);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::with(Redis::start(), &["a", "b"], &flags, &[]);
    (apns, scratch, cluster)
}

fn push(uids: &[&str], when: &str) -> Value {
    json!({
        "cmd": "push", "uids": uids, "data": "hello",
        "apns": {"aps": {"alert": "Hi"}}, "apns_when": when,
    })
}

/// The devices the fake APNs was asked to notify, sorted.
fn notified(apns: &FakeApns) -> Vec<String> {
    let mut seen: Vec<String> = apns
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.trim_start_matches("/3/device/").to_string())
        .collect();
    seen.sort();
    seen
}

#[test]
fn each_device_is_notified_once_by_the_hub_the_push_entered() {
    let (apns, _scratch, cluster) = apns_cluster("cluster-apns");
    run(async {
        let [mut a, mut b] = cluster.backends().await;
        // Registered through either hub, known to both.
        register(&mut a, "u1", &device(1)).await;
        register(&mut a, "u1", &device(2)).await;
        register(&mut b, "u2", &device(3)).await;
        let reply = a.json(json!({"cmd":"devices","uid":"u2"})).await;
        assert_eq!(reply["apns"], json!([device(3)]), "{reply}");

        // u1 is online on b only: entering a, the push reaches its client,
        // and only the offline u2's iPhone.
        let mut u1 = login_at(cluster.ws(1), "u1").await;
        let reply = a.json(push(&["u1", "u2"], "offline")).await;
        assert_eq!(
            reply,
            json!({"ok":true,"delivered":1,"apns":{"devices":1,"accepted":1,"refused":[]}})
        );
        assert_eq!(next_text(&mut u1).await, "hello");
        assert_eq!(notified(&apns), [device(3)]);

        // `always`, entering b, with the uid named twice: once, as on one hub.
        let reply = b.json(push(&["u1", "u1"], "always")).await;
        assert_eq!(reply["delivered"], 1, "{reply}");
        assert_eq!(reply["apns"]["accepted"], 2, "{reply}");
        assert_eq!(notified(&apns), [device(1), device(2), device(3)]);

        // `never`: the WebSocket alone.
        let reply = a.json(push(&["u1"], "never")).await;
        assert_eq!(reply["apns"]["devices"], 0, "{reply}");
        assert_eq!(notified(&apns).len(), 3);
        // The hub that sent counts them.
        let stats = b.stats().await;
        assert_eq!(stats["apns"]["accepted"], 2, "{stats}");
    });
}

/// Redis stalled: nobody can say whether u1 is online, nor which devices
/// it has. The reply says both, and nothing is sent on a guess.
#[test]
fn a_push_while_redis_stalls_says_what_it_could_not_confirm() {
    let (apns, _scratch, cluster) = apns_cluster("cluster-apns-stalled");
    run(async {
        let [mut a, _b] = cluster.backends().await;
        register(&mut a, "u1", &device(1)).await;
        let _u1 = login_at(cluster.ws(1), "u1").await;
        let paused = RedisPaused::new(&cluster.redis);
        let reply = a.json(push(&["u1"], "offline")).await;
        drop(paused);
        assert_eq!(reply["unconfirmed"], true, "{reply}");
        assert_eq!(reply["delivered"], 0, "{reply}");
        assert_eq!(reply["apns"]["accepted"], 0, "{reply}");
        let error = reply["apns"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("Redis"), "{reply}");
        assert!(notified(&apns).is_empty());
    });
}

/// Registered through a, which then dies by SIGKILL: b knows the devices,
/// moves one to another uid, and a hub started afterwards sees that too;
/// the keys are where the README says they are.
#[test]
fn registrations_live_in_redis_and_outlive_the_hub_that_took_them() {
    let (_apns, _scratch, mut cluster) = apns_cluster("cluster-apns-registry");
    run(async {
        let [mut a, mut b] = cluster.backends().await;
        register(&mut a, "u1", &device(1)).await;
        register(&mut a, "u1", &device(2)).await;
        drop(a);
        cluster.hubs[0].child.kill().unwrap();
        let reply = b.json(json!({"cmd":"devices","uid":"u1"})).await;
        assert_eq!(reply["apns"], json!([device(1), device(2)]), "{reply}");
        let reply = b
            .json(json!({"cmd":"register","uid":"u2","apns":device(2)}))
            .await;
        assert_eq!(
            reply,
            json!({"ok":true,"registered":"moved","from":"u1"}),
            "{reply}"
        );
        let owner = cluster
            .redis
            .cli(&["HGET", "pushhub:{devices}:owner", &device(2)]);
        assert_eq!(owner, "u2");
        let tokens = cluster
            .redis
            .cli(&["ZRANGE", "pushhub:{devices}:u:u1", "0", "-1"]);
        assert_eq!(tokens, device(1));
    });
    let c = start_hub(&cluster.redis.url(), Some("c"), &["--allow-plain-uid"], &[]);
    run(async {
        let mut a = Backend::connect(c.text).await;
        let reply = a.json(json!({"cmd":"devices","uid":"u2"})).await;
        assert_eq!(reply["apns"], json!([device(2)]), "{reply}");
        let reply = a.json(json!({"cmd":"unregister","uid":"u1"})).await;
        assert_eq!(reply, json!({"ok":true,"removed":1}));
        // Not u1's any more: unregistering it for u1 removes nothing.
        let reply = a
            .json(json!({"cmd":"unregister","uid":"u1","apns":device(2)}))
            .await;
        assert_eq!(reply, json!({"ok":true,"removed":0}));
        let reply = a.json(json!({"cmd":"devices","uid":"u1"})).await;
        assert_eq!(reply["apns"], json!([]), "{reply}");
    });
}

/// FCM tokens and Web Push subscriptions are kept in Redis too, and read
/// and changed through any hub.
#[test]
fn every_kind_of_device_is_shared_through_redis() {
    let cluster = Cluster::start(&["a", "b"]);
    run(async {
        let [mut a, mut b] = cluster.backends().await;
        common::devices::every_kind_of_device(&mut a, &mut b).await;
    });
}

/// Apple says a device is gone, to the hub a push entered: the token is
/// removed for every hub, and the uid's other device stays.
#[test]
fn a_device_apple_says_is_gone_is_gone_for_every_hub() {
    let gone = device(9);
    let script: common::apns::Script = Arc::new(move |seen| {
        if seen.path.ends_with(&device(9)) {
            (410, Some("Unregistered"))
        } else {
            (200, None)
        }
    });
    let (_apns, _scratch, cluster) = apns_cluster_with("cluster-apns-gone", script);
    run(async {
        let [mut a, mut b] = cluster.backends().await;
        register(&mut b, "u1", &device(1)).await;
        register(&mut b, "u1", &gone).await;
        let reply = a.json(push(&["u1"], "offline")).await;
        assert_eq!(reply["apns"]["accepted"], 1, "{reply}");
        assert_eq!(
            reply["apns"]["refused"],
            json!([{"apns": gone, "status": 410, "reason": "Unregistered", "removed": true}])
        );
        // The removal reached Redis before a's reply did; b reads it from
        // another connection, so it may look a moment later.
        let deadline = std::time::Instant::now() + STEP;
        loop {
            let reply = b.json(json!({"cmd":"devices","uid":"u1"})).await;
            if reply["apns"] == json!([device(1)]) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{reply}");
            smol::Timer::after(std::time::Duration::from_millis(20)).await;
        }
    });
}

/// Redis killed: a registration is refused, saying nothing was changed;
/// once Redis is back and the hub has its link again, it is taken.
#[test]
fn device_commands_while_redis_is_down_say_nothing_was_changed() {
    let (_apns, _scratch, mut cluster) = apns_cluster("cluster-apns-down");
    run(async {
        let [mut a, _b] = cluster.backends().await;
        cluster.redis.kill();
        wait_redis_state(&mut a, "down", STEP).await;
        let reply = a
            .json(json!({"cmd":"register","uid":"u1","apns":device(1)}))
            .await;
        assert_eq!(reply["ok"], false, "{reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(error.contains("nothing was changed"), "{reply}");
        let reply = a.json(push(&["u1"], "offline")).await;
        let error = reply["apns"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("unreachable"), "{reply}");
        let mark = log_mark(&mut cluster.hubs[0]);
        cluster.redis.restart();
        wait_connected_since(&mut cluster.hubs[0], mark, std::time::Instant::now() + STEP);
        register(&mut a, "u1", &device(1)).await;
        let reply = a.json(json!({"cmd":"devices","uid":"u1"})).await;
        assert_eq!(reply["apns"], json!([device(1)]), "{reply}");
    });
}

#[test]
fn a_hub_without_apns_refuses_a_push_with_apns_in_a_cluster_too() {
    let cluster = Cluster::start(&["a", "b"]);
    run(async {
        let [mut a, _b] = cluster.backends().await;
        let reply = a.json(push(&["u1"], "offline")).await;
        assert_eq!(reply["ok"], false, "{reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(error.contains("sends nothing to APNs"), "{reply}");
    });
}

/// `apns_when` "unacked" in a cluster: the push entered a, its client is on
/// b and does not acknowledge it, so a sends to the uid's devices once the
/// timeout has passed; acknowledged, nothing is sent.
#[test]
fn an_unacknowledged_push_falls_back_to_apns_from_the_hub_it_entered() {
    let (apns, _scratch, cluster) = apns_cluster("cluster-apns-unacked");
    run(async {
        let [mut a, _b] = cluster.backends().await;
        register(&mut a, "u1", &device(1)).await;
        let mut client = v1_login_at(cluster.ws(1), "u1").await;
        let push = |data: &str| {
            json!({"cmd":"push","uid":"u1","data":data,"ack_timeout":"300ms",
                   "apns":{"aps":{"alert":"Hi"}},"apns_when":"unacked"})
        };
        let reply = a.json(push("silent")).await;
        assert_eq!(
            reply,
            json!({"ok":true,"delivered":1,"acked":false,
                   "apns":{"devices":1,"accepted":1,"refused":[]}})
        );
        assert_eq!(notified(&apns), [device(1)]);
        assert_eq!(v1_frame(&mut client).await["d"], "silent");
        a.send(format!("{}\n", push("answered")).as_bytes()).await;
        let msg = v1_frame(&mut client).await;
        send_text(
            &mut client,
            &json!({"op":"ack","pos":msg["pos"]}).to_string(),
        )
        .await;
        let reply: Value = serde_json::from_str(&a.line().await).unwrap();
        assert_eq!(reply, json!({"ok":true,"delivered":1,"acked":true}));
        assert_eq!(notified(&apns).len(), 1);
    });
}

/// With `appendonly yes` and `appendfsync always`, an acknowledged
/// registration survives Redis killed by SIGKILL; a hub warns at start
/// when Redis keeps no append-only file, and is silent when it does.
#[test]
fn registrations_survive_a_redis_that_keeps_an_append_only_file() {
    let redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut cluster = Cluster::with(redis, &["a"], &["--allow-plain-uid"], &[]);
    run(async {
        let [mut a] = cluster.backends().await;
        register(&mut a, "u1", &device(1)).await;
        let mark = log_mark(&mut cluster.hubs[0]);
        cluster.redis.restart();
        wait_connected_since(&mut cluster.hubs[0], mark, std::time::Instant::now() + STEP);
        let reply = a.json(json!({"cmd":"devices","uid":"u1"})).await;
        assert_eq!(reply["apns"], json!([device(1)]), "{reply}");
    });
    log_mark(&mut cluster.hubs[0]);
    let warned = cluster.hubs[0]
        .stderr
        .iter()
        .any(|l| l.contains("appendonly is off"));
    assert!(!warned, "{:#?}", cluster.hubs[0].stderr);

    // The harness's default Redis keeps nothing: the hub says so, once.
    let mut bare = Cluster::start(&["b"]);
    run(async {
        let [mut b] = bare.backends().await;
        // Its reply follows the CONFIG GET's on the same connection.
        register(&mut b, "u1", &device(1)).await;
    });
    log_mark(&mut bare.hubs[0]);
    let warnings = bare.hubs[0]
        .stderr
        .iter()
        .filter(|l| l.contains("appendonly is off"))
        .count();
    assert_eq!(warnings, 1, "{:#?}", bare.hubs[0].stderr);
}
