//! AX.25 v2.2 UI frames as carried in KISS (no flags, no FCS).
//!
//! Encoding goes through the `ax25` crate (checked against hand-built bytes in
//! the tests). Decoding is our own: the crate's parser is lenient in ways we do
//! not want for untrusted input (it skips leading NULs, ignores a trailing
//! partial address, accepts any byte as a callsign character and collapses
//! some PIDs into one enum value, so the PID byte is lost).

use std::fmt;
use std::str::FromStr;

use ax25::frame::{
    Address, Ax25Frame, CommandResponse, FrameContent, ProtocolIdentifier, RouteEntry,
    UnnumberedInformation,
};
use thiserror::Error;

/// PID for "no layer 3 protocol".
pub const PID_NO_L3: u8 = 0xF0;
/// Control byte of a UI frame (P/F clear).
pub const CONTROL_UI: u8 = 0x03;
/// Most digipeaters an AX.25 v2.2 address field can name.
pub const MAX_DIGIS: usize = 8;
/// Largest frame we produce or accept: Direwolf's KISS frame limit.
pub const MAX_FRAME_LEN: usize = 2048;
/// Group destination used for skywave broadcasts.
pub const BROADCAST: Callsign = Callsign {
    call: *b"SKYWAV",
    len: 6,
    ssid: 0,
};

const ADDR_LEN: usize = 7;

/// Errors from callsign parsing and frame coding.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Ax25Error {
    /// Callsign is not 1-6 of A-Z/0-9 with an optional `-SSID` (0-15).
    #[error("invalid callsign: {0}")]
    InvalidCallsign(String),
    /// More than [`MAX_DIGIS`] digipeaters.
    #[error("more than {MAX_DIGIS} digipeaters")]
    TooManyDigipeaters,
    /// Frame longer than [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds {MAX_FRAME_LEN}")]
    TooLong(usize),
    /// Frame ends before the address field, control or PID is complete.
    #[error("frame truncated ({0} bytes)")]
    Truncated(usize),
    /// A valid frame that is not UI.
    #[error("not a UI frame: {0}")]
    NotUi(FrameKind),
}

/// What a non-UI frame was, from its control byte (mod-8 view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// I frame.
    Information,
    /// S frame (RR, RNR, REJ, SREJ).
    Supervisory(u8),
    /// U frame other than UI (SABM, DISC, UA, ...).
    Unnumbered(u8),
}

impl FrameKind {
    fn from_control(c: u8) -> Self {
        if c & 0x01 == 0 {
            FrameKind::Information
        } else if c & 0x03 == 0x01 {
            FrameKind::Supervisory(c)
        } else {
            FrameKind::Unnumbered(c)
        }
    }

