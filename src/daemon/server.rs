//! The display socket: a Unix socket speaking newline-delimited JSON.
//!
//! Each client gets its own task and its own bounded event queue (a
//! broadcast receiver of [`super::CLIENT_QUEUE`] events). A client that
//! falls behind gets `ERROR lagged` and is dropped; a client whose writes
//! stall for [`WRITE_TIMEOUT`] is dropped. Neither delays readers or other
//! clients. Bad JSON and unknown commands get an `ERROR`/`REPLY` and the
//! connection stays usable; a line over 64 KiB closes the connection.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::proto::{self, Privacy, Request, MAX_REQUEST};
use super::{manual_read, Ctx, Event};
use crate::config::{Config, Role};
use crate::registry::{BindRequest, Channel};
use crate::Ssn;

/// A client whose socket accepts nothing for this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds the socket, replacing a stale socket file, and sets its mode.
pub fn bind(cfg: &Config) -> anyhow::Result<UnixListener> {
    let path = &cfg.socket.path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use by another running daemon", path.display());
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.socket_mode()?))?;
    Ok(listener)
}

/// Accepts clients until `shutdown`.
pub async fn serve(listener: UnixListener, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut clients = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
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

enum Line {
    Complete,
    Eof,
    TooLong,
}

async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    buf.clear();
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                Line::Eof
            } else {
                Line::Complete
            });
        }
        if let Some(i) = avail.iter().position(|&b| b == b'\n') {
            let fits = buf.len() + i <= MAX_REQUEST;
            if fits {
                buf.extend_from_slice(&avail[..i]);
            }
            r.consume(i + 1);
            return Ok(if fits { Line::Complete } else { Line::TooLong });
        }
        let n = avail.len();
        if buf.len() + n > MAX_REQUEST {
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(avail);
        r.consume(n);
    }
}

struct Writer {
    w: tokio::net::unix::OwnedWriteHalf,
    buf: Vec<u8>,
}

impl Writer {
    async fn send(&mut self, v: &Value) -> Result<(), ()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, v).map_err(|_| ())?;
        self.buf.push(b'\n');
        match tokio::time::timeout(WRITE_TIMEOUT, self.w.write_all(&self.buf)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}

