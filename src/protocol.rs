//! The display socket protocol (version 1): newline-delimited JSON.
//!
//! This module is the only place that knows the wire format. Every message
//! and request is a serde struct here; the registry's and the daemon's own
//! types never go onto the wire directly, they are mapped into these
//! structs (from registry types here, from the daemon's events in
//! `daemon::render::card` and friends), so renaming a Rust field elsewhere
//! cannot change the protocol. It converts from registry and reader types (and
//! from nothing above them: the daemon renders its own events in
//! `daemon::render`). `docs/socket-protocol.md` is the specification; its
//! tests keep the document's error-code table and [`ErrorCode`] the same
//! set, and parse and round-trip every JSON example in it.
//!
//! Server → client messages ([`Message`]) have a `class`: `VERSION`,
//! `READER`, `CARD`, `ERROR`, `REPLY`. Client → server requests
//! ([`Request`]) carry an `id` (any JSON value, echoed) and a `cmd`.
//!
//! Personal data is masked unless the client is privileged: [`Privacy`]
//! decides, when a message is built for a client.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Station;
use crate::mask;
pub use crate::reader::card::CardSource;
use crate::registry::{self, Contribution, Member, Outcome, Payer};
use crate::Ssn;

/// Protocol version announced in `VERSION`.
pub const PROTO: u32 = 1;
/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal $(=> $zh:literal, $en:literal)?,)*) => {
        /// Every machine-readable code the daemon sends, in `ERROR` events and
        /// failed `REPLY`s. One enum, so a refusal cannot invent a code that
        /// the documentation does not list.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorCode {
            $($(#[$doc])* #[serde(rename = $text)] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as sent on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }

            /// The code sent on the wire as `s`, if it is one.
            pub fn from_wire(s: &str) -> Option<ErrorCode> {
                match s {
                    $($text => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }

            /// What a screen says for this code: a plain sentence in
            /// Chinese and in English. `None` only for a code whose event
            /// brings its own (`reader_read_error`: the reader's return
            /// code, in `zh` and `en`).
            pub fn sentence(self) -> Option<Sentence> {
                match self {
                    $(ErrorCode::$variant => sentence!($($zh, $en)?),)*
                }
            }
        }
    };
}

macro_rules! sentence {
    () => {
        None
    };
    ($zh:literal, $en:literal) => {
        Some(Sentence { zh: $zh, en: $en })
    };
}

/// A sentence for people, in Chinese and in English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sentence {
    /// Chinese.
    pub zh: &'static str,
    /// English.
    pub en: &'static str,
}

error_codes! {
    // Events (ERROR) about readers and the registry.
    /// A card read failed validation; nothing was guessed.
    BadCard = "bad_card"
        => "卡片信息无法读取，请重新刷卡。",
        "The card could not be read; please swipe again.",
    /// The reader reported a failure.
    ReaderReadError = "reader_read_error",
    /// An identity-card module could not read a card (SW3 in
    /// `reader_code`, its meaning in `zh`/`en`).
    IdCardError = "id_card_error"
        => "证件读取失败，请重新放置。",
        "The identity card could not be read; please place it again.",
    /// A third-generation card the reader could not authenticate (its PSAM
    /// lacks the key); not a bad card.
    CardNotAuthenticated = "card_not_authenticated"
        => "社保卡未能认证，请联系工作人员。",
        "The card could not be authenticated; please ask staff.",
    /// The registry could not answer (not a busy lock).
    Registry = "registry"
        => "系统暂时无法查询，请联系工作人员。",
        "The registry cannot be reached; please ask staff.",
    /// Another writer held the registry longer than `busy_timeout_ms`.
    DatabaseBusy = "database_busy"
        => "系统繁忙，请稍后再试。",
        "The system is busy; please try again shortly.",
    /// The shared (PostgreSQL) registry cannot be reached; the daemon
    /// retries with backoff and keeps reading cards.
    RegistryUnavailable = "registry_unavailable"
        => "暂时无法连接医保信息库，请稍后再试或联系工作人员。",
        "The registry cannot be reached right now; please try again shortly or ask staff.",
    /// The registry worker stopped; the daemon is shutting down or broken.
    Internal = "internal"
        => "系统故障，请联系工作人员。",
        "System error; please ask staff.",
    /// Sent by `cardlink-display` to its page: cardlinkd cannot be reached.
    DaemonOffline = "daemon_offline"
        => "读卡服务未连接，请联系工作人员。",
        "The card service is offline; please ask staff.",
    // Events about the client's own connection.
    /// The line was not JSON.
    BadJson = "bad_json"
        => "请求格式有误。",
        "The request is not valid JSON.",
    /// The line exceeded 64 KiB; the connection is closed.
    LineTooLong = "line_too_long"
        => "请求内容过长。",
        "The request is too long.",
    /// The client fell more than 512 events behind; the connection is closed.
    Lagged = "lagged"
        => "连接中断，请稍候。",
        "The screen fell behind and was disconnected; please wait.",
    // Request refusals.
    /// Unknown `cmd`.
    UnknownCommand = "unknown_command"
        => "不支持该操作。",
        "This request is not supported.",
    /// Missing, ill-typed, unknown or contradictory fields.
    BadRequest = "bad_request"
        => "请求有误。",
        "The request is not valid.",
    /// `lookup` at a kiosk.
    ManualEntryNotAllowed = "manual_entry_not_allowed"
        => "自助机不支持手工输入，请刷卡。",
        "Manual entry is not available at a kiosk; please swipe the card.",
    /// A typed number that is not a valid SSN, card or bank card number.
    BadNumber = "bad_number"
        => "号码有误，请核对。",
        "The number is not valid; please check it.",
    /// A party given by number at a kiosk.
    KioskRequiresSwipe = "kiosk_requires_swipe"
        => "自助机上请刷卡办理。",
        "At a kiosk, please swipe the cards.",
    /// A swipe id that is unknown, failed or older than 5 minutes.
    UnknownSwipe = "unknown_swipe"
        => "刷卡记录已失效，请重新刷卡。",
        "That swipe has expired; please swipe again.",
    /// A party's card resolved to something other than `ok`.
    CardNotUsable = "card_not_usable"
        => "该卡不能使用。",
        "This card cannot be used.",
    /// A party identified by an identity card where `[policy] id_card`
    /// does not let one bind (by default: at a kiosk).
    IdCardNotAllowed = "id_card_not_allowed"
        => "自助机绑定请刷社保卡。",
        "At a kiosk, binding needs the social-security card.",
    // Binding rules (registry).
    /// Holder and member are the same person.
    SamePerson = "same_person"
        => "参保人与家庭成员不能是同一人。",
        "The account holder and the member are the same person.",
    /// The relation is not in the allowed list.
    RelationNotAllowed = "relation_not_allowed"
        => "本地不允许该亲属关系共济。",
        "This relation is not allowed here.",
    /// The holder is not in the registry.
    HolderUnknown = "holder_unknown"
        => "未找到参保人信息。",
        "The account holder is not registered.",
    /// The member is not in the registry.
    MemberUnknown = "member_unknown"
        => "未找到家庭成员信息。",
        "The family member is not registered.",
    /// The holder has no active employee medical insurance.
    HolderNotEmployee = "holder_not_employee"
        => "只有参加职工医保的人员才有个人账户，才能为家人共济。",
        "Only an employee-insured person has a personal account to pay from.",
    /// The holder has no active, unexpired card.
    HolderNoActiveCard = "holder_no_active_card"
        => "参保人没有有效的社保卡。",
        "The account holder has no valid card.",
    /// The member has no active basic medical insurance.
    MemberNotInsured = "member_not_insured"
        => "家庭成员须参加基本医疗保险。",
        "The family member must be enrolled in basic medical insurance.",
    /// The member has no active, unexpired card.
    MemberNoActiveCard = "member_no_active_card"
        => "家庭成员没有有效的社保卡。",
        "The family member has no valid card.",
    /// This link is already active.
    AlreadyLinked = "already_linked"
        => "已经绑定过该家庭成员。",
        "This family member is already bound to this account.",
    /// The member already has another payer.
    MemberHasPayer = "member_has_payer"
        => "该家庭成员已由其他账户共济。",
        "This family member is already covered by another account.",
    /// The holder's account covers the most members the province allows.
    TooManyMembers = "too_many_members"
        => "该账户共济人数已达上限。",
        "This account covers the most members allowed.",
    /// The member was unbound from another payer within the cooldown.
    Cooldown = "cooldown"
        => "解除绑定后需等待一段时间才能绑定其他账户。",
        "After an unbind the member must wait before another account can cover them.",
    /// Holder and member are not insured in the same province (or city).
    OutOfScope = "out_of_scope"
        => "目前仅支持在同一统筹区域内共济。",
        "Mutual aid is only possible within the same region for now.",
    /// The holder is covered by the member: the link would be mutual.
    MutualLink = "mutual_link"
        => "双方不能互相共济。",
        "Two people cannot pay for each other.",
    /// `unbind` of a link that is not active.
    NotLinked = "not_linked"
        => "没有找到该绑定关系。",
        "There is no such link.",
    /// A request only a privileged client may make (`capture`).
    NotPrivileged = "not_privileged"
        => "此操作需要工作人员权限。",
        "Only staff may do this.",
    /// The socket already serves `socket.max_clients` clients; the
    /// connection is closed.
    TooManyClients = "too_many_clients"
        => "系统繁忙，请稍后再试。",
        "The system is busy; please try again shortly.",
    // Sent by `cardlink-display` to its page.
    /// At a kiosk: the swipe is not the person (or the bind flow) of this
    /// screen's session; swipe the card again.
    NotInSession = "not_in_session"
        => "请重新刷卡后再办理。",
        "Please swipe the card again first.",
    /// At a window: this screen has no operator configured, so it cannot
    /// bind or unbind (`cardlink-display --operator`).
    OperatorRequired = "operator_required"
        => "本窗口未配置操作员，不能办理绑定。",
        "This window has no operator configured and cannot bind.",
    /// A self-service bind (no `operator`, or any bind at a kiosk) without
    /// the version of a consent statement the holder confirmed, or with a
    /// version that was never shipped (`registry::consent::ALL`).
    ConsentRequired = "consent_required"
        => "请先阅读并确认绑定说明。",
        "Please read and confirm the statement about the bind first.",
    /// `print_records` where no receipt printer is configured, or the
    /// printer cannot print now (paper out, cover open, offline, error,
    /// disconnected).
    PrinterUnavailable = "printer_unavailable"
        => "打印机不可用，无法打印凭条。",
        "The printer is not available; no receipt can be printed.",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&registry::BindError> for ErrorCode {
    /// A bind refusal's code is [`registry::BindError::code`], the string
    /// its audit row records: one table for the audit log and the wire. A
    /// test checks that every refusal's string is a code.
    fn from(e: &registry::BindError) -> ErrorCode {
        ErrorCode::from_wire(e.code()).unwrap_or(ErrorCode::Internal)
    }
}

impl From<&registry::RegistryError> for ErrorCode {
    fn from(e: &registry::RegistryError) -> ErrorCode {
        match e {
            registry::RegistryError::Busy(_) => ErrorCode::DatabaseBusy,
            registry::RegistryError::Unavailable(_) => ErrorCode::RegistryUnavailable,
            _ => ErrorCode::Registry,
        }
    }
}

/// A relation's label on a screen: Chinese (the registry's) and English.
pub fn relation_label(r: registry::Relation) -> Sentence {
    use registry::Relation as R;
    Sentence {
        zh: r.label_zh(),
        en: match r {
            R::Spouse => "spouse",
            R::Parent => "parent",
            R::Child => "child",
            R::Sibling => "brother or sister",
            R::Grandparent => "paternal grandparent",
            R::MaternalGrandparent => "maternal grandparent",
            R::Grandchild => "grandchild (son's child)",
            R::MaternalGrandchild => "grandchild (daughter's child)",
        },
    }
}

/// Whether a client sees full SSNs and names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// Masked (default).
    Masked,
    /// Full (privileged uid).
    Full,
}

impl Privacy {
    /// The value as this client sees it.
    pub fn ssn(self, s: &Ssn) -> String {
        match self {
            Privacy::Full => s.expose().to_string(),
            Privacy::Masked => s.masked().to_string(),
        }
    }
    /// The value as this client sees it.
    pub fn name(self, s: &str) -> String {
        match self {
            Privacy::Full => s.to_string(),
            Privacy::Masked => mask::name(s),
        }
    }
    /// The value as this client sees it.
    pub fn card_no(self, s: &str) -> String {
        match self {
            Privacy::Full => s.to_string(),
            Privacy::Masked => mask::card_no(s),
        }
    }
    /// The value as this client sees it.
    pub fn pan(self, s: &str) -> String {
        match self {
            Privacy::Full => s.to_string(),
            Privacy::Masked => mask::pan(s),
        }
    }
}

/// A server → client line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "UPPERCASE")]
pub enum Message {
    /// First line on every connection.
    Version(Version),
    /// A reader's state.
    Reader(ReaderMsg),
    /// A resolved card read or lookup.
    Card(Box<Card>),
    /// A card was taken out of a reader.
    Removed(RemovedMsg),
    /// Something a display should show.
    Error(ErrorMsg),
    /// The answer to a request.
    Reply(Reply),
    /// The daemon's role changed (a reload): displays follow it at once.
    Role(RoleMsg),
    /// Sent by `cardlink-display` to its pages, never by the daemon.
    Display(DisplayMsg),
    /// Sent by `cardlink-display` to a kiosk page whose session ended.
    Session(SessionMsg),
    /// The receipt printer's state (on connect and when it changes).
    Printer(PrinterMsg),
    /// A receipt was printed, or could not be.
    Receipt(ReceiptMsg),
}

/// `SESSION`: a kiosk page's session ended without the page asking
/// (`ended`: `idle`); the page returns to its idle screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMsg {
    /// Why.
    pub ended: SessionEnd,
}

