//! Retransmission timers from measured round trips (RFC 6298), per peer, for requests
//! on links with a known bit rate (radio, slow modems).
//!
//! What is measured is the *turnaround*: the time from handing a request to the link
//! until its answer arrives, less the estimated air time of everything that had to go
//! out first (our queue, the request, the answer). That part is channel access, TXDELAY
//! and the peer's processing, the same for a 20-byte request and a 4 KB block; the air
//! times are added back per request, so one estimator serves every size. Samples come
//! only from requests answered on their first try (Karn's rule).

/// Turnaround assumed before the first sample: both stations' channel access, TXDELAY
/// and tail on a 1200-baud channel, with room to spare.
const INITIAL_MS: u64 = 3_000;
/// Clock granularity term of RFC 6298 (the core's timers fire at most this late).
const GRANULARITY_MS: u64 = 250;
/// Floor and ceiling of the turnaround part of a timeout.
const MIN_MS: u64 = 1_000;
const MAX_MS: u64 = 60_000;
/// Doublings of a timeout after consecutive unanswered tries.
const MAX_BACKOFF: u32 = 5;

/// Smoothed turnaround and its variation for one peer.
#[derive(Clone, Debug, Default)]
pub(super) struct Rtt {
    srtt: u64,
    rttvar: u64,
    samples: u32,
    /// Consecutive timeouts without an answer: the next timeout doubles per step.
    pub backoff: u32,
}

impl Rtt {
    /// One measured turnaround.
    pub fn sample(&mut self, ms: u64) {
        if self.samples == 0 {
            self.srtt = ms;
            self.rttvar = ms / 2;
        } else {
            let err = self.srtt.abs_diff(ms);
            self.rttvar = (3 * self.rttvar + err) / 4;
            self.srtt = (7 * self.srtt + ms) / 8;
        }
        self.samples = self.samples.saturating_add(1);
        self.backoff = 0;
    }

    /// The peer answered something: whatever was lost before, the path works again.
    pub fn answered(&mut self) {
        self.backoff = 0;
    }

    /// A request went unanswered: the next one waits longer.
    pub fn timed_out(&mut self) {
        self.backoff = (self.backoff + 1).min(MAX_BACKOFF);
    }

    /// The turnaround part of a timeout: SRTT + 4·RTTVAR, bounded, doubled per
    /// consecutive timeout.
    pub fn rto(&self) -> u64 {
        let base = if self.samples == 0 {
            INITIAL_MS
        } else {
            (self.srtt + (4 * self.rttvar).max(GRANULARITY_MS)).clamp(MIN_MS, MAX_MS)
        };
        base << self.backoff
    }

    /// Smoothed turnaround, if measured (for the API and tests).
    pub fn srtt(&self) -> Option<u64> {
        (self.samples > 0).then_some(self.srtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_measured_turnaround_and_backs_off() {
        let mut r = Rtt::default();
        assert_eq!(r.rto(), INITIAL_MS);
        for _ in 0..20 {
            r.sample(1_200);
        }
        // Converged on 1.2 s with little variation: a timeout of about 1.5 s, not 3.
        assert!((1_400..=1_700).contains(&r.rto()), "{}", r.rto());
        let base = r.rto();
        r.timed_out();
        r.timed_out();
        assert_eq!(r.rto(), base * 4);
        r.answered();
        assert_eq!(r.rto(), base);
        // A jittery path gets a wider margin.
        let mut j = Rtt::default();
        for i in 0..20 {
            j.sample(if i % 2 == 0 { 500 } else { 2_500 });
        }
        assert!(j.rto() > 3_500, "{}", j.rto());
        for _ in 0..10 {
            j.timed_out();
        }
        assert!(j.rto() <= MAX_MS << MAX_BACKOFF);
    }
}
