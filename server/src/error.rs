//! The server's errors, shared by both wings: [`ServerError`] (everything the
//! library fails with), [`IndexFault`] (why an index file was refused) and
//! [`Refusal`] (why a call was refused), with the one mapping of a refusal to
//! a gRPC status.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use breachcheck_proto::{CodecError, ProtocolError};

/// Everything the server library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A key file that is not a breachcheck key.
    #[error("{}: not a valid breachcheck key file ({reason})", path.display())]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A key file that its group or other users may access (`mode & 0o077`
    /// is not zero), refused unless `--allow-insecure-key-mode`.
    #[error(
        "{}: the OPRF key file has mode {mode:04o}, so users other than its owner can \
         access the secret key; run `chmod 600 {}` (or pass --allow-insecure-key-mode)",
        path.display(),
        path.display()
    )]
    InsecureKeyMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file's public key is not the index's.
    #[error(
        "the key does not match the index: index public key {index}, key file public key {key}"
    )]
    KeyMismatch {
        /// Fingerprint of the index's public key.
        index: String,
        /// Fingerprint of the key file's public key.
        key: String,
    },
    /// An index file that fails validation.
    #[error("{}: bad index file: {reason}", path.display())]
    BadIndexFile {
        /// The file.
        path: PathBuf,
        /// What check failed.
        reason: IndexFault,
    },
    /// A refusal to overwrite an existing file.
    #[error("{} already exists (use --force to overwrite)", .0.display())]
    Exists(PathBuf),
    /// Bad input to a build or bad configuration (not bad rows: those are
    /// counted, not fatal).
    #[error("{0}")]
    Input(String),
    /// A listener that could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The SIGHUP handler could not be installed.
    #[error("installing the SIGHUP handler: {0}")]
    Signal(#[source] io::Error),
    /// The gRPC transport failed (TLS configuration, accept loop).
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    /// A blocking task ended without an answer (it panicked).
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The index cannot be served by PIR, or the PIR scheme failed.
    #[error("PIR: {0}")]
    Pir(String),
    /// An invariant of the server broke; answered as INTERNAL.
    #[error("internal: {0}")]
    Bug(&'static str),
    /// A protocol-level error.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Why an index file was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexFault {
    /// Does not start with the index magic.
    #[error("wrong magic: not a breachcheck index")]
    WrongMagic,
    /// A format version this build does not read (version 1 files predate
    /// the bucket Merkle tree: rebuild them).
    #[error("unsupported format version {0} (this build reads version 2; rebuild the index)")]
    UnsupportedVersion(u32),
    /// Shorter than its header says.
    #[error("truncated")]
    Truncated,
    /// Longer than its header says.
    #[error("trailing bytes after the body")]
    TrailingBytes,
    /// The header checksum does not match.
    #[error("header checksum mismatch (corrupted)")]
    HeaderChecksum,
    /// The payloads do not hash to the header's bucket root.
    #[error("body hash mismatch: the payloads do not hash to the bucket root (corrupted)")]
    BodyChecksum,
    /// A header field out of range.
    #[error("invalid header field: {0}")]
    Field(&'static str),
}

impl From<CodecError> for IndexFault {
    /// The byte cursor's two failures are the file's: too short, too long.
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::TrailingBytes => IndexFault::TrailingBytes,
            // `CodecError` is non-exhaustive; anything else is a short read.
            _ => IndexFault::Truncated,
        }
    }
}

/// `Result` with [`ServerError`] as the default error.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;

/// Wraps an I/O error with its path.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ServerError {
    let path = path.into();
    move |source| ServerError::Io { path, source }
}

