//! Readers through the standard interface library (`mode = "library"`),
//! end to end: the real `cardlinkd` starts the real `cardlink-libhelper`,
//! which `dlopen`s the stand-in library (`standin-reader/`, a cdylib that
//! answers `iReadCardBas` from a script). Nothing here needs hardware.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{as_nobody, demo_ssn_full, eventually, sim_card, Client, Process, HOLDER, SPOUSE};
use serde_json::Value;

/// The longest wait for a state no event announces.
const WAIT: Duration = Duration::from_secs(30);

/// The stand-in library, built once per test binary (it is a workspace
/// member, not a dependency, so that it never reaches the package).
fn standin() -> PathBuf {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/library-… → target/<profile>
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "cardlink-standin"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        let st = cmd.status().unwrap();
        assert!(st.success(), "cannot build the stand-in library");
        let so = profile_dir.join("libcardlink_standin.so");
        assert!(so.is_file(), "{} missing", so.display());
        so
    })
    .clone()
}

/// A GBK record of fixture person `i`, as hex for the script.
fn record_hex(i: u64, name: &str) -> String {
    let record = sim_card(i, name).record();
    let (gbk, _, _) = encoding_rs::GBK.encode(&record);
    hex::encode(&gbk)
}

/// A running daemon with one library reader `lib1` (and the frame reader
/// `window1` on a pty) and the script its stand-in plays.
struct Lib {
    p: Process,
    ptys: Vec<cardlink::sim::PtyMaster>,
    script: PathBuf,
    workdir: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Lib {
    /// `reader_extra`: more settings of the library reader.
    fn start(reader_extra: &str, daemon_extra: &str) -> Lib {
        let so = standin();
        let scratch = tempfile::tempdir().unwrap();
        let script = scratch.path().join("script.txt");
        std::fs::write(&script, "# filled in by the test\n").unwrap();
        let workdir = scratch.path().join("vendor");
        std::fs::create_dir_all(&workdir).unwrap();
        let extra = format!(
            "{daemon_extra}\n[[reader]]\nname = \"lib1\"\nmode = \"library\"\nlibrary = {so:?}\npoll_ms = 20\nworkdir = {workdir:?}\nenv = {{ CARDLINK_STANDIN_SCRIPT = {script:?} }}\n{reader_extra}\n"
        );
        let (p, ptys) = Process::start(&[("window1", "frame", "gbk")], &extra);
        Lib {
            p,
            ptys,
            script,
            workdir,
            _scratch: scratch,
        }
    }

    /// Appends steps to the stand-in's script.
    fn play(&self, steps: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.script)
            .unwrap();
        f.write_all(steps.as_bytes()).unwrap();
    }

    /// Stops the daemon; its whole log, checked for full SSNs.
    fn stop(self) -> String {
        let (_, log) = self.p.stop();
        for i in [HOLDER, SPOUSE] {
            assert!(
                !log.contains(&demo_ssn_full(i)),
                "a full SSN in the daemon's log:\n{log}"
            );
        }
        log
    }
}

/// Reads events until `lib1` is in `state` (its hello line counts);
/// returns that `READER` line.
async fn until_state(c: &mut Client, state: &str) -> Value {
    loop {
        let v = c.next().await;
        if v["class"] == "READER" && v["reader"] == "lib1" && v["state"] == state {
            return v;
        }
    }
}

/// Events of `lib1` (CARD, ERROR, REMOVED) until `last` says it is the end.
async fn events_until(c: &mut Client, last: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let v = c.next().await;
        let ours = v["reader"] == "lib1"
            || (v["class"] == "ERROR"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("lib1:")));
        if !ours || v["class"] == "READER" {
            continue;
        }
        let done = last(&v);
        seen.push(v);
        if done {
            return seen;
        }
    }
}

