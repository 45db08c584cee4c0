//! The display socket: a Unix socket speaking newline-delimited JSON
//! ([`crate::protocol`]).
//!
//! Each client gets its own task and its own bounded event queue (a
//! broadcast receiver of [`super::ctx::CLIENT_QUEUE`] events). A client that
//! falls behind gets `ERROR lagged` and is dropped; a client whose writes
//! stall for [`WRITE_TIMEOUT`] is dropped. Neither delays readers or other
//! clients. Bad JSON and unknown commands get an `ERROR`/`REPLY` and the
//! connection stays usable; a line over 64 KiB closes the connection.
//!
//! Request lines are read through a `FramedRead`, whose buffer lives as
//! long as the connection: when an event wins the `select!` against a
//! half-read request, the bytes already read stay in the buffer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tokio_util::sync::CancellationToken;

use super::ctx::Ctx;
use super::event::{PrintJob, RecordsJob};
use super::render::{self, error};
use super::store::Answer;
use crate::config::Station;
use crate::printer::ReceiptKind;
use crate::protocol::{
    self, Bound, CardResult, ErrorCode, Message, Parties, Privacy, Reply, ReplyResult, Request,
    Unbound, MAX_REQUEST,
};
use crate::reader::manual_read;
use crate::registry::{BindRequest, Channel};
use crate::Ssn;

