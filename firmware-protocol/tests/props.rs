//! Property tests of the frame scanner and the text parsers.

use firmware_protocol::frame::{encode_vec, scan, Scan, MAX_PAYLOAD, STX};
use firmware_protocol::{magstripe, record, Date};
use proptest::prelude::*;

/// Drives `scan` over a whole buffer like the host codec does and returns
/// the (seq, cmd, payload) of every frame found.
fn decode_all(mut buf: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Scan::Frame {
        frame, consumed, ..
    } = scan(buf)
    {
        assert!(consumed > 0 && consumed <= buf.len());
        out.push((frame.seq, frame.cmd, frame.payload.to_vec()));
        buf = &buf[consumed..];
    }
    out
}

/// Feeds `stream` in chunks of `chunk` bytes into a growing buffer, applying
/// `NeedMore::discard` like the codec, and returns the frames found.
fn decode_chunked(stream: &[u8], chunk: usize) -> Vec<(u8, u8, Vec<u8>)> {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match scan(&buf) {
                Scan::Frame {
                    frame, consumed, ..
                } => {
                    out.push((frame.seq, frame.cmd, frame.payload.to_vec()));
                    buf.drain(..consumed);
                }
                Scan::NeedMore { discard } => {
                    buf.drain(..discard);
                    break;
                }
            }
        }
        assert!(
            buf.len() <= MAX_PAYLOAD + 8 + chunk,
            "buffer grew unbounded"
        );
    }
    out
}

fn arb_frame() -> impl Strategy<Value = (u8, u8, Vec<u8>)> {
    (
        any::<u8>(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip((seq, cmd, payload) in arb_frame()) {
        let wire = encode_vec(seq, cmd, &payload).unwrap();
        prop_assert_eq!(decode_all(&wire), vec![(seq, cmd, payload)]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_all(&bytes);
        let _ = decode_chunked(&bytes, 7);
        let today = Date::new(2026, 11, 25).unwrap();
        let _ = record::parse(&bytes, today);
        let _ = magstripe::parse(&bytes, today);
    }

    #[test]
    fn stx_heavy_bytes_never_panic(bytes in prop::collection::vec(prop::sample::select(vec![0x00u8, 0x02, 0x03, 0x04, 0xFF]), 0..2048)) {
        let _ = decode_all(&bytes);
        let _ = decode_chunked(&bytes, 13);
    }

    #[test]
    fn frame_found_after_garbage(
        garbage in prop::collection::vec(any::<u8>(), 0..2048),
        (seq, cmd, payload) in arb_frame(),
        chunk in 1usize..512,
    ) {
        let mut stream = garbage.clone();
        stream.extend_from_slice(&encode_vec(seq, cmd, &payload).unwrap());
        let found = decode_chunked(&stream, chunk);
        prop_assert!(found.contains(&(seq, cmd, payload)), "frame lost after {} garbage bytes", garbage.len());
    }

    #[test]
    fn frames_between_stx_garbage_all_found(
        frames in prop::collection::vec(arb_frame(), 1..8),
        noise in prop::collection::vec(prop::collection::vec(prop::sample::select(vec![STX, 0x00, 0x01, 0x03, 0x41]), 0..40), 8),
        chunk in 1usize..300,
    ) {
        let mut stream = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            stream.extend_from_slice(&noise[i]);
            stream.extend_from_slice(&encode_vec(f.0, f.1, &f.2).unwrap());
        }
        let found = decode_chunked(&stream, chunk);
        for f in &frames {
            prop_assert!(found.contains(f));
        }
    }

    #[test]
    fn any_single_bit_flip_is_rejected(
        (seq, cmd, payload) in (any::<u8>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..64)),
        bit in any::<prop::sample::Index>(),
    ) {
        let mut wire = encode_vec(seq, cmd, &payload).unwrap();
        let bit = bit.index(wire.len() * 8);
        wire[bit / 8] ^= 1 << (bit % 8);
        // No frame at all may come out of a corrupted frame: neither the
        // original nor anything else.
        prop_assert_eq!(decode_all(&wire), vec![]);
    }
}

#[test]
fn every_single_bit_flip_of_a_card_frame_is_rejected() {
    let rec = "330100|11010519491231002X|A12345678|330100D15600000500A1B2C3D4E5F6A7|张三|3B6D000000815448|3.00|20200115|20300115|T0001|D01|";
    let wire = encode_vec(0x2A, 0x10, rec.as_bytes()).unwrap();
    for bit in 0..wire.len() * 8 {
        let mut w = wire.clone();
        w[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(decode_all(&w), vec![], "bit {bit} flip accepted");
    }
}

mod idcard {
    use firmware_protocol::idcard::{encode_reply_vec, scan, IdText, ReadReply, Scan, MAX_REPLY};
    use firmware_protocol::Date;
    use proptest::prelude::*;

    /// Every reply found while draining `stream` through a growing buffer
    /// in chunks, and how many corrupt candidates were seen.
    fn drain(stream: &[u8], chunk: usize) -> (Vec<(u8, Vec<u8>)>, usize) {
        let mut buf: Vec<u8> = Vec::new();
        let (mut out, mut bad) = (Vec::new(), 0);
        for piece in stream.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match scan(&buf) {
                    Scan::Reply {
                        reply, consumed, ..
                    } => {
                        out.push((reply.sw3, reply.data.to_vec()));
                        buf.drain(..consumed);
                    }
                    Scan::Corrupt { consumed, .. } => {
                        assert!(consumed > 0);
                        bad += 1;
                        buf.drain(..consumed);
                    }
                    Scan::NeedMore { discard } => {
                        buf.drain(..discard);
                        break;
                    }
                }
            }
            assert!(buf.len() <= MAX_REPLY + chunk.max(1));
        }
        (out, bad)
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let _ = drain(&bytes, 7);
            if bytes.len() >= 4 + 256 + 1024 {
                if let Ok(r) = ReadReply::parse(&bytes[..4 + 256 + 1024]) {
                    let _ = IdText::parse(r.text, Date::new(2026, 12, 1).unwrap());
                }
            }
            let block: [u8; 256] = core::array::from_fn(|i| bytes.get(i).copied().unwrap_or(0x20));
            let _ = IdText::parse(&block, Date::new(2026, 12, 1).unwrap());
        }

        #[test]
        fn replies_survive_noise_and_any_split(
            sw3 in any::<u8>(),
            data in proptest::collection::vec(any::<u8>(), 0..300),
            noise in proptest::collection::vec(any::<u8>(), 0..40),
            chunk in 1usize..64,
        ) {
            let wire = encode_reply_vec([0, 0, sw3], &data).unwrap();
            let mut stream = noise.clone();
            stream.extend_from_slice(&wire);
            let (got, _) = drain(&stream, chunk);
            prop_assert_eq!(got.last(), Some(&(sw3, data)));
        }

        #[test]
        fn a_flipped_byte_is_never_a_reply(
            data in proptest::collection::vec(any::<u8>(), 1..64),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut wire = encode_reply_vec([0, 0, 0x90], &data).unwrap();
            // Flip one bit of status, data or checksum (a flipped length
            // is a different frame, caught by the length check or a
            // timeout, see PROTOCOL.md §7.2).
            let i = 7 + at.index(wire.len() - 7);
            wire[i] ^= 1 << bit;
            let (got, _) = drain(&wire, wire.len());
            // XOR catches every single-bit error in the bytes it covers.
            prop_assert!(got.is_empty());
        }
    }
}
