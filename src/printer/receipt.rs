//! What a receipt of a bind or unbind, or of payment records, says, and
//! its ESC/POS bytes.
//!
//! A receipt holds the parties' SSNs as [`Ssn`] and their names, and
//! prints only their masked forms (`330102********123X`, `张*`): there is
//! no way to put a full number on paper from here. The QR code carries the
//! same fields as the text, masked alike.

use super::escpos::{Doc, Encoding};
use crate::Ssn;

/// Bind or unbind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    /// A family link was made.
    Bind,
    /// A family link was revoked.
    Unbind,
    /// Payment records (`print_records`).
    Records,
}

impl ReceiptKind {
    /// The receipt's title.
    pub fn title(self) -> &'static str {
        match self {
            ReceiptKind::Bind => "家庭共济绑定凭条",
            ReceiptKind::Unbind => "家庭共济解除绑定凭条",
            ReceiptKind::Records => "医保缴费记录凭条",
        }
    }

    /// `bind` or `unbind` (the QR code's `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptKind::Bind => "bind",
            ReceiptKind::Unbind => "unbind",
            ReceiptKind::Records => "records",
        }
    }
}

/// One party as printed.
#[derive(Debug, Clone)]
pub struct Party {
    /// SSN (printed masked).
    pub ssn: Ssn,
    /// Name, when the registry knows it (printed masked).
    pub name: Option<String>,
}

impl Party {
    fn name_masked(&self) -> String {
        self.name
            .as_deref()
            .map(crate::mask::name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "—".into())
    }
}

/// A receipt's fields.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// Bind or unbind.
    pub kind: ReceiptKind,
    /// The account holder (who pays).
    pub holder: Party,
    /// The member (whose costs are paid).
    pub member: Party,
    /// The relation of the member to the holder, in Chinese (`配偶`).
    pub relation: Option<String>,
    /// Date and time, China Standard Time (`2026-12-01 20:15:04`).
    pub at: String,
    /// Where: `自助机` (kiosk) or `窗口` (window).
    pub channel: String,
    /// The box's name.
    pub station: String,
    /// The operator at a window.
    pub operator: Option<String>,
    /// The audit row's sequence number.
    pub audit_seq: i64,
    /// The first 12 hex digits of the audit row's hash.
    pub audit_hash: String,
}

impl Receipt {
    /// The text lines under the title, `label: value`.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("业务", self.kind.as_str().to_string()),
            ("缴费人", self.holder.name_masked()),
            ("缴费人证号", self.holder.ssn.masked().to_string()),
            ("共济人", self.member.name_masked()),
            ("共济人证号", self.member.ssn.masked().to_string()),
        ];
        if let Some(r) = &self.relation {
            f.push(("关系", r.clone()));
        }
        f.push(("时间", self.at.clone()));
        f.push(("渠道", self.channel.clone()));
        f.push(("终端", self.station.clone()));
        if let Some(op) = &self.operator {
            f.push(("经办人", op.clone()));
        }
        f.push(("流水号", self.audit_seq.to_string()));
        f.push(("校验码", self.audit_hash.clone()));
        f
    }

    /// The QR code's text: the title's kind and every field, one
    /// `label:value` per line.
    pub fn qr_payload(&self) -> String {
        let mut s = String::from("CARDLINK-RECEIPT/1");
        for (k, v) in self.fields() {
            s.push('\n');
            s.push_str(k);
            s.push(':');
            s.push_str(&v);
        }
        s
    }

    /// The receipt as ESC/POS bytes: title, fields, QR code, feed, cut.
    pub fn render(&self, encoding: Encoding) -> Vec<u8> {
        let mut d = Doc::new(encoding);
        d.center(true).title(self.kind.title()).center(false);
        d.line("--------------------------------");
        for (k, v) in self.fields().iter().skip(1) {
            d.line(&format!("{k}: {v}"));
        }
        d.line("--------------------------------");
        d.center(true).qr(&self.qr_payload());
        d.line("请妥善保管本凭条").center(false);
        d.feed(3).cut();
        d.into_bytes()
    }
}

/// One month of a records receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLine {
    /// `YYYY-MM`.
    pub month: String,
    /// Employer.
    pub employer: String,
    /// Credited to the personal account, fen.
    pub account_fen: i64,
}

/// A receipt of a person's payment records (the months a kiosk's records
/// screen shows): the person masked, one line per month, the total.
#[derive(Debug, Clone)]
pub struct RecordsReceipt {
    /// The person (printed masked).
    pub person: Party,
    /// Months asked for.
    pub months: u32,
    /// The records, newest first.
    pub lines: Vec<RecordLine>,
    /// Date and time, China Standard Time.
    pub at: String,
    /// `自助机` or `窗口`.
    pub channel: String,
    /// The box's name.
    pub station: String,
    /// The audit row of the printing.
    pub audit_seq: i64,
    /// The first 12 hex digits of its hash.
    pub audit_hash: String,
}

/// Fen as yuan, `352.00`.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let f = fen.unsigned_abs();
    format!("{sign}{}.{:02}", f / 100, f % 100)
}

impl RecordsReceipt {
    /// The sum credited to the account over the lines, fen.
    pub fn total_fen(&self) -> i64 {
        self.lines
            .iter()
            .fold(0i64, |t, l| t.saturating_add(l.account_fen))
    }

