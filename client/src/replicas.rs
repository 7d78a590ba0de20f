//! The servers of a client given several URLs (replicas behind no load
//! balancer, or beside one): which one the next call goes to.
//!
//! The policy is gRPC's standard `round_robin` with outlier ejection: calls
//! take the replicas in turn; one that fails a call transiently (UNAVAILABLE,
//! a broken connection) is skipped for [`EJECT`], and the call is retried at
//! once on the next one, so a replica killed mid-check costs that call one
//! retry. A replica that answers Evaluate UNIMPLEMENTED holds no key (a
//! bucket-only replica): it gets no more Evaluate calls, but still serves
//! GetIndexInfo and GetBuckets. With every replica ejected, the one back
//! soonest is tried (after the usual back-off).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long a replica that failed a call transiently is skipped.
pub(crate) const EJECT: Duration = Duration::from_secs(5);

/// What a call needs of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// GetIndexInfo or GetBuckets: any replica.
    Any,
    /// Evaluate: a replica holding the key.
    Evaluate,
}

/// One replica's health, as this client has seen it.
#[derive(Debug)]
struct Health {
    url: String,
    down_until: Mutex<Option<Instant>>,
    evaluates: AtomicBool,
}

/// The replicas of one client, in the order given.
#[derive(Debug)]
pub(crate) struct Replicas {
    all: Vec<Health>,
    next: AtomicUsize,
}

impl Replicas {
    /// `urls`, all assumed healthy.
    pub(crate) fn new(urls: &[String]) -> Self {
        Replicas {
            all: urls
                .iter()
                .map(|u| Health {
                    url: u.clone(),
                    down_until: Mutex::new(None),
                    evaluates: AtomicBool::new(true),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The URL of replica `i`.
    pub(crate) fn url(&self, i: usize) -> &str {
        &self.all[i].url
    }

    fn down_until(&self, i: usize) -> Option<Instant> {
        *self.all[i]
            .down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn serves(&self, i: usize, role: Role) -> bool {
        role == Role::Any || self.all[i].evaluates.load(Ordering::Relaxed)
    }

    /// The replica for the next call in `role`: the next in turn that is
    /// not ejected; failing that, the one back soonest.
    pub(crate) fn pick(&self, role: Role) -> usize {
        let n = self.all.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut soonest: Option<(Instant, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !self.serves(i, role) {
                continue;
            }
            match self.down_until(i) {
                Some(t) if t > now => {
                    if soonest.is_none_or(|(s, _)| t < s) {
                        soonest = Some((t, i));
                    }
                }
                _ => return i,
            }
        }
        // Every replica is ejected (or, for Evaluate, none holds the key:
        // then any one answers, with its own error).
        soonest.map_or(start % n, |(_, i)| i)
    }

    /// Whether a replica other than `i` could take a call in `role` now.
    pub(crate) fn another_ready(&self, i: usize, role: Role) -> bool {
        let now = Instant::now();
        (0..self.all.len())
            .any(|k| k != i && self.serves(k, role) && self.down_until(k).is_none_or(|t| t <= now))
    }

    /// Replica `i` failed a call transiently: skip it for [`EJECT`].
    pub(crate) fn eject(&self, i: usize) {
        if self.all.len() > 1 {
            tracing::debug!(replica = %self.all[i].url, "replica ejected");
            *self.all[i]
                .down_until
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + EJECT);
        }
    }

    /// Replica `i` answered a call: it is healthy again.
    pub(crate) fn healthy(&self, i: usize) {
        let mut d = self.all[i]
            .down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *d = None;
    }

    /// Replica `i` answered Evaluate UNIMPLEMENTED: it holds no key. Returns
    /// whether another replica may still evaluate (then the call moves on).
    pub(crate) fn buckets_only(&self, i: usize) -> bool {
        if self.all.len() < 2 {
            return false;
        }
        self.all[i].evaluates.store(false, Ordering::Relaxed);
        self.all.iter().any(|h| h.evaluates.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Replicas {
        Replicas::new(&["a".into(), "b".into(), "c".into()])
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_skips_an_ejected_replica_until_it_is_due() {
        let r = three();
        let picks: Vec<usize> = (0..6).map(|_| r.pick(Role::Any)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        r.eject(1);
        assert!(r.another_ready(1, Role::Any));
        let picks: Vec<usize> = (0..4).map(|_| r.pick(Role::Any)).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        tokio::time::advance(EJECT + Duration::from_millis(1)).await;
        let picks: Vec<usize> = (0..3).map(|_| r.pick(Role::Any)).collect();
        assert!(picks.contains(&1), "{picks:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn with_all_ejected_the_one_back_soonest_is_tried() {
        let r = three();
        r.eject(2);
        tokio::time::advance(Duration::from_millis(10)).await;
        r.eject(0);
        r.eject(1);
        assert!(!r.another_ready(0, Role::Any));
        assert_eq!(r.pick(Role::Any), 2);
        r.healthy(0);
        assert_eq!(r.pick(Role::Any), 0);
    }

    #[test]
    fn a_bucket_only_replica_gets_no_more_evaluate_calls() {
        let r = three();
        assert!(r.buckets_only(1));
        for _ in 0..6 {
            assert_ne!(r.pick(Role::Evaluate), 1);
        }
        assert!((0..3).any(|_| r.pick(Role::Any) == 1));
        assert!(r.buckets_only(0));
        assert!(!r.buckets_only(2), "no evaluator left");
        // A single server is never written off: its own error is final.
        let one = Replicas::new(&["a".into()]);
        assert!(!one.buckets_only(0));
        one.eject(0);
        assert_eq!(one.pick(Role::Any), 0);
        assert_eq!(one.down_until(0), None);
    }
}
