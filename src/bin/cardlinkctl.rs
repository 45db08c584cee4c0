//! cardlinkctl: the operator's tool. See `cardlinkctl --help`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use cardlink::codec::Mode;
use cardlink::registry::demo::{generate, CsvSink, DemoOptions};
use cardlink::registry::import::ImportError;
use cardlink::registry::{OpenOptions, Registry};
use cardlink::sim::{self, PtyMaster, SimCard, SimOptions};
use cardlink::Ssn;
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const DEFAULT_SOCKET: &str = "/run/cardlink/display.sock";
const DEFAULT_DB: &str = "/var/lib/cardlink/registry.db";

#[derive(Parser)]
#[command(
    version,
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
        /// Database file.
        #[arg(long, default_value = DEFAULT_DB)]
        database: PathBuf,
        /// SQLite page cache in MiB; large imports are much faster when the
        /// tables fit (10M persons: 2048).
        #[arg(long, default_value_t = 64)]
        cache_mib: i64,
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
    /// A simulated card reader.
    Simulate {
        /// Serial device to write to (e.g. one end of a null-modem pair).
        #[arg(long, conflicts_with = "pty")]
        port: Option<PathBuf>,
        /// Create a pseudo-terminal and link its device here for the daemon to open.
        #[arg(long)]
        pty: Option<PathBuf>,
        /// frame, ssse-text or magstripe.
        #[arg(long, default_value = "frame")]
        mode: Mode,
        /// Encoding of names in IC records: gbk or utf-8.
        #[arg(long, default_value = "gbk")]
        encoding: cardlink::card::TextEncoding,
        /// JSON-lines file of cards (fields: ssn, card_no, pan, name, issued, expires).
        #[arg(long)]
        cards: PathBuf,
        /// Line noise rate 0..1.
        #[arg(long, default_value_t = 0.0)]
        noise: f64,
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
        /// spouse, parent, child.
        #[arg(long)]
        relation: String,
        /// Operator id.
        #[arg(long)]
        operator: Option<String>,
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
    /// Daemon status: readers, uptime, counts.
    Status {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
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
    /// Export every table as CSV into a directory.
    Export { dir: PathBuf },
    /// Row counts.
    Stats,
    /// Verify the audit hash chain.
    VerifyAudit,
    /// Check the database: SQLite integrity, foreign keys, resolution copies, audit chain.
    Check,
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
        /// Also write a JSON-lines file of sample cards for `simulate`.
        #[arg(long)]
        sample_cards: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cardlinkctl: {e:#}");
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

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::CheckSsn { numbers, full } => Ok(check_ssn(&numbers, full)),
        Cmd::Db {
            database,
            cache_mib,
            cmd,
        } => db(&database, cache_mib, cmd),
        Cmd::Watch { socket, json } => runtime()?.block_on(watch(&socket, json, None)).map(|_| 0),
        Cmd::Simulate {
            port,
            pty,
            mode,
            encoding,
            cards,
            noise,
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
            };
            runtime()?
                .block_on(simulate(port, pty, cards, opts))
                .map(|_| 0)
        }
        Cmd::Lookup { number, socket } => {
            request(&socket, json!({"cmd": "lookup", "number": number}))
        }
        Cmd::Bind {
            holder,
            member,
            relation,
            operator,
            socket,
        } => request(
            &socket,
            json!({"cmd": "bind", "holder": holder, "member": member, "relation": relation, "operator": operator}),
        ),
        Cmd::Unbind {
            holder,
            member,
            operator,
            socket,
        } => request(
            &socket,
            json!({"cmd": "unbind", "holder": holder, "member": member, "operator": operator}),
        ),
        Cmd::Contributions {
            number,
            months,
            socket,
        } => request(
            &socket,
            json!({"cmd": "contributions", "number": number, "months": months}),
        ),
        Cmd::Status { socket } => request(&socket, json!({"cmd": "status"})),
        Cmd::Demo {
            persons,
            every,
            dir,
        } => demo(persons, every, dir),
    }
}

fn check_ssn(numbers: &[String], full: bool) -> i32 {
    let mut bad = 0;
    for n in numbers {
        let n = n.trim();
        let parsed = if n.len() == 15 {
            Ssn::from_legacy15(n)
        } else {
            Ssn::parse(n)
        };
        let shown = cardlink::mask::identifier(n);
        match parsed {
            Ok(s) if full => println!("{}: valid", s.expose()),
            Ok(s) if n.len() == 15 => println!("{shown}: valid (18-digit form {s})"),
            Ok(s) => println!("{s}: valid"),
            Err(e) => {
                bad += 1;
                println!("{shown}: invalid: {e}");
            }
        }
    }
    i32::from(bad > 0)
}

