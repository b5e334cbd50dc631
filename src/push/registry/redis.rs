//! The device registry in Redis, shared by the hubs of a cluster.
//!
//! Three kinds of keys, all under one hash tag (`PREFIX:{devices}`) so that
//! a Redis Cluster keeps them in one slot and a script may change several
//! at once: `PREFIX:{devices}:owner`, a hash from each device's key
//! (`Device::key`) to its uid (a device belongs to one uid at most),
//! `PREFIX:{devices}:u:UID`, a sorted set of the uid's devices' keys scored
//! by when each was registered (ms), and `PREFIX:{devices}:data`, a hash of
//! what a Web Push subscription keeps beside its key. Every change is one
//! script, so they never disagree whatever hubs do at the same time. Scripts go by `EVAL`: registrations are rare, and Redis keeps
//! the compiled script, so there is no `NOSCRIPT` to recover from.
//!
//! A registration is acknowledged once Redis has it in memory: what
//! survives a restart of Redis is what its persistence keeps (README).

use std::rc::Rc;

use super::{Answer, Device, Op, Pending, Registered, RegistryError};
use crate::cluster::Cluster;
use crate::cluster::redis::resp::{self, Frame};

/// KEYS: owners, the uid's set, data. ARGV: uid, key, now in ms, the
/// prefix of the uids' sets, the device's data ('' for none). Returns
/// {'new'}, {'unchanged'} or {'moved', from}.
const REGISTER: &str = r"
local from = redis.call('HGET', KEYS[1], ARGV[2])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[5])
end
if from == ARGV[1] then
  return {'unchanged'}
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
if from then
  redis.call('ZREM', ARGV[4] .. from, ARGV[2])
  return {'moved', from}
end
return {'new'}
";

/// KEYS: owners, the uid's set, data. ARGV: uid, the device's key ('' for
/// all of the uid's). Returns how many were removed.
const UNREGISTER: &str = r"
local keys = {ARGV[2]}
if ARGV[2] == '' then
  keys = redis.call('ZRANGE', KEYS[2], 0, -1)
end
local removed = 0
for _, k in ipairs(keys) do
  if redis.call('HGET', KEYS[1], k) == ARGV[1] then
    redis.call('HDEL', KEYS[1], k)
    redis.call('HDEL', KEYS[3], k)
    redis.call('ZREM', KEYS[2], k)
    removed = removed + 1
  end
end
return removed
";

