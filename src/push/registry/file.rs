//! The device registry in an embedded SQLite database: a hub alone.
//!
//! Durability: a registration is acknowledged only after its transaction has
//! committed to the write-ahead log, so it survives a crash or `kill -9` of the
//! hub. (With `synchronous=NORMAL`, a power loss may lose the last commits;
//! waiting for an fsync on every registration would stall every connection,
//! since the hub has one thread.) Memory does not grow with the number of
//! tokens: they live on disk, behind a page cache of fixed size.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{DeviceToken, Registered, RegistryError};

/// Page cache of the registry database, in KiB: the bound on its memory.
const CACHE_KIB: i64 = 512;

/// How long a registration waits for another process's write to the same
/// file (the thread is blocked meanwhile; registrations are rare and short).
const BUSY_MS: u64 = 200;

pub struct FileRegistry {
    db: Connection,
}

impl FileRegistry {
    /// Opens (creating if needed) the registry at `path`.
    pub fn open(path: &Path) -> Result<FileRegistry, RegistryError> {
        let db = Connection::open(path)?;
        // journal_mode answers with a row, so it is read rather than executed.
        let _mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        // Two hubs given the same file (by mistake, or one starting while
        // the other stops): a write that meets the other's waits for it,
        // briefly, rather than failing.
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
        Ok(FileRegistry { db })
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
    fn register_list_move_and_forget() {
        let (_dir, path) = scratch("basic");
        let registry = FileRegistry::open(&path).unwrap();
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
        FileRegistry::open(&path)
            .unwrap()
            .register("u1", &token(7))
            .unwrap();
        assert_eq!(
            FileRegistry::open(&path).unwrap().devices("u1").unwrap(),
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
        assert!(FileRegistry::open(&path).is_err());
    }
}
