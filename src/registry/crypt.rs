//! `cardlinkctl db encrypt`, `db decrypt` and `db rekey`: a SQLite
//! registry file copied whole into a new file with another key (or none)
//! by SQLCipher's `sqlcipher_export()` (SQLCipher API,
//! <https://www.zetetic.net/sqlcipher/sqlcipher-api/#sqlcipher_export>),
//! audited in the new file, then put in place by a rename.
//!
//! **Crash safety.** The new file is written beside its destination
//! (same directory, so the rename is atomic), created 0600 by this code
//! before SQLite opens it, synced, renamed over the destination, and the
//! directory synced. Until the rename the old file is untouched; after it
//! the new one is complete. A temporary file left by a crash (its name
//! begins with `.<registry>.cardlink-`) is removed by the next
//! conversion of that registry; while a conversion fails it removes its
//! own at once. Only `db decrypt` writes a plaintext file, and only where
//! it was asked to.
//!
//! **In use.** A running cardlinkd holds an exclusive `flock` on its
//! registry file: the conversion takes that lock too (and so refuses while
//! the daemon runs, and a daemon cannot start during it). Other
//! connections (another `cardlinkctl`, the `sqlite3` shell) are seen by
//! what SQLite leaves: the copy is made in an `IMMEDIATE` transaction (no
//! other writer meanwhile), and a write-ahead log still there when this
//! tool's connection has closed means another connection has the file
//! open; the conversion then stops and changes nothing. A connection
//! opened in the instant between that check and the rename is not seen.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::OpenFlags;

use super::audit::Entry;
use super::error::RegistryError;
use super::key::Cipher;
use super::key::DbKey;
use super::sqlite::{is_plain, open_unlocked, OpenOptions, Sqlite};

/// What to do with a registry file.
#[derive(Debug, Clone)]
pub enum Conversion {
    /// A plain registry becomes encrypted with `key`, in place.
    Encrypt {
        /// The new key.
        key: DbKey,
    },
    /// An encrypted registry becomes plain: in place, or (`out`) a plain
    /// copy at a new path, the registry staying encrypted.
    Decrypt {
        /// The registry's key.
        key: DbKey,
        /// Where a plain copy goes (must not exist; its directory must not
        /// be open to others); `None`: the registry itself.
        out: Option<PathBuf>,
    },
    /// An encrypted registry gets a new key, in place.
    Rekey {
        /// The registry's key.
        old: DbKey,
        /// The new key.
        new: DbKey,
    },
}

impl Conversion {
    /// The audit row's action.
    pub fn action(&self) -> &'static str {
        match self {
            Conversion::Encrypt { .. } => "db_encrypt",
            Conversion::Decrypt { .. } => "db_decrypt",
            Conversion::Rekey { .. } => "db_rekey",
        }
    }

    fn keys(&self) -> (Option<&DbKey>, Option<&DbKey>) {
        match self {
            Conversion::Encrypt { key } => (None, Some(key)),
            Conversion::Decrypt { key, .. } => (Some(key), None),
            Conversion::Rekey { old, new } => (Some(old), Some(new)),
        }
    }
}

/// Converts the registry at `path` (see the module's documentation) and
/// returns the file written: `path` itself, or a decrypted copy.
pub fn convert(path: &Path, how: &Conversion, actor: &str) -> Result<PathBuf, RegistryError> {
    let file = path.display().to_string();
    let refuse = |why: String| Err(RegistryError::Crypt(why));
    let io = |what: &str, e: std::io::Error| RegistryError::Crypt(format!("{what}: {e}"));
    let (from, to) = how.keys();
    match (is_plain(path).map_err(|e| io(&file, e))?, from) {
        (None, _) => return refuse(format!("there is no registry at {file}")),
        (Some(false), None) => {
            return refuse(format!(
                "the registry {file} is already encrypted (change its key with `db rekey`)"
            ))
        }
        (Some(true), Some(_)) => {
            return refuse(format!(
                "the registry {file} is not encrypted; there is nothing to {}",
                if to.is_some() { "rekey" } else { "decrypt" }
            ))
        }
        _ => {}
    }
    let dest = match how {
        Conversion::Decrypt { out: Some(out), .. } => {
            if out.exists() {
                return refuse(format!(
                    "{} exists; give a new file for the decrypted copy",
                    out.display()
                ));
            }
            private_dir(out)?;
            out.clone()
        }
        _ => path.to_path_buf(),
    };
    // A running cardlinkd holds this lock (cardlinkd's `lock_registry`);
    // holding it here keeps one from starting until the rename is done.
    // The descriptor stays open until every SQLite connection to the file
    // has closed (closing it earlier would drop their POSIX locks).
    let lock = std::fs::File::open(path).map_err(|e| io(&file, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return refuse(format!(
                "the registry {file} is in use by a running cardlinkd; stop it first"
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&file, e)),
    }
    remove_leftovers(&dest);
    let mut temp = Temp::create(&dest, how.action()).map_err(|e| io("temporary file", e))?;
    if dest == path {
        // In place: the new file keeps the old one's owner, group and mode
        // (the daemon's user must still open it when root converted it).
        same_owner(path, &temp.path)
            .map_err(|e| io("giving the new file the registry's owner", e))?;
    }
    export(path, from, &temp.path, to)?;
    if wal(path).exists() {
        return refuse(format!(
            "the registry {file} is open in another process (its write-ahead log {} is still there); close it and try again; nothing was changed",
            wal(path).display()
        ));
    }
    let outcome = |k: Option<&DbKey>| match k {
        Some(k) => format!("ok {}", k.source()),
        None => "ok plain".to_string(),
    };
    match how {
        Conversion::Decrypt {
            out: Some(out),
            key,
        } => {
            // The registry stays as it is, and says that a plain copy of it
            // was made, and where.
            let mut reg = open(path, Some(key))?;
            reg.record(&Entry {
                actor,
                action: how.action(),
                ssn: None,
                outcome: &format!("ok plain copy {}", out.display()),
            })?;
        }
        _ => {
            let mut reg = open(&temp.path, to)?;
            reg.record(&Entry {
                actor,
                action: how.action(),
                ssn: None,
                outcome: &outcome(to),
            })?;
        }
    }
    std::fs::File::open(&temp.path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("syncing the new file", e))?;
    std::fs::rename(&temp.path, &dest).map_err(|e| io("renaming the new file into place", e))?;
    temp.done();
    if let Some(dir) = parent(&dest) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the directory", e))?;
    }
    drop(lock);
    Ok(dest)
}

