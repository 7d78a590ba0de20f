//! The server's error type, and the one place it becomes a gRPC status.

use std::io;
use std::path::PathBuf;

use breachcheck_proto::ProtocolError;

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
    /// Bad input to a build (not bad rows: those are counted, not fatal).
    #[error("{0}")]
    Input(String),
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
    /// A format version this build does not read.
    #[error("unsupported format version {0}")]
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
    /// The directory checksum does not match.
    #[error("bucket directory checksum mismatch (corrupted)")]
    DirectoryChecksum,
    /// The full-body hash does not match the index id.
    #[error("body hash mismatch (corrupted)")]
    BodyChecksum,
    /// A header field out of range.
    #[error("invalid header field: {0}")]
    Field(&'static str),
    /// A directory entry out of range.
    #[error("bucket directory entry out of range")]
    Directory,
}

/// `Result` with [`ServerError`] as the default error.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;

/// Wraps an I/O error with its path.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ServerError {
    let path = path.into();
    move |source| ServerError::Io { path, source }
}

impl From<ServerError> for tonic::Status {
    /// The one mapping of internal errors to the wire. Protocol errors are the
    /// caller's fault and say what was wrong; anything else is logged here and
    /// answered with an opaque INTERNAL.
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::Protocol(p) => tonic::Status::invalid_argument(p.to_string()),
            other => {
                tracing::error!(error = %other, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
