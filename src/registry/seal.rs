//! Forward-secure sealing of the audit chain, after journald's Forward
//! Secure Sealing (Marson & Poettering, "Practical Secure Logging: Seekable
//! Sequential Key Generators", ESORICS 2013), with a hash chain of keys in
//! place of its seekable generator.
//!
//! A box that seals holds one key file (0600): its box id, the chain's
//! algorithm, the seal index `i` it has reached and the key `k_i`. The
//! auditor holds the box's verification key, written once by `cardlinkctl
//! db seal init`: the same box id and algorithm, and `k_0`.
//!
//! **Per row.** Every audit row the box writes is sealed:
//!
//! ```text
//! seal_i  = HMAC(k_i, "cardlink-seal" ␟ box ␟ i ␟ row hash)      (hex)
//! k_{i+1} = H("cardlink-seal-evolve" ␟ k_i)
//! ```
//!
//! with H the chain's hash (SHA-256 or SM3) and HMAC over the same hash.
//! The row hash covers the whole chain before it, so a seal covers every
//! row up to its own. After the row's transaction commits the key file is
//! replaced by `k_{i+1}` durably (written to a temporary file, fsync,
//! rename, fsync of the directory), so `k_i` is gone from the box: whoever
//! takes the box later holds some `k_j` with `j > i` and cannot compute
//! `k_i` (H is one-way), so can neither change row `i` nor seal a rewritten
//! chain. Per epoch (one key per hour, say) would leave every row of the
//! current epoch open to rewriting by an intruder; per row closes each row
//! as it is written, at the cost of one HMAC and one small fsync'd file
//! write per audit row (docs/benchmarks.md).
//!
//! **Crash consistency.** The key moves forward only after the row is
//! committed. A crash between the two leaves the key file at `i` with row
//! `i` in the registry: the next seal (and the daemon at start) sees the
//! box's last sealed index in the registry and derives `k_{i+1}` in memory
//! from `k_i` before writing, so an index is never sealed twice, and moves
//! the file on. The reverse (key moved on, row missing) cannot happen,
//! so `verify-audit` accepts a key file at the last sealed index or one
//! past it, and calls anything further "rows cut from the end". Accepting
//! the key at the last row costs nothing: whoever holds that key could seal
//! a row at that index anyway (rows sealed after a compromise are not
//! protected).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use super::hash::HashAlg;

/// Bytes of a sealing key.
pub const KEY_LEN: usize = 32;

/// The furthest a writer moves its key in one step to catch up with the
/// registry (far more than any crash leaves behind).
const MAX_JUMP: u64 = 1_000_000;

/// Errors of the sealing keys.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The box's sealing key file is not there.
    #[error("sealing key missing: {0}")]
    Missing(String),
    /// Reading or writing a key file failed.
    #[error("sealing key {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file that is not one.
    #[error("{path}: {why}")]
    Bad {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// `seal init` found a file where it would write one.
    #[error("{0} exists already: a sealing key and its verification key are written once")]
    Exists(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SealError + '_ {
    move |source| SealError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `k_{i+1}` from `k_i`.
pub fn evolve(alg: HashAlg, k: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    alg.digest(&[b"cardlink-seal-evolve", k], Some(0x1F))
}

/// The seal of the row whose hash is `hash`, index `index` of box `box_id`.
pub fn mac(alg: HashAlg, key: &[u8; KEY_LEN], box_id: &str, index: u64, hash: &str) -> String {
    let msg = [
        b"cardlink-seal" as &[u8],
        box_id.as_bytes(),
        index.to_string().as_bytes(),
        hash.as_bytes(),
    ]
    .join(&0x1F);
    hex::encode(alg.hmac(key, &msg))
}

/// Reads `name=value` lines after a first line `magic`.
fn fields(path: &Path, text: &str, magic: &str) -> Result<Vec<(String, String)>, SealError> {
    let bad = |why: String| SealError::Bad {
        path: path.display().to_string(),
        why,
    };
    let mut lines = text.lines();
    if lines.next() != Some(magic) {
        return Err(bad(format!(
            "not a file of this kind (first line is not {magic:?})"
        )));
    }
    lines
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| bad(format!("line {l:?} is not name=value")))
        })
        .collect()
}