    /// Short mnemonic, e.g. `SABM` or `RR`.
    pub fn name(&self) -> &'static str {
        match *self {
            FrameKind::Information => "I",
            FrameKind::Supervisory(c) => match c & 0x0F {
                0x01 => "RR",
                0x05 => "RNR",
                0x09 => "REJ",
                _ => "SREJ",
            },
            FrameKind::Unnumbered(c) => match c & !0x10 {
                0x6F => "SABME",
                0x2F => "SABM",
                0x43 => "DISC",
                0x0F => "DM",
                0x63 => "UA",
                0x87 => "FRMR",
                0x03 => "UI",
                0xAF => "XID",
                0xE3 => "TEST",
                _ => "U?",
            },
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An amateur callsign (1-6 of A-Z, 0-9) with SSID 0-15.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Callsign {
    call: [u8; 6],
    len: u8,
    ssid: u8,
}

impl Callsign {
    /// Validates and uppercases `call`; `ssid` must be 0-15.
    pub fn new(call: &str, ssid: u8) -> Result<Self, Ax25Error> {
        let bad = || Ax25Error::InvalidCallsign(format!("{call}-{ssid}"));
        let up = call.to_ascii_uppercase();
        if !crate::callsign::is_ax25_call(&up) || ssid > 15 {
            return Err(bad());
        }
        let bytes = up.as_bytes();
        let mut out = [b' '; 6];
        out[..bytes.len()].copy_from_slice(bytes);
        Ok(Callsign {
            call: out,
            len: bytes.len() as u8,
            ssid,
        })
    }

    /// The callsign without SSID.
    pub fn call(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.call[..usize::from(self.len)]).unwrap_or("")
    }

    /// The SSID, 0-15.
    pub fn ssid(&self) -> u8 {
        self.ssid
    }

    /// Encodes the 7-byte address field entry.
    ///
    /// `high` is the C bit (dst/src) or H bit (digipeater); `last` marks the end
    /// of the address field.
    pub fn to_address_bytes(&self, high: bool, last: bool) -> [u8; 7] {
        let mut out = [0u8; 7];
        for (o, &c) in out.iter_mut().zip(&self.call) {
            *o = c << 1;
        }
        out[6] = 0x60 | (self.ssid << 1) | if high { 0x80 } else { 0 } | u8::from(last);
        out
    }

    /// Decodes a 7-byte address field entry into (callsign, high bit, last bit).
    pub fn from_address_bytes(bytes: &[u8; 7]) -> Result<(Self, bool, bool), Ax25Error> {
        let mut call = [b' '; 6];
        let mut len = 0u8;
        let mut seen_space = false;
        for (i, &raw) in bytes[..6].iter().enumerate() {
            let c = raw >> 1;
            let ok = raw & 1 == 0
                && match c {
                    b' ' => {
                        seen_space = true;
                        true
                    }
                    b'A'..=b'Z' | b'0'..=b'9' => !seen_space,
                    _ => false,
                };
            if !ok {
                return Err(Ax25Error::InvalidCallsign(format!("{:02x?}", &bytes[..6])));
            }
            if c != b' ' {
                call[i] = c;
                len += 1;
            }
        }
        if len == 0 {
            return Err(Ax25Error::InvalidCallsign("empty".into()));
        }
        let s = bytes[6];
        let cs = Callsign {
            call,
            len,
            ssid: (s >> 1) & 0x0F,
        };
        Ok((cs, s & 0x80 != 0, s & 0x01 != 0))
    }
}

impl fmt::Display for Callsign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ssid == 0 {
            write!(f, "{}", self.call())
        } else {
            write!(f, "{}-{}", self.call(), self.ssid)
        }
    }
}

impl fmt::Debug for Callsign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Callsign({self})")
    }
}

impl FromStr for Callsign {
    type Err = Ax25Error;

    /// Parses `CALL` or `CALL-SSID`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || Ax25Error::InvalidCallsign(s.chars().take(16).collect());
        match s.split_once('-') {
            None => Callsign::new(s, 0),
            Some((call, ssid)) => {
                // u8::from_str would accept "+5"; insist on 1-2 plain digits.
                if ssid.is_empty() || ssid.len() > 2 || !ssid.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let ssid: u8 = ssid.parse().map_err(|_| bad())?;
                Callsign::new(call, ssid).map_err(|_| bad())
            }
        }
    }
}

impl From<Callsign> for Address {
    fn from(c: Callsign) -> Address {
        // Callsign invariants are stricter than Address's, so this cannot fail;
        // fall back to the crate default rather than panic.
        Address::from_parts(c.call().to_string(), c.ssid).unwrap_or_default()
    }
}

impl TryFrom<&Address> for Callsign {
    type Error = Ax25Error;

    fn try_from(a: &Address) -> Result<Self, Self::Error> {
        Callsign::new(a.callsign(), a.ssid())
    }
}

/// A digipeater entry: callsign plus its "has been repeated" (H) bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via {
    /// Digipeater callsign.
    pub call: Callsign,
    /// H bit: the digipeater has already relayed the frame.
    pub repeated: bool,
}

/// A decoded UI frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiFrame {
    /// Source station.
    pub src: Callsign,
    /// Destination (or group such as [`BROADCAST`]).
    pub dst: Callsign,
    /// Digipeater path in order.
    pub digis: Vec<Via>,
    /// Command (dst C=1, src C=0) rather than response; `None` for AX.25 v1 frames.
    pub command: Option<bool>,
    /// P/F bit of the control byte.
    pub poll: bool,
    /// Protocol identifier byte.
    pub pid: u8,
    /// Information field.
    pub info: Vec<u8>,
}

