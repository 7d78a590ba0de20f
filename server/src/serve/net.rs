//! The connection layer under gRPC: our own accept loop, so that the server,
//! not the peer, decides how many connections exist and how long they live.
//!
//! * [`Incoming`] accepts from the listener. Each connection takes a slot of
//!   a semaphore (`max_connections`); with none free, the connection is
//!   closed at once (counted), so a flood drains instead of queueing ahead of
//!   real clients. Accept errors (EMFILE, ENFILE, ENOBUFS...) back off from
//!   10 ms, doubling to 1 s, with a rate-limited warning, instead of spinning.
//! * [`Conn`] wraps each socket and fails its reads once the connection has
//!   had no request in flight for too long: `handshake_timeout` from accept
//!   to the first request's headers (so preface, TLS, SETTINGS and HEADERS
//!   all fall under it), then `idle_timeout` after its last request ended.
//!   Bytes alone (PINGs, SETTINGS, a trickle) do not reset it: the
//!   deadline is looked at whenever the socket runs dry.
//!   The guard layer tells it when requests start and end, through the
//!   [`ConnInfo`] tonic puts in every request's extensions.
//! * [`Cooldowns`]: a source (IPv4 address or IPv6 /64) one of whose
//!   connections spent its refusal budget on calls without a valid API key
//!   has its new connections closed at accept for `source_cooldown`, before
//!   any TLS or HTTP/2 work. Trusted proxies are never cooled (the client
//!   behind them is only known from a header).
//! * [`raise_nofile_limit`] lifts the soft descriptor limit to the hard one,
//!   and [`connection_cap`] keeps `max_connections` below what is left.
//! * [`trim_after_churn`] hands freed heap back to the system after
//!   connections close: glibc keeps it otherwise (measured: a round of
//!   30,000 refused half-open streams left RSS 50 MB above its start after
//!   every connection had closed; `malloc_trim(0)` brought it back to +3 MB).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

use crate::serve::metrics::Metrics;
use crate::serve::source::{Cidr, source_key};

/// Descriptors kept free beyond the connection cap: the listeners, the index
/// map, the metrics endpoint, logs, the runtime's own.
pub(crate) const RESERVED_FDS: u64 = 64;

/// First and longest pause after an accept error.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one accept-error warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Connections handled in one poll before yielding to the runtime.
const ACCEPT_BUDGET: usize = 64;

/// Sources cooling down at most at once: past it, expired ones are dropped
/// and, if none has expired, a new source is not cooled (memory stays
/// bounded whatever the number of attacking addresses).
const MAX_COOLDOWNS: usize = 65_536;

/// Sources whose new connections are closed at accept for a while: those one
/// of whose connections spent its [`REFUSAL_BUDGET`] on calls without a
/// valid API key (docs/SECURITY.md, "What the server withstands").
#[derive(Debug)]
pub(crate) struct Cooldowns {
    period: Duration,
    exempt: Vec<Cidr>,
    until: Mutex<HashMap<IpAddr, Instant>>,
    metrics: Arc<Metrics>,
}

