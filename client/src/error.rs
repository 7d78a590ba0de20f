//! The client's error type. Every message says what to do next.

use std::time::Duration;

use breachcheck_proto::ProtocolError;

/// Everything a check can fail with. A failure is never reported as "not
/// found": any doubt about the answer is an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint is malformed or the connection failed.
    #[error(
        "cannot reach the server at {endpoint}: {source}; is it running, and is the address right?"
    )]
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server stayed unavailable through every retry.
    #[error("server unavailable after {attempts} attempts: {message}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last status message.
        message: String,
    },
    /// The API key is missing or wrong.
    #[error(
        "the server refused the API key ({0}); pass a valid one with --api-key or BREACHCHECK_API_KEY"
    )]
    Unauthenticated(String),
    /// The quota is used up.
    #[error("{message}; try again then, or ask the operator for a larger quota")]
    QuotaExhausted {
        /// The server's message, for people.
        message: String,
        /// When the quota refills: the status's `retry-after` metadata
        /// (integer seconds), if the server sent it. The message is never
        /// parsed for it.
        retry_after: Option<Duration>,
    },
    /// The DLEQ proof did not verify: the server did not use the key it
    /// claims. This is what an attack (or a misconfigured server) looks like.
    #[error(
        "proof verification failed: the server's answer does not match its public key {pinned}; this can be an attack, do not trust this server's results"
    )]
    ProofFailed {
        /// Fingerprint of the key the proof was checked against.
        pinned: String,
    },
    /// The server's public key is not the pinned one.
    #[error(
        "the server's public key {served} is not the pinned key {pinned}; if the operator rotated the key, verify the new one out of band and pin it"
    )]
    KeyMismatch {
        /// Fingerprint of the pinned key.
        pinned: String,
        /// Fingerprint of the key the server now presents.
        served: String,
    },
    /// The server answered a batch with the wrong number of elements.
    #[error("the server returned {got} elements for {sent} sent")]
    ResponseLength {
        /// Elements sent.
        sent: usize,
        /// Elements received.
        got: usize,
    },
    /// The server returned the blinded elements themselves.
    #[error("the server reflected the blinded elements instead of evaluating them")]
    ReflectedElement,
    /// The server's index is not one this client can use.
    #[error("unsupported index: {0}")]
    UnsupportedIndex(String),
    /// A bucket the client needed was not sent, or was malformed.
    #[error("bucket {bucket}: {reason}")]
    BadBucket {
        /// The bucket number.
        bucket: u32,
        /// What was wrong.
        reason: String,
    },
    /// Another gRPC error.
    #[error("server error: {}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    /// A protocol-level error.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A local I/O error (cache, CA file).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A task of the check panicked or was cancelled. The whole check fails:
    /// a lost task never shortens the results into a clean-looking answer.
    #[error(
        "internal error: a {task} task failed ({source}); the check did not finish, so its results are incomplete"
    )]
    TaskFailed {
        /// Which step the task ran.
        task: &'static str,
        /// Why it ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl ClientError {
    /// Whether the server said the index id is unknown or stale
    /// (NOT_FOUND, FAILED_PRECONDITION): the index was replaced, and
    /// refetching `IndexInfo` is the fix.
    pub(crate) fn is_stale_index(&self) -> bool {
        use tonic::Code;
        matches!(self, ClientError::Rpc(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition))
    }
}

/// `Result` with [`ClientError`] as the default error.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
