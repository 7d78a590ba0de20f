//! # breachcheck-proto
//!
//! The protocol both sides of breachcheck share: the gRPC types, RFC 9497
//! VOPRF on ristretto255-SHA512, the canonical E.164 form of a phone number,
//! and the k-anonymity buckets with their payload codec. `docs/PROTOCOL.md`
//! in the repository is the byte-exact specification.
//!
//! # Layout
//!
//! * [`oprf`]: RFC 9497 OPRF (0x00) and VOPRF (0x01): `blind`, `blind_evaluate`,
//!   `finalize`, `evaluate`, `derive_key_pair`, batched DLEQ proofs.
//! * [`phone`]: one canonicalisation of phone numbers to E.164, shape rules only.
//! * [`bucket`]: bucket values, prefix arithmetic, fingerprints, labels and
//!   the Golomb-coded bucket payload.
//! * [`pb`]: the generated gRPC messages, client and server.
//! * [`ProtocolError`]: the one error type of this crate.
//!
//! # The protocol in one example
//!
//! ```
//! use breachcheck_proto::{bucket, oprf, Mode, PhoneNumber, Region, ServerKey};
//!
//! let mut rng = rand::rng();
//! // Server: a key, and the index entry for a leaked number.
//! let key = ServerKey::random(Mode::Voprf, &mut rng);
//! let leaked = PhoneNumber::parse("+86 138-0013-8000", None)?;
//! let stored = bucket::fingerprint(&key.evaluate(leaked.as_bytes())?, 44);
//!
//! // Client: canonicalise and blind its own number; only `blinded` is sent.
//! let mine = PhoneNumber::parse("13800138000", Some(Region::cn()))?;
//! let inputs = [mine.as_bytes()];
//! let (blinds, blinded) = oprf::blind_batch(Mode::Voprf, &inputs, &mut rng)?;
//!
//! // Server: evaluate the batch with one proof.
//! let eval = key.blind_evaluate(&blinded, &mut rng)?;
//!
//! // Client: verify the proof against the pinned key, unblind, compare.
//! let proof = eval.proof.as_ref().ok_or(breachcheck_proto::ProtocolError::Verify)?;
//! let out = oprf::finalize(
//!     Mode::Voprf, &inputs, &blinds, &blinded, &eval.elements,
//!     Some((key.public_key(), proof)),
//! )?;
//! assert_eq!(bucket::fingerprint(&out[0], 44), stored);
//! # Ok::<(), breachcheck_proto::ProtocolError>(())
//! ```

pub mod bucket;
mod error;
pub mod oprf;
pub mod phone;

/// The generated gRPC code for `breachcheck.v1` (messages, client, server).
pub mod pb {
    #![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("breachcheck.v1");

    /// The encoded `FileDescriptorSet` of `breachcheck.v1`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("breachcheck_descriptor");
}

pub use error::{ProtocolError, Result};
pub use oprf::{
    Blind, BlindEvaluation, BlindedElement, EvaluatedElement, Mode, Output, Proof, PublicKey,
    ServerKey,
};
pub use phone::{PhoneError, PhoneNumber, Region};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "breachcheck.v1.BreachCheck";
