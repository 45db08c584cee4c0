//! The key of an encrypted SQLite registry (SQLCipher): where it comes
//! from and how it is read. A leaf file: only the registry's error type.
//!
//! **Format.** A key file (or systemd credential) holds exactly 64
//! hexadecimal digits, 32 random bytes, as `openssl rand -hex 32` writes
//! them; surrounding whitespace (the final newline) is ignored. The bytes
//! are SQLCipher's raw key (`PRAGMA key = "x'…'"`), so no passphrase
//! derivation runs at each opening and the key is as strong as its
//! randomness (SQLCipher API, "PRAGMA key", raw key data:
//! <https://www.zetetic.net/sqlcipher/sqlcipher-api/#key>). A passphrase
//! is refused: it would be only as strong as a person's memory.
//!
//! **Where from.** `database_key_file` in the daemon's configuration,
//! `--key-file` for `cardlinkctl db`, or the systemd credential
//! [`CREDENTIAL`] (`LoadCredentialEncrypted=` in the unit), read from
//! `$CREDENTIALS_DIRECTORY` (systemd.exec(5), "Credentials").
//!
//! **Never shown.** [`DbKey`]'s `Debug` names only its source; the key is
//! never logged, printed nor written anywhere but to SQLCipher. A file
//! that others may read or write is refused before it is read, as ssh
//! refuses such private keys.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::RegistryError;

/// The name of the systemd credential that holds the registry's key.
pub const CREDENTIAL: &str = "cardlink-db-key";

/// Where a key comes from, for messages (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A key file (`database_key_file`, `--key-file`).
    File(PathBuf),
    /// A systemd credential: its name and the file systemd put it in.
    Credential {
        /// The credential's name ([`CREDENTIAL`]).
        name: String,
        /// `$CREDENTIALS_DIRECTORY/<name>`.
        path: PathBuf,
    },
}

impl KeySource {
    /// The file the key is read from.
    pub fn path(&self) -> &Path {
        match self {
            KeySource::File(p) => p,
            KeySource::Credential { path, .. } => path,
        }
    }

    /// The credential [`CREDENTIAL`] in `$CREDENTIALS_DIRECTORY`, when
    /// systemd gave this process one.
    pub fn from_credentials() -> Option<KeySource> {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
        let path = Path::new(&dir).join(CREDENTIAL);
        path.exists().then(|| KeySource::Credential {
            name: CREDENTIAL.into(),
            path,
        })
    }

    /// An explicit key file if given, else the systemd credential if
    /// present, else none.
    pub fn choose(file: Option<&Path>) -> Option<KeySource> {
        match file {
            Some(f) => Some(KeySource::File(f.to_path_buf())),
            None => KeySource::from_credentials(),
        }
    }

    /// Reads and checks the key.
    pub fn load(&self) -> Result<DbKey, RegistryError> {
        DbKey::load(self.clone())
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "key file {}", p.display()),
            KeySource::Credential { name, path } => {
                write!(f, "credential {name} ({})", path.display())
            }
        }
    }
}

/// A registry key, read and checked; knows where it came from.
#[derive(Clone)]
pub struct DbKey {
    source: KeySource,
    /// 64 lower-case hexadecimal digits.
    hex: String,
}

/// Only the source: the key is never printed.
impl fmt::Debug for DbKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbKey")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Digits of a key (32 bytes).
pub const KEY_HEX_DIGITS: usize = 64;

impl DbKey {
    /// Reads the key at `source`: refused when others may read or write
    /// the file, when it cannot be read, or when it is not 64 hex digits.
    pub fn load(source: KeySource) -> Result<DbKey, RegistryError> {
        use std::os::unix::fs::PermissionsExt;
        let bad = |why: String| RegistryError::Key {
            key: source.to_string(),
            why,
        };
        let path = source.path();
        let meta = std::fs::metadata(path).map_err(|e| bad(io_why(&e)))?;
        if !meta.is_file() {
            return Err(bad("is not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            return Err(bad(format!(
                "is accessible by others (mode {mode:04o}); the key must not be: chmod o-rwx {}",
                path.display()
            )));
        }
        let text = std::fs::read(path).map_err(|e| bad(io_why(&e)))?;
        let hex = parse(&text).ok_or_else(|| {
            bad(format!(
                "must hold {KEY_HEX_DIGITS} hexadecimal digits (32 random bytes, as `openssl rand -hex 32` writes them)"
            ))
        })?;
        Ok(DbKey { source, hex })
    }

    /// A key from its 64 hex digits (tests, benchmarks, `db rekey`'s new
    /// key read elsewhere); `None` when they are not that.
    pub fn from_hex(source: KeySource, text: &str) -> Option<DbKey> {
        parse(text.as_bytes()).map(|hex| DbKey { source, hex })
    }

    /// Where the key came from.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The SQL literal SQLCipher reads as a raw key: `"x'…'"` (only hex
    /// digits inside, checked when read).
    pub(crate) fn sql_literal(&self) -> String {
        format!("\"x'{}'\"", self.hex)
    }
}

