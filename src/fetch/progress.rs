//! What a fetch reports while it runs ([`Event`], drawn as a bar or printed as JSON Lines
//! by the CLI) and the shared rate limiter behind `--limit-rate`.
//!
//! Known gap: the limiter paces whole reads (up to 64 KiB), so short bursts can exceed
//! the rate by one read per connection.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One thing that happened during a fetch. Serialised as `{"type": "event", ...}`-style
/// JSON Lines by the CLI (SPEC.md §14.5).
#[derive(Clone, Debug, serde::Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// Starting on a source.
    Source {
        url: String,
        size: u64,
        resumed_bytes: u64,
    },
    /// Bytes on disk so far (verified or not) of `total`.
    Progress { done: u64, total: u64 },
    /// A part failed and will be tried again after a pause.
    Retry {
        url: String,
        attempt: u32,
        reason: String,
    },
    /// A part could not be resumed and starts again from its beginning.
    Restart { url: String, reason: String },
    /// A source was given up; the next is tried.
    MirrorFailed { url: String, reason: String },
    /// A source served bytes that do not hash to the expected sha256.
    BadBytes {
        url: String,
        expected: String,
        actual: String,
    },
    /// A catalog was read; `signed` says whether its signatures were checked.
    Catalog { source: String, signed: bool },
}

/// Paces the bytes of all connections to a rate (a token bucket of one second).
pub struct RateLimiter {
    rate: u64,
    state: Mutex<(Instant, f64)>,
}

impl RateLimiter {
    /// A limiter for `rate` bytes per second.
    pub fn new(rate: u64) -> RateLimiter {
        RateLimiter {
            rate: rate.max(1),
            state: Mutex::new((Instant::now(), 0.0)),
        }
    }

    /// Takes `n` bytes from the bucket, sleeping until they are allowed.
    pub fn take(&self, n: usize) {
        let wait = {
            let Ok(mut s) = self.state.lock() else {
                return;
            };
            let now = Instant::now();
            let rate = self.rate as f64;
            let elapsed = now.duration_since(s.0).as_secs_f64();
            // Tokens accumulate up to one second's worth.
            let tokens = (s.1 + elapsed * rate).min(rate) - n as f64;
            *s = (now, tokens);
            if tokens < 0.0 {
                Duration::from_secs_f64(-tokens / rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_paces() {
        let l = RateLimiter::new(1 << 20);
        let t = Instant::now();
        for _ in 0..16 {
            l.take(64 << 10);
        }
        // 1 MiB at 1 MiB/s from an empty bucket: about a second.
        assert!(
            t.elapsed() >= Duration::from_millis(800),
            "{:?}",
            t.elapsed()
        );
    }
}
