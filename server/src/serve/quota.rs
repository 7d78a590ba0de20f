//! Per-key quotas, behind the [`QuotaStore`] trait.
//!
//! Rate limiting is the security boundary of an OPRF over phone numbers: every
//! evaluated element is one guess at the numbering plan. Evaluations are
//! counted in elements with a token bucket (burst) and a per-UTC-day cap;
//! bucket downloads are capped in bytes per day. Every call of a key is also
//! counted against a request rate (a token bucket of calls), charged when its
//! headers arrive, before its body is read: a refused or invalid call costs
//! its sender a request like any other, so neither spent keys nor bad batches
//! buy unbounded server work.
//!
//! The state lives behind [`QuotaStore`], so a shared backend (Redis, for
//! several replicas) can replace the in-memory one without touching the service.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::error::Refusal;
use crate::serve::config::Quota;

/// Who is calling: an API key's name, or an anonymous client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The key's configured name, or `anonymous`: what logs and metrics
    /// show (never an address).
    pub name: String,
    /// For an anonymous caller, its address block
    /// (`source::quota_subject`): each is charged on its own.
    pub subject: Option<String>,
    /// Its quota.
    pub quota: QuotaKey,
}

impl Caller {
    /// The caller whose quota is charged: the key's name, or
    /// `anonymous/<address block>`.
    pub fn quota_id(&self) -> String {
        match &self.subject {
            Some(s) => format!("{}/{s}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Most quota states kept in memory. Past it, states that are refilled and
/// unused today are dropped (at most once a second: the scan is linear);
/// if that frees nothing, new anonymous subjects share one of
/// [`OVERFLOW_STATES`] states by a hash of their address, so many addresses
/// can neither grow memory nor lock every newcomer into one state (and all
/// anonymous callers together are bounded by `anonymous_total` anyway).
const MAX_QUOTA_STATES: usize = 100_000;
/// The states new anonymous subjects share once memory is full.
const OVERFLOW_STATES: u8 = 64;

/// A hashable copy of a [`Quota`] (floats as bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaKey {
    per_second_bits: u64,
    burst: u64,
    per_day: u64,
    bytes_per_day: u64,
    requests_per_second_bits: u64,
    request_burst: u64,
    pir_per_day: u64,
}

impl From<Quota> for QuotaKey {
    fn from(q: Quota) -> Self {
        QuotaKey {
            per_second_bits: q.elements_per_second.to_bits(),
            burst: q.burst,
            per_day: q.elements_per_day,
            bytes_per_day: q.bucket_bytes_per_day,
            requests_per_second_bits: q.requests_per_second.to_bits(),
            request_burst: q.request_burst,
            pir_per_day: q.pir_answers_per_day,
        }
    }
}

impl QuotaKey {
    /// Elements per second.
    pub fn per_second(&self) -> f64 {
        f64::from_bits(self.per_second_bits)
    }

    /// Calls per second.
    pub fn requests_per_second(&self) -> f64 {
        f64::from_bits(self.requests_per_second_bits)
    }

    /// Element burst.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Call burst.
    pub fn request_burst(&self) -> u64 {
        self.request_burst
    }

    /// Elements per UTC day.
    pub fn per_day(&self) -> u64 {
        self.per_day
    }

    /// Bucket bytes per UTC day.
    pub fn bytes_per_day(&self) -> u64 {
        self.bytes_per_day
    }

    /// PIR answers per UTC day.
    pub fn pir_per_day(&self) -> u64 {
        self.pir_per_day
    }
}

/// The `limit` of a refusal by the daily PIR cap.
pub(crate) const PIR_CAP: &str = "daily PIR answer cap";

/// The `limit` of a request-rate refusal.
pub(crate) const REQUEST_RATE: &str = "request rate (burst)";

/// Which RPC a call is, for [`QuotaStore::charge_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// GetIndexInfo.
    IndexInfo,
    /// Evaluate: also refused up front when not one element is left.
    Evaluate,
    /// GetBuckets, and GetPirSetup (bytes, like a download).
    Buckets,
    /// PirQuery (its answers are charged on their own, before any work).
    Pir,
}

/// Why a call was refused by its quota, and when it may succeed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exhausted {
    /// Which limit.
    pub limit: &'static str,
    /// Time until enough quota is back.
    pub retry_after: Duration,
}

impl From<Exhausted> for Refusal {
    fn from(e: Exhausted) -> Self {
        Refusal::QuotaExhausted {
            what: e.limit,
            retry_after: e.retry_after,
        }
    }
}

/// Why a quota store did not charge a call.
#[derive(Debug, Clone, PartialEq)]
pub enum QuotaError {
    /// A limit does not allow the call now.
    Exhausted(Exhausted),
    /// The store could not be asked (a shared store unreachable or too
    /// slow): the call is refused, never let through uncounted (fail closed).
    Unavailable(String),
}

impl From<Exhausted> for QuotaError {
    fn from(e: Exhausted) -> Self {
        QuotaError::Exhausted(e)
    }
}

impl From<QuotaError> for Refusal {
    fn from(e: QuotaError) -> Self {
        match e {
            QuotaError::Exhausted(e) => e.into(),
            QuotaError::Unavailable(_) => Refusal::QuotaUnavailable,
        }
    }
}

/// The answer of a [`QuotaStore`] charge, to be awaited.
pub type Charge<'a> = Pin<Box<dyn Future<Output = Result<(), QuotaError>> + Send + 'a>>;

/// Storage of quota state. The in-memory [`MemoryQuotas`] serves one process;
/// [`RedisQuotas`](crate::RedisQuotas) shares the state between replicas and
/// keeps it across restarts.
pub trait QuotaStore: Send + Sync + std::fmt::Debug {
    /// Charges one call to `caller`'s request rate, before its body is read.
    /// An [`Call::Evaluate`] is also refused (still charged) when `caller`
    /// could not be charged even one element now, so a spent key's batches
    /// are refused before they are read or decoded.
    ///
    /// # Errors
    ///
    /// [`QuotaError::Exhausted`] when the request rate, or for Evaluate the
    /// element burst or daily cap, does not allow the call;
    /// [`QuotaError::Unavailable`] when the store cannot be asked.
    fn charge_request<'a>(&'a self, caller: &'a Caller, call: Call) -> Charge<'a>;

