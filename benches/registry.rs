//! Registry benchmark (a bench binary, not criterion: it builds a 10M-person
//! registry once and measures per-call latency distributions on it).
//!
//! ```text
//! cargo bench --bench registry                      # 10,000,000 persons
//! CARDLINK_BENCH_PERSONS=100000 cargo bench --bench registry
//! CARDLINK_BENCH_DIR=/var/tmp/clbench cargo bench --bench registry   # keep files
//! CARDLINK_BENCH_CACHE_MIB=64 CARDLINK_BENCH_MMAP=1 ...   # other SQLite settings
//! ```
//!
//! By default the registry is opened with the daemon's settings (8 MiB page
//! cache, no memory mapping).
//!
//! Steps: `gen-demo --csv` writes the five CSV files (`CARDLINK_BENCH_MONTHS`
//! months of contributions, default 12); `import` loads them (timed, one
//! all-or-nothing transaction per step, persons, then cards + accounts +
//! links, then contributions), and so does the floor: the `sqlite3` shell's
//! `.import` of the same files into the same tables (see [`floor`]); then 200,000
//! `resolve` calls by SSN and by card number on random persons, each timed
//! alone, side by side with a plain indexed point query
//! (`SELECT ... FROM persons WHERE ssn = ?`, `... FROM cards WHERE card_no = ?`)
//! on the same file and connection settings.
//!
//! `CARDLINK_BENCH_ENCRYPTION=1` instead compares a plain registry with one
//! encrypted by SQLCipher (a raw 32-byte key, as `database_key_file`
//! gives it) in the same run: the same CSV files imported into each
//! (timed, alternating), then `resolve` by SSN and by card number on both,
//! interleaved call by call, with the daemon's settings (see
//! [`encryption`]). There `CARDLINK_BENCH_ROUNDS` (3) sets the number of
//! imports of each, `CARDLINK_BENCH_IMPORT_CACHE_MIB` (64, cardlinkctl's
//! default) the page cache they are opened with (an import raises it to
//! `import::IMPORT_CACHE_KIB` when smaller), and
//! `CARDLINK_BENCH_NO_RESOLVE=1` stops after the imports.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cardlink::registry::demo::{demo_card_no, demo_ssn, generate, CsvSink, DemoOptions};
use cardlink::registry::{Lookup, OpenOptions, Registry};
use cardlink::Ssn;
use rand::{Rng, SeedableRng};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    let (m, p99) = (pct(&mut v, 0.5), pct(&mut v, 0.99));
    println!(
        "{name:<34} median {:>7.2} µs   p99 {:>7.2} µs   (n = {})",
        m.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        v.len()
    );
    (m, p99)
}

/// The floor: Debian's `sqlite3` shell `.import`s the same CSV files into
/// the same tables and indexes (the registry schema, made by cardlink, with
/// its two relation triggers dropped), with the same journal settings (WAL,
/// synchronous NORMAL, foreign keys on, 3 GiB page cache, temporary
/// storage in memory). Columns that need NULL for an empty field (cards.pan,
/// family_links.revoked_at) and the links' generated id go through a
/// staging table. Returns the seconds for persons, cards + accounts +
/// links, and contributions, each one shell run (checkpoint at close).
fn floor(csv: &Path, db: &Path) -> anyhow::Result<Option<(f64, f64, f64)>> {
    if Command::new("sqlite3").arg("--version").output().is_err() {
        return Ok(None);
    }
    let _ = std::fs::remove_file(db);
    drop(Registry::open(db, &OpenOptions::default())?);
    let settings = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                    PRAGMA foreign_keys = ON; PRAGMA cache_size = -3145728; PRAGMA temp_store = MEMORY;\n";
    let run = |script: String| -> anyhow::Result<f64> {
        let t = Instant::now();
        let mut child = Command::new("sqlite3")
            .arg("-bail")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?
            // Dot-commands must start their line.
            .write_all(
                format!("{settings}{script}")
                    .lines()
                    .map(|l| l.trim_start().to_string() + "\n")
                    .collect::<String>()
                    .as_bytes(),
            )?;
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "sqlite3 failed: {status}");
        Ok(t.elapsed().as_secs_f64())
    };
    let f = |n: &str| csv.join(format!("{n}.csv")).display().to_string();
    run(
        "DROP TRIGGER family_links_relation_insert; DROP TRIGGER family_links_relation_update;\n"
            .into(),
    )?;
    let persons = run(format!(".import --csv --skip 1 {} persons\n", f("persons")))?;
    let cal = run(format!(
        "CREATE TEMP TABLE cards_in (card_no, pan, ssn, generation, issued, expires, status);
         CREATE TEMP TABLE links_in (holder_ssn, member_ssn, relation, status, channel, operator, created_at, revoked_at);
         .import --csv --skip 1 {cards} cards_in
         .import --csv --skip 1 {accounts} accounts
         .import --csv --skip 1 {links} links_in
         BEGIN;
         INSERT INTO cards SELECT card_no, NULLIF(pan, ''), ssn, generation, issued, expires, status FROM cards_in;
         INSERT INTO family_links (holder_ssn, member_ssn, relation, status, channel, operator, created_at, revoked_at)
              SELECT holder_ssn, member_ssn, relation, status, channel, operator, created_at, NULLIF(revoked_at, '') FROM links_in;
         COMMIT;\n",
        cards = f("cards"),
        accounts = f("accounts"),
        links = f("links"),
    ))?;
    let contributions = run(format!(
        ".import --csv --skip 1 {} contributions\n",
        f("contributions")
    ))?;
    Ok(Some((persons, cal, contributions)))
}