fn open_db(path: &Path) -> anyhow::Result<Registry> {
    open_db_with(path, 64)
}

fn open_db_with(path: &Path, cache_mib: i64) -> anyhow::Result<Registry> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let opts = OpenOptions {
        cache_kib: cache_mib.max(1) * 1024,
        ..OpenOptions::default()
    };
    Ok(Registry::open(path, &opts)?)
}

fn db(path: &Path, cache_mib: i64, cmd: DbCmd) -> anyhow::Result<i32> {
    let open_db = |p: &Path| open_db_with(p, cache_mib);
    match cmd {
        DbCmd::Init => {
            let reg = open_db(path)?;
            println!(
                "{}: schema version {}",
                path.display(),
                reg.schema_version()?
            );
        }
        DbCmd::Import { files } => {
            let mut reg = open_db(path)?;
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
            let reg = open_db(path)?;
            let c = reg.export(&dir)?;
            println!(
                "exported {} persons, {} cards, {} links, {} accounts, {} contributions to {}",
                c.persons,
                c.cards,
                c.links,
                c.accounts,
                c.contributions,
                dir.display()
            );
        }
        DbCmd::Stats => {
            let reg = open_db(path)?;
            println!("{}", serde_json::to_string_pretty(&reg.stats()?)?);
        }
        DbCmd::VerifyAudit => {
            let reg = open_db(path)?;
            let v = reg.verify_audit()?;
            match v.broken {
                None => println!("audit chain intact: {} rows", v.rows),
                Some((id, why)) => {
                    println!("audit chain BROKEN at row {id}: {why}");
                    return Ok(1);
                }
            }
        }
        DbCmd::Check => {
            let reg = open_db(path)?;
            let mut problems = reg.integrity()?;
            let copies = reg.copy_mismatches()?;
            if copies > 0 {
                problems.push(format!(
                    "{copies} row(s) whose resolution copies disagree with their source"
                ));
            }
            if let Some((id, why)) = reg.verify_audit()?.broken {
                problems.push(format!("audit chain broken at row {id}: {why}"));
            }
            if problems.is_empty() {
                println!("{}: OK", path.display());
            } else {
                for p in &problems {
                    println!("{p}");
                }
                return Ok(1);
            }
        }
        DbCmd::GenDemo {
            persons,
            months,
            seed,
            csv,
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
                let mut reg = open_db(path)?;
                reg.gen_demo(&opts)?;
                println!(
                    "{}: {}",
                    path.display(),
                    serde_json::to_string(&reg.stats()?)?
                );
                if let Some(out) = sample_cards {
                    let n = write_sample_cards(&reg, &out)?;
                    println!("wrote {n} sample cards to {}", out.display());
                }
            }
        }
    }
    Ok(0)
}

