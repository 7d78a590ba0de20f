//! Pacing to the server's quota (#11). A RESOURCE_EXHAUSTED whose
//! `retry-after` metadata is within the caller's `max_quota_wait` is the
//! evaluation rate running out: the batch waits that long and is sent
//! again, and from then on Evaluate calls go one at a time, each after the
//! last refill time, so a paced check does not keep knocking (the operator
//! counts refusals per key). A longer refill (a daily cap, which refills at
//! the next UTC midnight), or none named, is
//! [`ClientError::QuotaExhausted`] with the reset time.
//!
//! A refused call charges nothing (docs/PROTOCOL.md §7.1), and the batches
//! that did succeed are kept: waiting never throws paid work away.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::{ClientError, Result};

/// Refusals of one batch in a row after which pacing gives up (a server
/// whose `retry-after` keeps being too short).
const MAX_REFUSALS: u32 = 16;

/// What a long check reports while it runs, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The server's evaluation rate ran out: the check waits this long for
    /// it to refill, then goes on.
    QuotaWait {
        /// How long.
        wait: Duration,
    },
}

/// A callback for [`Progress`] events.
#[derive(Clone)]
pub(crate) struct OnProgress(pub(crate) Arc<dyn Fn(Progress) + Send + Sync>);

impl fmt::Debug for OnProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnProgress(..)")
    }
}

/// Paces Evaluate calls to the server's quota. Shared by every batch (and
/// every clone) of a client.
#[derive(Debug)]
pub(crate) struct Pacer {
    max_wait: Duration,
    on_progress: Option<OnProgress>,
    /// No call before this instant.
    not_before: Mutex<Option<Instant>>,
    /// Set at the first refusal: from then on, one call at a time.
    paced: AtomicBool,
    one_at_a_time: Semaphore,
}

impl Pacer {
    /// Waits up to `max_wait` for a refill; reports waits to `on_progress`.
    pub(crate) fn new(max_wait: Duration, on_progress: Option<OnProgress>) -> Self {
        Pacer {
            max_wait,
            on_progress,
            not_before: Mutex::new(None),
            paced: AtomicBool::new(false),
            one_at_a_time: Semaphore::new(1),
        }
    }

    /// Runs the call `f` until it is not refused by a rate limit it can
    /// wait for.
    ///
    /// # Errors
    ///
    /// The error of `f`: [`ClientError::QuotaExhausted`] when the refill is
    /// longer than `max_wait`, unknown, or keeps being refused.
    pub(crate) async fn call<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut refusals = 0;
        loop {
            let _turn = if self.paced.load(Ordering::Acquire) {
                self.one_at_a_time.acquire().await.ok()
            } else {
                None
            };
            let not_before = *self.lock();
            if let Some(at) = not_before {
                tokio::time::sleep_until(at).await;
            }
            match f().await {
                Err(ClientError::QuotaExhausted {
                    retry_after: Some(wait),
                    ..
                }) if wait <= self.max_wait && refusals < MAX_REFUSALS => {
                    refusals += 1;
                    self.refused(wait);
                }
                r => return r,
            }
        }
    }

    /// Records a refusal that refills in `wait`.
    fn refused(&self, wait: Duration) {
        self.paced.store(true, Ordering::Release);
        let now = Instant::now();
        let at = crate::rpc::later(now, wait);
        let new_wait = {
            let mut nb = self.lock();
            let already = nb.is_some_and(|t| t > now);
            *nb = Some(nb.map_or(at, |t| t.max(at)));
            !already
        };
        tracing::info!(
            wait_s = wait.as_secs(),
            "quota: waiting for the evaluation rate to refill"
        );
        if new_wait && let Some(cb) = &self.on_progress {
            (cb.0)(Progress::QuotaWait { wait });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.not_before
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn exhausted(secs: u64) -> ClientError {
        ClientError::QuotaExhausted {
            message: "quota exhausted".into(),
            retry_after: Some(Duration::from_secs(secs)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_refusal_is_waited_for_and_reported() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let pacer = Pacer::new(
            Duration::from_secs(60),
            Some(OnProgress(Arc::new(move |p| {
                sink.lock().unwrap_or_else(PoisonError::into_inner).push(p);
            }))),
        );
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let r = pacer
            .call(|| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move { if n == 0 { Err(exhausted(5)) } else { Ok(n) } }
            })
            .await;
        assert_eq!(r.ok(), Some(1));
        assert!(start.elapsed() >= Duration::from_secs(5));
        let got = events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(
            got,
            [Progress::QuotaWait {
                wait: Duration::from_secs(5)
            }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_daily_cap_is_an_error_not_a_wait() {
        let pacer = Pacer::new(Duration::from_secs(60), None);
        let r: Result<()> = pacer.call(|| async { Err(exhausted(3600)) }).await;
        assert!(
            matches!(r, Err(ClientError::QuotaExhausted { .. })),
            "{r:?}"
        );
        let r: Result<()> = pacer
            .call(|| async {
                Err(ClientError::QuotaExhausted {
                    message: "no metadata".into(),
                    retry_after: None,
                })
            })
            .await;
        assert!(
            matches!(r, Err(ClientError::QuotaExhausted { .. })),
            "{r:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn endless_refusals_end() {
        let pacer = Pacer::new(Duration::from_secs(60), None);
        let r: Result<()> = pacer.call(|| async { Err(exhausted(1)) }).await;
        assert!(
            matches!(r, Err(ClientError::QuotaExhausted { .. })),
            "{r:?}"
        );
    }
}