struct Fields<'a> {
    path: &'a Path,
    all: Vec<(String, String)>,
}

impl Fields<'_> {
    fn get(&self, name: &str) -> Result<&str, SealError> {
        self.all
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| SealError::Bad {
                path: self.path.display().to_string(),
                why: format!("no {name}="),
            })
    }
    fn bad(&self, why: String) -> SealError {
        SealError::Bad {
            path: self.path.display().to_string(),
            why,
        }
    }
    fn alg(&self) -> Result<HashAlg, SealError> {
        let v = self.get("alg")?;
        HashAlg::parse(v).ok_or_else(|| self.bad(format!("alg {v:?}: sha256 or sm3")))
    }
    fn num(&self, name: &str) -> Result<u64, SealError> {
        let v = self.get(name)?;
        v.parse()
            .map_err(|_| self.bad(format!("{name} {v:?} is not a number")))
    }
    fn key(&self) -> Result<[u8; KEY_LEN], SealError> {
        let mut k = [0u8; KEY_LEN];
        hex::decode_to_slice(self.get("key")?, &mut k)
            .map_err(|_| self.bad(format!("key is not {KEY_LEN} bytes of hex")))?;
        Ok(k)
    }
    fn box_id(&self) -> Result<String, SealError> {
        let b = self.get("box")?;
        if !valid_box_id(b) {
            return Err(self.bad(format!("box id {b:?} is not 1-64 letters, digits, . _ -")));
        }
        Ok(b.to_string())
    }
}

/// A box id: 1 to 64 ASCII letters, digits, `.`, `_` or `-`.
pub fn valid_box_id(b: &str) -> bool {
    (1..=64).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn read_text(path: &Path) -> Result<String, SealError> {
    let mut s = String::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_string(&mut s).map_err(io(path))?;
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(SealError::Missing(path.display().to_string()))
        }
        Err(e) => Err(io(path)(e)),
    }
}

const KEY_MAGIC: &str = "cardlink-seal-key 1";
const VERIFY_MAGIC: &str = "cardlink-seal-verify 1";

/// The state of a box's key file: how far the box got, and its key there.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyState {
    /// The box.
    pub box_id: String,
    /// The chain's algorithm.
    pub alg: HashAlg,
    /// The next seal index (rows `0..index` have been sealed).
    pub index: u64,
    key: [u8; KEY_LEN],
}

/// Never shows the key.
impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyState")
            .field("box_id", &self.box_id)
            .field("alg", &self.alg)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl KeyState {
    /// Reads a key file.
    pub fn read(path: &Path) -> Result<KeyState, SealError> {
        let text = read_text(path)?;
        let f = Fields {
            path,
            all: fields(path, &text, KEY_MAGIC)?,
        };
        Ok(KeyState {
            box_id: f.box_id()?,
            alg: f.alg()?,
            index: f.num("index")?,
            key: f.key()?,
        })
    }

    /// The key of `index` (`None` before this state's: the past is gone).
    /// A jump of more than [`MAX_JUMP`] is refused (a registry row with a
    /// made-up index would otherwise keep a writer hashing for ever).
    fn key_at(&self, index: u64) -> Option<[u8; KEY_LEN]> {
        if index < self.index || index - self.index > MAX_JUMP {
            return None;
        }
        let mut k = self.key;
        for _ in self.index..index {
            k = evolve(self.alg, &k);
        }
        Some(k)
    }

    fn text(&self) -> String {
        format!(
            "{KEY_MAGIC}\nbox={}\nalg={}\nindex={}\nkey={}\n",
            self.box_id,
            self.alg,
            self.index,
            hex::encode(self.key)
        )
    }

    /// Replaces the file at `path` by this state: a temporary file beside
    /// it (0600), fsync, rename over it, fsync of the directory.
    fn write_durably(&self, path: &Path) -> Result<(), SealError> {
        let dir = parent(path);
        let tmp = tmp_path(path);
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(self.text().as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io(path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    parent(path).join(name)
}

/// An exclusive `flock` on the key file's directory (the file itself is
/// replaced by rename, so it cannot carry the lock), held while a key moves
/// forward, so that two processes of one box (the daemon and `cardlinkctl`)
/// never move it backwards.
struct DirLock {
    _dir: File,
}

impl DirLock {
    fn take(path: &Path) -> Result<DirLock, SealError> {
        let dir = parent(path);
        let f = File::open(&dir).map_err(io(&dir))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(&dir)(std::io::Error::last_os_error()));
        }
        Ok(DirLock { _dir: f })
    }
}

/// The auditor's verification key of one box: `k_0`.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyKey {
    /// The box.
    pub box_id: String,
    /// The chain's algorithm.
    pub alg: HashAlg,
    /// The id of the first audit row the box sealed (`seal init`'s).
    pub from: i64,
    key: [u8; KEY_LEN],
}