/// Why a kiosk page's session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// Nobody swiped or touched the screen for `idle_s` seconds.
    Idle,
}

macro_rules! wire_names {
    ($t:ty { $($variant:ident = $text:literal),* $(,)? }) => {
        impl $t {
            /// The name as sent on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(<$t>::$variant => $text,)*
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

wire_names!(SessionEnd { Idle = "idle" });

/// A receipt printer's state (`PRINTER`, `RECEIPT`, `status`), from its
/// `DLE EOT` replies (`crate::printer::status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrinterState {
    /// Ready.
    Ok,
    /// Ready; the roll is nearly used up.
    PaperNearEnd,
    /// Out of paper.
    PaperEnd,
    /// Cover open.
    CoverOpen,
    /// Offline for another reason.
    Offline,
    /// Cutter, head or unrecoverable error.
    Error,
    /// Cannot be opened, or does not answer.
    #[default]
    Disconnected,
}

wire_names!(PrinterState {
    Ok = "ok",
    PaperNearEnd = "paper_near_end",
    PaperEnd = "paper_end",
    CoverOpen = "cover_open",
    Offline = "offline",
    Error = "error",
    Disconnected = "disconnected",
});

impl From<crate::printer::PrinterState> for PrinterState {
    fn from(s: crate::printer::PrinterState) -> PrinterState {
        use crate::printer::PrinterState as P;
        match s {
            P::Ok => PrinterState::Ok,
            P::PaperNearEnd => PrinterState::PaperNearEnd,
            P::PaperEnd => PrinterState::PaperEnd,
            P::CoverOpen => PrinterState::CoverOpen,
            P::Offline => PrinterState::Offline,
            P::Error => PrinterState::Error,
            P::Disconnected => PrinterState::Disconnected,
        }
    }
}

/// `PRINTER`: the receipt printer's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrinterMsg {
    /// Its state.
    pub state: PrinterState,
    /// Device path.
    pub path: String,
    /// Why it is disconnected (the last open, write or status error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `RECEIPT`: the outcome of one receipt (matched to its bind, unbind or
/// printing by `audit_seq`, which the reply's `receipt` carries too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptMsg {
    /// `bind`, `unbind` or `records`.
    pub kind: String,
    /// The audit row of the bind, unbind or printing.
    pub audit_seq: i64,
    /// Whether the receipt went to the printer.
    pub printed: bool,
    /// The printer's state then.
    pub state: PrinterState,
    /// Why it was not printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A bind's or unbind's receipt, in its reply (absent without a printer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptQueued {
    /// The audit row of the bind or unbind.
    pub audit_seq: i64,
    /// Whether a receipt is on its way; `false` when the printer cannot
    /// print now (`printer` says why): the link is made all the same.
    pub queued: bool,
    /// The printer's last known state.
    pub printer: PrinterState,
}

/// The printer in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrinterStatus {
    /// Device path.
    pub path: String,
    /// Its state.
    pub state: PrinterState,
    /// Receipts printed.
    pub printed: u64,
    /// Receipts that could not be printed.
    pub failed: u64,
    /// The last error.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A station's role on the wire (`ROLE`, `DISPLAY`, `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A service window: a clerk, numbers typed in.
    Window,
    /// A self-service kiosk: swipes only, masked.
    Kiosk,
}

