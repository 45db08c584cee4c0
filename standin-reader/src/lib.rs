//! A stand-in for a certified reader's standard interface library: it
//! exports `long iReadCardBas(int iType, char *pOutInfo)` like a vendor's
//! `.so`, and answers from a script, so that cardlink's tests drive the
//! real cardlinkd and its helper through a real `dlopen`. For tests only:
//! it is not part of the Debian package.
//!
//! The script is the file named by `CARDLINK_STANDIN_SCRIPT`, one step per
//! call, read anew at every call (a test may append steps while the daemon
//! runs):
//!
//! ```text
//! # a comment
//! rec HEX [*N]     return 0 with these bytes in pOutInfo (N calls in a row)
//! rc CODE [*N]     return CODE, pOutInfo empty
//! crash            raise SIGSEGV (a crash inside the library)
//! hang             never return
//! exit CODE        exit the whole process
//! probe            return -2 and append what the process holds to
//!                  `standin.log`: its environment's names, open
//!                  descriptors, NoNewPrivs, process group and uid
//! ```
//!
//! The number of steps taken so far is kept in `SCRIPT.pos`, so a helper
//! started again after a crash goes on with the next step. Past the last
//! step every call returns -2 (no card) and takes no step, so steps
//! appended later run next. Each call also appends a line
//! `iReadCardBas(ITYPE) step N` to `standin.log` in the working directory
//! (never the record itself).

use std::ffi::{c_char, c_int, c_long};
use std::io::Write;

/// One scripted answer.
enum Step {
    Record(Vec<u8>),
    Code(c_long),
    Crash,
    Hang,
    Exit(i32),
    Probe,
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The script's steps, repeats expanded.
fn steps(text: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let arg = words.next().unwrap_or_default();
        let times = words
            .next()
            .and_then(|w| w.strip_prefix('*'))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(1);
        let step = || match verb {
            "rec" => parse_hex(arg).map(Step::Record),
            "rc" => arg.parse().ok().map(Step::Code),
            "crash" => Some(Step::Crash),
            "hang" => Some(Step::Hang),
            "exit" => arg.parse().ok().map(Step::Exit),
            "probe" => Some(Step::Probe),
            _ => None,
        };
        for _ in 0..times {
            // A line the stand-in does not understand answers -13
            // (unsupported command): the test sees it.
            out.push(step().unwrap_or(Step::Code(-13)));
        }
    }
    out
}

/// # Safety
///
/// `out` must point to a buffer large enough for the record (the helper
/// passes 64 KiB).
#[no_mangle]
pub unsafe extern "C" fn iReadCardBas(itype: c_int, out: *mut c_char) -> c_long {
    let Some(script) = std::env::var_os("CARDLINK_STANDIN_SCRIPT") else {
        return -11;
    };
    let script = std::path::PathBuf::from(script);
    let pos_file = script.with_extension("pos");
    let pos: usize = std::fs::read_to_string(&pos_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let steps = steps(&std::fs::read_to_string(&script).unwrap_or_default());
    if pos < steps.len() {
        // Counted before the step runs: a crash or a hang is not repeated
        // by the next helper.
        let _ = std::fs::write(&pos_file, (pos + 1).to_string());
    }
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("standin.log")
    {
        let _ = writeln!(log, "iReadCardBas({itype}) step {pos}");
    }
    match steps.get(pos) {
        None => -2,
        Some(Step::Record(bytes)) => {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.cast::<u8>(), bytes.len());
            *out.add(bytes.len()) = 0;
            0
        }
        Some(Step::Code(c)) => *c,
        Some(Step::Crash) => {
            // As a real fault ends: Rust's runtime handler in the host
            // process gives a fault outside a stack guard back to the
            // default action.
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::raise(libc::SIGSEGV);
            -1
        }
        Some(Step::Hang) => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        Some(Step::Exit(code)) => std::process::exit(*code),
        Some(Step::Probe) => {
            probe();
            -2
        }
    }
}

/// What this process holds, for a test of the helper's privileges.
fn probe() {
    let mut names: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| {
                    let target = std::fs::read_link(e.path())
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    format!("{}={target}", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    fds.sort();
    let nnp = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("NoNewPrivs:"))
        .map(|l| l.split_whitespace().last().unwrap_or("?").to_string())
        .unwrap_or_default();
    // SAFETY: plain queries of this process.
    let (pgid, pid, uid) = unsafe { (libc::getpgrp(), libc::getpid(), libc::getuid()) };
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("standin.log")
    {
        let _ = writeln!(log, "env {}", names.join(" "));
        let _ = writeln!(log, "fds {}", fds.join(" "));
        let _ = writeln!(log, "nonewprivs {nnp}");
        let _ = writeln!(log, "pgid {pgid} pid {pid} uid {uid}");
    }
}
