//! # breachcheck-proto
//!
//! The protocol both sides of breachcheck share: the gRPC types, RFC 9497
//! VOPRF on ristretto255-SHA512, the canonical E.164 form of a phone number,
//! and the k-anonymity buckets with their payload codec. `docs/PROTOCOL.md`
//! in the repository is the byte-exact specification.
//!
//! # Layout
//!
//! The modules are private; everything public is in the one flat list of
//! exports below (`breachcheck_proto::Thing`, never `…::module::Thing`).
//!
//! * `oprf`: RFC 9497 OPRF (0x00) and VOPRF (0x01): [`blind`],
//!   [`ServerKey::blind_evaluate`], [`finalize`], [`ServerKey::evaluate`],
//!   [`ServerKey::derive_key_pair`], batched DLEQ proofs.
//! * `phone`: one canonicalisation of phone numbers to E.164 ([`PhoneNumber`]),
//!   shape rules only.
//! * `bucket`: bucket values, prefix arithmetic, fingerprints, labels and
//!   the Golomb-coded bucket [`Payload`].
//! * `merkle`: the bucket Merkle tree ([`MerkleTree`], [`verify_bucket`]) and
//!   the index id ([`IndexLayout::index_id`]) that binds key, layout and buckets.
//! * `text`: [`TextReader`], the one reader of number lists and dumps (BOM,
//!   UTF-16, a line-length cap), so both sides read a file the same way.
//! * `codec`: [`Reader`], the one byte cursor of every fixed-layout decoder.
//! * [`pb`]: the generated gRPC messages, client and server.
//! * `error`: [`ProtocolError`], the one error type of this crate.
//!
//! # The protocol in one example
//!
//! ```
//! use breachcheck_proto::{blind_batch, fingerprint, finalize, Mode, PhoneNumber, Region, ServerKey};
//!
//! let mut rng = rand::rng();
//! // Server: a key, and the index entry for a leaked number.
//! let key = ServerKey::random(Mode::Voprf, &mut rng);
//! let leaked = PhoneNumber::parse("+86 138-0013-8000", None)?;
//! let stored = fingerprint(&key.evaluate(leaked.as_bytes())?, 44);
//!
//! // Client: canonicalise and blind its own number; only `blinded` is sent.
//! let mine = PhoneNumber::parse("13800138000", Some(Region::cn()))?;
//! let inputs = [mine.as_bytes()];
//! let (blinds, blinded) = blind_batch(Mode::Voprf, &inputs, &mut rng)?;
//!
//! // Server: evaluate the batch with one proof.
//! let eval = key.blind_evaluate(&blinded, &mut rng)?;
//!
//! // Client: verify the proof against the pinned key, unblind, compare.
//! let proof = eval.proof.as_ref().ok_or(breachcheck_proto::ProtocolError::Verify)?;
//! let out = finalize(
//!     Mode::Voprf, &inputs, &blinds, &blinded, &eval.elements,
//!     Some((key.public_key(), proof)),
//! )?;
//! assert_eq!(fingerprint(&out[0], 44), stored);
//! # Ok::<(), breachcheck_proto::ProtocolError>(())
//! ```

mod backend;
mod bucket;
mod codec;
mod error;
mod merkle;
mod oprf;
mod phone;
mod pir;
mod text;

/// The generated gRPC code for `breachcheck.v1` (messages, client, server).
pub mod pb {
    #![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
    #![allow(clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/breachcheck.v1.rs"));

    /// The encoded `FileDescriptorSet` of `breachcheck.v1`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/breachcheck_descriptor.bin"));
}