wire_names!(Role {
    Window = "window",
    Kiosk = "kiosk",
});

impl From<Station> for Role {
    fn from(s: Station) -> Role {
        match s {
            Station::Window => Role::Window,
            Station::Kiosk => Role::Kiosk,
        }
    }
}

/// A reader's state (`READER`, `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReaderState {
    /// Open and answering.
    Connected,
    /// Not open (unplugged, not yet opened, reconnecting).
    #[default]
    Disconnected,
    /// Open but cannot read: an identity-card module's SAM fault or
    /// silence, a library reader whose helper ended.
    Error,
}

wire_names!(ReaderState {
    Connected = "connected",
    Disconnected = "disconnected",
    Error = "error",
});

/// Whether `cardlink-display` reaches cardlinkd (`DISPLAY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonLink {
    /// Connected to cardlinkd.
    Connected,
    /// cardlinkd cannot be reached; the display retries.
    Offline,
}

wire_names!(DaemonLink {
    Connected = "connected",
    Offline = "offline",
});

/// `ROLE`: the daemon's role after a reload changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleMsg {
    /// The new role.
    pub role: Role,
}

/// `DISPLAY`: `cardlink-display`'s state for its page, sent on connect and
/// whenever the daemon link or the role changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplayMsg {
    /// Whether the display reaches cardlinkd.
    pub daemon: DaemonLink,
    /// The daemon's role, once known.
    pub role: Option<Role>,
    /// The operator this (window) screen binds as, from the display's
    /// configuration; `null` where none is configured.
    pub operator: Option<String>,
    /// Seconds without a swipe or a touch after which a kiosk session ends.
    pub idle_s: u64,
    /// Whether a kiosk page starts in 长辈模式 (elder mode:
    /// `cardlink-display --elder`); the person can toggle it on any screen.
    #[serde(default)]
    pub elder: bool,
    /// When a kiosk page speaks its screens' key sentences.
    #[serde(default)]
    pub speech: Speech,
}

