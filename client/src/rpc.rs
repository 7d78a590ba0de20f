//! The wire: the channel, the requests (with their `authorization`
//! metadata), retries, and the one mapping of a final [`Status`] to a
//! [`ClientError`]. Every call the client makes goes through [`Rpc`].
//!
//! Retries are decided by what a status *is*, never by what its message
//! says: UNAVAILABLE, or a status that tonic made on this side from a broken
//! connection (its [`source`](std::error::Error::source) chain holds a
//! transport, hyper or I/O error). A status the server sent never has a
//! source, so a server cannot make the client retry by wording a message.
//! Likewise the quota's refill time is the `retry-after` metadata of a
//! RESOURCE_EXHAUSTED status, never parsed out of its prose.
//!
//! Every call is bounded twice over (#11). tonic's own timeout covers only
//! the response headers, so a server that sends them and then stalls would
//! hold a client forever. Here each call has a deadline for the whole call
//! (the `timeout`, plus, for GetBuckets, the time the expected bytes take at
//! [`MIN_RATE`]) and an idle timeout between two messages; either is
//! [`ClientError::Timeout`], naming the server. And each call accepts
//! messages only as large as an honest answer to it can be (the caller says
//! how large), so a server cannot make the client buffer more than it asked
//! for.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use breachcheck_proto::pb::breach_check_client::BreachCheckClient;
use breachcheck_proto::pb::{
    BucketChunk, EvaluateRequest, EvaluateResponse, GetBucketsRequest, GetIndexInfoRequest,
    GetPirSetupRequest, IndexInfo, PirQueryRequest, PirSetup,
};
use tokio::time::Instant;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status, Streaming};

use crate::checks::MAX_RESPONSE_BYTES;
use crate::error::{ClientError, Result};
use crate::replicas::{Replicas, Role};

/// The first retry waits this long; each next one twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// HTTP/2 PINGs on a connection with calls in flight, this often...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and the connection closed when one goes unanswered this long.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long establishing the connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The metadata key of the quota's refill time, in integer seconds.
const RETRY_AFTER: &str = "retry-after";
/// The slowest download rate a GetBuckets deadline allows for, in bytes per
/// second (2 Mbit/s): the deadline of a download of `n` bytes is the
/// timeout plus `n / MIN_RATE` seconds.
pub(crate) const MIN_RATE: u64 = 256 << 10;
/// Largest IndexInfo accepted (its breach table is the only variable part).
const MAX_INFO_BYTES: usize = 4 << 20;
/// Bytes of an Evaluate response per element: 32, plus protobuf framing.
const EVALUATED_BYTES: usize = 40;
/// Protobuf framing and the proof around the elements of a response, and
/// around the payload and proof of a bucket chunk.
const FRAMING: usize = 1024;

/// How to reach the server: the connection half of the client's builder.
#[derive(Clone)]
pub(crate) struct Settings {
    /// `http://host:port` or `https://host:port`: one server, or several
    /// replicas serving the same index with the same key.
    pub(crate) endpoints: Vec<String>,
    /// The bearer token sent with every call.
    pub(crate) api_key: Option<String>,
    /// A CA (PEM) trusted instead of the system roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// Per-call deadline (GetBuckets: plus the time its bytes take at
    /// [`MIN_RATE`]).
    pub(crate) timeout: Duration,
    /// The longest silence between two messages of a call.
    pub(crate) idle_timeout: Duration,
    /// Retries of a transient failure.
    pub(crate) retries: u32,
}

impl Settings {
    /// `endpoint` with no credentials, a 60 s timeout, a 30 s idle timeout
    /// and 8 retries.
    pub(crate) fn new(endpoint: String) -> Self {
        Settings {
            endpoints: vec![endpoint],
            api_key: None,
            ca_pem: None,
            timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            retries: 8,
        }
    }
}

// By hand, so that the API key never reaches a log through `{:?}`.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("endpoints", &self.endpoints)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// A connected gRPC client with the caller's credentials and retry policy.
/// Cheap to clone: clones share the channels and what was learned of the
/// replicas.
#[derive(Clone)]
pub(crate) struct Rpc {
    /// One client per replica, in the order of [`Replicas`].
    grpc: Arc<[BreachCheckClient<Channel>]>,
    replicas: Arc<Replicas>,
    authorization: Option<AsciiMetadataValue>,
    retries: u32,
    timeout: Duration,
    idle_timeout: Duration,
}

