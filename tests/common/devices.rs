//! Every kind of device through the text port: what `register`,
//! `unregister` and `devices` do with APNs tokens, FCM tokens and Web Push
//! subscriptions, whichever registry the hub keeps (its file, or Redis).

use serde_json::{Value, json};

use super::Backend;

/// A browser's subscription to `endpoint`: a fresh P-256 key and auth
/// secret, in base64url as `PushSubscription.toJSON()` gives them.
pub fn subscription(endpoint: &str) -> Value {
    use openssl::ec::{EcGroup, EcKey, PointConversionForm};
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let key = EcKey::generate(&group).unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let point = key
        .public_key()
        .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
        .unwrap();
    let mut auth = [0u8; 16];
    openssl::rand::rand_bytes(&mut auth).unwrap();
    let b64 = |b: &[u8]| data_encoding::BASE64URL_NOPAD.encode(b);
    json!({"endpoint": endpoint, "expirationTime": null,
           "keys": {"p256dh": b64(&point), "auth": b64(&auth)}})
}

/// Registers through `a`, reads and changes through `b` (the same hub, or
/// another of its cluster): each kind is kept, listed by kind, moved
/// between uids and removed alone; a subscription registered again keeps
/// its new keys; bad devices are refused, each with what is wrong.
pub async fn every_kind_of_device(a: &mut Backend, b: &mut Backend) {
    let apns = "0a".repeat(32);
    let fcm = "cVx3Wq:APA91bH-ofa_xyz.123";
    let web = subscription("https://push.example.net/send/abc");
    let register = |device: Value| {
        let mut request = json!({"cmd": "register", "uid": "k1"});
        request
            .as_object_mut()
            .unwrap()
            .extend(device.as_object().unwrap().clone());
        request
    };
    for device in [
        json!({"apns": apns}),
        json!({"fcm": fcm}),
        json!({"webpush": web}),
    ] {
        let reply = a.json(register(device)).await;
        assert_eq!(reply, json!({"ok": true, "registered": "new"}));
    }
    let listed = |web: &Value| {
        json!({"ok": true, "apns": [apns], "fcm": [fcm],
               "webpush": [{"endpoint": web["endpoint"], "keys": web["keys"]}]})
    };
    assert_eq!(
        b.json(json!({"cmd": "devices", "uid": "k1"})).await,
        listed(&web)
    );
    // The browser subscribed again to the same endpoint with new keys.
    let renewed = subscription("https://push.example.net/send/abc");
    let reply = b.json(register(json!({"webpush": renewed}))).await;
    assert_eq!(reply, json!({"ok": true, "registered": "unchanged"}));
    assert_eq!(
        a.json(json!({"cmd": "devices", "uid": "k1"})).await,
        listed(&renewed)
    );
    // Another user on the same phone: the FCM token moves.
    let reply = b
        .json(json!({"cmd": "register", "uid": "k2", "fcm": fcm}))
        .await;
    assert_eq!(
        reply,
        json!({"ok": true, "registered": "moved", "from": "k1"})
    );
    let reply = a
        .json(json!({"cmd": "unregister", "uid": "k1", "webpush": renewed}))
        .await;
    assert_eq!(reply, json!({"ok": true, "removed": 1}));
    assert_eq!(
        b.json(json!({"cmd": "devices", "uid": "k1"})).await,
        json!({"ok": true, "apns": [apns], "fcm": [], "webpush": []})
    );
    assert_eq!(
        b.json(json!({"cmd": "devices", "uid": "k2"})).await,
        json!({"ok": true, "apns": [], "fcm": [fcm], "webpush": []})
    );
    let reply = a.json(json!({"cmd": "unregister", "uid": "k2"})).await;
    assert_eq!(reply, json!({"ok": true, "removed": 1}));

    let mut http = subscription("http://push.example.net/x");
    let mut short = subscription("https://push.example.net/x");
    short["keys"]["auth"] = json!("AAAA");
    let mut off_curve = subscription("https://push.example.net/x");
    off_curve["keys"]["p256dh"] = json!(data_encoding::BASE64URL_NOPAD.encode(&[4u8; 65]));
    http["keys"]["auth"] = short["keys"]["auth"].clone();
    let cases = [
        (
            json!({"fcm": "has space"}),
            "`fcm`: an FCM registration token",
        ),
        (json!({"fcm": 12}), "`fcm` must be a string"),
        (
            json!({"webpush": "https://x"}),
            "`webpush` must be a subscription",
        ),
        (
            json!({"webpush": {"endpoint": "https://x"}}),
            "`webpush` must be a subscription",
        ),
        (
            json!({"webpush": http}),
            "`endpoint` must be an https:// URL",
        ),
        (json!({"webpush": short}), "`keys.auth` must be 16 bytes"),
        (
            json!({"webpush": off_curve}),
            "`keys.p256dh` must be a P-256 public key",
        ),
        (json!({"apns": apns, "fcm": fcm}), "give one device"),
    ];
    for (device, says) in cases {
        let reply = a.json(register(device.clone())).await;
        assert_eq!(reply["ok"], false, "{device}: {reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{device}: {reply}");
    }
    // Nothing of the refused ones was kept.
    assert_eq!(
        b.json(json!({"cmd": "devices", "uid": "k1"})).await,
        json!({"ok": true, "apns": [apns], "fcm": [], "webpush": []})
    );
}
