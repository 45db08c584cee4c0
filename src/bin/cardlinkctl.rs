//! cardlinkctl: the operator's tool. See `cardlinkctl --help`.
//!
//! Argument parsing and dispatch only: the work is in `cardlink::ctl`,
//! `cardlink::client`, `cardlink::registry` and `cardlink::sim`.

use std::io::Write;
use std::path::{Path, PathBuf};
#[cfg(feature = "sim")]
use std::time::Duration;

#[cfg(feature = "sim")]
use anyhow::{bail, Context};
use cardlink::client::Client;
use cardlink::ctl;
use cardlink::protocol::{Message, Parties, Reply, Request};
#[cfg(feature = "sim")]
use cardlink::reader::{card::TextEncoding, codec::Mode};
use cardlink::registry::crypt::{self, Conversion};
use cardlink::registry::demo::{generate, CsvSink, DemoOptions};
use cardlink::registry::import::ImportError;
use cardlink::registry::key::CREDENTIAL;
use cardlink::registry::{Database, HashAlg, KeySource, Relation};
#[cfg(feature = "sim")]
use cardlink::sim::{self, SimOptions};
use clap::{Parser, Subcommand};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const DEFAULT_SOCKET: &str = "/run/cardlink/display.sock";
const DEFAULT_DB: &str = "/var/lib/cardlink/registry.db";

