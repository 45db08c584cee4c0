//! Byte-exact vectors from `vectors/idcard.txt`, written by the independent
//! Python implementation `vectors/gen_idcard_vectors.py` (PROTOCOL.md §7).

use firmware_protocol::idcard::{
    encode_reply_vec, scan, Command, IdError, IdText, ReadReply, Scan, Sw3, TEXT_LEN,
};
mod common;

use firmware_protocol::Date;

use common::unhex;

fn lines(kind: &str) -> Vec<Vec<&'static str>> {
    include_str!("../vectors/idcard.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f[0] == kind)
        .collect()
}

fn today() -> Date {
    Date::new(2026, 12, 1).unwrap()
}

#[test]
fn commands_encode_like_the_reference() {
    let v = lines("command");
    assert_eq!(v.len(), 5);
    for f in v {
        let cmd = Command::from_code(
            u8::from_str_radix(f[2], 16).unwrap(),
            u8::from_str_radix(f[3], 16).unwrap(),
        )
        .unwrap();
        assert_eq!(cmd.encode().to_vec(), unhex(f[4]), "{}", f[1]);
    }
}

#[test]
fn replies_encode_and_decode_like_the_reference() {
    let v = lines("reply");
    assert!(v.len() >= 9);
    for f in v {
        let sw3 = u8::from_str_radix(f[2], 16).unwrap();
        let data = unhex(f[3]);
        let wire = unhex(f[4]);
        assert_eq!(
            encode_reply_vec([0, 0, sw3], &data).unwrap(),
            wire,
            "{}",
            f[1]
        );
        match scan(&wire) {
            Scan::Reply {
                reply,
                skipped,
                consumed,
            } => {
                assert_eq!(
                    (reply.sw3, reply.data, skipped, consumed),
                    (sw3, &data[..], 0, wire.len())
                );
                assert!(Sw3::from_code(sw3).is_some(), "{}", f[1]);
            }
            other => panic!("{}: {other:?}", f[1]),
        }
        if f[1] == "read_resident" {
            let r = ReadReply::parse(&data).unwrap();
            assert_eq!(r.photo_len(), 1024);
            let t = IdText::parse(r.text, today()).unwrap();
            assert_eq!(t.ssn.expose(), "11010519491231002X");
        }
    }
}

#[test]
fn text_blocks_give_what_the_reference_expects() {
    let v = lines("text");
    assert!(v.len() >= 9);
    for f in v {
        let block: [u8; TEXT_LEN] = unhex(f[3]).try_into().unwrap();
        let expect: Vec<&str> = f[2].split(' ').collect();
        let got = IdText::parse(&block, today());
        match expect[0] {
            "ok" => {
                let t = got.unwrap_or_else(|e| panic!("{}: {e}", f[1]));
                assert_eq!(t.document.as_str(), expect[1], "{}", f[1]);
                assert_eq!(t.ssn.expose(), expect[2], "{}", f[1]);
                let name: Option<String> = t.name.map(|n| n.chars().map(|c| c.unwrap()).collect());
                assert_eq!(name.as_deref().unwrap_or("-"), expect[3], "{}", f[1]);
            }
            "err" => {
                let e = got.expect_err(f[1]);
                let kind = match e {
                    IdError::UnknownType(_) => "unknown_type",
                    IdError::Text(_) => "text",
                    IdError::Number(_) => "number",
                    IdError::NumberKind(_) => "number_kind",
                    IdError::ForeignPermanent2017 => "foreign_permanent_2017",
                };
                assert_eq!(kind, expect[1], "{}", f[1]);
            }
            other => panic!("{other}"),
        }
    }
}

#[test]
fn sw3_meanings_are_the_reference_table() {
    let v = lines("sw3");
    assert_eq!(v.len(), Sw3::ALL.len());
    for f in v {
        let code = u8::from_str_radix(f[1], 16).unwrap();
        let sw = Sw3::from_code(code).unwrap_or_else(|| panic!("SW3 {code:02x} unknown"));
        assert_eq!((sw.zh(), sw.en()), (f[2], f[3]), "SW3 {code:02x}");
    }
}
