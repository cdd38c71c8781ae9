//! How many connections a download uses when the operator did not say (SPEC.md §14.3
//! "Connections"): start on one and add one at a time while each addition raised the
//! throughput, like a hill climb.
//!
//! Parallel ranged connections help where one TCP connection cannot fill the link (a long
//! round trip, a per-connection cap at the server). Where one connection already fills it
//! (a LAN, loopback, a local mirror), more connections only compete for the cores with the
//! SHA-256 that follows the download, and each costs its own request and slow start:
//! measured on 2 cores, 1 GiB from nginx on loopback took 1.2 s on one connection and
//! 1.6 s on four. So the climb measures the throughput over [`PROBE`] on `k`
//! connections, allows `k + 1` while the last step gained at least [`GAIN`], and on a
//! step that did not gain, goes back to `k` and stays there (the extra connection
//! finishes its part and stops).
//!
//! Known gaps: a link whose rate swings by more than [`GAIN`] between two probes can
//! stop the climb early or late; the climb never starts again once it has stopped.

use std::time::{Duration, Instant};

/// How long the throughput on one connection count is measured.
pub const PROBE: Duration = Duration::from_secs(2);

/// An added connection is kept when the throughput grew by at least this factor.
pub const GAIN: f64 = 1.1;

/// The climb's state; [`Climb::step`] is called often with the bytes received so far
/// and returns how many connections may run.
#[derive(Debug)]
pub struct Climb {
    allowed: usize,
    max: usize,
    /// When the current probe started and the bytes received then (`None`: no byte yet).
    probe: Option<(Instant, u64)>,
    /// The throughput measured on `allowed - 1` connections (bytes per second).
    before: Option<f64>,
    stopped: bool,
}

impl Climb {
    /// A climb from one connection up to `max`.
    pub fn new(max: usize) -> Climb {
        Climb {
            allowed: 1,
            max: max.max(1),
            probe: None,
            before: None,
            stopped: max <= 1,
        }
    }

    /// Connections allowed now.
    pub fn allowed(&self) -> usize {
        self.allowed
    }

    /// Takes the bytes received so far at `now`; returns the connections allowed.
    /// The first probe starts at the first call with bytes received (the first
    /// answer's latency is not throughput).
    pub fn step(&mut self, now: Instant, received: u64) -> usize {
        if self.stopped {
            return self.allowed;
        }
        let Some((since, at)) = self.probe else {
            if received > 0 {
                self.probe = Some((now, received));
            }
            return self.allowed;
        };
        let elapsed = now.saturating_duration_since(since);
        if elapsed < PROBE {
            return self.allowed;
        }
        let rate = received.saturating_sub(at) as f64 / elapsed.as_secs_f64();
        match self.before {
            Some(b) if rate < b * GAIN => {
                // The last connection did not help: withdraw it and stop climbing.
                self.allowed -= 1;
                self.stopped = true;
            }
            _ if self.allowed >= self.max => self.stopped = true,
            _ => {
                self.before = Some(rate);
                self.allowed += 1;
            }
        }
        self.probe = Some((now, received));
        self.allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a climb over a link whose throughput on `k` connections is `rate(k)`
    /// bytes per second, for `secs` seconds in 20 ms steps; returns the connection
    /// counts allowed, deduplicated.
    fn drive(max: usize, rate: impl Fn(usize) -> f64, secs: u64) -> Vec<usize> {
        let mut c = Climb::new(max);
        let t0 = Instant::now();
        let mut received = 0.0;
        let mut seen = vec![c.allowed()];
        let step = Duration::from_millis(20);
        for i in 1..=(secs * 50) {
            received += rate(c.allowed()) * step.as_secs_f64();
            let k = c.step(t0 + step * i as u32, received as u64);
            if seen.last() != Some(&k) {
                seen.push(k);
            }
        }
        seen
    }

    #[test]
    fn a_link_one_connection_fills_stays_on_one() {
        // One connection fills it; a second adds nothing (and costs CPU).
        assert_eq!(drive(4, |_| 900e6, 30), vec![1, 2, 1]);
    }

    #[test]
    fn a_window_limited_link_climbs_to_the_most_allowed() {
        // Each connection gets 2 MB/s of a 100 MB/s link.
        assert_eq!(drive(4, |k| 2e6 * k as f64, 30), vec![1, 2, 3, 4]);
    }

    #[test]
    fn the_climb_stops_where_the_link_is_full() {
        // 3 MB/s per connection on a 7 MB/s link: three connections fill it (9 > 7 is
        // capped at 7, a gain of 7/6 over two), a fourth adds nothing.
        let seen = drive(8, |k| (3e6 * k as f64).min(7e6), 40);
        assert_eq!(seen, vec![1, 2, 3, 4, 3]);
    }

    #[test]
    fn no_bytes_no_climb_and_one_is_one() {
        assert_eq!(drive(4, |_| 0.0, 10), vec![1]);
        assert_eq!(drive(1, |_| 5e6, 10), vec![1]);
    }
}
