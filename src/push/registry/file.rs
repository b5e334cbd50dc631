//! The device registry in an embedded SQLite database: a hub alone. One
//! row per device: its key (`Device::key`) in the `token` column, its uid,
//! when it was registered, and what a subscription keeps beside its key.
//!
//! Durability: a registration is acknowledged only after its transaction has
//! committed to the write-ahead log, so it survives a crash or `kill -9` of the
//! hub. (With `synchronous=NORMAL`, a power loss may lose the last commits;
//! waiting for an fsync on every registration would stall every connection,
//! since the hub has one thread.) Memory does not grow with the number of
//! tokens: they live on disk, behind a page cache of fixed size.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Device, Registered, RegistryError};

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
                 registered_at INTEGER NOT NULL,
                 data TEXT
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS devices_by_uid ON devices (uid);"
        ))?;
        // A registry from before FCM and Web Push has no `data` column
        // (what a subscription keeps beside its endpoint): added in place.
        let has_data: bool = db.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('devices') WHERE name = 'data'",
            [],
            |row| row.get(0),
        )?;
        if !has_data {
            db.execute_batch("ALTER TABLE devices ADD COLUMN data TEXT")?;
        }
        Ok(FileRegistry { db })
    }

    /// Records that `device` belongs to `uid` (and to no other uid); a
    /// subscription registered again keeps the keys it comes with.
    pub fn register(&self, uid: &str, device: &Device) -> Result<Registered, RegistryError> {
        let (key, data) = (device.key(), device.data());
        let previous: Option<String> = self
            .db
            .prepare_cached("SELECT uid FROM devices WHERE token = ?1")?
            .query_row(params![key], |row| row.get(0))
            .optional()?;
        if previous.as_deref() == Some(uid) {
            self.db
                .prepare_cached("UPDATE devices SET data = ?2 WHERE token = ?1")?
                .execute(params![key, data])?;
            return Ok(Registered::Unchanged);
        }
        self.db
            .prepare_cached(
                "INSERT INTO devices (token, uid, registered_at, data)
                 VALUES (?1, ?2, unixepoch(), ?3)
                 ON CONFLICT (token) DO UPDATE SET uid = excluded.uid,
                     registered_at = excluded.registered_at, data = excluded.data",
            )?
            .execute(params![key, uid, data])?;
        Ok(match previous {
            None => Registered::New,
            Some(from) => Registered::Moved { from },
        })
    }

    /// Forgets one device of `uid`, or all of them; returns how many.
    pub fn unregister(&self, uid: &str, device: Option<&Device>) -> Result<usize, RegistryError> {
        let removed = match device {
            Some(device) => self
                .db
                .prepare_cached("DELETE FROM devices WHERE uid = ?1 AND token = ?2")?
                .execute(params![uid, device.key()])?,
            None => self
                .db
                .prepare_cached("DELETE FROM devices WHERE uid = ?1")?
                .execute(params![uid])?,
        };
        Ok(removed)
    }

    /// Forgets a device whoever it belonged to (its service said it is gone).
    pub fn forget(&self, device: &Device) -> Result<bool, RegistryError> {
        let removed = self
            .db
            .prepare_cached("DELETE FROM devices WHERE token = ?1")?
            .execute(params![device.key()])?;
        Ok(removed > 0)
    }

    /// The devices of `uid`, oldest registration first; a row changed by
    /// hand into something that is not a device is skipped.
    pub fn devices(&self, uid: &str) -> Result<Vec<Device>, RegistryError> {
        let mut statement = self.db.prepare_cached(
            "SELECT token, data FROM devices WHERE uid = ?1 ORDER BY registered_at, token",
        )?;
        let rows = statement
            .query_map(params![uid], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let devices = rows.iter().filter_map(|(key, data)| {
            let device = Device::stored(key, data.as_deref());
            if device.is_none() {
                log::warn!("device registry: skipping {key:?}, not a device");
            }
            device
        });
        Ok(devices.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::push::registry::{DeviceToken, FcmToken};

    fn token(n: u8) -> Device {
        Device::Apns(DeviceToken::parse(&format!("{n:02x}").repeat(32)).unwrap())
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
    fn a_registry_from_before_the_other_kinds_is_opened_and_kept() {
        let (_dir, path) = scratch("old");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE devices (token TEXT PRIMARY KEY NOT NULL, uid TEXT NOT NULL,
                 registered_at INTEGER NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        old.execute(
            "INSERT INTO devices VALUES (?1, 'u1', 1)",
            params!["07".repeat(32)],
        )
        .unwrap();
        drop(old);
        let registry = FileRegistry::open(&path).unwrap();
        assert_eq!(registry.devices("u1").unwrap(), [token(7)]);
        let fcm = Device::Fcm(FcmToken::parse("abc:DEF-1").unwrap());
        assert_eq!(registry.register("u1", &fcm).unwrap(), Registered::New);
        assert_eq!(registry.devices("u1").unwrap(), [token(7), fcm]);
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
