//! The client's checks of what a server sends, and the small decisions of a
//! check that need no network: which key to pin, which prefixes to ask
//! for, which bucket a number is in, whether an Evaluate response and a
//! bucket payload can be trusted. Transport-free: the SDK runs them over
//! tonic, and the browser client (`web/`, on wasm32) runs the same
//! functions over grpc-web, so there is one implementation of every check.
//! A doubt is always an error ([`ClientError`]), never "not found".

use std::collections::BTreeSet;

use breachcheck_proto::pb::{Breach, BucketChunk, EvaluateResponse, IndexInfo};
use breachcheck_proto::{
    BlindedElement, EvaluatedElement, IndexLayout, MAX_BUCKET_BITS, MAX_LABEL_WIDTH, Mode,
    PAYLOAD_HEADER_LEN, Payload, PhoneNumber, Proof, PublicKey, SUITE, bucket_value,
    fingerprint_bits_for, golomb_parameter, top_bits, verify_bucket,
};
use subtle::ConstantTimeEq;

use crate::BreachRef;
use crate::error::{ClientError, Result};

/// Largest response message accepted (a bucket of a big, coarse index).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// The default prefix bits: `min(k, 14)`.
pub const DEFAULT_PREFIX_BITS: u32 = 14;
/// The most entries any payload may claim. An honest payload spends more
/// than 32 bits per entry (`f = 32 + ceil(log2 P)`-bit fingerprints
/// Golomb-code to about `f - log2 P + 1` bits each), so one that fits the
/// largest message accepted holds fewer than `MAX_RESPONSE_BYTES / 4`.
pub const MAX_BUCKET_ENTRIES: u32 = (MAX_RESPONSE_BYTES / 4) as u32;

/// The longest payload accepted: what fits the largest response with its
/// Merkle proof and framing to spare (the per-call message cap is the
/// payload length plus the proof, so no layout may raise it past this).
pub const MAX_PAYLOAD_LEN: u64 = (MAX_RESPONSE_BYTES - (64 << 10)) as u64;

/// Checks that `info`'s bucket layout is one this client can use, and that
/// its index id commits to its key, layout and bucket root (so that pinning
/// the id pins every bucket).
///
/// # Errors
///
/// [`ClientError::UnsupportedIndex`] for `k` above [`MAX_BUCKET_BITS`], no
/// entry per bucket or more than [`MAX_BUCKET_ENTRIES`] or than the index's
/// entry count, `f` other than `32 + ceil(log2 P)`, payloads shorter than
/// their header or longer than [`max_payload_len`], malformed key, root or
/// id, or an index id that is not the commitment to the rest.
pub fn check_layout(info: &IndexInfo) -> Result<()> {
    let unsupported = |why: &str| Err(ClientError::UnsupportedIndex(why.into()));
    let p = info.bucket_entries;
    if info.bucket_bits > MAX_BUCKET_BITS || p == 0 || p > MAX_BUCKET_ENTRIES {
        return unsupported("bucket layout out of range");
    }
    // Every bucket is padded to the largest one, which holds at most every
    // entry of the index (and at least one, in an empty index).
    if u64::from(p) > info.entry_count.max(1) {
        return unsupported("more entries per bucket than in the whole index");
    }
    if info.fingerprint_bits != fingerprint_bits_for(p) {
        return unsupported("fingerprint bits are not 32 + ceil(log2 bucket_entries)");
    }
    let len = info.payload_len as usize;
    let longest = max_payload_len(p, info.fingerprint_bits).min(MAX_PAYLOAD_LEN);
    if len < PAYLOAD_HEADER_LEN || len as u64 > longest {
        return unsupported("payload length out of range for the bucket entries");
    }
    let (Ok(public_key), Ok(root), Ok(id)) = (
        <[u8; 32]>::try_from(info.public_key.as_slice()),
        <[u8; 32]>::try_from(info.bucket_root.as_slice()),
        <[u8; 32]>::try_from(info.index_id.as_slice()),
    ) else {
        return unsupported("public key, bucket root and index id must be 32 bytes each");
    };
    let layout = IndexLayout {
        public_key,
        bucket_bits: info.bucket_bits,
        fingerprint_bits: info.fingerprint_bits,
        bucket_entries: info.bucket_entries,
        payload_len: info.payload_len,
    };
    if layout.index_id(&root) != id {
        return unsupported(
            "the index id is not the commitment to the advertised key, layout and bucket root: \
             this server's description cannot be trusted",
        );
    }
    Ok(())
}