/// When a kiosk page speaks (`cardlink-display --speech`, `DISPLAY`
/// `speech`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speech {
    /// In 长辈模式 only.
    #[default]
    Elder,
    /// In both modes.
    Always,
    /// Never.
    Never,
}

impl Speech {
    /// Every value, in the order of `--speech`'s help.
    pub const ALL: [Speech; 3] = [Speech::Elder, Speech::Always, Speech::Never];

    /// Its name on the wire and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Speech::Elder => "elder",
            Speech::Always => "always",
            Speech::Never => "never",
        }
    }
}

impl std::str::FromStr for Speech {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Speech::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("'{s}' is not one of elder, always, never"))
    }
}

/// `VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// cardlinkd's release.
    pub release: String,
    /// Protocol version.
    pub proto: u32,
}

impl Version {
    /// This daemon's version line.
    pub fn current() -> Version {
        Version {
            release: env!("CARGO_PKG_VERSION").into(),
            proto: PROTO,
        }
    }
}

/// `READER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderMsg {
    /// Reader name.
    pub reader: String,
    /// Its state; the field `error` says why when it is not connected.
    pub state: ReaderState,
    /// Device path.
    pub path: String,
    /// Why the reader is disconnected (the last open or read error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `REMOVED`: the card was taken out of a reader (a kiosk returns to its
/// idle screen).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedMsg {
    /// Reader name.
    pub reader: String,
}

/// `ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message (never a full SSN).
    pub message: String,
    /// For `reader_read_error`: the reader interface's return code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_code: Option<i32>,
    /// Its meaning in Chinese.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zh: Option<String>,
    /// Its meaning in English.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub en: Option<String>,
}

impl ErrorMsg {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: String) -> ErrorMsg {
        ErrorMsg {
            code,
            message,
            reader_code: None,
            zh: None,
            en: None,
        }
    }

    /// Adds a reader return code and its meaning
    /// (`firmware_protocol::retcode`).
    pub fn with_reader_code(mut self, code: Option<i32>) -> ErrorMsg {
        if let Some(c) = code {
            self.reader_code = Some(c);
            if self.code == ErrorCode::IdCardError {
                // The SW3 byte of an identity-card module.
                let sw = u8::try_from(c)
                    .ok()
                    .and_then(firmware_protocol::idcard::Sw3::from_code);
                self.zh = Some(sw.map_or("未知状态", |s| s.zh()).into());
                self.en = Some(sw.map_or("unknown status", |s| s.en()).into());
            } else {
                let m = firmware_protocol::retcode::meaning(c);
                self.zh = Some(m.zh.into());
                self.en = Some(m.en.into());
            }
        }
        self
    }
}

/// `REPLY`: `ok` with a `result`, or a refusal with `code` and `message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id, echoed.
    pub id: Value,
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result (command-specific) when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ReplyResult>,
    /// The refusal code when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// The refusal message when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Reply {
    /// A successful reply with its result.
    pub fn ok(id: Value, result: ReplyResult) -> Reply {
        Reply {
            id,
            ok: true,
            result: Some(result),
            code: None,
            message: None,
        }
    }

    /// A refusal.
    pub fn err(id: Value, code: ErrorCode, message: String) -> Reply {
        Reply {
            id,
            ok: false,
            result: None,
            code: Some(code),
            message: Some(message),
        }
    }
}

