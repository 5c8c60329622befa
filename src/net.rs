//! The vocabulary shared by the core and the transports: how a link and a peer session
//! are named ([`LinkId`], [`PeerId`]) and what a link can carry ([`LinkCaps`]). The
//! core (`node`, `outbox`, `chain`) takes these from here, never from `link`, so it
//! does not depend on the transports; `link` re-exports them for its users.

use serde::Serialize;

/// Identifies a link within one driver.
pub type LinkId = u32;
/// Identifies one peer session (a TCP connection, a station heard on a radio channel).
pub type PeerId = u64;

/// Highest bit rate the driver passes to the core. Links report rates that modems told
/// them; the core multiplies with them, so an absurd one is held to this.
pub const MAX_BITRATE_BPS: u64 = 100_000_000;

/// What a link can carry; the core sizes and paces its traffic from these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkCaps {
    /// Largest envelope the link moves in one piece (bytes).
    pub mtu: usize,
    /// Line rate in bit/s; 0 means fast enough not to matter (TCP).
    pub bitrate_bps: u64,
    /// Only one side can transmit at a time.
    pub half_duplex: bool,
    /// Everything sent is heard by every station on the channel.
    pub broadcast: bool,
    /// Carries text only (binary must be encoded).
    pub text_only: bool,
    /// Peers are sessions that open and close (TCP), not stations heard in passing.
    pub connection_oriented: bool,
    /// An amateur-radio link: identify by callsign, never encrypt.
    pub radio: bool,
    /// Whole blocks may cross this link. Narrow links (a few bit/s) clear it unless the
    /// operator allows blocks; the core then sends only headers, tip announcements, small
    /// transactions and acknowledgements there.
    pub blocks: bool,
    /// The modem listens before it keys up (a KISS TNC's carrier detect, VARA's BUSY), or
    /// the link is not shared. False on JS8Call, which keys up at the next slot boundary
    /// whatever is on the air: the core then picks random slots itself.
    pub carrier_sense: bool,
    /// Transmit slot length in milliseconds where transmissions start on slot boundaries
    /// (JS8Call: the frame period, scaled like the link's timers); 0 otherwise.
    pub slot_ms: u64,
}

impl LinkCaps {
    /// A TCP connection.
    pub fn tcp() -> LinkCaps {
        LinkCaps {
            mtu: crate::wire::envelope::MAX_MESSAGE_LEN,
            bitrate_bps: 0,
            half_duplex: false,
            broadcast: false,
            text_only: false,
            connection_oriented: true,
            radio: false,
            blocks: true,
            carrier_sense: true,
            slot_ms: 0,
        }
    }
}