impl fmt::Debug for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rpc")
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("retries", &self.retries)
            .field("replicas", &self.replicas)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Rpc {
    /// Connects to every endpoint of `s`, with TLS for `https://`. With
    /// several, one that cannot be reached now is ejected (see `replicas`)
    /// and reconnected lazily; only when none can be reached is it an error.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] for a malformed endpoint, a bad CA, or (the
    /// first endpoint's error) when no server can be reached.
    pub(crate) async fn connect(s: &Settings) -> Result<Self> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, url) in s.endpoints.iter().enumerate() {
            let ep = endpoint(s, url)?;
            tasks.spawn(async move { (i, ep.connect().await.map_err(|e| (ep, e))) });
        }
        let mut channels: Vec<Option<Channel>> = vec![None; s.endpoints.len()];
        let mut failed = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((i, Ok(channel))) => channels[i] = Some(channel),
                Ok((i, Err((ep, e)))) => {
                    channels[i] = Some(ep.connect_lazy());
                    failed.push((i, e));
                }
                Err(source) => {
                    return Err(ClientError::TaskFailed {
                        task: "connect",
                        source,
                    });
                }
            }
        }
        failed.sort_by_key(|(i, _)| *i);
        if failed.len() == s.endpoints.len() {
            if let Some((i, source)) = failed.into_iter().next() {
                return Err(ClientError::Connect {
                    endpoint: s.endpoints[i].clone(),
                    source,
                });
            }
            failed = Vec::new();
        }
        let replicas = Replicas::new(&s.endpoints);
        for (i, e) in &failed {
            tracing::warn!(replica = %s.endpoints[*i], error = %e, "replica unreachable; using the others");
            replicas.eject(*i);
        }
        // A token that is not a valid header value is not sent: the server
        // then answers UNAUTHENTICATED, which says what to fix.
        let authorization = s.api_key.as_ref().and_then(|token| {
            let mut v: AsciiMetadataValue = format!("Bearer {token}").parse().ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        Ok(Rpc {
            grpc: channels
                .into_iter()
                .flatten()
                .map(|c| BreachCheckClient::new(c).max_decoding_message_size(MAX_RESPONSE_BYTES))
                .collect(),
            replicas: Arc::new(replicas),
            authorization,
            retries: s.retries,
            timeout: s.timeout,
            idle_timeout: s.idle_timeout.max(Duration::from_millis(1)),
        })
    }

    /// The URL of every replica, in the order given.
    pub(crate) fn urls(&self) -> impl Iterator<Item = &str> {
        (0..self.grpc.len()).map(|i| self.replicas.url(i))
    }

    /// How many times a transient failure is retried.
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    /// GetIndexInfo.
    ///
    /// # Errors
    ///
    /// The final status of the call, mapped by [`map_status`].
    pub(crate) async fn index_info(&self) -> Result<IndexInfo> {
        self.retry("GetIndexInfo", Role::Any, |i| {
            let mut grpc = self.grpc[i]
                .clone()
                .max_decoding_message_size(MAX_INFO_BYTES);
            let req = self.request(GetIndexInfoRequest {});
            let call = async move { grpc.get_index_info(req).await.map(|r| r.into_inner()) };
            self.unary(call)
        })
        .await
        .map(|(info, _)| info)
    }

    /// Evaluate of one batch of serialized blinded elements.
    ///
    /// # Errors
    ///
    /// The final status of the call, mapped by [`map_status`].
    pub(crate) async fn evaluate(
        &self,
        index_id: &[u8],
        blinded: &[Vec<u8>],
    ) -> Result<EvaluateResponse> {
        // An honest answer is one element per element sent, and the proof.
        let limit = blinded.len().saturating_mul(EVALUATED_BYTES) + FRAMING;
        self.retry("Evaluate", Role::Evaluate, |i| {
            let mut grpc = self.grpc[i].clone().max_decoding_message_size(limit);
            let req = self.request(EvaluateRequest {
                index_id: index_id.to_vec(),
                blinded_elements: blinded.to_vec(),
            });
            let call = async move { grpc.evaluate(req).await.map(|r| r.into_inner()) };
            self.unary(call)
        })
        .await
        .map(|(resp, _)| resp)
    }

    /// GetBuckets for `prefixes` of `j` bits: the stream of chunks, to be
    /// read with [`BucketStream::next`] and checked by the caller as they
    /// come. Opening the call is retried like any call; a stream that breaks
    /// later is [`ClientError::Unavailable`] (its replica ejected), for the
    /// caller to ask again for what it has not received.
    /// `chunk_bytes` is the size of an honest chunk's payload and proof (no
    /// message above it plus framing is accepted), `expected_bytes` the size
    /// of the whole answer (it extends the deadline at [`MIN_RATE`]).
    ///
    /// # Errors
    ///
    /// The final status of the call, mapped by [`map_status`], or
    /// [`ClientError::Timeout`].
    pub(crate) async fn get_buckets(
        &self,
        index_id: &[u8],
        j: u32,
        prefixes: &[u32],
        chunk_bytes: usize,
        expected_bytes: u64,
    ) -> Result<BucketStream> {
        let allowed = self
            .timeout
            .saturating_add(Duration::from_secs(expected_bytes / MIN_RATE));
        let limit = chunk_bytes.saturating_add(FRAMING);
        // Each attempt has the whole allowance: one spent waiting on a
        // silent replica must not leave the next replica none.
        let ((inner, started, deadline), replica) = self
            .retry("GetBuckets", Role::Any, |i| {
                let mut grpc = self.grpc[i].clone().max_decoding_message_size(limit);
                let req = self.request(GetBucketsRequest {
                    index_id: index_id.to_vec(),
                    prefix_bits: j,
                    prefixes: prefixes.to_vec(),
                });
                async move {
                    let started = Instant::now();
                    let deadline = later(started, allowed);
                    let call = async move { grpc.get_buckets(req).await.map(|r| r.into_inner()) };
                    match tokio::time::timeout_at(deadline, call).await {
                        Ok(r) => r.map(|inner| (inner, started, deadline)),
                        Err(_) => Err(timed_out(false, started.elapsed())),
                    }
                }
            })
            .await?;
        Ok(BucketStream {
            inner,
            rpc: self.clone(),
            replica,
            started,
            deadline,
        })
    }

    /// GetPirSetup; an answer above `max_bytes` (what the index's shape
    /// allows) is refused by the transport.
    ///
    /// # Errors
    ///
    /// The final status of the call, mapped by [`map_status`].
    pub(crate) async fn pir_setup(&self, index_id: &[u8], max_bytes: usize) -> Result<PirSetup> {
        let limit = max_bytes.saturating_add(FRAMING);
        self.retry("GetPirSetup", Role::Any, |i| {
            let mut grpc = self.grpc[i].clone().max_decoding_message_size(limit);
            let req = self.request(GetPirSetupRequest {
                index_id: index_id.to_vec(),
            });
            let call = async move { grpc.get_pir_setup(req).await.map(|r| r.into_inner()) };
            self.unary(call)
        })
        .await
        .map(|(setup, _)| setup)
    }

    /// PirQuery: the answer, at most `answer_len` bytes plus framing.
    ///
    /// # Errors
    ///
    /// The final status of the call, mapped by [`map_status`].
    pub(crate) async fn pir_query(
        &self,
        index_id: &[u8],
        keys: &[u8],
        query: &[u8],
        answer_len: usize,
    ) -> Result<Vec<u8>> {
        let limit = answer_len.saturating_add(FRAMING);
        self.retry("PirQuery", Role::Any, |i| {
            let mut grpc = self.grpc[i]
                .clone()
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX);
            let req = self.request(PirQueryRequest {
                index_id: index_id.to_vec(),
                keys: keys.to_vec(),
                query: query.to_vec(),
            });
            let call = async move { grpc.pir_query(req).await.map(|r| r.into_inner().answer) };
            self.unary(call)
        })
        .await
        .map(|(answer, _)| answer)
    }

    /// Bounds a unary call by the timeout, headers and body alike.
    async fn unary<T>(
        &self,
        call: impl Future<Output = std::result::Result<T, Status>>,
    ) -> std::result::Result<T, Status> {
        let started = Instant::now();
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(false, started.elapsed())),
        }
    }

    /// [`retry`] over the replicas, with the final status mapped for
    /// `call`, naming the replica that gave it; also says which replica
    /// answered.
    async fn retry<T, F, Fut>(&self, call: &'static str, role: Role, f: F) -> Result<(T, usize)>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>>,
    {
        retry(self.retries, &self.replicas, role, f)
            .await
            .map_err(|(s, i)| map_status(s, self.replicas.url(i), call))
    }

    /// `msg` with the `authorization` metadata, if the client has a key.
    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(v) = &self.authorization {
            req.metadata_mut().insert("authorization", v.clone());
        }
        req
    }
}