    /// The receipt as ESC/POS bytes: title, the person, one line per
    /// month (month, employer, amount to the account), the total, where
    /// and when, feed, cut. No QR code: the audit row is named in text.
    pub fn render(&self, encoding: Encoding) -> Vec<u8> {
        let mut d = Doc::new(encoding);
        d.center(true)
            .title(ReceiptKind::Records.title())
            .center(false);
        d.line("--------------------------------");
        d.line(&format!("姓名: {}", self.person.name_masked()));
        d.line(&format!("证号: {}", self.person.ssn.masked()));
        d.line(&format!("查询月数: {}", self.months));
        d.line("--------------------------------");
        d.line("月份 单位 划入个人账户(元)");
        for l in &self.lines {
            d.line(&format!(
                "{} {} {}",
                l.month,
                l.employer,
                yuan(l.account_fen)
            ));
        }
        if self.lines.is_empty() {
            d.line("无缴费记录");
        }
        d.line("--------------------------------");
        d.line(&format!("合计: {}", yuan(self.total_fen())));
        d.line(&format!("时间: {}", self.at));
        d.line(&format!("渠道: {}", self.channel));
        d.line(&format!("终端: {}", self.station));
        d.line(&format!("流水号: {}", self.audit_seq));
        d.line(&format!("校验码: {}", self.audit_hash));
        d.center(true).line("请妥善保管本凭条").center(false);
        d.feed(3).cut();
        d.into_bytes()
    }
}

/// `secs` since the epoch as China Standard Time (UTC+8, no daylight
/// saving), `YYYY-MM-DD HH:MM:SS`.
pub fn cst_datetime(secs: i64) -> String {
    let t = secs + 8 * 3600;
    let days = t.div_euclid(86_400);
    let rem = t.rem_euclid(86_400);
    let date = firmware_protocol::Date::from_days_since_epoch(days)
        .map(|d| d.to_string())
        .unwrap_or_else(|| "1970-01-01".into());
    format!(
        "{date} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now as [`cst_datetime`].
pub fn now_cst() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    cst_datetime(secs)
}

#[cfg(test)]
mod tests {
    use super::super::escpos::decode;
    use super::*;

    #[test]
    fn no_full_number_on_paper_and_fields_read_back() {
        let holder = Ssn::parse("11010519491231002X").unwrap();
        let member = Ssn::parse("110105194912310021").ok();
        let member = member.unwrap_or(holder);
        let r = Receipt {
            kind: ReceiptKind::Bind,
            holder: Party {
                ssn: holder,
                name: Some("张三丰".into()),
            },
            member: Party {
                ssn: member,
                name: Some("李四".into()),
            },
            relation: Some("配偶".into()),
            at: cst_datetime(0),
            channel: "自助机".into(),
            station: "kiosk-1".into(),
            operator: None,
            audit_seq: 42,
            audit_hash: "0123456789ab".into(),
        };
        for enc in [Encoding::Gbk, Encoding::Gb18030, Encoding::Utf8] {
            let b = r.render(enc);
            for full in [holder.expose(), member.expose()] {
                assert!(!b.windows(full.len()).any(|w| w == full.as_bytes()));
            }
            let p = decode(&b, enc);
            assert_eq!(p.titles, vec!["家庭共济绑定凭条"]);
            let text = p.lines.join("\n");
            assert!(text.contains("缴费人: 张**"), "{text}");
            assert!(text.contains("缴费人证号: 110105********002X"), "{text}");
            assert!(text.contains("关系: 配偶"));
            assert!(text.contains("时间: 1970-01-01 08:00:00"));
            assert!(text.contains("流水号: 42"));
            assert_eq!(p.qr.len(), 1);
            assert!(p.qr[0].contains("校验码:0123456789ab"));
            assert!(p.qr[0].contains("共济人:李*"));
            assert_eq!(p.cuts, 1);
        }
    }

    #[test]
    fn a_records_receipt_prints_months_and_total_and_no_full_number() {
        let ssn = Ssn::parse("11010519491231002X").unwrap();
        let r = RecordsReceipt {
            person: Party {
                ssn,
                name: Some("张三丰".into()),
            },
            months: 2,
            lines: vec![
                RecordLine {
                    month: "2026-11".into(),
                    employer: "杭州西湖科技有限公司".into(),
                    account_fen: 35200,
                },
                RecordLine {
                    month: "2026-10".into(),
                    employer: "杭州西湖科技有限公司".into(),
                    account_fen: 35205,
                },
            ],
            at: cst_datetime(0),
            channel: "自助机".into(),
            station: "kiosk-1".into(),
            audit_seq: 7,
            audit_hash: "0123456789ab".into(),
        };
        let b = r.render(Encoding::Gbk);
        assert!(!b.windows(18).any(|w| w == ssn.expose().as_bytes()));
        let p = decode(&b, Encoding::Gbk);
        assert_eq!(p.titles, vec!["医保缴费记录凭条"]);
        let text = p.lines.join("\n");
        assert!(text.contains("证号: 110105********002X"), "{text}");
        assert!(
            text.contains("2026-11 杭州西湖科技有限公司 352.00"),
            "{text}"
        );
        assert!(text.contains("合计: 704.05"), "{text}");
        assert_eq!(p.cuts, 1);
        assert_eq!(yuan(-5), "-0.05");
    }
}
