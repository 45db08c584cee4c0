//! A reader driven through its vendor's standard interface library
//! (`mode = "library"`): the library is loaded and called in a helper
//! process, `cardlink-libhelper`, that this task starts and supervises.
//!
//! Vendor libraries crash, hang, leak and are not thread-safe, so none of
//! them is ever loaded into cardlinkd. The helper answers one `POLL` line
//! per call with the return code and the raw record (see
//! [`crate::reader::library::Answer`]); this task
//!
//! - polls every `poll_ms`, and gives each call `call_timeout_ms`: a call
//!   that has not returned by then gets the helper's whole process group
//!   killed;
//! - when the helper ends (a signal such as SIGSEGV, an exit, the timeout)
//!   puts the reader in state `error` with the cause, and starts a new one
//!   with capped exponential backoff (100 ms → 5 s), counting restarts;
//!   nothing else of the daemon is touched;
//! - keeps one read per card insertion ([`Insertions`]) and decodes each
//!   new answer as the `ssse-text` line it stands for, with the same code
//!   as text-mode readers; card reads go to a resolver task beside it, as
//!   for serial readers, so the registry never stalls the polling;
//! - records each new answer in the reader's capture as such a line.
//!
//! The helper gets a cleared environment (`PATH`, `LANG` and the reader's
//! `env`), the reader's `workdir`, its own process group, no inherited
//! descriptors but its pipes, and dies with the daemon (`PDEATHSIG`); it
//! sets `PR_SET_NO_NEW_PRIVS` itself.
//!
//! In-memory tests and `replay --check` give the reader a port instead
//! ([`OpenPort::library_port`]): each line on it is one answer.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;

use firmware_protocol::Date;

use super::capture::{Capture, Direction};
use super::ctx::Ctx;
use super::event::Event;
use super::port::{OpenPort, Port};
use super::reading::{
    deliver, reader_backoff, resolve_reads, set_state, BACKOFF_MAX, PENDING_READS,
};
use crate::config::ReaderConfig;
use crate::protocol::ReaderState;
use crate::reader::card::{self, CardRead};
use crate::reader::codec::{Mode, ReaderCodec, ReaderItem};
use crate::reader::library::{Answer, Change, Insertions, MAX_ANSWER, POLL};

/// The helper's file name.
pub const HELPER: &str = "cardlink-libhelper";
/// Where the package installs the helper when it is not beside cardlinkd.
pub const HELPER_INSTALLED: &str = "/usr/libexec/cardlink/cardlink-libhelper";

/// The helper binary: `CARDLINK_LIBHELPER` when set, else beside the
/// running executable, else [`HELPER_INSTALLED`].
pub fn helper_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CARDLINK_LIBHELPER") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(HELPER))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(HELPER_INSTALLED))
}

/// The reader task of a library reader, until cancelled.
pub async fn run(
    cfg: ReaderConfig,
    ctx: Arc<Ctx>,
    ports: Arc<dyn OpenPort>,
    capture: Arc<Capture>,
    stop: CancellationToken,
) {
    let (reads, pending) = mpsc::channel(PENDING_READS);
    // A library reader has no light or beeper of ours: FEEDBACK is dropped.
    let (feedback, _) = mpsc::channel(1);
    let resolver = tokio::spawn(resolve_reads(
        cfg.name.clone(),
        ctx.clone(),
        stop.clone(),
        pending,
        feedback,
    ));
    ctx.update_reader(&cfg.name, &stop, |s| s.restarts = Some(0));
    let mut poller = Poller {
        cfg: &cfg,
        ctx: &ctx,
        stop: &stop,
        capture: &capture,
        reads: &reads,
        insertions: Insertions::new(),
        answered: false,
    };
    let mut backoff = reader_backoff();
    let mut started = 0u64;
    loop {
        if stop.is_cancelled() {
            break;
        }
        if started > 0 {
            ctx.update_reader(&cfg.name, &stop, |s| s.restarts = Some(started));
        }
        started += 1;
        poller.answered = false;
        poller.insertions.reset();
        let began = tokio::time::Instant::now();
        let cause = match ports.library_port(&cfg) {
            None => poller.helper().await,
            Some(Ok(port)) => poller.lines(port).await,
            Some(Err(e)) => format!("cannot open: {e}"),
        };
        if stop.is_cancelled() {
            break;
        }
        // A helper that served a while starts again soon; one that keeps
        // failing at once (a library that crashes at every call) slows
        // down to one start every BACKOFF_MAX.
        if poller.answered && began.elapsed() >= 2 * BACKOFF_MAX {
            backoff.reset();
        }
        set_state(&ctx, &cfg, &stop, ReaderState::Error, Some(cause));
        if !backoff.wait(&stop).await {
            break;
        }
    }
    drop(reads);
    let _ = resolver.await;
}