/// Picks cards that show every outcome: holders, members, unlinked, lost,
/// frozen, expired, plus one card unknown to the registry.
fn write_sample_cards(reg: &Registry, out: &Path) -> anyhow::Result<usize> {
    let c = reg.connection();
    let queries = [
        "SELECT c.ssn, c.card_no, c.pan, p.name, c.issued, c.expires FROM cards c JOIN persons p ON p.ssn=c.ssn WHERE c.status='active' AND c.expires > date('now') AND c.ssn IN (SELECT holder_ssn FROM family_links WHERE status='active') LIMIT 4",
        "SELECT c.ssn, c.card_no, c.pan, p.name, c.issued, c.expires FROM cards c JOIN persons p ON p.ssn=c.ssn WHERE c.status='active' AND c.expires > date('now') AND c.ssn IN (SELECT member_ssn FROM family_links WHERE status='active') LIMIT 4",
        "SELECT c.ssn, c.card_no, c.pan, p.name, c.issued, c.expires FROM cards c JOIN persons p ON p.ssn=c.ssn WHERE c.status='active' AND c.expires > date('now') AND c.ssn NOT IN (SELECT holder_ssn FROM family_links) AND c.ssn NOT IN (SELECT member_ssn FROM family_links) LIMIT 2",
        "SELECT c.ssn, c.card_no, c.pan, p.name, c.issued, c.expires FROM cards c JOIN persons p ON p.ssn=c.ssn WHERE c.status IN ('lost','frozen') LIMIT 2",
        "SELECT c.ssn, c.card_no, c.pan, p.name, c.issued, c.expires FROM cards c JOIN persons p ON p.ssn=c.ssn WHERE c.status='active' AND c.expires < date('now') LIMIT 1",
    ];
    let mut groups: Vec<Vec<SimCard>> = Vec::new();
    for q in queries {
        let mut st = c.prepare(q)?;
        let rows = st.query_map([], |r| {
            let d = |s: String| s.replace('-', "");
            Ok(SimCard {
                ssn: r.get(0)?,
                card_no: r.get(1)?,
                pan: r.get(2)?,
                name: r.get(3)?,
                issued: d(r.get(4)?),
                expires: d(r.get(5)?),
            })
        })?;
        groups.push(rows.collect::<Result<_, _>>()?);
    }
    groups.push(vec![SimCard {
        ssn: "11010519491231002X".into(),
        card_no: "Z99999999".into(),
        pan: None,
        name: "未登记".into(),
        issued: "20200101".into(),
        expires: "20300101".into(),
    }]);
    // Round-robin over the groups so a demo shows every outcome early.
    let longest = groups.iter().map(Vec::len).max().unwrap_or(0);
    let cards: Vec<&SimCard> = (0..longest)
        .flat_map(|k| groups.iter().filter_map(move |g| g.get(k)))
        .collect();
    let mut f = std::fs::File::create(out)?;
    for card in &cards {
        writeln!(f, "{}", serde_json::to_string(card)?)?;
    }
    Ok(cards.len())
}

async fn connect(socket: &Path) -> anyhow::Result<UnixStream> {
    UnixStream::connect(socket).await.with_context(|| {
        format!(
            "cannot connect to {} (is cardlinkd running?)",
            socket.display()
        )
    })
}

fn request(socket: &Path, mut req: Value) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        req["id"] = json!(1);
        let stream = connect(socket).await?;
        let (r, mut w) = stream.into_split();
        let mut line = serde_json::to_vec(&req)?;
        line.push(b'\n');
        w.write_all(&line).await?;
        let mut lines = BufReader::new(r).lines();
        while let Some(l) = lines.next_line().await? {
            let v: Value = serde_json::from_str(&l)?;
            if v["class"] == "REPLY" && v["id"] == json!(1) {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(if v["ok"] == json!(true) { 0 } else { 1 });
            }
            if v["class"] == "ERROR" {
                eprintln!("{}", v["message"]);
            }
        }
        bail!("daemon closed the connection without replying")
    })
}

fn yuan(fen: &Value) -> String {
    fen.as_i64()
        .map_or("-".into(), |f| format!("¥{}.{:02}", f / 100, f % 100))
}

fn human(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    match v["class"].as_str() {
        Some("VERSION") => format!(
            "connected to cardlinkd {} (protocol {})",
            s("release"),
            v["proto"]
        ),
        Some("READER") => format!("reader {:<10} {} ({})", s("reader"), s("state"), s("path")),
        Some("ERROR") => format!("error  {}: {}", s("code"), s("message")),
        Some("CARD") => {
            let mut out = format!(
                "card   {:<10} #{} {:<9} {} {} card {}  => {}",
                s("reader"),
                v["swipe"],
                s("source"),
                s("name"),
                s("ssn"),
                s("card_no"),
                s("outcome").to_uppercase()
            );
            if v["outcome"] == "ok" {
                match v["role"].as_str() {
                    Some("holder") => {
                        out += &format!(
                            "\n       account holder, balance {}, covers:",
                            yuan(&v["balance_fen"])
                        );
                        for m in v["members"].as_array().into_iter().flatten() {
                            out += &format!(
                                "\n         - {} {} ({})",
                                m["name"].as_str().unwrap_or("-"),
                                m["ssn"].as_str().unwrap_or("-"),
                                m["relation"].as_str().unwrap_or("-")
                            );
                        }
                    }
                    Some("member") => {
                        let p = &v["payer"];
                        out += &format!(
                            "\n       paid by {} {} ({} of the holder), balance {}",
                            p["name"].as_str().unwrap_or("-"),
                            p["ssn"].as_str().unwrap_or("-"),
                            p["relation"].as_str().unwrap_or("-"),
                            yuan(&p["balance_fen"])
                        );
                    }
                    _ => {
                        out += &format!(
                            "\n       pays for themself, balance {}",
                            yuan(&v["balance_fen"])
                        )
                    }
                }
            }
            out
        }
        _ => v.to_string(),
    }
}