impl Cooldowns {
    /// Cool-downs of `period` (zero: none), never for a peer in `exempt`
    /// (the trusted proxies).
    pub(crate) fn new(period: Duration, exempt: Vec<Cidr>, metrics: Arc<Metrics>) -> Self {
        Cooldowns {
            period,
            exempt,
            until: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Whether connections from `ip` are closed at accept now.
    pub(crate) fn holds(&self, ip: IpAddr) -> bool {
        if self.period.is_zero() {
            return false;
        }
        let key = source_key(ip);
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        match until.get(&key) {
            // A trusted proxy in a cooled /64 (an attacker beside it) is
            // still served: only a hit pays for the exemption check.
            Some(&t) if t > Instant::now() => !self.exempt.iter().any(|c| c.contains(ip)),
            Some(_) => {
                until.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Cools `ip`'s source down for the period from now.
    pub(crate) fn start(&self, ip: IpAddr) {
        if self.period.is_zero() || self.exempt.iter().any(|c| c.contains(ip)) {
            return;
        }
        let now = Instant::now();
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if until.len() >= MAX_COOLDOWNS {
            until.retain(|_, t| *t > now);
        }
        if until.len() < MAX_COOLDOWNS {
            until.insert(source_key(ip), now + self.period);
            self.metrics.cooldown_started();
        }
    }
}

/// How long a connection may go without a request in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// From accept to the first request's headers.
    pub(crate) handshake: Duration,
    /// From the end of the last request to the next one's headers.
    pub(crate) idle: Duration,
}

/// The accepted connections of a listener, for `serve_with_incoming_shutdown`.
/// Dropping it closes the listener.
#[derive(Debug)]
pub(crate) struct Incoming {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    limits: ConnLimits,
    cooldowns: Arc<Cooldowns>,
    metrics: Arc<Metrics>,
    backoff: Option<Pin<Box<Sleep>>>,
    delay: Duration,
    last_warn: Option<Instant>,
    errors_since_warn: u64,
}

impl Incoming {
    /// Accepts from `listener`, at most `max_connections` open at once, none
    /// from a source `cooldowns` holds.
    pub(crate) fn new(
        listener: TcpListener,
        max_connections: usize,
        limits: ConnLimits,
        cooldowns: Arc<Cooldowns>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Incoming {
            listener,
            slots: Arc::new(Semaphore::new(max_connections)),
            limits,
            cooldowns,
            metrics,
            backoff: None,
            delay: Duration::ZERO,
            last_warn: None,
            errors_since_warn: 0,
        }
    }

    /// Schedules the next accept after a pause, and warns (rate-limited).
    fn back_off(&mut self, e: &io::Error) {
        self.metrics.accept_error();
        self.delay = (self.delay * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        self.errors_since_warn += 1;
        let now = Instant::now();
        if self
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            tracing::warn!(
                error = %e,
                errors = self.errors_since_warn,
                pause_ms = self.delay.as_millis() as u64,
                "accept failed; pausing accepts (at the descriptor limit? see docs/SECURITY.md)"
            );
            self.last_warn = Some(now);
            self.errors_since_warn = 0;
        }
        self.backoff = Some(Box::pin(tokio::time::sleep(self.delay)));
    }
}

/// Errors of one half-made connection, not of the listener: the peer went
/// away between SYN and accept. Skip them without pausing.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        for _ in 0..ACCEPT_BUDGET {
            if let Some(pause) = this.backoff.as_mut() {
                ready!(pause.as_mut().poll(cx));
                this.backoff = None;
            }
            match ready!(this.listener.poll_accept(cx)) {
                Ok((io, peer)) => {
                    this.delay = Duration::ZERO;
                    if this.cooldowns.holds(peer.ip()) {
                        // No TLS, no HTTP/2: the source spent its chance.
                        this.metrics.connection_cooled();
                        drop(io);
                        continue;
                    }
                    let Ok(permit) = this.slots.clone().try_acquire_owned() else {
                        // Full: close it now rather than let it wait.
                        this.metrics.connection_refused();
                        drop(io);
                        continue;
                    };
                    // Small gRPC messages must not wait for Nagle.
                    let _ = io.set_nodelay(true);
                    let conn = Conn::new(
                        io,
                        peer,
                        permit,
                        this.limits,
                        this.cooldowns.clone(),
                        this.metrics.clone(),
                    );
                    return Poll::Ready(Some(Ok(conn)));
                }
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => this.back_off(&e),
            }
        }
        // A flood of refused connections: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Where a connection stands, shared by its socket wrapper ([`Conn`]) and
/// the requests on it ([`ConnInfo`]).
#[derive(Debug)]
pub(crate) struct ConnState {
    limits: ConnLimits,
    /// Requests in flight (until their response body is dropped).
    active: AtomicUsize,
    /// Whether any request has arrived.
    started: AtomicBool,
    /// When the connection was accepted, or its last request ended.
    idle_since: Mutex<Instant>,
    /// The connection task, woken when the last request ends so that it
    /// arms the idle deadline.
    reader: Mutex<Option<Waker>>,
    /// Calls refused at admission on this connection.
    refused: AtomicU32,
    /// Of those, refused for want of a valid API key.
    unauthenticated: AtomicU32,
}

/// Calls a connection may have refused at admission (no or a bad key, a
/// spent quota, an undecodable message) before it is closed: a flood of
/// refused calls then costs its sender a new connection every
/// `REFUSAL_BUDGET` calls, and the calls it queued behind them are dropped
/// unread instead of answered one by one ahead of other connections' work.
/// An honest client is refused a few times at most and reconnects anyway.
pub(crate) const REFUSAL_BUDGET: u32 = 32;

/// Why a connection was closed by its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// No request arrived within `handshake_timeout` of accept.
    Handshake,
    /// No request arrived within `idle_timeout` of the last one.
    Idle,
    /// [`REFUSAL_BUDGET`] calls were refused on it.
    Refusals,
}

impl Expiry {
    /// The `phase` label of `breachcheck_connections_timed_out_total`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Expiry::Handshake => "handshake",
            Expiry::Idle => "idle",
            Expiry::Refusals => "refusals",
        }
    }
}

