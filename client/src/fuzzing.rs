//! The client's checks of untrusted messages, one function per message,
//! for the fuzz targets in `fuzz/` and their seed replay in the test suite.
//! Hidden from the documentation and not a stable API: each function only
//! forwards to the check the client itself runs.

use std::collections::BTreeSet;

use breachcheck_proto::pb::{BucketChunk, EvaluateResponse, IndexInfo};
use breachcheck_proto::{BlindedElement, PublicKey};

use crate::error::Result;

/// What the client checks of an `IndexInfo` before using it: the suite and
/// key, and the layout and the index id's commitment to it.
///
/// # Errors
///
/// The client's error for an IndexInfo it refuses.
pub fn index_info(info: &IndexInfo) -> Result<()> {
    crate::checks::served_key(info)?;
    crate::checks::check_layout(info)
}

/// What the client checks of one bucket of `info`'s index (which must pass
/// [`index_info`]): length, Merkle proof, Golomb parameter, strict decode.
/// Returns the entries decoded.
///
/// # Errors
///
/// The client's [`ClientError::BadBucket`](crate::ClientError::BadBucket).
pub fn bucket(info: &IndexInfo, chunk: &BucketChunk) -> Result<usize> {
    crate::checks::decode(chunk.bucket, &chunk.payload, &chunk.bucket_proof, info)
        .map(|p| p.fingerprints.len())
}

/// What the client checks of the bucket numbers of a GetBuckets answer:
/// each of `sent` asked for (in `expected`) and sent once, and every one
/// asked for sent.
///
/// # Errors
///
/// The client's [`ClientError::BadBucket`](crate::ClientError::BadBucket).
pub fn answer(expected: BTreeSet<u32>, sent: &[u32]) -> Result<()> {
    crate::checks::check_bucket_numbers(expected, sent)
}

/// What the client checks of an Evaluate response to `blinded` before
/// verifying its proof under `pinned`. Returns the elements accepted.
///
/// # Errors
///
/// The client's error for a response it refuses.
pub fn evaluate_response(
    blinded: &[BlindedElement],
    resp: &EvaluateResponse,
    pinned: &PublicKey,
) -> Result<usize> {
    crate::checks::check_response(blinded, resp, pinned).map(|(e, _)| e.len())
}
