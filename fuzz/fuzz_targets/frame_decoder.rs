//! Fuzzes the frame scanner and the host codec: no panic, bounded buffer.
#![no_main]

use firmware_protocol::frame::{scan, Scan, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whole-buffer scan.
    let mut buf = data;
    while let Scan::Frame { consumed, .. } = scan(buf) {
        assert!(consumed > 0 && consumed <= buf.len());
        buf = &buf[consumed..];
    }
    // Byte-at-a-time through the tokio-util codec used by the daemon.
    let mut codec = cardlink::reader::codec::ReaderCodec::new(cardlink::reader::codec::Mode::Frame);
    let mut bm = bytes::BytesMut::new();
    for &b in data {
        bm.extend_from_slice(&[b]);
        while let Ok(Some(_)) = tokio_util::codec::Decoder::decode(&mut codec, &mut bm) {}
        assert!(bm.len() <= MAX_FRAME);
    }
});
