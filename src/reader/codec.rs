//! tokio-util codecs between a serial port's bytes and reader items.
//!
//! [`ReaderCodec`] decodes in one of four [`Mode`]s: protocol v1 frames
//! (using [`firmware_protocol::frame::scan`]), `ssse-text` record lines,
//! `magstripe` swipe lines or the replies of an identity-card SAM module
//! (`idcard`, [`firmware_protocol::idcard::scan`]; a read reply's photo is
//! dropped here, unseen, and only its text block goes on). It never returns an error for bad input: noise
//! is counted and dropped, over-long lines are reported as
//! [`ReaderItem::Oversized`] and skipped up to the next line end, so a
//! `FramedRead` over it keeps going whatever the reader sends. Memory is
//! bounded: at most one maximal frame or line is buffered.
//!
//! The encoder writes host → reader frames ([`HostFrame`]).

use bytes::{Buf, Bytes, BytesMut};
use firmware_protocol::frame::{self, Scan, MAX_FRAME};
use firmware_protocol::idcard;
use tokio_util::codec::{Decoder, Encoder};

/// Longest text line accepted in `ssse-text` and `magstripe` modes.
pub const MAX_LINE: usize = 1024;

/// What the reader on a port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Binary protocol v1 frames.
    Frame,
    /// Basic-info records, one per CR LF line.
    SsseText,
    /// ISO 7811 track lines, one swipe per CR LF line.
    Magstripe,
    /// An identity-card SAM module (GA/T 467), polled by the host.
    Idcard,
    /// The MOHRSS standard interface library (`iReadCardBas`), called in a
    /// helper process (`daemon::library`). Its answers travel, and are
    /// captured, as `ssse-text` lines: the record, or the return code.
    Library,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Frame => "frame",
            Mode::SsseText => "ssse-text",
            Mode::Magstripe => "magstripe",
            Mode::Idcard => "idcard",
            Mode::Library => "library",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "frame" => Ok(Mode::Frame),
            "ssse-text" => Ok(Mode::SsseText),
            "magstripe" => Ok(Mode::Magstripe),
            "idcard" => Ok(Mode::Idcard),
            "library" => Ok(Mode::Library),
            other => Err(format!(
                "unknown reader mode '{other}' (expected frame, ssse-text, magstripe, idcard or library)"
            )),
        }
    }
}

/// One unit decoded from a reader's byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderItem {
    /// A valid protocol v1 frame.
    Frame {
        /// Sequence number.
        seq: u8,
        /// Command byte.
        cmd: u8,
        /// Payload.
        payload: Bytes,
    },
    /// A basic-info record line (line ending removed).
    Record(Bytes),
    /// A magnetic-stripe swipe line (line ending removed).
    Swipe(Bytes),
    /// A text line longer than [`MAX_LINE`] was dropped.
    Oversized(usize),
    /// An identity-card module's reply other than a successful read.
    IdReply {
        /// SW3.
        sw3: u8,
        /// The data after SW3.
        data: Bytes,
    },
    /// A successful read reply (SW3 `90`, both lengths right): its 256-byte
    /// text block. The photo was dropped unseen.
    IdRead(Bytes),
    /// An identity-card module's reply that failed its length or checksum
    /// check, or a `90` read-shaped reply whose lengths are wrong.
    IdCorrupt(idcard::Corruption),
}

/// The decoder/encoder for one reader port.
#[derive(Debug)]
pub struct ReaderCodec {
    mode: Mode,
    /// Bytes dropped as noise since the codec was made.
    noise: u64,
    /// In text modes: dropping an over-long line until its end.
    discarding: Option<usize>,
}

impl ReaderCodec {
    /// A codec for `mode`.
    pub fn new(mode: Mode) -> Self {
        ReaderCodec {
            mode,
            noise: 0,
            discarding: None,
        }
    }

    /// Bytes dropped as line noise so far (frame mode).
    pub fn noise_bytes(&self) -> u64 {
        self.noise
    }

    fn decode_frame(&mut self, src: &mut BytesMut) -> Option<ReaderItem> {
        match frame::scan(src) {
            Scan::Frame {
                frame,
                skipped,
                consumed,
            } => {
                let (seq, cmd) = (frame.seq, frame.cmd);
                let start = consumed - frame.payload.len() - 3;
                self.noise += skipped as u64;
                let mut whole = src.split_to(consumed);
                whole.advance(start);
                whole.truncate(whole.len() - 3);
                Some(ReaderItem::Frame {
                    seq,
                    cmd,
                    payload: whole.freeze(),
                })
            }
            Scan::NeedMore { discard } => {
                self.noise += discard as u64;
                src.advance(discard);
                if src.capacity() < MAX_FRAME {
                    src.reserve(MAX_FRAME - src.len());
                }
                None
            }
        }
    }