/// The tonic endpoint of `url` under `s`'s settings.
fn endpoint(s: &Settings, url: &str) -> Result<Endpoint> {
    let connect_err = |source| ClientError::Connect {
        endpoint: url.to_owned(),
        source,
    };
    // No transport-level timeout: it would cover only the response
    // headers. Every call is bounded here instead (module docs).
    let mut ep = Endpoint::from_shared(url.to_owned())
        .map_err(connect_err)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // A peer that vanished without a reset (a partition, a frozen host)
        // is noticed within seconds, not at the end of the call's timeout.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(pem) = &s.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        ep = ep.tls_config(tls).map_err(connect_err)?;
    }
    Ok(ep)
}

/// Calls `f` on a replica picked for `role` until it succeeds, fails for
/// good, or has been retried `retries` times. A [transient](is_transient)
/// failure ejects its replica; the retry goes at once to another that is
/// ready, or else waits [`FIRST_BACKOFF`], doubling up to [`MAX_BACKOFF`].
/// An Evaluate answered UNIMPLEMENTED by one of several replicas (a
/// bucket-only one) moves on to another. Returns the replica that answered,
/// or the one whose failure was final.
async fn retry<T, F, Fut>(
    retries: u32,
    replicas: &Replicas,
    role: Role,
    mut f: F,
) -> std::result::Result<(T, usize), (Failed, usize)>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = std::result::Result<T, Status>>,
{
    let mut delay = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let i = replicas.pick(role);
        let s = match f(i).await {
            Ok(v) => {
                replicas.healthy(i);
                return Ok((v, i));
            }
            Err(s) => s,
        };
        let moved =
            role == Role::Evaluate && s.code() == Code::Unimplemented && replicas.buckets_only(i);
        // The client's own timeout on one of several replicas: that one
        // went silent; the call moves on (alone, the timeout is final).
        let silent = timed_out_here(&s) && replicas.another_ready(i, role);
        let transient = is_transient(&s);
        if transient || silent {
            replicas.eject(i);
        }
        if !(transient || moved || silent) {
            return Err((Failed::Final(s), i));
        }
        if attempt > retries {
            return Err((
                Failed::Unavailable {
                    attempts: attempt,
                    status: s,
                },
                i,
            ));
        }
        tracing::debug!(attempt, code = ?s.code(), replica = replicas.url(i), "retrying");
        if !replicas.another_ready(i, role) {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }
}

