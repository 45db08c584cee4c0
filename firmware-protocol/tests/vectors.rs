//! Byte-exact vectors from `vectors/frames.txt` (written by the independent
//! Python implementation `vectors/gen_vectors.py`, listed in PROTOCOL.md).

use firmware_protocol::frame::{encode_vec, scan, Scan};

fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

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
