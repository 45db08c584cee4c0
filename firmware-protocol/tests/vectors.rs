//! Byte-exact vectors from `vectors/frames.txt` (written by the independent
//! Python implementation `vectors/gen_vectors.py`, listed in PROTOCOL.md).

mod common;

use firmware_protocol::frame::{encode_vec, scan, Scan};

use common::unhex;

struct Vector {
    name: String,
    seq: u8,
    cmd: u8,
    payload: Vec<u8>,
    frame: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    include_str!("../vectors/frames.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Vector {
                name: f[0].to_string(),
                seq: u8::from_str_radix(f[1], 16).unwrap(),
                cmd: u8::from_str_radix(f[2], 16).unwrap(),
                payload: unhex(f[3]),
                frame: unhex(f[4]),
            }
        })
        .collect()
}

#[test]
fn encode_matches_vectors() {
    let vs = vectors();
    assert!(vs.len() >= 10);
    for v in &vs {
        assert_eq!(
            encode_vec(v.seq, v.cmd, &v.payload).unwrap(),
            v.frame,
            "vector {}",
            v.name
        );
    }
}

#[test]
fn decode_matches_vectors() {
    for v in vectors() {
        match scan(&v.frame) {
            Scan::Frame {
                frame,
                skipped,
                consumed,
            } => {
                assert_eq!(skipped, 0, "vector {}", v.name);
                assert_eq!(consumed, v.frame.len(), "vector {}", v.name);
                assert_eq!(frame.seq, v.seq);
                assert_eq!(frame.cmd, v.cmd);
                assert_eq!(frame.payload, &v.payload[..], "vector {}", v.name);
            }
            other => panic!("vector {} did not decode: {other:?}", v.name),
        }
    }
}

#[test]
fn all_vectors_back_to_back_with_noise() {
    let vs = vectors();
    let mut stream = Vec::new();
    for v in &vs {
        stream.extend_from_slice(b"\x02\x00\x10garbage\x03");
        stream.extend_from_slice(&v.frame);
    }
    let mut buf = &stream[..];
    let mut got = Vec::new();
    while let Scan::Frame {
        frame, consumed, ..
    } = scan(buf)
    {
        got.push((frame.seq, frame.payload.to_vec()));
        buf = &buf[consumed..];
    }
    let want: Vec<_> = vs.iter().map(|v| (v.seq, v.payload.clone())).collect();
    assert_eq!(got, want);
}

/// Records of the reader interface (`vectors/records.txt`): the public
/// form, GBK names with two-byte characters (one with a `|` trail byte),
/// the empty 3.0 record of an unauthenticated card, and a card
/// identification code that does not begin with the region.
#[test]
fn record_vectors() {
    use firmware_protocol::record::{parse, RecordError};
    use firmware_protocol::Date;
    let today = Date::new(2026, 11, 26).unwrap();
    let lines: Vec<&str> = include_str!("../vectors/records.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(lines.len() >= 6);
    for l in lines {
        let f: Vec<&str> = l.split('\t').collect();
        let (name, expect, rec) = (f[0], f[1], unhex(f[2]));
        let got = parse(&rec, today);
        let words: Vec<&str> = expect.splitn(3, ' ').collect();
        match words[0] {
            "ok" => {
                let r = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(r.ssn.expose(), words[1], "{name}");
                let (decoded, _, bad) = encoding_rs::GBK.decode(r.name);
                let utf8 = std::str::from_utf8(r.name).ok();
                assert!(
                    utf8 == Some(words[2]) || (!bad && decoded == words[2]),
                    "{name}: name {:?}",
                    r.name
                );
            }
            "not_authenticated" => {
                assert_eq!(got, Err(RecordError::NotAuthenticated), "{name}")
            }
            "bad" => match got {
                Err(RecordError::Field { field, .. }) => assert_eq!(field, words[1], "{name}"),
                other => panic!("{name}: {other:?}"),
            },
            other => panic!("unknown expectation {other}"),
        }
    }
}

/// Every return code the interface defines, with its meaning
/// (`vectors/retcodes.txt`, listed independently of the Rust table).
#[test]
fn return_code_vectors() {
    let lines: Vec<&str> = include_str!("../vectors/retcodes.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(lines.len() >= 20);
    for l in lines {
        let f: Vec<&str> = l.split('\t').collect();
        let code: i32 = f[0].parse().unwrap();
        let m = firmware_protocol::retcode::meaning(code);
        assert!(m.known, "{code}");
        assert_eq!((m.zh, m.en), (f[1], f[2]), "{code}");
    }
}