impl ConnState {
    fn new(limits: ConnLimits) -> Self {
        ConnState {
            limits,
            active: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            reader: Mutex::new(None),
            refused: AtomicU32::new(0),
            unauthenticated: AtomicU32::new(0),
        }
    }

    /// Whether the connection has spent its [`REFUSAL_BUDGET`].
    fn doomed(&self) -> bool {
        self.refused.load(Ordering::SeqCst) >= REFUSAL_BUDGET
    }

    /// When the connection expires, if no request is in flight.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        if self.started.load(Ordering::SeqCst) {
            Some((since + self.limits.idle, Expiry::Idle))
        } else {
            Some((since + self.limits.handshake, Expiry::Handshake))
        }
    }

    fn register(&self, waker: &Waker) {
        let mut r = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        match r.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *r = Some(waker.clone()),
        }
    }

    fn ended(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            let waker = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// The connection facts tonic puts in each request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// The peer's address.
    pub(crate) remote: Option<SocketAddr>,
    state: Arc<ConnState>,
}

impl ConnInfo {
    /// Counts a call refused at admission (`unauthenticated`: for want of a
    /// valid API key); the one that spends the [`REFUSAL_BUDGET`] wakes the
    /// connection task, which then closes it.
    pub(crate) fn refused(&self, unauthenticated: bool) {
        if unauthenticated {
            self.state.unauthenticated.fetch_add(1, Ordering::SeqCst);
        }
        if self.state.refused.fetch_add(1, Ordering::SeqCst) + 1 == REFUSAL_BUDGET {
            let waker = self
                .state
                .reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Counts a request in flight on this connection until the guard drops.
    pub(crate) fn request_started(&self) -> RequestGuard {
        self.state.active.fetch_add(1, Ordering::SeqCst);
        self.state.started.store(true, Ordering::SeqCst);
        RequestGuard(self.state.clone())
    }
}

/// A request in flight (see [`ConnInfo::request_started`]).
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// A connection's slot under `max_connections`, and its place in the gauge.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// An accepted socket whose reads fail once it has gone too long without a
/// request in flight (see the module docs).
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    remote: Option<SocketAddr>,
    state: Arc<ConnState>,
    timer: Pin<Box<Sleep>>,
    /// Whether the last read returned bytes (see `poll_read`).
    fresh: bool,
    expired: bool,
    cooldowns: Arc<Cooldowns>,
    slot: Slot,
}

impl Conn {
    fn new(
        io: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        limits: ConnLimits,
        cooldowns: Arc<Cooldowns>,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.connection_opened();
        let state = Arc::new(ConnState::new(limits));
        let first = Instant::now() + limits.handshake;
        Conn {
            io,
            remote: Some(peer),
            state,
            timer: Box::pin(tokio::time::sleep_until(first)),
            fresh: false,
            expired: false,
            cooldowns,
            slot: Slot {
                _permit: permit,
                metrics,
            },
        }
    }