/// A client whose socket accepts nothing for this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts clients until `shutdown`, serving at most `max_clients` at
/// once: one more gets `ERROR too_many_clients` and is closed, so that idle
/// clients can never take the descriptors readers and the registry need
/// ([`crate::fds`]).
pub async fn serve(
    listener: UnixListener,
    ctx: Arc<Ctx>,
    max_clients: usize,
    shutdown: CancellationToken,
) {
    let mut clients = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if clients.len() >= max_clients => {
                    tokio::spawn(refuse_client(stream, max_clients));
                }
                Ok((stream, _)) => {
                    clients.spawn(client(stream, ctx.clone(), shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
    // Stop accepting; let clients flush what they were writing.
    drop(listener);
    while tokio::time::timeout(Duration::from_secs(2), clients.join_next())
        .await
        .ok()
        .flatten()
        .is_some()
    {}
}

/// Tells a client over the limit why it is closed (without waiting on it
/// for long), then closes it.
async fn refuse_client(stream: UnixStream, max_clients: usize) {
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    tracing::warn!(uid, max_clients, "too many socket clients; refusing one");
    let (_, w) = stream.into_split();
    let mut out = Writer { w, buf: Vec::new() };
    let _ = out
        .send(&error(
            ErrorCode::TooManyClients,
            format!("cardlinkd already serves {max_clients} clients; try again later"),
        ))
        .await;
    let _ = out.w.shutdown().await;
}

struct Writer {
    w: tokio::net::unix::OwnedWriteHalf,
    buf: Vec<u8>,
}

impl Writer {
    async fn send(&mut self, m: &Message) -> Result<(), ()> {
        self.buf.clear();
        protocol::encode_line(m, &mut self.buf).map_err(|_| ())?;
        match tokio::time::timeout(WRITE_TIMEOUT, self.w.write_all(&self.buf)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}

async fn client(stream: UnixStream, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    let privacy = match uid {
        Some(u)
            if ctx
                .privileged
                .read()
                .map(|p| p.contains(&u))
                .unwrap_or(false) =>
        {
            Privacy::Full
        }
        _ => Privacy::Masked,
    };
    let (mut events, readers) = ctx.subscribe();
    let printer = ctx
        .printer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(render::printer);
    ctx.clients.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        uid,
        privileged = privacy == Privacy::Full,
        "client connected"
    );
    let (r, w) = stream.into_split();
    let mut lines = FramedRead::new(
        r,
        AnyDelimiterCodec::new_with_max_length(vec![b'\n'], Vec::new(), MAX_REQUEST),
    );
    let mut out = Writer { w, buf: Vec::new() };
    let actor = format!("client:uid={}", uid.map_or("?".into(), |u| u.to_string()));

    let mut ok = out
        .send(&Message::Version(protocol::Version::current()))
        .await
        .is_ok();
    for r in readers {
        ok &= out.send(&Message::Reader(r)).await.is_ok();
    }
    if let Some(p) = printer {
        ok &= out.send(&Message::Printer(p)).await.is_ok();
    }
    while ok {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = events.recv() => match ev {
                Ok(e) => ok = out.send(&render::event(&e, privacy)).await.is_ok(),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(uid, missed = n, "client lagged, dropping it");
                    let _ = out.send(&error(ErrorCode::Lagged, format!("client fell {n} events behind and is disconnected"))).await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
            got = lines.next() => match got {
                None | Some(Err(AnyDelimiterCodecError::Io(_))) => break,
                Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => {
                    let _ = out.send(&error(ErrorCode::LineTooLong, format!("request line exceeds {MAX_REQUEST} bytes; closing"))).await;
                    break;
                }
                Some(Ok(line)) => {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let reply = match protocol::parse_request(&line) {
                        Ok(req) => Message::Reply(handle(&ctx, req, &actor, privacy).await),
                        // Unparseable JSON has no id to reply to.
                        Err(bad) => match bad.id {
                            None => error(bad.code, bad.message),
                            Some(id) => Message::Reply(Reply::err(id, bad.code, bad.message)),
                        },
                    };
                    ok = out.send(&reply).await.is_ok();
                }
            },
        }
    }
    let _ = out.w.shutdown().await;
    ctx.clients.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(uid, "client disconnected");
}

/// A refusal for the client: machine code and message.
type Refusal = (ErrorCode, String);

/// What a number typed for a party may be used for, which decides the
/// sentence a kiosk refusal gets.
#[derive(Clone, Copy)]
enum Purpose {
    Link,
    Inquiry,
}

/// An SSN or card number typed by a client, or a swipe id, to an SSN.
async fn party(
    ctx: &Ctx,
    station: Station,
    number: &Option<String>,
    swipe: Option<u64>,
    which: &str,
    purpose: Purpose,
) -> Result<Ssn, Refusal> {
    match (number, swipe) {
        (Some(_), Some(_)) => Err((
            ErrorCode::BadRequest,
            format!("{which}: give either a swipe id or a number, not both"),
        )),
        (None, Some(id)) => ctx.swiped_party(id, station, matches!(purpose, Purpose::Link), which),
        (None, None) => Err((
            ErrorCode::BadRequest,
            format!("{which}: give a swipe id or a number"),
        )),
        (Some(_), None) if station == Station::Kiosk => Err((
            ErrorCode::KioskRequiresSwipe,
            match purpose {
                Purpose::Link => format!("{which}: at a kiosk both cards must be swiped"),
                Purpose::Inquiry => {
                    "at a kiosk payment records are shown only for a swiped card".into()
                }
            },
        )),
        (Some(number), None) => {
            let read =
                manual_read(number).map_err(|e| (ErrorCode::BadNumber, format!("{which}: {e}")))?;
            if let Some(ssn) = read.ssn {
                return Ok(ssn);
            }
            let lookup = crate::registry::Lookup {
                ssn: None,
                card_no: read.card_no,
                pan: read.pan,
            };
            let r = registry(ctx.store.resolve(lookup)).await?;
            match (r.outcome, r.person) {
                (crate::registry::Outcome::Ok, Some(p)) => Ok(p.ssn),
                (o, _) => Err((
                    ErrorCode::CardNotUsable,
                    format!("{which}: card {}", o.as_str()),
                )),
            }
        }
    }
}

/// The payment records a `contributions` or `print_records` request asks
/// for: whose (a swipe, or a number where typing is allowed), of how many
/// months (12 unless asked, 1 to 120), read once.
async fn records_of(
    ctx: &Ctx,
    station: Station,
    number: &Option<String>,
    swipe: Option<u64>,
    months: Option<u32>,
) -> Result<(Ssn, u32, Vec<crate::registry::Contribution>), Refusal> {
    let ssn = party(ctx, station, number, swipe, "person", Purpose::Inquiry).await?;
    let months = months.unwrap_or(12).clamp(1, 120);
    let records = registry(ctx.store.contributions(ssn, months)).await?;
    Ok((ssn, months, records))
}

/// Both parties of a bind or unbind.
async fn parties(ctx: &Ctx, station: Station, p: &Parties) -> Result<(Ssn, Ssn), Refusal> {
    let h = party(
        ctx,
        station,
        &p.holder,
        p.holder_swipe,
        "holder",
        Purpose::Link,
    )
    .await?;
    let m = party(
        ctx,
        station,
        &p.member,
        p.member_swipe,
        "member",
        Purpose::Link,
    )
    .await?;
    Ok((h, m))
}

/// The relation (in Chinese) of `member`'s active link to `holder`, if any.
async fn linked_relation(ctx: &Ctx, holder: Ssn, member: Ssn) -> Option<String> {
    let r = match ctx
        .store
        .resolve(crate::registry::Lookup::ssn(member))
        .await
    {
        Ok(Ok(r)) => r,
        _ => return None,
    };
    let payer = r.payer.filter(|p| p.ssn == holder)?;
    let rel = crate::registry::Relation::parse(payer.relation.as_deref()?)?;
    Some(rel.label_zh().to_string())
}

/// Awaits a registry request; both the store's and the registry's
/// failures become refusals with their one code.
async fn registry<T, E>(job: impl std::future::Future<Output = Answer<T, E>>) -> Result<T, Refusal>
where
    E: std::fmt::Display,
    for<'a> &'a E: Into<ErrorCode>,
{
    match job.await {
        Ok(r) => r.map_err(|e| ((&e).into(), e.to_string())),
        Err(e) => Err((ErrorCode::Internal, e.to_string())),
    }
}

/// `Ok` when a receipt can be printed now: a printer is configured and its
/// last known state lets it print; else `printer_unavailable`.
fn printer_ready(ctx: &Ctx) -> Result<(), Refusal> {
    if ctx.print_queue.get().is_none() {
        return Err((
            ErrorCode::PrinterUnavailable,
            "no receipt printer is configured".into(),
        ));
    }
    let state = ctx.printer_state();
    if state.can_print() {
        Ok(())
    } else {
        Err((
            ErrorCode::PrinterUnavailable,
            format!("the printer cannot print: {state} ({})", state.zh()),
        ))
    }
}

/// The consent statement version a bind records: a self-service bind (no
/// operator) and every bind at a kiosk must name one the holder confirmed;
/// a bind with an operator records the one given or the current one. A
/// version never shipped is refused (`registry::consent::ALL`).
fn consent_for(
    station: Station,
    operator: Option<&str>,
    consent: Option<&str>,
) -> Result<&'static str, Refusal> {
    use crate::registry::consent;
    match consent {
        Some(v) => consent::find(v).map(|s| s.version).ok_or_else(|| {
            (
                ErrorCode::ConsentRequired,
                format!("no consent statement has version '{v}'"),
            )
        }),
        None if operator.is_none() || station == Station::Kiosk => Err((
            ErrorCode::ConsentRequired,
            "a self-service bind needs the version of the consent statement the holder confirmed"
                .into(),
        )),
        None => Ok(consent::CURRENT.version),
    }
}

async fn handle(ctx: &Ctx, req: Request, actor: &str, privacy: Privacy) -> Reply {
    let id = req.id().clone();
    // Binds and unbinds are counted by result, whatever refused them.
    let count: Option<fn(&super::metrics::DaemonMetrics, &str)> = match &req {
        Request::Bind { .. } => Some(super::metrics::DaemonMetrics::bind),
        Request::Unbind { .. } => Some(super::metrics::DaemonMetrics::unbind),
        _ => None,
    };
    let answered = answer(ctx, req, actor, privacy).await;
    if let Some(count) = count {
        let result = match &answered {
            Ok(_) => "ok",
            Err((code, _)) => code.as_str(),
        };
        count(&ctx.metrics, result);
    }
    match answered {
        Ok(result) => Reply::ok(id, result),
        Err((code, message)) => Reply::err(id, code, message),
    }
}

async fn answer(
    ctx: &Ctx,
    req: Request,
    actor: &str,
    privacy: Privacy,
) -> Result<ReplyResult, Refusal> {
    let live = ctx.live();
    let operator_or_actor = |op: Option<String>| op.unwrap_or_else(|| actor.to_string());
    match req {
        Request::Status { .. } => Ok(ReplyResult::Status(ctx.status())),
        Request::Capture {
            reader, minutes, ..
        } => {
            // Raw traffic holds full SSNs and names: privileged clients only.
            if privacy != Privacy::Full {
                return Err((
                    ErrorCode::NotPrivileged,
                    "only a privileged client may start a capture".into(),
                ));
            }
            let capture = ctx
                .captures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&reader)
                .cloned()
                .ok_or_else(|| (ErrorCode::BadRequest, format!("no reader named '{reader}'")))?;
            let minutes = minutes.unwrap_or(10).clamp(1, 1440);
            capture.record_until(
                tokio::time::Instant::now() + Duration::from_secs(u64::from(minutes) * 60),
            );
            tracing::info!(reader = %reader, minutes, actor, "capture started");
            Ok(ReplyResult::Capturing(protocol::Capturing {
                reader,
                path: capture.path().display().to_string(),
                minutes,
            }))
        }
        Request::Lookup { number, .. } => {
            if live.station == Station::Kiosk {
                return Err((
                    ErrorCode::ManualEntryNotAllowed,
                    "manual card-number entry is not allowed at a kiosk; swipe the card".into(),
                ));
            }
            let read = manual_read(&number).map_err(|e| (ErrorCode::BadNumber, e.to_string()))?;
            let handled = ctx
                .handle_read("manual", read)
                .await
                .map_err(|f| (f.code, f.message))?;
            Ok(ReplyResult::Card(CardResult::Card(Box::new(render::card(
                &handled, privacy,
            )))))
        }
        Request::Bind {
            parties: p,
            relation,
            operator,
            consent,
            ..
        } => {
            let consent = consent_for(live.station, operator.as_deref(), consent.as_deref())?;
            let rel = crate::registry::Relation::parse(&relation).ok_or_else(|| {
                (
                    ErrorCode::RelationNotAllowed,
                    format!(
                        "relation '{relation}' is not one of {}",
                        crate::registry::Relation::ALL
                            .map(|r| r.as_str())
                            .join(", ")
                    ),
                )
            })?;
            let (h, m) = parties(ctx, live.station, &p).await?;
            // Where a link was made is the daemon's to say, not the client's.
            let channel = match live.station {
                Station::Window => Channel::Window,
                Station::Kiosk => Channel::Kiosk,
            };
            let operator = operator_or_actor(operator);
            let req = BindRequest {
                holder: h,
                member: m,
                relation: rel,
                channel,
                operator: &operator,
                consent,
                actor,
            };
            let audit = registry(ctx.store.bind(&req, &live.policy)).await?;
            tracing::info!(holder = %h, member = %m, relation = %relation, "family link bound");
            let receipt = ctx.queue_receipt(PrintJob {
                kind: ReceiptKind::Bind,
                holder: h,
                member: m,
                relation: Some(rel.label_zh().to_string()),
                channel: live.station,
                operator: (live.station == Station::Window).then_some(operator),
                audit,
                at: crate::printer::receipt::now_cst(),
                records: None,
            });
            Ok(ReplyResult::Bound(Bound {
                bound: true,
                relation,
                receipt,
            }))
        }
        Request::Unbind {
            parties: p,
            operator,
            ..
        } => {
            let (h, m) = parties(ctx, live.station, &p).await?;
            let operator = operator_or_actor(operator);
            // The relation for the receipt, read before the link goes.
            let relation = match ctx.print_queue.get() {
                Some(_) => linked_relation(ctx, h, m).await,
                None => None,
            };
            let audit =
                registry(ctx.store.unbind(h, m, operator.clone(), actor.to_string())).await?;
            tracing::info!(holder = %h, member = %m, "family link revoked");
            let receipt = ctx.queue_receipt(PrintJob {
                kind: ReceiptKind::Unbind,
                holder: h,
                member: m,
                relation,
                channel: live.station,
                operator: (live.station == Station::Window).then_some(operator),
                audit,
                at: crate::printer::receipt::now_cst(),
                records: None,
            });
            Ok(ReplyResult::Unbound(Unbound {
                unbound: true,
                receipt,
            }))
        }
        Request::PrintRecords {
            number,
            swipe,
            months,
            ..
        } => {
            // Refused before anything is read or audited when no receipt
            // can be printed.
            printer_ready(ctx)?;
            let (ssn, months, records) =
                records_of(ctx, live.station, &number, swipe, months).await?;
            // Printing shows the records: audited like a showing, and the
            // receipt names the row.
            let outcome = format!(
                "ok months={months} records={} channel={}",
                records.len(),
                match live.station {
                    Station::Window => "window",
                    Station::Kiosk => "kiosk",
                }
            );
            let audit =
                registry(
                    ctx.store
                        .record_ref(actor.to_string(), "print_records", ssn, outcome),
                )
                .await?;
            tracing::info!(person = %ssn, months, audit_seq = audit.seq, "records receipt");
            let lines = records
                .iter()
                .map(|c| crate::printer::RecordLine {
                    month: c.month.clone(),
                    employer: c.employer.clone(),
                    account_fen: c.account_fen,
                })
                .collect();
            let receipt = ctx
                .queue_receipt(PrintJob {
                    kind: ReceiptKind::Records,
                    holder: ssn,
                    member: ssn,
                    relation: None,
                    channel: live.station,
                    operator: None,
                    audit,
                    at: crate::printer::receipt::now_cst(),
                    records: Some(RecordsJob { months, lines }),
                })
                .ok_or_else(|| {
                    (
                        ErrorCode::PrinterUnavailable,
                        "no receipt printer is configured".to_string(),
                    )
                })?;
            Ok(ReplyResult::Printing(protocol::RecordsPrinting { receipt }))
        }
        Request::Contributions {
            number,
            swipe,
            months,
            ..
        } => {
            let (_, months, records) =
                records_of(ctx, live.station, &number, swipe, months).await?;
            Ok(ReplyResult::Records(protocol::Records {
                months,
                records: records.iter().map(Into::into).collect(),
            }))
        }
    }
}
