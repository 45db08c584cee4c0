//! The receipt printer's task: owns the device, asks its state
//! (`DLE EOT 1`–`4`) at start, before each receipt and every
//! `status_interval_s`, and prints the receipts queued after binds and
//! unbinds ([`super::ctx::Ctx::queue_receipt`]).
//!
//! Nothing waits on it: a bind has answered before its receipt prints; a
//! receipt that cannot be printed (paper end, cover open, a write that
//! times out, a device that went away) is logged, counted and published
//! as `RECEIPT printed: false`, never retried (a late receipt of an old
//! bind would confuse the next person at the box). Every device operation
//! has a deadline, so a dead printer only changes its own state.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ctx::Ctx;
use super::event::{Event, PrintJob, RecordsJob};
use super::port::Port;
use crate::config::{PrinterConfig, Station};
use crate::printer::receipt::{Party, Receipt, RecordsReceipt};
use crate::printer::status::{is_status_byte, query, StatusBytes};
use crate::printer::PrinterState;
use crate::registry::Lookup;

/// Receipts waiting at most; one more is reported as not printed.
pub const QUEUE: usize = 16;
/// How long one status reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_millis(800);
/// How long writing one receipt may take (a 9600-baud line moves ~1 KiB/s).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the printer task for `cfg`.
pub fn start(ctx: &Arc<Ctx>, cfg: &PrinterConfig, shutdown: &CancellationToken) {
    let (tx, rx) = mpsc::channel(QUEUE);
    if ctx.print_queue.set(tx).is_err() {
        return;
    }
    ctx.update_printer(|p| {
        p.path = cfg.path.display().to_string();
    });
    tokio::spawn(run(ctx.clone(), cfg.clone(), rx, shutdown.clone()));
}

/// Opens the printer: a terminal (a serial port) at `baud`, 8N1; any
/// other device (a `usblp` printer-class node) as a file.
fn open(cfg: &PrinterConfig) -> std::io::Result<Port> {
    use std::os::fd::AsRawFd;
    use tokio_serial::SerialPortBuilderExt;
    let f = lp::open_file(&cfg.path)?;
    // SAFETY: isatty only reads the descriptor, which `f` keeps open.
    if unsafe { libc::isatty(f.as_raw_fd()) } != 1 {
        return lp::wrap(f);
    }
    drop(f);
    let port = tokio_serial::new(cfg.path.to_string_lossy(), cfg.baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .stop_bits(tokio_serial::StopBits::One)
        .parity(tokio_serial::Parity::None)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()?;
    Ok(Box::new(port))
}

async fn run(
    ctx: Arc<Ctx>,
    cfg: PrinterConfig,
    mut jobs: mpsc::Receiver<PrintJob>,
    shutdown: CancellationToken,
) {
    let station = cfg.station.clone().unwrap_or_else(hostname);
    let every = Duration::from_secs(cfg.status_interval_s);
    let mut backoff = Duration::from_millis(500);
    loop {
        let opened = open(&cfg);
        let mut port = match opened {
            Ok(p) => p,
            Err(e) => {
                set_state(
                    &ctx,
                    PrinterState::Disconnected,
                    Some(format!("cannot open: {e}")),
                );
                // Receipts meanwhile are reported at once, not kept.
                let until = tokio::time::sleep(backoff);
                tokio::pin!(until);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = &mut until => break,
                        job = jobs.recv() => match job {
                            Some(job) => fail(&ctx, &job, PrinterState::Disconnected, "printer not connected".into()),
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        match ask(&mut port).await {
            Ok(s) => set_state(&ctx, s, None),
            Err(e) => {
                set_state(&ctx, PrinterState::Disconnected, Some(e));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        backoff = Duration::from_millis(500);
        let mut tick = tokio::time::interval(every);
        tick.reset();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => match ask(&mut port).await {
                    Ok(s) => set_state(&ctx, s, None),
                    Err(e) => {
                        set_state(&ctx, PrinterState::Disconnected, Some(e));
                        break;
                    }
                },
                job = jobs.recv() => {
                    let Some(job) = job else { return };
                    if !print(&ctx, &mut port, &job, &station, cfg.encoding).await {
                        break;
                    }
                }
            }
        }
    }
}

/// Prints one receipt after asking the printer's state; `false` when the
/// device failed (the task opens it again).
async fn print(
    ctx: &Ctx,
    port: &mut Port,
    job: &PrintJob,
    station: &str,
    encoding: crate::printer::Encoding,
) -> bool {
    let state = match ask(port).await {
        Ok(s) => s,
        Err(e) => {
            set_state(ctx, PrinterState::Disconnected, Some(e.clone()));
            fail(ctx, job, PrinterState::Disconnected, e);
            return false;
        }
    };
    set_state(ctx, state, None);
    if !state.can_print() {
        fail(ctx, job, state, format!("printer {state} ({})", state.zh()));
        return true;
    }
    let bytes = match &job.records {
        Some(r) => records_receipt(ctx, job, r, station).await.render(encoding),
        None => receipt(ctx, job, station).await.render(encoding),
    };
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        port.write_all(&bytes).await?;
        port.flush().await
    })
    .await;
    let error = match written {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("write failed: {e}")),
        Err(_) => Some("write timed out".to_string()),
    };
    match error {
        None => {
            ctx.update_printer(|p| p.printed += 1);
            tracing::info!(
                audit_seq = job.audit.seq,
                kind = job.kind.as_str(),
                "receipt printed"
            );
            ctx.publish(Event::Receipt {
                kind: job.kind,
                audit_seq: job.audit.seq,
                printed: true,
                state,
                error: None,
            });
            true
        }
        Some(e) => {
            set_state(ctx, PrinterState::Disconnected, Some(e.clone()));
            fail(ctx, job, PrinterState::Disconnected, e);
            false
        }
    }
}

/// The receipt of `job`, with the parties' names from the registry (a
/// name it cannot give is printed as `—`).
/// A person's name from the registry (unaudited: the printing is audited).
async fn name(ctx: &Ctx, ssn: crate::Ssn) -> Option<String> {
    match ctx.store.resolve(Lookup::ssn(ssn)).await {
        Ok(Ok(r)) => r.person.map(|p| p.name),
        _ => None,
    }
}

fn channel_zh(s: Station) -> String {
    match s {
        Station::Kiosk => "自助机".into(),
        Station::Window => "窗口".into(),
    }
}

async fn records_receipt(
    ctx: &Ctx,
    job: &PrintJob,
    r: &RecordsJob,
    station: &str,
) -> RecordsReceipt {
    RecordsReceipt {
        person: Party {
            ssn: job.holder,
            name: name(ctx, job.holder).await,
        },
        months: r.months,
        lines: r.lines.clone(),
        at: job.at.clone(),
        channel: channel_zh(job.channel),
        station: station.to_string(),
        audit_seq: job.audit.seq,
        audit_hash: job.audit.short_hash().to_string(),
    }
}

async fn receipt(ctx: &Ctx, job: &PrintJob, station: &str) -> Receipt {
    let name = |ssn| name(ctx, ssn);
    Receipt {
        kind: job.kind,
        holder: Party {
            ssn: job.holder,
            name: name(job.holder).await,
        },
        member: Party {
            ssn: job.member,
            name: name(job.member).await,
        },
        relation: job.relation.clone(),
        at: job.at.clone(),
        channel: channel_zh(job.channel),
        station: station.to_string(),
        operator: job.operator.clone(),
        audit_seq: job.audit.seq,
        audit_hash: job.audit.short_hash().to_string(),
    }
}

/// Asks `DLE EOT 1`–`4` and decodes the replies; an error when the
/// printer does not answer each in time or the line fails.
async fn ask(port: &mut Port) -> Result<PrinterState, String> {
    let mut replies = [0u8; 4];
    for n in 1..=4u8 {
        let answered = tokio::time::timeout(REPLY_TIMEOUT, async {
            port.write_all(&query(n)).await?;
            port.flush().await?;
            let mut b = [0u8; 1];
            loop {
                if port.read(&mut b).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "device closed",
                    ));
                }
                // Anything else on the line (an automatic status, noise) is skipped.
                if is_status_byte(b[0]) {
                    return Ok(b[0]);
                }
            }
        })
        .await;
        replies[usize::from(n - 1)] = match answered {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return Err(format!("status query failed: {e}")),
            Err(_) => return Err(format!("no answer to DLE EOT {n}")),
        };
    }
    Ok(StatusBytes {
        printer: replies[0],
        offline: replies[1],
        error: replies[2],
        paper: replies[3],
    }
    .state())
}

