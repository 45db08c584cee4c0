//! Reader protocol v1 frames.
//!
//! ```text
//! STX 0x02 | LEN u16 BE | SEQ u8 | CMD u8 | PAYLOAD (LEN bytes, 0..=1024) | CRC u16 BE | ETX 0x03
//! ```
//!
//! CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no
//! final xor) over LEN, SEQ, CMD and PAYLOAD. There is no byte stuffing: the
//! decoder ([`scan`]) resynchronises by looking for STX and accepting a frame
//! only when LEN is in range, the CRC matches and ETX is in place.

use core::fmt;

use crc::{Crc, CRC_16_IBM_3740};

/// Start of frame.
pub const STX: u8 = 0x02;
/// End of frame.
pub const ETX: u8 = 0x03;
/// Largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 1024;
/// Bytes a frame adds around its payload: STX, LEN(2), SEQ, CMD, CRC(2), ETX.
pub const OVERHEAD: usize = 8;
/// Largest possible frame on the wire.
pub const MAX_FRAME: usize = MAX_PAYLOAD + OVERHEAD;

/// CRC-16/CCITT-FALSE, catalogued as CRC-16/IBM-3740 (check value 0x29B1).
pub const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// Command codes of protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cmd {
    /// Host → reader: acknowledge the frame with this SEQ (empty payload).
    Ack = 0x06,
    /// Host → reader: resend the last unacknowledged frame.
    Nak = 0x15,
    /// Reader → host: IC card basic-info record (see [`crate::record`]).
    CardIc = 0x10,
    /// Reader → host: ASCII magnetic-stripe tracks (see [`crate::magstripe`]).
    CardMag = 0x11,
    /// Reader → host: the card was removed.
    CardRemoved = 0x12,
    /// Reader → host: read failure, `u8` code then UTF-8 text.
    ReadError = 0x13,
    /// Reader → host: UTF-8 firmware information.
    Status = 0x20,
    /// Host → reader: `u8` [`Feedback`] for the reader's beeper/LED.
    Feedback = 0x30,
    /// Host → reader: ask for a `STATUS` frame.
    StatusRequest = 0x31,
}

impl Cmd {
    /// Maps a wire byte to a known command.
    pub const fn from_u8(b: u8) -> Option<Cmd> {
        Some(match b {
            0x06 => Cmd::Ack,
            0x15 => Cmd::Nak,
            0x10 => Cmd::CardIc,
            0x11 => Cmd::CardMag,
            0x12 => Cmd::CardRemoved,
            0x13 => Cmd::ReadError,
            0x20 => Cmd::Status,
            0x30 => Cmd::Feedback,
            0x31 => Cmd::StatusRequest,
            _ => return None,
        })
    }
}

/// Payload of a `FEEDBACK` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Feedback {
    /// The card was accepted (short beep, green).
    Accepted = 0,
    /// The card was rejected (long beep, red).
    Rejected = 1,
    /// Operator attention needed (double beep, amber).
    Attention = 2,
}

/// A decoded frame borrowing its payload from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Sequence number chosen by the sender.
    pub seq: u8,
    /// Raw command byte (see [`Cmd::from_u8`]); unknown commands are still
    /// delivered so the host can ACK them and report them.
    pub cmd: u8,
    /// The payload, 0..=1024 bytes.
    pub payload: &'a [u8],
}

