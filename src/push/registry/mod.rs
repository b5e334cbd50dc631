//! The device registry: which devices belong to which uid: APNs device
//! tokens, FCM registration tokens and Web Push subscriptions.
//!
//! A hub alone keeps it in a SQLite file (`file`, `--apns-db`); hubs in a
//! cluster keep one in Redis (`redis`), so that a device registered through
//! any hub is known to all and each push reaches it once, from the hub the
//! push entered. The file answers at once; Redis answers later, so every
//! operation gives an [`Op`], done or pending.

mod file;
mod redis;

use std::fmt;
use std::rc::Rc;
use std::task::{Context, Poll};

pub use file::FileRegistry;
pub use redis::RedisRegistry;

use crate::cluster::Cluster;
use crate::push::webpush::encrypt::{KeyError, SubscriptionKeys as EncryptionKeys};

/// Device tokens are 32 bytes today; Apple says not to count on that, and the
/// legacy protocol allowed up to 100.
const MIN_TOKEN_BYTES: usize = 32;
const MAX_TOKEN_BYTES: usize = 100;

/// A device token, as lowercase hexadecimal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceToken(String);

/// Why a string is not a device token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadDeviceToken;

impl fmt::Display for BadDeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an APNs device token is {} to {} hexadecimal digits",
            MIN_TOKEN_BYTES * 2,
            MAX_TOKEN_BYTES * 2
        )
    }
}

impl DeviceToken {
    /// Accepts hex digits in either case, and the spaces and angle brackets of
    /// the `<abcd 1234 ...>` form that old iOS code logged and apps still send.
    pub fn parse(text: &str) -> Result<DeviceToken, BadDeviceToken> {
        let hex: String = text
            .chars()
            .filter(|c| !matches!(c, ' ' | '<' | '>'))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let bytes = hex.len() / 2;
        let well_formed = hex.len().is_multiple_of(2)
            && (MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&bytes)
            && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if well_formed {
            Ok(DeviceToken(hex))
        } else {
            Err(BadDeviceToken)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// FCM registration tokens are opaque; today about 160 characters.
const MAX_FCM_TOKEN: usize = 4096;

/// An FCM registration token, as the app got it from Firebase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcmToken(String);

/// Why a string is not an FCM registration token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFcmToken;

impl fmt::Display for BadFcmToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an FCM registration token is 1 to {MAX_FCM_TOKEN} letters, digits and `-_:.`"
        )
    }
}

impl FcmToken {
    pub fn parse(text: &str) -> Result<FcmToken, BadFcmToken> {
        let well_formed = !text.is_empty()
            && text.len() <= MAX_FCM_TOKEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'));
        match well_formed {
            true => Ok(FcmToken(text.to_string())),
            false => Err(BadFcmToken),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Push services' endpoints are URLs of a few hundred bytes.
const MAX_ENDPOINT: usize = 2048;

/// A browser's Web Push subscription, as `PushSubscription.toJSON()` gives
/// it: where to send, and the keys to encrypt for (base64url, as given).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subscription {
    pub endpoint: String,
    pub keys: SubscriptionKeys,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionKeys {
    pub p256dh: String,
    pub auth: String,
}

/// Why an object is not a Web Push subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSubscription(&'static str);

impl fmt::Display for BadSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Subscription {
    /// Checks what a sender will need: an https endpoint, a P-256 public
    /// key (65 bytes, uncompressed) and a 16-byte auth secret.
    pub fn new(endpoint: &str, keys: SubscriptionKeys) -> Result<Subscription, BadSubscription> {
        let url_ok = endpoint.len() <= MAX_ENDPOINT
            && endpoint
                .strip_prefix("https://")
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_graphic()));
        if !url_ok {
            return Err(BadSubscription(
                "`endpoint` must be an https:// URL of at most 2048 characters",
            ));
        }
        // The sender's own check: a subscription kept is one it can encrypt for.
        if let Err(e) = EncryptionKeys::from_base64url(&keys.p256dh, &keys.auth) {
            let auth = matches!(
                e,
                KeyError::NotBase64url { key: "auth" } | KeyError::WrongLength { key: "auth", .. }
            );
            return Err(BadSubscription(match auth {
                true => "`keys.auth` must be 16 bytes in base64url",
                false => {
                    "`keys.p256dh` must be a P-256 public key: 65 bytes, uncompressed, in base64url"
                }
            }));
        }
        Ok(Subscription {
            endpoint: endpoint.to_string(),
            keys,
        })
    }
}

/// A device a push can reach without a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    Apns(DeviceToken),
    Fcm(FcmToken),
    WebPush(Subscription),
}

