//! The protocol error type.

use crate::phone::PhoneError;

/// Everything that can go wrong in the protocol layer. Deliberately coarse:
/// every decoding failure of an element is one variant, and no variant carries
/// the offending bytes (they may be secret-derived).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An element is not 32 bytes, not a canonical ristretto255 encoding, or
    /// the identity (RFC 9497 §4.1 DeserializeError).
    #[error("invalid element: not a canonical, non-identity ristretto255 encoding of 32 bytes")]
    InvalidElement,
    /// A scalar is not 32 bytes, not below the group order, or (for keys and
    /// blinds) zero; a proof is not 64 bytes.
    #[error("invalid scalar or proof encoding")]
    InvalidScalar,
    /// The input hashed to the identity element (RFC 9497 InvalidInputError).
    #[error("input hashes to the identity element")]
    InvalidInput,
    /// A private input is longer than 65535 bytes.
    #[error("input longer than 65535 bytes")]
    InputTooLong,
    /// A batch with no elements.
    #[error("empty batch")]
    EmptyBatch,
    /// A batch larger than allowed.
    #[error("batch of {len} elements is above the limit of {max}")]
    BatchTooLarge {
        /// Elements in the batch.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// Lists that must be parallel (inputs, blinds, elements) differ in length.
    #[error("batch lists differ in length")]
    BatchLengthMismatch,
    /// The DLEQ proof does not verify against the public key (RFC 9497
    /// VerifyError): the server did not use the key it claims.
    #[error("proof verification failed: the server did not evaluate with the pinned key")]
    Verify,
    /// DeriveKeyPair found no non-zero scalar in 256 tries.
    #[error("key derivation failed")]
    DeriveKeyPair,
    /// A phone number could not be canonicalised.
    #[error("invalid phone number: {0}")]
    InvalidPhoneNumber(#[from] PhoneError),
    /// A bucket payload is malformed.
    #[error("malformed bucket payload: {0}")]
    InvalidPayload(&'static str),
}

/// `Result` with [`ProtocolError`] as the default error.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