    fn expire(&mut self, why: Expiry) -> Poll<io::Result<()>> {
        if !self.expired {
            self.expired = true;
            self.slot.metrics.connection_timed_out(why);
            tracing::debug!(peer = ?self.remote, phase = why.name(), "closing a connection (its deadline passed or its refusals are spent)");
            // A budget spent on calls without a valid key: the source cools down.
            if why == Expiry::Refusals
                && self.state.unauthenticated.load(Ordering::SeqCst) >= REFUSAL_BUDGET
                && let Some(peer) = self.remote
            {
                self.cooldowns.start(peer.ip());
            }
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no request in flight within the connection's deadline",
        )))
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            remote: self.remote,
            state: self.state.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Register before looking, so a request ending in between wakes us.
        this.state.register(cx.waker());
        if this.state.doomed() {
            // Whatever the peer queued behind its refused calls is dropped
            // unread.
            return this.expire(Expiry::Refusals);
        }
        if let Poll::Ready(r) = Pin::new(&mut this.io).poll_read(cx, buf) {
            this.fresh = true;
            return Poll::Ready(r);
        }
        // Quiet now. The deadline is looked at only here: bytes waiting in
        // the socket are read first, so a server slow to read (busy, not
        // the peer's fault) does not expire a connection whose request
        // arrived in time.
        let fresh = std::mem::replace(&mut this.fresh, false);
        let Some((at, why)) = this.state.deadline() else {
            return Poll::Pending;
        };
        if Instant::now() >= at {
            if !fresh {
                return this.expire(why);
            }
            // Bytes came in on the last read: let the connection act on
            // them first (a request among them ends the quiet), then look
            // again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if this.timer.deadline() != at {
            this.timer.as_mut().reset(at);
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How often [`trim_after_churn`] looks.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Every [`TRIM_EVERY`], if connections were closed since the last look,
/// returns the allocator's free memory to the system (glibc `malloc_trim`;
/// elsewhere nothing), on a blocking thread. Runs until dropped.
pub(crate) async fn trim_after_churn(metrics: Arc<Metrics>) {
    let mut seen = metrics.connections_closed();
    loop {
        tokio::time::sleep(TRIM_EVERY).await;
        let now = metrics.connections_closed();
        if now == seen {
            continue;
        }
        seen = now;
        let t = std::time::Instant::now();
        if tokio::task::spawn_blocking(release_free_memory)
            .await
            .is_ok()
        {
            tracing::debug!(took_us = t.elapsed().as_micros() as u64, "heap trimmed");
        }
    }
}

/// Returns free heap pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers and only releases free pages of
    // glibc's own heaps; it is thread-safe (it locks each arena in turn).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// The descriptor limit, soft and hard, before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit found at start.
    pub soft_before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit (the most the soft limit can be raised to).
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so the connection cap,
/// not a default of 1024 descriptors, bounds the server; logs both. Returns
/// the limits (`None` where they cannot be read).
pub fn raise_nofile_limit() -> Option<NofileLimit> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        // Linux caps descriptors at fs.nr_open (2^20 by default) even when
        // the hard limit reads as unlimited.
        const UNLIMITED: u64 = 1 << 20;
        let before = getrlimit(Resource::Nofile);
        let hard = before.maximum.unwrap_or(UNLIMITED);
        let soft_before = before.current.unwrap_or(UNLIMITED);
        let mut soft = soft_before;
        if soft_before < hard {
            let raised = Rlimit {
                current: Some(hard),
                maximum: before.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => soft = hard,
                Err(e) => tracing::warn!(error = %e, "could not raise the descriptor limit"),
            }
        }
        tracing::info!(
            soft_before,
            soft,
            hard,
            "descriptor limit (RLIMIT_NOFILE); raise the hard limit with LimitNOFILE= (systemd) or ulimit -Hn"
        );
        Some(NofileLimit {
            soft_before,
            soft,
            hard,
        })
    }
    #[cfg(not(unix))]
    None
}