    /// Charges `n` elements to `caller`, or says why not (charging nothing).
    /// A batch larger than the burst is refused at once, charging nothing.
    ///
    /// # Errors
    ///
    /// [`QuotaError::Exhausted`] when the burst or the daily cap does not
    /// allow `n`; [`QuotaError::Unavailable`] when the store cannot be asked.
    fn charge_elements<'a>(&'a self, caller: &'a Caller, n: u64) -> Charge<'a>;

    /// Charges `bytes` of bucket download to `caller`.
    ///
    /// # Errors
    ///
    /// [`QuotaError::Exhausted`] when the daily byte cap does not allow it;
    /// [`QuotaError::Unavailable`] when the store cannot be asked.
    fn charge_bytes<'a>(&'a self, caller: &'a Caller, bytes: u64) -> Charge<'a>;

    /// Charges `n` PIR answers to `caller` (each about one pass over the
    /// database: its own unit, apart from elements and bytes).
    ///
    /// # Errors
    ///
    /// [`QuotaError::Exhausted`] when the daily PIR cap does not allow it;
    /// [`QuotaError::Unavailable`] when the store cannot be asked.
    fn charge_pir<'a>(&'a self, caller: &'a Caller, n: u64) -> Charge<'a>;
}

#[derive(Debug)]
struct KeyState {
    /// The quota this state is charged under (its owner's rates).
    quota: QuotaKey,
    tokens: f64,
    request_tokens: f64,
    updated: Instant,
    day: u64,
    elements_today: u64,
    bytes_today: u64,
    pir_today: u64,
}

impl KeyState {
    /// Whether dropping this state would give its owner anything back: a
    /// bucket not yet refilled at its own rates, or counts of today.
    fn in_use(&self, now: Instant, day: u64) -> bool {
        let q = &self.quota;
        let dt = now.duration_since(self.updated).as_secs_f64();
        let refilled = self.tokens + dt * q.per_second() >= q.burst as f64
            && self.request_tokens + dt * q.requests_per_second() >= q.request_burst as f64;
        !refilled
            || (self.day == day
                && (self.elements_today > 0 || self.bytes_today > 0 || self.pir_today > 0))
    }
}

/// The states, and when they were last pruned.
#[derive(Debug, Default)]
struct States {
    map: HashMap<String, KeyState>,
    pruned: Option<Instant>,
}

/// In-process quota state. Time comes from `tokio::time::Instant`, so tests
/// can pause and advance it; the UTC day is derived from the same clock.
#[derive(Debug)]
pub struct MemoryQuotas {
    state: Mutex<States>,
    start: Instant,
    start_unix: Duration,
}

impl Default for MemoryQuotas {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQuotas {
    /// Empty state.
    pub fn new() -> Self {
        MemoryQuotas {
            state: Mutex::new(States::default()),
            start: Instant::now(),
            start_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    fn unix_now(&self) -> Duration {
        self.start_unix + self.start.elapsed()
    }

    fn with_state<T>(&self, caller: &Caller, f: impl FnOnce(&mut KeyState, Duration) -> T) -> T {
        let now_unix = self.unix_now();
        let day = now_unix.as_secs() / 86_400;
        let mut states = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let States { map, pruned } = &mut *states;
        let mut id = caller.quota_id();
        if map.len() >= MAX_QUOTA_STATES && !map.contains_key(&id) {
            let now = Instant::now();
            if pruned.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                map.retain(|_, st| st.in_use(now, day));
                *pruned = Some(now);
            }
            if map.len() >= MAX_QUOTA_STATES
                && let Some(subject) = &caller.subject
            {
                let slot = blake3::hash(subject.as_bytes()).as_bytes()[0] % OVERFLOW_STATES;
                id = format!("{}/overflow/{slot}", caller.name);
            }
        }
        let st = map.entry(id).or_insert_with(|| KeyState {
            quota: caller.quota,
            tokens: caller.quota.burst as f64,
            request_tokens: caller.quota.request_burst as f64,
            updated: Instant::now(),
            day,
            elements_today: 0,
            bytes_today: 0,
            pir_today: 0,
        });
        st.quota = caller.quota;
        // Refill the bucket and roll the day over.
        let now = Instant::now();
        let dt = now.duration_since(st.updated).as_secs_f64();
        st.tokens = (st.tokens + dt * caller.quota.per_second()).min(caller.quota.burst as f64);
        st.request_tokens = (st.request_tokens + dt * caller.quota.requests_per_second())
            .min(caller.quota.request_burst as f64);
        st.updated = now;
        if st.day != day {
            st.day = day;
            st.elements_today = 0;
            st.bytes_today = 0;
            st.pir_today = 0;
        }
        let to_midnight = Duration::from_secs((day + 1) * 86_400).saturating_sub(now_unix);
        f(st, to_midnight)
    }
}

/// How long `missing` tokens take to refill at `rate` per second; a zero
/// rate, or one so tiny that the wait overflows a `Duration`, gives
/// `fallback` (the next daily reset) instead of a panic.
fn wait_for(missing: f64, rate: f64, fallback: Duration) -> Duration {
    if rate > 0.0 {
        Duration::try_from_secs_f64(missing / rate).unwrap_or(fallback)
    } else {
        fallback
    }
}

impl QuotaStore for MemoryQuotas {
    fn charge_request<'a>(&'a self, caller: &'a Caller, call: Call) -> Charge<'a> {
        Box::pin(std::future::ready(
            self.request(caller, call).map_err(QuotaError::from),
        ))
    }

