//! Retry waits for links that reopen what they lost (a TCP peer, a TNC, a modem, a
//! dial): doubling from a floor to a ceiling, back to the floor once a connection has
//! held for a while. It reads no clock: callers say how long a connection lasted.

use std::time::Duration;

/// Doubling retry waits (see the module doc).
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    reset_after: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits from `min` doubling to `max`; a connection that lasted longer than
    /// `reset_after` starts again from `min`.
    pub const fn new(min: Duration, max: Duration, reset_after: Duration) -> Backoff {
        Backoff {
            min,
            max,
            reset_after,
            next: min,
        }
    }

    /// The wait before the next try, without counting it.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// The wait before the next try; the one after it is twice as long, up to the
    /// ceiling.
    pub fn next_wait(&mut self) -> Duration {
        let w = self.next;
        self.next = w.saturating_mul(2).min(self.max);
        w
    }

    /// A connection ended after `lasted`: one that held long enough resets the waits.
    pub fn ended_after(&mut self, lasted: Duration) {
        if lasted > self.reset_after {
            self.reset();
        }
    }

    /// Back to the shortest wait (a connection succeeded).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_the_ceiling_and_reset_after_a_long_connection() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(30), s(60));
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.ended_after(s(60));
        assert_eq!(b.peek(), s(30), "60 s is not longer than 60 s");
        b.ended_after(s(61));
        assert_eq!(b.next_wait(), s(1));
        b.next_wait();
        b.reset();
        assert_eq!(b.peek(), s(1));
    }
}
