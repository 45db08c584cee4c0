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
    start_display_with(dir, socket, "screen", &[])
}

/// [`start_display`] with more options, its key in `dir/name`.
fn start_display_with(dir: &Path, socket: &Path, name: &str, args: &[&str]) -> (Kill, String) {
    let notify_path = dir.join(format!("{name}-notify.sock"));
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    let keys = dir.join(name);
    std::fs::create_dir_all(&keys).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cardlink-display"))
        .arg("--socket")
        .arg(socket)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--key-dir")
        .arg(&keys)
        .args(["--operator", "clerk7", "--idle-s", "10"])
        .args(args)
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

/// Every button a patient can touch (shown) is at least 48×48 CSS pixels.
async fn touch_targets(c: &Client) {
    let small = c
        .execute(
            "return [...document.querySelectorAll('button')].filter(b => { \
               const r = b.getBoundingClientRect(); \
               return b.getClientRects().length > 0 && (r.width < 48 || r.height < 48); \
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

/// What the person sees on this screen, measured in the browser: every
/// visible text against its effective background (WCAG 2 contrast, at
/// least 4.5:1), and in 长辈模式 text of 24 px and controls of 60×60 px at
/// least; the 长辈模式 control on every kiosk screen. Fails listing the
/// offenders.
const SCREEN_CHECK: &str = r##"
const elder = arguments[0];
const parse = (s) => { const m = /rgba?\(([^)]+)\)/.exec(s || ""); if (!m) return null;
  const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
const over = (t, b) => [0, 1, 2].map((i) => t[i] * t[3] + b[i] * (1 - t[3])).concat([1]);
const lin = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
const lum = (c) => 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
const background = (el) => { const layers = [];
  for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
    if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
  let bg = [255, 255, 255, 1]; for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg); return bg; };
const visible = (e) => { const r = e.getBoundingClientRect(); const st = getComputedStyle(e);
  return r.width > 0 && r.height > 0 && st.visibility !== "hidden" && !e.closest("[hidden]"); };
const label = (e) => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""} "${e.textContent.trim().slice(0, 30)}"`;
const out = {contrast: [], small_text: [], small_controls: [], elder_control: null};
for (const e of document.querySelectorAll("body *")) {
  if (["SCRIPT", "STYLE", "title"].includes(e.tagName) || !visible(e)) continue;
  if (![...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
  const st = getComputedStyle(e);
  let fg = parse(e instanceof SVGElement ? st.fill : st.color);
  const bg = background(e);
  if (fg) { fg = over(fg, bg); const a = lum(fg), b = lum(bg);
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) out.contrast.push(`${label(e)} ${ratio.toFixed(2)}`); }
  if (elder && parseFloat(st.fontSize) < 24) out.small_text.push(`${label(e)} ${st.fontSize}`);
}
if (elder) for (const e of document.querySelectorAll("button, input, select, [role=button]")) {
  if (!visible(e)) continue; const r = e.getBoundingClientRect();
  if (r.width < 60 || r.height < 60) out.small_controls.push(`${label(e)} ${Math.round(r.width)}x${Math.round(r.height)}`);
}
const c = document.getElementById("elder");
out.elder_control = c && visible(c) && c.textContent.includes("长辈模式") ? (c.getAttribute("aria-pressed") === "true") : null;
return out;
"##;

/// [`SCREEN_CHECK`] on the screen shown now, in 长辈模式 when `elder`.
async fn check_screen(c: &Client, what: &str, elder: bool) {
    let r = c
        .execute(SCREEN_CHECK, vec![serde_json::json!(elder)])
        .await
        .unwrap();
    assert_eq!(
        r["contrast"],
        serde_json::json!([]),
        "{what}: contrast under 4.5:1"
    );
    assert_eq!(
        r["small_text"],
        serde_json::json!([]),
        "{what}: text under 24 px in 长辈模式"
    );
    assert_eq!(
        r["small_controls"],
        serde_json::json!([]),
        "{what}: controls under 60×60 px in 长辈模式"
    );
    assert_eq!(
        r["elder_control"],
        serde_json::json!(elder),
        "{what}: the 长辈模式 control (visible, pressed in 长辈模式)"
    );
}

/// Puts a recorder in place of the browser's speechSynthesis (the page
/// speaks through `window.__speechSynthesis` when there is one), with a
/// zh-CN voice when `voice`.
async fn record_speech(c: &Client, voice: bool) {
    c.execute(
        "const voices = arguments[0] ? [{lang: 'zh-CN', name: 'recorder'}] : [];
         window.__spoken = window.__spoken || [];
         window.__speechSynthesis = {speak(u) { window.__spoken.push({text: u.text, lang: u.lang}); },
           cancel() {}, getVoices() { return voices; }};",
        vec![serde_json::json!(voice)],
    )
    .await
    .unwrap();
}

/// What the page said since [`record_speech`]: (text, lang) pairs.
async fn spoken(c: &Client) -> Vec<(String, String)> {
    let v = c
        .execute("return window.__spoken || []", vec![])
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["text"].as_str().unwrap_or("").to_string(),
                u["lang"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Waits until the page has said something containing `part`.
async fn until_spoken(c: &Client, part: &str) {
    eventually(&format!("spoken: {part}"), WAIT, async || {
        spoken(c)
            .await
            .iter()
            .any(|(t, _)| t.contains(part))
            .then_some(())
    })
    .await;
}

/// The seconds the countdown shows (`None` while it is hidden).
async fn countdown(c: &Client) -> Option<u64> {
    let v = c
        .execute(
            "const e = document.getElementById('countdown'); \
             return e.hidden ? null : Number(e.dataset.countdown);",
            vec![],
        )
        .await
        .unwrap();
    v.as_u64()
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

async fn disabled(c: &Client, css: &str) -> bool {
    element(c, css)
        .await
        .prop("disabled")
        .await
        .unwrap()
        .as_deref()
        == Some("true")
}

/// The consent screen after the relation: the statement of
/// `registry::consent::CURRENT`, the relation in words, masked parties; the
/// bind cannot be confirmed before 我已阅读并同意 (the confirm control is
/// disabled, and says why in words); then the bind is sent, with the
/// statement's version. A screenshot as `shot` when given.
async fn consent_and_bind(c: &Client, relation: &str, shot_name: Option<&str>) {
    screen(c, "consent").await;
    let statement = cardlink::registry::consent::CURRENT;
    let shown = text(c, "#consent-text").await;
    for (zh, _) in statement.sentences {
        assert!(shown.contains(zh), "{zh} not in {shown}");
    }
    assert_eq!(text(c, "#relation").await, relation);
    let parties = text(c, "#parties").await;
    assert!(parties.contains('*'), "masked parties: {parties}");
    no_full_ssn(c).await;
    assert!(disabled(c, "#confirm").await, "confirm before consent");
    assert!(text(c, "#confirm-why").await.contains("我已阅读并同意"));
    // Pressed anyway: nothing is sent.
    let _ = element(c, "#confirm").await.click().await;
    assert!(
        c.find(Locator::Css("#bound, #refused")).await.is_err(),
        "a bind went out before consent"
    );
    let elder = c
        .execute("return document.body.classList.contains('elder')", vec![])
        .await
        .unwrap()
        .as_bool()
        == Some(true);
    check_screen(c, "consent", elder).await;
    if let Some(name) = shot_name {
        shot(c, name).await;
    }
    click(c, "#agree").await;
    assert!(!disabled(c, "#confirm").await, "confirm after consent");
    click(c, "#confirm").await;
    element(c, "#bound, #refused").await;
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
    check_screen(&c, "idle", false).await;
    shot(&c, "kiosk-idle").await;
    let pty = &mut ptys[0];

    // A member: the payer, masked, with the relation in Chinese.
    swipe(pty, 1, SPOUSE, "李娜").await;
    screen(&c, "result").await;
    let payer = text(&c, "#payer").await;
    assert!(payer.contains("张*") && payer.contains("配偶"), "{payer}");
    assert!(text(&c, "main").await.contains("¥1234.56"));
    // The card's state in words with a mark, not by its colour alone.
    assert_eq!(text(&c, "#outcome-word").await, "✓ 有效");
    no_full_ssn(&c).await;
    check_screen(&c, "result (member)", false).await;
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

    // Two-swipe bind: holder, then member, relation, what the bind means,
    // confirm.
    click(&c, "#start-bind").await;
    screen(&c, "bind").await;
    check_screen(&c, "bind: the member's card", false).await;
    swipe(pty, 4, CHILD, "张小明").await;
    element(&c, "button[data-rel='child']").await;
    // The next step waits for a relation, and says so in words.
    assert!(disabled(&c, "#next").await);
    assert!(text(&c, "#next-why").await.contains("请先选择关系"));
    check_screen(&c, "bind: the relation", false).await;
    click(&c, "button[data-rel='child']").await;
    no_full_ssn(&c).await;
    touch_targets(&c).await;
    shot(&c, "kiosk-bind").await;
    click(&c, "#next").await;
    consent_and_bind(&c, "子女", Some("kiosk-consent")).await;
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
    click(&c, "#next").await;
    consent_and_bind(&c, "配偶", None).await;
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
    check_screen(&c, "records", false).await;
    shot(&c, "kiosk-records").await;
    viewport(&c, 1080, 1920).await;
    shot(&c, "kiosk-records-portrait").await;
    viewport(&c, 1280, 800).await;
    // Before the return to idle (10 s here) the seconds left are counted
    // down, with 继续 to stay: it starts the time again, the display's
    // session too (which would otherwise end 10 s after the last request).
    eventually("the countdown under 4 s", WAIT, async || {
        countdown(&c).await.filter(|s| *s <= 3)
    })
    .await;
    check_screen(&c, "records with the countdown", false).await;
    assert!(text(&c, "#countdown").await.contains("继续"));
    click(&c, "#stay").await;
    assert!(
        countdown(&c).await.is_some_and(|s| s >= 9),
        "继续 starts the time again"
    );
    eventually("the countdown under 6 s again", WAIT, async || {
        countdown(&c).await.filter(|s| *s <= 5)
    })
    .await;
    screen(&c, "records").await;
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
    check_screen(&c, "offline", false).await;
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

/// The printer's side of a pty for the daemon's `[printer]`: the
/// simulator's printer (as `cardlinkctl demo` runs it) in a state the test
/// sets, keeping the receipts it cuts.
type Receipts = std::sync::Arc<std::sync::Mutex<Vec<cardlink::printer::escpos::Printed>>>;

fn sim_printer(
    state: cardlink::printer::PrinterState,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<cardlink::printer::PrinterState>>,
    Receipts,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let pty = cardlink::sim::PtyMaster::open(None).unwrap();
    let toml = format!(
        "[printer]\npath = {:?}\nstation = \"自助机1\"\nstatus_interval_s = 1\n",
        pty.slave_path()
    );
    let state = std::sync::Arc::new(std::sync::Mutex::new(state));
    let got: Receipts = Default::default();
    let sink = got.clone();
    let task = tokio::spawn(cardlink::sim::play_printer(
        pty,
        state.clone(),
        cardlink::printer::Encoding::Gbk,
        move |r| sink.lock().unwrap().push(r),
    ));
    (toml, state, got, task)
}

fn set_printer(
    state: &std::sync::Mutex<cardlink::printer::PrinterState>,
    to: cardlink::printer::PrinterState,
) {
    *state.lock().unwrap() = to;
}

/// Both screenshots of a kiosk screen: landscape (1280×800) and portrait
/// (800×1280); the viewport is landscape again after.
async fn shots(c: &Client, name: &str) {
    shot(c, name).await;
    viewport(c, 800, 1280).await;
    shot(c, &format!("{name}-portrait")).await;
    viewport(c, 1280, 800).await;
}

/// 长辈模式 at a kiosk with a receipt printer, walked by a patient: the
/// control on every screen, large text and controls, members behind a
/// button, at least a minute before the return to idle; spoken prompts
/// (never a name or a number); the consent before a bind (its version in
/// the audit log); the printer's state said before the bind, the receipt's
/// outcome after it; records printed from their screen. Then a display
/// started with `--elder --speech never`: in 长辈模式 from the start, silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_elder_mode_speech_consent_and_receipts_in_headless_chromium() {
    use cardlink::printer::PrinterState;
    if !browser_available() {
        return;
    }
    let (printer, pstate, receipts, sim) = sim_printer(PrinterState::Ok);
    let (d, mut ptys) = Process::start(
        &[("k1", "frame", "utf-8")],
        &format!("role = \"kiosk\"\n{printer}"),
    );
    let (_display, _driver, c) = open_screen(&d, "idle").await;
    record_speech(&c, true).await;
    let pty = &mut ptys[0];

    // Normal mode, speech `elder` (the default): nothing is spoken.
    swipe(pty, 1, SPOUSE, "李娜").await;
    screen(&c, "result").await;
    assert_eq!(spoken(&c).await, vec![], "spoken outside 长辈模式");
    click(&c, "#done").await;
    screen(&c, "idle").await;

    // 长辈模式 by touch, on the idle screen: its sentence is spoken.
    click(&c, "#elder").await;
    until_spoken(&c, "请刷社保卡").await;
    check_screen(&c, "elder idle", true).await;
    assert!(
        spoken(&c).await.iter().all(|(_, lang)| lang == "zh-CN"),
        "{:?}",
        spoken(&c).await
    );
    shots(&c, "kiosk-elder-idle").await;

    // The holder: fewer things, the members behind a button.
    swipe(pty, 2, HOLDER, "张伟").await;
    screen(&c, "result").await;
    until_spoken(&c, "读卡成功").await;
    assert!(
        c.find(Locator::Css("#members")).await.is_err(),
        "members shown at once"
    );
    check_screen(&c, "elder result", true).await;
    shots(&c, "kiosk-elder-result").await;
    click(&c, "#show-members").await;
    assert!(text(&c, "#members").await.contains("配偶"));
    check_screen(&c, "elder members", true).await;
    click(&c, "#hide-members").await;
    // At least a minute before the return to idle (the display's is 10 s),
    // so no countdown yet.
    let left = c
        .execute("return (S.deadline - Date.now()) / 1000", vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap();
    assert!(left > 50.0, "{left} s left in 长辈模式");
    assert_eq!(countdown(&c).await, None);
    // The speaker button says the screen's sentence again.
    let before = spoken(&c).await.len();
    click(&c, "#say").await;
    eventually("said again", WAIT, async || {
        (spoken(&c).await.len() > before).then_some(())
    })
    .await;

    // Before the bind: a printer without paper is said in words.
    set_printer(&pstate, PrinterState::PaperEnd);
    click(&c, "#start-bind").await;
    screen(&c, "bind").await;
    until_xpath(
        &c,
        "//*[@id='printer-notice' and contains(., '打印机缺纸，本次无法打印凭条')]",
    )
    .await;
    check_screen(&c, "elder bind: the member's card", true).await;
    set_printer(&pstate, PrinterState::Ok);
    until_xpath(&c, "//*[@id='printer-notice' and normalize-space(.)='']").await;
    swipe(pty, 3, CHILD, "张小明").await;
    element(&c, "button[data-rel='child']").await;
    check_screen(&c, "elder bind: the relation", true).await;
    click(&c, "button[data-rel='child']").await;
    click(&c, "#next").await;
    until_spoken(&c, "请阅读并确认绑定说明").await;
    consent_and_bind(&c, "子女", None).await;
    assert!(text(&c, "#bound").await.contains("绑定成功"));
    // The receipt: printed, and said so.
    until_xpath(&c, "//*[@id='receipt' and contains(., '凭条已打印')]").await;
    eventually("the bind receipt", WAIT, async || {
        (receipts.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    // The audit row holds the statement's version.
    let audit = Command::new(env!("CARGO_BIN_EXE_cardlinkctl"))
        .args(["db", "--database"])
        .arg(&d.db)
        .args(["audit", "--action", "bind"])
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout).to_string();
    let version = cardlink::registry::consent::CURRENT.version;
    assert!(
        audit
            .lines()
            .any(|l| l.contains("bind") && l.contains(&format!("consent={version}"))),
        "no bind with consent {version} in:\n{audit}"
    );
    // The consent screen's pictures, with its statement (a new bind flow).
    swipe(pty, 4, HOLDER, "张伟").await;
    screen(&c, "result").await;
    click(&c, "#start-bind").await;
    screen(&c, "bind").await;
    swipe(pty, 5, PARENT, "王芳").await;
    click(&c, "button[data-rel='parent']").await;
    click(&c, "#next").await;
    screen(&c, "consent").await;
    shots(&c, "kiosk-elder-consent").await;
    click(&c, "#cancel").await;
    screen(&c, "idle").await;
    // Idle again: 长辈模式 went back to the display's default (off).
    check_screen(&c, "idle after 长辈模式", false).await;

    // Records in 长辈模式: six months, no chart, printed from the screen.
    click(&c, "#elder").await;
    swipe(pty, 6, HOLDER, "张伟").await;
    screen(&c, "result").await;
    click(&c, "#show-records").await;
    screen(&c, "records").await;
    assert_eq!(
        c.find_all(Locator::Css("#records tr")).await.unwrap().len(),
        1 + 6
    );
    assert!(c.find(Locator::Css("#chart")).await.is_err());
    check_screen(&c, "elder records", true).await;
    shots(&c, "kiosk-elder-records").await;
    click(&c, "#print").await;
    until_xpath(&c, "//*[@id='print-outcome' and contains(., '凭条已打印')]").await;
    eventually("the records receipt", WAIT, async || {
        (receipts.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    // Out of paper: the print is refused, in words.
    set_printer(&pstate, PrinterState::PaperEnd);
    eventually("paper end in status", WAIT, async || {
        let st = d
            .client()
            .await
            .request(serde_json::json!({"cmd": "status"}))
            .await;
        (st["result"]["printer"]["state"] == "paper_end").then_some(())
    })
    .await;
    click(&c, "#print").await;
    until_xpath(
        &c,
        "//*[@id='print-outcome' and contains(., '打印机不可用')]",
    )
    .await;

    // The offline screen has the control too.
    // What was spoken: Mandarin, never a name, never an identity number.
    let said = spoken(&c).await;
    for (text, lang) in &said {
        assert_eq!(lang, "zh-CN", "{text}");
        for name in ["张伟", "张*", "李娜", "李*", "张小明", "王芳", "王*"] {
            assert!(!text.contains(name), "a name spoken: {text}");
        }
        assert!(
            !text
                .as_bytes()
                .windows(4)
                .any(|w| w.iter().all(u8::is_ascii_digit)),
            "a number spoken: {text}"
        );
    }
    // No voice on the box: silent, and no error.
    c.execute("window.__spoken = [];", vec![]).await.unwrap();
    record_speech(&c, false).await;
    click(&c, "#back").await;
    screen(&c, "result").await;
    assert_eq!(spoken(&c).await, vec![]);

    // A display started in 长辈模式 with speech off.
    let (_quiet, login) = start_display_with(
        d.dir.path(),
        &d.socket,
        "quiet",
        &["--elder", "--speech", "never"],
    );
    c.goto(&login).await.unwrap();
    screen(&c, "idle").await;
    record_speech(&c, true).await;
    check_screen(&c, "--elder idle", true).await;
    swipe(pty, 7, HOLDER, "张伟").await;
    screen(&c, "result").await;
    check_screen(&c, "--elder result", true).await;
    click(&c, "#elder").await;
    click(&c, "#elder").await;
    assert_eq!(spoken(&c).await, vec![], "--speech never");
    // Offline: the control is there too.
    drop(d);
    screen(&c, "offline").await;
    check_screen(&c, "--elder offline", true).await;
    c.close().await.unwrap();
    sim.abort();
}
