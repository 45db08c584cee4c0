//! Debian's stock `sqlite3` shell, as an administrator meets the registry
//! file with it (a system package that `.ci/run` installs).

use std::path::Path;
use std::process::{Command, Stdio};

/// The shell's version, or `None` (and a note) when a test should be
/// skipped; under `CI=true` a missing shell fails the test instead.
pub fn shell() -> Option<String> {
    let found = Command::new("sqlite3")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match found {
        Some(v) => {
            eprintln!("sqlite3 shell {v}");
            Some(v)
        }
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the sqlite3 shell is required under CI=true (apt-get install sqlite3)")
        }
        None => {
            eprintln!("skipped: the sqlite3 shell is not installed");
            None
        }
    }
}

/// Runs the shell on `db` with `args` and `sql` on stdin (as an
/// administrator types it: foreign keys off, the shell's defaults);
/// returns (ok, stdout, stderr).
pub fn run(db: &Path, args: &[&str], sql: &str) -> (bool, String, String) {
    let mut child = Command::new("sqlite3")
        .arg("-bail")
        .arg(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
