//! The cost of sealing the audit log: an audited resolution (what every
//! card read does: resolve, then one audit row in its own transaction)
//! with and without a forward-secure seal, SHA-256 and SM3.
//!
//! ```text
//! cargo bench --bench seal                               # 20,000 persons, 5,000 reads per case
//! CARDLINK_BENCH_READS=500 cargo bench --bench seal      # quicker
//! ```
//!
//! Each case gets a fresh registry (the same `gen-demo` data) in a
//! directory on the disk the registry would use (`/var/tmp` by default,
//! `CARDLINK_BENCH_DIR` otherwise: not a tmpfs, so that the key file's
//! fsyncs cost what they cost), opened with the daemon's settings; a sealed
//! case runs `seal init` first. The same random persons are read in every
//! case; cases run in turn, twice (ABCDABCD), to spread the disk's drift.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cardlink::registry::demo::{demo_ssn, DemoOptions};
use cardlink::registry::{HashAlg, Lookup, OpenOptions, Registry};
use cardlink::Ssn;
use rand::{Rng, SeedableRng};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let persons = 20_000;
    let reads: usize = std::env::var("CARDLINK_BENCH_READS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    let base = std::env::var_os("CARDLINK_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    std::fs::create_dir_all(&base)?;
    let tmp = tempfile::tempdir_in(&base)?;
    println!(
        "seal benchmark: {persons} persons, {reads} audited reads per case, in {}",
        tmp.path().display()
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let picks: Vec<u64> = (0..reads).map(|_| rng.random_range(1..=persons)).collect();
    let cases = [
        ("sha256, unsealed", HashAlg::Sha256, false),
        ("sha256, sealed (HMAC-SHA256)", HashAlg::Sha256, true),
        ("sm3, unsealed", HashAlg::Sm3, false),
        ("sm3, sealed (HMAC-SM3)", HashAlg::Sm3, true),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for round in 0..2 {
        for (i, (name, alg, sealed)) in cases.iter().enumerate() {
            let db = tmp.path().join(format!("r{round}-{i}.db"));
            let opts = OpenOptions {
                cache_kib: 8 * 1024,
                audit_hash: Some(*alg),
                ..OpenOptions::default()
            };
            let mut reg = Registry::open(&db, &opts)?;
            reg.gen_demo(&DemoOptions {
                persons,
                months: 1,
                seed: 20261201,
            })?;
            if *sealed {
                reg.seal_init(
                    &cardlink::registry::seal::default_key_path(&db),
                    &tmp.path().join(format!("r{round}-{i}.verify")),
                    "bench",
                    "bench",
                )?;
            }
            let lookups: Vec<Lookup> = picks
                .iter()
                .map(|&p| Ssn::parse(&demo_ssn(p)).map(Lookup::ssn))
                .collect::<Result<_, _>>()?;
            for l in &lookups {
                let t = Instant::now();
                reg.resolve_audited("bench", l)?;
                times[i].push(t.elapsed());
            }
            eprintln!("round {round}: {name} done");
        }
    }
    for (i, (name, _, _)) in cases.iter().enumerate() {
        let v = &mut times[i];
        let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
        println!(
            "{name:<30} median {:>8.1} µs   p99 {:>8.1} µs   (n = {})",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            v.len()
        );
    }
    Ok(())
}