    fn charge_elements<'a>(&'a self, caller: &'a Caller, n: u64) -> Charge<'a> {
        Box::pin(std::future::ready(
            self.elements(caller, n).map_err(QuotaError::from),
        ))
    }

    fn charge_bytes<'a>(&'a self, caller: &'a Caller, bytes: u64) -> Charge<'a> {
        Box::pin(std::future::ready(
            self.bytes(caller, bytes).map_err(QuotaError::from),
        ))
    }

    fn charge_pir<'a>(&'a self, caller: &'a Caller, n: u64) -> Charge<'a> {
        Box::pin(std::future::ready(
            self.pir(caller, n).map_err(QuotaError::from),
        ))
    }
}

impl MemoryQuotas {
    fn request(&self, caller: &Caller, call: Call) -> Result<(), Exhausted> {
        let q = caller.quota;
        self.with_state(caller, |st, to_midnight| {
            if st.request_tokens < 1.0 {
                let rate = q.requests_per_second();
                let retry = wait_for(1.0 - st.request_tokens, rate, to_midnight);
                return Err(Exhausted {
                    limit: REQUEST_RATE,
                    retry_after: retry,
                });
            }
            st.request_tokens -= 1.0;
            if call == Call::Evaluate {
                if st.elements_today >= q.per_day {
                    return Err(Exhausted {
                        limit: "daily evaluation cap",
                        retry_after: to_midnight,
                    });
                }
                if st.tokens < 1.0 {
                    let retry = wait_for(1.0 - st.tokens, q.per_second(), to_midnight);
                    return Err(Exhausted {
                        limit: "evaluation rate (burst)",
                        retry_after: retry,
                    });
                }
            }
            Ok(())
        })
    }

    fn elements(&self, caller: &Caller, n: u64) -> Result<(), Exhausted> {
        let q = caller.quota;
        self.with_state(caller, |st, to_midnight| {
            if st.elements_today.saturating_add(n) > q.per_day {
                return Err(Exhausted {
                    limit: "daily evaluation cap",
                    retry_after: to_midnight,
                });
            }
            if n as f64 > st.tokens {
                let retry = if n > q.burst {
                    // Can never fit in one burst: the batch must be smaller.
                    to_midnight
                } else {
                    wait_for(n as f64 - st.tokens, q.per_second(), to_midnight)
                };
                return Err(Exhausted {
                    limit: "evaluation rate (burst)",
                    retry_after: retry,
                });
            }
            st.tokens -= n as f64;
            st.elements_today += n;
            Ok(())
        })
    }