/// Builds a UI command frame with PID 0xF0, ready for a KISS data frame.
pub fn encode_ui(
    src: &Callsign,
    dst: &Callsign,
    digis: &[Callsign],
    info: &[u8],
) -> Result<Vec<u8>, Ax25Error> {
    if digis.len() > MAX_DIGIS {
        return Err(Ax25Error::TooManyDigipeaters);
    }
    let len = ADDR_LEN * (2 + digis.len()) + 2 + info.len();
    if len > MAX_FRAME_LEN {
        return Err(Ax25Error::TooLong(len));
    }
    let frame = Ax25Frame {
        source: (*src).into(),
        destination: (*dst).into(),
        route: digis
            .iter()
            .map(|d| RouteEntry {
                repeater: (*d).into(),
                has_repeated: false,
            })
            .collect(),
        command_or_response: Some(CommandResponse::Command),
        content: FrameContent::UnnumberedInformation(UnnumberedInformation {
            pid: ProtocolIdentifier::None,
            info: info.to_vec(),
            poll_or_final: false,
        }),
    };
    Ok(frame.to_bytes())
}

/// Decodes a UI frame; other valid frame types give [`Ax25Error::NotUi`].
pub fn decode_ui(bytes: &[u8]) -> Result<UiFrame, Ax25Error> {
    if bytes.len() > MAX_FRAME_LEN {
        return Err(Ax25Error::TooLong(bytes.len()));
    }
    let truncated = || Ax25Error::Truncated(bytes.len());
    let mut addrs: Vec<(Callsign, bool)> = Vec::with_capacity(2);
    let mut rest = bytes;
    loop {
        let (chunk, tail) = rest.split_first_chunk::<ADDR_LEN>().ok_or_else(truncated)?;
        rest = tail;
        let (call, high, last) = Callsign::from_address_bytes(chunk)?;
        addrs.push((call, high));
        if last {
            break;
        }
        if addrs.len() == 2 + MAX_DIGIS {
            return Err(Ax25Error::TooManyDigipeaters);
        }
    }
    if addrs.len() < 2 {
        return Err(truncated());
    }
    let (&control, rest) = rest.split_first().ok_or_else(truncated)?;
    if control & !0x10 != CONTROL_UI {
        return Err(Ax25Error::NotUi(FrameKind::from_control(control)));
    }
    let (&pid, info) = rest.split_first().ok_or_else(truncated)?;
    let (dst, dst_c) = addrs[0];
    let (src, src_c) = addrs[1];
    Ok(UiFrame {
        src,
        dst,
        digis: addrs[2..]
            .iter()
            .map(|&(call, repeated)| Via { call, repeated })
            .collect(),
        command: (dst_c != src_c).then_some(dst_c),
        poll: control & 0x10 != 0,
        pid,
        info: info.to_vec(),
    })
}

const X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);