/// The `result` of a successful `REPLY`, one shape per command. On the wire
/// it is the bare object (no tag of its own); each shape has fields the
/// others lack, which is how a client tells them apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReplyResult {
    /// `lookup`: the `CARD` message of the typed number, with its `class`.
    Card(CardResult),
    /// `status`.
    Status(Status),
    /// `contributions`.
    Records(Records),
    /// `bind`.
    Bound(Bound),
    /// `unbind`.
    Unbound(Unbound),
    /// `capture`.
    Capturing(Capturing),
    /// `bind_start` (display, kiosk): `{"bind":"started"}`.
    BindStarted(BindStarted),
    /// `end` (display, kiosk): `{"ended":true}`.
    Ended(Ended),
    /// `keep` (display, kiosk): `{"kept":true,"idle_s":60}`.
    Kept(Kept),
    /// `print_records`: `{"receipt":{…}}`.
    Printing(RecordsPrinting),
}

/// Result of `print_records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsPrinting {
    /// The receipt on its way (`RECEIPT` follows, `kind` `records`).
    pub receipt: ReceiptQueued,
}

/// The result of `lookup`: a `CARD` message, `class` included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class")]
pub enum CardResult {
    /// The card.
    #[serde(rename = "CARD")]
    Card(Box<Card>),
}

/// The result of `bind_start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindStarted {
    /// Always `started`.
    pub bind: BindStep,
}

/// What `bind_start` began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindStep {
    /// The next card swiped is the member's.
    Started,
}

/// The result of `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// Always `true`.
    pub ended: bool,
}

/// The result of `keep`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// Whether a session was live (and now lasts `idle_s` from now).
    pub kept: bool,
    /// Seconds without a touch before the session ends, now.
    pub idle_s: u64,
}

/// How a card resolved (the registry's outcome on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireOutcome {
    /// Known person with a usable card.
    Ok,
    /// Not in the registry.
    Unknown,
    /// Card reported lost.
    Lost,
    /// Card frozen.
    Frozen,
    /// Card cancelled.
    Cancelled,
    /// Card expired.
    Expired,
    /// The SSN on the card is not the card owner's.
    Mismatch,
    /// Person known, no card.
    NoCard,
}

impl From<Outcome> for WireOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Ok => WireOutcome::Ok,
            Outcome::Unknown => WireOutcome::Unknown,
            Outcome::Lost => WireOutcome::Lost,
            Outcome::Frozen => WireOutcome::Frozen,
            Outcome::Cancelled => WireOutcome::Cancelled,
            Outcome::Expired => WireOutcome::Expired,
            Outcome::Mismatch => WireOutcome::Mismatch,
            Outcome::NoCard => WireOutcome::NoCard,
        }
    }
}

/// The person's part in family mutual aid, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FamilyRole {
    /// Their account covers members.
    Holder,
    /// Someone else's account pays for them.
    Member,
    /// Both: a payer covers them and their own account covers members.
    Both,
    /// Neither.
    None,
}

impl From<registry::Role> for FamilyRole {
    fn from(r: registry::Role) -> Self {
        match r {
            registry::Role::Holder => FamilyRole::Holder,
            registry::Role::Member => FamilyRole::Member,
            registry::Role::Both => FamilyRole::Both,
            registry::Role::None => FamilyRole::None,
        }
    }
}

/// Insurance of the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insurance {
    /// `employee`, `resident` or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `active`, `suspended` or `ended`.
    pub status: String,
}

/// Who pays, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayerMsg {
    /// Payer's SSN (masked unless privileged).
    pub ssn: String,
    /// Payer's name (masked unless privileged).
    pub name: String,
    /// Relation of the person to the payer; `null` when self.
    pub relation: Option<String>,
    /// The paying account's balance, fen.
    pub balance_fen: Option<i64>,
}

/// A covered member, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMsg {
    /// SSN (masked unless privileged).
    pub ssn: String,
    /// Name (masked unless privileged).
    pub name: String,
    /// Relation to the holder.
    pub relation: String,
    /// Link made at (RFC 3339).
    pub since: String,
}

/// `CARD`: a resolved card read (also the result of `lookup`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// Reader name, or `manual`.
    pub reader: String,
    /// Swipe id.
    pub swipe: u64,
    /// How the number was read.
    pub source: CardSource,
    /// For `id_card`: the document read (`resident_id` 居民身份证,
    /// `hmt_residence_permit` 港澳台居民居住证, `foreign_permanent` 2023
    /// 外国人永久居留身份证).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// SSN.
    pub ssn: Option<String>,
    /// Card number.
    pub card_no: Option<String>,
    /// Bank card number.
    pub pan: Option<String>,
    /// Name (registry's, else the card's).
    pub name: Option<String>,
    /// Outcome.
    pub outcome: WireOutcome,
    /// Role.
    pub role: FamilyRole,
    /// Card status in the registry.
    pub card_status: Option<String>,
    /// Insurance, when the person is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insurance: Option<Insurance>,
    /// Who pays (only for `ok`).
    pub payer: Option<PayerMsg>,
    /// Relation to the payer.
    pub relation: Option<String>,
    /// Balance of the paying account.
    pub balance_fen: Option<i64>,
    /// Members covered.
    pub members: Vec<MemberMsg>,
}

impl PayerMsg {
    /// Who pays, as `v` sees it.
    pub fn new(p: &Payer, v: Privacy) -> PayerMsg {
        PayerMsg {
            ssn: v.ssn(&p.ssn),
            name: v.name(&p.name),
            relation: p.relation.clone(),
            balance_fen: p.balance_fen,
        }
    }
}

impl MemberMsg {
    /// A covered member, as `v` sees them.
    pub fn new(m: &Member, v: Privacy) -> MemberMsg {
        MemberMsg {
            ssn: v.ssn(&m.ssn),
            name: v.name(&m.name),
            relation: m.relation.clone(),
            since: m.since.clone(),
        }
    }
}

