//! The client's error type. Every message says what to do next.

use std::time::Duration;

use breachcheck_proto::ProtocolError;

/// Everything a check can fail with. A failure is never reported as "not
/// found": any doubt about the answer is an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint is malformed or the connection failed.
    #[cfg(feature = "grpc")]
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
    /// The quota is used up, and waiting for it is not worth it: a daily cap
    /// (or a refill longer than the client's `max_quota_wait`). A refill of
    /// the evaluation rate within that wait is waited for, never an error.
    #[error("{message}{}; try again then, or ask the operator for a larger quota", resets_at(*.retry_after))]
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
    /// The server serves an index other than the pinned one (`--pin-index`).
    #[error(
        "the server serves index {served}, not the pinned index {pinned}; if the operator rebuilt the index, verify the new id out of band and pin it"
    )]
    IndexMismatch {
        /// The pinned index id, hex.
        pinned: String,
        /// The index id the server presents, hex.
        served: String,
    },
    /// The server's key is not the one the trust file recorded for it on
    /// first use (trust on first use, like ssh's `known_hosts`).
    #[error(
        "THE KEY OF {server} HAS CHANGED: it was {trusted} when first used (recorded in {file}), it is now {served}. This can be an attack; do not trust this server's results. If the operator rotated the key, verify the new one out of band, then remove the line for {server} from {file}"
    )]
    TrustedKeyChanged {
        /// The server, as recorded.
        server: String,
        /// The trust file.
        file: String,
        /// Fingerprint of the key recorded on first use.
        trusted: String,
        /// Fingerprint of the key the server now presents.
        served: String,
    },
    /// The trust file cannot be read or written, or is malformed.
    #[error("trust file {file}: {reason}")]
    TrustFile {
        /// The trust file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The server's floor on prefix bits is above what this client is
    /// allowed to send: answering would tell the server more about each
    /// number than the caller agreed to.
    #[error(
        "the server requires at least {required} prefix bits (about {} candidates per number), more than the {allowed} allowed (about {} candidates); nothing was sent. To accept, raise --max-prefix-bits to {required}",
        crate::display::human_count(crate::display::anonymity_set(*.required)),
        crate::display::human_count(crate::display::anonymity_set(*.allowed))
    )]
    PrefixBitsRefused {
        /// The most prefix bits the caller allows.
        allowed: u32,
        /// The server's `min_prefix_bits` (capped at its bucket bits).
        required: u32,
    },
    /// The server stopped answering in the middle of a call, or a call
    /// outlasted its deadline.
    #[error(
        "the server at {server} {}; try again later, or raise --timeout / --idle-timeout if the link is slow",
        if *.idle { format!("sent nothing for {:.1} s during {}", .waited.as_secs_f64(), .call) } else { format!("did not finish {} within {:.1} s", .call, .waited.as_secs_f64()) }
    )]
    Timeout {
        /// The endpoint.
        server: String,
        /// The RPC.
        call: &'static str,
        /// How long the client waited.
        waited: Duration,
        /// Whether it was the idle timeout between two messages (else the
        /// deadline of the whole call).
        idle: bool,
    },
    /// A bucket the client needed was not sent, or was malformed.
    #[error("bucket {bucket}: {reason}")]
    BadBucket {
        /// The bucket number.
        bucket: u32,
        /// What was wrong.
        reason: String,
    },
    /// A PIR fetch failed on this side: a setup that does not fit the
    /// pinned index, or an answer that does not decode.
    #[error("PIR: {0}")]
    Pir(String),
    /// Another gRPC error.
    #[cfg(feature = "grpc")]
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
    #[cfg(feature = "grpc")]
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
    #[cfg(feature = "grpc")]
    pub(crate) fn is_stale_index(&self) -> bool {
        use tonic::Code;
        matches!(self, ClientError::Rpc(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition))
    }
}

/// ", resetting at 2026-05-04 00:00:00 UTC (in 3 h 12 min)" for a refill
/// time, or nothing.
fn resets_at(retry_after: Option<Duration>) -> String {
    let Some(d) = retry_after else {
        return String::new();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // A server names the refill time: no value of it may overflow here.
    let at = now.saturating_add(d).as_secs();
    let (days, secs) = (at / 86_400, at % 86_400);
    let (y, m, day) = civil_from_days(days);
    let s = d.as_secs();
    let left = if s >= 3600 {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    };
    format!(
        ", resetting at {y:04}-{m:02}-{day:02} {:02}:{:02}:{:02} UTC (in {left})",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `Result` with [`ClientError`] as the default error.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn a_quota_error_names_the_reset_time() {
        let e = ClientError::QuotaExhausted {
            message: "quota exhausted: daily evaluation cap; refills in 7200 s".into(),
            retry_after: Some(Duration::from_secs(7200)),
        };
        let s = e.to_string();
        assert!(
            s.contains("resetting at ") && s.contains(" UTC (in 2 h 0 min)"),
            "{s}"
        );
    }
}
