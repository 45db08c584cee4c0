//! The display socket protocol (version 1): newline-delimited JSON.
//!
//! Server → client messages have a `class`: `VERSION`, `READER`, `CARD`,
//! `ERROR`, `REPLY`. Client → server requests carry an `id` (any JSON
//! value, echoed) and a `cmd`. See `docs/socket-protocol.md`.
//!
//! Personal data is masked unless the client is privileged: [`Privacy`]
//! decides, at serialisation time, per client.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::mask;
use crate::registry::{Contribution, Member, Payer, Resolution};
use crate::Ssn;

/// Protocol version announced in `VERSION`.
pub const PROTO: u32 = 1;
/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Whether a client sees full SSNs and names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// Masked (default).
    Masked,
    /// Full (privileged uid).
    Full,
}

impl Privacy {
    fn ssn(self, s: &Ssn) -> String {
        match self {
            Privacy::Full => s.expose().to_string(),
            Privacy::Masked => s.masked().to_string(),
        }
    }
    fn name(self, s: &str) -> String {
        match self {
            Privacy::Full => s.to_string(),
            Privacy::Masked => mask::name(s),
        }
    }
    fn card_no(self, s: &str) -> String {
        match self {
            Privacy::Full => s.to_string(),
            Privacy::Masked => mask::card_no(s),
        }
    }
    fn pan(self, s: &str) -> String {
        match self {
            Privacy::Full => s.to_string(),
            Privacy::Masked => mask::pan(s),
        }
    }
}

/// A resolved card read, ready to be rendered for each client.
#[derive(Debug, Clone)]
pub struct CardEvent {
    /// Reader name (or `manual` for typed lookups).
    pub reader: String,
    /// Swipe id, usable in kiosk-mode `bind` requests.
    pub swipe: u64,
    /// `ic`, `magstripe`, `manual`.
    pub source: &'static str,
    /// SSN from the card or the registry.
    pub ssn: Option<Ssn>,
    /// Card number.
    pub card_no: Option<String>,
    /// PAN.
    pub pan: Option<String>,
    /// Name from the registry, else from the card.
    pub name: Option<String>,
    /// Resolution.
    pub resolution: Resolution,
}

fn payer_json(p: &Payer, v: Privacy) -> Value {
    json!({
        "ssn": v.ssn(&p.ssn),
        "name": v.name(&p.name),
        "relation": p.relation,
        "balance_fen": p.balance_fen,
    })
}

fn members_json(ms: &[Member], v: Privacy) -> Value {
    Value::Array(
        ms.iter()
            .map(|m| {
                json!({
                    "ssn": v.ssn(&m.ssn),
                    "name": v.name(&m.name),
                    "relation": m.relation,
                    "since": m.since,
                })
            })
            .collect(),
    )
}

/// The resolution fields shared by `CARD` events and `lookup` replies.
pub fn resolution_json(r: &Resolution, v: Privacy) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("outcome".into(), json!(r.outcome.as_str()));
    m.insert("role".into(), json!(r.role));
    m.insert("card_status".into(), json!(r.card_status));
    if let Some(p) = &r.person {
        m.insert(
            "insurance".into(),
            json!({"type": p.insurance_type, "status": p.insurance_status}),
        );
    }
    m.insert(
        "payer".into(),
        r.payer.as_ref().map_or(Value::Null, |p| payer_json(p, v)),
    );
    m.insert(
        "relation".into(),
        json!(r.payer.as_ref().and_then(|p| p.relation.clone())),
    );
    m.insert(
        "balance_fen".into(),
        json!(r.payer.as_ref().and_then(|p| p.balance_fen)),
    );
    m.insert("members".into(), members_json(&r.members, v));
    m
}

impl CardEvent {
    /// The `CARD` line for a client.
    pub fn to_json(&self, v: Privacy) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("class".into(), json!("CARD"));
        m.insert("reader".into(), json!(self.reader));
        m.insert("swipe".into(), json!(self.swipe));
        m.insert("source".into(), json!(self.source));
        let ssn = self.resolution.person.as_ref().map(|p| p.ssn).or(self.ssn);
        m.insert("ssn".into(), json!(ssn.map(|s| v.ssn(&s))));
        let card_no = self.card_no.clone().or(self.resolution.card_no.clone());
        m.insert("card_no".into(), json!(card_no.map(|c| v.card_no(&c))));
        m.insert("pan".into(), json!(self.pan.as_deref().map(|p| v.pan(p))));
        let name = self
            .resolution
            .person
            .as_ref()
            .map(|p| p.name.clone())
            .or(self.name.clone());
        m.insert("name".into(), json!(name.map(|n| v.name(&n))));
        m.extend(resolution_json(&self.resolution, v));
        Value::Object(m)
    }
}

