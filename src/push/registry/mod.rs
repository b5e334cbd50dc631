//! The device registry: which APNs device tokens belong to which uid.
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
    /// The tokens of each uid asked, in the order asked, oldest
    /// registration first.
    Devices(Vec<Vec<DeviceToken>>),
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

impl Op {
    /// The answer, waiting for it if needed.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Answer, RegistryError>> {
        match self {
            Op::Done(done) => Poll::Ready(std::mem::replace(
                done,
                Err(RegistryError::Malformed("an operation polled twice".into())),
            )),
            Op::Pending(pending) => pending.poll(cx),
        }
    }
}

/// The registry of a hub alone, or of a cluster.
pub enum Registry {
    File(FileRegistry),
    Redis(RedisRegistry),
}

impl Registry {
    /// Records that `token` belongs to `uid` (and to no other uid).
    pub fn register(&self, uid: &str, token: &DeviceToken) -> Op {
        match self {
            Registry::File(file) => Op::Done(file.register(uid, token).map(Answer::Registered)),
            Registry::Redis(redis) => redis.register(uid, token),
        }
    }

    /// Forgets one token of `uid`, or all of them.
    pub fn unregister(&self, uid: &str, token: Option<&DeviceToken>) -> Op {
        match self {
            Registry::File(file) => Op::Done(file.unregister(uid, token).map(Answer::Removed)),
            Registry::Redis(redis) => redis.unregister(uid, token),
        }
    }

    /// The tokens of each of `uids`.
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

    /// Forgets a token whoever it belonged to (Apple said it is no longer
    /// valid), logging what became of it.
    pub fn forget(&self, token: &DeviceToken) {
        let done = match self {
            Registry::File(file) => file.forget(token).map(|_| ()),
            Registry::Redis(redis) => redis.forget(token),
        };
        match done {
            Ok(()) => log::info!("APNs: device {} is gone; removed", token.as_str()),
            Err(e) => log::warn!("APNs: device {} is gone, but {e}", token.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