/// How [`retry`] gave up.
#[derive(Debug)]
enum Failed {
    /// A transient failure, every retry spent.
    Unavailable { attempts: u32, status: Status },
    /// A failure a retry cannot fix.
    Final(Status),
}

/// The stream of a GetBuckets call, bounded by the call's deadline and the
/// idle timeout.
pub(crate) struct BucketStream {
    inner: Streaming<BucketChunk>,
    rpc: Rpc,
    replica: usize,
    started: Instant,
    deadline: Instant,
}

impl fmt::Debug for BucketStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketStream")
            .field("server", &self.rpc.replicas.url(self.replica))
            .field("started", &self.started)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl BucketStream {
    /// The next chunk, or `None` at the end of the answer.
    ///
    /// # Errors
    ///
    /// The status that ended the stream, or [`ClientError::Timeout`] when
    /// nothing came for the idle timeout or the deadline passed.
    pub(crate) async fn next(&mut self) -> Result<Option<BucketChunk>> {
        let idle_end = later(Instant::now(), self.rpc.idle_timeout);
        let idle = idle_end < self.deadline;
        let waited_from = Instant::now();
        let status = match tokio::time::timeout_at(
            idle_end.min(self.deadline),
            self.inner.message(),
        )
        .await
        {
            Ok(Ok(chunk)) => return Ok(chunk),
            Ok(Err(s)) => s,
            Err(_) if idle => timed_out(true, waited_from.elapsed()),
            Err(_) => timed_out(false, self.started.elapsed()),
        };
        let silent =
            timed_out_here(&status) && self.rpc.replicas.another_ready(self.replica, Role::Any);
        let failed = if is_transient(&status) || silent {
            self.rpc.replicas.eject(self.replica);
            Failed::Unavailable {
                attempts: 1,
                status,
            }
        } else {
            Failed::Final(status)
        };
        Err(map_status(
            failed,
            self.rpc.replicas.url(self.replica),
            "GetBuckets",
        ))
    }
}