async fn lib_status(c: &mut Client) -> Value {
    let r = c.request(serde_json::json!({"cmd": "status"})).await;
    r["result"]["readers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "lib1")
        .cloned()
        .unwrap()
}

fn cards_of(events: &[Value], i: u64) -> usize {
    let masked = {
        let s = demo_ssn_full(i);
        format!("{}********{}", &s[..6], &s[14..])
    };
    events
        .iter()
        .filter(|e| e["class"] == "CARD" && (e["ssn"] == demo_ssn_full(i) || e["ssn"] == masked))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_card_per_insertion_of_a_members_card() {
    let lib = Lib::start("", "");
    let mut c = lib.p.client().await;
    until_state(&mut c, "connected").await;
    let spouse = record_hex(SPOUSE, "李娜");
    let holder = record_hex(HOLDER, "张伟");
    // The card stays for five polls, is taken out, inserted again for
    // five polls, taken out; then the holder's card ends the scene (and
    // stays, so that no third REMOVED races the test).
    lib.play(&format!(
        "rec {spouse} *5\nrc -2 *3\nrec {spouse} *5\nrc -2\nrec {holder} *500\n"
    ));
    let events = events_until(&mut c, |v| {
        v["class"] == "CARD" && cards_of(std::slice::from_ref(v), HOLDER) == 1
    })
    .await;
    assert_eq!(cards_of(&events, SPOUSE), 2, "{events:#?}");
    let member = events
        .iter()
        .find(|e| e["class"] == "CARD" && cards_of(std::slice::from_ref(e), SPOUSE) == 1)
        .unwrap();
    assert_eq!(member["outcome"], "ok", "{member}");
    assert_eq!(member["role"], "member", "{member}");
    assert_eq!(member["relation"], "spouse", "{member}");
    assert_eq!(member["source"], "ic", "{member}");
    assert_eq!(
        member["name"].as_str().map(|n| n.starts_with('李')),
        Some(true)
    );
    assert_eq!(
        events.iter().filter(|e| e["class"] == "REMOVED").count(),
        2,
        "each removal once: {events:#?}"
    );
    assert!(
        !events.iter().any(|e| e["class"] == "ERROR"),
        "-2 is idle, not an error: {events:#?}"
    );
    // (The resolver counts a card just after its event.)
    let s = eventually("the reader counts three cards", WAIT, async || {
        let s = lib_status(&mut c).await;
        (s["cards"] == 3).then_some(s)
    })
    .await;
    assert_eq!(s["mode"], "library");
    assert_eq!(s["state"], "connected");
    assert_eq!(s["cards"], 3, "{s}");
    assert_eq!(s["restarts"], 0, "{s}");
    assert_eq!(s["path"], standin().display().to_string());
    // The default card type is 3 (automatic, contact first), and the
    // library ran in the configured working directory.
    let calls = std::fs::read_to_string(lib.workdir.join("standin.log")).unwrap();
    assert!(
        calls.lines().all(|l| l.starts_with("iReadCardBas(3)")),
        "{calls}"
    );
    lib.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_codes_reach_the_screens_with_their_meanings() {
    let lib = Lib::start("card_type = \"contactless\"", "");
    let mut c = lib.p.client().await;
    until_state(&mut c, "connected").await;
    // -2201 on every poll while the card stays is one error; an empty
    // third-generation record is card_not_authenticated; -11 ends it.
    let unauth = hex::encode(
        "411600|||411600D15600000512345678ABCDEF01||3B6D000000815448|3.00|20211203|20311202|||",
    );
    lib.play(&format!(
        "rc -2201 *4\nrc -2\nrc -27010\nrc -2\nrec {unauth} *3\nrc -2\nrc -11\n"
    ));
    let all = events_until(&mut c, |v| v["reader_code"] == -11).await;
    // The unauthenticated card was in the reader, and was taken out.
    assert_eq!(
        all.iter().filter(|e| e["class"] == "REMOVED").count(),
        1,
        "{all:#?}"
    );
    let events: Vec<Value> = all.into_iter().filter(|e| e["class"] == "ERROR").collect();
    let codes: Vec<&Value> = events.iter().map(|e| &e["reader_code"]).collect();
    assert_eq!(
        events.len(),
        4,
        "one event per answer that changed: {events:#?}"
    );
    assert_eq!(events[0]["code"], "reader_read_error");
    assert_eq!(events[0]["reader_code"], -2201);
    assert_eq!(events[0]["zh"], "未插 PSAM 卡");
    assert_eq!(events[0]["en"], "no PSAM card in the reader");
    assert_eq!(events[1]["reader_code"], -27010, "{codes:?}");
    assert!(events[1]["zh"].as_str().unwrap().contains("安全状态不满足"));
    assert_eq!(events[2]["code"], "card_not_authenticated", "{events:#?}");
    assert_eq!(events[3]["en"], "reader connection error");
    // After the script, "no card" again.
    eventually("the last code is -2 again", WAIT, async || {
        (lib_status(&mut c).await["last_code"] == -2).then_some(())
    })
    .await;
    // cardlinkctl status shows the state, the restarts and the last code.
    let out = Command::new(env!("CARGO_BIN_EXE_cardlinkctl"))
        .args(["status", "--socket"])
        .arg(&lib.p.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("reader lib1 ("), "{text}");
    assert!(text.contains("library): connected"), "{text}");
    assert!(text.contains("helper restarts: 0"), "{text}");
    assert!(
        text.contains("last return code: -2 (无卡 / no card in the reader)"),
        "{text}"
    );
    // card_type = "contactless" is iType 2.
    let calls = std::fs::read_to_string(lib.workdir.join("standin.log")).unwrap();
    assert!(
        calls.lines().all(|l| l.starts_with("iReadCardBas(2)")),
        "{calls}"
    );
    lib.stop();
}

/// The children of `pid` named like the helper.
fn helpers_of(pid: u32) -> Vec<u32> {
    // Children are listed under the thread that started them.
    let mut children = String::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        children += &std::fs::read_to_string(task.join("children")).unwrap_or_default();
        children.push(' ');
    }
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .filter(|c| {
            std::fs::read_to_string(format!("/proc/{c}/comm"))
                .is_ok_and(|n| n.trim().starts_with("cardlink-libhel"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segfault_in_the_library_leaves_the_daemon_serving() {
    let mut lib = Lib::start("", "");
    let mut c = lib.p.client().await;
    until_state(&mut c, "connected").await;
    let before = helpers_of(lib.p.child.id());
    assert_eq!(before.len(), 1, "{before:?}");
    lib.play("crash\n");
    let err = until_state(&mut c, "error").await;
    let cause = err["error"].as_str().unwrap();
    assert!(cause.contains("signal 11 (SIGSEGV)"), "{err}");
    // Everything else goes on: the socket answers, the frame reader reads.
    let s = lib_status(&mut c).await;
    assert_eq!(s["last_error"].as_str(), Some(cause));
    use tokio::io::AsyncWriteExt;
    lib.ptys[0]
        .write_all(&common::card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    let card = c.expect("CARD").await;
    assert_eq!(card["reader"], "window1");
    // The helper is started again and the reader reads again.
    until_state(&mut c, "connected").await;
    lib.play(&format!("rec {}\n", record_hex(SPOUSE, "李娜")));
    let events = events_until(&mut c, |v| v["class"] == "CARD").await;
    assert_eq!(cards_of(&events, SPOUSE), 1, "{events:#?}");
    let s = lib_status(&mut c).await;
    assert_eq!(s["restarts"], 1, "{s}");
    let after = helpers_of(lib.p.child.id());
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(before, after);
    let log = lib.stop();
    assert!(log.contains("library helper ended"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_call_is_cut_by_the_timeout() {
    let lib = Lib::start("call_timeout_ms = 1000", "");
    let mut c = lib.p.client().await;
    until_state(&mut c, "connected").await;
    let hung = helpers_of(lib.p.child.id());
    lib.play(&format!("hang\nrec {}\n", record_hex(HOLDER, "张伟")));
    let err = until_state(&mut c, "error").await;
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("iReadCardBas did not return within 1000 ms; helper killed"),
        "{err}"
    );
    until_state(&mut c, "connected").await;
    let events = events_until(&mut c, |v| v["class"] == "CARD").await;
    assert_eq!(cards_of(&events, HOLDER), 1, "{events:#?}");
    // The hung helper is gone (killed and reaped), one new one runs.
    for pid in &hung {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|n| !n.starts_with("cardlink-libhel")),
            "the hung helper {pid} still runs"
        );
    }
    assert_eq!(helpers_of(lib.p.child.id()).len(), 1);
    lib.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_that_does_not_load_is_an_error_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libmissing.so");
    let extra = format!("[[reader]]\nname = \"lib1\"\nmode = \"library\"\nlibrary = {missing:?}\n");
    let (p, _ptys) = Process::start(&[], &extra);
    let mut c = p.client().await;
    let err = until_state(&mut c, "error").await;
    let cause = err["error"].as_str().unwrap();
    assert!(cause.contains("library: cannot load"), "{err}");
    assert!(cause.contains("libmissing.so"), "{err}");
    // It keeps trying, with backoff, counting restarts.
    eventually("two restarts", WAIT, async || {
        (lib_status(&mut c).await["restarts"].as_u64() >= Some(2)).then_some(())
    })
    .await;
    p.stop();
}

/// Runs cardlinkctl: (exit code, stdout and stderr).
fn ctl(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cardlinkctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_reader_is_captured_replayed_and_redacted() {
    let captures = tempfile::tempdir().unwrap();
    let lib = Lib::start(
        "capture = true",
        &format!("capture_dir = {:?}", captures.path()),
    );
    let mut c = lib.p.client().await;
    until_state(&mut c, "connected").await;
    let spouse = record_hex(SPOUSE, "李娜");
    let holder = record_hex(HOLDER, "张伟");
    lib.play(&format!(
        "rec {spouse} *3\nrc -2\nrec {spouse} *3\nrc -2\nrc -2201 *2\nrc -2\nrec {holder}\n"
    ));
    events_until(&mut c, |v| {
        v["class"] == "CARD" && cards_of(std::slice::from_ref(v), HOLDER) == 1
    })
    .await;
    drop(c);
    lib.stop();
    let cap = captures.path().join("lib1.cap");
    // It holds full SSNs and names, like any capture: 0600, and a uid on
    // the wrong side cannot read it even where the directory lets it in.
    {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let mode = std::fs::metadata(&cap).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(captures.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cat = Command::new("/bin/cat");
        cat.arg(&cap);
        // SAFETY: setgid/setuid between fork and exec.
        unsafe {
            cat.pre_exec(|| {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cat.output().unwrap();
        assert!(!out.status.success(), "uid 65534 read the capture");
        assert!(out.stdout.is_empty());
    }
    let file = cardlink::capture::CaptureFile::read(&cap).unwrap();
    assert_eq!(file.header.mode, cardlink::reader::codec::Mode::Library);
    // Each answer that changed, as the line a text-mode reader sends.
    let answers: Vec<Vec<u8>> = file.chunks().map(|c| c.bytes.clone()).collect();
    // (Whether the first poll came before the script's first step is a
    // race: a leading "no card" is left out.)
    let lines: Vec<String> = answers
        .iter()
        .skip_while(|b| b.starts_with(b"-2\r"))
        .map(|b| match b.first() {
            Some(b'-') => String::from_utf8_lossy(b).trim().to_string(),
            _ => "record".into(),
        })
        .collect();
    assert_eq!(
        lines[..lines.len().min(7)],
        ["record", "-2", "record", "-2", "-2201", "-2", "record"],
        "{lines:?}\n{}",
        std::fs::read_to_string(&cap).unwrap()
    );
    // Replayed on a registry that knows the persons: the same events.
    let reg = tempfile::tempdir().unwrap();
    let db = common::fixture_db(reg.path());
    let (code, out) = ctl(&[
        "replay".as_ref(),
        "--check".as_ref(),
        cap.as_os_str(),
        "--regen".as_ref(),
        "--database".as_ref(),
        db.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let chk = std::fs::read_to_string(cap.with_extension("cap.chk")).unwrap();
    let events: Vec<Value> = chk
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cards_of(&events, SPOUSE), 2, "{chk}");
    assert_eq!(cards_of(&events, HOLDER), 1, "{chk}");
    assert_eq!(
        events.iter().filter(|e| e["reader_code"] == -2201).count(),
        1,
        "{chk}"
    );
    let member = events.iter().find(|e| e["class"] == "CARD").unwrap();
    assert_eq!(member["role"], "member", "{member}");
    let (code, out) = ctl(&[
        "replay".as_ref(),
        "--check".as_ref(),
        cap.as_os_str(),
        "--database".as_ref(),
        db.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("events match"), "{out}");
    // Redacted: no original SSN, name or card number left, and it still
    // replays to the same shape of events (synthetic persons: unknown).
    let red = captures.path().join("lib1-redacted.cap");
    let (code, out) = ctl(&[
        "capture".as_ref(),
        "redact".as_ref(),
        cap.as_os_str(),
        red.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let text = std::fs::read_to_string(&red).unwrap();
    let redacted = cardlink::capture::CaptureFile::read(&red).unwrap();
    let stream: Vec<u8> = redacted.chunks().flat_map(|c| c.bytes.clone()).collect();
    for i in [HOLDER, SPOUSE] {
        let ssn = demo_ssn_full(i);
        assert!(!text.contains(&ssn) && !text.contains(&hex::encode(&ssn)));
        assert!(!stream.windows(18).any(|w| w == ssn.as_bytes()), "{i}");
        let card = common::card(i);
        assert!(!stream.windows(9).any(|w| w == card.as_bytes()), "{i}");
    }
    let (gbk, _, _) = encoding_rs::GBK.encode("李娜");
    assert!(!stream.windows(gbk.len()).any(|w| w == &gbk[..]));
    let (code, out) = ctl(&[
        "replay".as_ref(),
        "--check".as_ref(),
        red.as_os_str(),
        "--regen".as_ref(),
        "--database".as_ref(),
        db.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let chk = std::fs::read_to_string(red.with_extension("cap.chk")).unwrap();
    assert_eq!(chk.matches("\"class\":\"CARD\"").count(), 3, "{chk}");
    assert_eq!(chk.matches("\"reader_code\":-2201").count(), 1, "{chk}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_holds_no_more_than_it_needs_and_dies_with_the_daemon() {
    let scratch = tempfile::tempdir().unwrap();
    let script = scratch.path().join("script.txt");
    std::fs::write(&script, "probe\n").unwrap();
    let workdir = scratch.path().join("vendor");
    std::fs::create_dir_all(&workdir).unwrap();
    let extra = format!(
        "[[reader]]\nname = \"lib1\"\nmode = \"library\"\nlibrary = {:?}\npoll_ms = 20\nworkdir = {workdir:?}\nenv = {{ CARDLINK_STANDIN_SCRIPT = {script:?}, VENDOR_INI = \"/etc/vendor.ini\" }}\n",
        standin()
    );
    let (mut p, _ptys) = Process::start_env(
        &[],
        &extra,
        &[("CARDLINK_DAEMON_ONLY", "not for the library".into())],
    );
    let log = workdir.join("standin.log");
    let probe = eventually("the stand-in's probe in its log", WAIT, async || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("\npgid ").then_some(text)
    })
    .await;
    let field = |name: &str| {
        probe
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .to_string()
    };
    // Only PATH, LANG and the reader's env: nothing of the daemon's.
    assert_eq!(
        field("env"),
        "CARDLINK_STANDIN_SCRIPT LANG PATH VENDOR_INI",
        "{probe}"
    );
    // Standard descriptors on /dev/null (the library's output may hold
    // card data), the two pipes to cardlinkd, nothing else it inherited
    // (the probe's own listing of /proc/self/fd aside).
    for fd in field("fds").split(' ') {
        let (n, target) = fd.split_once('=').unwrap();
        let n: u32 = n.parse().unwrap();
        if n < 3 {
            assert_eq!(target, "/dev/null", "{probe}");
        } else {
            assert!(
                target.starts_with("pipe:") || target.ends_with("/fd"),
                "descriptor {fd} in the helper: {probe}"
            );
        }
    }
    assert_eq!(field("fds").matches("pipe:").count(), 2, "{probe}");
    assert_eq!(field("nonewprivs"), "1", "{probe}");
    let ids: Vec<i64> = field("pgid")
        .split(' ')
        .filter_map(|w| w.parse().ok())
        .collect();
    let (pgid, pid) = (ids[0], ids[1]);
    assert_eq!(pgid, pid, "the helper leads its own process group: {probe}");
    assert_ne!(pid, i64::from(p.child.id()));
    // Another local uid can neither read what the helper answers (its
    // pipes, its environment) nor signal it.
    if unsafe { libc::geteuid() } == 0 {
        let nobody = |script: String| {
            let out = as_nobody(std::process::Command::new("/bin/sh").args(["-c", &script]))
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        };
        for f in ["fd/1", "fd/0", "environ"] {
            let (ok, err) = nobody(format!("cat /proc/{pid}/{f} > /dev/null"));
            assert!(!ok, "uid 65534 read the helper's {f}");
            assert!(err.contains("ermission denied"), "{f}: {err}");
        }
        let (ok, err) = nobody(format!("kill -0 {pid}"));
        assert!(!ok, "uid 65534 may signal the helper: {err}");
    } else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true runs as root: the uid check must run"
        );
        eprintln!("skipped: the check as another uid needs root");
    }
    // Killed with the daemon, whatever kills the daemon.
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    eventually("the helper gone with the daemon", WAIT, async || {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let gone = st.is_empty()
            || st
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'));
        gone.then_some(())
    })
    .await;
    // Nothing the daemon logged holds a full SSN (none was read here).
    assert!(!p.log.text().contains(&demo_ssn_full(HOLDER)));
}

/// Writes `tests/captures/library-standin.cap` (and its `.chk`): recorded
/// through the real daemon and helper from the stand-in library, on the
/// demo registry the suite replays against. Run with `cargo test --test
/// library -- --ignored write_the_library_capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn write_the_library_capture() {
    use cardlink::registry::{OpenOptions, Registry};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("replay.db");
    let cards = {
        let mut reg = Registry::open(&db, &OpenOptions::default()).unwrap();
        reg.gen_demo(&cardlink::ctl::REPLAY_REGISTRY).unwrap();
        reg.connection()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        cardlink::sim::sample_cards(&reg, cardlink::Date::today_cst()).unwrap()
    };
    let gbk = |c: &cardlink::sim::SimCard| {
        let record = c.record();
        hex::encode(encoding_rs::GBK.encode(&record).0)
    };
    let (a, b) = (gbk(&cards[0]), gbk(&cards[1]));
    let unauth = hex::encode(
        "411600|||411600D15600000512345678ABCDEF01||3B6D000000815448|3.00|20211203|20311202|||",
    );
    let scratch = tempfile::tempdir().unwrap();
    let captures = scratch.path().join("captures");
    let script = scratch.path().join("script.txt");
    std::fs::write(&script, "").unwrap();
    let extra = format!(
        "capture_dir = {captures:?}\n[[reader]]\nname = \"window5\"\nmode = \"library\"\nlibrary = {:?}\npoll_ms = 20\ncapture = true\nenv = {{ CARDLINK_STANDIN_SCRIPT = {script:?} }}\n",
        standin()
    );
    let (p, _) = Process::start_on(dir, db.clone().into(), db, &[], &extra, &[]);
    let mut c = p.client().await;
    loop {
        let v = c.next().await;
        if v["class"] == "READER" && v["reader"] == "window5" && v["state"] == "connected" {
            break;
        }
    }
    std::fs::write(
        &script,
        format!(
            "rec {a} *4\nrc -2 *2\nrec {a} *3\nrc -2\nrc -2201 *3\nrc -2\nrec {b} *2\nrc -2\nrec {unauth} *2\nrc -2\nrc -27010\nrc -2\n"
        ),
    )
    .unwrap();
    loop {
        let v = c.next().await;
        if v["reader_code"] == -27010 {
            break;
        }
    }
    drop(c);
    let cap = captures.join("window5.cap");
    let (_, log) = p.stop();
    for card in &cards[..2] {
        assert!(!log.contains(&card.ssn), "{log}");
    }
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures");
    let out = suite.join("library-standin.cap");
    let text = std::fs::read_to_string(&cap).unwrap();
    let (head, rest) = text.split_at(text.match_indices('\n').nth(1).unwrap().0 + 1);
    std::fs::write(
        &out,
        format!("{head}# recorded through cardlinkd and cardlink-libhelper from the stand-in library: a holder's card in, out, in again (polled all along), -2201, a member's card, an unauthenticated 3.0 record, -27010\n{rest}"),
    )
    .unwrap();
    let (code, text) = ctl(&[
        "replay".as_ref(),
        "--check".as_ref(),
        out.as_os_str(),
        "--regen".as_ref(),
    ]);
    assert_eq!(code, Some(0), "{text}");
}
