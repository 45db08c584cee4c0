//! cardlink-libhelper: loads a vendor's MOHRSS standard interface library
//! and calls its `iReadCardBas` for cardlinkd, one call per request.
//!
//! `cardlink-libhelper LIBRARY ITYPE`, started and supervised by cardlinkd
//! (`daemon::library`), never by hand. On its standard input it reads one
//! `POLL` line per call; on its standard output it answers `READY` once the
//! library is loaded (or `FAIL text` and exits), then one `RC HEX` line per
//! call (`crate::reader::library::Answer`). A crash or a hang of the
//! library ends or stalls this process only; cardlinkd kills and restarts
//! it.
//!
//! Before loading the library it takes what it does not need away: no
//! new privileges (`PR_SET_NO_NEW_PRIVS`), no inherited descriptors but
//! its standard ones, and the library's own output on stdout and stderr
//! (which may hold card data) goes to /dev/null: the answers travel on a
//! copy of the original stdout.

use std::ffi::{c_char, c_int, c_long, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};

use cardlink::reader::library::{Answer, MAX_RECORD, POLL};

/// `long iReadCardBas(int iType, char *pOutInfo)`.
type ReadCardBas = unsafe extern "C" fn(c_int, *mut c_char) -> c_long;

/// The output buffer: far larger than any record, since some libraries
/// write more than the interface documents.
const OUT_BUFFER: usize = 64 * 1024;

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // The answers' channel: a private copy of stdout, taken before stdout
    // is pointed at /dev/null for the library.
    let (mut answers, requests) = match channels() {
        Ok(c) => c,
        Err(_) => return 2,
    };
    let mut say = |a: Answer| -> bool {
        writeln!(answers, "{}", a.to_line())
            .and_then(|()| answers.flush())
            .is_ok()
    };
    let (library, itype) = match (args.first(), args.get(1).and_then(|a| a.to_str())) {
        (Some(l), Some(t)) if args.len() == 2 => match t.parse::<c_int>() {
            Ok(t @ 1..=4) => (l.clone(), t),
            _ => {
                say(Answer::Failed(format!("iType {t} is not 1 to 4")));
                return 2;
            }
        },
        _ => {
            say(Answer::Failed(
                "usage: cardlink-libhelper LIBRARY ITYPE (started by cardlinkd)".into(),
            ));
            return 2;
        }
    };
    // SAFETY: loading a library runs its initialisers; that is the point
    // of this process, which holds nothing else.
    let lib = match unsafe { libloading::Library::new(&library) } {
        Ok(l) => l,
        Err(e) => {
            say(Answer::Failed(format!("cannot load: {}", chain(&e))));
            return 3;
        }
    };
    // SAFETY: the interface specification gives this signature.
    let read: libloading::Symbol<ReadCardBas> = match unsafe { lib.get(b"iReadCardBas\0") } {
        Ok(f) => f,
        Err(e) => {
            say(Answer::Failed(format!("no iReadCardBas: {}", chain(&e))));
            return 3;
        }
    };
    if !say(Answer::Ready) {
        return 0;
    }
    let mut out = vec![0u8; OUT_BUFFER];
    for line in requests.lines() {
        let Ok(line) = line else { return 0 };
        if line != POLL {
            say(Answer::Failed("unknown request".into()));
            return 4;
        }
        out.fill(0);
        // SAFETY: `out` is OUT_BUFFER bytes, zeroed, so whatever the
        // library writes within it ends in a NUL we find below.
        let rc = unsafe { read(itype, out.as_mut_ptr().cast::<c_char>()) };
        let len = out.iter().position(|&b| b == 0).unwrap_or(out.len());
        // c_long is i64 here, i32 on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        let answer = Answer::Result {
            rc: i64::from(rc),
            out: out[..len.min(MAX_RECORD)].to_vec(),
        };
        if !say(answer) {
            return 0;
        }
    }
    0
}

/// An error with its causes (libloading keeps dlerror's text in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    text
}

/// Drops privileges and descriptors, and returns the answers' channel (a
/// copy of stdout) and the requests (stdin); stdout and stderr then point
/// at /dev/null.
fn channels() -> std::io::Result<(File, BufReader<File>)> {
    // SAFETY: plain system calls on this process's own descriptors and
    // attributes; no Rust object owns the descriptors closed here.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        // Descriptors cardlinkd might have let through (it opens its own
        // with O_CLOEXEC; this is the second lock).
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..1024 {
                libc::close(fd);
            }
        }
        let answers = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        let requests = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        if answers < 0 || requests < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let null = File::options().read(true).write(true).open("/dev/null")?;
        for fd in 0..3 {
            libc::dup2(null.as_raw_fd(), fd);
        }
        Ok((
            File::from_raw_fd(answers),
            BufReader::new(File::from_raw_fd(requests)),
        ))
    }
}
