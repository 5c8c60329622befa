//! Callsigns: the one place that says what a callsign may hold. The media differ on
//! purpose, so each has its rules as data beside the others, checked by one scanner:
//! AX.25 addresses carry 1-6 letters and digits and an SSID, VARA takes portable
//! prefixes (`VE3/N0CALL`) up to 16 characters, JS8 has no SSID, and the wire takes
//! whatever all of them can carry. The station's own callsign is an AX.25 one, and on
//! top of that must have the shape of an amateur callsign.

use std::ops::RangeInclusive;

/// What one medium takes, checked on uppercase text.
struct Rules {
    len: RangeInclusive<usize>,
    /// Bytes allowed besides `A-Z` and `0-9`.
    extra: &'static [u8],
    /// Needs at least one letter and one digit.
    letter_and_digit: bool,
}

/// The call of an AX.25 address, without its SSID.
const AX25_CALL: Rules = Rules {
    len: 1..=6,
    extra: b"",
    letter_and_digit: false,
};

/// What VARA takes as `MYCALL` and in `CONNECT`.
const VARA: Rules = Rules {
    len: 1..=16,
    extra: b"-/",
    letter_and_digit: false,
};

/// A JS8Call station: no SSID, no group.
const JS8: Rules = Rules {
    len: 3..=12,
    extra: b"/",
    letter_and_digit: true,
};

/// A `Hello`'s callsign: empty (no radio identity) or what AX.25, VARA and JS8 can all
/// carry.
const WIRE: Rules = Rules {
    len: 0..=crate::wire::message::limits::MAX_CALLSIGN,
    extra: b"-",
    letter_and_digit: false,
};

fn fits(s: &str, r: &Rules) -> bool {
    let b = s.as_bytes();
    r.len.contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || r.extra.contains(c))
        && (!r.letter_and_digit
            || (b.iter().any(u8::is_ascii_uppercase) && b.iter().any(u8::is_ascii_digit)))
}

/// Whether `call` (uppercase, no SSID) can be the call of an AX.25 address.
pub fn is_ax25_call(call: &str) -> bool {
    fits(call, &AX25_CALL)
}

/// Whether a `Hello` may carry `c` (exact bytes: the wire does not uppercase).
pub fn is_wire(c: &str) -> bool {
    fits(c, &WIRE)
}

/// A station callsign with optional SSID (`N0CALL`, `N0CALL-7`) as AX.25 takes it: 1-6
/// letters and digits, SSID 0-15 in one or two digits. Returns it trimmed and
/// uppercased, SSID as written.
pub fn station(s: &str) -> Result<String, String> {
    let up = s.trim().to_ascii_uppercase();
    let (call, ssid) = match up.split_once('-') {
        Some((c, s)) => (c, Some(s)),
        None => (up.as_str(), None),
    };
    if !is_ax25_call(call) {
        return Err(format!(
            "callsign '{s}': expected 1-6 letters and digits, optionally -SSID"
        ));
    }
    if let Some(ssid) = ssid {
        let digits = (1..=2).contains(&ssid.len()) && ssid.bytes().all(|b| b.is_ascii_digit());
        if !digits || ssid.parse::<u8>().map_or(true, |n| n > 15) {
            return Err(format!("callsign '{s}': SSID must be 0-15"));
        }
    }
    Ok(up)
}

/// Check that `call` (as [`station`] returns it) has the shape of an amateur callsign:
/// a prefix of 1-3 letters and digits holding a letter, one digit, then a suffix of 1-4
/// letters and digits ending in a letter (`N0CALL`, `2E0ABC`, `VK2XYZ-7`). `HELLO` and
/// `1234` are not callsigns. On `main`, `N0CALL` is refused as well: it is the
/// placeholder of examples and configs, as Direwolf treats it, not a station.
pub fn check_amateur(call: &str, network: &str) -> Result<(), String> {
    let base = call.split('-').next().unwrap_or(call);
    let b = base.as_bytes();
    // Some digit `d` must split it into such a prefix and suffix.
    let shaped = b.last().is_some_and(u8::is_ascii_uppercase)
        && (1..b.len().saturating_sub(1)).any(|d| {
            let (prefix, suffix) = (&b[..d], &b[d + 1..]);
            b[d].is_ascii_digit()
                && (1..=3).contains(&prefix.len())
                && prefix.iter().any(u8::is_ascii_uppercase)
                && (1..=4).contains(&suffix.len())
                && suffix.iter().all(u8::is_ascii_alphanumeric)
        });
    if !shaped {
        return Err(format!(
            "callsign '{call}' is not an amateur callsign (expected e.g. N0CALL-1, VK2XYZ, 2E0ABC-7)"
        ));
    }
    if network == "main" && base == "N0CALL" {
        return Err(format!(
            "callsign '{call}': N0CALL is a placeholder; use your own callsign on main"
        ));
    }
    Ok(())
}

