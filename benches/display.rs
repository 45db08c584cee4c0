//! From the last byte of a frame on the reader's pty to the result painted
//! in the kiosk page: the real cardlinkd (kiosk role), the real
//! cardlink-display, headless Chromium through chromedriver.
//!
//! `cargo bench --bench display` (needs chromium and chromium-driver): the
//! swipes in normal mode, then as many in 长辈模式.
//! The page stamps each CARD's arrival and its paint (two animation frames
//! after rendering) with `performance.timeOrigin + performance.now()`, on
//! the same clock as the host's `SystemTime` here.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cardlink::registry::demo::{demo_card_no, demo_ssn, DemoOptions};
use cardlink::registry::{OpenOptions, Registry};
use cardlink::sim::{PtyMaster, SimCard};
use fantoccini::{ClientBuilder, Locator};
use firmware_protocol::frame::{encode_vec, Cmd};
use tokio::io::AsyncWriteExt;

#[path = "../tests/common/chromedriver.rs"]
mod chromedriver;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let swipes: u64 = std::env::var("CARDLINK_BENCH_SWIPES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir()?;
    let db = tmp.path().join("registry.db");
    Registry::open(&db, &OpenOptions::default())?.gen_demo(&DemoOptions {
        persons: 1000,
        months: 12,
        seed: 3,
    })?;
    let socket = tmp.path().join("display.sock");
    let link = tmp.path().join("reader0");
    let mut pty = PtyMaster::open(Some(&link))?;
    let config = tmp.path().join("cardlinkd.toml");
    std::fs::write(
        &config,
        format!(
            "database = {db:?}\nrole = \"kiosk\"\nlog_level = \"warn\"\n[socket]\npath = {socket:?}\n[[reader]]\nname = \"k1\"\npath = {link:?}\nencoding = \"utf-8\"\n"
        ),
    )?;
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
        .arg("--config")
        .arg(&config)
        .spawn()?;
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut display = Command::new(env!("CARGO_BIN_EXE_cardlink-display"))
        .args(["--socket"])
        .arg(&socket)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--idle-s",
            "600",
            "--key-dir",
        ])
        .arg(tmp.path())
        .spawn()?;
    let (mut driver, driver_port) =
        chromedriver::start().ok_or_else(|| anyhow::anyhow!("chromedriver did not start"))?;
    let caps = serde_json::json!({"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--disable-renderer-backgrounding", "--disable-background-timer-throttling", "--disable-backgrounding-occluded-windows", format!("--user-data-dir={}", tmp.path().join("profile").display()),
        "--window-size=1280,800"]}});
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps.as_object().cloned().unwrap_or_default())
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await?;
    // The kiosk browser logs in through the display's login page.
    let login = tmp.path().join("screen.html");
    while !login.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.goto(&format!("file://{}", login.display())).await?;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("body[data-screen='idle']"))
        .await?;

    // The same swipes in normal mode, then in 长辈模式 (switched on by a
    // touch of its control, as a patient does; it holds from swipe to swipe).
    let mut swipe = 0u64;
    for elder in [false, true] {
        if elder {
            c.find(Locator::Css("#elder")).await?.click().await?;
            c.wait()
                .at_most(Duration::from_secs(20))
                .for_element(Locator::Css("body.elder"))
                .await?;
        }
        let (mut total, mut to_page, mut in_page) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..swipes {
            swipe += 1;
            let i = (k * 37) % 1000;
            let card = SimCard {
                ssn: demo_ssn(i),
                card_no: demo_card_no(i),
                pan: None,
                name: "测试".into(),
                issued: "20200101".into(),
                expires: "20991231".into(),
                document: None,
            };
            let frame = encode_vec(
                (swipe % 256) as u8,
                Cmd::CardIc as u8,
                card.record().as_bytes(),
            )?;
            pty.write_all(&frame).await?;
            let written = now_ms();
            c.wait()
                .at_most(Duration::from_secs(20))
                .for_element(Locator::Css(&format!("body[data-painted='{swipe}']")))
                .await?;
            let t = c
                .execute(&format!("return window.__painted[{swipe}]"), vec![])
                .await?;
            let arrived = t["arrived"].as_f64().unwrap_or(f64::NAN);
            let painted = t["painted"].as_f64().unwrap_or(f64::NAN);
            total.push(painted - written);
            to_page.push(arrived - written);
            in_page.push(painted - arrived);
        }
        let n = total.len();
        let mode = if elder { "长辈模式" } else { "normal mode" };
        println!(
            "{n} swipes in {mode}, frame written on the pty -> result painted in the kiosk page:"
        );
        for (name, v) in [
            ("total", &mut total),
            ("pty -> WebSocket message in the page", &mut to_page),
            ("message -> painted", &mut in_page),
        ] {
            println!(
                "  {name:<38} median {:6.1} ms   p99 {:6.1} ms   max {:6.1} ms",
                pct(v, 0.5),
                pct(v, 0.99),
                pct(v, 1.0)
            );
        }
    }
    c.close().await?;
    let _ = driver.kill();
    let _ = display.kill();
    let _ = daemon.kill();
    Ok(())
}