#[derive(Parser)]
#[command(
    version = cardlink::VERSION,
    about = "cardlink operator tool: watch events, simulate a reader, manage the registry"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate social security numbers, one line per number.
    CheckSsn {
        /// Numbers (18 characters, or 15-digit legacy numbers).
        #[arg(required = true)]
        numbers: Vec<String>,
        /// Print the full number of valid entries instead of the masked form.
        #[arg(long)]
        full: bool,
    },
    /// Manage the registry database.
    Db {
        /// The registry: a SQLite file, or a `postgres://` URL (a shared
        /// PostgreSQL registry; see README, "A shared registry").
        #[arg(long, default_value = DEFAULT_DB, value_parser = parse_database)]
        database: Database,
        /// SQLite page cache in MiB; large imports are much faster when the
        /// tables fit (10M persons: 2048).
        #[arg(long, default_value_t = 64)]
        cache_mib: i64,
        /// The hash of a new audit chain: sha256 or sm3 (GB/T 32905-2016);
        /// a chain with rows keeps its own.
        #[arg(long)]
        audit_hash: Option<HashAlg>,
        /// This box's sealing key (default for a SQLite registry:
        /// REGISTRY.seal beside it, when it exists).
        #[arg(long)]
        seal_key: Option<PathBuf>,
        /// The key of an encrypted SQLite registry: a file of 64 hex digits
        /// (`openssl rand -hex 32`), not readable by others. Without it, the
        /// systemd credential cardlink-db-key in $CREDENTIALS_DIRECTORY when
        /// there is one. For `db encrypt`: the new key.
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[command(subcommand)]
        cmd: DbCmd,
    },
    /// Live view of the daemon's events.
    Watch {
        /// Socket path.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Pass raw JSON lines through.
        #[arg(long)]
        json: bool,
    },
    #[cfg(feature = "sim")]
    /// A simulated card reader.
    Simulate {
        /// Serial device to write to (e.g. one end of a null-modem pair).
        #[arg(long, conflicts_with = "pty")]
        port: Option<PathBuf>,
        /// Create a pseudo-terminal and link its device here for the daemon to open.
        #[arg(long)]
        pty: Option<PathBuf>,
        /// frame, ssse-text, magstripe or idcard (an identity-card SAM
        /// module: each card is placed for --interval-ms, then taken away).
        #[arg(long, default_value = "frame")]
        mode: Mode,
        /// Encoding of names in IC records: gbk or utf-8.
        #[arg(long, default_value = "gbk")]
        encoding: TextEncoding,
        /// JSON-lines file of cards (fields: ssn, card_no, pan, name, issued, expires).
        #[arg(long)]
        cards: PathBuf,
        /// Line noise rate 0..1 (idcard: the share of read replies whose
        /// first sending is corrupted: bad checksum or cut short).
        #[arg(long, default_value_t = 0.0)]
        noise: f64,
        /// idcard: the SAM answers every command with this SW3 (hex, e.g.
        /// 60 or 66) for the first --interval-ms, then works.
        #[arg(long, value_parser = parse_hex_u8)]
        sam_fault: Option<u8>,
        /// Rate 0..1 of ACKs ignored (forces resends).
        #[arg(long, default_value_t = 0.0)]
        drop_acks: f64,
        /// Milliseconds between swipes.
        #[arg(long, default_value_t = 3000)]
        interval_ms: u64,
        /// Number of swipes (default: forever).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Manual entry: look up a card number or SSN.
    Lookup {
        /// Card number, SSN or bank card number.
        number: String,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Bind a family member to a holder's account.
    Bind {
        /// Holder SSN or card number.
        #[arg(long)]
        holder: String,
        /// Member SSN or card number.
        #[arg(long)]
        member: String,
        /// The member's relation to the holder (近亲属, 国办发〔2024〕38号).
        #[arg(long, value_parser = relations())]
        relation: String,
        /// Operator id.
        #[arg(long)]
        operator: Option<String>,
        /// The version of the consent statement shown to the holder
        /// (stored in the audit row).
        #[arg(long, default_value = cardlink::registry::consent::CURRENT.version)]
        consent: String,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Revoke a family link.
    Unbind {
        #[arg(long)]
        holder: String,
        #[arg(long)]
        member: String,
        #[arg(long)]
        operator: Option<String>,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Payment records of a person.
    Contributions {
        /// SSN or card number.
        number: String,
        #[arg(long, default_value_t = 12)]
        months: u32,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Reader traffic captures (PROTOCOL.md §6).
    Capture {
        #[command(subcommand)]
        cmd: CaptureCmd,
    },
    #[cfg(feature = "sim")]
    /// Play a capture back: as a reader on a new pseudo-terminal, or with
    /// --check through an in-process daemon, compared with FILE.chk.
    Replay {
        /// The capture file.
        file: PathBuf,
        /// Playback speed (2 = twice as fast).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Where the pseudo-terminal is linked (point a reader of
        /// cardlinkd's configuration at it).
        #[arg(long, default_value = "/tmp/cardlink-replay")]
        pty: PathBuf,
        /// Replay against an in-process daemon on a demo registry and compare
        /// the masked socket events with FILE.chk.
        #[arg(long)]
        check: bool,
        /// With --check: write FILE.chk instead of comparing.
        #[arg(long, requires = "check")]
        regen: bool,
        /// With --check: replay against a copy of this registry instead of
        /// the demo registry.
        #[arg(long, requires = "check")]
        database: Option<PathBuf>,
        /// Text modes: milliseconds to give cardlinkd to open the new
        /// pseudo-terminal before playing (frame mode waits for its first
        /// bytes instead).
        #[arg(long, default_value_t = 5500)]
        text_start_ms: u64,
    },
    /// The boxes sharing a registry: name, role, release, readers up,
    /// last read, uptime, last heartbeat; offline after three missed.
    Fleet {
        /// The registry: a SQLite file, or a `postgres://` URL.
        #[arg(long, default_value = DEFAULT_DB, value_parser = parse_database)]
        database: Database,
        /// Print a JSON document instead of the table.
        #[arg(long)]
        json: bool,
        /// The key of an encrypted SQLite registry (as for `db`); without
        /// it, the systemd credential cardlink-db-key when there is one.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Daemon status: readers, state, counts, firmware, role, uptime.
    Status {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
    },
    #[cfg(feature = "sim")]
    /// Run the whole system on a demo registry with a simulated reader and a display.
    Demo {
        /// Persons in the demo registry.
        #[arg(long, default_value_t = 5000)]
        persons: u64,
        /// Seconds between swipes.
        #[arg(long, default_value_t = 3)]
        every: u64,
        /// Working directory (default: a new temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where cardlink-display serves the screen.
        #[arg(long, default_value = "127.0.0.1:8780")]
        display_listen: std::net::SocketAddr,
        /// The simulated receipt printer's state: ok, paper_near_end,
        /// paper_end, cover_open, offline, error.
        #[arg(long, default_value = "ok", value_parser = parse_printer_state)]
        printer_state: cardlink::printer::PrinterState,
    },
}

#[cfg(feature = "sim")]
fn parse_printer_state(s: &str) -> Result<cardlink::printer::PrinterState, String> {
    cardlink::printer::PrinterState::parse(s).ok_or_else(|| {
        format!("'{s}': one of ok, paper_near_end, paper_end, cover_open, offline, error")
    })
}

#[derive(Subcommand)]
enum CaptureCmd {
    /// Record a reader's raw traffic for some minutes (privileged clients).
    Start {
        /// Reader name, as in the configuration.
        #[arg(long)]
        reader: String,
        /// Minutes to record.
        #[arg(long, default_value_t = 10)]
        minutes: u32,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Replace every SSN, name, card number and PAN in a capture with
    /// consistent synthetic ones (valid check characters, same length and
    /// encoding), wherever they stand, so that it can be shared; nothing is
    /// written while anything shaped like personal data is left.
    Redact {
        /// The capture as recorded.
        input: PathBuf,
        /// The redacted capture to write (mode 0600).
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum DbCmd {
    /// Create or upgrade the schema.
    Init,
    /// Import CSV files (persons, cards, links, accounts, contributions) all-or-nothing.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Export every table as CSV into a directory, and the audit log as
    /// audit.csv (not an import file).
    Export { dir: PathBuf },
    /// List the audit log in chain order (SSNs masked unless --full); a
    /// bind's row names the consent statement version (consent=…).
    Audit {
        /// Only rows of this action (resolve, bind, unbind, …).
        #[arg(long)]
        action: Option<String>,
        /// Full SSNs (personal data: for an auditor, not for a screen).
        #[arg(long)]
        full: bool,
    },
    /// Row counts.
    Stats,
    /// Verify the audit hash chain; with --verify-key, also every box's
    /// forward-secure seals. Exit status: 0 intact, 1 chain broken
    /// (unsealed check), 3 edited row, 4 deleted rows, 5 rows cut from the
    /// end, 6 chain recomputed, 7 sealing key missing, 8 forged seal or key.
    VerifyAudit {
        /// An auditor's verification key (one per box; repeat for several).
        #[arg(long)]
        verify_key: Vec<PathBuf>,
        /// A box's sealing key file, read for how far the box got (its
        /// index; checked against the verification key). Default for a
        /// SQLite registry: REGISTRY.seal (or --seal-key).
        #[arg(long)]
        key_state: Vec<PathBuf>,
    },
    /// Forward-secure sealing of the audit log.
    #[command(subcommand)]
    Seal(SealCmd),
    /// Check the database: SQLite integrity, foreign keys, the read model, audit chain.
    Check,
    /// Rebuild the read model (the `resolution` table) where it differs
    /// from the tables, e.g. after an edit with the sqlite3 shell; report
    /// what changed.
    Repair,
    /// Copy a registry into a new, empty one on the other backend (SQLite
    /// to PostgreSQL or back), audit chain included; `--database` is not
    /// used.
    Migrate {
        /// The registry to copy (file path or postgres:// URL).
        #[arg(long, value_parser = parse_database)]
        from: Database,
        /// The new registry (file path or postgres:// URL); must be empty.
        #[arg(long, value_parser = parse_database)]
        to: Database,
    },
    /// Encrypt a plain SQLite registry in place with the key of
    /// --key-file (SQLCipher); audited. Stop cardlinkd first.
    Encrypt,
    /// Decrypt an encrypted SQLite registry (key: --key-file): in place, or
    /// with --out into a plain copy (for inspection with sqlite3; shred it
    /// after); audited.
    Decrypt {
        /// Write a plain copy here (a new file in a directory others
        /// cannot enter, e.g. made with `install -d -m 0700`) and leave
        /// the registry encrypted.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Give an encrypted SQLite registry a new key (the old one:
    /// --key-file); audited. Stop cardlinkd first.
    Rekey {
        /// The new key: a file of 64 hex digits, not readable by others.
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Write a deterministic synthetic registry.
    GenDemo {
        #[arg(long, default_value_t = 5000)]
        persons: u64,
        #[arg(long, default_value_t = 12)]
        months: u32,
        #[arg(long, default_value_t = 20261125)]
        seed: u64,
        /// Write CSV files into this directory instead of the database.
        #[arg(long)]
        csv: Option<PathBuf>,
        #[cfg(feature = "sim")]
        /// Also write a JSON-lines file of sample cards for `simulate`.
        #[arg(long)]
        sample_cards: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SealCmd {
    /// Create this box's sealing key (--seal-key, default REGISTRY.seal;
    /// 0600) and write the auditor's verification key once; seal from now on.
    Init {
        /// Where to write the verification key (a new file, 0600): take it
        /// off the box and keep it with the auditor.
        #[arg(long)]
        out: PathBuf,
        /// This box's id in the registry (default: the host name).
        #[arg(long = "box")]
        box_id: Option<String>,
    },
}

/// Every relation the registry knows, for `bind --relation`.
fn relations() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Relation::ALL.map(Relation::as_str))
}

fn parse_database(s: &str) -> Result<Database, String> {
    Ok(Database::parse(s))
}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "cardlinkctl: {}",
                cardlink::logging::error_chain(e.as_ref())
            );
            2
        }
    };
    std::process::exit(code);
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A token cancelled by Ctrl-C.
fn ctrl_c() -> CancellationToken {
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    stop
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::CheckSsn { numbers, full } => {
            let mut bad = false;
            for n in &numbers {
                let (line, ok) = ctl::check_ssn_line(n, full);
                println!("{line}");
                bad |= !ok;
            }
            Ok(i32::from(bad))
        }
        Cmd::Db {
            database,
            cache_mib,
            audit_hash,
            seal_key,
            key_file,
            cmd,
        } => db(
            &database,
            cache_mib,
            key_file.as_deref(),
            &ctl::DbOptions {
                key: None,
                audit_hash,
                seal_key,
            },
            cmd,
        ),
        Cmd::Watch { socket, json } => runtime()?.block_on(async {
            let stop = ctrl_c();
            ctl::watch(&socket, json, &mut std::io::stdout(), &stop).await?;
            Ok(0)
        }),
        #[cfg(feature = "sim")]
        Cmd::Simulate {
            port,
            pty,
            mode,
            encoding,
            cards,
            noise,
            sam_fault,
            drop_acks,
            interval_ms,
            count,
        } => {
            let cards =
                sim::load_cards(&cards).with_context(|| format!("reading {}", cards.display()))?;
            let opts = SimOptions {
                mode,
                encoding,
                noise,
                drop_acks,
                interval: Duration::from_millis(interval_ms),
                count,
                seed: 1,
                sam_fault,
            };
            let target = match (port, pty) {
                (_, Some(link)) => ctl::SimTarget::Pty(link),
                (Some(port), None) => ctl::SimTarget::Port(port),
                (None, None) => bail!("give --port PATH or --pty LINK"),
            };
            runtime()?.block_on(ctl::simulate(target, &cards, &opts))?;
            Ok(0)
        }
        Cmd::Lookup { number, socket } => request(
            &socket,
            Request::Lookup {
                id: Value::Null,
                number,
            },
        ),
        Cmd::Bind {
            holder,
            member,
            relation,
            operator,
            consent,
            socket,
        } => request(
            &socket,
            Request::Bind {
                id: Value::Null,
                parties: Parties {
                    holder: Some(holder),
                    member: Some(member),
                    ..Parties::default()
                },
                relation,
                operator,
                consent: Some(consent),
            },
        ),
        Cmd::Unbind {
            holder,
            member,
            operator,
            socket,
        } => request(
            &socket,
            Request::Unbind {
                id: Value::Null,
                parties: Parties {
                    holder: Some(holder),
                    member: Some(member),
                    ..Parties::default()
                },
                operator,
            },
        ),
        Cmd::Contributions {
            number,
            months,
            socket,
        } => request(
            &socket,
            Request::Contributions {
                id: Value::Null,
                number: Some(number),
                swipe: None,
                months: Some(months),
            },
        ),
        Cmd::Capture {
            cmd:
                CaptureCmd::Start {
                    reader,
                    minutes,
                    socket,
                },
        } => request(
            &socket,
            Request::Capture {
                id: Value::Null,
                reader,
                minutes: Some(minutes),
            },
        ),
        Cmd::Capture {
            cmd: CaptureCmd::Redact { input, output },
        } => {
            println!("{}", ctl::redact_capture(&input, &output)?);
            Ok(0)
        }
        #[cfg(feature = "sim")]
        Cmd::Replay {
            file,
            speed,
            pty,
            check,
            regen,
            database,
            text_start_ms,
        } => {
            if check {
                // Paused time: the capture's timing passes in virtual time
                // and the check ends when the daemon is idle.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .start_paused(true)
                    .build()?;
                let outcome = rt.block_on(ctl::replay_check(&file, regen, database.as_deref()))?;
                return Ok(match outcome {
                    ctl::CheckOutcome::Match(n) => {
                        println!("{}: {n} events match", file.display());
                        0
                    }
                    ctl::CheckOutcome::Written(n) => {
                        println!("{}.chk: {n} events written", file.display());
                        0
                    }
                    ctl::CheckOutcome::Differ(d) => {
                        println!("{}: events differ from the .chk\n{d}", file.display());
                        1
                    }
                });
            }
            let r = runtime()?.block_on(ctl::replay_pty(
                &file,
                &pty,
                speed,
                std::time::Duration::from_millis(text_start_ms),
            ))?;
            eprintln!(
                "replay: {} chunks, {} bytes written, {} bytes from the host, {} unplug(s)",
                r.chunks, r.bytes, r.host_bytes, r.unplugs
            );
            Ok(0)
        }
        Cmd::Fleet {
            database,
            json,
            key_file,
        } => {
            // As for `db`: the key applies to a SQLite registry; a
            // PostgreSQL one with --key-file is refused when opened.
            let source = match &database {
                Database::Sqlite(_) => KeySource::choose(key_file.as_deref()),
                Database::Postgres(_) => key_file.map(KeySource::File),
            };
            let key = source.as_ref().map(KeySource::load).transpose()?;
            let boxes = ctl::fleet(&database, key)?;
            if json {
                println!("{}", ctl::fleet_json(&boxes));
            } else {
                print!("{}", ctl::fleet_text(&boxes));
            }
            Ok(0)
        }
        Cmd::Status { socket, json } => {
            if json {
                return request(&socket, Request::Status { id: Value::Null });
            }
            let status =
                runtime()?.block_on(async { Client::connect(&socket).await?.status().await })?;
            print!("{}", ctl::status_text(&status));
            Ok(0)
        }
        #[cfg(feature = "sim")]
        Cmd::Demo {
            persons,
            every,
            dir,
            display_listen,
            printer_state,
        } => {
            let exe = std::env::current_exe()?;
            let demo = ctl::Demo {
                persons,
                every,
                dir: dir.unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("cardlink-demo-{}", std::process::id()))
                }),
                daemon: exe.with_file_name("cardlinkd"),
                display: exe.with_file_name("cardlink-display"),
                display_listen,
                printer_state,
            };
            runtime()?.block_on(async {
                let stop = ctrl_c();
                ctl::demo(&demo, &mut std::io::stdout(), &stop).await
            })?;
            Ok(0)
        }
    }
}

/// `cardlinkctl db …`; `audit` without its key, which comes from
/// `key_file` or the systemd credential.
fn db(
    path: &Database,
    cache_mib: i64,
    key_file: Option<&Path>,
    audit: &ctl::DbOptions,
    cmd: DbCmd,
) -> anyhow::Result<i32> {
    // The key's source (an explicit file, else the systemd credential)
    // applies to a SQLite registry only; a PostgreSQL registry with
    // --key-file is refused when it is opened.
    let source = match path {
        Database::Sqlite(_) => KeySource::choose(key_file),
        Database::Postgres(_) => key_file.map(|f| KeySource::File(f.to_path_buf())),
    };
    let key = || source.as_ref().map(KeySource::load).transpose();
    let opts = || -> anyhow::Result<ctl::DbOptions> {
        Ok(ctl::DbOptions {
            key: key()?,
            ..audit.clone()
        })
    };
    let open = || -> anyhow::Result<_> { Ok(ctl::open_registry_with(path, cache_mib, &opts()?)?) };
    let file = || {
        path.path().ok_or_else(|| {
            anyhow::anyhow!(
                "{path} is PostgreSQL; encrypting it at rest is the server's job (see README)"
            )
        })
    };
    let need = |what: &str| {
        key()?.ok_or_else(|| {
            anyhow::anyhow!("give the {what} with --key-file (or the credential {CREDENTIAL})")
        })
    };
    match cmd {
        DbCmd::Encrypt => {
            let out = crypt::convert(
                file()?,
                &Conversion::Encrypt {
                    key: need("new key")?,
                },
                "cardlinkctl",
            )?;
            println!("{}: encrypted", out.display());
        }
        DbCmd::Decrypt { out } => {
            let done = crypt::convert(
                file()?,
                &Conversion::Decrypt {
                    key: need("registry's key")?,
                    out,
                },
                "cardlinkctl",
            )?;
            println!("{}: decrypted (a plain SQLite file)", done.display());
        }
        DbCmd::Rekey { new_key_file } => {
            let new = KeySource::File(new_key_file).load()?;
            let out = crypt::convert(
                file()?,
                &Conversion::Rekey {
                    old: need("registry's current key")?,
                    new,
                },
                "cardlinkctl",
            )?;
            println!("{}: key changed", out.display());
        }
        DbCmd::Init => {
            let reg = open()?;
            println!(
                "{path}: {} schema version {}",
                reg.backend_name(),
                reg.schema_version()?
            );
        }
        DbCmd::Migrate { from, to } => {
            // The key (if any) is the SQLite end's.
            let m = ctl::migrate_with(&from, &to, "cardlinkctl migrate", &opts()?)?;
            let c = m.counts;
            println!(
                "copied {from} to {to}: {} persons, {} cards, {} links, {} accounts, {} contributions, {} audit rows (chain verified)",
                c.persons, c.cards, c.links, c.accounts, c.contributions, m.audit_rows
            );
        }
        DbCmd::Import { files } => {
            let mut reg = open()?;
            match reg.import(&files, "cardlinkctl") {
                Ok(c) => println!(
                    "imported {} persons, {} cards, {} links, {} accounts, {} contributions",
                    c.persons, c.cards, c.links, c.accounts, c.contributions
                ),
                Err(ImportError::BadRows { rows, total }) => {
                    for r in &rows {
                        eprintln!("{r}");
                    }
                    eprintln!(
                        "{total} bad row(s) ({} listed); nothing imported",
                        rows.len()
                    );
                    return Ok(1);
                }
                Err(e) => return Err(e.into()),
            }
        }
        DbCmd::Export { dir } => {
            let reg = open()?;
            let c = reg.export(&dir)?;
            let audit = ctl::export_audit(&reg, &dir)?;
            println!(
                "exported {} persons, {} cards, {} links, {} accounts, {} contributions, {} audit rows to {}",
                c.persons,
                c.cards,
                c.links,
                c.accounts,
                c.contributions,
                audit,
                dir.display()
            );
        }
        DbCmd::Audit { action, full } => {
            let reg = open()?;
            let stdout = std::io::stdout();
            ctl::audit_lines(&reg, action.as_deref(), full, &mut stdout.lock())?;
        }
        DbCmd::Stats => println!("{}", serde_json::to_string_pretty(&open()?.stats()?)?),
        DbCmd::VerifyAudit {
            verify_key,
            key_state,
        } => {
            let mut key_state = key_state;
            if key_state.is_empty() {
                key_state.extend(audit.seal_key.clone());
            }
            // Read only: a missing sealing key must not stop the check.
            let reg = cardlink::registry::Registry::open_database(
                path,
                &cardlink::registry::OpenOptions {
                    read_only: path.path().is_none_or(|p| p.exists()),
                    cache_kib: cache_mib.max(1) * 1024,
                    key: key()?,
                    ..Default::default()
                },
            )?;
            let (lines, status) = ctl::verify_audit(&reg, path, &verify_key, &key_state)?;
            for l in &lines {
                println!("{l}");
            }
            return Ok(status);
        }
        DbCmd::Seal(SealCmd::Init { out, box_id }) => {
            let key = match (&audit.seal_key, path.path()) {
                (Some(k), _) => k.clone(),
                (None, Some(p)) => cardlink::registry::seal::default_key_path(p),
                (None, None) => anyhow::bail!(
                    "a PostgreSQL registry has no place beside it: give this box's key file with --seal-key"
                ),
            };
            let box_id = box_id.unwrap_or_else(ctl::default_box_id);
            // Opened without a key: the key is made here.
            let mut reg = ctl::open_registry_with(
                path,
                cache_mib,
                &ctl::DbOptions {
                    seal_key: None,
                    ..opts()?
                },
            )?;
            reg.seal_init(&key, &out, &box_id, "cardlinkctl")?;
            println!(
                "box {box_id} seals the audit log of {path} ({}) from now on; sealing key {} (keep it on the box, 0600); verification key {} (take it off the box, to the auditor)",
                reg.audit_hash(),
                key.display(),
                out.display()
            );
        }
        DbCmd::Check => {
            let problems = ctl::check_registry(&open()?)?;
            if problems.is_empty() {
                println!("{path}: OK");
            } else {
                for p in &problems {
                    println!("{p}");
                }
                return Ok(1);
            }
        }
        DbCmd::Repair => {
            let r = open()?.repair("cardlinkctl")?;
            println!("{}", ctl::repair_text(&r));
        }
        DbCmd::GenDemo {
            persons,
            months,
            seed,
            csv,
            #[cfg(feature = "sim")]
            sample_cards,
        } => {
            let opts = DemoOptions {
                persons,
                months,
                seed,
            };
            if let Some(dir) = csv {
                let mut sink = CsvSink::create(&dir)?;
                generate(&opts, &mut sink)?;
                sink.finish()?;
                println!("wrote demo CSV for {persons} persons to {}", dir.display());
            } else {
                let mut reg = open()?;
                reg.gen_demo(&opts)?;
                println!("{path}: {}", serde_json::to_string(&reg.stats()?)?);
                #[cfg(feature = "sim")]
                if let Some(out) = sample_cards {
                    let n = ctl::write_sample_cards(&reg, &out)?;
                    println!("wrote {n} sample cards to {}", out.display());
                }
            }
        }
    }
    Ok(0)
}

/// Sends one request; prints the reply as JSON; exit status 1 on a refusal.
fn request(socket: &Path, req: Request) -> anyhow::Result<i32> {
    let reply: Reply = runtime()?.block_on(async {
        let c = Client::connect(socket).await?;
        c.request(req).await
    })?;
    let ok = reply.ok;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&Message::Reply(reply))?
    )?;
    Ok(if ok { 0 } else { 1 })
}

#[cfg(feature = "sim")]
fn parse_hex_u8(s: &str) -> Result<u8, String> {
    u8::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("'{s}': {e}"))
}