async fn watch(
    socket: &Path,
    raw: bool,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(200);
    loop {
        match connect(socket).await {
            Ok(stream) => {
                delay = Duration::from_millis(200);
                let mut lines = BufReader::new(stream).lines();
                let mut out = std::io::stdout();
                while let Some(l) = lines.next_line().await? {
                    if raw {
                        writeln!(out, "{l}")?;
                    } else {
                        match serde_json::from_str::<Value>(&l) {
                            Ok(v) => writeln!(out, "{}", human(&v))?,
                            Err(_) => writeln!(out, "{l}")?,
                        }
                    }
                    out.flush()?;
                }
                eprintln!("cardlinkctl: daemon closed the connection; reconnecting");
            }
            Err(e) if stop.is_none() && delay >= Duration::from_secs(2) => return Err(e),
            Err(_) => {}
        }
        if stop.as_ref().is_some_and(|s| *s.borrow()) {
            return Ok(());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn simulate(
    port: Option<PathBuf>,
    pty: Option<PathBuf>,
    cards: Vec<SimCard>,
    opts: SimOptions,
) -> anyhow::Result<()> {
    let log = |n: u64, c: &SimCard| {
        eprintln!(
            "simulate: swipe {n}: card {}",
            cardlink::mask::card_no(&c.card_no)
        )
    };
    let report = if let Some(link) = pty {
        let master = PtyMaster::open(Some(&link))?;
        eprintln!(
            "simulate: reader on {} -> {}",
            link.display(),
            master.slave_path().display()
        );
        sim::run(master, &cards, &opts, log).await?
    } else if let Some(port) = port {
        use tokio_serial::SerialPortBuilderExt;
        let stream = tokio_serial::new(port.to_string_lossy(), 115_200).open_native_async()?;
        sim::run(stream, &cards, &opts, log).await?
    } else {
        bail!("give --port PATH or --pty LINK");
    };
    eprintln!("simulate: {report:?}");
    Ok(())
}

fn demo(persons: u64, every: u64, dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let tmp = tempfile_dir(dir)?;
    let db = tmp.join("registry.db");
    let cards = tmp.join("cards.jsonl");
    let socket = tmp.join("display.sock");
    let link = tmp.join("reader0");
    if !db.exists() {
        eprintln!(
            "demo: generating a registry of {persons} persons in {}",
            db.display()
        );
        let mut reg = open_db(&db)?;
        reg.gen_demo(&DemoOptions {
            persons,
            ..DemoOptions::default()
        })?;
        write_sample_cards(&reg, &cards)?;
    }
    let config = tmp.join("cardlinkd.toml");
    std::fs::write(
        &config,
        format!(
            "database = {:?}\nrole = \"window\"\n\n[socket]\npath = {:?}\nmode = \"0600\"\n\n[[reader]]\nname = \"demo\"\npath = {:?}\nmode = \"frame\"\n",
            db, socket, link
        ),
    )?;
    let rt = runtime()?;
    rt.block_on(async {
        let master = PtyMaster::open(Some(&link))?;
        let exe = std::env::current_exe()?.with_file_name("cardlinkd");
        let mut daemon = tokio::process::Command::new(&exe)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("demo: cardlinkd is up; a simulated reader swipes a card every {every} s. Ctrl-C to stop.");
        eprintln!("demo: try in another terminal:  cardlinkctl status --socket {}", socket.display());
        let cards = sim::load_cards(&cards)?;
        let opts = SimOptions { mode: Mode::Frame, encoding: cardlink::card::TextEncoding::Gbk, noise: 0.0, drop_acks: 0.0, interval: Duration::from_secs(every), count: None, seed: 7 };
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::select! {
            r = sim::run(master, &cards, &opts, |_, _| {}) => { r?; }
            r = watch(&socket, false, Some(stop_rx)) => { r?; }
            _ = tokio::signal::ctrl_c() => {}
            s = daemon.wait() => { bail!("cardlinkd exited: {s:?}"); }
        }
        let _ = daemon.start_kill();
        let _ = daemon.wait().await;
        anyhow::Ok(())
    })?;
    Ok(0)
}

fn tempfile_dir(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let d = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("cardlink-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
