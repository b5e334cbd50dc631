//! FCM and Web Push in a cluster: two hubs sharing the device registry in
//! Redis, a real TLS + HTTP/2 server playing FCM (and its token endpoint)
//! and one playing a browser's push service (decrypting what it gets). A
//! push reaches each device once, sent by the hub it entered once every hub
//! answered for its uids, each platform by its own `*_when`; a subscription
//! the push service says is gone is gone for every hub.

mod common;

use std::sync::Arc;

use common::cluster::*;
use common::fcm::{FakeFcm, FcmAnswer};
use common::redis::Redis;
use common::webpush::{FakePushService, Protocol, PushAnswer};
use common::*;
use serde_json::{Value, json};

/// FCM accepting every token, a push service answering 410 for the
/// subscription `gone` and 201 otherwise, and hubs a and b configured for
/// both over one Redis, their files in `scratch`.
fn cluster(scratch: &Scratch) -> (FakeFcm, FakePushService, Cluster) {
    let fcm = FakeFcm::start(Arc::new(|_| FcmAnswer::Ok));
    let push = FakePushService::start(
        Protocol::Http2,
        Arc::new(|seen| match seen.id.as_str() {
            "gone" => PushAnswer::Status {
                status: 410,
                retry_after: None,
            },
            _ => PushAnswer::Created,
        }),
    );
    let write = |name: &str, bytes: &[u8]| {
        let path = scratch.path(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let account = write("service-account.json", fcm.service_account().as_bytes());
    let fcm_ca = write("fcm-ca.pem", &fcm.ca_pem());
    let push_ca = write("push-ca.pem", push.ca_pem());
    let key = pushhub::push::webpush::vapid::VapidKey::generate().unwrap();
    let vapid = write("vapid.pem", &key.to_pem().unwrap());
    push.expect_vapid_key(&key.public_key_base64url());
    let fcm_endpoint = format!("https://localhost:{}", fcm.addr.port());
    let flags = [
        "--allow-plain-uid",
        "--fcm-credentials-file",
        &account,
        "--fcm-endpoint",
        &fcm_endpoint,
        "--fcm-ca-file",
        &fcm_ca,
        "--vapid-key-file",
        &vapid,
        "--vapid-subject",
        "mailto:ops@example.com",
        "--webpush-ca-file",
        &push_ca,
    ];
    let cluster = Cluster::with(Redis::start(), &["a", "b"], &flags, &[]);
    (fcm, push, cluster)
}

/// The FCM tokens the fake was sent to, sorted.
fn fcm_sent(fcm: &FakeFcm) -> Vec<String> {
    let mut tokens: Vec<String> = fcm.seen().into_iter().map(|s| s.token).collect();
    tokens.sort();
    tokens
}

/// The subscriptions the push service delivered to, with their text.
fn pushed(push: &FakePushService) -> Vec<(String, String)> {
    let mut seen: Vec<(String, String)> = push
        .delivered()
        .into_iter()
        .map(|s| (s.id, s.text.unwrap_or_default()))
        .collect();
    seen.sort();
    seen
}

fn register(uid: &str, device: (&str, Value)) -> Value {
    let mut request = json!({"cmd": "register", "uid": uid});
    request[device.0] = device.1;
    request
}

#[test]
fn each_device_gets_a_push_once_by_each_platforms_rule() {
    let scratch = Scratch::new("cluster-devices");
    let (fcm, push, cluster) = cluster(&scratch);
    run(async {
        let [mut a, mut b] = cluster.backends().await;
        // Registered through either hub, known to both.
        for (through_a, uid, device) in [
            (true, "u1", ("fcm", json!("token-u1"))),
            (false, "u1", ("webpush", push.subscribe("u1-tab"))),
            (true, "u2", ("fcm", json!("token-u2"))),
            (false, "u2", ("webpush", push.subscribe("u2-tab"))),
        ] {
            let backend = if through_a { &mut a } else { &mut b };
            let reply = backend.json(register(uid, device)).await;
            assert_eq!(reply["ok"], true, "{reply}");
        }
        // u1 is online on b only. Entering a, with the default rules, the
        // push reaches u1's page and only the offline u2's devices.
        let mut u1 = login_at(cluster.ws(1), "u1").await;
        let both = json!({
            "cmd": "push", "uids": ["u1", "u2"], "data": "hello",
            "fcm": {"notification": {"title": "Hi"}},
            "webpush": {"data": {"title": "Hi"}},
        });
        let reply = a.json(both.clone()).await;
        assert_eq!(
            reply,
            json!({"ok":true,"delivered":1,
                   "fcm":{"devices":1,"accepted":1,"refused":[]},
                   "webpush":{"devices":1,"accepted":1,"refused":[]}}),
        );
        assert_eq!(next_text(&mut u1).await, "hello");
        assert_eq!(fcm_sent(&fcm), ["token-u2"]);
        assert_eq!(
            pushed(&push),
            [("u2-tab".into(), r#"{"title":"Hi"}"#.into())]
        );

        // Each platform by its own rule: FCM always, Web Push never,
        // entering b, with u1 named twice: once per device, as on one hub.
        let mut request = both.clone();
        request["uids"] = json!(["u1", "u1"]);
        request["fcm_when"] = json!("always");
        request["webpush_when"] = json!("never");
        let reply = b.json(request).await;
        assert_eq!(reply["delivered"], 1, "{reply}");
        assert_eq!(reply["fcm"]["accepted"], 1, "{reply}");
        assert_eq!(reply["webpush"]["devices"], 0, "{reply}");
        assert_eq!(fcm_sent(&fcm), ["token-u1", "token-u2"]);
        assert_eq!(pushed(&push).len(), 1);
        // The hub that sent counts them.
        assert_eq!(b.stats().await["fcm"]["accepted"], 1);
        assert_eq!(a.stats().await["webpush"]["accepted"], 1);
    });
}

#[test]
fn a_subscription_gone_at_its_push_service_is_gone_for_every_hub() {
    let scratch = Scratch::new("cluster-devices-gone");
    let (_fcm, push, cluster) = cluster(&scratch);
    run(async {
        let [mut a, mut b] = cluster.backends().await;
        for id in ["gone", "kept"] {
            let reply = b
                .json(register("u3", ("webpush", push.subscribe(id))))
                .await;
            assert_eq!(reply["ok"], true, "{reply}");
        }
        let reply = a
            .json(json!({"cmd":"push","uid":"u3","data":"x","webpush":{}}))
            .await;
        let webpush = &reply["webpush"];
        assert_eq!(
            (&webpush["devices"], &webpush["accepted"]),
            (&json!(2), &json!(1))
        );
        assert_eq!(webpush["refused"][0]["status"], 410, "{reply}");
        assert_eq!(webpush["refused"][0]["removed"], true, "{reply}");
        // Removed before the reply: the other hub no longer knows it.
        let devices = b.json(json!({"cmd":"devices","uid":"u3"})).await;
        let left: Vec<&str> = devices["webpush"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["endpoint"].as_str().unwrap())
            .collect();
        assert_eq!(left, [push.endpoint("kept")], "{devices}");
    });
}