/// Copies `src` (opened with `from`) into the new empty file `dst`
/// (attached with `to`; an empty key: plain), in one transaction that
/// keeps other writers out.
fn export(
    src: &Path,
    from: Option<&DbKey>,
    dst: &Path,
    to: Option<&DbKey>,
) -> Result<(), RegistryError> {
    let t = super::sqlite::DEFAULT_BUSY_TIMEOUT;
    let sql = |e| RegistryError::from_sql(e, t);
    let (conn, _) = open_unlocked(
        src,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        from,
        t,
    )?;
    conn.busy_timeout(t).map_err(sql)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(sql)?;
    let dst_key = to.map(DbKey::sql_literal).unwrap_or_else(|| "''".into());
    conn.execute(
        &format!("ATTACH DATABASE ?1 AS converted KEY {dst_key}"),
        [dst.to_string_lossy()],
    )
    .map_err(sql)?;
    if to.is_some() {
        // The new file gets the current settings, whatever the old one had
        // (a rekey is how an older registry moves to them).
        conn.execute_batch(&Cipher::Current.pragmas("converted"))
            .map_err(sql)?;
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
    conn.query_row("SELECT sqlcipher_export('converted')", [], |_| Ok(()))
        .map_err(sql)?;
    // sqlcipher_export copies schema and rows, not the header's
    // user_version: the schema's migration number (`schema.rs`).
    let version: i64 = conn
        .query_row("PRAGMA main.user_version", [], |r| r.get(0))
        .map_err(sql)?;
    conn.execute_batch(&format!("PRAGMA converted.user_version = {version};"))
        .map_err(sql)?;
    conn.execute_batch("COMMIT; DETACH DATABASE converted;")
        .map_err(sql)?;
    conn.close().map_err(|(_, e)| sql(e))
}

fn open(path: &Path, key: Option<&DbKey>) -> Result<Sqlite, RegistryError> {
    Sqlite::open(
        path,
        &OpenOptions {
            key: key.cloned(),
            ..OpenOptions::default()
        },
    )
}

fn wal(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

fn parent(p: &Path) -> Option<&Path> {
    match p.parent() {
        Some(d) if d.as_os_str().is_empty() => Some(Path::new(".")),
        d => d,
    }
}

fn same_owner(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(from)?;
    let f = std::fs::File::options().write(true).open(to)?;
    if (m.uid(), m.gid()) != {
        let t = f.metadata()?;
        (t.uid(), t.gid())
    } {
        std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o770))
}

/// A plain copy goes only into a directory others cannot enter or read.
fn private_dir(out: &Path) -> Result<(), RegistryError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent(out).unwrap_or(Path::new("/"));
    let meta = std::fs::metadata(dir)
        .map_err(|e| RegistryError::Crypt(format!("directory {}: {e}", dir.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(RegistryError::Crypt(format!(
            "the directory {} is open to others (mode {mode:04o}); a decrypted registry goes only into a private directory (install -d -m 0700 DIR)",
            dir.display()
        )));
    }
    Ok(())
}

/// The prefix of this destination's temporary files.
fn temp_prefix(dest: &Path) -> String {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.cardlink-")
}

/// Removes temporary files a crashed conversion left beside `dest`.
fn remove_leftovers(dest: &Path) {
    let Some(dir) = parent(dest) else { return };
    let prefix = temp_prefix(dest);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            tracing::info!(file = %e.path().display(), "removing a conversion's leftover temporary file");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The new file, removed (with SQLite's journal files) unless renamed.
struct Temp {
    path: PathBuf,
    keep: bool,
}

impl Temp {
    fn create(dest: &Path, action: &str) -> std::io::Result<Temp> {
        let dir = parent(dest).unwrap_or(Path::new("."));
        let path = dir.join(format!(
            "{}{action}-{}",
            temp_prefix(dest),
            std::process::id()
        ));
        // 0600 from the first byte: SQLite gives its journal files the
        // mode of the database file.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Temp { path, keep: false })
    }

    fn done(&mut self) {
        self.keep = true;
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut s = self.path.as_os_str().to_owned();
            s.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(s));
        }
    }
}
