//! The device registry: which APNs device tokens belong to which uid, in an
//! embedded SQLite database.
//!
//! Durability: a registration is acknowledged only after its transaction has
//! committed to the write-ahead log, so it survives a crash or `kill -9` of the
//! hub. (With `synchronous=NORMAL`, a power loss may lose the last commits;
//! waiting for an fsync on every registration would stall every connection,
//! since the hub has one thread.) Memory does not grow with the number of
//! tokens: they live on disk, behind a page cache of fixed size.

use std::fmt;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

/// Page cache of the registry database, in KiB: the bound on its memory.
const CACHE_KIB: i64 = 512;

/// How long a registration waits for another process's write to the same
/// file (the thread is blocked meanwhile; registrations are rare and short).
const BUSY_MS: u64 = 200;

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

/// The registry could not be opened, read or written.
#[derive(Debug)]
pub struct RegistryError(rusqlite::Error);

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device registry: {}", self.0)
    }
}

impl std::error::Error for RegistryError {}

impl From<rusqlite::Error> for RegistryError {
    fn from(e: rusqlite::Error) -> Self {
        RegistryError(e)
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

pub struct Registry {
    db: Connection,
}

impl Registry {
    /// Opens (creating if needed) the registry at `path`.
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        let db = Connection::open(path)?;
        // journal_mode answers with a row, so it is read rather than executed.
        let _mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        // Hubs of one box in a cluster share the file: a write that meets
        // another hub's waits for it, briefly, rather than failing.
        db.busy_timeout(std::time::Duration::from_millis(BUSY_MS))?;
        db.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -{CACHE_KIB};
             CREATE TABLE IF NOT EXISTS devices (
                 token TEXT PRIMARY KEY NOT NULL,
                 uid TEXT NOT NULL,
                 registered_at INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS devices_by_uid ON devices (uid);"
        ))?;
        Ok(Registry { db })
    }

    /// Records that `token` belongs to `uid` (and to no other uid).
    pub fn register(&self, uid: &str, token: &DeviceToken) -> Result<Registered, RegistryError> {
        let previous: Option<String> = self
            .db
            .prepare_cached("SELECT uid FROM devices WHERE token = ?1")?
            .query_row(params![token.as_str()], |row| row.get(0))
            .optional()?;
        if previous.as_deref() == Some(uid) {
            return Ok(Registered::Unchanged);
        }
        self.db
            .prepare_cached(
                "INSERT INTO devices (token, uid, registered_at) VALUES (?1, ?2, unixepoch())
                 ON CONFLICT (token) DO UPDATE SET uid = excluded.uid,
                     registered_at = excluded.registered_at",
            )?
            .execute(params![token.as_str(), uid])?;
        Ok(match previous {
            None => Registered::New,
            Some(from) => Registered::Moved { from },
        })
    }

    /// Forgets one token of `uid`, or all of them; returns how many.
    pub fn unregister(
        &self,
        uid: &str,
        token: Option<&DeviceToken>,
    ) -> Result<usize, RegistryError> {
        let removed = match token {
            Some(token) => self
                .db
                .prepare_cached("DELETE FROM devices WHERE uid = ?1 AND token = ?2")?
                .execute(params![uid, token.as_str()])?,
            None => self
                .db
                .prepare_cached("DELETE FROM devices WHERE uid = ?1")?
                .execute(params![uid])?,
        };
        Ok(removed)
    }

    /// Forgets a token whoever it belonged to (Apple said it is no longer valid).
    pub fn forget(&self, token: &DeviceToken) -> Result<bool, RegistryError> {
        let removed = self
            .db
            .prepare_cached("DELETE FROM devices WHERE token = ?1")?
            .execute(params![token.as_str()])?;
        Ok(removed > 0)
    }

    /// The tokens of `uid`, oldest registration first.
    pub fn devices(&self, uid: &str) -> Result<Vec<DeviceToken>, RegistryError> {
        let mut statement = self.db.prepare_cached(
            "SELECT token FROM devices WHERE uid = ?1 ORDER BY registered_at, token",
        )?;
        let tokens = statement
            .query_map(params![uid], |row| row.get::<_, String>(0))?
            .map(|token| token.map(DeviceToken))
            .collect::<Result<_, _>>()?;
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u8) -> DeviceToken {
        DeviceToken::parse(&format!("{n:02x}").repeat(32)).unwrap()
    }

    /// A fresh directory for one test's database, removed afterwards.
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> (Scratch, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "pushhub-registry-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("devices.sqlite3");
        (Scratch(dir), db)
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

    #[test]
    fn register_list_move_and_forget() {
        let (_dir, path) = scratch("basic");
        let registry = Registry::open(&path).unwrap();
        assert_eq!(registry.register("u1", &token(1)).unwrap(), Registered::New);
        assert_eq!(
            registry.register("u1", &token(1)).unwrap(),
            Registered::Unchanged
        );
        assert_eq!(registry.register("u1", &token(2)).unwrap(), Registered::New);
        assert_eq!(registry.devices("u1").unwrap().len(), 2);
        assert_eq!(
            registry.register("u2", &token(2)).unwrap(),
            Registered::Moved { from: "u1".into() }
        );
        assert_eq!(registry.devices("u1").unwrap(), [token(1)]);
        assert_eq!(registry.devices("u2").unwrap(), [token(2)]);
        assert_eq!(registry.unregister("u1", Some(&token(2))).unwrap(), 0);
        assert!(registry.forget(&token(2)).unwrap());
        assert!(registry.devices("u2").unwrap().is_empty());
        registry.register("u1", &token(3)).unwrap();
        assert_eq!(registry.unregister("u1", None).unwrap(), 2);
        assert!(registry.devices("u1").unwrap().is_empty());
    }

    #[test]
    fn survives_reopening() {
        let (_dir, path) = scratch("reopen");
        Registry::open(&path)
            .unwrap()
            .register("u1", &token(7))
            .unwrap();
        assert_eq!(
            Registry::open(&path).unwrap().devices("u1").unwrap(),
            [token(7)]
        );
    }

    #[test]
    fn refuses_a_file_that_is_not_a_database() {
        let (_dir, path) = scratch("garbage");
        std::fs::write(
            &path,
            b"this is not a database, but it is long enough to look at",
        )
        .unwrap();
        assert!(Registry::open(&path).is_err());
    }
}