impl From<&registry::PersonInfo> for Insurance {
    fn from(p: &registry::PersonInfo) -> Insurance {
        Insurance {
            kind: p.insurance_type.clone(),
            status: p.insurance_status.clone(),
        }
    }
}

/// One month's payment record, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `YYYY-MM`.
    pub month: String,
    /// Employer.
    pub employer: String,
    /// Contribution base, fen.
    pub base_fen: i64,
    /// Employee's part, fen.
    pub employee_fen: i64,
    /// Employer's part, fen.
    pub employer_fen: i64,
    /// Credited to the personal account, fen.
    pub account_fen: i64,
}

impl From<&Contribution> for Record {
    fn from(c: &Contribution) -> Record {
        Record {
            month: c.month.clone(),
            employer: c.employer.clone(),
            base_fen: c.base_fen,
            employee_fen: c.employee_fen,
            employer_fen: c.employer_fen,
            account_fen: c.account_fen,
        }
    }
}

/// Result of `contributions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// Months asked for.
    pub months: u32,
    /// Records, newest first.
    pub records: Vec<Record>,
}

/// Result of `bind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bound {
    /// Always `true`.
    pub bound: bool,
    /// The relation recorded.
    pub relation: String,
    /// Its receipt, where a printer is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptQueued>,
}

/// Result of `unbind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbound {
    /// Always `true`.
    pub unbound: bool,
    /// Its receipt, where a printer is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptQueued>,
}

/// One reader in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderStatus {
    /// Name.
    pub name: String,
    /// Device path.
    pub path: String,
    /// Mode.
    pub mode: String,
    /// Its state.
    pub state: ReaderState,
    /// Valid frames or lines.
    pub items: u64,
    /// Card reads reported.
    pub cards: u64,
    /// Duplicates suppressed.
    pub duplicates: u64,
    /// Rejected reads.
    pub rejected: u64,
    /// Noise bytes dropped.
    pub noise_bytes: u64,
    /// Firmware from the reader's `STATUS`.
    pub firmware: Option<String>,
    /// The last open or read error (why it is or was disconnected).
    #[serde(default)]
    pub last_error: Option<String>,
    /// A library reader: times its helper process was restarted (absent
    /// for other readers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u64>,
    /// A library reader: the last return code of `iReadCardBas` (absent
    /// for other readers and before the first call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_code: Option<i64>,
}

/// Result of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Release.
    pub release: String,
    /// The daemon's role.
    pub role: Role,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Readers.
    pub readers: Vec<ReaderStatus>,
    /// Connected clients.
    pub clients: u64,
    /// Resolutions done.
    pub resolutions: u64,
    /// Errors reported.
    pub errors: u64,
    /// The receipt printer (absent when none is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printer: Option<Box<PrinterStatus>>,
    /// The province's binding rules in force (`[policy]`), for the
    /// screens' consent statement; no personal data.
    #[serde(default)]
    pub policy: Box<PolicyStatus>,
}

/// `[policy]` in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// Days after an unbind before the member may be bound to another
    /// account (0: none).
    pub rebind_cooldown_days: u32,
    /// Members one account may cover (`null`: no limit).
    pub max_members: Option<u32>,
    /// Where holder and member must be insured: `province`, `city` or `any`.
    pub scope: String,
}

impl Default for PolicyStatus {
    fn default() -> PolicyStatus {
        PolicyStatus::from(&registry::BindPolicy::default())
    }
}

impl From<&registry::BindPolicy> for PolicyStatus {
    fn from(p: &registry::BindPolicy) -> PolicyStatus {
        use registry::Scope;
        PolicyStatus {
            rebind_cooldown_days: p.rebind_cooldown_days,
            max_members: (p.max_members > 0).then_some(p.max_members),
            scope: match p.scope {
                Scope::Province => "province",
                Scope::City => "city",
                Scope::Any => "any",
            }
            .into(),
        }
    }
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
    /// Bind a member to a holder. Each party is a number (window role) or
    /// a swipe id from a `CARD` event (both roles; required at a kiosk),
    /// never both.
    Bind {
        /// Request id.
        #[serde(default)]
        id: Value,
        /// Holder and member.
        #[serde(flatten)]
        parties: Parties,
        /// Relation of the member to the holder.
        relation: String,
        /// Operator id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operator: Option<String>,
        /// The version of the consent statement (`registry::consent`) the
        /// holder confirmed (self-service) or was shown (window); stored in
        /// the bind's audit row.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        consent: Option<String>,
    },
    /// Revoke a link.
    Unbind {
        /// Request id.
        #[serde(default)]
        id: Value,
        /// Holder and member.
        #[serde(flatten)]
        parties: Parties,
        /// Operator id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operator: Option<String>,
    },
    /// Payment-record inquiry.
    Contributions {
        /// Request id.
        #[serde(default)]
        id: Value,
        /// SSN or card number (window role).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        number: Option<String>,
        /// Swipe id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        swipe: Option<u64>,
        /// Months (default 12, at most 120).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        months: Option<u32>,
    },
    /// Print a receipt of payment records (as `contributions` reads
    /// them): by swipe id (kiosk), or by number (window role).
    #[serde(rename = "print_records")]
    PrintRecords {
        /// Request id.
        #[serde(default)]
        id: Value,
        /// SSN or card number (window role).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        number: Option<String>,
        /// Swipe id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        swipe: Option<u64>,
        /// Months (default 12, at most 120).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        months: Option<u32>,
    },
    /// Daemon status.
    Status {
        /// Request id.
        #[serde(default)]
        id: Value,
    },
    /// Record a reader's raw traffic for N minutes (privileged clients).
    Capture {
        /// Request id.
        #[serde(default)]
        id: Value,
        /// Reader name.
        reader: String,
        /// Minutes (default 10, at most 1440).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        minutes: Option<u32>,
    },
}

