//! Prometheus metrics, kept in a few atomics and maps and rendered in the text
//! exposition format on `GET /metrics`, and the tower layer that observes
//! every BreachCheck call (in-flight gauge, latency, count by RPC and code).
//! Labels never hold numbers, elements or tokens: only RPC names, status
//! codes and API-key names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Latency histogram bucket bounds, seconds.
const BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BOUNDS.len()],
    sum: f64,
    count: u64,
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    quota_rejections: Mutex<BTreeMap<String, u64>>,
    elements_evaluated: AtomicU64,
    bucket_bytes_sent: AtomicU64,
    pir_answers: AtomicU64,
    pir_micros: AtomicU64,
    reloads: AtomicU64,
    quota_store_errors: AtomicU64,
    in_flight: AtomicU64,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    connections_open: AtomicU64,
    connections_closed: AtomicU64,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    connections_cooled: AtomicU64,
    cooldowns_started: AtomicU64,
    connections_timed_out: Mutex<BTreeMap<&'static str, u64>>,
    accept_errors: AtomicU64,
}

impl Metrics {
    fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// RPCs started and not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records one answered RPC.
    fn observe(&self, rpc: &'static str, code: tonic::Code, elapsed: Duration) {
        let code = code_name(code);
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((rpc, code)).or_default() += 1;
        }
        if let Ok(mut m) = self.latency.lock() {
            let h = m.entry(rpc).or_default();
            let s = elapsed.as_secs_f64();
            for (i, b) in BOUNDS.iter().enumerate() {
                if s <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += s;
            h.count += 1;
        }
    }

