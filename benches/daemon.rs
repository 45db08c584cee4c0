//! Daemon benchmark (a bench binary): end-to-end latency from the last byte
//! of a CARD_IC frame written to the reader's pseudo-terminal to the CARD
//! line read on the display socket, and the daemon's resident memory idle
//! and during 100,000 swipes.
//!
//! ```text
//! CARDLINK_BENCH_DB=/var/tmp/clbench/registry-10000000.db cargo bench --bench daemon
//! CARDLINK_BENCH_DB=postgres://postgres@127.0.0.1:5433/bench cargo bench --bench daemon
//! ```
//!
//! Without `CARDLINK_BENCH_DB` a 100,000-person registry is generated in a
//! temporary directory. The registry must be a `gen-demo` registry (seed
//! independent): swiped cards are demo persons `0..N`. Set
//! `CARDLINK_BENCH_SWIPES` to change the 100,000.

use std::time::{Duration, Instant};

use cardlink::registry::demo::{demo_card_no, demo_ssn, DemoOptions};
use cardlink::registry::{Database, OpenOptions, Registry};
use cardlink::sim::{PtyMaster, SimCard};
use firmware_protocol::frame::{encode_vec, Cmd};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let (db, persons) = match std::env::var("CARDLINK_BENCH_DB") {
        Ok(p) => {
            // A file or a postgres:// URL; opened off the runtime (a
            // PostgreSQL registry blocks on a runtime of its own).
            let db = Database::parse(&p);
            let open = db.clone();
            let n = tokio::task::spawn_blocking(move || {
                Registry::open_database(&open, &OpenOptions::default())?.stats()
            })
            .await??
            .persons;
            (db, n)
        }
        Err(_) => {
            let db = Database::from(tmp.path().join("registry.db"));
            let Some(path) = db.path() else {
                unreachable!("a file")
            };
            let mut reg = Registry::open(path, &OpenOptions::default())?;
            reg.gen_demo(&DemoOptions {
                persons: 100_000,
                months: 0,
                seed: 1,
            })?;
            (db, 100_000)
        }
    };
    let swipes: usize = std::env::var("CARDLINK_BENCH_SWIPES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    println!("daemon benchmark: registry {db} ({persons} persons)");

    // The daemon's SQLite page cache (the config's `cache_mib`, default 8).
    let cache_mib: u32 = std::env::var("CARDLINK_BENCH_CACHE_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    println!("daemon page cache: {cache_mib} MiB");
    let socket = tmp.path().join("display.sock");
    let link = tmp.path().join("reader0");
    let mut pty = PtyMaster::open(Some(&link))?;
    let config = tmp.path().join("cardlinkd.toml");
    std::fs::write(
        &config,
        format!(
            "database = {:?}\nlog_level = \"warn\"\ncache_mib = {}\n[socket]\npath = {:?}\n[[reader]]\nname = \"bench\"\npath = {:?}\nencoding = \"utf-8\"\n",
            String::from(db.clone()),
            cache_mib,
            socket,
            link
        ),
    )?;
    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .spawn()?;
    let pid = daemon.id();
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stream = tokio::net::UnixStream::connect(&socket).await?;
    let mut lines = BufReader::new(stream).lines();
    // Wait until the reader is connected.
    while let Some(l) = lines.next_line().await? {
        if l.contains("\"READER\"") && l.contains("\"connected\"") {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(pid);
    println!("RSS idle: {} KiB", idle);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    // Payloads are encoded into frames per swipe with SEQ = swipe % 256: a
    // (SEQ, payload) pair comes back only every lcm(256, 5000) = 160,000
    // swipes, far outside the 10 s resend window, so no swipe is a resend.
    // Distinct persons (a multiplier coprime to the registry size), in a
    // random order: a repeated person would be a repeated payload.
    let start = rng.random_range(0..persons);
    let payloads: Vec<Vec<u8>> = (0..5000u64)
        .map(|k| {
            let i = (start + k * 7919) % persons;
            let card = SimCard {
                ssn: demo_ssn(i),
                card_no: demo_card_no(i),
                pan: None,
                name: "测试".into(),
                issued: "20200101".into(),
                expires: "20991231".into(),
                document: None,
            };
            card.record().into_bytes()
        })
        .collect();

    let mut latencies = Vec::with_capacity(swipes);
    let mut sink = [0u8; 4096];
    let t0 = Instant::now();
    for k in 0..swipes {
        let f = encode_vec(
            (k % 256) as u8,
            Cmd::CardIc as u8,
            &payloads[k % payloads.len()],
        )?;
        pty.write_all(&f).await?;
        let sent = Instant::now();
        loop {
            tokio::select! {
                l = lines.next_line() => {
                    let l = l?.ok_or_else(|| anyhow::anyhow!("daemon closed the socket"))?;
                    if l.starts_with("{\"class\":\"CARD\"") || l.contains("\"class\":\"CARD\"") {
                        latencies.push(sent.elapsed());
                        break;
                    }
                }
                // Drain the ACK/FEEDBACK frames so the pty never fills.
                r = pty.read(&mut sink) => { r?; }
            }
        }
        if (k + 1) % 10_000 == 0 {
            println!("  after {:>6} swipes: RSS {} KiB", k + 1, rss_kib(pid));
        }
    }
    let elapsed = t0.elapsed();
    let after = rss_kib(pid);
    let mut first = latencies[..latencies.len().min(1000)].to_vec();
    let mut all = latencies.clone();
    println!(
        "latency pty -> socket, first 1000 swipes: median {:.0} µs, p99 {:.0} µs",
        pct(&mut first, 0.5).as_secs_f64() * 1e6,
        pct(&mut first, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "latency pty -> socket, all {} swipes: median {:.0} µs, p99 {:.0} µs, max {:.0} µs ({:.0} swipes/s)",
        all.len(),
        pct(&mut all, 0.5).as_secs_f64() * 1e6,
        pct(&mut all, 0.99).as_secs_f64() * 1e6,
        all.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
        swipes as f64 / elapsed.as_secs_f64()
    );
    println!("RSS idle {idle} KiB, after {swipes} swipes {after} KiB");
    if std::env::var_os("CARDLINK_BENCH_SMAPS").is_some() {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let mut name = String::new();
        for l in smaps.lines() {
            if l.contains('-') && !l.starts_with(char::is_uppercase) {
                name = l.to_string();
            } else if let Some(v) = l.strip_prefix("Rss:") {
                let kb: u64 = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
                if kb > 1024 {
                    println!("  {kb:>8} KiB  {name}");
                }
            }
        }
    }
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = daemon.wait()?;
    println!("daemon exit: {status}");
    Ok(())
}
