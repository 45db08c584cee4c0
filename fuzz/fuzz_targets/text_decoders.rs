//! Fuzzes the ssse-text record parser, the magstripe parser and the line
//! codecs that feed them: no panic on any input.
#![no_main]

use firmware_protocol::{magstripe, record, Date};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let today = Date::new(2026, 11, 25).unwrap();
    let _ = record::parse(data, today);
    let _ = magstripe::parse(data, today);
    for mode in [cardlink::reader::codec::Mode::SsseText, cardlink::reader::codec::Mode::Magstripe] {
        let mut codec = cardlink::reader::codec::ReaderCodec::new(mode);
        let mut bm = bytes::BytesMut::from(data);
        while let Ok(Some(item)) = tokio_util::codec::Decoder::decode(&mut codec, &mut bm) {
            let _ = cardlink::reader::card::decode(&item, cardlink::reader::card::TextEncoding::Gbk, today);
        }
    }
});
