//! The VARA command-port reader: `link::lines::Lines` fed in chunks, every line through
//! `parse_modem_line`, plus the whole input as one line.
//!
//! Layout: byte 0 = chunk size (0 = whole input at once); the rest is what the modem
//! sent. Asserts no panic, the splitter never holds more than `MAX_LINE` bytes, every
//! line it yields is at most `MAX_LINE` bytes and contains no CR/LF, and an accepted
//! `BUFFER`/`BITRATE` line names the number the text holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skywave::link::lines::Lines;
use skywave::link::vara::{parse_modem_line, ModemLine, MAX_LINE};

fuzz_target!(|data: &[u8]| {
    let Some((&c, stream)) = data.split_first() else {
        return;
    };
    let chunk = if c == 0 { stream.len().max(1) } else { usize::from(c) };
    let mut s = Lines::new(MAX_LINE);
    for part in stream.chunks(chunk) {
        for line in s.push(part) {
            let Some(line) = line.ok().and_then(|l| String::from_utf8(l).ok()) else {
                continue;
            };
            assert!(line.len() <= MAX_LINE, "line of {} bytes", line.len());
            assert!(!line.contains(['\r', '\n']));
            match parse_modem_line(&line) {
                Ok(ModemLine::Buffer(n)) => {
                    assert!(line.contains(&n.to_string()), "{line:?} -> {n}");
                }
                Ok(ModemLine::Bitrate { bps, .. }) => {
                    assert!(line.contains(&bps.to_string()), "{line:?} -> {bps}");
                }
                _ => {}
            }
        }
        assert!(s.buffered() <= MAX_LINE, "splitter holds {}", s.buffered());
    }
    let _ = parse_modem_line(&String::from_utf8_lossy(stream));
});
