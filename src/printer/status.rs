//! The printer's real-time status: `DLE EOT n` (`10 04 n`) and its
//! one-byte replies, to a [`PrinterState`].
//!
//! Bits from Epson's *ESC/POS Command Reference*, `DLE EOT` (TM series);
//! every reply has bits 1 and 4 set and bits 0 and 7 clear
//! (`byte & 0x93 == 0x12`), which tells a status byte from anything else
//! on the line:
//!
//! | n | bit | meaning when set |
//! |---|---|---|
//! | 1 printer status | 3 | offline |
//! | 1 | 5 | waiting for online recovery |
//! | 2 offline cause | 2 | cover open |
//! | 2 | 3 | paper being fed by the feed button |
//! | 2 | 5 | printing stopped: paper end |
//! | 2 | 6 | an error occurred |
//! | 3 error cause | 2 | autocutter error |
//! | 3 | 3 | (unrecoverable error on some Chinese models; Epson: fixed 0) |
//! | 3 | 5 | unrecoverable error |
//! | 3 | 6 | automatically recoverable error (head too hot, cover opened while printing) |
//! | 4 roll paper | 2, 3 | paper near end (Epson sets both) |
//! | 4 | 5, 6 | paper end (Epson sets both) |
//!
//! Where sources disagree (PROTOCOL.md, *Sources*, "printer"): Epson sets
//! both bits of a pair of `n = 4`; several Chinese printers' manuals
//! (Xprinter, GPrinter) document only one of them. Either bit counts
//! here. Epson fixes bit 3 of `n = 3` at 0; some Chinese models set it for
//! an unrecoverable error, so it counts as an error too.

/// `DLE EOT n` for `n` = 1 (printer), 2 (offline cause), 3 (error cause),
/// 4 (roll paper sensor).
pub fn query(n: u8) -> [u8; 3] {
    [0x10, 0x04, n]
}

/// Whether `b` is shaped like a `DLE EOT` reply (bits 1, 4 set; 0, 7 clear).
pub fn is_status_byte(b: u8) -> bool {
    b & 0x93 == 0x12
}

/// The four replies to `DLE EOT 1`–`4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusBytes {
    /// `n = 1`: printer status.
    pub printer: u8,
    /// `n = 2`: offline cause.
    pub offline: u8,
    /// `n = 3`: error cause.
    pub error: u8,
    /// `n = 4`: roll paper sensor.
    pub paper: u8,
}

impl StatusBytes {
    /// The replies of a printer with nothing to report.
    pub const OK: StatusBytes = StatusBytes {
        printer: 0x12,
        offline: 0x12,
        error: 0x12,
        paper: 0x12,
    };

    /// What a printer in `state` answers (the simulator's printer).
    pub fn for_state(state: PrinterState) -> StatusBytes {
        let mut s = StatusBytes::OK;
        match state {
            PrinterState::Ok | PrinterState::Disconnected => {}
            PrinterState::PaperNearEnd => s.paper |= 0x0C,
            PrinterState::PaperEnd => {
                s.printer |= 0x08;
                s.offline |= 0x20;
                s.paper |= 0x6C;
            }
            PrinterState::CoverOpen => {
                s.printer |= 0x08;
                s.offline |= 0x04;
            }
            PrinterState::Offline => s.printer |= 0x08,
            PrinterState::Error => {
                s.printer |= 0x08;
                s.offline |= 0x40;
                s.error |= 0x20;
            }
        }
        s
    }

    /// The reply to `DLE EOT n` (`None` for another `n`).
    pub fn reply(&self, n: u8) -> Option<u8> {
        match n {
            1 => Some(self.printer),
            2 => Some(self.offline),
            3 => Some(self.error),
            4 => Some(self.paper),
            _ => None,
        }
    }

    /// The state these replies mean: the cause that stops printing first
    /// (paper end, cover open, error, offline), else paper near end, else ok.
    pub fn state(&self) -> PrinterState {
        let bit = |b: u8, n: u8| b & (1 << n) != 0;
        if bit(self.paper, 5) || bit(self.paper, 6) || bit(self.offline, 5) {
            PrinterState::PaperEnd
        } else if bit(self.offline, 2) {
            PrinterState::CoverOpen
        } else if bit(self.offline, 6)
            || bit(self.error, 2)
            || bit(self.error, 3)
            || bit(self.error, 5)
            || bit(self.error, 6)
        {
            PrinterState::Error
        } else if bit(self.printer, 3) {
            PrinterState::Offline
        } else if bit(self.paper, 2) || bit(self.paper, 3) {
            PrinterState::PaperNearEnd
        } else {
            PrinterState::Ok
        }
    }
}

