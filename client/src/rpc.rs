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

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use breachcheck_proto::pb::breach_check_client::BreachCheckClient;
use breachcheck_proto::pb::{
    BucketChunk, EvaluateRequest, EvaluateResponse, GetBucketsRequest, GetIndexInfoRequest,
    IndexInfo,
};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::error::{ClientError, Result};

/// Largest response message accepted (a bucket of a big, coarse index).
pub(crate) const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// The first retry waits this long; each next one twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long establishing the connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The metadata key of the quota's refill time, in integer seconds.
const RETRY_AFTER: &str = "retry-after";

/// How to reach the server: the connection half of the client's builder.
#[derive(Clone)]
pub(crate) struct Settings {
    /// `http://host:port` or `https://host:port`.
    pub(crate) endpoint: String,
    /// The bearer token sent with every call.
    pub(crate) api_key: Option<String>,
    /// A CA (PEM) trusted instead of the system roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// Per-call timeout.
    pub(crate) timeout: Duration,
    /// Retries of a transient failure.
    pub(crate) retries: u32,
}

impl Settings {
    /// `endpoint` with no credentials, a 60 s timeout and 8 retries.
    pub(crate) fn new(endpoint: String) -> Self {
        Settings {
            endpoint,
            api_key: None,
            ca_pem: None,
            timeout: Duration::from_secs(60),
            retries: 8,
        }
    }
}

// By hand, so that the API key never reaches a log through `{:?}`.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// A connected gRPC client with the caller's credentials and retry policy.
/// Cheap to clone: clones share the channel.
#[derive(Clone)]
pub(crate) struct Rpc {
    grpc: BreachCheckClient<Channel>,
    authorization: Option<AsciiMetadataValue>,
    retries: u32,
}

impl fmt::Debug for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rpc")
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl Rpc {
    /// Connects to `s.endpoint`, with TLS for `https://`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] for a malformed endpoint, a bad CA or an
    /// unreachable server.
    pub(crate) async fn connect(s: &Settings) -> Result<Self> {
        let connect_err = |source| ClientError::Connect {
            endpoint: s.endpoint.clone(),
            source,
        };
        let mut ep = Endpoint::from_shared(s.endpoint.clone())
            .map_err(connect_err)?
            .timeout(s.timeout)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if s.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_webpki_roots();
            if let Some(pem) = &s.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            ep = ep.tls_config(tls).map_err(connect_err)?;
        }
        let channel = ep.connect().await.map_err(connect_err)?;
        // A token that is not a valid header value is not sent: the server
        // then answers UNAUTHENTICATED, which says what to fix.
        let authorization = s.api_key.as_ref().and_then(|token| {
            let mut v: AsciiMetadataValue = format!("Bearer {token}").parse().ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        Ok(Rpc {
            grpc: BreachCheckClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
            authorization,
            retries: s.retries,
        })
    }

    /// GetIndexInfo.
    ///
    /// # Errors
    ///
    /// The final status of the call, mapped by [`map_status`].
    pub(crate) async fn index_info(&self) -> Result<IndexInfo> {
        retry(self.retries, || {
            let mut grpc = self.grpc.clone();
            let req = self.request(GetIndexInfoRequest {});
            async move { grpc.get_index_info(req).await.map(|r| r.into_inner()) }
        })
        .await
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
        retry(self.retries, || {
            let mut grpc = self.grpc.clone();
            let req = self.request(EvaluateRequest {
                index_id: index_id.to_vec(),
                blinded_elements: blinded.to_vec(),
            });
            async move { grpc.evaluate(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// GetBuckets: the chunks the server streams for `prefixes` of `j` bits,
    /// as sent (the caller checks them). At most `limit` chunks are read; the
    /// stream is dropped after that, so a server that streams without end
    /// cannot fill memory.
    ///
    /// # Errors
    ///
    /// The final status of the call, mapped by [`map_status`].
    pub(crate) async fn get_buckets(
        &self,
        index_id: &[u8],
        j: u32,
        prefixes: &[u32],
        limit: usize,
    ) -> Result<Vec<BucketChunk>> {
        retry(self.retries, || {
            let mut grpc = self.grpc.clone();
            let req = self.request(GetBucketsRequest {
                index_id: index_id.to_vec(),
                prefix_bits: j,
                prefixes: prefixes.to_vec(),
            });
            async move {
                let mut stream = grpc.get_buckets(req).await?.into_inner();
                let mut chunks = Vec::new();
                while chunks.len() < limit
                    && let Some(chunk) = stream.message().await?
                {
                    chunks.push(chunk);
                }
                Ok(chunks)
            }
        })
        .await
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

/// Calls `f` until it succeeds, fails for good, or has been retried
/// `retries` times; waits [`FIRST_BACKOFF`], doubling up to [`MAX_BACKOFF`],
/// before each retry of a [transient](is_transient) failure.
async fn retry<T, F, Fut>(retries: u32, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, Status>>,
{
    let mut delay = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(s) if is_transient(&s) && attempt <= retries => {
                tracing::debug!(attempt, code = ?s.code(), "retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
            Err(s) if is_transient(&s) => {
                return Err(ClientError::Unavailable {
                    attempts: attempt,
                    message: s.message().to_owned(),
                });
            }
            Err(s) => return Err(map_status(s)),
        }
    }
}

/// Whether a retry can help: UNAVAILABLE, or an UNKNOWN or INTERNAL status
/// that tonic made here from a broken connection (see the module docs).
fn is_transient(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal => from_broken_connection(s),
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

/// The one mapping of a final status to a [`ClientError`].
fn map_status(s: Status) -> ClientError {
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

    fn exhausted(retry_after: Option<&str>) -> Status {
        let mut s = Status::resource_exhausted("quota exhausted: daily cap; refills in 30 s");
        if let Some(v) = retry_after {
            s.metadata_mut().insert(RETRY_AFTER, v.parse().unwrap());
        }
        s
    }

    #[test]
    fn retry_after_is_read_from_metadata() {
        let e = map_status(exhausted(Some("42")));
        assert!(
            matches!(e, ClientError::QuotaExhausted { retry_after: Some(d), .. } if d == Duration::from_secs(42)),
            "{e:?}"
        );
    }

    #[test]
    fn retry_after_is_not_parsed_from_the_message() {
        let e = map_status(exhausted(None));
        assert!(
            matches!(e, ClientError::QuotaExhausted { retry_after: None, ref message } if message.contains("refills in 30 s")),
            "{e:?}"
        );
    }

    #[test]
    fn malformed_retry_after_is_none() {
        for v in ["soon", "-1", "1.5", ""] {
            let e = map_status(exhausted(Some(v)));
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
        // The same source under a code a retry cannot fix is not retried.
        let mut s = Status::permission_denied("no");
        s.set_source(std::sync::Arc::new(std::io::Error::other("reset")));
        assert!(!is_transient(&s));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_then_reported_as_unavailable() {
        let calls = AtomicU32::new(0);
        let r: Result<()> = retry(2, || {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(Status::unavailable("down")) }
        })
        .await;
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert!(
            matches!(r, Err(ClientError::Unavailable { attempts: 3, .. })),
            "{r:?}"
        );
        // A permanent failure is not retried.
        let calls = AtomicU32::new(0);
        let r: Result<()> = retry(2, || {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(Status::unauthenticated("no key")) }
        })
        .await;
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert!(matches!(r, Err(ClientError::Unauthenticated(_))), "{r:?}");
    }
}