    fn decode_idcard(&mut self, src: &mut BytesMut) -> Option<ReaderItem> {
        match idcard::scan(src) {
            idcard::Scan::Reply {
                reply,
                skipped,
                consumed,
            } => {
                self.noise += skipped as u64;
                let sw3 = reply.sw3;
                let data_start = consumed - 1 - reply.data.len();
                let data_len = reply.data.len();
                let item = if sw3 == 0x90 && data_len == idcard::READ_DATA_LEN {
                    match idcard::ReadReply::parse(reply.data) {
                        Ok(_) => {
                            let mut whole = src.split_to(consumed);
                            // The photo's bytes are wiped before the rest
                            // is handed on: nothing keeps them.
                            whole[data_start + 4 + idcard::TEXT_LEN..].fill(0);
                            // Lengths (4 bytes), then the text block; the
                            // photo after it is dropped with `whole`.
                            whole.advance(data_start + 4);
                            whole.truncate(idcard::TEXT_LEN);
                            return Some(ReaderItem::IdRead(whole.freeze()));
                        }
                        Err(why) => ReaderItem::IdCorrupt(why),
                    }
                } else {
                    let mut whole = src.split_to(consumed);
                    whole.advance(data_start);
                    whole.truncate(data_len);
                    return Some(ReaderItem::IdReply {
                        sw3,
                        data: whole.freeze(),
                    });
                };
                src.advance(consumed);
                Some(item)
            }
            idcard::Scan::Corrupt { why, consumed } => {
                self.noise += consumed as u64;
                src.advance(consumed);
                Some(ReaderItem::IdCorrupt(why))
            }
            idcard::Scan::NeedMore { discard } => {
                self.noise += discard as u64;
                src.advance(discard);
                if src.capacity() < idcard::MAX_REPLY {
                    src.reserve(idcard::MAX_REPLY - src.len());
                }
                None
            }
        }
    }

    fn decode_line(&mut self, src: &mut BytesMut) -> Option<ReaderItem> {
        loop {
            let nl = memchr_nl(src);
            if let Some(dropped) = self.discarding {
                match nl {
                    Some(i) => {
                        src.advance(i + 1);
                        self.discarding = None;
                        return Some(ReaderItem::Oversized(dropped + i + 1));
                    }
                    None => {
                        self.discarding = Some(dropped + src.len());
                        src.clear();
                        return None;
                    }
                }
            }
            match nl {
                Some(i) if i > MAX_LINE => {
                    src.advance(i + 1);
                    return Some(ReaderItem::Oversized(i + 1));
                }
                Some(i) => {
                    let mut line = src.split_to(i + 1);
                    line.truncate(i);
                    while line.last() == Some(&b'\r') {
                        line.truncate(line.len() - 1);
                    }
                    if line.iter().all(|b| b.is_ascii_whitespace()) {
                        continue;
                    }
                    let line = line.freeze();
                    return Some(match self.mode {
                        Mode::Magstripe => ReaderItem::Swipe(line),
                        _ => ReaderItem::Record(line),
                    });
                }
                None if src.len() > MAX_LINE => {
                    self.discarding = Some(src.len());
                    src.clear();
                    return None;
                }
                None => return None,
            }
        }
    }
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

impl Decoder for ReaderCodec {
    type Item = ReaderItem;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<ReaderItem>, std::io::Error> {
        Ok(match self.mode {
            Mode::Frame => self.decode_frame(src),
            Mode::Idcard => self.decode_idcard(src),
            Mode::SsseText | Mode::Magstripe | Mode::Library => self.decode_line(src),
        })
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<ReaderItem>, std::io::Error> {
        // A partial frame or an unterminated line at EOF is dropped, never guessed.
        let item = self.decode(src)?;
        if item.is_none() {
            self.noise += src.len() as u64;
            src.clear();
        }
        Ok(item)
    }
}

/// A host → reader frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFrame {
    /// Sequence number (for ACK: the acknowledged frame's).
    pub seq: u8,
    /// Command.
    pub cmd: frame::Cmd,
    /// Payload (at most 1024 bytes).
    pub payload: Vec<u8>,
}

impl HostFrame {
    /// `ACK` of the frame with `seq`.
    pub fn ack(seq: u8) -> Self {
        HostFrame {
            seq,
            cmd: frame::Cmd::Ack,
            payload: Vec::new(),
        }
    }
    /// `FEEDBACK` with the given code.
    pub fn feedback(seq: u8, fb: frame::Feedback) -> Self {
        HostFrame {
            seq,
            cmd: frame::Cmd::Feedback,
            payload: vec![fb as u8],
        }
    }
}

impl Encoder<HostFrame> for ReaderCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: HostFrame, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        let start = dst.len();
        dst.resize(start + item.payload.len() + frame::OVERHEAD, 0);
        match frame::encode(item.seq, item.cmd as u8, &item.payload, &mut dst[start..]) {
            Ok(_) => Ok(()),
            Err(e) => {
                dst.truncate(start);
                Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            }
        }
    }
}