/// Never shows the key.
impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("box_id", &self.box_id)
            .field("alg", &self.alg)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// Reads a verification key file.
    pub fn read(path: &Path) -> Result<VerifyKey, SealError> {
        let text = match read_text(path) {
            Err(SealError::Missing(p)) => {
                return Err(SealError::Bad {
                    path: p,
                    why: "no such verification key file".into(),
                })
            }
            other => other?,
        };
        let f = Fields {
            path,
            all: fields(path, &text, VERIFY_MAGIC)?,
        };
        let from = f.num("from")?;
        Ok(VerifyKey {
            box_id: f.box_id()?,
            alg: f.alg()?,
            from: i64::try_from(from).map_err(|_| f.bad(format!("from {from} is too large")))?,
            key: f.key()?,
        })
    }

    /// Walks the keys forward from `k_0`.
    pub fn keys(&self) -> KeyWalk {
        KeyWalk {
            alg: self.alg,
            k0: self.key,
            index: 0,
            key: self.key,
        }
    }

    /// Whether `state` holds the key this box has at `state.index`: a key
    /// file whose index was set back (to hide rows cut from the end) does
    /// not, since only the box's earlier keys could produce it.
    pub fn vouches_for(&self, state: &KeyState) -> bool {
        state.box_id == self.box_id
            && state.alg == self.alg
            && self.keys().at(state.index) == state.key
    }
}

/// The keys of one box, walked forward (and from `k_0` again when asked for
/// an earlier one).
#[derive(Clone)]
pub struct KeyWalk {
    alg: HashAlg,
    k0: [u8; KEY_LEN],
    index: u64,
    key: [u8; KEY_LEN],
}

impl KeyWalk {
    /// `k_index`.
    pub fn at(&mut self, index: u64) -> [u8; KEY_LEN] {
        if index < self.index {
            self.index = 0;
            self.key = self.k0;
        }
        while self.index < index {
            self.key = evolve(self.alg, &self.key);
            self.index += 1;
        }
        self.key
    }
}

/// The seal of one row, as stored (`seal_box`, `seal_index`, `seal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSeal {
    /// The box that sealed it.
    pub box_id: String,
    /// Its index in that box's sequence, from 0.
    pub index: i64,
    /// The MAC, hex.
    pub mac: String,
}

/// A box's sealing key, used by the registry's writers.
#[derive(Debug, Clone)]
pub struct Sealer {
    path: PathBuf,
    box_id: String,
    alg: HashAlg,
}

impl Sealer {
    /// The key file at `path` (read to learn its box and algorithm).
    pub fn open(path: &Path) -> Result<Sealer, SealError> {
        let s = KeyState::read(path)?;
        Ok(Sealer {
            path: path.to_path_buf(),
            box_id: s.box_id,
            alg: s.alg,
        })
    }