/// Error from [`encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// Payload longer than [`MAX_PAYLOAD`].
    PayloadTooLong(usize),
    /// Output buffer smaller than the frame.
    BufferTooSmall {
        /// Bytes the frame needs.
        needed: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::PayloadTooLong(n) => {
                write!(f, "payload of {n} bytes exceeds {MAX_PAYLOAD}")
            }
            EncodeError::BufferTooSmall { needed } => {
                write!(f, "output buffer too small, {needed} bytes needed")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

/// Writes one frame into `out`, returning the number of bytes written.
pub fn encode(seq: u8, cmd: u8, payload: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    let len = payload.len();
    if len > MAX_PAYLOAD {
        return Err(EncodeError::PayloadTooLong(len));
    }
    let total = len + OVERHEAD;
    if out.len() < total {
        return Err(EncodeError::BufferTooSmall { needed: total });
    }
    out[0] = STX;
    out[1..3].copy_from_slice(&(len as u16).to_be_bytes());
    out[3] = seq;
    out[4] = cmd;
    out[5..5 + len].copy_from_slice(payload);
    let crc = CRC16.checksum(&out[1..5 + len]);
    out[5 + len..7 + len].copy_from_slice(&crc.to_be_bytes());
    out[7 + len] = ETX;
    Ok(total)
}

/// Encodes one frame into a new vector.
#[cfg(feature = "alloc")]
pub fn encode_vec(seq: u8, cmd: u8, payload: &[u8]) -> Result<alloc::vec::Vec<u8>, EncodeError> {
    let mut v = alloc::vec![0u8; payload.len() + OVERHEAD];
    let n = encode(seq, cmd, payload, &mut v)?;
    v.truncate(n);
    Ok(v)
}

/// Result of [`scan`] over a buffer of received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan<'a> {
    /// A valid frame was found. `skipped` bytes before it are noise and
    /// `consumed` (counted from the buffer start, noise included) may be
    /// removed from the buffer.
    Frame {
        /// The frame.
        frame: Frame<'a>,
        /// Noise bytes before the frame.
        skipped: usize,
        /// Bytes to drop from the buffer, noise plus the frame.
        consumed: usize,
    },
    /// No complete valid frame yet. The first `discard` bytes can never
    /// start one and may be dropped; keep the rest and call again with more.
    NeedMore {
        /// Leading bytes that are noise.
        discard: usize,
    },
}

/// Looks for the first valid frame in `buf`.
///
/// Candidates start at an STX byte. A candidate whose header is in range but
/// whose bytes have not all arrived yet is *pending*. The scanner keeps
/// looking past a pending candidate: if a complete valid frame starts later
/// in the buffer, that frame is returned and the pending candidate is treated
/// as noise (a stray 0x02 with a plausible length must not hold back the next
/// good frame). Otherwise the buffer from the first pending candidate on is
/// kept for the next call. Never panics, never allocates, and looks at each
/// byte at most once per candidate that covers it.
pub fn scan(buf: &[u8]) -> Scan<'_> {
    let mut pos = 0;
    let mut pending: Option<usize> = None;
    while let Some(off) = memchr::memchr(STX, &buf[pos..]) {
        let i = pos + off;
        pos = i + 1;
        if buf.len() < i + 3 {
            // The length bytes have not arrived yet.
            pending.get_or_insert(i);
            break;
        }
        let len = u16::from_be_bytes([buf[i + 1], buf[i + 2]]) as usize;
        if len > MAX_PAYLOAD {
            continue;
        }
        let end = i + len + OVERHEAD;
        if end > buf.len() {
            pending.get_or_insert(i);
            continue;
        }
        if buf[end - 1] != ETX {
            continue;
        }
        let body = &buf[i + 1..i + 5 + len];
        let crc = u16::from_be_bytes([buf[i + 5 + len], buf[i + 6 + len]]);
        if CRC16.checksum(body) != crc {
            continue;
        }
        return Scan::Frame {
            frame: Frame {
                seq: buf[i + 3],
                cmd: buf[i + 4],
                payload: &buf[i + 5..i + 5 + len],
            },
            skipped: i,
            consumed: end,
        };
    }
    Scan::NeedMore {
        discard: pending.unwrap_or(buf.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        assert_eq!(CRC16.checksum(b"123456789"), 0x29B1);
    }

    #[test]
    fn vector_ack_seq_7() {
        // PROTOCOL.md vector 1.
        let mut out = [0u8; 16];
        let n = encode(0x07, Cmd::Ack as u8, &[], &mut out).unwrap();
        assert_eq!(&out[..n], &[0x02, 0x00, 0x00, 0x07, 0x06, 0x7D, 0x91, 0x03]);
    }

    #[test]
    fn pending_candidate_does_not_hold_back_a_later_frame() {
        let mut out = [0u8; 64];
        let n = encode(1, Cmd::Status as u8, b"fw", &mut out).unwrap();
        let mut buf = [0u8; 80];
        // A stray STX with LEN = 0x0100 (in range, would need 264 bytes).
        buf[..3].copy_from_slice(&[0x02, 0x01, 0x00]);
        buf[3..3 + n].copy_from_slice(&out[..n]);
        match scan(&buf[..3 + n]) {
            Scan::Frame {
                frame,
                skipped,
                consumed,
            } => {
                assert_eq!(frame.payload, b"fw");
                assert_eq!(skipped, 3);
                assert_eq!(consumed, 3 + n);
            }
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn incomplete_frame_is_kept() {
        let mut out = [0u8; 64];
        let n = encode(1, Cmd::Status as u8, b"fw", &mut out).unwrap();
        let mut buf = [0u8; 64];
        buf[..4].copy_from_slice(b"junk");
        buf[4..4 + n - 1].copy_from_slice(&out[..n - 1]);
        assert_eq!(scan(&buf[..4 + n - 1]), Scan::NeedMore { discard: 4 });
        assert_eq!(scan(b"no stx here"), Scan::NeedMore { discard: 11 });
        assert_eq!(scan(&[0x41, 0x02]), Scan::NeedMore { discard: 1 });
    }
}