/// Result of `capture`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capturing {
    /// The reader.
    pub reader: String,
    /// The file being written.
    pub path: String,
    /// Minutes from now.
    pub minutes: u32,
}

/// The two parties of a bind or unbind.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Parties {
    /// Holder: SSN or card number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Member: SSN or card number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Holder's swipe id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_swipe: Option<u64>,
    /// Member's swipe id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_swipe: Option<u64>,
}

impl Request {
    /// The request id.
    pub fn id(&self) -> &Value {
        match self {
            Request::Lookup { id, .. }
            | Request::Bind { id, .. }
            | Request::Unbind { id, .. }
            | Request::Contributions { id, .. }
            | Request::PrintRecords { id, .. }
            | Request::Status { id }
            | Request::Capture { id, .. } => id,
        }
    }

    /// Sets the request id.
    pub fn set_id(&mut self, new: Value) {
        match self {
            Request::Lookup { id, .. }
            | Request::Bind { id, .. }
            | Request::Unbind { id, .. }
            | Request::Contributions { id, .. }
            | Request::PrintRecords { id, .. }
            | Request::Status { id }
            | Request::Capture { id, .. } => *id = new,
        }
    }
}

/// Why a request line was not a request.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest {
    /// The id, when the line was JSON with one.
    pub id: Option<Value>,
    /// `bad_json`, `bad_request` or `unknown_command`.
    pub code: ErrorCode,
    /// Explanation.
    pub message: String,
}

const COMMANDS: [&str; 7] = [
    "lookup",
    "bind",
    "unbind",
    "contributions",
    "print_records",
    "status",
    "capture",
];
const PARTY_FIELDS: [&str; 4] = ["holder", "member", "holder_swipe", "member_swipe"];

fn parse_json(line: &[u8]) -> Result<Value, BadRequest> {
    serde_json::from_slice(line).map_err(|e| BadRequest {
        id: None,
        code: ErrorCode::BadJson,
        message: format!("invalid JSON: {e}"),
    })
}

/// Parses a request line.
pub fn parse_request(line: &[u8]) -> Result<Request, BadRequest> {
    request_from_value(parse_json(line)?)
}

/// What a screen's page sends to `cardlink-display`: a daemon request, or
/// a step of a kiosk session that the display keeps itself.
#[derive(Debug, Clone, PartialEq)]
pub enum PageRequest {
    /// A request the display forwards to the daemon (after its checks).
    Daemon(Request),
    /// `{"cmd":"bind_start"}`: at a kiosk, the person of this screen's
    /// session starts a bind; the next card swiped is the member's.
    BindStart {
        /// Request id.
        id: Value,
    },
    /// `{"cmd":"end"}`: the person is done; the session ends.
    End {
        /// Request id.
        id: Value,
    },
    /// `{"cmd":"keep","elder":bool}`: the person is still there (touched
    /// the screen, pressed 继续); `elder`: the page is in 长辈模式, so its
    /// session lasts at least a minute without a touch.
    Keep {
        /// Request id.
        id: Value,
        /// 长辈模式 on.
        elder: bool,
    },
}

impl PageRequest {
    /// The request id.
    pub fn id(&self) -> &Value {
        match self {
            PageRequest::Daemon(r) => r.id(),
            PageRequest::BindStart { id }
            | PageRequest::End { id }
            | PageRequest::Keep { id, .. } => id,
        }
    }
}

/// Parses a line from a screen's page.
pub fn parse_page_request(line: &[u8]) -> Result<PageRequest, BadRequest> {
    let v = parse_json(line)?;
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    match v.get("cmd").and_then(Value::as_str) {
        Some(cmd @ ("bind_start" | "end")) => {
            if let Some(k) = v
                .as_object()
                .and_then(|o| o.keys().find(|k| *k != "id" && *k != "cmd"))
            {
                return Err(BadRequest {
                    id: Some(id),
                    code: ErrorCode::BadRequest,
                    message: format!("unknown field `{k}`"),
                });
            }
            Ok(if cmd == "end" {
                PageRequest::End { id }
            } else {
                PageRequest::BindStart { id }
            })
        }
        Some("keep") => {
            let bad = |message: String| BadRequest {
                id: Some(id.clone()),
                code: ErrorCode::BadRequest,
                message,
            };
            let obj = v.as_object();
            if let Some(k) = obj.and_then(|o| {
                o.keys()
                    .find(|k| !["id", "cmd", "elder"].contains(&k.as_str()))
            }) {
                return Err(bad(format!("unknown field `{k}`")));
            }
            let elder = match v.get("elder") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("`elder` must be true or false".into())),
            };
            Ok(PageRequest::Keep { id, elder })
        }
        _ => request_from_value(v).map(PageRequest::Daemon),
    }
}

fn request_from_value(v: Value) -> Result<Request, BadRequest> {
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let bad = |code, message: String| BadRequest {
        id: Some(id.clone()),
        code,
        message,
    };
    let Some(cmd) = v.get("cmd").and_then(Value::as_str) else {
        return Err(bad(ErrorCode::BadRequest, "missing \"cmd\"".into()));
    };
    if !COMMANDS.contains(&cmd) {
        return Err(bad(
            ErrorCode::UnknownCommand,
            format!("unknown command '{cmd}'"),
        ));
    }
    // `deny_unknown_fields` does not reach into a flattened struct, so the
    // party commands check their field names here.
    if cmd == "bind" || cmd == "unbind" {
        if let Some(obj) = v.as_object() {
            let known: &[&str] = if cmd == "bind" {
                &["id", "cmd", "relation", "operator", "consent"]
            } else {
                &["id", "cmd", "operator"]
            };
            if let Some(k) = obj
                .keys()
                .find(|k| !known.contains(&k.as_str()) && !PARTY_FIELDS.contains(&k.as_str()))
            {
                return Err(bad(ErrorCode::BadRequest, format!("unknown field `{k}`")));
            }
        }
    }
    serde_json::from_value(v).map_err(|e| bad(ErrorCode::BadRequest, e.to_string()))
}