/// `at + d`, or a century on for a duration past what the clock can hold
/// (a huge `--timeout` means "no deadline", not a panic).
pub(crate) fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(at)
}

/// The client's own timeout, as a status whose source says so (a status the
/// server sent has no source, so a server cannot fake one).
fn timed_out(idle: bool, waited: Duration) -> Status {
    let mut s = Status::deadline_exceeded("client-side timeout");
    s.set_source(Arc::new(TimedOut { idle, waited }));
    s
}

/// The source of a [`timed_out`] status.
#[derive(Debug)]
struct TimedOut {
    idle: bool,
    waited: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?}", self.waited)
    }
}

impl std::error::Error for TimedOut {}

/// Whether `s` is this client's own timeout (a server cannot fake one: its
/// statuses have no source).
fn timed_out_here(s: &Status) -> bool {
    s.source().is_some_and(|e| e.is::<TimedOut>())
}

/// Whether a retry can help: UNAVAILABLE, or an UNKNOWN, INTERNAL or
/// CANCELLED status that tonic made here from a broken connection (see the
/// module docs). CANCELLED is what a call sent just as the server closed
/// the connection gets (hyper's "connection closed" before any answer), as
/// when the server restarts: the call never ran there.
fn is_transient(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal | Code::Cancelled => from_broken_connection(s),
        _ => false,
    }
}