/// Why the service refused a call. Handlers return `Result<_, Refusal>`; the
/// one `From<Refusal> for tonic::Status` below picks the code, the message
/// (the `Display` text) and any metadata. `docs/PROTOCOL.md` §7 lists them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No `authorization` header, and anonymous access is off.
    #[error("missing API key: send `authorization: Bearer <token>`")]
    MissingApiKey,
    /// A header that is not `Bearer <token>`, or an unknown token.
    #[error("invalid API key")]
    InvalidApiKey,
    /// The `index_id` of an index this process served before a reload.
    #[error("index_id is stale: the index was replaced; refetch GetIndexInfo")]
    StaleIndex,
    /// An `index_id` this process never served.
    #[error("unknown index_id: refetch GetIndexInfo")]
    UnknownIndex,
    /// Evaluate on a replica that holds no key.
    #[error(
        "this replica serves buckets only (it holds no key); send Evaluate to an evaluation server"
    )]
    BucketsOnly,
    /// A PIR call on a server not started with PIR.
    #[error("this server does not answer PIR queries (start it with --pir)")]
    PirOff,
    /// A PIR query of the wrong size or one the scheme refuses.
    #[error("invalid PIR query: {0}")]
    InvalidPirQuery(String),
    /// Evaluate with no element.
    #[error("blinded_elements is empty")]
    EmptyBatch,
    /// Evaluate with more elements than `max_batch`.
    #[error("batch of {len} elements is above max_batch {max}")]
    BatchTooLarge {
        /// Elements sent.
        len: usize,
        /// The server's `max_batch`.
        max: usize,
    },
    /// An element that is not a valid, non-identity ristretto255 encoding.
    #[error("blinded_elements[{index}]: {}", ProtocolError::InvalidElement)]
    InvalidElement {
        /// Its position in the request.
        index: usize,
    },
    /// GetBuckets with `prefix_bits` above the index's `bucket_bits`.
    #[error("prefix_bits {prefix_bits} is above the index's bucket_bits {bucket_bits}")]
    PrefixAboveBucketBits {
        /// j.
        prefix_bits: u32,
        /// k.
        bucket_bits: u32,
    },
    /// GetBuckets with `prefix_bits` below the server's floor.
    #[error("prefix_bits {prefix_bits} is below the server's min_prefix_bits {floor}")]
    PrefixBelowFloor {
        /// j.
        prefix_bits: u32,
        /// `min_prefix_bits`, capped at k.
        floor: u32,
    },
    /// A prefix with bits set above `prefix_bits`.
    #[error("prefixes[{index}] = {prefix} does not fit in prefix_bits {prefix_bits}")]
    PrefixDoesNotFit {
        /// Its position in the request.
        index: usize,
        /// The prefix.
        prefix: u32,
        /// j.
        prefix_bits: u32,
    },
    /// A prefix sent twice.
    #[error("prefixes[{index}] = {prefix} is repeated")]
    PrefixRepeated {
        /// Position of the repetition.
        index: usize,
        /// The prefix.
        prefix: u32,
    },
    /// More prefixes than `max_prefixes`.
    #[error("{len} prefixes is above the limit of {max} per request")]
    TooManyPrefixes {
        /// Prefixes sent.
        len: usize,
        /// The server's `max_prefixes`.
        max: u32,
    },
    /// The caller's quota does not allow the call now.
    #[error("quota exhausted: {what}; refills in {} s", retry_after_secs(*.retry_after))]
    QuotaExhausted {
        /// Which limit.
        what: &'static str,
        /// Time until enough quota is back.
        retry_after: Duration,
    },
    /// The shared quota store could not be asked: the call is refused, not
    /// let through uncounted (fail closed), and may be retried shortly.
    #[error("quota store unavailable; retry shortly")]
    QuotaUnavailable,
    /// A request message that is not valid protobuf, or a request stream
    /// that ends inside a message or without one.
    #[error("malformed request: not a valid protobuf message")]
    MalformedRequest,
    /// A request whose body did not arrive in full within the server's
    /// `request_body_timeout`.
    #[error("request body not received within {secs} s")]
    SlowRequest {
        /// The server's `request_body_timeout`, whole seconds (rounded up).
        secs: u64,
    },
    /// A failure of the server, not the caller: logged, answered opaquely.
    #[error("internal error")]
    Internal(#[source] ServerError),
}

impl Refusal {
    /// A short, stable name of the refusal for the `reason` label of
    /// `breachcheck_refusals_total` (never holds caller data).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingApiKey => "missing_api_key",
            Refusal::InvalidApiKey => "invalid_api_key",
            Refusal::StaleIndex => "stale_index",
            Refusal::UnknownIndex => "unknown_index",
            Refusal::BucketsOnly => "buckets_only",
            Refusal::PirOff => "pir_off",
            Refusal::InvalidPirQuery(_) => "invalid_pir_query",
            Refusal::EmptyBatch => "empty_batch",
            Refusal::BatchTooLarge { .. } => "batch_too_large",
            Refusal::InvalidElement { .. } => "invalid_element",
            Refusal::PrefixAboveBucketBits { .. }
            | Refusal::PrefixBelowFloor { .. }
            | Refusal::PrefixDoesNotFit { .. }
            | Refusal::PrefixRepeated { .. } => "invalid_prefix",
            Refusal::TooManyPrefixes { .. } => "too_many_prefixes",
            Refusal::QuotaExhausted { .. } => "quota",
            Refusal::QuotaUnavailable => "quota_store_unavailable",
            Refusal::MalformedRequest => "malformed_request",
            Refusal::SlowRequest { .. } => "slow_request",
            Refusal::Internal(_) => "internal",
        }
    }
}