/// How SQLCipher encrypts and authenticates an encrypted registry's
/// pages. Every page is encrypted with AES-256-CBC and carries an HMAC
/// that is checked whenever the page is read from disk (SQLCipher design,
/// <https://www.zetetic.net/sqlcipher/design/>): the HMAC stays on
/// (`cipher_use_hmac`), a page changed on disk is refused, not read.
/// These settings are not written in the file (its first bytes are a
/// random salt), so every opening of an encrypted registry (cardlinkd,
/// cardlinkctl, `db encrypt`/`rekey`'s attached copy) sets them the same
/// way, through [`Cipher::pragmas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// What new encrypted registries get (since 2026-12-01): HMAC-SHA256
    /// instead of SQLCipher 4's HMAC-SHA512, which takes about half the
    /// time per page on CPUs with SHA extensions (OpenSSL uses them for
    /// SHA-256, not SHA-512); docs/benchmarks.md has the measurements.
    Current,
    /// SQLCipher 4's defaults (HMAC-SHA512, 4096-byte pages; SQLCipher
    /// API, `cipher_compatibility`,
    /// <https://www.zetetic.net/sqlcipher/sqlcipher-api/#cipher_compatibility>):
    /// registries encrypted before 2026-12-01. They still open;
    /// `cardlinkctl db rekey` rewrites one with [`Cipher::Current`].
    Sqlcipher4,
}

impl Cipher {
    /// Tried in this order when an encrypted registry is opened: the first
    /// whose HMAC of the first page checks out is the file's.
    pub const OPEN_ORDER: [Cipher; 2] = [Cipher::Current, Cipher::Sqlcipher4];

    /// (page size, HMAC algorithm). The key derivation for the HMAC key
    /// (PBKDF2-HMAC-SHA512, 2 iterations with a raw key) is SQLCipher 4's
    /// in both and set explicitly, so that no library default decides.
    fn params(self) -> (u32, &'static str) {
        match self {
            Cipher::Current => (CURRENT_PAGE_SIZE, "HMAC_SHA256"),
            Cipher::Sqlcipher4 => (4096, "HMAC_SHA512"),
        }
    }

    /// The statements that give schema `db` (`main`, or an attached
    /// database's name) these settings: after its key, before its first
    /// read (SQLCipher API, `cipher_page_size`, `cipher_hmac_algorithm`).
    pub(crate) fn pragmas(self, db: &str) -> String {
        let (page, hmac) = self.params();
        format!(
            "PRAGMA {db}.cipher_page_size = {page}; PRAGMA {db}.cipher_hmac_algorithm = {hmac}; \
             PRAGMA {db}.cipher_kdf_algorithm = PBKDF2_HMAC_SHA512; PRAGMA {db}.cipher_use_hmac = ON;"
        )
    }

    /// For messages and `--check-config`.
    pub fn describe(self) -> String {
        let (page, hmac) = self.params();
        let name = match self {
            Cipher::Current => "cardlink's current settings",
            Cipher::Sqlcipher4 => "SQLCipher 4's defaults, from before 2026-12-01",
        };
        format!("AES-256-CBC, {hmac} per page, {page}-byte pages ({name})")
    }
}

/// The page size of [`Cipher::Current`].
const CURRENT_PAGE_SIZE: u32 = 4096;

fn parse(text: &[u8]) -> Option<String> {
    let t = text.trim_ascii();
    (t.len() == KEY_HEX_DIGITS && t.iter().all(u8::is_ascii_hexdigit))
        .then(|| String::from_utf8_lossy(t).to_ascii_lowercase())
}

fn io_why(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::PermissionDenied => {
            "cannot be read by this user (permission denied)".into()
        }
        _ => format!("cannot be read: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_64_hex_digits_and_never_shown() {
        let src = KeySource::File("/k".into());
        let k = DbKey::from_hex(src.clone(), &format!("{}\n", "aB".repeat(32))).unwrap();
        assert_eq!(k.sql_literal(), format!("\"x'{}'\"", "ab".repeat(32)));
        assert!(!format!("{k:?}").contains("abab"));
        assert!(DbKey::from_hex(src.clone(), "passphrase").is_none());
        assert!(DbKey::from_hex(src.clone(), &"ab".repeat(31)).is_none());
        assert!(DbKey::from_hex(src, &format!("{}'", "a".repeat(63))).is_none());
    }

    #[test]
    fn the_missing_key_error_names_the_credential() {
        let e = RegistryError::KeyRequired {
            path: "r.db".into(),
        };
        assert!(e.to_string().contains(&format!("credential {CREDENTIAL})")));
    }
}