    /// Counts evaluated elements.
    pub(crate) fn add_elements(&self, n: u64) {
        self.elements_evaluated.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts bucket payload bytes sent.
    pub(crate) fn add_bucket_bytes(&self, n: u64) {
        self.bucket_bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one PIR answer and the time it took (no row: the server has
    /// none).
    pub(crate) fn add_pir_answer(&self, took: Duration) {
        self.pir_answers.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.pir_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts a quota rejection for an API key name.
    pub(crate) fn quota_rejected(&self, key: &str) {
        if let Ok(mut m) = self.quota_rejections.lock() {
            *m.entry(key.to_owned()).or_default() += 1;
        }
    }

    /// Counts a call refused because the quota store could not be asked.
    pub(crate) fn quota_store_error(&self) {
        self.quota_store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls refused because the quota store could not be asked.
    pub fn quota_store_errors(&self) -> u64 {
        self.quota_store_errors.load(Ordering::Relaxed)
    }

    /// Counts an index reload.
    pub(crate) fn reloaded(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused call by its reason ([`Refusal::reason`](crate::Refusal::reason)).
    pub(crate) fn refused(&self, reason: &'static str) {
        if let Ok(mut m) = self.refusals.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// Counts an accepted connection, open until [`Metrics::connection_closed`].
    pub(crate) fn connection_opened(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed.
    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
        self.connections_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Accepted connections closed since start.
    pub(crate) fn connections_closed(&self) -> u64 {
        self.connections_closed.load(Ordering::Relaxed)
    }

    /// Counts a connection closed at accept because `max_connections` were open.
    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed at accept: its source is cooling down.
    pub(crate) fn connection_cooled(&self) {
        self.connections_cooled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a source put to cool down.
    pub(crate) fn cooldown_started(&self) {
        self.cooldowns_started.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed by its handshake or idle deadline.
    pub(crate) fn connection_timed_out(&self, why: crate::serve::net::Expiry) {
        if let Ok(mut m) = self.connections_timed_out.lock() {
            *m.entry(why.name()).or_default() += 1;
        }
    }

    /// Counts a failed accept (the listener's, such as EMFILE).
    pub(crate) fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP breachcheck_requests_total RPCs by method and status code.\n");
        out.push_str("# TYPE breachcheck_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((rpc, code), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "breachcheck_requests_total{{rpc=\"{rpc}\",code=\"{code}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP breachcheck_request_duration_seconds RPC latency.\n");
        out.push_str("# TYPE breachcheck_request_duration_seconds histogram\n");
        if let Ok(m) = self.latency.lock() {
            for (rpc, h) in m.iter() {
                for (i, b) in BOUNDS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "breachcheck_request_duration_seconds_bucket{{rpc=\"{rpc}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "breachcheck_request_duration_seconds_bucket{{rpc=\"{rpc}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "breachcheck_request_duration_seconds_sum{{rpc=\"{rpc}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "breachcheck_request_duration_seconds_count{{rpc=\"{rpc}\"}} {}",
                    h.count
                );
            }
        }
        out.push_str(
            "# HELP breachcheck_quota_rejections_total Calls refused by quota, by API key name.\n",
        );
        out.push_str("# TYPE breachcheck_quota_rejections_total counter\n");
        if let Ok(m) = self.quota_rejections.lock() {
            for (k, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "breachcheck_quota_rejections_total{{api_key={k:?}}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP breachcheck_refusals_total Calls refused, by reason (quota, invalid_api_key, malformed_request, ...).\n",
        );
        out.push_str("# TYPE breachcheck_refusals_total counter\n");
        if let Ok(m) = self.refusals.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(out, "breachcheck_refusals_total{{reason=\"{reason}\"}} {n}");
            }
        }
        out.push_str(
            "# HELP breachcheck_connections_timed_out_total Connections closed by the server, by phase (handshake: no request since accept; idle: none since the last; refusals: too many calls refused on it).\n",
        );
        out.push_str("# TYPE breachcheck_connections_timed_out_total counter\n");
        if let Ok(m) = self.connections_timed_out.lock() {
            for (phase, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "breachcheck_connections_timed_out_total{{phase=\"{phase}\"}} {n}"
                );
            }
        }
        let scalars = [
            (
                "breachcheck_elements_evaluated_total",
                "counter",
                "Blinded elements evaluated.",
                self.elements_evaluated.load(Ordering::Relaxed),
            ),
            (
                "breachcheck_bucket_bytes_sent_total",
                "counter",
                "Bucket payload bytes streamed.",
                self.bucket_bytes_sent.load(Ordering::Relaxed),
            ),
            (
                "breachcheck_pir_answers_total",
                "counter",
                "PIR queries answered (each about one pass over the database).",
                self.pir_answers.load(Ordering::Relaxed),
            ),
            (
                "breachcheck_pir_answer_microseconds_total",
                "counter",
                "Wall time spent computing PIR answers, in microseconds.",
                self.pir_micros.load(Ordering::Relaxed),
            ),
            (
                "breachcheck_index_reloads_total",
                "counter",
                "Successful index reloads.",
                self.reloads.load(Ordering::Relaxed),
            ),
            (
                "breachcheck_quota_store_errors_total",
                "counter",
                "Calls refused UNAVAILABLE because the quota store (Redis) could not be asked.",
                self.quota_store_errors(),
            ),
            (
                "breachcheck_in_flight_requests",
                "gauge",
                "RPCs being handled.",
                self.in_flight(),
            ),
            (
                "breachcheck_connections_open",
                "gauge",
                "gRPC connections open.",
                self.connections_open(),
            ),
            (
                "breachcheck_connections_accepted_total",
                "counter",
                "gRPC connections accepted.",
                self.connections_accepted.load(Ordering::Relaxed),
            ),
            (
                "breachcheck_connections_refused_total",
                "counter",
                "gRPC connections closed at accept: max_connections were open.",
                self.connections_refused.load(Ordering::Relaxed),
            ),
            (
                "breachcheck_connections_cooled_total",
                "counter",
                "gRPC connections closed at accept: their source is cooling down after a connection of its spent its refusal budget without an API key.",
                self.connections_cooled.load(Ordering::Relaxed),
            ),
            (
                "breachcheck_source_cooldowns_total",
                "counter",
                "Sources put to cool down (source_cooldown_secs).",
                self.cooldowns_started.load(Ordering::Relaxed),
            ),
            (
                "breachcheck_accept_errors_total",
                "counter",
                "Failed accepts of the gRPC or metrics listener (EMFILE and the like), each followed by a pause.",
                self.accept_errors.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `GET /metrics` (any path, in fact) on `listener` until dropped.
/// At most [`METRICS_CONNECTIONS`] scrapes at once, each bounded in time;
/// accept errors (EMFILE) pause the loop instead of spinning it.
pub(crate) async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                metrics.accept_error();
                tracing::debug!(error = %e, "metrics accept failed; pausing");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf = [0u8; 1024];
            // Read the request head (bounded), ignore its content.
            let _ = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await;
            let body = metrics.render();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let write = async {
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
        });
    }
}

/// Most `/metrics` connections served at once.
const METRICS_CONNECTIONS: usize = 16;

/// The tower layer around the whole router: it observes every call of the
/// BreachCheck service (health and reflection pass through uncounted).
#[derive(Debug, Clone)]
pub(crate) struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MetricsLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub(crate) struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The RPC name of a BreachCheck path (`/breachcheck.v1.BreachCheck/Evaluate`),
/// as a static label; `None` for any other service.
pub(crate) fn rpc_name(path: &str) -> Option<&'static str> {
    let method = path
        .strip_prefix('/')?
        .strip_prefix(breachcheck_proto::SERVICE_NAME)?
        .strip_prefix('/')?;
    [
        "GetIndexInfo",
        "Evaluate",
        "GetBuckets",
        "GetPirSetup",
        "PirQuery",
    ]
    .into_iter()
    .find(|m| *m == method)
}

/// The status of an answer: a trailers-only error response carries
/// `grpc-status` in its headers; anything else (a message or a stream to
/// follow) is OK, as the handler returned successfully.
pub(crate) fn answer_code(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .map_or(tonic::Code::Ok, |v| tonic::Code::from_bytes(v.as_bytes()))
}

/// One call in flight: counted on creation, recorded by [`InFlight::answered`],
/// and uncounted on drop either way (a cancelled call leaves the gauge too).
struct InFlight {
    metrics: Arc<Metrics>,
    rpc: &'static str,
    start: Instant,
}

impl InFlight {
    fn new(metrics: Arc<Metrics>, rpc: &'static str) -> Self {
        metrics.started();
        InFlight {
            metrics,
            rpc,
            start: Instant::now(),
        }
    }

    fn answered(self, code: tonic::Code) {
        self.metrics.observe(self.rpc, code, self.start.elapsed());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.finished();
    }
}

impl<S, B, RB: 'static> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let rpc = rpc_name(req.uri().path());
        let answer = self.inner.call(req);
        let Some(rpc) = rpc else {
            return Box::pin(answer);
        };
        let call = InFlight::new(self.metrics.clone(), rpc);
        Box::pin(async move {
            let r = answer.await;
            if let Ok(resp) = &r {
                call.answered(answer_code(resp.headers()));
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_breachcheck_rpcs_are_named() {
        assert_eq!(
            rpc_name("/breachcheck.v1.BreachCheck/Evaluate"),
            Some("Evaluate")
        );
        assert_eq!(
            rpc_name("/breachcheck.v1.BreachCheck/GetIndexInfo"),
            Some("GetIndexInfo")
        );
        assert_eq!(rpc_name("/grpc.health.v1.Health/Check"), None);
        assert_eq!(rpc_name("/breachcheck.v1.BreachCheck/Other"), None);
        assert_eq!(rpc_name("/breachcheck.v1.BreachCheckX/Evaluate"), None);
    }

    #[test]
    fn trailers_only_status_is_the_code_else_ok() {
        let mut h = http::HeaderMap::new();
        assert_eq!(answer_code(&h), tonic::Code::Ok);
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
        assert_eq!(answer_code(&h), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn a_dropped_call_leaves_the_gauge_uncounted() {
        let m = Arc::new(Metrics::default());
        let call = InFlight::new(m.clone(), "Evaluate");
        assert_eq!(m.in_flight(), 1);
        drop(call);
        assert_eq!(m.in_flight(), 0);
        InFlight::new(m.clone(), "Evaluate").answered(tonic::Code::Ok);
        assert_eq!(m.in_flight(), 0);
        assert!(
            m.render()
                .contains("breachcheck_requests_total{rpc=\"Evaluate\",code=\"OK\"} 1")
        );
    }
}
