//! `cardlinkd.toml`: the daemon's configuration.
//!
//! ```toml
//! database = "/var/lib/cardlink/registry.db"   # or postgres://…: a shared registry
//! database_key_file = "/etc/cardlink/db.key"   # an encrypted registry (SQLCipher): 64 hex digits, not readable by others
//! role = "window"                       # or "kiosk"
//! relations = ["spouse", "parent", "child", "sibling", "grandparent",
//!              "maternal_grandparent", "grandchild", "maternal_grandchild"]
//! log_level = "info"                    # RUST_LOG overrides
//! busy_timeout_ms = 5000                # at most 60000
//! cache_mib = 8                         # at most 1024
//! prewarm = true                        # PostgreSQL: load what lookups read into the server's cache
//! capture_dir = "/var/lib/cardlink/captures"   # a directory
//! audit_hash = "sha256"                 # or "sm3" (GB/T 32905-2016), for a new chain
//! seal_key_file = "/var/lib/cardlink/registry.db.seal"   # the box's sealing key
//! name = "window-3f-01"                 # this box in the fleet view (default: host name)
//!
//! [metrics]                             # off unless listen is set
//! listen = "127.0.0.1:9780"             # Prometheus /metrics (IP:port)
//!
//! [fleet]
//! heartbeat_s = 15                      # 1..=3600; offline after 3 missed
//!
//! [policy]                              # province rules
//! max_members = 0                       # 0: no limit
//! rebind_cooldown_days = 0
//! scope = "province"                    # province | city | any
//! id_card = "window"                    # identify | window | anywhere (identity-card reads)
//!
//! [socket]
//! path = "/run/cardlink/display.sock"
//! mode = "0660"                         # owner rw, others nothing
//! privileged_uids = [0]                 # clients that may see full SSNs
//!
//! [printer]                           # receipts (off when absent)
//! path = "/dev/cardlink/printer"        # a serial port, or /dev/usb/lp0 (usblp)
//! baud = 9600                           # serial only: 1200..115200 (most Chinese 58/80 mm printers: 9600)
//! encoding = "gbk"                      # gbk | gb18030 | utf-8
//! status_interval_s = 30                # DLE EOT status poll, 1..=3600
//! station = "门诊一楼自助机"            # the box's name on receipts (default: the host name)
//!
//! [[reader]]
//! name = "window1"                      # 1-32 of [A-Za-z0-9_-], not "manual"
//! path = "/dev/cardlink/window1"
//! baud = 115200
//! parity = "none"                       # none | even | odd
//! mode = "frame"                        # frame | ssse-text | magstripe | idcard | library
//! encoding = "gbk"                      # gbk | utf-8 (names in text records)
//! poll_ms = 300                         # idcard, library: polls (50..=5000 ms)
//!
//! [[reader]]                            # a certified reader through its vendor's
//! name = "window2"                      # standard interface library (iReadCardBas)
//! mode = "library"
//! library = "/opt/vendor/lib/libSSCardDriver.so"
//! card_type = "auto-contact-first"      # contact | contactless | auto-contact-first | auto-contactless-first
//! poll_ms = 300
//! workdir = "/var/lib/cardlink/vendor"  # the helper's working directory (ini, logs)
//! env = { LD_LIBRARY_PATH = "/opt/vendor/lib" }
//! call_timeout_ms = 5000                # a call that takes longer ends the helper
//! ```
//!
//! The bounds are checked by [`Config::validate`] (and so by
//! `cardlinkd --check-config`, at start and at each reload).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::reader::card::TextEncoding;
use crate::reader::codec::Mode;
use crate::registry::policy::IdCardUse;
use crate::registry::{BindPolicy, Database, DbKey, KeySource, RegistryError, Relation, Scope};

/// Default configuration file.
pub const DEFAULT_PATH: &str = "/etc/cardlink/cardlinkd.toml";
/// Longest `busy_timeout_ms` (one minute).
pub const MAX_BUSY_TIMEOUT_MS: u64 = 60_000;
/// Largest `cache_mib`.
pub const MAX_CACHE_MIB: u32 = 1024;
/// Longest reader name, in characters.
pub const MAX_READER_NAME: usize = 32;
/// The reader name manual lookups are reported under; no reader may take it.
pub const RESERVED_READER: &str = "manual";

