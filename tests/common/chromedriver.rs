//! chromedriver for the browser tests and the display benchmark, on a
//! port of its own choosing (`--port=0`: no free-port probing, which races
//! with other processes for the port between the probe and the bind).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Starts chromedriver in a process group of its own; returns it once it
/// says where it listens, with that port. `None` when it exits first.
pub fn start() -> Option<(Child, u16)> {
    let mut child = Command::new(CHROMEDRIVER)
        .arg("--port=0")
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let out = child.stdout.take()?;
    let mut lines = BufReader::new(out).lines();
    // "ChromeDriver was started successfully on port 45767."
    let port = lines.by_ref().map_while(Result::ok).find_map(|l| {
        l.split("started successfully on port ")
            .nth(1)?
            .trim_end_matches('.')
            .trim()
            .parse()
            .ok()
    });
    let Some(port) = port else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    // Drained so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Some((child, port))
}
