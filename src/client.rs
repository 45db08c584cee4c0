//! A typed async client of the display socket: what `cardlinkctl`, the
//! tests and the browser display use to talk to `cardlinkd`.
//!
//! [`Client::connect`] reads the `VERSION` line, then a background task
//! reads every line: replies go to the request that is waiting for them
//! (by id), everything else to the event stream ([`Client::next_event`]).
//! Requests can be made from any number of tasks at once through a
//! cloneable [`Requester`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::protocol::{
    Bound, Card, CardResult, ErrorCode, Message, Parties, Records, Reply, ReplyResult, Request,
    Status, Unbound, Version,
};

/// Events buffered for a client that does not read them; beyond this,
/// events are dropped (and counted) so that replies keep flowing.
pub const EVENT_BUFFER: usize = 4096;
/// Longest line accepted from the daemon.
const MAX_LINE: usize = 1024 * 1024;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to {path} (is cardlinkd running?): {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon closed the connection.
    #[error("the daemon closed the connection")]
    Closed,
    /// The daemon sent something that is not protocol version 1.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The daemon refused the request.
    #[error("{code}: {message}")]
    Refused {
        /// The refusal code.
        code: ErrorCode,
        /// The daemon's explanation.
        message: String,
    },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// Makes requests; cheap to clone.
#[derive(Clone)]
pub struct Requester {
    w: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
}

/// A connection to `cardlinkd`.
pub struct Client {
    requests: Requester,
    events: mpsc::Receiver<Message>,
    version: Version,
    dropped: Arc<AtomicU64>,
}

impl Client {
    /// Connects and reads the `VERSION` line.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let (r, w) = stream.into_split();
        let mut lines = FramedRead::new(r, LinesCodec::new_with_max_length(MAX_LINE));
        let version = match next_message(&mut lines).await? {
            Some(Message::Version(v)) => v,
            // The daemon refused the connection (too_many_clients).
            Some(Message::Error(e)) => {
                return Err(ClientError::Refused {
                    code: e.code,
                    message: e.message,
                })
            }
            Some(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected VERSION first, got {other:?}"
                )))
            }
            None => return Err(ClientError::Closed),
        };
        if version.proto != crate::protocol::PROTO {
            return Err(ClientError::Protocol(format!(
                "daemon speaks protocol {}, this client {}",
                version.proto,
                crate::protocol::PROTO
            )));
        }
        let pending: Pending = Arc::default();
        let dropped = Arc::new(AtomicU64::new(0));
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(route(
            lines,
            pending.clone(),
            tx,
            dropped.clone(),
            closed.clone(),
        ));
        Ok(Client {
            requests: Requester {
                w: Arc::new(tokio::sync::Mutex::new(w)),
                pending,
                next_id: Arc::new(AtomicU64::new(1)),
                closed,
            },
            events,
            version,
            dropped,
        })
    }

    /// The daemon's `VERSION` line.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The next event (`READER`, `CARD`, `ERROR`, or a `REPLY` nobody
    /// waits for); `None` once the daemon closed the connection.
    pub async fn next_event(&mut self) -> Option<Message> {
        self.events.recv().await
    }

    /// Events dropped because they were not read in time.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A handle for making requests from other tasks.
    pub fn requester(&self) -> Requester {
        self.requests.clone()
    }
}

/// A client makes requests like a [`Requester`] (`client.lookup(..)`).
impl std::ops::Deref for Client {
    type Target = Requester;
    fn deref(&self) -> &Requester {
        &self.requests
    }
}

async fn next_message(
    lines: &mut FramedRead<tokio::net::unix::OwnedReadHalf, LinesCodec>,
) -> Result<Option<Message>, ClientError> {
    match lines.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(ClientError::Protocol(e.to_string())),
        Some(Ok(line)) => serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| ClientError::Protocol(format!("{e}: {line}"))),
    }
}

