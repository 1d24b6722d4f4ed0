//! How a long step's progress is kept between stateless status calls, and how the state machine polls it.

use serde::{Deserialize, Serialize};

use crate::model::error::{Error, Result};

/// Whether a long-running step is done. A status call answers only `ready`; while pending it fails with
/// `AmiPipeline.NotReady` (see [`settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Ready,
}

/// How the state machine polls a long step, written once here and read by the definition's generator
/// (`definition`): a Wait of `FIRST_POLL_SECONDS` after `start`, then the status Task, retried on
/// `AmiPipeline.NotReady` every `INTERVAL * BACKOFF^n` seconds, capped at `MAX_DELAY`.
///
/// With the first wait equal to `INTERVAL / (BACKOFF - 1)`, the n-th status call comes at
/// `FIRST_POLL_SECONDS * BACKOFF^n` after start, so a result is noticed at most `BACKOFF - 1` (14%) of the step's
/// time late (until the cap, after which it is noticed earlier still), whatever the step's length. Each poll is
/// one state transition and three history events (Step Functions pricing and quotas).
pub mod polling {
    pub const INTERVAL_SECONDS: u32 = 14;
    pub const BACKOFF_RATE: f64 = 1.14;
    pub const MAX_DELAY_SECONDS: u32 = 600;
    pub const FIRST_POLL_SECONDS: u32 = 100;

    /// Seconds from `start` to the status call numbered `attempt` (0 is the first), as the retrier schedules it.
    pub fn call_time(attempt: u32) -> f64 {
        let mut t = f64::from(FIRST_POLL_SECONDS);
        for k in 0..attempt {
            t += (f64::from(INTERVAL_SECONDS) * BACKOFF_RATE.powi(k as i32)).min(f64::from(MAX_DELAY_SECONDS));
        }
        t
    }

    /// Retries the status Task needs so that its last call comes after a deadline of `minutes` (plus one
    /// maximum delay of slack): the handler's `Timeout`, not the retrier running out, ends a step that hangs.
    pub fn attempts_to_cover(minutes: u32) -> u32 {
        let until = f64::from(minutes) * 60.0 + f64::from(MAX_DELAY_SECONDS);
        (0..).find(|&n| call_time(n) >= until).unwrap_or(u32::MAX)
    }
}

/// Deadline bookkeeping shared by every long step. Status calls are stateless: a retried status call gets the
/// same input as the first, so nothing here may change between polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub status: Status,
    /// Unix seconds when the step started.
    pub started_at: i64,
    /// Unix seconds after which the step fails with `AmiPipeline.Timeout`.
    pub deadline: i64,
    /// Seconds the state machine waits before the first status call: 0 when `start` is already done.
    pub wait_seconds: u32,
}

impl Progress {
    pub fn start(now: i64, timeout_minutes: u32) -> Progress {
        Progress {
            status: Status::Pending,
            started_at: now,
            deadline: now + i64::from(timeout_minutes) * 60,
            wait_seconds: polling::FIRST_POLL_SECONDS,
        }
    }

    /// The same progress with `status`; ready needs no wait.
    pub fn with_status(self, status: Status) -> Progress {
        Progress {
            status,
            wait_seconds: if status == Status::Ready { 0 } else { self.wait_seconds },
            ..self
        }
    }

    /// Fails with `Timeout` once the deadline has passed.
    pub fn check_deadline(&self, now: i64, what: &str) -> Result<()> {
        if now > self.deadline {
            Err(Error::Timeout(format!(
                "{what} not done after {} minutes (the recipe's limit)",
                (self.deadline - self.started_at) / 60
            )))
        } else {
            Ok(())
        }
    }
}

/// A status call's answer as the state machine's Retry sees it: a pending state fails with `NotReady` (the
/// poll), and so do throttling and transient failures, so that they cost one poll each instead of drawing on a
/// retrier whose budget, counted per state entry, would otherwise have to last the whole step. The deadline
/// (`Timeout`) still ends a step that stays throttled.
/// A state without progress (`None`) is a one-shot answer, ready as it is.
pub fn settle<T>(result: Result<T>, progress: impl Fn(&T) -> Option<&Progress>, what: &str) -> Result<T> {
    match result {
        Ok(state) if progress(&state).is_none_or(|p| p.status == Status::Ready) => Ok(state),
        Ok(_) => Err(Error::NotReady(format!("{what} still in progress"))),
        Err(e) if e.is_retryable() => Err(Error::NotReady(format!("{what}: {e}; polling again"))),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_are_late_by_at_most_the_backoff_share() {
        // Between the first call and the cap, each wait is (BACKOFF - 1) of the time since start.
        for n in 0..20 {
            let (t, next) = (polling::call_time(n), polling::call_time(n + 1));
            if next - t < f64::from(polling::MAX_DELAY_SECONDS) {
                assert!(
                    (next - t) / t <= polling::BACKOFF_RATE - 1.0 + 1e-9,
                    "call {n}: {t} -> {next}"
                );
            }
        }
        // A 24-hour step is covered by a few hundred calls, not 5,760.
        let n = polling::attempts_to_cover(1440);
        assert!(polling::call_time(n) >= 86_400.0 && n < 200, "{n}");
    }

    #[test]
    fn deadline_is_enforced() {
        let p = Progress::start(0, 5);
        assert!(p.check_deadline(300, "x").is_ok());
        let err = p.check_deadline(301, "build").unwrap_err();
        assert_eq!(err.error_type(), "AmiPipeline.Timeout");
    }

    #[test]
    fn pending_and_throttled_status_calls_become_not_ready() {
        let pending = Progress::start(0, 5);
        let ready = pending.with_status(Status::Ready);
        assert_eq!(ready.wait_seconds, 0);
        fn p(s: &Progress) -> Option<&Progress> {
            Some(s)
        }
        assert_eq!(settle(Ok(ready), p, "x"), Ok(ready));
        let not_ready = |r: Result<Progress>| settle(r, p, "x").unwrap_err().error_type();
        assert_eq!(not_ready(Ok(pending)), "AmiPipeline.NotReady");
        assert_eq!(not_ready(Err(Error::Throttled("t".into()))), "AmiPipeline.NotReady");
        assert_eq!(not_ready(Err(Error::Transient("t".into()))), "AmiPipeline.NotReady");
        assert_eq!(not_ready(Err(Error::Timeout("t".into()))), "AmiPipeline.Timeout");
        assert_eq!(
            not_ready(Err(Error::ImageFailed("t".into()))),
            "AmiPipeline.ImageFailed"
        );
    }
}