    /// The box id.
    pub fn box_id(&self) -> &str {
        &self.box_id
    }

    /// The algorithm.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals the row whose hash is `hash`, given the box's last sealed
    /// index in the registry (read under the write lock). Returns the seal;
    /// the caller moves the key past it once the row is committed
    /// ([`Sealer::advance_to`]).
    pub fn seal(&self, last: Option<i64>, hash: &str) -> Result<RowSeal, SealError> {
        let state = KeyState::read(&self.path)?;
        // After a crash between a commit and the key's move, the registry
        // is one ahead of the file: never seal an index twice.
        let next = last.map_or(0, |l| l.saturating_add(1).max(0) as u64);
        let index = state.index.max(next);
        let key = state.key_at(index).ok_or_else(|| SealError::Bad {
            path: self.path.display().to_string(),
            why: format!(
                "the registry's last seal index of box {} ({index}) is not within {MAX_JUMP} after the key's ({})",
                self.box_id, state.index
            ),
        })?;
        Ok(RowSeal {
            box_id: self.box_id.clone(),
            index: index as i64,
            mac: mac(self.alg, &key, &self.box_id, index, hash),
        })
    }

    /// Moves the key file forward to index `next` (never backwards),
    /// overwriting the old key durably.
    pub fn advance_to(&self, next: u64) -> Result<(), SealError> {
        let _lock = DirLock::take(&self.path)?;
        let state = KeyState::read(&self.path)?;
        if state.index >= next {
            return Ok(());
        }
        let key = state.key_at(next).ok_or_else(|| SealError::Bad {
            path: self.path.display().to_string(),
            why: "key index went backwards".into(),
        })?;
        KeyState {
            index: next,
            key,
            ..state
        }
        .write_durably(&self.path)
    }
}

/// Creates a box's sealing key at `key_path` and its verification key at
/// `verify_path` (both new files, 0600), for a chain of `alg` whose first
/// sealed row will be `from`.
pub fn create_keys(
    key_path: &Path,
    verify_path: &Path,
    box_id: &str,
    alg: HashAlg,
    from: i64,
) -> Result<(), SealError> {
    if !valid_box_id(box_id) {
        return Err(SealError::Bad {
            path: key_path.display().to_string(),
            why: format!("box id {box_id:?} is not 1-64 letters, digits, . _ -"),
        });
    }
    for p in [key_path, verify_path] {
        if p.exists() {
            return Err(SealError::Exists(p.display().to_string()));
        }
    }
    let mut k0 = [0u8; KEY_LEN];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut k0).map_err(|e| {
        SealError::Io {
            path: key_path.display().to_string(),
            source: std::io::Error::other(format!("no random key: {e}")),
        }
    })?;
    let write_new = |path: &Path, text: String| -> Result<(), SealError> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => SealError::Exists(path.display().to_string()),
                _ => io(path)(e),
            })?;
        f.write_all(text.as_bytes()).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
        File::open(parent(path))
            .and_then(|d| d.sync_all())
            .map_err(io(path))
    };
    write_new(
        verify_path,
        format!(
            "{VERIFY_MAGIC}\n# the auditor's copy: keep it off the box\nbox={box_id}\nalg={alg}\nfrom={from}\nkey={}\n",
            hex::encode(k0)
        ),
    )?;
    write_new(
        key_path,
        KeyState {
            box_id: box_id.to_string(),
            alg,
            index: 0,
            key: k0,
        }
        .text(),
    )
}

/// Whether a registry's writer seals, and with what.
#[derive(Debug, Clone, Default)]
pub enum SealSetup {
    /// Rows are not sealed.
    #[default]
    Off,
    /// Rows are sealed with this key.
    On(Sealer),
}

/// How a registry's writer extends the audit chain: its algorithm (as
/// recorded in the registry, read at opening) and its sealing.
#[derive(Debug, Default)]
pub struct AuditSetup {
    alg: AtomicU8,
    /// The sealing.
    pub seal: SealSetup,
    /// What the configuration asked for (`audit_hash`), if anything.
    pub want: Option<HashAlg>,
    /// The registry's rows are sealed, but this writer has no key: writing
    /// an audit row is refused with this text.
    missing: std::sync::OnceLock<String>,
}