/// The bucket of `number` in an index of `k` bucket bits.
pub fn bucket_of(number: &PhoneNumber, k: u32) -> u32 {
    top_bits(bucket_value(number.as_bytes()), k)
}

/// The prefix bits `j` to ask by for `info`'s index: `requested` (default
/// [`DEFAULT_PREFIX_BITS`]), at most `allowed` (default: `requested`) and
/// `k`, raised to the server's floor `min(min_prefix_bits, k)` only when
/// `allowed` allows it.
///
/// # Errors
///
/// [`ClientError::PrefixBitsRefused`] when the floor is above `allowed`.
pub fn prefix_bits(requested: Option<u32>, allowed: Option<u32>, info: &IndexInfo) -> Result<u32> {
    let k = info.bucket_bits;
    let wish = requested.unwrap_or(DEFAULT_PREFIX_BITS);
    let allowed = allowed.unwrap_or(wish);
    let floor = info.min_prefix_bits.min(k);
    let j = wish.min(allowed).min(k);
    if floor <= j {
        Ok(j)
    } else if floor <= allowed {
        Ok(floor)
    } else {
        Err(ClientError::PrefixBitsRefused {
            allowed,
            required: floor,
        })
    }
}

/// The entries every bucket of `info`'s index holds: `bucket_entries`, which
/// the index id commits to ([`check_layout`] also bounds it by
/// [`MAX_BUCKET_ENTRIES`], so a lying IndexInfo cannot make one payload
/// reserve more memory than an honest message could fill).
pub fn max_entries(info: &IndexInfo) -> u32 {
    info.bucket_entries.min(MAX_BUCKET_ENTRIES)
}