/// The soft descriptor limit now (`None` where unknown).
fn soft_nofile() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit};
        getrlimit(Resource::Nofile).current
    }
    #[cfg(not(unix))]
    None
}

/// `max_connections`, lowered to fit under the soft descriptor limit with
/// [`RESERVED_FDS`] to spare (logged when lowered), and at least 1.
pub(crate) fn connection_cap(max_connections: u32) -> usize {
    let wanted = u64::from(max_connections);
    let Some(soft) = soft_nofile() else {
        return wanted as usize;
    };
    let fits = soft.saturating_sub(RESERVED_FDS).max(1);
    if wanted > fits {
        tracing::warn!(
            max_connections = wanted,
            descriptor_limit = soft,
            cap = fits,
            "max_connections lowered to fit the descriptor limit"
        );
    }
    usize::try_from(wanted.min(fits)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cooled source is held for the period, per IPv4 address or IPv6
    /// /64, never when it is a trusted proxy or the period is zero.
    #[tokio::test(start_paused = true)]
    async fn cooldowns_hold_a_source_for_the_period_only() {
        let metrics = Arc::new(Metrics::default());
        let proxy = Cidr::parse("10.0.0.0/8").expect("cidr");
        let c = Cooldowns::new(Duration::from_secs(10), vec![proxy], metrics.clone());
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        c.start(ip("192.0.2.1"));
        c.start(ip("2001:db8:1:2::7"));
        c.start(ip("10.1.2.3"));
        assert!(c.holds(ip("192.0.2.1")));
        assert!(
            c.holds(ip("::ffff:192.0.2.1")),
            "IPv4-mapped is the same source"
        );
        assert!(!c.holds(ip("192.0.2.2")));
        assert!(c.holds(ip("2001:db8:1:2::99")), "same /64");
        assert!(!c.holds(ip("2001:db8:1:3::7")));
        assert!(!c.holds(ip("10.1.2.3")), "a trusted proxy is never cooled");
        // Nor is one that shares a cooled /64 with an attacker.
        let proxy6 = Cidr::parse("2001:db8:5:6::1/128").expect("cidr");
        let c6 = Cooldowns::new(Duration::from_secs(10), vec![proxy6], metrics.clone());
        c6.start(ip("2001:db8:5:6::bad"));
        assert!(c6.holds(ip("2001:db8:5:6::bad2")), "the attacker's /64");
        assert!(!c6.holds(ip("2001:db8:5:6::1")), "the proxy in it");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!c.holds(ip("192.0.2.1")), "the cool-down ended");
        let off = Cooldowns::new(Duration::ZERO, vec![], metrics);
        off.start(ip("192.0.2.1"));
        assert!(!off.holds(ip("192.0.2.1")));
    }

    fn limits() -> ConnLimits {
        ConnLimits {
            handshake: Duration::from_secs(2),
            idle: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_is_handshake_then_none_in_flight_then_idle() {
        let st = Arc::new(ConnState::new(limits()));
        let info = ConnInfo {
            remote: None,
            state: st.clone(),
        };
        let t0 = Instant::now();
        assert_eq!(
            st.deadline(),
            Some((t0 + Duration::from_secs(2), Expiry::Handshake))
        );
        let g = info.request_started();
        let g2 = info.request_started();
        assert_eq!(st.deadline(), None);
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(g);
        assert_eq!(st.deadline(), None);
        drop(g2);
        let t1 = Instant::now();
        assert_eq!(
            st.deadline(),
            Some((t1 + Duration::from_secs(5), Expiry::Idle))
        );
    }

    #[test]
    fn per_connection_accept_errors_do_not_pause() {
        assert!(is_per_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        // EMFILE is the listener's problem: pause.
        assert!(!is_per_connection(&io::Error::from_raw_os_error(24)));
    }

    #[test]
    fn the_cap_fits_under_the_descriptor_limit() {
        let soft = soft_nofile().expect("unix");
        assert!(connection_cap(u32::MAX) as u64 <= soft.saturating_sub(RESERVED_FDS).max(1));
        assert_eq!(connection_cap(1), 1);
    }
}