impl Encoder<idcard::Command> for ReaderCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: idcard::Command, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.extend_from_slice(&item.encode());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(codec: &mut ReaderCodec, bytes: &[u8], chunk: usize) -> Vec<ReaderItem> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                out.push(item);
            }
        }
        out
    }

    #[test]
    fn frames_and_noise() {
        let mut wire = b"noise\x02\x00".to_vec();
        wire.extend(frame::encode_vec(5, 0x20, b"fw 1.0").unwrap());
        for chunk in [1, 3, 100] {
            let mut c = ReaderCodec::new(Mode::Frame);
            let items = all(&mut c, &wire, chunk);
            assert_eq!(
                items,
                vec![ReaderItem::Frame {
                    seq: 5,
                    cmd: 0x20,
                    payload: Bytes::from_static(b"fw 1.0")
                }]
            );
            assert_eq!(c.noise_bytes(), 7);
        }
    }

    #[test]
    fn lines_crlf_and_oversized() {
        let mut wire = b"\r\nabc|def\r\n".to_vec();
        wire.extend(std::iter::repeat_n(b'x', 5000));
        wire.extend(b"\r\n;123=4?\r\n");
        for chunk in [1, 64, 10_000] {
            let mut c = ReaderCodec::new(Mode::Magstripe);
            let items = all(&mut c, &wire, chunk);
            assert_eq!(items.len(), 3, "chunk {chunk}");
            assert_eq!(items[0], ReaderItem::Swipe(Bytes::from_static(b"abc|def")));
            assert_eq!(items[1], ReaderItem::Oversized(5002));
            assert_eq!(items[2], ReaderItem::Swipe(Bytes::from_static(b";123=4?")));
        }
    }

    #[test]
    fn idcard_replies_the_photo_dropped() {
        let mut data = vec![0x01, 0x00, 0x04, 0x00];
        data.extend(std::iter::repeat_n(0x20, 256));
        data.extend(std::iter::repeat_n(0x77, 1024));
        let mut wire = b"\xAA\xAA".to_vec();
        wire.extend(idcard::encode_reply_vec([0, 0, 0x9F], &[0, 0, 0, 0]).unwrap());
        wire.extend(idcard::encode_reply_vec([0, 0, 0x90], &data).unwrap());
        let mut bad = idcard::encode_reply_vec([0, 0, 0x80], &[]).unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 0xFF;
        wire.extend(bad);
        for chunk in [1, 7, 2000] {
            let mut c = ReaderCodec::new(Mode::Idcard);
            let items = all(&mut c, &wire, chunk);
            assert_eq!(items.len(), 3, "chunk {chunk}: {items:?}");
            assert!(
                matches!(&items[0], ReaderItem::IdReply { sw3: 0x9F, data } if data.len() == 4)
            );
            match &items[1] {
                ReaderItem::IdRead(text) => {
                    assert_eq!(text.len(), 256);
                    assert!(!text.contains(&0x77));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(
                items[2],
                ReaderItem::IdCorrupt(idcard::Corruption::Checksum)
            );
        }
    }

    #[test]
    fn encoder_writes_ack() {
        let mut c = ReaderCodec::new(Mode::Frame);
        let mut out = BytesMut::new();
        c.encode(HostFrame::ack(7), &mut out).unwrap();
        assert_eq!(&out[..], &[0x02, 0x00, 0x00, 0x07, 0x06, 0x7D, 0x91, 0x03]);
    }
}