fn render(e: &Event, privacy: Privacy) -> Value {
    match e {
        Event::Reader { name, state, path } => proto::reader(name, state, path),
        Event::Card(c) => c.to_json(privacy),
        Event::Error { code, message } => proto::error(code, message),
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
    let mut events = ctx.events.subscribe();
    ctx.clients.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        uid,
        privileged = privacy == Privacy::Full,
        "client connected"
    );
    let (r, w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut out = Writer { w, buf: Vec::new() };
    let actor = format!("client:uid={}", uid.map_or("?".into(), |u| u.to_string()));

    let mut hello = vec![proto::version()];
    for (name, st) in ctx.readers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        hello.push(proto::reader(name, st.state, &st.path));
    }
    let mut ok = true;
    for v in &hello {
        ok &= out.send(v).await.is_ok();
    }
    let mut line = Vec::new();
    while ok {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = events.recv() => match ev {
                Ok(e) => ok = out.send(&render(&e, privacy)).await.is_ok(),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(uid, missed = n, "client lagged, dropping it");
                    let _ = out.send(&proto::error("lagged", &format!("client fell {n} events behind and is disconnected"))).await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
            got = read_line(&mut reader, &mut line) => match got {
                Ok(Line::Eof) | Err(_) => break,
                Ok(Line::TooLong) => {
                    let _ = out.send(&proto::error("line_too_long", &format!("request line exceeds {MAX_REQUEST} bytes; closing"))).await;
                    break;
                }
                Ok(Line::Complete) => {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let reply = match proto::parse_request(&line) {
                        Ok(req) => handle(&ctx, req, &actor, privacy).await,
                        // Unparseable JSON has no id to reply to.
                        Err((_, code, msg)) if code == "bad_json" => proto::error(code, &msg),
                        Err((id, code, msg)) => proto::reply_err(&id, code, &msg),
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

/// An SSN or card number typed by a client, or a swipe id, to an SSN.
async fn party(
    ctx: &Ctx,
    role: Role,
    number: &Option<String>,
    swipe: Option<u64>,
    which: &str,
) -> Result<Ssn, Refusal> {
    if let Some(id) = swipe {
        return ctx.swiped(id).ok_or((
            "unknown_swipe",
            format!("{which}: swipe {id} is unknown, failed or older than 5 minutes"),
        ));
    }
    let Some(number) = number else {
        return Err((
            "bad_request",
            format!("{which}: give a swipe id or a number"),
        ));
    };
    if role == Role::Kiosk {
        return Err((
            "kiosk_requires_swipe",
            format!("{which}: at a kiosk both cards must be swiped"),
        ));
    }
    let read = manual_read(number).map_err(|m| ("bad_number", format!("{which}: {m}")))?;
    if let Some(ssn) = read.ssn {
        return Ok(ssn);
    }
    let lookup = crate::registry::Lookup {
        ssn: None,
        card_no: read.card_no,
        pan: read.pan,
    };
    let r = registry(ctx, move |reg| reg.resolve(&lookup)).await?;
    match (r.outcome, r.person) {
        (crate::registry::Outcome::Ok, Some(p)) => Ok(p.ssn),
        (o, _) => Err(("card_not_usable", format!("{which}: card {}", o.as_str()))),
    }
}

/// A refusal for the client: machine code and message.
type Refusal = (&'static str, String);

/// Both parties of a bind or unbind.
async fn parties(
    ctx: &Ctx,
    role: Role,
    holder: (&Option<String>, Option<u64>),
    member: (&Option<String>, Option<u64>),
) -> Result<(Ssn, Ssn), Refusal> {
    let h = party(ctx, role, holder.0, holder.1, "holder").await?;
    let m = party(ctx, role, member.0, member.1, "member").await?;
    Ok((h, m))
}

/// Runs `f` on the registry thread; both the worker's and the call's
/// failures become refusals.
async fn registry<T, E, F>(ctx: &Ctx, f: F) -> Result<T, Refusal>
where
    T: Send + 'static,
    E: Into<Refusal> + Send + 'static,
    F: FnOnce(&mut crate::registry::Registry) -> Result<T, E> + Send + 'static,
{
    match ctx.worker.call(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(("internal", e.to_string())),
    }
}

impl From<crate::registry::BindError> for Refusal {
    fn from(e: crate::registry::BindError) -> Refusal {
        (e.code(), e.to_string())
    }
}

impl From<crate::registry::RegistryError> for Refusal {
    fn from(e: crate::registry::RegistryError) -> Refusal {
        ("registry", e.to_string())
    }
}

async fn handle(ctx: &Ctx, req: Request, actor: &str, privacy: Privacy) -> Value {
    let id = req.id().clone();
    match answer(ctx, req, actor, privacy).await {
        Ok(result) => proto::reply_ok(&id, result),
        Err((code, message)) => proto::reply_err(&id, code, &message),
    }
}

async fn answer(ctx: &Ctx, req: Request, actor: &str, privacy: Privacy) -> Result<Value, Refusal> {
    let live = ctx.live();
    let operator_or_actor = |op: Option<String>| op.unwrap_or_else(|| actor.to_string());
    match req {
        Request::Status { .. } => Ok(ctx.status()),
        Request::Lookup { number, .. } => {
            if live.role == Role::Kiosk {
                return Err((
                    "manual_entry_not_allowed",
                    "manual card-number entry is not allowed at a kiosk; swipe the card".into(),
                ));
            }
            let read = manual_read(&number).map_err(|m| ("bad_number", m))?;
            let handled = ctx
                .handle_read("manual", read)
                .await
                .map_err(|m| ("registry", m))?;
            Ok(handled.to_json(privacy))
        }
        Request::Bind {
            holder,
            member,
            holder_swipe,
            member_swipe,
            relation,
            operator,
            channel,
            ..
        } => {
            let (h, m) = parties(
                ctx,
                live.role,
                (&holder, holder_swipe),
                (&member, member_swipe),
            )
            .await?;
            let channel = channel.unwrap_or(match live.role {
                Role::Window => Channel::Window,
                Role::Kiosk => Channel::Kiosk,
            });
            let operator = operator_or_actor(operator);
            let actor = actor.to_string();
            let rel = relation.clone();
            registry(ctx, move |reg| {
                let req = BindRequest {
                    holder: h,
                    member: m,
                    relation: &rel,
                    channel,
                    operator: &operator,
                    actor: &actor,
                };
                reg.bind(&req, &live.policy)
            })
            .await?;
            tracing::info!(holder = %h, member = %m, relation = %relation, "family link bound");
            Ok(json!({"bound": true, "relation": relation}))
        }
        Request::Unbind {
            holder,
            member,
            holder_swipe,
            member_swipe,
            operator,
            ..
        } => {
            let (h, m) = parties(
                ctx,
                live.role,
                (&holder, holder_swipe),
                (&member, member_swipe),
            )
            .await?;
            let operator = operator_or_actor(operator);
            let actor = actor.to_string();
            registry(ctx, move |reg| reg.unbind(&h, &m, &operator, &actor)).await?;
            tracing::info!(holder = %h, member = %m, "family link revoked");
            Ok(json!({"unbound": true}))
        }
        Request::Contributions {
            number,
            swipe,
            months,
            ..
        } => {
            let ssn = party(ctx, live.role, &number, swipe, "person").await?;
            let months = months.unwrap_or(12).clamp(1, 120);
            let records = registry(ctx, move |reg| reg.contributions(&ssn, months)).await?;
            Ok(json!({"months": months, "records": proto::contributions_json(&records)}))
        }
    }
}
