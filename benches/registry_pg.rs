//! PostgreSQL registry benchmark (a bench binary): import time and resolve
//! latency on a shared registry over loopback.
//!
//! ```text
//! CARDLINK_BENCH_PG=postgres://postgres@127.0.0.1:5432/bench \
//! CARDLINK_BENCH_CSV=/var/tmp/clb/csv-10000000 cargo bench --bench registry_pg
//! ```
//!
//! `CARDLINK_BENCH_PG` names an empty database (without it the benchmark
//! says so and does nothing). `CARDLINK_BENCH_CSV` is a directory of
//! `gen-demo --csv` files; without it `CARDLINK_BENCH_PERSONS` (default
//! 10,000,000) persons with `CARDLINK_BENCH_MONTHS` (12) months are
//! generated into a temporary directory. `CARDLINK_BENCH_LOADED=1` skips
//! the import (a registry loaded by an earlier run). `CARDLINK_BENCH_PREWARM=1`
//! first reads what a resolution reads into the server's cache, as
//! `cardlinkd` does at start (`Store::prewarm`), timed and reported;
//! `benches/pg_cold_resolve.sh` runs it on a cold server with and without.
//! `CARDLINK_BENCH_PACE_US` (0) waits that long between one person's six
//! calls and the next person's: back to back (0) the bench itself keeps
//! both cores of a small box busy, and every call's latency includes
//! waiting for a core; paced, calls come as a box's swipes do, apart.
//! `CARDLINK_BENCH_PLAIN=0` makes only the resolutions (by SSN, then by
//! card number), without the plain queries between them: on a cold server
//! the plain `persons` query reads from disk (cardlink never reads that
//! table to resolve, so nothing warms it), and its waits idle the cores
//! the next resolution then has to wake.
//!
//! Steps: `import` of persons, cards, accounts and links (one transaction,
//! COPY), then of contributions (timed each); then `CARDLINK_BENCH_N`
//! (200,000) `resolve` calls by SSN and by card number on random persons,
//! each timed alone, interleaved with a plain indexed point query
//! (`SELECT ... FROM persons WHERE ssn = $1`, `... FROM cards WHERE
//! card_no = $1`) and with the registry's own statements sent plainly
//! (by SSN the person's derived row; by card the card's row and its
//! owner's derived row).
//!
//! The resolutions go through the daemon's path: the registry handed to a
//! `daemon::Store` on a two-worker multi-thread runtime (as `cardlinkd`
//! builds it), its connections' tasks on that runtime. The plain query is a
//! tokio-postgres client whose connection task runs on the same runtime;
//! both are awaited from the calling thread (`block_on`), so that the two
//! differ only in what they ask and in the registry's own work.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cardlink::daemon::Store;
use cardlink::registry::demo::{demo_card_no, demo_ssn, generate, CsvSink, DemoOptions};
use cardlink::registry::{Database, Lookup, OpenOptions, Outcome, Registry};
use cardlink::Ssn;
use rand::{Rng, SeedableRng};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    let (m, p99) = (pct(&mut v, 0.5), pct(&mut v, 0.99));
    println!(
        "{name:<34} median {:>7.1} µs   p99 {:>7.1} µs   (n = {})",
        m.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        v.len()
    );
    (m, p99)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let Ok(url) = std::env::var("CARDLINK_BENCH_PG") else {
        println!(
            "registry_pg: set CARDLINK_BENCH_PG to the URL of an empty database; nothing measured"
        );
        return Ok(());
    };
    let db = Database::Postgres(url.clone());
    let tmp = tempfile::tempdir()?;
    let mut reg = Registry::open_database(&db, &OpenOptions::default())?;
    if std::env::var_os("CARDLINK_BENCH_LOADED").is_none() {
        let csv = match std::env::var_os("CARDLINK_BENCH_CSV") {
            Some(d) => PathBuf::from(d),
            None => {
                let persons = std::env::var("CARDLINK_BENCH_PERSONS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(10_000_000);
                let months = std::env::var("CARDLINK_BENCH_MONTHS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(12);
                let dir = tmp.path().join("csv");
                let mut sink = CsvSink::create(&dir)?;
                generate(
                    &DemoOptions {
                        persons,
                        months,
                        seed: 20261125,
                    },
                    &mut sink,
                )?;
                sink.finish()?;
                dir
            }
        };
        let files = |names: &[&str]| -> Vec<PathBuf> {
            names.iter().map(|n| csv.join(format!("{n}.csv"))).collect()
        };
        let t = Instant::now();
        let c = reg.import(&files(&["persons", "cards", "accounts", "links"]), "bench")?;
        println!(
            "import persons, cards, accounts, links: {:.1} s ({} persons, {} cards, {} accounts, {} links)",
            t.elapsed().as_secs_f64(),
            c.persons,
            c.cards,
            c.accounts,
            c.links
        );
        let t = Instant::now();
        let c = reg.import(&files(&["contributions"]), "bench")?;
        println!(
            "import contributions: {:.1} s ({} rows)",
            t.elapsed().as_secs_f64(),
            c.contributions
        );
    }
    let persons = reg.stats()?.persons;
    println!("registry: {persons} persons");

    // The daemon's runtime, and the registry handed to it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let store = rt.block_on(async { Store::start(reg) });
    if std::env::var("CARDLINK_BENCH_PREWARM").is_ok_and(|v| v == "1") {
        let t = Instant::now();
        let done = rt
            .block_on(store.prewarm())
            .ok_or_else(|| anyhow::anyhow!("not a PostgreSQL registry"))??
            .unwrap_or_default();
        println!(
            "prewarm: {:.2} s, {}",
            t.elapsed().as_secs_f64(),
            done.iter()
                .map(|p| format!(
                    "{} {} pages ({}, {} ms)",
                    p.relation,
                    p.pages,
                    p.method.as_str(),
                    p.elapsed.as_millis()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let (client, by_ssn, by_card, by_card_join, by_ssn_derived) = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let s = client
            .prepare("SELECT ssn, name, sex, insurance_type, insurance_status FROM persons WHERE ssn = $1")
            .await?;
        let c = client
            .prepare("SELECT card_no, status, expires, ssn FROM cards WHERE card_no = $1")
            .await?;
        // The registry's own statements, sent plainly: by card it reads
        // two rows (the card and its owner's derived row) where the point
        // query reads one; by SSN the person's derived row, wider than the
        // `persons` row. Against them the ratio is the registry's own cost.
        let j = client.prepare(cardlink::registry::BY_CARD_NO).await?;
        let d = client.prepare(cardlink::registry::BY_SSN).await?;
        Ok::<_, tokio_postgres::Error>((client, s, c, j, d))
    })?;

    let n = std::env::var("CARDLINK_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    // CARDLINK_BENCH_SEED picks other persons than the last run's.
    let seed = std::env::var("CARDLINK_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut r_ssn, mut p_ssn, mut r_card, mut p_card, mut j_card, mut d_ssn) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let pace = Duration::from_micros(
        std::env::var("CARDLINK_BENCH_PACE_US")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    );
    if !pace.is_zero() {
        println!("paced: {} µs between persons", pace.as_micros());
    }
    let with_plain = std::env::var("CARDLINK_BENCH_PLAIN").map_or(true, |v| v != "0");
    if !with_plain {
        println!("resolutions only (no plain queries between them)");
    }
    let mut ok = 0u64;
    for k in 0..n {
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
        let i = rng.random_range(0..persons);
        let ssn_text = demo_ssn(i);
        let ssn = Ssn::parse(&ssn_text)?;
        let card = demo_card_no(i);
        // Alternate which goes first, so neither always meets a warmer cache.
        let plain = |q: &tokio_postgres::Statement, key: &str| -> anyhow::Result<Duration> {
            let t = Instant::now();
            let row = rt.block_on(client.query_opt(q, &[&key]))?;
            let d = t.elapsed();
            anyhow::ensure!(row.is_some(), "no row for {key}");
            Ok(d)
        };
        let mut resolve = |l: Lookup| -> anyhow::Result<Duration> {
            let t = Instant::now();
            let r = rt.block_on(store.resolve(l))??;
            let d = t.elapsed();
            ok += u64::from(r.outcome == Outcome::Ok);
            Ok(d)
        };
        if !with_plain {
            r_ssn.push(resolve(Lookup::ssn(ssn))?);
            r_card.push(resolve(Lookup::card_no(card.clone()))?);
        } else if k % 2 == 0 {
            r_ssn.push(resolve(Lookup::ssn(ssn))?);
            p_ssn.push(plain(&by_ssn, &ssn_text)?);
            d_ssn.push(plain(&by_ssn_derived, &ssn_text)?);
            r_card.push(resolve(Lookup::card_no(card.clone()))?);
            p_card.push(plain(&by_card, &card)?);
            j_card.push(plain(&by_card_join, &card)?);
        } else {
            d_ssn.push(plain(&by_ssn_derived, &ssn_text)?);
            p_ssn.push(plain(&by_ssn, &ssn_text)?);
            r_ssn.push(resolve(Lookup::ssn(ssn))?);
            j_card.push(plain(&by_card_join, &card)?);
            p_card.push(plain(&by_card, &card)?);
            r_card.push(resolve(Lookup::card_no(card.clone()))?);
        }
    }
    println!(
        "{ok} of {} resolutions ok (the rest: lost, expired, ... cards)",
        2 * n
    );
    let ratio = |(a50, a99): (Duration, Duration), (b50, b99): (Duration, Duration)| {
        println!(
            "  ratio p50 {:.2}   p99 {:.2}",
            a50.as_secs_f64() / b50.as_secs_f64(),
            a99.as_secs_f64() / b99.as_secs_f64()
        )
    };
    // The p99 of each tenth of the pass, in order: a machine's noise comes
    // in bursts (one tenth far above the others), a cold cache at the
    // start (the first tenths above the last).
    let tenths: Vec<String> = r_ssn
        .chunks(r_ssn.len().div_ceil(10).max(1))
        .map(|c| format!("{:.0}", pct(&mut c.to_vec(), 0.99).as_secs_f64() * 1e6))
        .collect();
    println!(
        "resolve by SSN, p99 of each tenth of the pass (µs): {}",
        tenths.join(" ")
    );
    let r_ssn = report("resolve by SSN", r_ssn);
    if with_plain {
        ratio(r_ssn, report("plain point query by SSN", p_ssn));
        ratio(r_ssn, report("plain derived row query by SSN", d_ssn));
    }
    let r_card = report("resolve by card number", r_card);
    if with_plain {
        ratio(r_card, report("plain point query by card number", p_card));
        ratio(r_card, report("plain card + derived row query", j_card));
    }
    Ok(())
}