/// What the box is: the `role` key of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Station {
    /// Service window or hospital office: manual entry and binding by card number allowed.
    #[default]
    Window,
    /// Self-service kiosk: binding only with both cards physically swiped; no manual entry.
    Kiosk,
}

impl Station {
    /// `window` or `kiosk`.
    pub fn as_str(self) -> &'static str {
        match self {
            Station::Window => "window",
            Station::Kiosk => "kiosk",
        }
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// None.
    #[default]
    None,
    /// Even.
    Even,
    /// Odd.
    Odd,
}

/// One card reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    /// Name shown in events (unique).
    pub name: String,
    /// Serial device path (a library reader names none: its library finds
    /// its device).
    #[serde(default)]
    pub path: PathBuf,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Parity.
    #[serde(default)]
    pub parity: Parity,
    /// Protocol.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Text encoding of names.
    #[serde(default)]
    pub encoding: TextEncoding,
    /// Record this reader's raw traffic (PROTOCOL.md §6) into `capture_dir`.
    #[serde(default)]
    pub capture: bool,
    /// `mode = "library"`: the vendor's standard interface library (`.so`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<PathBuf>,
    /// `mode = "library"`: the card interface `iReadCardBas` reads (`iType`).
    #[serde(default)]
    pub card_type: CardType,
    /// Milliseconds between two polls of a reader that is polled.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// `mode = "library"`: the helper's working directory (where vendor
    /// libraries look for their ini file and write their logs); the
    /// daemon's own when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    /// `mode = "library"`: the helper's environment besides `PATH` and
    /// `LANG` (nothing else of the daemon's is passed on).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// `mode = "library"`: how long one `iReadCardBas` call may take before
    /// the helper is killed, milliseconds.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
}

pub use crate::reader::library::CardType;

impl ReaderConfig {
    /// What `status` and `READER` show as the reader's path: its device, or
    /// for a library reader its library.
    pub fn shown_path(&self) -> String {
        match (&self.library, self.mode) {
            (Some(lib), Mode::Library) => lib.display().to_string(),
            _ => self.path.display().to_string(),
        }
    }
}

fn default_baud() -> u32 {
    115_200
}
fn default_poll_ms() -> u64 {
    300
}
fn default_call_timeout_ms() -> u64 {
    5000
}
fn default_mode() -> Mode {
    Mode::Frame
}

/// The display socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// Socket path.
    #[serde(default = "default_socket")]
    pub path: PathBuf,
    /// File mode, octal text.
    #[serde(default = "default_mode_text")]
    pub mode: String,
    /// Peer uids that receive full SSNs.
    #[serde(default)]
    pub privileged_uids: Vec<u32>,
    /// Clients served at once; one more is told `too_many_clients` and
    /// closed (fewer if `RLIMIT_NOFILE` leaves too few descriptors).
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
}

fn default_max_clients() -> usize {
    256
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/cardlink/display.sock")
}
fn default_mode_text() -> String {
    "0660".into()
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            path: default_socket(),
            mode: default_mode_text(),
            privileged_uids: Vec::new(),
            max_clients: default_max_clients(),
        }
    }
}

/// The `[metrics]` table: the Prometheus endpoint (off by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `IP:port` to serve `/metrics` on (e.g. `127.0.0.1:9780`; port 0
    /// takes a free one); none: no metrics endpoint. It carries no personal
    /// data (no SSN, name or card number in any label), so it has no
    /// authentication: choose the address accordingly.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "listen_address"
    )]
    pub listen: Option<std::net::SocketAddr>,
}

/// `IP:port`, refused with the key and an example (host names are not
/// looked up: the unit allows no DNS).
fn listen_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "metrics.listen '{text}' is not an IP address and port like 127.0.0.1:9780 (host names are not looked up)"
        ))
    })
}

/// The `[fleet]` table: this box's heartbeat into its registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Seconds between two heartbeats (1..=3600; default 15). A box is
    /// listed offline after three missed ones.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            heartbeat_s: default_heartbeat_s(),
        }
    }
}

fn default_heartbeat_s() -> u32 {
    15
}

/// Longest box name, in characters.
pub const MAX_BOX_NAME: usize = 64;

