//! Registry benchmark (a bench binary, not criterion: it builds a 10M-person
//! registry once and measures per-call latency distributions on it).
//!
//! ```text
//! cargo bench --bench registry                      # 10,000,000 persons
//! CARDLINK_BENCH_PERSONS=100000 cargo bench --bench registry
//! CARDLINK_BENCH_DIR=/var/tmp/clbench cargo bench --bench registry   # keep files
//! ```
//!
//! Steps: `gen-demo --csv` writes persons/cards/accounts/links CSV files;
//! `import` loads them (timed, one all-or-nothing transaction); then 200,000
//! `resolve` calls by SSN and by card number on random persons, each timed
//! alone, side by side with a plain indexed point query
//! (`SELECT ... FROM persons WHERE ssn = ?`, `... FROM cards WHERE card_no = ?`)
//! on the same file and connection settings.

use std::path::PathBuf;
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

    if !csv_dir.join("persons.csv").exists() {
        let t = Instant::now();
        let mut sink = CsvSink::create(&csv_dir)?;
        generate(
            &DemoOptions {
                persons,
                months: 0,
                seed: 1,
            },
            &mut sink,
        )?;
        sink.finish()?;
        println!("gen-demo --csv: {:.1} s", t.elapsed().as_secs_f64());
    }
    if !db.exists() {
        let mut reg = Registry::open(
            &db,
            &OpenOptions {
                cache_kib: 1 << 20,
                ..Default::default()
            },
        )?;
        let files: Vec<PathBuf> = ["persons", "cards", "accounts", "links"]
            .iter()
            .map(|n| csv_dir.join(format!("{n}.csv")))
            .collect();
        let t = Instant::now();
        let counts = reg.import(&files, "bench")?;
        let secs = t.elapsed().as_secs_f64();
        let rows = counts.persons + counts.cards + counts.accounts + counts.links;
        println!(
            "import: {} persons, {} cards, {} accounts, {} links in {secs:.1} s ({:.0} rows/s, {:.0} persons/s)",
            counts.persons, counts.cards, counts.accounts, counts.links,
            rows as f64 / secs, counts.persons as f64 / secs
        );
        let t = Instant::now();
        reg.connection()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        println!(
            "checkpoint after import: {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }

    let reg = Registry::open(&db, &OpenOptions::default())?;
    let conn = reg.connection();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let n = 200_000;
    let ids: Vec<u64> = (0..n).map(|_| rng.random_range(0..persons)).collect();
    let ssns: Vec<Ssn> = ids
        .iter()
        .map(|&i| Ssn::parse(&demo_ssn(i)).unwrap())
        .collect();
    let cards: Vec<String> = ids.iter().map(|&i| demo_card_no(i)).collect();

    // Warm the page cache the same way for every contender.
    for s in ssns.iter().take(20_000) {
        let _ = reg.resolve(&Lookup::ssn(*s))?;
    }
    let time = |f: &mut dyn FnMut(usize)| -> Vec<Duration> {
        (0..n)
            .map(|i| {
                let t = Instant::now();
                f(i);
                t.elapsed()
            })
            .collect()
    };
    let mut plain_p = conn.prepare(
        "SELECT ssn, name, sex, insurance_type, insurance_status FROM persons WHERE ssn = ?1",
    )?;
    let mut plain_c =
        conn.prepare("SELECT card_no, ssn, status, expires FROM cards WHERE card_no = ?1")?;
    let plain_ssn = time(&mut |i| {
        let _: Option<String> = plain_p.query_row([ssns[i].expose()], |r| r.get(1)).ok();
    });
    let plain_card = time(&mut |i| {
        let _: Option<String> = plain_c.query_row([&cards[i]], |r| r.get(1)).ok();
    });
    let mut ok = 0;
    let res_ssn = time(&mut |i| {
        if let Ok(r) = reg.resolve(&Lookup::ssn(ssns[i])) {
            ok += (r.person.is_some()) as usize;
        }
    });
    let res_card = time(&mut |i| {
        let _ = reg.resolve(&Lookup::card_no(cards[i].clone()));
    });
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