impl AuditSetup {
    /// A setup asking for `want` and sealing as `seal`.
    pub fn new(want: Option<HashAlg>, seal: SealSetup) -> AuditSetup {
        AuditSetup {
            alg: AtomicU8::new(0),
            seal,
            want,
            missing: std::sync::OnceLock::new(),
        }
    }

    /// The chain's algorithm.
    pub fn alg(&self) -> HashAlg {
        match self.alg.load(Ordering::Acquire) {
            1 => HashAlg::Sm3,
            _ => HashAlg::Sha256,
        }
    }

    /// Sets the chain's algorithm (as read from, or recorded in, the registry).
    pub fn set_alg(&self, alg: HashAlg) {
        self.alg.store(
            match alg {
                HashAlg::Sha256 => 0,
                HashAlg::Sm3 => 1,
            },
            Ordering::Release,
        );
    }

    /// The sealer, or why a row cannot be written.
    pub fn sealer(&self) -> Result<Option<&Sealer>, SealError> {
        match (&self.seal, self.missing.get()) {
            (SealSetup::On(s), _) => Ok(Some(s)),
            (SealSetup::Off, None) => Ok(None),
            (SealSetup::Off, Some(why)) => Err(SealError::Missing(why.clone())),
        }
    }

    /// Why this writer cannot write audit rows (a sealed registry, no key).
    pub fn missing(&self) -> Option<&str> {
        match self.seal {
            SealSetup::Off => self.missing.get().map(String::as_str),
            SealSetup::On(_) => None,
        }
    }

    /// After the commit of rows sealed up to `index`: the key moves past it.
    pub fn committed(&self, index: Option<i64>) -> Result<(), SealError> {
        match (&self.seal, index) {
            (SealSetup::On(s), Some(i)) if i >= 0 => s.advance_to(i as u64 + 1),
            _ => Ok(()),
        }
    }
}

/// A box's last seal index (both backends; `$1` the box).
pub(crate) const LAST_SEAL_SQL: &str = "SELECT max(seal_index) FROM audit WHERE seal_box = $1";
/// A box that sealed a row, if any (both backends).
pub(crate) const ANY_SEAL_SQL: &str =
    "SELECT seal_box FROM audit WHERE seal_box IS NOT NULL LIMIT 1";
/// The chain's recorded algorithm (both backends).
pub(crate) const META_HASH_SQL: &str = "SELECT value FROM audit_meta WHERE key = 'hash'";
/// Records the chain's algorithm (both backends; `$1` its name).
pub(crate) const SET_META_HASH_SQL: &str =
    "INSERT INTO audit_meta (key, value) VALUES ('hash', $1) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
/// Whether the chain has rows (both backends).
pub(crate) const HAS_ROWS_SQL: &str = "SELECT EXISTS (SELECT 1 FROM audit)";

/// Reads a recorded algorithm's name.
pub(crate) fn recorded_alg(name: Option<String>) -> Result<Option<HashAlg>, String> {
    name.map(|n| {
        HashAlg::parse(&n).ok_or_else(|| format!("audit_meta names an unknown audit hash {n:?}"))
    })
    .transpose()
}

