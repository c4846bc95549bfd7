//! How slowly a request body may arrive. A client that trickles its body holds a connection, an
//! upload slot and a quota reservation of the whole declared size for as long as it trickles, so
//! both are bounded:
//! - **idle**: no byte for `timeout` while the gateway waits for one → `RequestTimeout`;
//! - **rate**: after the first `timeout` of waiting, the body must keep up an average of
//!   `min_rate` bytes per second of waiting.
//!
//! Only time spent *waiting for the client* counts: while the gateway does not ask for more (a
//! slow disk, the virus scanner applying back-pressure) the clock is stopped, so the gateway's
//! own slowness is never blamed on the client. A reservation therefore lives at most
//! `timeout + declared size / min_rate` of waiting.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy)]
pub struct PaceOptions {
    /// Longest wait for the next byte, and the grace before the rate counts.
    pub timeout: Duration,
    /// Bytes per second of waiting; 0: no minimum rate.
    pub min_rate: u64,
}

impl Default for PaceOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            min_rate: 16 * 1024,
        }
    }
}

/// The body was too slow; mapped to S3's `RequestTimeout` by `error.rs`.
#[derive(Debug, thiserror::Error)]
#[error("{MESSAGE}")]
pub struct BodyTimeout;

/// The text of [`BodyTimeout`], also recognised where s3s flattened the error into its own.
pub const MESSAGE: &str = "the request body arrived too slowly";

/// The clock of one request body.
pub struct Pace {
    opts: PaceOptions,
    waiting_since: Option<Instant>,
    waited: Duration,
    bytes: u64,
    /// Made the first time the body makes the gateway wait: most bodies (every GET's, every
    /// small PUT's) never do, and a timer is an allocation and a timer-wheel entry.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Pace {
    pub fn new(opts: PaceOptions) -> Self {
        Self {
            opts,
            waiting_since: None,
            waited: Duration::ZERO,
            bytes: 0,
            timer: None,
        }
    }

    /// The body answered (`n` bytes, or its end, or an error).
    pub fn ready(&mut self, n: usize) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
        self.bytes += n as u64;
    }

    /// The body has nothing yet: starts (or goes on) waiting, and fails once it waited too long.
    pub fn pending(&mut self, cx: &mut Context<'_>) -> Result<(), BodyTimeout> {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let mut allowed = self.opts.timeout;
        if self.opts.min_rate > 0 {
            // Waiting this request may still do at the minimum rate, for the bytes it sent.
            let earned = Duration::from_secs_f64(self.bytes as f64 / self.opts.min_rate as f64);
            let budget = (self.opts.timeout + earned).saturating_sub(self.waited);
            allowed = allowed.min(budget);
        }
        let deadline = since + allowed;
        if Instant::now() >= deadline {
            return Err(BodyTimeout);
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Err(BodyTimeout),
            Poll::Pending => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> PaceOptions {
        PaceOptions {
            timeout: Duration::from_secs(10),
            min_rate: 100,
        }
    }

    fn cx() -> Context<'static> {
        Context::from_waker(futures::task::noop_waker_ref())
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_body_times_out_after_the_timeout_of_waiting() {
        let mut p = Pace::new(opts());
        assert!(p.pending(&mut cx()).is_ok());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(p.pending(&mut cx()).is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(p.pending(&mut cx()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_fails_the_rate_and_time_not_spent_waiting_is_not_counted() {
        let mut p = Pace::new(opts());
        // 1 byte every 5 s: never idle for 10 s, but far below 100 B/s.
        let mut failed_at = None;
        for i in 0..10 {
            if p.pending(&mut cx()).is_err() {
                failed_at = Some(i);
                break;
            }
            tokio::time::advance(Duration::from_secs(5)).await;
            if p.pending(&mut cx()).is_err() {
                failed_at = Some(i);
                break;
            }
            p.ready(1);
        }
        assert_eq!(failed_at, Some(2), "10 s of grace, then 2 bytes earn 20 ms");

        // A fast body whose reader pauses (back-pressure) for a minute between reads is fine.
        let mut p = Pace::new(opts());
        for _ in 0..5 {
            assert!(p.pending(&mut cx()).is_ok());
            tokio::time::advance(Duration::from_millis(10)).await;
            p.ready(64 * 1024);
            tokio::time::advance(Duration::from_secs(60)).await;
        }
        assert!(p.pending(&mut cx()).is_ok());
    }
}