/// A printer's state (`PRINTER`, `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrinterState {
    /// Ready.
    Ok,
    /// Ready; the roll is nearly used up.
    PaperNearEnd,
    /// Out of paper: nothing prints.
    PaperEnd,
    /// The cover is open: nothing prints.
    CoverOpen,
    /// Offline for another reason (feeding by the button, waiting to recover).
    Offline,
    /// An error (cutter, head temperature, unrecoverable).
    Error,
    /// The device cannot be opened, or it does not answer `DLE EOT`.
    #[default]
    Disconnected,
}

impl PrinterState {
    /// Whether a receipt can be printed in this state.
    pub fn can_print(self) -> bool {
        matches!(self, PrinterState::Ok | PrinterState::PaperNearEnd)
    }

    /// The name on the wire and in the configuration of the simulator.
    pub fn as_str(self) -> &'static str {
        match self {
            PrinterState::Ok => "ok",
            PrinterState::PaperNearEnd => "paper_near_end",
            PrinterState::PaperEnd => "paper_end",
            PrinterState::CoverOpen => "cover_open",
            PrinterState::Offline => "offline",
            PrinterState::Error => "error",
            PrinterState::Disconnected => "disconnected",
        }
    }

    /// Every state.
    pub const ALL: [PrinterState; 7] = [
        PrinterState::Ok,
        PrinterState::PaperNearEnd,
        PrinterState::PaperEnd,
        PrinterState::CoverOpen,
        PrinterState::Offline,
        PrinterState::Error,
        PrinterState::Disconnected,
    ];

    /// Parses [`PrinterState::as_str`].
    pub fn parse(s: &str) -> Option<PrinterState> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// In Chinese, for a screen or a log line.
    pub fn zh(self) -> &'static str {
        match self {
            PrinterState::Ok => "正常",
            PrinterState::PaperNearEnd => "纸将尽",
            PrinterState::PaperEnd => "缺纸",
            PrinterState::CoverOpen => "纸仓盖打开",
            PrinterState::Offline => "脱机",
            PrinterState::Error => "故障",
            PrinterState::Disconnected => "未连接",
        }
    }
}

impl std::fmt::Display for PrinterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(printer: u8, offline: u8, error: u8, paper: u8) -> PrinterState {
        StatusBytes {
            printer,
            offline,
            error,
            paper,
        }
        .state()
    }

    #[test]
    fn epson_bits_decode_to_states() {
        assert_eq!(s(0x12, 0x12, 0x12, 0x12), PrinterState::Ok);
        // Drawer pin high (bit 2 of n = 1) and feed button (bit 6) are not causes.
        assert_eq!(s(0x16, 0x12, 0x12, 0x12), PrinterState::Ok);
        assert_eq!(s(0x12, 0x12, 0x12, 0x1E), PrinterState::PaperNearEnd);
        assert_eq!(
            s(0x12, 0x12, 0x12, 0x16),
            PrinterState::PaperNearEnd,
            "one bit (Xprinter)"
        );
        assert_eq!(s(0x1A, 0x32, 0x12, 0x72), PrinterState::PaperEnd);
        assert_eq!(
            s(0x12, 0x12, 0x12, 0x32),
            PrinterState::PaperEnd,
            "one bit of the pair"
        );
        assert_eq!(s(0x1A, 0x16, 0x12, 0x12), PrinterState::CoverOpen);
        assert_eq!(s(0x1A, 0x52, 0x16, 0x12), PrinterState::Error, "autocutter");
        assert_eq!(
            s(0x12, 0x12, 0x32, 0x12),
            PrinterState::Error,
            "unrecoverable"
        );
        assert_eq!(
            s(0x12, 0x12, 0x52, 0x12),
            PrinterState::Error,
            "recoverable"
        );
        assert_eq!(s(0x1A, 0x12, 0x12, 0x12), PrinterState::Offline);
        // Paper end wins over the offline and error bits it brings.
        assert_eq!(s(0x1A, 0x72, 0x12, 0x7E), PrinterState::PaperEnd);
    }

    #[test]
    fn simulated_replies_mean_their_state() {
        // Disconnected is no reply at all.
        for st in PrinterState::ALL
            .into_iter()
            .filter(|s| *s != PrinterState::Disconnected)
        {
            let b = StatusBytes::for_state(st);
            for n in 1..=4 {
                assert!(is_status_byte(b.reply(n).unwrap()), "{st} n={n}");
            }
            assert_eq!(b.state(), st);
            assert_eq!(PrinterState::parse(st.as_str()), Some(st));
        }
        assert!(!is_status_byte(0x00));
        assert!(!is_status_byte(0x92));
        assert_eq!(query(4), [0x10, 0x04, 4]);
    }
}