impl AuditSetup {
    /// Settles the chain's algorithm and this writer's sealing once the
    /// registry has said what it recorded (`recorded`), whether its chain
    /// has rows, and which box sealed a row (`sealed_by`). Returns whether
    /// the algorithm must be recorded now. A sealed registry without a key
    /// refuses writes; a key of another algorithm than the chain's is
    /// refused at once.
    pub(crate) fn settle(
        &self,
        recorded: Option<String>,
        has_rows: bool,
        sealed_by: Option<String>,
        read_only: bool,
    ) -> Result<bool, String> {
        let want = if read_only { None } else { self.want };
        let (alg, record) = super::hash::settle(recorded_alg(recorded)?, has_rows, want)?;
        self.set_alg(alg);
        match (&self.seal, sealed_by) {
            (SealSetup::On(s), _) if s.alg() != alg => {
                return Err(format!(
                    "the sealing key {} is for a {} chain; this registry's audit chain is {alg}",
                    s.path().display(),
                    s.alg(),
                ))
            }
            (SealSetup::Off, Some(b)) => {
                let _ = self.missing.set(format!(
                    "the registry's audit rows are sealed (box {b}) and no sealing key is configured (seal_key_file, --seal-key)"
                ));
            }
            _ => {}
        }
        Ok(record && !read_only)
    }

    /// At opening (not read-only): after a crash between a commit and the
    /// key's move, the registry holds the box's row `last` while the key
    /// file is still at it: move the key on now, so that it does not wait
    /// on the box for the next row.
    pub(crate) fn catch_up(&self, last: Option<i64>) -> Result<(), SealError> {
        self.committed(last)
    }

    /// The sealing box, if this writer seals.
    pub(crate) fn box_id(&self) -> Option<&str> {
        match &self.seal {
            SealSetup::On(s) => Some(s.box_id()),
            SealSetup::Off => None,
        }
    }
}

/// The sealing key's place beside a SQLite registry: `<registry>.seal`.
pub fn default_key_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(".seal");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(dir: &Path, alg: HashAlg) -> (PathBuf, PathBuf) {
        let (k, v) = (dir.join("k"), dir.join("v"));
        create_keys(&k, &v, "box-1", alg, 7).unwrap();
        (k, v)
    }

    #[test]
    fn a_key_moves_forward_only_and_the_auditor_follows_it() {
        for alg in HashAlg::ALL {
            let dir = tempfile::tempdir().unwrap();
            let (k, v) = keys(dir.path(), alg);
            let vk = VerifyKey::read(&v).unwrap();
            assert_eq!((vk.from, vk.alg, vk.box_id.as_str()), (7, alg, "box-1"));
            let s = Sealer::open(&k).unwrap();
            let seal0 = s.seal(None, "h0").unwrap();
            assert_eq!(seal0.index, 0);
            assert_eq!(seal0.mac, mac(alg, &vk.keys().at(0), "box-1", 0, "h0"));
            s.advance_to(1).unwrap();
            // Not committed yet in the registry? The next seal still moves on.
            let seal1 = s.seal(Some(0), "h1").unwrap();
            assert_eq!(seal1.mac, mac(alg, &vk.keys().at(1), "box-1", 1, "h1"));
            // A crash after the commit of row 1: the file is still at 1.
            let seal2 = s.seal(Some(1), "h2").unwrap();
            assert_eq!(seal2.index, 2);
            s.advance_to(3).unwrap();
            s.advance_to(2).unwrap(); // never backwards
            let state = KeyState::read(&k).unwrap();
            assert_eq!(state.index, 3);
            assert!(vk.vouches_for(&state));
            assert_ne!(state.key, vk.keys().at(0), "the old key is gone");
            // A key file set back to an earlier index with a made-up key.
            let forged = KeyState {
                index: 1,
                key: [7; KEY_LEN],
                ..state.clone()
            };
            assert!(!vk.vouches_for(&forged));
            // Files are private.
            use std::os::unix::fs::PermissionsExt;
            for p in [&k, &v] {
                let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", p.display());
            }
            assert!(!format!("{state:?}{vk:?}").contains(&hex::encode(state.key)));
        }
    }

    #[test]
    fn keys_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        keys(dir.path(), HashAlg::Sha256);
        let e = create_keys(
            &dir.path().join("k"),
            &dir.path().join("v2"),
            "b",
            HashAlg::Sha256,
            1,
        )
        .unwrap_err();
        assert!(matches!(e, SealError::Exists(_)), "{e}");
        let e = Sealer::open(&dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().starts_with("sealing key missing"), "{e}");
    }
}