/// The longest payload an honest build writes for `p` entries of `f` bits
/// (docs/PROTOCOL.md §4): the header, labels of at most
/// [`MAX_LABEL_WIDTH`] bytes, and the longest Golomb stream of `p` sorted
/// values below `2^f` with parameter `M = golomb_parameter(p, f)`: the
/// quotients sum to at most `(2^f - 1) / M`, and each code adds one stop bit
/// and at most `b = ceil(log2 M)` remainder bits.
pub fn max_payload_len(p: u32, f: u32) -> u64 {
    let m = u128::from(golomb_parameter(p, f).max(1));
    let top = if f >= 64 {
        u128::from(u64::MAX)
    } else {
        (1u128 << f) - 1
    };
    let b = u128::from(128 - (m - 1).leading_zeros()).min(64);
    let bits = top / m + u128::from(p) * (1 + b);
    let len =
        PAYLOAD_HEADER_LEN as u128 + u128::from(p) * MAX_LABEL_WIDTH as u128 + bits.div_ceil(8);
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Which GetBuckets requests fetch a set of missing buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixPlan {
    /// Prefix bits (0: the whole index).
    pub j: u32,
    /// The prefixes to ask for, sorted (`[0]` for the whole index).
    pub prefixes: Vec<u32>,
}

impl PrefixPlan {
    /// The plan for the `missing` buckets of a `k`-bit index, asked by `j`
    /// bits (`j ≤ k`), from a server whose floor is `floor` (a whole-index
    /// download is `j = 0`, which only a floor of 0 allows).
    pub fn new(k: u32, j: u32, floor: u32, missing: &BTreeSet<u32>) -> Self {
        let shift = k - j.min(k);
        let prefixes: BTreeSet<u32> = missing.iter().map(|&b| b >> shift).collect();
        // Most of the index anyway: fetch it whole, and reveal nothing.
        let most = (prefixes.len() as u64) << shift >= (1u64 << k) / 2;
        if j == 0 || (most && floor == 0) {
            PrefixPlan {
                j: 0,
                prefixes: vec![0],
            }
        } else {
            PrefixPlan {
                j,
                prefixes: prefixes.into_iter().collect(),
            }
        }
    }
}

/// [`Answer`] over the bucket numbers `sent`, for the fuzz targets.
///
/// # Errors
///
/// [`ClientError::BadBucket`] for a bucket not asked for, sent twice, or missing.
pub fn check_bucket_numbers(expected: BTreeSet<u32>, sent: &[u32]) -> Result<()> {
    let mut a = Answer::new(expected);
    for &b in sent {
        a.accept(&BucketChunk {
            bucket: b,
            ..BucketChunk::default()
        })?;
    }
    a.finish()
}

/// The buckets a GetBuckets answer must hold, checked chunk by chunk: each
/// asked for, and each once (so a surplus chunk is refused as soon as it
/// comes, whatever the server keeps sending).
#[derive(Debug)]
pub struct Answer {
    expected: BTreeSet<u32>,
    seen: BTreeSet<u32>,
}

impl Answer {
    /// An answer that must hold exactly the buckets `expected`.
    pub fn new(expected: BTreeSet<u32>) -> Self {
        Answer {
            expected,
            seen: BTreeSet::new(),
        }
    }

    /// Accepts the chunk of a bucket asked for and not yet sent.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadBucket`] for a bucket not asked for or sent twice.
    pub fn accept(&mut self, chunk: &BucketChunk) -> Result<()> {
        let b = chunk.bucket;
        if !self.expected.contains(&b) {
            return Err(bad(b, "the server sent a bucket that was not asked for"));
        }
        if !self.seen.insert(b) {
            return Err(bad(b, "the server sent this bucket twice"));
        }
        Ok(())
    }

    /// The first bucket asked for and not yet sent (the last one asked when
    /// all were).
    pub fn next_missing(&self) -> u32 {
        let mut missing = self.expected.difference(&self.seen);
        missing
            .next()
            .or_else(|| self.expected.last())
            .copied()
            .unwrap_or_default()
    }

    /// Whether `bucket` was sent.
    pub fn was_sent(&self, bucket: u32) -> bool {
        self.seen.contains(&bucket)
    }

    /// At the end of the answer: every bucket asked for was sent.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadBucket`] naming the first bucket not sent.
    pub fn finish(&self) -> Result<()> {
        match self.expected.difference(&self.seen).next() {
            Some(&b) => Err(bad(b, "the server did not send it")),
            None => Ok(()),
        }
    }
}

/// Checks the payload of `bucket` against `info`'s bucket root with its
/// Merkle `proof` (before anything is allocated for it), then decodes it with
/// `info`'s shape.
///
/// # Errors
///
/// [`ClientError::BadBucket`] for a payload of the wrong length, a failing
/// Merkle proof, another Golomb parameter, or one that does not decode to
/// exactly `bucket_entries` entries.
pub fn decode(bucket: u32, bytes: &[u8], proof: &[u8], info: &IndexInfo) -> Result<Payload> {
    if bytes.len() != info.payload_len as usize {
        return Err(bad(bucket, "the payload is not the index's payload length"));
    }
    let root = <[u8; 32]>::try_from(info.bucket_root.as_slice()).unwrap_or_default();
    if !verify_bucket(bucket, bytes, proof, info.bucket_bits, &root) {
        return Err(bad(
            bucket,
            "the payload is not the one the index id names (its Merkle proof fails)",
        ));
    }
    // The Golomb parameter is the one §4 derives from P and f: every code
    // then takes about 32 bits, so the fingerprints decoded from `bytes`
    // take at most about twice as many bytes.
    let m = bytes
        .get(8..PAYLOAD_HEADER_LEN)
        .and_then(|m| <[u8; 8]>::try_from(m).ok())
        .map(u64::from_le_bytes);
    if m != Some(golomb_parameter(info.bucket_entries, info.fingerprint_bits)) {
        return Err(bad(
            bucket,
            "the payload's Golomb parameter is not the index's",
        ));
    }
    let p = Payload::decode_expecting(bytes, info.fingerprint_bits, max_entries(info)).map_err(
        |e| ClientError::BadBucket {
            bucket,
            reason: e.to_string(),
        },
    )?;
    if p.fingerprints.len() != info.bucket_entries as usize {
        return Err(bad(
            bucket,
            "the payload does not hold bucket_entries entries",
        ));
    }
    Ok(p)
}

/// [`ClientError::BadBucket`] for `bucket`, for `reason`.
pub fn bad(bucket: u32, reason: &str) -> ClientError {
    ClientError::BadBucket {
        bucket,
        reason: reason.to_owned(),
    }
}

/// The checks of an Evaluate response before its proof is verified: one
/// element per element sent, each a valid element and none the blinded
/// element itself, and a well-formed proof.
///
/// # Errors
///
/// [`ClientError::ResponseLength`], [`ClientError::Protocol`] for an invalid
/// element, [`ClientError::ReflectedElement`], or
/// [`ClientError::ProofFailed`] for a malformed proof.
pub fn check_response(
    blinded: &[BlindedElement],
    resp: &EvaluateResponse,
    pinned: &PublicKey,
) -> Result<(Vec<EvaluatedElement>, Proof)> {
    if resp.evaluated_elements.len() != blinded.len() {
        return Err(ClientError::ResponseLength {
            sent: blinded.len(),
            got: resp.evaluated_elements.len(),
        });
    }
    let mut evaluated = Vec::with_capacity(blinded.len());
    for (e, b) in resp.evaluated_elements.iter().zip(blinded) {
        let e = EvaluatedElement::from_bytes(e)?;
        // A server returning what it was sent has not evaluated.
        if bool::from(e.as_bytes().ct_eq(b.as_bytes())) {
            return Err(ClientError::ReflectedElement);
        }
        evaluated.push(e);
    }
    let proof = Proof::from_bytes(&resp.proof).map_err(|_| ClientError::ProofFailed {
        pinned: pinned.fingerprint(),
    })?;
    Ok((evaluated, proof))
}

/// The public key `info` serves, if its suite and mode are this client's
/// (ristretto255-SHA512, VOPRF) and the key is a valid element.
///
/// # Errors
///
/// [`ClientError::UnsupportedIndex`] for another suite or mode or a key that
/// is not 32 bytes; [`ClientError::Protocol`] for an invalid element.
pub fn served_key(info: &IndexInfo) -> Result<[u8; 32]> {
    if info.suite != SUITE || info.mode != u32::from(Mode::Voprf.id()) {
        return Err(ClientError::UnsupportedIndex(format!(
            "suite {:?} mode {}",
            info.suite, info.mode
        )));
    }
    let served: [u8; 32] = info
        .public_key
        .as_slice()
        .try_into()
        .map_err(|_| ClientError::UnsupportedIndex("public key is not 32 bytes".into()))?;
    PublicKey::from_bytes(&served)?;
    Ok(served)
}

/// The key to pin for `served`: the one `pinned` already (by the caller or
/// by an earlier IndexInfo), else `served` itself.
///
/// # Errors
///
/// [`ClientError::KeyMismatch`] if a pinned key is not `served`.
pub fn pin(pinned: Option<[u8; 32]>, served: [u8; 32]) -> Result<[u8; 32]> {
    match pinned {
        Some(pin) if pin != served => Err(ClientError::KeyMismatch {
            pinned: key_fingerprint(&pin),
            served: key_fingerprint(&served),
        }),
        _ => Ok(served),
    }
}

/// The human-comparable fingerprint of a key, for error messages.
pub fn key_fingerprint(key: &[u8; 32]) -> String {
    PublicKey::from_bytes(key)
        .map(|k| k.fingerprint())
        .unwrap_or_else(|_| hex::encode(&key[..8]))
}

/// The breaches of `info` whose bits are set in `mask` (bit `i`: breach `i`).
pub fn breaches_in(info: &IndexInfo, mask: u32) -> impl Iterator<Item = &Breach> {
    info.breaches
        .iter()
        .take(32)
        .enumerate()
        .filter(move |(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, b)| b)
}

/// [`breaches_in`], as the SDK reports them.
pub fn breach_refs(info: &IndexInfo, mask: u32) -> Vec<BreachRef> {
    breaches_in(info, mask).map(BreachRef::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(k: u32, entry_count: u64) -> IndexInfo {
        IndexInfo {
            bucket_bits: k,
            entry_count,
            bucket_entries: u32::try_from(entry_count).unwrap_or(u32::MAX).max(1),
            fingerprint_bits: 44,
            ..IndexInfo::default()
        }
    }

    #[test]
    fn few_buckets_are_asked_by_prefix() {
        let plan = PrefixPlan::new(8, 4, 0, &BTreeSet::from([0x12, 0x13, 0xA0]));
        assert_eq!(plan.j, 4);
        assert_eq!(plan.prefixes, [0x1, 0xA]);
    }

    #[test]
    fn half_the_index_or_more_is_fetched_whole() {
        let missing: BTreeSet<u32> = (0..8).map(|p| p << 4).collect();
        assert_eq!(PrefixPlan::new(8, 4, 0, &missing).prefixes, [0]);
        assert_eq!(PrefixPlan::new(8, 4, 0, &missing).j, 0);
        assert_eq!(PrefixPlan::new(8, 0, 0, &BTreeSet::from([3])).j, 0);
    }

    #[test]
    fn a_server_floor_forbids_the_whole_index_download() {
        let missing: BTreeSet<u32> = (0..8).map(|p| p << 4).collect();
        let plan = PrefixPlan::new(8, 4, 4, &missing);
        assert_eq!(plan.j, 4);
        assert_eq!(plan.prefixes, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn prefix_bits_are_never_raised_beyond_what_is_allowed() {
        let mut i = info(10, 1000);
        assert_eq!(prefix_bits(None, None, &i).ok(), Some(10));
        assert_eq!(prefix_bits(Some(3), None, &i).ok(), Some(3));
        assert_eq!(prefix_bits(Some(8), Some(6), &i).ok(), Some(6));
        i.min_prefix_bits = 5;
        let r = prefix_bits(Some(0), None, &i);
        assert!(
            matches!(
                r,
                Err(ClientError::PrefixBitsRefused {
                    allowed: 0,
                    required: 5
                })
            ),
            "{r:?}"
        );
        assert_eq!(prefix_bits(Some(0), Some(5), &i).ok(), Some(5));
        assert_eq!(prefix_bits(Some(0), Some(9), &i).ok(), Some(5));
        // A floor above k is k: the whole index is every bucket anyway.
        i.min_prefix_bits = 12;
        assert_eq!(prefix_bits(Some(0), Some(10), &i).ok(), Some(10));
        // The default j is 14, so is the default allowance.
        let mut big = info(20, 1 << 30);
        big.min_prefix_bits = 16;
        assert!(prefix_bits(None, None, &big).is_err());
        assert_eq!(prefix_bits(None, Some(16), &big).ok(), Some(16));
    }

    #[test]
    fn max_entries_is_bucket_entries_capped() {
        assert_eq!(max_entries(&info(4, 0)), 1);
        assert_eq!(max_entries(&info(4, 12_000)), 12_000);
        assert_eq!(max_entries(&info(0, u64::MAX)), MAX_BUCKET_ENTRIES);
    }

    /// An honest build's payloads fit the bound, which is about 34 bits per
    /// entry plus the labels.
    #[test]
    fn honest_payloads_fit_the_length_bound() {
        for p in [1u32, 2, 3, 100, 4096, 12_345, 1 << 20] {
            let f = fingerprint_bits_for(p);
            // The worst honest stream: every value at the top.
            let fps = vec![(1u64 << f.min(63)) - 1; p as usize];
            let labels = vec![0u8; p as usize * MAX_LABEL_WIDTH];
            let bytes =
                breachcheck_proto::encode_payload(&fps, &labels, 4, f, 0).unwrap_or_default();
            assert!(!bytes.is_empty());
            let bound = max_payload_len(p, f);
            assert!(
                bytes.len() as u64 <= bound,
                "{p}: {} > {bound}",
                bytes.len()
            );
            assert!(bound <= 16 + u64::from(p) * (4 + 5) + 16, "{p}: {bound}");
        }
    }

    fn committed(mut i: IndexInfo) -> IndexInfo {
        let layout = IndexLayout {
            public_key: [7; 32],
            bucket_bits: i.bucket_bits,
            fingerprint_bits: i.fingerprint_bits,
            bucket_entries: i.bucket_entries,
            payload_len: i.payload_len,
        };
        i.public_key = vec![7; 32];
        i.bucket_root = vec![9; 32];
        i.index_id = layout.index_id(&[9; 32]).to_vec();
        i
    }

    fn honest_info() -> IndexInfo {
        committed(IndexInfo {
            bucket_bits: 4,
            fingerprint_bits: 39,
            bucket_entries: 100,
            entry_count: 1000,
            payload_len: 600,
            ..IndexInfo::default()
        })
    }

    #[test]
    fn an_index_id_that_does_not_commit_to_the_layout_is_refused() {
        let mut i = honest_info();
        assert!(check_layout(&i).is_ok());
        i.bucket_entries = 101;
        assert!(matches!(
            check_layout(&i),
            Err(ClientError::UnsupportedIndex(_))
        ));
        i.bucket_entries = 100;
        i.bucket_root = vec![8; 32];
        assert!(check_layout(&i).is_err());
        i.bucket_root = vec![9; 31];
        assert!(check_layout(&i).is_err());
    }

    /// A consistent liar commits to any layout it likes; the layout itself
    /// must still be one an honest build makes.
    #[test]
    fn a_committed_but_impossible_layout_is_refused() {
        let ok = honest_info();
        type Lie = fn(&mut IndexInfo);
        let cases: [(&str, Lie); 6] = [
            ("more per bucket than in the index", |i| i.entry_count = 99),
            ("f not derived from P", |i| i.fingerprint_bits = 64),
            ("payload longer than P entries take", |i| {
                i.payload_len = 16 << 20
            }),
            ("payload shorter than a header", |i| i.payload_len = 15),
            // Found by the client_info fuzz target: P near 2^26 allows a
            // Golomb stream longer than any response the client accepts.
            ("payload above the response cap", |i| {
                i.bucket_entries = (1 << 26) - 1;
                i.entry_count = 1 << 40;
                i.fingerprint_bits = fingerprint_bits_for(i.bucket_entries);
                i.payload_len = (256 << 20) + 1;
            }),
            ("too many entries", |i| {
                i.bucket_entries = MAX_BUCKET_ENTRIES + 1;
                i.entry_count = u64::MAX;
                i.fingerprint_bits = fingerprint_bits_for(i.bucket_entries);
            }),
        ];
        for (what, lie) in cases {
            let mut i = ok.clone();
            lie(&mut i);
            let i = committed(i);
            assert!(
                matches!(check_layout(&i), Err(ClientError::UnsupportedIndex(_))),
                "{what}"
            );
        }
    }

    fn chunk(bucket: u32) -> BucketChunk {
        BucketChunk {
            bucket,
            ..BucketChunk::default()
        }
    }

    /// Each chunk is judged as it comes: the first one too many stops the
    /// answer.
    #[test]
    fn an_answer_must_be_exactly_the_buckets_asked() {
        let expected = BTreeSet::from([4, 5, 6, 7]);
        let mut ok = Answer::new(expected.clone());
        for b in 4..8 {
            assert!(ok.accept(&chunk(b)).is_ok());
        }
        assert!(ok.finish().is_ok());
        let cases: [(Vec<u32>, u32); 3] = [
            (vec![4, 5, 6], 7),
            (vec![4, 5, 6, 7, 8], 8),
            (vec![4, 5, 5, 6, 7], 5),
        ];
        for (sent, blamed) in cases {
            let mut a = Answer::new(expected.clone());
            let r = sent
                .into_iter()
                .try_for_each(|b| a.accept(&chunk(b)))
                .and_then(|()| a.finish());
            assert!(
                matches!(r, Err(ClientError::BadBucket { bucket, .. }) if bucket == blamed),
                "{r:?}"
            );
        }
    }

    #[test]
    fn a_payload_with_another_golomb_parameter_is_refused_before_decoding() {
        let f = fingerprint_bits_for(3);
        let good = breachcheck_proto::encode_payload(&[1, 2, 3], &[], 0, f, 0).unwrap_or_default();
        let mut i = IndexInfo {
            bucket_bits: 0,
            fingerprint_bits: f,
            bucket_entries: 3,
            entry_count: 3,
            payload_len: good.len() as u32,
            ..IndexInfo::default()
        };
        i.bucket_root = breachcheck_proto::leaf_hash(0, &good).to_vec();
        assert!(decode(0, &good, &[], &i).is_ok());
        // Every code one bit: M = 1, one payload byte per eight entries.
        let mut ones = good.clone();
        ones[8..16].copy_from_slice(&1u64.to_le_bytes());
        i.bucket_root = breachcheck_proto::leaf_hash(0, &ones).to_vec();
        let r = decode(0, &ones, &[], &i);
        assert!(matches!(r, Err(ClientError::BadBucket { .. })), "{r:?}");
    }
}