    fn bytes(&self, caller: &Caller, bytes: u64) -> Result<(), Exhausted> {
        let cap = caller.quota.bytes_per_day;
        self.daily(caller, bytes, cap, "daily bucket download cap", |st| {
            &mut st.bytes_today
        })
    }

    fn pir(&self, caller: &Caller, n: u64) -> Result<(), Exhausted> {
        let cap = caller.quota.pir_per_day;
        self.daily(caller, n, cap, PIR_CAP, |st| &mut st.pir_today)
    }

    /// Charges `n` to the daily counter `counter` picks, capped at `cap`
    /// (refused as `limit`, charging nothing, until the next UTC day).
    fn daily(
        &self,
        caller: &Caller,
        n: u64,
        cap: u64,
        limit: &'static str,
        counter: fn(&mut KeyState) -> &mut u64,
    ) -> Result<(), Exhausted> {
        self.with_state(caller, |st, to_midnight| {
            let today = counter(st);
            if today.saturating_add(n) > cap {
                return Err(Exhausted {
                    limit,
                    retry_after: to_midnight,
                });
            }
            *today += n;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tiny_rate_never_panics() {
        use super::*;
        let fallback = Duration::from_secs(7);
        assert_eq!(wait_for(1.0, 1e-300, fallback), fallback);
        assert_eq!(wait_for(1.0, 0.0, fallback), fallback);
        assert_eq!(wait_for(2.0, 4.0, fallback), Duration::from_millis(500));
    }

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn every_call_costs_a_request_and_spent_keys_are_refused_up_front() {
        let q = Quota {
            elements_per_second: 1.0,
            burst: 10,
            elements_per_day: 10,
            bucket_bytes_per_day: 1000,
            pir_answers_per_day: 1000,
            requests_per_second: 2.0,
            request_burst: 3,
        };
        let m = MemoryQuotas::new();
        let c = caller(q);
        for _ in 0..3 {
            assert!(m.request(&c, Call::Buckets).is_ok());
        }
        let e = m.request(&c, Call::Buckets).unwrap_err();
        assert_eq!(e.limit, "request rate (burst)");
        assert_eq!(e.retry_after, Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(m.request(&c, Call::Evaluate).is_ok());
        assert!(m.elements(&c, 10).is_ok());
        // The daily cap is spent: Evaluate is refused before its body,
        // and the refusal still costs a request.
        tokio::time::advance(Duration::from_secs(10)).await;
        let e = m.request(&c, Call::Evaluate).unwrap_err();
        assert_eq!(e.limit, "daily evaluation cap");
        assert!(m.request(&c, Call::Buckets).is_ok());
        assert!(m.request(&c, Call::Buckets).is_ok());
        assert!(m.request(&c, Call::IndexInfo).is_err());
    }

    fn caller(q: Quota) -> Caller {
        Caller {
            name: "t".into(),
            subject: None,
            quota: q.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_runs_out_and_refills_with_time() {
        let q = Quota {
            elements_per_second: 10.0,
            burst: 100,
            elements_per_day: 1_000_000,
            bucket_bytes_per_day: 1000,
            pir_answers_per_day: 1000,
            ..Quota::default()
        };
        let m = MemoryQuotas::new();
        let c = caller(q);
        assert!(m.elements(&c, 100).is_ok());
        let e = m.elements(&c, 50).unwrap_err();
        assert_eq!(e.limit, "evaluation rate (burst)");
        assert_eq!(e.retry_after.as_secs(), 5);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(m.elements(&c, 50).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn daily_cap_resets_at_the_next_utc_day() {
        let q = Quota {
            elements_per_second: 1e9,
            burst: 1_000_000,
            elements_per_day: 10,
            bucket_bytes_per_day: 100,
            pir_answers_per_day: 1000,
            ..Quota::default()
        };
        let m = MemoryQuotas::new();
        let c = caller(q);
        assert!(m.elements(&c, 10).is_ok());
        let e = m.elements(&c, 1).unwrap_err();
        assert_eq!(e.limit, "daily evaluation cap");
        assert!(m.bytes(&c, 100).is_ok());
        assert!(m.bytes(&c, 1).is_err());
        tokio::time::advance(e.retry_after + Duration::from_secs(1)).await;
        assert!(m.elements(&c, 10).is_ok());
        assert!(m.bytes(&c, 100).is_ok());
    }
}