/// A callsign as VARA takes it (letters, digits, `-` and `/`), uppercased.
pub fn vara(s: &str) -> Option<String> {
    let up = s.to_ascii_uppercase();
    fits(&up, &VARA).then_some(up)
}

/// A JS8 callsign from user input or the air: uppercase, 3-12 characters of A-Z, 0-9
/// and `/`, with a letter and a digit; no SSID and no group.
pub fn js8(s: &str) -> Result<String, String> {
    let c = s.trim().to_ascii_uppercase();
    if c.contains('-') {
        return Err(format!("'{c}': JS8 callsigns have no SSID"));
    }
    if c.starts_with('@') {
        return Err(format!("'{c}' is a group, not a station"));
    }
    if fits(&c, &JS8) {
        Ok(c)
    } else {
        Err(format!("'{c}' is not a JS8 callsign"))
    }
}

/// Our JS8 callsign from the station callsign: the AX.25 SSID (`-1`) is dropped.
pub fn js8_base(station: &str) -> Result<String, String> {
    js8(station.split('-').next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn station_callsigns_are_checked_and_uppercased() {
        assert_eq!(station("n0call-1").unwrap(), "N0CALL-1");
        assert_eq!(station(" W1AW ").unwrap(), "W1AW");
        assert_eq!(station("W1AW-15").unwrap(), "W1AW-15");
        for bad in [
            "TOOLONGX",
            "N0CALL-16",
            "N0 CALL",
            "",
            "N0CALL-",
            "N0CALL-+5",
            "N0CALL-015",
            "N0/CALL",
        ] {
            assert!(station(bad).is_err(), "{bad}");
        }
        // What `station` accepts is what the KISS link can put in an AX.25 address.
        for ok in ["n0call-1", "W1AW", "W1AW-15", "K1A-0"] {
            let s = station(ok).unwrap();
            assert!(s.parse::<crate::wire::ax25::Callsign>().is_ok(), "{s}");
        }
    }

    #[test]
    fn station_callsigns_must_look_like_amateur_callsigns() {
        for ok in [
            "N0CALL", "N0CALL-1", "VK2XYZ", "2E0ABC-7", "K1A", "9A1AA", "W1AW",
        ] {
            assert!(check_amateur(ok, "regtest").is_ok(), "{ok}");
        }
        for bad in ["HELLO", "1234", "ABC", "N0", "0ABC", "N0CAL1X1", "ABCD1X"] {
            assert!(check_amateur(bad, "regtest").is_err(), "{bad}");
        }
        assert!(check_amateur("N0CALL-1", "main").is_err());
        assert!(check_amateur("W1AW-1", "main").is_ok());
    }

    #[test]
    fn each_medium_has_its_rules() {
        assert_eq!(vara("ve3/n0call-1").as_deref(), Some("VE3/N0CALL-1"));
        assert!(vara("").is_none() && vara("N0 CALL").is_none());
        assert!(vara(&"A".repeat(17)).is_none());
        assert_eq!(js8_base("N0CALL-1").unwrap(), "N0CALL");
        assert_eq!(js8_base("n0call").unwrap(), "N0CALL");
        assert!(js8_base("").is_err() && js8_base("-1").is_err());
        assert_eq!(js8("VE3/N0CALL").unwrap(), "VE3/N0CALL");
        assert!(js8("N0CALL-1").is_err() && js8("@ALLCALL").is_err() && js8("ABCD").is_err());
        assert!(is_wire("") && is_wire("N0CALL-15") && !is_wire("n0call"));
        assert!(!is_wire("VE3/N0CAL") && !is_wire("N0CALL-150"));
        assert!(is_ax25_call("N0CALL") && !is_ax25_call("N0CALL7") && !is_ax25_call(""));
    }
}