struct Poller<'a> {
    cfg: &'a ReaderConfig,
    ctx: &'a Arc<Ctx>,
    stop: &'a CancellationToken,
    capture: &'a Capture,
    reads: &'a mpsc::Sender<CardRead>,
    insertions: Insertions,
    /// The current helper (or port) answered at least one call.
    answered: bool,
}

impl Poller<'_> {
    /// One answer of the library: counted, and passed on when it is new.
    /// `Err` when the reader must stop.
    async fn answer(&mut self, rc: i64, out: &[u8]) -> Result<(), String> {
        self.answered = true;
        self.ctx.update_reader(&self.cfg.name, self.stop, |s| {
            s.items += 1;
            s.last_code = Some(rc);
        });
        let line = match self.insertions.next(rc, out) {
            Change::Same => return Ok(()),
            Change::Idle { removed } => {
                self.capture
                    .record(Direction::FromReader, format!("{rc}\r\n").as_bytes());
                if removed {
                    self.ctx.publish(Event::Removed {
                        reader: self.cfg.name.clone(),
                    });
                }
                return Ok(());
            }
            Change::New(line) => line,
        };
        let mut captured = line.clone();
        captured.extend_from_slice(b"\r\n");
        self.capture.record(Direction::FromReader, &captured);
        let item = ReaderItem::Record(line.into());
        let decoded = card::decode(&item, self.cfg.encoding, Date::today_cst());
        deliver(self.cfg, self.ctx, self.stop, self.reads, decoded)
            .await
            .map(|_| ())
    }

    /// Answers as lines on a port (tests, replay). Returns the cause of
    /// the end.
    async fn lines(&mut self, port: Port) -> String {
        let mut framed = FramedRead::new(port, ReaderCodec::new(Mode::Library));
        set_state(self.ctx, self.cfg, self.stop, ReaderState::Connected, None);
        loop {
            let item = tokio::select! {
                _ = self.stop.cancelled() => return "stopped".into(),
                item = framed.next() => item,
            };
            let line = match item {
                None => return "end of file".into(),
                Some(Err(e)) => return format!("read failed: {e}"),
                Some(Ok(ReaderItem::Record(line))) => line,
                Some(Ok(_)) => continue,
            };
            let (rc, out) = match firmware_protocol::retcode::parse_line(&line) {
                Some(code) => (i64::from(code), &[][..]),
                None => (0, &line[..]),
            };
            if let Err(why) = self.answer(rc, out).await {
                return why;
            }
        }
    }

    /// Starts the helper and polls it until it ends. Returns the cause.
    async fn helper(&mut self) -> String {
        let cfg = self.cfg;
        let mut child = match spawn(cfg) {
            Ok(c) => c,
            Err(e) => return format!("cannot start {}: {e}", helper_path().display()),
        };
        // Its process group, kept: whatever the library started in it is
        // killed too, also after the helper itself was reaped.
        let group = child.id().and_then(|p| i32::try_from(p).ok());
        let cause = self.serve(&mut child).await;
        let status = end(&mut child, group, matches!(cause, Ended::Exited)).await;
        let cause = match (cause, status) {
            (Ended::Cause(c), _) => c,
            (Ended::Exited, Some(st)) => describe(st),
            (Ended::Exited, None) => "the helper closed its output".into(),
        };
        // The helper's text may quote the library: masked like any free
        // text from a reader, before it is logged, published or kept.
        let cause = crate::mask::free_text(&cause);
        if !self.stop.is_cancelled() {
            tracing::warn!(reader = %cfg.name, cause = %cause, "library helper ended");
        }
        cause
    }

    async fn serve(&mut self, child: &mut Child) -> Ended {
        let cfg = self.cfg;
        let (Some(mut input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Ended::Cause("the helper has no pipes".into());
        };
        // A FramedRead keeps a partial line across select! iterations.
        let mut output = FramedRead::new(output, LinesCodec::new_with_max_length(MAX_ANSWER));
        let ms = cfg.call_timeout_ms;
        match self.next(&mut output, ms, "the library did not load").await {
            Ok(Answer::Ready) => {}
            Ok(_) => return Ended::Cause("the helper answered before it was ready".into()),
            Err(e) => return e,
        }
        tracing::info!(reader = %cfg.name, library = %cfg.shown_path(), itype = cfg.card_type.itype(), "library loaded by the helper");
        set_state(self.ctx, self.cfg, self.stop, ReaderState::Connected, None);
        let mut tick = tokio::time::interval(Duration::from_millis(cfg.poll_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Ended::Cause("stopped".into()),
                _ = tick.tick() => {}
            }
            // Five bytes into an empty pipe (one call at a time): not raced.
            if input
                .write_all(format!("{POLL}\n").as_bytes())
                .await
                .is_err()
            {
                return Ended::Exited;
            }
            match self
                .next(&mut output, ms, "iReadCardBas did not return")
                .await
            {
                Ok(Answer::Result { rc, out }) => {
                    if let Err(why) = self.answer(rc, &out).await {
                        return Ended::Cause(why);
                    }
                }
                Ok(_) => return Ended::Cause("the helper answered out of turn".into()),
                Err(e) => return e,
            }
        }
    }

    /// The helper's next answer, waited for at most `ms` (a helper that
    /// is late is killed: `late` says what did not happen in time).
    async fn next(
        &self,
        output: &mut FramedRead<ChildStdout, LinesCodec>,
        ms: u64,
        late: &str,
    ) -> Result<Answer, Ended> {
        let r = tokio::select! {
            _ = self.stop.cancelled() => return Err(Ended::Cause("stopped".into())),
            r = tokio::time::timeout(Duration::from_millis(ms), output.next()) => r,
        };
        match r {
            Err(_) => Err(Ended::Cause(format!(
                "{late} within {ms} ms; helper killed"
            ))),
            Ok(None) => Err(Ended::Exited),
            Ok(Some(Err(e))) => Err(Ended::Cause(format!("the helper's output: {e}"))),
            Ok(Some(Ok(line))) => match Answer::parse(&line) {
                Some(Answer::Failed(text)) => Err(Ended::Cause(format!("library: {text}"))),
                Some(a) => Ok(a),
                None => Err(Ended::Cause(
                    "the helper wrote a line that is not an answer".into(),
                )),
            },
        }
    }
}