/// KEYS: data, then the uids' sets. Returns, per uid, its devices oldest
/// first as key, data (nil for none), key, data...
const DEVICES: &str = r"
local all = {}
for i = 2, #KEYS do
  local keys = redis.call('ZRANGE', KEYS[i], 0, -1)
  local out = {}
  for first = 1, #keys, 1000 do
    local chunk = {unpack(keys, first, math.min(first + 999, #keys))}
    local data = redis.call('HMGET', KEYS[1], unpack(chunk))
    for j, k in ipairs(chunk) do
      out[#out + 1] = k
      out[#out + 1] = data[j]
    end
  end
  all[i - 1] = out
end
return all
";

/// KEYS: owners, data. ARGV: the device's key, the prefix of the uids'
/// sets. Returns 1 if it was registered.
const FORGET: &str = r"
local uid = redis.call('HGET', KEYS[1], ARGV[1])
if not uid then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', ARGV[2] .. uid, ARGV[1])
return 1
";

pub struct RedisRegistry {
    cluster: Rc<Cluster>,
    owners: Vec<u8>,
    data: Vec<u8>,
    /// What a uid's set's key starts with; the uid follows.
    sets: Vec<u8>,
}

/// What a pending operation asked, which says how to read its reply.
pub(super) enum Asked {
    Register,
    Unregister,
    /// The tokens of this many uids.
    Devices(usize),
}

impl RedisRegistry {
    pub fn new(cluster: Rc<Cluster>) -> RedisRegistry {
        let base = cluster.devices_key();
        RedisRegistry {
            owners: [base, b":owner"].concat(),
            data: [base, b":data"].concat(),
            sets: [base, b":u:"].concat(),
            cluster,
        }
    }

    fn set_of(&self, uid: &str) -> Vec<u8> {
        [&self.sets[..], uid.as_bytes()].concat()
    }

    /// Runs `script` with `keys` and `args`, to be answered as `asked`.
    fn eval(&self, script: &str, keys: &[&[u8]], args: &[&[u8]], asked: Asked) -> Op {
        let count = keys.len().to_string();
        let mut command: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), count.as_bytes()];
        command.extend_from_slice(keys);
        command.extend_from_slice(args);
        match self.cluster.call(&self.owners, &command) {
            Some(call) => Op::Pending(Pending {
                cluster: Rc::clone(&self.cluster),
                call,
                asked,
            }),
            None => Op::Done(Err(RegistryError::Unreachable)),
        }
    }

    pub fn register(&self, uid: &str, device: &Device) -> Op {
        let now = crate::cluster::streams::now_ms().to_string();
        let set = self.set_of(uid);
        let (key, data) = (device.key(), device.data().unwrap_or_default());
        self.eval(
            REGISTER,
            &[&self.owners, &set, &self.data],
            &[
                uid.as_bytes(),
                key.as_bytes(),
                now.as_bytes(),
                &self.sets,
                data.as_bytes(),
            ],
            Asked::Register,
        )
    }

    pub fn unregister(&self, uid: &str, device: Option<&Device>) -> Op {
        let set = self.set_of(uid);
        let key = device.map(Device::key).unwrap_or_default();
        self.eval(
            UNREGISTER,
            &[&self.owners, &set, &self.data],
            &[uid.as_bytes(), key.as_bytes()],
            Asked::Unregister,
        )
    }

    pub fn devices(&self, uids: &[&str]) -> Op {
        if uids.is_empty() {
            return Op::Done(Ok(Answer::Devices(Vec::new())));
        }
        let sets: Vec<Vec<u8>> = uids.iter().map(|uid| self.set_of(uid)).collect();
        let keys: Vec<&[u8]> = std::iter::once(&self.data[..])
            .chain(sets.iter().map(Vec::as_slice))
            .collect();
        self.eval(DEVICES, &keys, &[], Asked::Devices(uids.len()))
    }

    /// Sent without waiting: nobody waits for a push service's verdict to
    /// be kept, and the service says it again should it be lost.
    pub fn forget(&self, device: &Device) -> Result<(), RegistryError> {
        let key = device.key();
        let command: [&[u8]; 7] = [
            b"EVAL",
            FORGET.as_bytes(),
            b"2",
            &self.owners,
            &self.data,
            key.as_bytes(),
            &self.sets,
        ];
        match self.cluster.cast(&self.owners, &command, "forget a device") {
            true => Ok(()),
            false => Err(RegistryError::Unreachable),
        }
    }
}

impl Asked {
    /// The answer in Redis's `reply`.
    pub(super) fn answer(&self, reply: Frame) -> Result<Answer, RegistryError> {
        let malformed = |reply: &Frame| RegistryError::Malformed(format!("{reply:?}"));
        if let Frame::Error(e) = &reply {
            return Err(RegistryError::Refused(e.to_string()));
        }
        match self {
            Asked::Register => {
                let Frame::Array(items) = &reply else {
                    return Err(malformed(&reply));
                };
                let word = items.first().and_then(resp::bytes).map(|b| &b[..]);
                let from = items.get(1).and_then(resp::bytes);
                match (word, from) {
                    (Some(b"new"), None) => Ok(Answer::Registered(Registered::New)),
                    (Some(b"unchanged"), None) => Ok(Answer::Registered(Registered::Unchanged)),
                    (Some(b"moved"), Some(from)) => match std::str::from_utf8(from) {
                        Ok(from) => Ok(Answer::Registered(Registered::Moved {
                            from: from.to_string(),
                        })),
                        Err(_) => Err(malformed(&reply)),
                    },
                    _ => Err(malformed(&reply)),
                }
            }
            Asked::Unregister => match reply {
                Frame::Integer(n) if n >= 0 => Ok(Answer::Removed(n as usize)),
                other => Err(malformed(&other)),
            },
            Asked::Devices(n) => {
                let Frame::Array(sets) = &reply else {
                    return Err(malformed(&reply));
                };
                if sets.len() != *n {
                    return Err(malformed(&reply));
                }
                // A reply not made of keys and data is malformed; a device
                // changed by hand into something that is not one is
                // skipped, as the file's registry does.
                let tokens = |set: &Frame| -> Option<Vec<Device>> {
                    let Frame::Array(items) = set else {
                        return None;
                    };
                    let mut devices = Vec::new();
                    for pair in items.chunks(2) {
                        let [key, data] = pair else { return None };
                        let key = std::str::from_utf8(resp::bytes(key)?).ok()?;
                        let data = match data {
                            Frame::Null => None,
                            data => Some(std::str::from_utf8(resp::bytes(data)?).ok()?),
                        };
                        match Device::stored(key, data) {
                            Some(device) => devices.push(device),
                            None => log::warn!("device registry: skipping {key:?}, not a device"),
                        }
                    }
                    Some(devices)
                };
                sets.iter()
                    .map(tokens)
                    .collect::<Option<_>>()
                    .map(Answer::Devices)
                    .ok_or_else(|| malformed(&reply))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bulk(s: &str) -> Frame {
        Frame::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn replies_are_read_strictly() {
        let token = "ab".repeat(32);
        let moved = Frame::Array(vec![bulk("moved"), bulk("u2")]);
        assert_eq!(
            Asked::Register.answer(moved).unwrap(),
            Answer::Registered(Registered::Moved { from: "u2".into() })
        );
        let devices = Frame::Array(vec![
            Frame::Array(vec![bulk(&token), Frame::Null, bulk("zz"), Frame::Null]),
            Frame::Array(vec![]),
        ]);
        // The device damaged by hand ("zz") is skipped.
        let apns = Device::Apns(crate::push::registry::DeviceToken::parse(&token).unwrap());
        assert_eq!(
            Asked::Devices(2).answer(devices).unwrap(),
            Answer::Devices(vec![vec![apns], vec![]])
        );
        assert_eq!(
            Asked::Unregister.answer(Frame::Integer(2)).unwrap(),
            Answer::Removed(2)
        );
        // Not key and data, a count that does not match, a word that is
        // not one, an error: never a guess.
        let bad = [
            (
                Asked::Devices(1),
                Frame::Array(vec![Frame::Array(vec![bulk("zz")])]),
            ),
            (
                Asked::Devices(1),
                Frame::Array(vec![Frame::Array(vec![Frame::Integer(1), Frame::Null])]),
            ),
            (Asked::Devices(2), Frame::Array(vec![Frame::Array(vec![])])),
            (Asked::Register, Frame::Array(vec![bulk("moved")])),
            (Asked::Register, Frame::Array(vec![bulk("gone")])),
            (Asked::Unregister, Frame::Integer(-1)),
            (Asked::Unregister, bulk("1")),
        ];
        for (asked, reply) in bad {
            assert!(matches!(
                asked.answer(reply),
                Err(RegistryError::Malformed(_))
            ));
        }
        let oom = Frame::Error("OOM command not allowed".into());
        assert!(matches!(
            Asked::Register.answer(oom),
            Err(RegistryError::Refused(_))
        ));
    }
}
