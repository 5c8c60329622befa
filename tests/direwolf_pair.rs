//! End-to-end checks over two real Direwolf modems (skipped without direwolf).

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use skywave::lab::{skip_without_direwolf, DirewolfOpts, DirewolfPair};
use skywave::wire::ax25::{decode_ui, encode_ui, Callsign, BROADCAST};
use skywave::wire::kiss::{self, KissDecoder};
use support::kiss_tcp::KissTcp;

fn n0call1() -> Callsign {
    "N0CALL-1".parse().expect("valid callsign")
}

fn payload(seq: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seq).collect()
}

/// Collects UI frames at `rx` until `want` arrived or the air has been idle.
fn collect(pair: &DirewolfPair, rx: &mut KissTcp, want: usize, limit: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut idle_since: Option<Instant> = None;
    while got.len() < want && Instant::now() < deadline {
        match rx.recv(Duration::from_millis(500)) {
            Ok(Some(f)) => got.push(f),
            Ok(None) => {
                let s = pair.air_stats().a_to_b;
                if s.bursts > 0 && !s.busy {
                    // Transmission over; give B time to decode the tail.
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(2) {
                        break;
                    }
                } else {
                    idle_since = None;
                }
            }
            Err(e) => panic!("KISS read failed: {e}\n{}", pair.logs()),
        }
    }
    got
}

#[test]
fn ui_frame_crosses_the_air() {
    if skip_without_direwolf("ui_frame_crosses_the_air") {
        return;
    }
    let mut pair = DirewolfPair::start(DirewolfOpts::default()).expect("direwolf pair starts");
    let mut b = KissTcp::connect(pair.kiss_addr_b()).expect("connect B");
    let mut a = KissTcp::connect(pair.kiss_addr_a()).expect("connect A");
    let info = payload(1, 200);
    let frame = encode_ui(&n0call1(), &BROADCAST, &[], &info).expect("encode");
    let t = Instant::now();
    a.send(&frame).expect("send");
    let got = b
        .recv(Duration::from_secs(10))
        .expect("read B")
        .unwrap_or_else(|| panic!("no frame at B in 10 s\n{}", pair.logs()));
    println!(
        "200-byte UI frame A->B in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let ui = decode_ui(&got).expect("B got a UI frame");
    assert_eq!(ui.src, n0call1());
    assert_eq!(ui.dst, BROADCAST);
    assert_eq!(ui.info, info);

    // Same again, received through a real tty bridged by socat.
    if !skywave::lab::socat_available() {
        eprintln!("SKIPPED pty part: socat not installed");
        return;
    }
    let tty = pair.pty_b().expect("socat pty");
    let mut port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tty)
        .expect("open pty");
    // Give socat's TCP connection a moment before transmitting.
    std::thread::sleep(Duration::from_millis(300));
    let info2 = payload(2, 100);
    a.send(&encode_ui(&n0call1(), &BROADCAST, &[], &info2).expect("encode"))
        .expect("send");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut reader = port.try_clone().expect("clone pty");
    std::thread::spawn(move || {
        let mut dec = KissDecoder::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            dec.push(&buf[..n]);
            while let Some(Ok(f)) = dec.next_frame() {
                if tx.send(f).is_err() {
                    return;
                }
            }
        }
    });
    let f = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("no frame on pty in 10 s\n{}", pair.logs()));
    assert_eq!(decode_ui(&f.payload).expect("UI").info, info2);
    // The pty also transmits: B -> A.
    let mut out = Vec::new();
    kiss::encode_data(
        0,
        &encode_ui(&n0call1(), &BROADCAST, &[], b"pty").expect("encode"),
        &mut out,
    );
    port.write_all(&out).expect("write pty");
    let back = a.recv(Duration::from_secs(10)).expect("read A");
    assert_eq!(
        back.map(|f| decode_ui(&f).map(|u| u.info)),
        Some(Ok(b"pty".to_vec()))
    );
    println!("air: {:?}", pair.air_stats());
}

#[test]
fn throughput_ten_frames() {
    if skip_without_direwolf("throughput_ten_frames") {
        return;
    }
    let pair = DirewolfPair::start(DirewolfOpts::default()).expect("direwolf pair starts");
    let mut b = KissTcp::connect(pair.kiss_addr_b()).expect("connect B");
    let mut a = KissTcp::connect(pair.kiss_addr_a()).expect("connect A");
    let t = Instant::now();
    for seq in 0..10u8 {
        let frame = encode_ui(&n0call1(), &BROADCAST, &[], &payload(seq, 256)).expect("encode");
        a.send(&frame).expect("send");
    }
    let got = collect(&pair, &mut b, 10, Duration::from_secs(60));
    let secs = t.elapsed().as_secs_f64();
    let bytes: usize = got
        .iter()
        .filter_map(|f| decode_ui(f).ok())
        .map(|u| u.info.len())
        .sum();
    let air = pair.air_stats();
    println!(
        "10 x 256 B: {} frames, {bytes} payload bytes in {secs:.2} s = {:.1} B/s; \
         A->B {} burst(s), {:.2} s on air",
        got.len(),
        bytes as f64 / secs,
        air.a_to_b.bursts,
        air.a_to_b.air_seconds
    );
    assert_eq!(got.len(), 10, "{}", pair.logs());
    for (seq, f) in got.iter().enumerate() {
        assert_eq!(decode_ui(f).expect("UI").info, payload(seq as u8, 256));
    }
}

/// BER for about 20 % loss of 256-byte frames: 1-(1-1e-4)^(274*8) ~ 0.20.
const LOSSY_BER: f64 = 1e-4;

#[test]
fn bit_errors_cost_frames() {
    if skip_without_direwolf("bit_errors_cost_frames") {
        return;
    }
    let opts = DirewolfOpts {
        ber: Some(LOSSY_BER),
        modem_opts: "E".into(),
        fix_bits: Some(0),
        ..Default::default()
    };
    let pair = DirewolfPair::start(opts).expect("direwolf pair starts");
    let mut b = KissTcp::connect(pair.kiss_addr_b()).expect("connect B");
    let mut a = KissTcp::connect(pair.kiss_addr_a()).expect("connect A");
    const N: usize = 30;
    for seq in 0..N as u8 {
        let frame = encode_ui(&n0call1(), &BROADCAST, &[], &payload(seq, 256)).expect("encode");
        a.send(&frame).expect("send");
    }
    let got = collect(&pair, &mut b, N, Duration::from_secs(150));
    let good = got
        .iter()
        .filter(|f| decode_ui(f).is_ok_and(|u| u.info.len() == 256))
        .count();
    let loss = 1.0 - good as f64 / N as f64;
    let bits = (256 + 16 + 2) * 8;
    let expected = 1.0 - (1.0 - LOSSY_BER).powi(bits);
    println!(
        "BER {LOSSY_BER:e}, MODEM 1200 E, FIX_BITS 0: {good}/{N} 256-byte frames delivered, \
         loss {:.0} % (model {:.0} %); air {:?}",
        loss * 100.0,
        expected * 100.0,
        pair.air_stats().a_to_b
    );
    assert!(good < N, "expected some loss at BER {LOSSY_BER}");
    assert!(good > 0, "expected some frames through\n{}", pair.logs());
}