/// Reads every line after `VERSION`: replies to their waiting requests,
/// the rest to the event stream.
async fn route(
    mut lines: FramedRead<tokio::net::unix::OwnedReadHalf, LinesCodec>,
    pending: Pending,
    events: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
) {
    loop {
        let m = match next_message(&mut lines).await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "bad line from cardlinkd; closing");
                break;
            }
        };
        if let Message::Reply(r) = &m {
            let waiter = r.id.as_u64().and_then(|id| {
                pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id)
            });
            if let Some(w) = waiter {
                let _ = w.send(r.clone());
                continue;
            }
        }
        if events.try_send(m).is_err() {
            if events.is_closed() {
                continue;
            }
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Wake every request still waiting, and refuse new ones: the
    // connection is gone.
    closed.store(true, Ordering::SeqCst);
    pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// The result of a reply, if it is the shape `pick` takes.
fn result<T>(
    reply: Reply,
    pick: impl FnOnce(ReplyResult) -> Result<T, ReplyResult>,
) -> Result<T, ClientError> {
    if !reply.ok {
        return Err(ClientError::Refused {
            code: reply.code.unwrap_or(ErrorCode::Internal),
            message: reply.message.unwrap_or_default(),
        });
    }
    let Some(r) = reply.result else {
        return Err(ClientError::Protocol("a reply without a result".into()));
    };
    pick(r).map_err(|other| ClientError::Protocol(format!("unexpected result: {other:?}")))
}

impl Requester {
    /// Sends `req` with a fresh id and waits for its `REPLY` (refusals
    /// included: `ok` tells).
    pub async fn request(&self, mut req: Request) -> Result<Reply, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        req.set_id(Value::from(id));
        let mut line =
            serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        // The daemon closes a connection on a longer line: refuse it here,
        // so that one oversized request never breaks a link that others
        // share (the display's, for every page).
        if line.len() >= crate::protocol::MAX_REQUEST {
            return Err(ClientError::Refused {
                code: ErrorCode::LineTooLong,
                message: format!(
                    "request of {} bytes exceeds the daemon's limit of {} bytes; not sent",
                    line.len(),
                    crate::protocol::MAX_REQUEST
                ),
            });
        }
        line.push(b'\n');
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        // Checked after registering: the reader task sets `closed` before it
        // clears the waiting requests, so one of the two always sees the other.
        if self.closed.load(Ordering::SeqCst) {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(ClientError::Closed);
        }
        let written = self.w.lock().await.write_all(&line).await;
        if let Err(e) = written {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(e.into());
        }
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Manual entry (window role).
    pub async fn lookup(&self, number: &str) -> Result<Card, ClientError> {
        let reply = self
            .request(Request::Lookup {
                id: Value::Null,
                number: number.into(),
            })
            .await?;
        result(reply, |r| match r {
            ReplyResult::Card(CardResult::Card(c)) => Ok(*c),
            other => Err(other),
        })
    }

    /// Binds a member to a holder; `consent` is the version of the
    /// consent statement confirmed (required without an operator).
    pub async fn bind(
        &self,
        parties: Parties,
        relation: &str,
        operator: Option<&str>,
        consent: Option<&str>,
    ) -> Result<Bound, ClientError> {
        result(
            self.request(Request::Bind {
                id: Value::Null,
                parties,
                relation: relation.into(),
                operator: operator.map(Into::into),
                consent: consent.map(Into::into),
            })
            .await?,
            |r| match r {
                ReplyResult::Bound(b) => Ok(b),
                other => Err(other),
            },
        )
    }

    /// Revokes a link.
    pub async fn unbind(
        &self,
        parties: Parties,
        operator: Option<&str>,
    ) -> Result<Unbound, ClientError> {
        result(
            self.request(Request::Unbind {
                id: Value::Null,
                parties,
                operator: operator.map(Into::into),
            })
            .await?,
            |r| match r {
                ReplyResult::Unbound(u) => Ok(u),
                other => Err(other),
            },
        )
    }

    /// Payment records by number (window) or swipe id.
    pub async fn contributions(
        &self,
        number: Option<&str>,
        swipe: Option<u64>,
        months: Option<u32>,
    ) -> Result<Records, ClientError> {
        result(
            self.request(Request::Contributions {
                id: Value::Null,
                number: number.map(Into::into),
                swipe,
                months,
            })
            .await?,
            |r| match r {
                ReplyResult::Records(rs) => Ok(rs),
                other => Err(other),
            },
        )
    }

    /// Daemon status.
    pub async fn status(&self) -> Result<Status, ClientError> {
        result(
            self.request(Request::Status { id: Value::Null }).await?,
            |r| match r {
                ReplyResult::Status(s) => Ok(s),
                other => Err(other),
            },
        )
    }
}

/// First and longest wait between attempts to reach the daemon.
pub const RECONNECT: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_millis(200),
    std::time::Duration::from_secs(5),
);

/// The one reconnect loop of the daemon's long-lived clients (the
/// display, `cardlinkctl watch`): hands out connections to the daemon at
/// one socket, one after another, with a [`Backoff`](crate::backoff::Backoff)
/// ([`RECONNECT`]) between attempts.
#[derive(Debug)]
pub struct Reconnect {
    socket: PathBuf,
    backoff: crate::backoff::Backoff,
    first: bool,
}

impl Reconnect {
    /// For the daemon at `socket`; the first attempt is made at once.
    pub fn new(socket: impl Into<PathBuf>) -> Reconnect {
        Reconnect {
            socket: socket.into(),
            backoff: crate::backoff::Backoff::new(RECONNECT.0, RECONNECT.1),
            first: true,
        }
    }

    /// The next connection: at once the first time, after the backoff's
    /// first wait after a connection that closed. A failed attempt is shown
    /// to `give_up` with the backoff as it stands (its next wait) and tried
    /// again after that wait unless `give_up` says so, which returns the
    /// error. `Ok(None)` once `stop`.
    pub async fn next(
        &mut self,
        stop: &tokio_util::sync::CancellationToken,
        mut give_up: impl FnMut(&ClientError, &crate::backoff::Backoff) -> bool,
    ) -> Result<Option<Client>, ClientError> {
        loop {
            if !std::mem::take(&mut self.first) && !self.backoff.wait(stop).await {
                return Ok(None);
            }
            let attempt = tokio::select! {
                _ = stop.cancelled() => return Ok(None),
                c = Client::connect(&self.socket) => c,
            };
            match attempt {
                Ok(c) => {
                    self.backoff.reset();
                    return Ok(Some(c));
                }
                Err(e) if give_up(&e, &self.backoff) => return Err(e),
                Err(_) => {}
            }
        }
    }
}