/// Whether the source chain of `s` holds a transport, hyper or I/O error.
/// tonic attaches the error it made the status from; statuses decoded from
/// the server's trailers carry no source.
fn from_broken_connection(s: &Status) -> bool {
    let mut cause = s.source();
    while let Some(e) = cause {
        if e.is::<tonic::transport::Error>() || e.is::<hyper::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The one mapping of a final status of `call` to `server` to a
/// [`ClientError`].
fn map_status(failed: Failed, server: &str, call: &'static str) -> ClientError {
    let s = match failed {
        Failed::Unavailable { attempts, status } => {
            return ClientError::Unavailable {
                attempts,
                message: status.message().to_owned(),
            };
        }
        Failed::Final(s) => s,
    };
    if let Some(t) = s.source().and_then(|e| e.downcast_ref::<TimedOut>()) {
        return ClientError::Timeout {
            server: server.to_owned(),
            call,
            waited: t.waited,
            idle: t.idle,
        };
    }
    match s.code() {
        Code::Unauthenticated => ClientError::Unauthenticated(s.message().to_owned()),
        Code::ResourceExhausted => ClientError::QuotaExhausted {
            retry_after: retry_after(&s),
            message: s.message().to_owned(),
        },
        _ => ClientError::Rpc(s),
    }
}

/// The `retry-after` metadata of `s` (ASCII integer seconds), if present
/// and well-formed.
fn retry_after(s: &Status) -> Option<Duration> {
    let v = s.metadata().get(RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn final_status(s: Status) -> ClientError {
        map_status(Failed::Final(s), "http://test", "Evaluate")
    }

    #[test]
    fn a_huge_timeout_is_far_away_not_a_panic() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(1 << 30));
        assert_eq!(
            later(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
    }

    #[test]
    fn only_the_clients_own_timeout_is_a_timeout() {
        let e = final_status(timed_out(true, Duration::from_secs(3)));
        assert!(
            matches!(
                e,
                ClientError::Timeout {
                    idle: true,
                    call: "Evaluate",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("http://test"), "{e}");
        let e = final_status(Status::deadline_exceeded("client-side timeout"));
        assert!(matches!(e, ClientError::Rpc(_)), "{e:?}");
    }

    fn exhausted(retry_after: Option<&str>) -> Status {
        let mut s = Status::resource_exhausted("quota exhausted: daily cap; refills in 30 s");
        if let Some(v) = retry_after {
            s.metadata_mut().insert(RETRY_AFTER, v.parse().unwrap());
        }
        s
    }

    #[test]
    fn retry_after_is_read_from_metadata() {
        let e = final_status(exhausted(Some("42")));
        assert!(
            matches!(e, ClientError::QuotaExhausted { retry_after: Some(d), .. } if d == Duration::from_secs(42)),
            "{e:?}"
        );
    }

    #[test]
    fn retry_after_is_not_parsed_from_the_message() {
        let e = final_status(exhausted(None));
        assert!(
            matches!(e, ClientError::QuotaExhausted { retry_after: None, ref message } if message.contains("refills in 30 s")),
            "{e:?}"
        );
    }

    #[test]
    fn malformed_retry_after_is_none() {
        for v in ["soon", "-1", "1.5", ""] {
            let e = final_status(exhausted(Some(v)));
            assert!(
                matches!(
                    e,
                    ClientError::QuotaExhausted {
                        retry_after: None,
                        ..
                    }
                ),
                "{v}: {e:?}"
            );
        }
    }

    #[test]
    fn unavailable_is_retried_by_its_code() {
        assert!(is_transient(&Status::unavailable("")));
    }

    #[test]
    fn prose_about_transport_is_not_retried() {
        // What the old client grepped for: a server could word any status so.
        assert!(!is_transient(&Status::unknown("transport error")));
        assert!(!is_transient(&Status::internal(
            "h2 protocol error: connection reset"
        )));
        assert!(!is_transient(&Status::invalid_argument("transport")));
    }

    #[test]
    fn a_status_made_from_a_broken_connection_is_retried() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let s = Status::from_error(Box::new(io));
        assert_eq!(s.code(), Code::Unknown);
        assert!(is_transient(&s));
        let mut s = Status::internal("stream ended");
        s.set_source(std::sync::Arc::new(std::io::Error::other("reset")));
        assert!(is_transient(&s));
        // A call caught by the server closing the connection (a restart).
        let mut s = Status::cancelled("operation was canceled");
        s.set_source(std::sync::Arc::new(std::io::Error::other("closed")));
        assert!(is_transient(&s));
        // CANCELLED from the server itself (no source) is final.
        assert!(!is_transient(&Status::cancelled("operation was canceled")));
        // The same source under a code a retry cannot fix is not retried.
        let mut s = Status::permission_denied("no");
        s.set_source(std::sync::Arc::new(std::io::Error::other("reset")));
        assert!(!is_transient(&s));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_then_reported_as_unavailable() {
        let one = Replicas::new(&["s".into()]);
        let calls = AtomicU32::new(0);
        let r: Result<()> = retry(2, &one, Role::Evaluate, |_| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(Status::unavailable("down")) }
        })
        .await
        .map(|(v, _)| v)
        .map_err(|(f, _)| map_status(f, "s", "Evaluate"));
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert!(
            matches!(r, Err(ClientError::Unavailable { attempts: 3, .. })),
            "{r:?}"
        );
        // A permanent failure is not retried.
        let calls = AtomicU32::new(0);
        let r: Result<()> = retry(2, &one, Role::Evaluate, |_| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(Status::unauthenticated("no key")) }
        })
        .await
        .map(|(v, _)| v)
        .map_err(|(f, _)| map_status(f, "s", "Evaluate"));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert!(matches!(r, Err(ClientError::Unauthenticated(_))), "{r:?}");
    }
}