/// This machine's host name (`gethostname`), the default box name;
/// `cardlink` if it has none that fits.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if rc == 0 && valid_box_name(h) => h.to_string(),
        _ => "cardlink".into(),
    }
}

/// 1 to [`MAX_BOX_NAME`] letters, digits, `.`, `-` or `_`.
fn valid_box_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_BOX_NAME
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This box's name in the fleet view (default: the host name).
    #[serde(default = "host_name")]
    pub name: String,
    /// Registry database.
    #[serde(default = "default_db")]
    pub database: Database,
    /// The key of an encrypted SQLite registry: a file of 64 hex digits
    /// (see [`crate::registry::key`]). Without it, the systemd credential
    /// `cardlink-db-key` is used when the unit loads one; without either,
    /// the registry is a plain file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_key_file: Option<PathBuf>,
    /// Window or kiosk.
    #[serde(default)]
    pub role: Station,
    /// Relations allowed for binding (default: all eight close relatives
    /// of 国办发〔2024〕38号; a province may narrow the list).
    #[serde(default = "default_relations")]
    pub relations: Vec<Relation>,
    /// Province rules of family mutual aid.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Log level filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    #[serde(default = "default_level")]
    pub log_level: String,
    /// Milliseconds a registry statement waits for another writer.
    #[serde(default = "default_busy")]
    pub busy_timeout_ms: u64,
    /// SQLite page cache of the daemon, MiB (bounds its memory).
    #[serde(default = "default_cache")]
    pub cache_mib: u32,
    /// A shared registry (PostgreSQL): read what a resolution reads into
    /// the server's cache at start and whenever a new connection reaches
    /// a server not warmed since it started, so that the first lookups
    /// after a server restart or a failover are not read from disk ([`crate::registry::pg::Postgres::prewarm`]). Ignored on
    /// SQLite.
    #[serde(default = "default_prewarm")]
    pub prewarm: bool,
    /// Where reader captures are written (0600 files).
    #[serde(default = "default_capture_dir")]
    pub capture_dir: PathBuf,
    /// Size of one capture file, MiB, before it is rotated (one older file is kept).
    #[serde(default = "default_capture_mib")]
    pub capture_max_mib: u32,
    /// The hash of a new audit chain, `"sha256"` (default) or `"sm3"`; a
    /// chain with rows keeps its own, and asking for the other is an
    /// error at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_hash: Option<crate::registry::HashAlg>,
    /// The box's sealing key (`cardlinkctl db seal init`); default for a
    /// SQLite registry: `<database>.seal` when it exists. Read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_key_file: Option<PathBuf>,
    /// Display socket.
    #[serde(default)]
    pub socket: SocketConfig,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The heartbeat into the registry.
    #[serde(default)]
    pub fleet: FleetConfig,
    /// The receipt printer; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printer: Option<PrinterConfig>,
    /// Readers.
    #[serde(default, rename = "reader")]
    pub readers: Vec<ReaderConfig>,
}

/// Baud rates a receipt printer's serial port may use: what thermal
/// printers offer (Epson TM-T88/T82 and the Chinese 58/80 mm printers'
/// DIP switches or setup utilities: 9600 the most common factory setting,
/// Epson's TM models often 38400).
pub const PRINTER_BAUDS: [u32; 8] = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200];

/// The `[printer]` table: an ESC/POS receipt printer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrinterConfig {
    /// A serial port (`/dev/ttyS0`, a udev name) or a printer-class
    /// device node (`/dev/usb/lp0`); which one is found out when opened.
    pub path: PathBuf,
    /// Serial only: baud rate, one of [`PRINTER_BAUDS`] (8N1, no flow control).
    #[serde(default = "default_printer_baud")]
    pub baud: u32,
    /// The printer's text encoding.
    #[serde(default)]
    pub encoding: crate::printer::Encoding,
    /// Seconds between two status polls (`DLE EOT 1`–`4`) while idle.
    #[serde(default = "default_status_interval_s")]
    pub status_interval_s: u64,
    /// The box's name printed on receipts; the host name when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
}

fn default_printer_baud() -> u32 {
    9600
}
fn default_status_interval_s() -> u64 {
    30
}