// Exports: the whole public surface, in one list.
pub use backend::{build_description, curve_backend, long_version};
pub use bucket::{
    BUCKET_CONTEXT, FALSE_POSITIVE_BITS, LABEL_CONTEXT, MAX_BUCKET_BITS, MAX_LABEL_WIDTH,
    PAYLOAD_HEADER_LEN, PAYLOAD_VERSION, Payload, bucket_value, buckets_under_prefix,
    encode_payload, fingerprint, fingerprint_bits_for, golomb_parameter, label_key, seal_label,
    top_bits,
};
pub use codec::{CodecError, Reader};
pub use error::{ProtocolError, Result};
pub use merkle::{
    INDEX_ID_CONTEXT, IndexLayout, LEAF_CONTEXT, MERKLE_HASH_LEN, MerkleTree, NODE_CONTEXT,
    leaf_hash, node_hash, verify_bucket,
};
pub use oprf::{
    Blind, BlindEvaluation, BlindedElement, ELEMENT_LEN, EvaluatedElement, MAX_INPUT_LEN,
    MAX_PROOF_BATCH, Mode, OUTPUT_LEN, Output, PROOF_LEN, Proof, PublicKey, SCALAR_LEN, SUITE,
    ServerKey, blind, blind_batch, finalize,
};
pub use phone::{PhoneError, PhoneNumber, Region, mask};
pub use pir::{
    PIR_INSTANCE_BYTES, PIR_INSTANCE_SYMBOLS, PIR_MAX_INSTANCES, PIR_MIN_BUCKET_BITS,
    PIR_SETUP_CONTEXT, PIR_SYMBOL_BITS, PirShape, PirShapeError, bytes_to_symbols, pir_setup_seed,
    symbols_to_bytes,
};
pub use text::{MAX_LINE, OVERLONG_LINE, TextEncoding, TextReader};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "breachcheck.v1.BreachCheck";

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::pb;

    #[test]
    fn descriptor_set_names_the_service_and_its_rpcs() {
        let fds = pb::FILE_DESCRIPTOR_SET;
        for needle in [
            &b"breachcheck.v1"[..],
            b"BreachCheck",
            b"GetIndexInfo",
            b"Evaluate",
            b"GetBuckets",
        ] {
            assert!(fds.windows(needle.len()).any(|w| w == needle));
        }
    }

    /// The field numbers are the wire contract of DESIGN.md: pin them.
    #[test]
    fn wire_field_numbers_match_the_contract() {
        let req = pb::EvaluateRequest {
            index_id: vec![1],
            blinded_elements: vec![vec![2]],
        };
        assert_eq!(req.encode_to_vec(), [0x0a, 1, 1, 0x12, 1, 2]);
        let resp = pb::EvaluateResponse {
            evaluated_elements: vec![vec![3]],
            proof: vec![4],
        };
        assert_eq!(resp.encode_to_vec(), [0x0a, 1, 3, 0x12, 1, 4]);
        let gb = pb::GetBucketsRequest {
            index_id: vec![5],
            prefix_bits: 6,
            prefixes: vec![7],
        };
        assert_eq!(gb.encode_to_vec(), [0x0a, 1, 5, 0x10, 6, 0x1a, 1, 7]);
        let chunk = pb::BucketChunk {
            bucket: 8,
            payload: vec![9].into(),
            bucket_proof: vec![10],
        };
        assert_eq!(chunk.encode_to_vec(), [0x08, 8, 0x12, 1, 9, 0x1a, 1, 10]);
        let info = pb::IndexInfo {
            suite: "s".into(),
            mode: 1,
            public_key: vec![2],
            index_id: vec![3],
            bucket_bits: 4,
            fingerprint_bits: 5,
            entry_count: 6,
            breaches: vec![pb::Breach {
                id: "i".into(),
                name: "n".into(),
                date: "d".into(),
                description: "x".into(),
                data_classes: vec!["c".into()],
            }],
            max_batch: 9,
            min_prefix_bits: 10,
            bucket_root: vec![11],
            bucket_entries: 12,
            payload_len: 13,
        };
        assert_eq!(
            info.encode_to_vec(),
            [
                0x0a, 1, b's', 0x10, 1, 0x1a, 1, 2, 0x22, 1, 3, 0x28, 4, 0x30, 5, 0x38, 6, 0x42,
                15, 0x0a, 1, b'i', 0x12, 1, b'n', 0x1a, 1, b'd', 0x22, 1, b'x', 0x2a, 1, b'c',
                0x48, 9, 0x50, 10, 0x5a, 1, 11, 0x60, 12, 0x68, 13
            ]
        );
    }
}