/// AX.25 FCS (CRC-16/X.25); on air it is sent low byte first.
pub fn fcs(bytes: &[u8]) -> u16 {
    X25.checksum(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cs(s: &str) -> Callsign {
        s.parse().expect("valid callsign")
    }

    #[test]
    fn fcs_check_value() {
        assert_eq!(fcs(b"123456789"), 0x906E);
    }

    #[test]
    fn callsign_parsing() {
        assert_eq!(cs("n0call-5").to_string(), "N0CALL-5");
        assert_eq!(cs("N0CALL-0").to_string(), "N0CALL");
        assert_eq!(cs("K1A").ssid(), 0);
        for bad in [
            "",
            "-1",
            "N0CALL-16",
            "TOOLONG1",
            "N0 CAL",
            "N0CALL-",
            "A-+5",
            "A-1-2",
            "É",
            "A-001",
        ] {
            assert!(bad.parse::<Callsign>().is_err(), "{bad:?}");
        }
        assert_eq!(BROADCAST.to_string(), "SKYWAV");
    }

    #[test]
    fn ui_bytes_match_spec() {
        let frame =
            encode_ui(&cs("N0CALL-1"), &BROADCAST, &[cs("WIDE2-2")], b"hi").expect("encodes");
        let mut want = Vec::new();
        // dst SKYWAV-0, C=1 (command), not last: 0x80|0x60|0<<1 = 0xE0
        want.extend(b"SKYWAV".iter().map(|c| c << 1));
        want.push(0xE0);
        // src N0CALL-1, C=0, not last: 0x60|1<<1 = 0x62
        want.extend(b"N0CALL".iter().map(|c| c << 1));
        want.push(0x62);
        // digi WIDE2-2 padded, H=0, last: 0x60|2<<1|1 = 0x65
        want.extend(b"WIDE2 ".iter().map(|c| c << 1));
        want.push(0x65);
        want.extend([0x03, 0xF0, b'h', b'i']);
        assert_eq!(frame, want);
        assert_eq!(
            &frame[..7],
            &[0xA6, 0x96, 0xB2, 0xAE, 0x82, 0xAC, 0xE0],
            "hand-computed SKYWAV"
        );

        let plain = encode_ui(&cs("N0CALL-1"), &cs("APZ"), &[], b"").expect("encodes");
        assert_eq!(plain[13], 0x63, "src is last address");
        assert_eq!(&plain[14..], &[0x03, 0xF0]);
    }

    #[test]
    fn decode_reports_other_kinds() {
        let mut f = encode_ui(&cs("A1"), &cs("B2"), &[], b"x").expect("encodes");
        f[14] = 0x3F; // SABM with P
        assert_eq!(
            decode_ui(&f).map_err(|e| e.to_string()),
            Err("not a UI frame: SABM".into())
        );
        f[14] = 0x21; // RR
        assert!(matches!(
            decode_ui(&f),
            Err(Ax25Error::NotUi(FrameKind::Supervisory(0x21)))
        ));
        assert!(matches!(decode_ui(&f[..14]), Err(Ax25Error::Truncated(14))));
    }

    fn callsign() -> impl Strategy<Value = Callsign> {
        ("[A-Z0-9]{1,6}", 0u8..16).prop_map(|(c, s)| Callsign::new(&c, s).expect("valid"))
    }

    proptest! {
        #[test]
        fn callsign_round_trips(c in callsign(), high: bool, last: bool) {
            prop_assert_eq!(c.to_string().parse::<Callsign>(), Ok(c));
            let addr: Address = c.into();
            prop_assert_eq!(addr.to_string(), c.to_string());
            prop_assert_eq!(Callsign::try_from(&addr), Ok(c));
            prop_assert_eq!(
                Callsign::from_address_bytes(&c.to_address_bytes(high, last)),
                Ok((c, high, last))
            );
        }

        #[test]
        fn ui_round_trip(
            src in callsign(),
            dst in callsign(),
            digis in proptest::collection::vec(callsign(), 0..=MAX_DIGIS),
            info in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let bytes = encode_ui(&src, &dst, &digis, &info).expect("encodes");
            let ui = decode_ui(&bytes).expect("decodes");
            prop_assert_eq!(ui.src, src);
            prop_assert_eq!(ui.dst, dst);
            let got: Vec<Callsign> = ui.digis.iter().map(|v| v.call).collect();
            prop_assert_eq!(got, digis);
            prop_assert_eq!(ui.pid, PID_NO_L3);
            prop_assert_eq!(ui.command, Some(true));
            prop_assert_eq!(ui.info, info);
            // The crate's own parser agrees on well-formed frames.
            let theirs = Ax25Frame::from_bytes(&bytes).expect("crate parses");
            prop_assert_eq!(theirs.source, Address::from(src));
        }

        #[test]
        fn decode_arbitrary_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_ui(&bytes);
            let _ = Ax25Frame::from_bytes(&bytes);
        }

        #[test]
        fn decode_mutated_never_panics(
            info in proptest::collection::vec(any::<u8>(), 0..20),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let mut bytes = encode_ui(&cs("N0CALL-1"), &BROADCAST, &[cs("WIDE1-1")], &info)
                .expect("encodes");
            for (i, x) in flips {
                let n = bytes.len();
                bytes[i % n] ^= x;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = decode_ui(&bytes);
            let _ = Ax25Frame::from_bytes(&bytes);
        }
    }
}
