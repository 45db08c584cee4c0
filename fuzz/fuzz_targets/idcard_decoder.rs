//! Fuzzes the identity-card SAM reply scanner, the read-reply split, the
//! text-block parser and the daemon's idcard codec: no panic, bounded buffer.
#![no_main]

use firmware_protocol::idcard::{scan, IdText, ReadReply, Scan, MAX_REPLY};
use firmware_protocol::Date;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let today = Date::new(2026, 12, 1).unwrap();
    let mut buf = data;
    loop {
        match scan(buf) {
            Scan::Reply { reply, consumed, .. } => {
                if let Ok(r) = ReadReply::parse(reply.data) {
                    let _ = IdText::parse(r.text, today);
                }
                buf = &buf[consumed..];
            }
            Scan::Corrupt { consumed, .. } => {
                assert!(consumed > 0 && consumed <= buf.len());
                buf = &buf[consumed..];
            }
            Scan::NeedMore { .. } => break,
        }
    }
    let block: [u8; 256] = core::array::from_fn(|i| data.get(i).copied().unwrap_or(0));
    let _ = IdText::parse(&block, today);
    // Byte-at-a-time through the tokio-util codec used by the daemon.
    let mut codec = cardlink::reader::codec::ReaderCodec::new(cardlink::reader::codec::Mode::Idcard);
    let mut bm = bytes::BytesMut::new();
    for &b in data {
        bm.extend_from_slice(&[b]);
        while let Ok(Some(_)) = tokio_util::codec::Decoder::decode(&mut codec, &mut bm) {}
        assert!(bm.len() <= MAX_REPLY);
    }
});