impl PrinterConfig {
    fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("printer.path is empty: give the printer's device".into());
        }
        if !self.path.is_absolute() {
            return Err(format!(
                "printer.path {} must be an absolute path",
                self.path.display()
            ));
        }
        if !PRINTER_BAUDS.contains(&self.baud) {
            return Err(format!(
                "printer.baud {} is not one of {PRINTER_BAUDS:?}",
                self.baud
            ));
        }
        if !(1..=3600).contains(&self.status_interval_s) {
            return Err(format!(
                "printer.status_interval_s {} out of range 1..=3600",
                self.status_interval_s
            ));
        }
        if let Some(s) = &self.station {
            if s.chars().count() > 32 || s.chars().any(char::is_control) {
                return Err("printer.station: at most 32 characters, no control characters".into());
            }
        }
        Ok(())
    }
}

fn default_db() -> Database {
    Database::Sqlite(PathBuf::from("/var/lib/cardlink/registry.db"))
}
fn default_relations() -> Vec<Relation> {
    Relation::ALL.to_vec()
}

/// The `[policy]` table: family-mutual-aid rules that differ by province.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Members one account may cover; 0: no limit (the default).
    #[serde(default)]
    pub max_members: u32,
    /// After an unbind, days before the same member may be bound to
    /// another payer; 0 (the default): at once.
    #[serde(default)]
    pub rebind_cooldown_days: u32,
    /// `province` (default: 省内共济, in force everywhere), `city` or `any`
    /// (cross-province, where a province allows it). Compares the insured
    /// regions (统筹区) of holder and member, not their birthplaces.
    #[serde(default)]
    pub scope: Scope,
    /// What an identity-card read may do: `identify`, `window` (default:
    /// a window may bind a party identified by it, a kiosk bind needs
    /// social-security cards) or `anywhere` (see [`IdCardUse`]).
    #[serde(default)]
    pub id_card: IdCardUse,
}
fn default_level() -> String {
    "info".into()
}
fn default_busy() -> u64 {
    5000
}
fn default_cache() -> u32 {
    8
}
fn default_prewarm() -> bool {
    true
}
fn default_capture_dir() -> PathBuf {
    PathBuf::from("/var/lib/cardlink/captures")
}
fn default_capture_mib() -> u32 {
    16
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    // The cause is part of the message (and so not also a `source()`,
    // which would print it twice).
    #[error("cannot read {path}: {cause}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        cause: std::io::Error,
    },
    /// TOML syntax or types.
    #[error("{path}: {cause}")]
    Parse {
        /// Path.
        path: String,
        /// Cause.
        cause: toml::de::Error,
    },
    /// A semantic problem.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.display().to_string(),
            cause,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|cause| ConfigError::Parse {
            path: origin.to_string(),
            cause,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot. The bounds (README, "Configuration"):
    ///
    /// * `database`: not empty; an existing path must be a regular file
    ///   (not a directory, not a device such as `/dev/null`).
    /// * `busy_timeout_ms` at most [`MAX_BUSY_TIMEOUT_MS`] (a minute: a
    ///   swipe waiting longer is a stuck writer, not a busy one);
    ///   `cache_mib` at most [`MAX_CACHE_MIB`].
    /// * `capture_dir`, when it exists, is a directory.
    /// * Reader names: 1 to [`MAX_READER_NAME`] letters, digits, `-` or
    ///   `_`, unique, and not [`RESERVED_READER`] (manual lookups are
    ///   reported as that reader), in any case; a reader's `path` is not
    ///   empty.
    /// * `socket.mode` gives the owner read and write and others nothing
    ///   (`0600`, `0660`; not `0000`, not `0777`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let mut names = std::collections::HashSet::new();
        for r in &self.readers {
            if r.name.is_empty()
                || r.name.len() > MAX_READER_NAME
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                // A 5,000-character name is not repeated back whole.
                let shown: String = r.name.chars().take(MAX_READER_NAME).collect();
                let more = if shown.len() < r.name.len() {
                    "…"
                } else {
                    ""
                };
                return bad(format!(
                    "reader name '{shown}{more}' must be 1 to {MAX_READER_NAME} letters, digits, '-' or '_'"
                ));
            }
            if r.name.eq_ignore_ascii_case(RESERVED_READER) {
                return bad(format!(
                    "reader name '{}' is reserved: manual lookups are reported as reader '{RESERVED_READER}'",
                    r.name
                ));
            }
            if !names.insert(&r.name) {
                return bad(format!("reader name '{}' is used twice", r.name));
            }
            if r.mode == Mode::Library {
                validate_library(r).map_err(ConfigError::Invalid)?;
            } else if r.path.as_os_str().is_empty() {
                return bad(format!("reader '{}': path is empty", r.name));
            } else if r.library.is_some() {
                return bad(format!(
                    "reader '{}': library is for mode = \"library\" only",
                    r.name
                ));
            }
            if !(300..=4_000_000).contains(&r.baud) {
                return bad(format!("reader '{}': baud {} out of range", r.name, r.baud));
            }
        }
        if !valid_box_name(&self.name) {
            let shown: String = self.name.chars().take(MAX_BOX_NAME).collect();
            return bad(format!(
                "name '{shown}' must be 1 to {MAX_BOX_NAME} letters, digits, '.', '-' or '_'"
            ));
        }
        if !(1..=3600).contains(&self.fleet.heartbeat_s) {
            return bad(format!(
                "fleet.heartbeat_s {} out of range 1..=3600",
                self.fleet.heartbeat_s
            ));
        }
        if self.relations.is_empty() {
            return bad("relations must list at least one relation".into());
        }
        if self.policy.rebind_cooldown_days > 3650 {
            return bad("policy.rebind_cooldown_days: at most 3650".into());
        }
        if self.busy_timeout_ms > MAX_BUSY_TIMEOUT_MS {
            return bad(format!(
                "busy_timeout_ms {}: at most {MAX_BUSY_TIMEOUT_MS}",
                self.busy_timeout_ms
            ));
        }
        if self.cache_mib > MAX_CACHE_MIB {
            return bad(format!(
                "cache_mib {}: at most {MAX_CACHE_MIB}",
                self.cache_mib
            ));
        }
        if let (Database::Postgres(_), Some(_)) = (&self.database, &self.database_key_file) {
            return bad("database_key_file is for a SQLite registry; a PostgreSQL server encrypts its data at rest itself (see README)".into());
        }
        if let Database::Sqlite(path) = &self.database {
            if path.as_os_str().is_empty() {
                return bad("database is empty: give a file path or a postgres:// URL".into());
            }
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => {
                    return bad(format!(
                        "database {} is a directory, not a file",
                        path.display()
                    ))
                }
                Ok(m) if !m.is_file() => {
                    return bad(format!(
                        "database {} is not a regular file (a device or a socket)",
                        path.display()
                    ))
                }
                _ => {}
            }
        }
        if self.capture_dir.exists() && !self.capture_dir.is_dir() {
            return bad(format!(
                "capture_dir {} is not a directory",
                self.capture_dir.display()
            ));
        }
        self.socket_mode()?;
        crate::logging::parse_level(&self.log_level)
            .map_err(|e| ConfigError::Invalid(format!("log_level '{}': {e}", self.log_level)))?;
        let mut paths = std::collections::HashMap::new();
        for r in &self.readers {
            // (A library reader's own bounds: `reader::library::POLL_MS`.)
            if r.mode == Mode::Idcard && !(50..=5000).contains(&r.poll_ms) {
                return bad(format!(
                    "reader '{}': poll_ms {} out of range 50..=5000",
                    r.name, r.poll_ms
                ));
            }
        }
        for r in self
            .readers
            .iter()
            .filter(|r| !r.path.as_os_str().is_empty())
        {
            // Two names for one device (a udev symlink and its target) are
            // the same reader: compare where they lead when they exist.
            let key = std::fs::canonicalize(&r.path).unwrap_or_else(|_| r.path.clone());
            if let Some(other) = paths.insert(key, &r.name) {
                return bad(format!(
                    "readers '{other}' and '{}' use the same device {}",
                    r.name,
                    r.path.display()
                ));
            }
        }
        if let Some(p) = &self.printer {
            p.validate().map_err(ConfigError::Invalid)?;
            if self.readers.iter().any(|r| r.path == p.path) {
                return bad(format!(
                    "printer.path {} is also a reader's path",
                    p.path.display()
                ));
            }
        }
        if !(1..=65_536).contains(&self.socket.max_clients) {
            return bad(format!(
                "socket.max_clients {} out of range 1..=65536",
                self.socket.max_clients
            ));
        }
        Ok(())
    }

    /// Where the registry's key comes from: `database_key_file`, else the
    /// systemd credential when this process has one; `None` for a
    /// PostgreSQL registry or a plain file.
    pub fn key_source(&self) -> Option<KeySource> {
        match self.database {
            Database::Sqlite(_) => KeySource::choose(self.database_key_file.as_deref()),
            Database::Postgres(_) => None,
        }
    }

    /// The registry's key, read and checked (see [`Config::key_source`]).
    pub fn database_key(&self) -> Result<Option<DbKey>, RegistryError> {
        self.key_source().map(|s| s.load()).transpose()
    }

    /// The binding rules this configuration sets.
    pub fn bind_policy(&self) -> BindPolicy {
        BindPolicy {
            relations: self.relations.clone(),
            max_members: self.policy.max_members,
            rebind_cooldown_days: self.policy.rebind_cooldown_days,
            scope: self.policy.scope,
        }
    }

    /// The socket file mode as a number: octal, giving the owner read and
    /// write (the daemon's own tools connect as it) and others nothing
    /// (the socket carries personal data).
    pub fn socket_mode(&self) -> Result<u32, ConfigError> {
        let mode = u32::from_str_radix(self.socket.mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "socket mode '{}' is not octal like 0660",
                    self.socket.mode
                ))
            })?;
        if mode & 0o600 != 0o600 || mode & 0o007 != 0 {
            return Err(ConfigError::Invalid(format!(
                "socket mode '{}' must give the owner read and write and others nothing (like 0660 or 0600)",
                self.socket.mode
            )));
        }
        Ok(mode)
    }

    /// The effective configuration as TOML.
    /// The effective configuration as TOML, with a registry URL's password
    /// shown as `***`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if let Database::Postgres(url) = &self.database {
            shown.database = Database::Postgres(crate::registry::pg::redact_url(url));
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// The checks `Config::validate` makes on a `mode = "library"` reader.
fn validate_library(r: &ReaderConfig) -> Result<(), String> {
    let name = &r.name;
    match &r.library {
        None => {
            return Err(format!(
                "reader '{name}': mode = \"library\" needs library = \"/path/to/the/vendor/library.so\""
            ))
        }
        Some(l) if l.as_os_str().is_empty() => {
            return Err(format!("reader '{name}': library is empty"))
        }
        Some(l) if !l.is_absolute() => {
            return Err(format!(
                "reader '{name}': library {} must be an absolute path",
                l.display()
            ))
        }
        Some(_) => {}
    }
    let within = |key: &str, v: u64, range: std::ops::RangeInclusive<u64>| {
        if range.contains(&v) {
            Ok(())
        } else {
            Err(format!(
                "reader '{name}': {key} {v} out of range {}..={}",
                range.start(),
                range.end()
            ))
        }
    };
    within("poll_ms", r.poll_ms, crate::reader::library::POLL_MS)?;
    within(
        "call_timeout_ms",
        r.call_timeout_ms,
        crate::reader::library::CALL_TIMEOUT_MS,
    )?;
    if let Some(w) = &r.workdir {
        if !w.is_absolute() {
            return Err(format!(
                "reader '{name}': workdir {} must be an absolute path",
                w.display()
            ));
        }
    }
    for k in r.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!(
                "reader '{name}': bad environment variable name '{k}'"
            ));
        }
    }
    if r.env.values().any(|v| v.contains('\0')) {
        return Err(format!(
            "reader '{name}': an environment value holds a NUL byte"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = Config::parse("[[reader]]\nname = \"w1\"\npath = \"/dev/ttyUSB0\"\n", "t").unwrap();
        assert_eq!(c.readers[0].baud, 115_200);
        assert_eq!(c.readers[0].mode, Mode::Frame);
        assert_eq!(c.role, Station::Window);
        assert_eq!(c.socket_mode().unwrap(), 0o660);
        let e = Config::parse(
            "[[reader]]\nname = \"w1\"\npath = \"/a\"\n[[reader]]\nname = \"w1\"\npath = \"/b\"\n",
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("used twice"));
        let e = Config::parse(
            "[[reader]]\nname = \"w1\"\npath = \"/a\"\nmode = \"morse\"\n",
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("morse"), "{e}");
        assert!(Config::parse("bogus = 1", "t").is_err());
        let round = Config::parse(&c.to_toml(), "t").unwrap();
        assert_eq!(round, c);
    }

    /// `[metrics] listen` takes `IP:port` and nothing else; `name` and
    /// `[fleet] heartbeat_s` have their bounds; the defaults round-trip.
    #[test]
    fn metrics_fleet_and_name() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.metrics.listen, None);
        assert_eq!(c.fleet.heartbeat_s, 15);
        assert!(!c.name.is_empty());
        let c = Config::parse(
            "name = \"kiosk-3f.b\"\n[metrics]\nlisten = \"127.0.0.1:9780\"\n[fleet]\nheartbeat_s = 2\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9780".parse().unwrap()));
        assert_eq!((c.name.as_str(), c.fleet.heartbeat_s), ("kiosk-3f.b", 2));
        assert_eq!(Config::parse(&c.to_toml(), "t").unwrap(), c);
        for bad in ["localhost:9780", "127.0.0.1", "127.0.0.1:99999", ""] {
            let e = Config::parse(&format!("[metrics]\nlisten = {bad:?}\n"), "t").unwrap_err();
            assert!(
                e.to_string().contains("metrics.listen")
                    || e.to_string().contains("socket address"),
                "{bad}: {e}"
            );
        }
        let e = Config::parse("[fleet]\nheartbeat_s = 0\n", "t").unwrap_err();
        assert!(e.to_string().contains("heartbeat_s"), "{e}");
        let e = Config::parse("name = \"a b\"\n", "t").unwrap_err();
        assert!(e.to_string().contains("name 'a b'"), "{e}");
    }

    #[test]
    fn idcard_reader_and_policy() {
        let c = Config::parse(
            "[policy]\nid_card = \"identify\"\n[[reader]]\nname = \"id1\"\npath = \"/dev/ttyUSB1\"\nmode = \"idcard\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.readers[0].mode, Mode::Idcard);
        assert_eq!((c.readers[0].baud, c.readers[0].poll_ms), (115_200, 300));
        assert_eq!(c.policy.id_card, IdCardUse::Identify);
        assert_eq!(
            Config::parse("", "t").unwrap().policy.id_card,
            IdCardUse::Window
        );
        let e = Config::parse(
            "[[reader]]\nname = \"id1\"\npath = \"/a\"\nmode = \"idcard\"\npoll_ms = 10\n",
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("poll_ms"), "{e}");
        assert!(Config::parse("[policy]\nid_card = \"always\"\n", "t").is_err());
        assert_eq!(Config::parse("", "t").unwrap().printer, None);
        assert_eq!(Config::parse(&c.to_toml(), "t").unwrap(), c);
    }

    #[test]
    fn printer_defaults_and_bad_values() {
        let c = Config::parse("[printer]\npath = \"/dev/usb/lp0\"\n", "t").unwrap();
        let p = c.printer.clone().unwrap();
        assert_eq!(
            (p.baud, p.encoding, p.status_interval_s),
            (9600, crate::printer::Encoding::Gbk, 30)
        );
        assert_eq!(Config::parse(&c.to_toml(), "t").unwrap(), c);
        let c = Config::parse(
            "[printer]\npath = \"/dev/ttyS0\"\nbaud = 38400\nencoding = \"utf-8\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.printer.unwrap().encoding, crate::printer::Encoding::Utf8);
        for (text, want) in [
            ("path = \"/dev/ttyS0\"\nbaud = 12345", "printer.baud 12345"),
            ("path = \"ttyS0\"", "absolute"),
            ("path = \"\"", "empty"),
            ("path = \"/dev/ttyS0\"\nencoding = \"big5\"", "big5"),
            (
                "path = \"/dev/ttyS0\"\nstatus_interval_s = 0",
                "status_interval_s",
            ),
            ("path = \"/dev/ttyS0\"\npaper = 1", "paper"),
            ("baud = 9600", "path"),
        ] {
            let e = Config::parse(&format!("[printer]\n{text}\n"), "t").unwrap_err();
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
    }
}