/// Plain against encrypted, same files, same run: import times and
/// resolve latencies (`CARDLINK_BENCH_ENCRYPTION=1`).
fn encryption(persons: u64, dir: &Path, csv_dir: &Path) -> anyhow::Result<()> {
    use cardlink::registry::{DbKey, KeySource};
    let key = DbKey::from_hex(
        KeySource::File("bench".into()),
        "5f3c9a0e7b21d4c6a8e0f1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f50",
    )
    .ok_or_else(|| anyhow::anyhow!("bench key"))?;
    let csv = |n: &str| csv_dir.join(format!("{n}.csv"));
    let files: Vec<PathBuf> = ["persons", "cards", "accounts", "links", "contributions"]
        .iter()
        .map(|n| csv(n))
        .collect();
    let variants = [("plain", None), ("encrypted", Some(key))];
    let dbs: Vec<PathBuf> = variants
        .iter()
        .map(|(name, _)| dir.join(format!("enc-{name}-{persons}.db")))
        .collect();
    let opts = |k: &Option<DbKey>, cache_kib: i64| OpenOptions {
        cache_kib,
        key: k.clone(),
        ..OpenOptions::default()
    };
    // Import: each variant three times, alternating, into a new file
    // (cardlinkctl's 64 MiB cache); the median of each.
    let mut import: [Vec<f64>; 2] = Default::default();
    let env = |n: &str, d: i64| {
        std::env::var(n)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let import_mib = env("CARDLINK_BENCH_IMPORT_CACHE_MIB", 64);
    for _round in 0..env("CARDLINK_BENCH_ROUNDS", 3) {
        for (i, (_, k)) in variants.iter().enumerate() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", dbs[i].display()));
            }
            let mut reg = Registry::open(&dbs[i], &opts(k, import_mib << 10))?;
            let t = Instant::now();
            reg.import(&files, "bench")?;
            reg.connection()
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
            import[i].push(t.elapsed().as_secs_f64());
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ip, ie) = (med(&mut import[0]), med(&mut import[1]));
    println!(
        "import of all five files, median of 3: plain {ip:.2} s, encrypted {ie:.2} s, ratio {:.2}x",
        ie / ip
    );
    println!(
        "import times: plain {:?} encrypted {:?}",
        import[0], import[1]
    );
    if std::env::var_os("CARDLINK_BENCH_NO_RESOLVE").is_some() {
        return Ok(());
    }
    // Resolve: the daemon's settings (8 MiB cache), interleaved call by
    // call; one untimed pass warms the OS page cache.
    let regs = variants
        .iter()
        .zip(&dbs)
        .map(|((_, k), db)| Registry::open(db, &opts(k, OpenOptions::default().cache_kib)))
        .collect::<Result<Vec<_>, _>>()?;
    let n = 100_000;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let ids: Vec<u64> = (0..n).map(|_| rng.random_range(0..persons)).collect();
    let ssns: Vec<Ssn> = ids
        .iter()
        .map(|&i| Ssn::parse(&demo_ssn(i)).unwrap())
        .collect();
    let cards: Vec<String> = ids.iter().map(|&i| demo_card_no(i)).collect();
    let mut lat: [[Vec<Duration>; 2]; 2] = Default::default();
    for pass in 0..2 {
        for i in 0..n {
            for (v, reg) in regs.iter().enumerate() {
                let t = Instant::now();
                let r = reg.resolve(&Lookup::ssn(ssns[i]))?;
                let d0 = t.elapsed();
                let t = Instant::now();
                reg.resolve(&Lookup::card_no(cards[i].clone()))?;
                let d1 = t.elapsed();
                anyhow::ensure!(r.person.is_some(), "every generated person resolves");
                if pass == 1 {
                    lat[v][0].push(d0);
                    lat[v][1].push(d1);
                }
            }
        }
    }
    let [[ps, pc], [es, ec]] = lat;
    let (_, pps) = report("plain resolve by SSN", ps);
    let (_, ppc) = report("plain resolve by card number", pc);
    let (_, eps) = report("encrypted resolve by SSN", es);
    let (_, epc) = report("encrypted resolve by card number", ec);
    println!(
        "p99 ratio encrypted/plain: by SSN {:.2}x, by card {:.2}x",
        eps.as_secs_f64() / pps.as_secs_f64(),
        epc.as_secs_f64() / ppc.as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let persons: u64 = std::env::var("CARDLINK_BENCH_PERSONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let keep = std::env::var_os("CARDLINK_BENCH_DIR").map(PathBuf::from);
    let tmp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let csv_dir = dir.join(format!("csv-{persons}"));
    let db = dir.join(format!("registry-{persons}.db"));
    println!("registry benchmark: {persons} persons in {}", dir.display());

    let months: u32 = std::env::var("CARDLINK_BENCH_MONTHS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    if !csv_dir.join("persons.csv").exists() {
        let t = Instant::now();
        let mut sink = CsvSink::create(&csv_dir)?;
        generate(
            &DemoOptions {
                persons,
                months,
                seed: 1,
            },
            &mut sink,
        )?;
        sink.finish()?;
        println!("gen-demo --csv: {:.1} s", t.elapsed().as_secs_f64());
    }
    if std::env::var_os("CARDLINK_BENCH_ENCRYPTION").is_some() {
        return encryption(persons, &dir, &csv_dir);
    }
    if !db.exists() {
        let csv = |n: &str| csv_dir.join(format!("{n}.csv"));
        let sizes: Vec<String> = ["persons", "cards", "accounts", "links", "contributions"]
            .iter()
            .map(|n| {
                let mib = std::fs::metadata(csv(n)).map(|m| m.len()).unwrap_or(0) >> 20;
                format!("{n}.csv {mib} MiB")
            })
            .collect();
        println!("{}", sizes.join(", "));
        // cardlink: `cardlinkctl db --cache-mib 3072 import`, each step one
        // all-or-nothing transaction, then a WAL checkpoint (the shell
        // below checkpoints when it closes).
        let mut reg = Registry::open(
            &db,
            &OpenOptions {
                cache_kib: 3 << 20,
                ..Default::default()
            },
        )?;
        let checkpoint = |reg: &Registry| {
            reg.connection()
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        };
        let t = Instant::now();
        let p = reg.import(&[csv("persons")], "bench")?;
        checkpoint(&reg)?;
        let ours_p = t.elapsed().as_secs_f64();
        println!(
            "cardlink import persons.csv: {} persons in {ours_p:.1} s",
            p.persons
        );
        let t = Instant::now();
        let c = reg.import(&[csv("cards"), csv("accounts"), csv("links")], "bench")?;
        checkpoint(&reg)?;
        let ours_cal = t.elapsed().as_secs_f64();
        println!(
            "cardlink import cards/accounts/links.csv: {} cards, {} accounts, {} links in {ours_cal:.1} s",
            c.cards, c.accounts, c.links
        );
        let t = Instant::now();
        let k = reg.import(&[csv("contributions")], "bench")?;
        checkpoint(&reg)?;
        let ours_k = t.elapsed().as_secs_f64();
        println!(
            "cardlink import contributions.csv: {} rows in {ours_k:.1} s",
            k.contributions
        );
        drop(reg);
        match floor(&csv_dir, &dir.join(format!("floor-{persons}.db")))? {
            Some((fp, fcal, fk)) => {
                println!(
                    "floor (sqlite3 shell .import): persons {fp:.1} s, cards/accounts/links {fcal:.1} s, contributions {fk:.1} s"
                );
                println!(
                    "ratio to the floor: persons+cards+accounts+links {:.2}x ({:.1} s / {:.1} s), contributions {:.2}x ({:.1} s / {:.1} s)",
                    (ours_p + ours_cal) / (fp + fcal),
                    ours_p + ours_cal,
                    fp + fcal,
                    ours_k / fk,
                    ours_k,
                    fk
                );
            }
            None => println!("floor: skipped (no sqlite3 shell)"),
        }
    }

    // The daemon's settings unless CARDLINK_BENCH_CACHE_MIB says otherwise.
    let mut opts = OpenOptions::default();
    if let Some(mib) = std::env::var("CARDLINK_BENCH_CACHE_MIB")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        opts.cache_kib = mib * 1024;
    }
    if std::env::var_os("CARDLINK_BENCH_MMAP").is_some() {
        opts.mmap_bytes = 1 << 36;
    }
    println!(
        "page cache {} MiB, mmap {}",
        opts.cache_kib / 1024,
        opts.mmap_bytes
    );
    let reg = Registry::open(&db, &opts)?;
    let conn = reg.connection();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let n = 200_000;
    // Each contender gets its own random persons, so none of them runs on
    // pages another one has just warmed.
    let mut sample = || -> Vec<u64> { (0..n).map(|_| rng.random_range(0..persons)).collect() };
    let (ids_p, ids_c, ids_rs, ids_rc) = (sample(), sample(), sample(), sample());
    let ssn_of = |ids: &[u64]| -> Vec<Ssn> {
        ids.iter()
            .map(|&i| Ssn::parse(&demo_ssn(i)).unwrap())
            .collect()
    };
    let card_of = |ids: &[u64]| -> Vec<String> { ids.iter().map(|&i| demo_card_no(i)).collect() };
    let (ssns_p, cards_c, ssns_rs, cards_rc) = (
        ssn_of(&ids_p),
        card_of(&ids_c),
        ssn_of(&ids_rs),
        card_of(&ids_rc),
    );

    let mut plain_p = conn.prepare(
        "SELECT ssn, name, sex, insurance_type, insurance_status FROM persons WHERE ssn = ?1",
    )?;
    let mut plain_c =
        conn.prepare("SELECT card_no, ssn, status, expires FROM cards WHERE card_no = ?1")?;
    // The four contenders run interleaved, so each sees the same overall
    // cache state; one untimed pass first brings the file into the OS page
    // cache (the daemon's SQLite cache is 8 MiB, so most reads are preads).
    let mut ok = 0;
    let mut lat: [Vec<Duration>; 4] = Default::default();
    for pass in 0..2 {
        for i in 0..n {
            let t = Instant::now();
            let _: Option<String> = plain_p.query_row([ssns_p[i].expose()], |r| r.get(1)).ok();
            let d0 = t.elapsed();
            let t = Instant::now();
            let _: Option<String> = plain_c.query_row([&cards_c[i]], |r| r.get(1)).ok();
            let d1 = t.elapsed();
            let t = Instant::now();
            let r = reg.resolve(&Lookup::ssn(ssns_rs[i]));
            let d2 = t.elapsed();
            let t = Instant::now();
            let _ = reg.resolve(&Lookup::card_no(cards_rc[i].clone()));
            let d3 = t.elapsed();
            if pass == 1 {
                ok += r.map(|r| r.person.is_some() as usize).unwrap_or(0);
                for (v, d) in lat.iter_mut().zip([d0, d1, d2, d3]) {
                    v.push(d);
                }
            }
        }
    }
    let [plain_ssn, plain_card, res_ssn, res_card] = lat;
    assert_eq!(ok, n, "every generated person resolves");
    println!();
    let (_, pp) = report("plain point query persons.ssn", plain_ssn);
    let (_, pc) = report("plain point query cards.card_no", plain_card);
    let (_, rs) = report("resolve by SSN", res_ssn);
    let (_, rc) = report("resolve by card number", res_card);
    println!(
        "p99 ratio resolve/plain: by SSN {:.2}x, by card {:.2}x",
        rs.as_secs_f64() / pp.as_secs_f64(),
        rc.as_secs_f64() / pc.as_secs_f64()
    );
    Ok(())
}
