//! Frame decoder throughput over a 10 MB stream of mixed frames and noise.
//!
//! The stream is deterministic: card frames (IC and magstripe), status and
//! card-removed frames, and bursts of random noise rich in STX bytes, about
//! 30 % of the bytes noise. It is scanned the way the host codec does it:
//! 4 KiB reads appended to a buffer, frames consumed, `NeedMore::discard`
//! bytes dropped.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use firmware_protocol::frame::{encode_vec, scan, Scan};
use std::hint::black_box;

fn stream(size: usize) -> (Vec<u8>, usize) {
    let rec = "330100|11010519491231002X|A12345678|330100D15600000500A1B2C3D4E5F6A7|张三|3B6D000000815448|3.00|20200115|20300115|T0001|D01|";
    let mag = "%B6222021234567890128^ZHANG/SAN^301212011010519491231002X000?;6222021234567890128=30121201000?";
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut out = Vec::with_capacity(size + 2048);
    let mut frames = 0;
    let mut seq = 0u8;
    while out.len() < size {
        let r = rnd();
        let f = match r % 4 {
            0 => encode_vec(seq, 0x10, rec.as_bytes()),
            1 => encode_vec(seq, 0x11, mag.as_bytes()),
            2 => encode_vec(seq, 0x12, &[]),
            _ => encode_vec(seq, 0x20, b"CL-R100 fw 1.4.2"),
        };
        out.extend_from_slice(&f.unwrap_or_default());
        frames += 1;
        seq = seq.wrapping_add(1);
        let noise = (rnd() % 96) as usize;
        for _ in 0..noise {
            let b = rnd() as u8;
            out.push(if b < 16 { 0x02 } else { b });
        }
    }
    (out, frames)
}

fn decode(stream: &[u8]) -> usize {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut n = 0;
    for piece in stream.chunks(4096) {
        buf.extend_from_slice(piece);
        let mut start = 0;
        loop {
            match scan(&buf[start..]) {
                Scan::Frame {
                    frame, consumed, ..
                } => {
                    black_box(frame);
                    n += 1;
                    start += consumed;
                }
                Scan::NeedMore { discard } => {
                    start += discard;
                    break;
                }
            }
        }
        buf.drain(..start);
    }
    n
}

fn bench(c: &mut Criterion) {
    let (data, frames) = stream(10 * 1024 * 1024);
    let found = decode(&data);
    assert!(found >= frames, "decoder lost frames: {found} of {frames}");
    let mut g = c.benchmark_group("frame_decoder");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(20);
    g.bench_function("scan_10MB_mixed", |b| b.iter(|| decode(black_box(&data))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
