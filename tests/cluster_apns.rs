//! APNs in a cluster: two hubs on one box sharing one device registry file
//! and a real TLS + HTTP/2 server playing APNs. A push with `apns` goes to
//! each device once, sent by the hub the push entered after every hub
//! answered for its uids; a uid no hub could confirm online still reaches
//! its devices, and the reply says it is unconfirmed.

mod common;

use std::sync::Arc;

use common::apns::{FakeApns, TestCert, device, register};
use common::cluster::*;
use common::redis::Redis;
use common::*;
use serde_json::{Value, json};

/// Plain-uid hub flags with APNs (certificate auth) to `apns` and the
/// registry at `scratch`'s `devices.sqlite3`, shared by every hub given them.
fn apns_flags(apns: &FakeApns, scratch: &Scratch) -> Vec<String> {
    let ca = scratch.path("ca.pem");
    std::fs::write(&ca, &apns.cert.cert_pem).unwrap();
    let client = TestCert::new();
    let identity = scratch.path("ck.pem");
    std::fs::write(&identity, [client.cert_pem, client.key_pem].concat()).unwrap();
    [
        "--allow-plain-uid".to_string(),
        "--apns-db".into(),
        scratch.path("devices.sqlite3").display().to_string(),
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
/// over one Redis, sharing a registry in a scratch directory named `name`
/// (kept for the hubs' lives).
fn apns_cluster(name: &str) -> (FakeApns, Scratch, Cluster) {
    let apns = FakeApns::start(Arc::new(|_| (200, None)));
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

#[test]
fn a_uid_no_hub_confirmed_still_reaches_its_devices_and_the_reply_says_so() {
    let (apns, _scratch, cluster) = apns_cluster("cluster-apns-stalled");
    run(async {
        let [mut a, _b] = cluster.backends().await;
        register(&mut a, "u1", &device(1)).await;
        let _u1 = login_at(cluster.ws(1), "u1").await;
        let paused = RedisPaused::new(&cluster.redis);
        // Online on b, but nobody can say so: not proven delivered.
        let reply = a.json(push(&["u1"], "offline")).await;
        drop(paused);
        assert_eq!(reply["unconfirmed"], true, "{reply}");
        assert_eq!(reply["delivered"], 0, "{reply}");
        assert_eq!(reply["apns"]["accepted"], 1, "{reply}");
        assert_eq!(notified(&apns), [device(1)]);
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