impl Device {
    /// What identifies it in the registry, whose devices are unique by it:
    /// an APNs token as its hex (as the registry has always kept them),
    /// `fcm:TOKEN`, `webpush:ENDPOINT`.
    pub fn key(&self) -> String {
        match self {
            Device::Apns(token) => token.as_str().to_string(),
            Device::Fcm(token) => format!("fcm:{}", token.as_str()),
            Device::WebPush(subscription) => format!("webpush:{}", subscription.endpoint),
        }
    }

    /// What the registry keeps beside the key: a subscription's keys.
    pub fn data(&self) -> Option<String> {
        match self {
            Device::WebPush(subscription) => serde_json::to_string(&subscription.keys).ok(),
            _ => None,
        }
    }

    /// The device the registry kept as `key` and `data`; `None` if they are
    /// not one (changed by hand).
    pub fn stored(key: &str, data: Option<&str>) -> Option<Device> {
        if let Some(token) = key.strip_prefix("fcm:") {
            return FcmToken::parse(token).ok().map(Device::Fcm);
        }
        if let Some(endpoint) = key.strip_prefix("webpush:") {
            let keys: SubscriptionKeys = serde_json::from_str(data?).ok()?;
            return Subscription::new(endpoint, keys).ok().map(Device::WebPush);
        }
        DeviceToken::parse(key).ok().map(Device::Apns)
    }
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    New,
    /// Already registered to this uid.
    Unchanged,
    /// The token was registered to another uid (the device changed hands, or
    /// another user logged in on it): it now belongs to this one only.
    Moved {
        from: String,
    },
}

/// The registry could not do what was asked. Each says whether anything
/// may have changed.
#[derive(Debug)]
pub enum RegistryError {
    /// The SQLite file could not be opened, read or written; nothing was
    /// changed (a transaction that fails is rolled back).
    File(rusqlite::Error),
    /// Redis cannot be reached (or is too far behind); nothing was sent.
    Unreachable,
    /// The link to Redis was lost before it answered: the change may or
    /// may not have been made.
    Unanswered,
    /// Redis refused the command (out of memory, a script error): nothing
    /// was changed.
    Refused(String),
    /// Redis answered something that is not what the registry keeps.
    Malformed(String),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::File(e) => write!(f, "device registry: {e}; nothing was changed"),
            RegistryError::Unreachable => f.write_str(
                "device registry: Redis is unreachable; nothing was changed, try again later",
            ),
            RegistryError::Unanswered => f.write_str(
                "device registry: the link to Redis was lost before it answered; \
                 the change may or may not have been made (repeating it is safe)",
            ),
            RegistryError::Refused(e) => {
                write!(
                    f,
                    "device registry: Redis refused: {e}; nothing was changed"
                )
            }
            RegistryError::Malformed(e) => {
                write!(f, "device registry: unexpected reply from Redis: {e}")
            }
        }
    }
}

impl std::error::Error for RegistryError {}

impl From<rusqlite::Error> for RegistryError {
    fn from(e: rusqlite::Error) -> Self {
        RegistryError::File(e)
    }
}

/// What a registry operation answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Registered(Registered),
    /// How many tokens were removed.
    Removed(usize),
    /// The devices of each uid asked, in the order asked, oldest
    /// registration first.
    Devices(Vec<Vec<Device>>),
}

/// A registry operation: answered at once (the file), or to wait on (Redis).
pub enum Op {
    Done(Result<Answer, RegistryError>),
    Pending(Pending),
}

/// An operation Redis has not answered yet. Dropping it drops the wait
/// (not the operation, which Redis runs anyway).
pub struct Pending {
    cluster: Rc<Cluster>,
    call: crate::cluster::CallId,
    asked: redis::Asked,
}