fn set_state(ctx: &Ctx, state: PrinterState, error: Option<String>) {
    ctx.update_printer(|p| {
        if p.state != state {
            tracing::info!(
                state = state.as_str(),
                error = error.as_deref(),
                "printer state"
            );
        }
        p.state = state;
        if error.is_some() {
            p.last_error = error;
        }
    });
}

fn fail(ctx: &Ctx, job: &PrintJob, state: PrinterState, error: String) {
    tracing::warn!(audit_seq = job.audit.seq, kind = job.kind.as_str(), error = %error, "receipt not printed");
    ctx.update_printer(|p| {
        p.failed += 1;
        p.last_error = Some(error.clone());
    });
    ctx.publish(Event::Receipt {
        kind: job.kind,
        audit_seq: job.audit.seq,
        printed: false,
        state,
        error: Some(error),
    });
}

/// The host name (the box's name on receipts when `station` is not set).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cardlink".into())
}

/// A printer-class device node (`usblp`: `/dev/usb/lp0`) as async I/O:
/// opened non-blocking and driven by the runtime's poll, so a printer
/// that never answers leaves no thread behind.
mod lp {
    use std::io;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;
    use std::pin::Pin;
    use std::task::{ready, Context, Poll};

    use tokio::io::unix::AsyncFd;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use crate::daemon::port::Port;

    pub fn open_file(path: &Path) -> io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
    }

    pub fn wrap(f: std::fs::File) -> io::Result<Port> {
        // The file is owned by the AsyncFd from here on, so I/O safety holds.
        #[allow(deprecated)]
        let fd = AsyncFd::new(f)?;
        Ok(Box::new(Lp(fd)))
    }

    struct Lp(AsyncFd<std::fs::File>);

    impl AsyncRead for Lp {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            loop {
                let mut guard = ready!(self.0.poll_read_ready(cx))?;
                let unfilled = buf.initialize_unfilled();
                match guard.try_io(|f| io::Read::read(&mut f.get_ref(), unfilled)) {
                    Ok(Ok(n)) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Ok(Err(e)) => return Poll::Ready(Err(e)),
                    Err(_would_block) => continue,
                }
            }
        }
    }

    impl AsyncWrite for Lp {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            loop {
                let mut guard = ready!(self.0.poll_write_ready(cx))?;
                match guard.try_io(|f| io::Write::write(&mut f.get_ref(), data)) {
                    Ok(r) => return Poll::Ready(r),
                    Err(_would_block) => continue,
                }
            }
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}