impl From<ServerError> for Refusal {
    fn from(e: ServerError) -> Self {
        Refusal::Internal(e)
    }
}

/// Whole seconds, rounded up, at least 1: what `retry-after` carries.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

/// The metadata key of the quota refill time on RESOURCE_EXHAUSTED, in whole
/// seconds (ASCII decimal).
pub const RETRY_AFTER: &str = "retry-after";

impl From<Refusal> for tonic::Status {
    /// The one mapping of refusals to the wire. Internal errors are logged
    /// here and answered with an opaque INTERNAL; the quota refill time also
    /// travels as `retry-after` metadata, so clients need not parse prose.
    fn from(r: Refusal) -> Self {
        use tonic::Code;
        let code = match &r {
            Refusal::MissingApiKey | Refusal::InvalidApiKey => Code::Unauthenticated,
            Refusal::StaleIndex => Code::FailedPrecondition,
            Refusal::UnknownIndex => Code::NotFound,
            Refusal::BucketsOnly | Refusal::PirOff => Code::Unimplemented,
            Refusal::EmptyBatch
            | Refusal::InvalidElement { .. }
            | Refusal::PrefixAboveBucketBits { .. }
            | Refusal::PrefixBelowFloor { .. }
            | Refusal::PrefixDoesNotFit { .. }
            | Refusal::PrefixRepeated { .. }
            | Refusal::InvalidPirQuery(_)
            | Refusal::MalformedRequest => Code::InvalidArgument,
            Refusal::SlowRequest { .. } => Code::DeadlineExceeded,
            Refusal::BatchTooLarge { .. } | Refusal::TooManyPrefixes { .. } => Code::OutOfRange,
            Refusal::QuotaExhausted { .. } => Code::ResourceExhausted,
            Refusal::QuotaUnavailable => Code::Unavailable,
            Refusal::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                Code::Internal
            }
        };
        let mut status = tonic::Status::new(code, r.to_string());
        let retry_after = match r {
            Refusal::QuotaExhausted { retry_after, .. } => Some(retry_after),
            Refusal::QuotaUnavailable => Some(Duration::from_secs(1)),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            status.metadata_mut().insert(
                RETRY_AFTER,
                tonic::metadata::AsciiMetadataValue::from(retry_after_secs(retry_after)),
            );
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_refusal_carries_retry_after_rounded_up() {
        let s: tonic::Status = Refusal::QuotaExhausted {
            what: "daily evaluation cap",
            retry_after: Duration::from_millis(4_200),
        }
        .into();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "quota exhausted: daily evaluation cap; refills in 5 s"
        );
        let v = s.metadata().get(RETRY_AFTER).and_then(|v| v.to_str().ok());
        assert_eq!(v, Some("5"));
        let s: tonic::Status = Refusal::QuotaExhausted {
            what: "x",
            retry_after: Duration::ZERO,
        }
        .into();
        let v = s.metadata().get(RETRY_AFTER).and_then(|v| v.to_str().ok());
        assert_eq!(v, Some("1"));
    }

    #[test]
    fn internal_errors_are_opaque_and_nothing_else_has_retry_after() {
        let s: tonic::Status = Refusal::Internal(ServerError::Bug("secret detail")).into();
        assert_eq!(s.code(), tonic::Code::Internal);
        assert_eq!(s.message(), "internal error");
        let s: tonic::Status = Refusal::MalformedRequest.into();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        let s: tonic::Status = Refusal::SlowRequest { secs: 10 }.into();
        assert_eq!(s.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(s.message(), "request body not received within 10 s");
        let s: tonic::Status = Refusal::InvalidElement { index: 3 }.into();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().starts_with("blinded_elements[3]: "));
        assert!(s.metadata().get(RETRY_AFTER).is_none());
    }
}