/// `VERSION` line.
pub fn version() -> Value {
    json!({"class": "VERSION", "release": env!("CARGO_PKG_VERSION"), "proto": PROTO})
}

/// `READER` line.
pub fn reader(name: &str, state: &str, path: &str) -> Value {
    json!({"class": "READER", "reader": name, "state": state, "path": path})
}

/// `ERROR` line.
pub fn error(code: &str, message: &str) -> Value {
    json!({"class": "ERROR", "code": code, "message": message})
}

/// Successful `REPLY`.
pub fn reply_ok(id: &Value, result: Value) -> Value {
    json!({"class": "REPLY", "id": id, "ok": true, "result": result})
}

/// Failed `REPLY`.
pub fn reply_err(id: &Value, code: &str, message: &str) -> Value {
    json!({"class": "REPLY", "id": id, "ok": false, "code": code, "message": message})
}

/// Contribution records for a reply (amounts are not personal identifiers).
pub fn contributions_json(c: &[Contribution]) -> Value {
    json!(c)
}

/// A client request.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Manual entry: a card number or an SSN typed in.
    Lookup {
        /// Request id.
        #[serde(default)]
        id: Value,
        /// Card number, SSN (18 or legacy 15) or PAN.
        number: String,
    },
    /// Bind a member to a holder. Parties are SSNs or card numbers (window
    /// role) or swipe ids from `CARD` events (both roles; required at a kiosk).
    Bind {
        /// Request id.
        #[serde(default)]
        id: Value,
        /// Holder: SSN or card number.
        #[serde(default)]
        holder: Option<String>,
        /// Member: SSN or card number.
        #[serde(default)]
        member: Option<String>,
        /// Holder's swipe id.
        #[serde(default)]
        holder_swipe: Option<u64>,
        /// Member's swipe id.
        #[serde(default)]
        member_swipe: Option<u64>,
        /// Relation of the member to the holder.
        relation: String,
        /// Operator id.
        #[serde(default)]
        operator: Option<String>,
        /// `window`, `hospital` or `kiosk`; defaults from the role.
        #[serde(default)]
        channel: Option<crate::registry::Channel>,
    },
    /// Revoke a link.
    Unbind {
        /// Request id.
        #[serde(default)]
        id: Value,
        /// Holder: SSN or card number.
        #[serde(default)]
        holder: Option<String>,
        /// Member: SSN or card number.
        #[serde(default)]
        member: Option<String>,
        /// Holder's swipe id.
        #[serde(default)]
        holder_swipe: Option<u64>,
        /// Member's swipe id.
        #[serde(default)]
        member_swipe: Option<u64>,
        /// Operator id.
        #[serde(default)]
        operator: Option<String>,
    },
    /// Payment-record inquiry.
    Contributions {
        /// Request id.
        #[serde(default)]
        id: Value,
        /// SSN or card number (window role).
        #[serde(default)]
        number: Option<String>,
        /// Swipe id.
        #[serde(default)]
        swipe: Option<u64>,
        /// Months (default 12, at most 120).
        #[serde(default)]
        months: Option<u32>,
    },
    /// Daemon status.
    Status {
        /// Request id.
        #[serde(default)]
        id: Value,
    },
}

impl Request {
    /// The request id.
    pub fn id(&self) -> &Value {
        match self {
            Request::Lookup { id, .. }
            | Request::Bind { id, .. }
            | Request::Unbind { id, .. }
            | Request::Contributions { id, .. }
            | Request::Status { id } => id,
        }
    }
}

/// Parses a request line, with an error code and message for the client.
pub fn parse_request(line: &[u8]) -> Result<Request, (Value, &'static str, String)> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| (Value::Null, "bad_json", format!("invalid JSON: {e}")))?;
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let Some(cmd) = v.get("cmd").and_then(Value::as_str) else {
        return Err((id, "bad_request", "missing \"cmd\"".into()));
    };
    if !["lookup", "bind", "unbind", "contributions", "status"].contains(&cmd) {
        return Err((id, "unknown_command", format!("unknown command '{cmd}'")));
    }
    serde_json::from_value(v).map_err(|e| (id, "bad_request", e.to_string()))
}
