//! The kiosk screen in a real browser: the real cardlinkd with a pty
//! reader, the real cardlink-display, headless Chromium driven through
//! chromedriver (WebDriver). Needs Debian's `chromium` and
//! `chromium-driver` (and `fonts-noto-cjk` for readable screenshots); when
//! they are missing the test says it is skipped, except under `CI=true`,
//! where it fails.
//!
//! Screenshots go to `target/screens/`; with `CARDLINK_UPDATE_SCREENS=1`
//! to `docs/screens/` (committed, shown in README).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use firmware_protocol::frame::{encode_vec, Cmd};
use tokio::io::AsyncWriteExt;

use common::chromedriver::CHROMEDRIVER;

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_available() -> bool {
    let found = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !found {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but chromium/chromium-driver are not installed"
        );
        eprintln!("skipped: chromium and chromium-driver are not installed");
    }
    found
}

/// chromedriver and the browsers it starts, in a process group of their
/// own: killed together, also when a test fails before closing its session.
struct KillGroup(Child);
impl Drop for KillGroup {
    fn drop(&mut self) {
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Starts cardlink-display on a port of its own for the daemon at `socket` (as
/// operator `clerk7`, kiosk sessions ending after 10 s); returns once it
/// has sent READY=1, with the `file://` URL of its login page, which a
/// browser opens as the kiosk's does at start.
fn start_display(dir: &Path, socket: &Path) -> (Kill, String) {
    let notify_path = dir.join("display-notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    let keys = dir.join("screen");
    std::fs::create_dir_all(&keys).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cardlink-display"))
        .arg("--socket")
        .arg(socket)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--key-dir")
        .arg(&keys)
        .args(["--operator", "clerk7", "--idle-s", "10"])
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let got = recv_until(&notify, "READY=1", Duration::from_secs(20));
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
    (
        Kill(child),
        format!("file://{}", keys.join("screen.html").display()),
    )
}

/// Starts chromedriver; returns once it says where it is listening.
fn start_chromedriver() -> (KillGroup, u16) {
    let (child, port) = common::chromedriver::start().expect("chromedriver did not start");
    (KillGroup(child), port)
}

async fn browser(driver_port: u16, profile: &Path, w: u32, h: u32) -> Client {
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
                "--disable-backgrounding-occluded-windows",
                format!("--user-data-dir={}", profile.display()),
                format!("--window-size={w},{h}"),
            ]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("chromedriver session")
}

const WAIT: Duration = Duration::from_secs(20);

/// The display and chromedriver for daemon `d`, and a 1280×800 browser
/// logged in through the login page, once it shows screen `first`.
async fn open_screen(d: &Process, first: &str) -> (Kill, KillGroup, Client) {
    let (display, login) = start_display(d.dir.path(), &d.socket);
    let (driver, driver_port) = start_chromedriver();
    let c = browser(driver_port, &d.path("profile"), 1280, 800).await;
    viewport(&c, 1280, 800).await;
    c.goto(&login).await.unwrap();
    screen(&c, first).await;
    (display, driver, c)
}

async fn screen(c: &Client, name: &str) {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(&format!("body[data-screen='{name}']")))
        .await
        .unwrap_or_else(|e| panic!("screen {name} never showed: {e}"));
}

/// The element matching `css`, once it is on the page.
async fn element(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

async fn text(c: &Client, css: &str) -> String {
    element(c, css).await.text().await.unwrap()
}

async fn click(c: &Client, css: &str) {
    element(c, css).await.click().await.unwrap();
}

fn screens_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = if std::env::var_os("CARDLINK_UPDATE_SCREENS").is_some() {
        root.join("docs/screens")
    } else {
        root.join("target/screens")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sizes the browser so that the page's viewport is `w`×`h`.
async fn viewport(c: &Client, w: u32, h: u32) {
    c.set_window_size(w, h).await.unwrap();
    let v = c
        .execute("return [window.innerWidth, window.innerHeight]", vec![])
        .await
        .unwrap();
    let (iw, ih) = (v[0].as_u64().unwrap() as u32, v[1].as_u64().unwrap() as u32);
    c.set_window_size(w + (w - iw), h + (h - ih)).await.unwrap();
}

/// A screenshot, after checking that nothing overflows the viewport.
async fn shot(c: &Client, name: &str) {
    let v = c
        .execute(
            "const m = document.getElementById('main'); \
             return [document.documentElement.scrollWidth, window.innerWidth, \
                     m.scrollHeight, m.clientHeight, window.innerHeight];",
            vec![],
        )
        .await
        .unwrap();
    let n = |i: usize| v[i].as_u64().unwrap();
    assert!(n(0) <= n(1), "{name}: page wider than the viewport: {v}");
    assert!(n(2) <= n(3), "{name}: content taller than the screen: {v}");
    let png = c.screenshot().await.unwrap();
    std::fs::write(screens_dir().join(format!("{name}.png")), png).unwrap();
}

/// Every button a patient can touch is at least 48×48 CSS pixels.
async fn touch_targets(c: &Client) {
    let small = c
        .execute(
            "return [...document.querySelectorAll('button')].filter(b => { \
               const r = b.getBoundingClientRect(); return r.width < 48 || r.height < 48; \
             }).map(b => b.textContent);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(small, serde_json::json!([]), "buttons under 48 px");
}

/// The page's whole text holds no full SSN of any fixture person.
async fn no_full_ssn(c: &Client) {
    let html = c.source().await.unwrap();
    for i in 0..=NO_REGION {
        assert!(
            !html.contains(&demo_ssn_full(i)),
            "full SSN of {i} on the kiosk page"
        );
    }
}

async fn swipe(pty: &mut cardlink::sim::PtyMaster, seq: u8, i: u64, name: &str) {
    let f = encode_vec(
        seq,
        Cmd::CardIc as u8,
        sim_card(i, name).record().as_bytes(),
    )
    .unwrap();
    pty.write_all(&f).await.unwrap();
}

async fn remove(pty: &mut cardlink::sim::PtyMaster, seq: u8) {
    let f = encode_vec(seq, Cmd::CardRemoved as u8, b"").unwrap();
    pty.write_all(&f).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_screens_in_headless_chromium() {
    if !browser_available() {
        return;
    }
    // A privileged display uid: the kiosk page must still show no full SSN.
    let (mut d, mut ptys) = Process::start(&[("k1", "frame", "utf-8")], "role = \"kiosk\"");
    let text0 = privileged_config(&std::fs::read_to_string(&d.config).unwrap());
    d.reload(&text0);
    let (_display, login) = start_display(d.dir.path(), &d.socket);
    let (_driver, driver_port) = start_chromedriver();
    let c = browser(driver_port, &d.path("profile"), 1280, 800).await;
    viewport(&c, 1280, 800).await;
    c.goto(&login).await.unwrap();
    screen(&c, "idle").await;
    assert!(text(&c, "main").await.contains("请刷社保卡"));
    shot(&c, "kiosk-idle").await;
    let pty = &mut ptys[0];

    // A member: the payer, masked, with the relation in Chinese.
    swipe(pty, 1, SPOUSE, "李娜").await;
    screen(&c, "result").await;
    let payer = text(&c, "#payer").await;
    assert!(payer.contains("张*") && payer.contains("配偶"), "{payer}");
    assert!(text(&c, "main").await.contains("¥1234.56"));
    no_full_ssn(&c).await;
    shot(&c, "kiosk-result-member").await;
    // Taking the card out goes back to idle at once.
    remove(pty, 2).await;
    screen(&c, "idle").await;

    // A holder: the members covered.
    swipe(pty, 3, HOLDER, "张伟").await;
    screen(&c, "result").await;
    let members = text(&c, "#members").await;
    assert!(
        members.contains("李*") && members.contains("配偶"),
        "{members}"
    );
    no_full_ssn(&c).await;
    touch_targets(&c).await;
    shot(&c, "kiosk-result-holder").await;

    // Two-swipe bind: holder, then member, relation, confirm.
    click(&c, "#start-bind").await;
    screen(&c, "bind").await;
    swipe(pty, 4, CHILD, "张小明").await;
    click(&c, "button[data-rel='child']").await;
    no_full_ssn(&c).await;
    touch_targets(&c).await;
    shot(&c, "kiosk-bind").await;
    click(&c, "#confirm").await;
    assert!(text(&c, "#bound").await.contains("绑定成功"));
    // The member's next swipe shows the new payer.
    swipe(pty, 5, CHILD, "张小明").await;
    screen(&c, "result").await;
    let payer = text(&c, "#payer").await;
    assert!(payer.contains("张*") && payer.contains("子女"), "{payer}");

    // A refusal in plain Chinese with the English beside it.
    swipe(pty, 6, HOLDER, "张伟").await;
    screen(&c, "result").await;
    click(&c, "#start-bind").await;
    screen(&c, "bind").await;
    swipe(pty, 7, SPOUSE, "李娜").await;
    click(&c, "button[data-rel='spouse']").await;
    click(&c, "#confirm").await;
    let refused = text(&c, "#refused").await;
    assert!(
        refused.contains("已经绑定过该家庭成员") && refused.contains("already bound"),
        "{refused}"
    );

    // Payment records: a table and a chart of the monthly account credit.
    swipe(pty, 8, HOLDER, "张伟").await;
    screen(&c, "result").await;
    click(&c, "#show-records").await;
    screen(&c, "records").await;
    let rows = c.find_all(Locator::Css("#records tr")).await.unwrap();
    assert_eq!(rows.len(), 1 + 6, "header and six months");
    let bars = c.find_all(Locator::Css("#chart rect")).await.unwrap();
    assert_eq!(bars.len(), 6);
    no_full_ssn(&c).await;
    shot(&c, "kiosk-records").await;
    viewport(&c, 1080, 1920).await;
    shot(&c, "kiosk-records-portrait").await;
    viewport(&c, 1280, 800).await;
    // Nobody touches the screen: back to idle after the idle time.
    screen(&c, "idle").await;

    // English toggle.
    click(&c, "#lang").await;
    assert!(text(&c, "main").await.contains("Please swipe your card"));
    click(&c, "#lang").await;

    // The daemon goes away: offline; it comes back: idle, without a reload.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    screen(&c, "offline").await;
    shot(&c, "kiosk-offline").await;
    let _again = Kill(
        Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
            .arg("--config")
            .arg(&d.config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    screen(&c, "idle").await;

    // The portrait kiosk (1080×1920) renders too.
    viewport(&c, 1080, 1920).await;
    shot(&c, "kiosk-idle-portrait").await;
    let pty = &mut ptys[0];
    swipe(pty, 9, HOLDER, "张伟").await;
    screen(&c, "result").await;
    shot(&c, "kiosk-result-holder-portrait").await;
    c.close().await.unwrap();
}

/// Waits until an element matching `xpath` is on the page.
async fn until_xpath(c: &Client, xpath: &str) {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(xpath))
        .await
        .unwrap_or_else(|e| panic!("{xpath}: {e}"));
}

async fn type_into(c: &Client, css: &str, text: &str) {
    let e = element(c, css).await;
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

/// The clerk's screen at a window: live swipes and reader states, manual
/// entry, bind and unbind by numbers with the operator id, payment records;
/// a swipe arriving while the clerk types does not wipe the form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_screen_in_headless_chromium() {
    if !browser_available() {
        return;
    }
    let (d, mut ptys) = Process::start(&[("w1", "frame", "utf-8")], "role = \"window\"");
    let (_display, _driver, c) = open_screen(&d, "window").await;
    assert!(text(&c, "#operator").await.contains("clerk7"));
    let pty = &mut ptys[0];
    // Half-typed bind form; then a swipe arrives.
    type_into(&c, "#link input[name='holder']", &card(HOLDER)).await;
    swipe(pty, 1, SPOUSE, "李娜").await;
    until_xpath(&c, "//ul[@id='swipes']/li[contains(., '李*')]").await;
    let kept = c
        .find(Locator::Css("#link input[name='holder']"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(
        kept.as_deref(),
        Some(card(HOLDER).as_str()),
        "the form survived the swipe"
    );
    assert!(text(&c, "#readers").await.contains("w1: 已连接"));
    // Manual entry.
    type_into(&c, "#lookup input[name='number']", &card(PARENT)).await;
    click(&c, "#lookup button.primary").await;
    until_xpath(&c, "//ul[@id='swipes']/li[contains(., 'manual')]").await;
    // Bind and unbind by numbers, as the display's operator.
    type_into(&c, "#link input[name='member']", &card(CHILD)).await;
    c.find(Locator::Css(
        "#link select[name='relation'] option[value='child']",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    click(&c, "#link button[data-act='bind']").await;
    until_xpath(&c, "//div[@id='link-outcome'][contains(., '已完成')]").await;
    click(&c, "#link button[data-act='bind']").await;
    until_xpath(&c, "//div[@id='link-outcome'][contains(., '已经绑定过')]").await;
    shot(&c, "window").await;
    click(&c, "#unbind").await;
    until_xpath(&c, "//div[@id='link-outcome'][contains(., '已完成')]").await;
    // Payment records by number.
    type_into(&c, "#lookup input[name='number']", &card(HOLDER)).await;
    click(&c, "#win-records").await;
    screen(&c, "records").await;
    assert_eq!(
        c.find_all(Locator::Css("#records tr")).await.unwrap().len(),
        7
    );
    click(&c, "#back").await;
    screen(&c, "window").await;
    c.close().await.unwrap();
}

/// An identity card on an idcard reader at a kiosk: the result screen says
/// which document was read (身份证 / 居住证), one placement after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_names_the_identity_document_in_headless_chromium() {
    if !browser_available() {
        return;
    }
    let (d, mut ptys) = Process::start(&[("id1", "idcard", "gbk")], "role = \"kiosk\"");
    let (_display, _driver, c) = open_screen(&d, "idle").await;
    let mut pty = ptys.remove(0);
    let cards = vec![
        sim_card(HOLDER, "张伟"),
        cardlink::sim::SimCard::identity("810000199001010027", "陈大文"),
    ];
    let opts = cardlink::sim::SimOptions {
        mode: cardlink::reader::codec::Mode::Idcard,
        encoding: cardlink::reader::card::TextEncoding::Gbk,
        noise: 0.0,
        drop_acks: 0.0,
        // Long enough for the daemon's polls, slowed down to one in 4.8 s
        // by the fault, to find the first card.
        interval: Duration::from_millis(5000),
        count: Some(2),
        seed: 3,
        // The SAM fails its self-test until the first card is placed.
        sam_fault: Some(0x60),
    };
    let sim = tokio::spawn(async move {
        let r = cardlink::sim::run(&mut pty, &cards, &opts, |_, _| {}).await;
        (r, pty)
    });
    // A SAM fault is said on the kiosk's screen.
    until_xpath(&c, "//*[@id='toast' and contains(., '读卡器故障')]").await;
    screen(&c, "result").await;
    assert_eq!(text(&c, "#document").await, "身份证");
    no_full_ssn(&c).await;
    // Taken away: idle; the next placement is a residence permit.
    screen(&c, "idle").await;
    screen(&c, "result").await;
    assert_eq!(text(&c, "#document").await, "居住证");
    no_full_ssn(&c).await;
    let (r, _pty) = sim.await.unwrap();
    r.unwrap();
    c.close().await.unwrap();
}