/// Encodes one message as a line (with the trailing `\n`).
pub fn encode_line(m: &Message, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *out, m)?;
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every refusal of the registry is a code on the wire, and the code
    /// its audit row records: `BindError::code` is the one table, and a
    /// registry failure inside a bind is the same code as outside one.
    #[test]
    fn bind_refusals_are_wire_codes() {
        use registry::{BindError as B, RegistryError as R};
        let ssn = Ssn::parse("11010519491231002X").unwrap();
        let all = [
            B::HolderUnknown(ssn),
            B::MemberUnknown(ssn),
            B::SamePerson,
            B::HolderNotEmployee,
            B::HolderNoActiveCard,
            B::MemberNotInsured,
            B::MemberNoActiveCard,
            B::RelationNotAllowed("x".into()),
            B::TooManyMembers(3),
            B::Cooldown {
                since: "a".into(),
                until: "b".into(),
            },
            B::OutOfScope("x".into()),
            B::AlreadyLinked,
            B::MemberHasPayer,
            B::MutualLink,
            B::NotLinked,
            B::Registry(R::Busy(std::time::Duration::from_secs(5))),
            B::Registry(R::Unavailable("down".into())),
            B::Registry(R::Corrupt("x".into())),
            B::Registry(R::Pg("x".into())),
        ];
        for e in &all {
            assert_eq!(
                ErrorCode::from_wire(e.code()).map(ErrorCode::as_str),
                Some(e.code()),
                "{e:?}"
            );
            if let B::Registry(r) = e {
                assert_eq!(ErrorCode::from(e), ErrorCode::from(r), "{e:?}");
            }
        }
        assert_eq!(ErrorCode::from(&all[0]), ErrorCode::HolderUnknown);
    }

    #[test]
    fn error_codes_round_trip() {
        for c in ErrorCode::ALL {
            let v = serde_json::to_value(c).unwrap();
            assert_eq!(v, json!(c.as_str()));
            assert_eq!(serde_json::from_value::<ErrorCode>(v).unwrap(), *c);
        }
    }

    /// The codes in the "Error codes" table of docs/socket-protocol.md, and
    /// every code the document mentions in backticks next to a `code`.
    #[test]
    fn error_codes_match_the_documentation() {
        let doc = include_str!("../docs/socket-protocol.md");
        let table = doc
            .split("\n## Error codes\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("docs/socket-protocol.md has an '## Error codes' section");
        let documented: std::collections::BTreeSet<&str> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let in_code: std::collections::BTreeSet<&str> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            documented, in_code,
            "docs/socket-protocol.md's error table and ErrorCode differ"
        );
        // Codes named in the request sections are in the table too.
        for section in doc.split("\n## ").filter(|s| s.starts_with("Requests")) {
            for word in section.split('`').skip(1).step_by(2) {
                let looks_like_code = word.len() > 3
                    && word.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    && word.contains('_');
                let field = [
                    "holder_swipe",
                    "member_swipe",
                    "balance_fen",
                    "uptime_s",
                    "noise_bytes",
                    "last_error",
                    "last_code",
                    "busy_timeout_ms",
                    "privileged_uids",
                    "card_no",
                    "audit_seq",
                    "print_records",
                    "paper_near_end",
                ];
                if looks_like_code && !field.contains(&word) {
                    assert!(in_code.contains(word), "`{word}` is not an ErrorCode");
                }
            }
        }
    }

    #[test]
    fn messages_have_the_documented_shape() {
        let v = serde_json::to_value(Message::Version(Version::current())).unwrap();
        assert_eq!(
            v,
            json!({"class": "VERSION", "release": env!("CARGO_PKG_VERSION"), "proto": 1})
        );
        let r = serde_json::to_value(Message::Reply(Reply::err(
            json!(7),
            ErrorCode::MemberHasPayer,
            "x".into(),
        )))
        .unwrap();
        assert_eq!(
            r,
            json!({"class": "REPLY", "id": 7, "ok": false, "code": "member_has_payer", "message": "x"})
        );
        let e = serde_json::to_value(Message::Reader(ReaderMsg {
            reader: "r".into(),
            state: ReaderState::Connected,
            path: "/p".into(),
            error: None,
        }))
        .unwrap();
        assert_eq!(
            e,
            json!({"class": "READER", "reader": "r", "state": "connected", "path": "/p"})
        );
    }

    #[test]
    fn requests_parse_and_refuse() {
        let r = parse_request(
            br#"{"id":1,"cmd":"bind","holder":"A","member_swipe":3,"relation":"child"}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Bind {
                id: json!(1),
                parties: Parties {
                    holder: Some("A".into()),
                    member_swipe: Some(3),
                    ..Parties::default()
                },
                relation: "child".into(),
                operator: None,
                consent: None,
            }
        );
        let e = parse_request(
            br#"{"id":2,"cmd":"bind","holder":"A","member":"B","relation":"x","channel":"kiosk"}"#,
        )
        .unwrap_err();
        assert_eq!((e.id, e.code), (Some(json!(2)), ErrorCode::BadRequest));
        assert!(e.message.contains("channel"), "{}", e.message);
        let e = parse_request(br#"{"id":3,"cmd":"status","x":1}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(parse_request(b"{").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(
            parse_request(br#"{"cmd":"fly"}"#).unwrap_err().code,
            ErrorCode::UnknownCommand
        );
    }
}