impl Pending {
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Answer, RegistryError>> {
        let reply = std::task::ready!(self.cluster.poll_call(self.call, cx));
        Poll::Ready(match reply {
            Some(reply) => self.asked.answer(reply),
            None => Err(RegistryError::Unanswered),
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.cluster.cancel_call(self.call);
    }
}

/// The registry of a hub alone, or of a cluster.
pub enum Registry {
    File(FileRegistry),
    Redis(RedisRegistry),
}

impl Registry {
    /// Records that `device` belongs to `uid` (and to no other uid).
    pub fn register(&self, uid: &str, device: &Device) -> Op {
        match self {
            Registry::File(file) => Op::Done(file.register(uid, device).map(Answer::Registered)),
            Registry::Redis(redis) => redis.register(uid, device),
        }
    }

    /// Forgets one device of `uid`, or all of them.
    pub fn unregister(&self, uid: &str, device: Option<&Device>) -> Op {
        match self {
            Registry::File(file) => Op::Done(file.unregister(uid, device).map(Answer::Removed)),
            Registry::Redis(redis) => redis.unregister(uid, device),
        }
    }

    /// The devices of each of `uids`.
    pub fn devices(&self, uids: &[&str]) -> Op {
        match self {
            Registry::File(file) => Op::Done(
                uids.iter()
                    .map(|uid| file.devices(uid))
                    .collect::<Result<_, _>>()
                    .map(Answer::Devices),
            ),
            Registry::Redis(redis) => redis.devices(uids),
        }
    }

    /// Forgets a device whoever it belonged to (its push service said it
    /// is no longer valid), logging what became of it.
    pub fn forget(&self, device: &Device) {
        let done = match self {
            Registry::File(file) => file.forget(device).map(|_| ()),
            Registry::Redis(redis) => redis.forget(device),
        };
        let key = device.key();
        match done {
            Ok(()) => log::info!("device {key} is gone; removed"),
            Err(e) => log::warn!("device {key} is gone, but {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 public key, uncompressed.
    fn test_point() -> Vec<u8> {
        use openssl::ec::{EcGroup, EcKey, PointConversionForm};
        let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        key.public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap()
    }

    #[test]
    fn devices_round_trip_through_what_the_registry_keeps() {
        let point = test_point();
        let keys = SubscriptionKeys {
            p256dh: data_encoding::BASE64URL_NOPAD.encode(&point),
            auth: data_encoding::BASE64URL.encode(&[1u8; 16]),
        };
        // 65 bytes that start like a key but are no point of the curve.
        let mut off = point.clone();
        off[64] ^= 1;
        let off = SubscriptionKeys {
            p256dh: data_encoding::BASE64URL_NOPAD.encode(&off),
            ..keys.clone()
        };
        assert!(Subscription::new("https://push.example/x", off).is_err());
        let short = SubscriptionKeys {
            auth: data_encoding::BASE64URL_NOPAD.encode(&[1u8; 15]),
            ..keys.clone()
        };
        assert!(Subscription::new("https://push.example/x", short).is_err());
        let subscription = Subscription::new("https://push.example/s/1", keys.clone()).unwrap();
        for device in [
            Device::Apns(DeviceToken::parse(&"ab".repeat(32)).unwrap()),
            Device::Fcm(FcmToken::parse("dXyz-1_2:APA91b.x").unwrap()),
            Device::WebPush(subscription),
        ] {
            let data = device.data();
            assert_eq!(Device::stored(&device.key(), data.as_deref()), Some(device));
        }
        for bad in ["", "has space", "semi;colon", &"a".repeat(4097)] {
            assert_eq!(FcmToken::parse(bad), Err(BadFcmToken), "{bad:?}");
        }
        for endpoint in [
            "http://push.example/x",
            "https://",
            "https://a b",
            "ftp://x",
        ] {
            assert!(
                Subscription::new(endpoint, keys.clone()).is_err(),
                "{endpoint}"
            );
        }
        // Kept data changed by hand: not a device.
        assert_eq!(
            Device::stored("webpush:https://push.example/s/1", None),
            None
        );
        assert_eq!(
            Device::stored("webpush:https://push.example/s/1", Some("{}")),
            None
        );
        assert_eq!(Device::stored("fcm:", None), None);
    }

    #[test]
    fn parses_device_tokens() {
        let t = DeviceToken::parse(&"AB".repeat(32)).unwrap();
        assert_eq!(t.as_str(), "ab".repeat(32));
        let spaced = format!("<{}>", ["0123abcd"; 8].join(" "));
        assert_eq!(
            DeviceToken::parse(&spaced).unwrap().as_str(),
            "0123abcd".repeat(8)
        );
        assert!(DeviceToken::parse(&"ab".repeat(100)).is_ok());
        for bad in [
            "",
            "abc",
            &"ab".repeat(31),
            &"ab".repeat(101),
            &"zz".repeat(32),
            &"a".repeat(65),
        ] {
            assert_eq!(DeviceToken::parse(bad), Err(BadDeviceToken), "{bad}");
        }
    }
}
