//! `ax25::decode_ui` on arbitrary bytes. A decoded UI frame is re-encoded with
//! `encode_ui` (which always writes a command frame, P/F clear, PID 0xF0, H bits clear)
//! and decoded again: the addresses and info must survive, and the re-encoded frame must
//! be byte-identical to the input when the input had exactly those fixed fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skywave::wire::ax25::{decode_ui, encode_ui, Callsign, MAX_DIGIS, MAX_FRAME_LEN, PID_NO_L3};

fuzz_target!(|data: &[u8]| {
    let Ok(f) = decode_ui(data) else {
        return;
    };
    assert!(data.len() <= MAX_FRAME_LEN);
    assert!(f.digis.len() <= MAX_DIGIS);
    let digis: Vec<Callsign> = f.digis.iter().map(|v| v.call).collect();
    let bytes = encode_ui(&f.src, &f.dst, &digis, &f.info).expect("decoded frame re-encodes");
    assert_eq!(bytes.len(), data.len(), "re-encoding changed the length");
    let g = decode_ui(&bytes).expect("re-encoded frame decodes");
    assert_eq!(g.src, f.src);
    assert_eq!(g.dst, f.dst);
    assert_eq!(g.info, f.info);
    assert_eq!(g.pid, PID_NO_L3);
    assert_eq!(g.command, Some(true));
    assert!(!g.poll);
    assert_eq!(
        g.digis.iter().map(|v| v.call).collect::<Vec<_>>(),
        digis,
        "digipeater path changed"
    );
    assert!(g.digis.iter().all(|v| !v.repeated));
    // Same again from the re-encoded frame: encode_ui . decode_ui is idempotent.
    let again = encode_ui(&g.src, &g.dst, &digis, &g.info).expect("re-encodes");
    assert_eq!(again, bytes);
    // An input that already had the fixed fields is reproduced field for field
    // (only the reserved SSID bits may differ, and they are not part of UiFrame).
    let fixed_fields = f.pid == PID_NO_L3
        && f.command == Some(true)
        && !f.poll
        && f.digis.iter().all(|v| !v.repeated);
    if fixed_fields {
        assert_eq!(g, f);
    }
});