/// How a helper session ended, before its exit status is known.
enum Ended {
    /// For this cause (the helper is then killed).
    Cause(String),
    /// The helper closed its output or input: its exit status says why.
    Exited,
}

/// Starts the helper for `cfg`.
fn spawn(cfg: &ReaderConfig) -> std::io::Result<Child> {
    let library = cfg.library.clone().unwrap_or_default();
    let mut cmd = Command::new(helper_path());
    cmd.arg(&library)
        .arg(cfg.card_type.itype().to_string())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .envs(&cfg.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group: a timeout kills whatever the library
        // started too.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &cfg.workdir {
        cmd.current_dir(dir);
    }
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // The helper dies with the daemon, whatever kills it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Kills the helper's process group `group` and reaps the helper;
/// returns its exit status when it could be read.
async fn end(
    child: &mut Child,
    group: Option<i32>,
    exited: bool,
) -> Option<std::process::ExitStatus> {
    // A helper that closed its output exits by itself in a moment (its
    // status says why); one that hangs or was told to stop is killed.
    let mut status = None;
    if exited {
        if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_millis(200), child.wait()).await {
            status = Some(st);
        }
    }
    if let Some(pgid) = group.filter(|g| *g > 1) {
        // SAFETY: kill(2) with a negative pid signals the process group
        // the helper leads (process_group(0) made it its own).
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    if status.is_none() {
        let _ = child.start_kill();
        status = child.wait().await.ok();
    }
    status
}

/// The cause of a helper's end from its exit status.
fn describe(st: std::process::ExitStatus) -> String {
    if let Some(sig) = st.signal() {
        let name = match sig {
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGILL => " (SIGILL)",
            libc::SIGFPE => " (SIGFPE)",
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGTERM => " (SIGTERM)",
            _ => "",
        };
        return format!("the helper was killed by signal {sig}{name}");
    }
    match st.code() {
        Some(code) => format!("the helper exited with code {code}"),
        None => "the helper ended".into(),
    }
}
