//! Bucket payloads (DESIGN.md, "Buckets"): which to download and by which
//! prefixes, where from (memory, the disk cache, the server), and the checks
//! a payload passes before a lookup trusts it.
//!
//! * **The prefix plan.** Numbers are asked for by `j`-bit prefixes of
//!   their bucket values ([`prefix_bits`]: the caller's `j`, default
//!   `min(k, 14)`, never below the server's floor). When the prefixes would
//!   cover half the index or more, the whole index is fetched instead (`j =
//!   0`): about the same bytes, and the server learns nothing. Requests carry
//!   up to [`PREFIXES_PER_REQUEST`] prefixes; a server with a lower limit
//!   answers OUT_OF_RANGE and the request size is halved.
//! * **Trust.** The index id must commit to the advertised key, layout and
//!   bucket root ([`check_layout`]). A GetBuckets answer must hold exactly
//!   the buckets asked for, each once; every payload must be exactly
//!   `payload_len` bytes, its Merkle proof must lead to the bucket root
//!   ([`verify_bucket`], docs/PROTOCOL.md §6), and it must decode strictly
//!   with the index's fingerprint width and exactly [`max_entries`] entries
//!   ([`Payload::decode_expecting`]). Anything else is
//!   [`ClientError::BadBucket`]: a doubt never becomes "not found".
//! * **The disk cache.** `<cache_dir>/<hex index id>/<bucket:08x>.bin` holds
//!   a payload as the server sent it followed by its Merkle proof, written
//!   under a temporary name and renamed. It is checked exactly like an
//!   answer from the network; a file that fails (truncated, tampered) is
//!   neither trusted nor fatal: the bucket is downloaded again and the file
//!   replaced. The directories of other index ids are removed once per
//!   index change, not per lookup.
//! * **The memory budget.** Decoded payloads are kept for later chunks of
//!   a check, up to [`MEMORY_BUDGET`] bytes of fingerprints and labels.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use breachcheck_proto::pb::{BucketChunk, IndexInfo};
use breachcheck_proto::{
    IndexLayout, MAX_BUCKET_BITS, MERKLE_HASH_LEN, Output, PAYLOAD_HEADER_LEN, Payload,
    PhoneNumber, bucket_value, buckets_under_prefix, top_bits, verify_bucket,
};
use tonic::Code;

use crate::error::{ClientError, Result};
use crate::rpc::{MAX_RESPONSE_BYTES, Rpc};

/// The default prefix bits: `min(k, 14)`.
pub const DEFAULT_PREFIX_BITS: u32 = 14;
/// Prefixes per GetBuckets request.
const PREFIXES_PER_REQUEST: usize = 1024;
/// Bytes of decoded payloads kept in memory across chunks.
const MEMORY_BUDGET: usize = 512 << 20;
/// The most entries any payload may claim. An honest payload spends more
/// than 32 bits per entry (`f = 32 + ceil(log2 P)`-bit fingerprints
/// Golomb-code to about `f - log2 P + 1` bits each), so one that fits the
/// largest message accepted holds fewer than `MAX_RESPONSE_BYTES / 4`.
const MAX_BUCKET_ENTRIES: u32 = (MAX_RESPONSE_BYTES / 4) as u32;

/// Decoded payloads by bucket number.
type Buckets = HashMap<u32, Arc<Payload>>;

/// The payloads fetched for a set of numbers, ready for lookups.
#[derive(Debug)]
pub(crate) struct Fetched {
    bucket_bits: u32,
    payloads: Buckets,
}

impl Fetched {
    /// The breach mask of `number`, whose PRF output is `output` (see
    /// [`Payload::breach_mask`]); `None` when it is not in the corpus.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadBucket`] if its bucket was not fetched.
    pub(crate) fn breach_mask(&self, number: &PhoneNumber, output: &Output) -> Result<Option<u32>> {
        let bucket = bucket_of(number, self.bucket_bits);
        let payload = self
            .payloads
            .get(&bucket)
            .ok_or_else(|| bad(bucket, "the server did not send it"))?;
        Ok(payload.breach_mask(output))
    }
}

/// Checks that `info`'s bucket layout is one this client can use, and that
/// its index id commits to its key, layout and bucket root (so that pinning
/// the id pins every bucket).
///
/// # Errors
///
/// [`ClientError::UnsupportedIndex`] for `f` outside `1..=64`, `k` above
/// [`MAX_BUCKET_BITS`], payloads shorter than their header or with no entry,
/// malformed key, root or id, or an index id that is not the commitment to
/// the rest.
pub(crate) fn check_layout(info: &IndexInfo) -> Result<()> {
    let unsupported = |why: &str| Err(ClientError::UnsupportedIndex(why.into()));
    if !(1..=64).contains(&info.fingerprint_bits)
        || info.bucket_bits > MAX_BUCKET_BITS
        || (info.payload_len as usize) < PAYLOAD_HEADER_LEN
        || info.bucket_entries == 0
        || info.bucket_entries > MAX_BUCKET_ENTRIES
    {
        return unsupported("bucket layout out of range");
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
fn bucket_of(number: &PhoneNumber, k: u32) -> u32 {
    top_bits(bucket_value(number.as_bytes()), k)
}

/// The prefix bits `j` to ask by for `info`'s index: `requested` (default
/// [`DEFAULT_PREFIX_BITS`]) within `[min(min_prefix_bits, k), k]`.
pub(crate) fn prefix_bits(requested: Option<u32>, info: &IndexInfo) -> u32 {
    let k = info.bucket_bits;
    requested
        .unwrap_or(DEFAULT_PREFIX_BITS)
        .min(k)
        .max(info.min_prefix_bits.min(k))
}

/// The entries every bucket of `info`'s index holds: `bucket_entries`, which
/// the index id commits to ([`check_layout`] also bounds it by
/// [`MAX_BUCKET_ENTRIES`], so a lying IndexInfo cannot make one payload
/// reserve more memory than an honest message could fill).
pub(crate) fn max_entries(info: &IndexInfo) -> u32 {
    info.bucket_entries.min(MAX_BUCKET_ENTRIES)
}

/// Which GetBuckets requests fetch a set of missing buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PrefixPlan {
    /// Prefix bits (0: the whole index).
    j: u32,
    /// The prefixes to ask for, sorted (`[0]` for the whole index).
    prefixes: Vec<u32>,
}

impl PrefixPlan {
    /// The plan for the `missing` buckets of a `k`-bit index, asked by `j`
    /// bits (`j ≤ k`).
    fn new(k: u32, j: u32, missing: &BTreeSet<u32>) -> Self {
        let shift = k - j.min(k);
        let prefixes: BTreeSet<u32> = missing.iter().map(|&b| b >> shift).collect();
        // Most of the index anyway: fetch it whole, and reveal nothing.
        if j == 0 || (prefixes.len() as u64) << shift >= (1u64 << k) / 2 {
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

/// The payloads a client has: in memory, and on disk if it has a cache
/// directory. Shared by every clone of a client.
pub(crate) struct BucketCache {
    dir: Option<PathBuf>,
    memory: Mutex<Memory>,
}

/// The payloads of one index kept in memory.
#[derive(Default)]
struct Memory {
    index_id: Vec<u8>,
    payloads: Buckets,
    bytes: usize,
}

// By hand: the fingerprints are many, and say nothing useful in a log.
impl fmt::Debug for BucketCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.lock();
        f.debug_struct("BucketCache")
            .field("dir", &self.dir)
            .field("index_id", &hex::encode(&m.index_id))
            .field("buckets", &m.payloads.len())
            .field("bytes", &m.bytes)
            .finish()
    }
}

impl BucketCache {
    /// An empty cache, on disk under `dir` if given.
    pub(crate) fn new(dir: Option<PathBuf>) -> Self {
        BucketCache {
            dir,
            memory: Mutex::new(Memory::default()),
        }
    }

    /// Switches to the index `index_id`. On a change, the payloads in memory
    /// are dropped and the disk caches of every other index removed.
    pub(crate) fn use_index(&self, index_id: &[u8]) {
        {
            let mut m = self.lock();
            if m.index_id == index_id {
                return;
            }
            *m = Memory {
                index_id: index_id.to_vec(),
                ..Memory::default()
            };
        }
        self.remove_stale(index_id);
    }

    /// The payloads of the buckets of `numbers` in `info`'s index (and,
    /// after a whole-index download, of every bucket), asking the server by
    /// `j`-bit prefixes for those neither in memory nor on disk.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadBucket`] for a lying or broken answer, an RPC error,
    /// or [`ClientError::Io`] writing the disk cache.
    pub(crate) async fn fetch(
        &self,
        rpc: &Rpc,
        info: &IndexInfo,
        j: u32,
        numbers: &[PhoneNumber],
    ) -> Result<Fetched> {
        let k = info.bucket_bits;
        let needed: BTreeSet<u32> = numbers.iter().map(|n| bucket_of(n, k)).collect();
        let mut have = self.in_memory(info, &needed);
        let dir = self.index_dir(info);
        let mut missing = BTreeSet::new();
        for b in needed {
            if have.contains_key(&b) {
                continue;
            }
            match dir.as_deref().and_then(|d| read_cached(d, b, info)) {
                Some(p) => {
                    have.insert(b, Arc::new(p));
                }
                None => {
                    missing.insert(b);
                }
            }
        }
        if !missing.is_empty() {
            let plan = PrefixPlan::new(info.bucket_bits, j, &missing);
            download(rpc, info, &plan, dir.as_deref(), &mut have).await?;
        }
        self.keep(info, &have);
        Ok(Fetched {
            bucket_bits: k,
            payloads: have,
        })
    }

    fn in_memory(&self, info: &IndexInfo, needed: &BTreeSet<u32>) -> Buckets {
        let m = self.lock();
        if m.index_id != info.index_id {
            return Buckets::new();
        }
        needed
            .iter()
            .filter_map(|b| Some((*b, m.payloads.get(b)?.clone())))
            .collect()
    }

    /// Keeps what fits the memory budget for later chunks.
    fn keep(&self, info: &IndexInfo, have: &Buckets) {
        let mut m = self.lock();
        if m.index_id != info.index_id {
            return;
        }
        for (b, p) in have {
            let size = p.fingerprints.len() * size_of::<u64>() + p.labels.len();
            if m.bytes + size <= MEMORY_BUDGET && !m.payloads.contains_key(b) {
                m.bytes += size;
                m.payloads.insert(*b, p.clone());
            }
        }
    }

    /// The disk cache directory of `info`'s index.
    fn index_dir(&self, info: &IndexInfo) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(hex::encode(&info.index_id)))
    }

    /// Removes the cache directories of index ids other than `current`.
    fn remove_stale(&self, current: &[u8]) {
        let Some(dir) = &self.dir else { return };
        let keep = hex::encode(current);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name != keep && name.bytes().all(|c| c.is_ascii_hexdigit()) {
                // Best effort: a directory that stays is only disk space.
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Downloads the buckets of `plan` into `have` (and the disk cache).
async fn download(
    rpc: &Rpc,
    info: &IndexInfo,
    plan: &PrefixPlan,
    dir: Option<&Path>,
    have: &mut Buckets,
) -> Result<()> {
    let mut per_request = PREFIXES_PER_REQUEST;
    let mut rest: &[u32] = &plan.prefixes;
    while !rest.is_empty() {
        let (group, tail) = rest.split_at(per_request.min(rest.len()));
        let expected: BTreeSet<u32> = group
            .iter()
            .flat_map(|&p| buckets_under_prefix(p, plan.j, info.bucket_bits))
            .collect();
        // One chunk past the expected count is enough to see a lie.
        let limit = expected.len() + 1;
        let chunks = match rpc.get_buckets(&info.index_id, plan.j, group, limit).await {
            Ok(chunks) => chunks,
            Err(ClientError::Rpc(s)) if s.code() == Code::OutOfRange && per_request > 1 => {
                per_request /= 2;
                continue;
            }
            Err(e) => return Err(e),
        };
        rest = tail;
        check_answer(&expected, &chunks)?;
        for chunk in chunks {
            let p = decode(chunk.bucket, &chunk.payload, &chunk.bucket_proof, info)?;
            if let Some(dir) = dir {
                write_cached(dir, chunk.bucket, &chunk.payload, &chunk.bucket_proof)?;
            }
            have.insert(chunk.bucket, Arc::new(p));
        }
    }
    Ok(())
}

/// A GetBuckets answer must hold exactly the `expected` buckets, each once.
fn check_answer(expected: &BTreeSet<u32>, chunks: &[BucketChunk]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for c in chunks {
        if !expected.contains(&c.bucket) {
            return Err(bad(
                c.bucket,
                "the server sent a bucket that was not asked for",
            ));
        }
        if !seen.insert(c.bucket) {
            return Err(bad(c.bucket, "the server sent this bucket twice"));
        }
    }
    match expected.difference(&seen).next() {
        Some(&b) => Err(bad(b, "the server did not send it")),
        None => Ok(()),
    }
}

/// Checks the payload of `bucket` against `info`'s bucket root with its
/// Merkle `proof` (before anything is allocated for it), then decodes it with
/// `info`'s shape.
fn decode(bucket: u32, bytes: &[u8], proof: &[u8], info: &IndexInfo) -> Result<Payload> {
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

fn bad(bucket: u32, reason: &str) -> ClientError {
    ClientError::BadBucket {
        bucket,
        reason: reason.to_owned(),
    }
}

fn cache_file(dir: &Path, bucket: u32) -> PathBuf {
    dir.join(format!("{bucket:08x}.bin"))
}

/// The cached payload of `bucket`, if there is a file and it passes the
/// same checks as an answer from the server.
fn read_cached(dir: &Path, bucket: u32, info: &IndexInfo) -> Option<Payload> {
    let bytes = std::fs::read(cache_file(dir, bucket)).ok()?;
    let proof_len = MERKLE_HASH_LEN * info.bucket_bits as usize;
    if bytes.len() != info.payload_len as usize + proof_len {
        tracing::warn!(dir = %dir.display(), "a cached bucket has the wrong length; downloading it again");
        return None;
    }
    let (payload, proof) = bytes.split_at(info.payload_len as usize);
    match decode(bucket, payload, proof, info) {
        Ok(p) => Some(p),
        Err(e) => {
            // Not the bucket number: it is k bits of a hash of a checked number.
            tracing::warn!(dir = %dir.display(), error = %e, "a cached bucket does not decode; downloading it again");
            None
        }
    }
}

/// Writes a payload and its proof to the cache under a temporary name, then
/// renames it.
fn write_cached(dir: &Path, bucket: u32, payload: &[u8], proof: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{bucket:08x}.tmp"));
    std::fs::write(&tmp, [payload, proof].concat())?;
    std::fs::rename(&tmp, cache_file(dir, bucket))
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
        let plan = PrefixPlan::new(8, 4, &BTreeSet::from([0x12, 0x13, 0xA0]));
        assert_eq!(plan.j, 4);
        assert_eq!(plan.prefixes, [0x1, 0xA]);
    }

    #[test]
    fn half_the_index_or_more_is_fetched_whole() {
        let missing: BTreeSet<u32> = (0..8).map(|p| p << 4).collect();
        assert_eq!(PrefixPlan::new(8, 4, &missing).prefixes, [0]);
        assert_eq!(PrefixPlan::new(8, 4, &missing).j, 0);
        assert_eq!(PrefixPlan::new(8, 0, &BTreeSet::from([3])).j, 0);
    }

    #[test]
    fn prefix_bits_stay_within_the_floor_and_k() {
        let mut i = info(10, 1000);
        assert_eq!(prefix_bits(None, &i), 10);
        assert_eq!(prefix_bits(Some(3), &i), 3);
        i.min_prefix_bits = 5;
        assert_eq!(prefix_bits(Some(0), &i), 5);
        i.min_prefix_bits = 12;
        assert_eq!(prefix_bits(Some(0), &i), 10);
    }

    #[test]
    fn max_entries_is_bucket_entries_capped() {
        assert_eq!(max_entries(&info(4, 0)), 1);
        assert_eq!(max_entries(&info(4, 12_000)), 12_000);
        assert_eq!(max_entries(&info(0, u64::MAX)), MAX_BUCKET_ENTRIES);
    }

    #[test]
    fn an_index_id_that_does_not_commit_to_the_layout_is_refused() {
        let layout = IndexLayout {
            public_key: [7; 32],
            bucket_bits: 4,
            fingerprint_bits: 44,
            bucket_entries: 100,
            payload_len: 600,
        };
        let mut i = IndexInfo {
            public_key: vec![7; 32],
            bucket_bits: 4,
            fingerprint_bits: 44,
            bucket_entries: 100,
            payload_len: 600,
            bucket_root: vec![9; 32],
            index_id: layout.index_id(&[9; 32]).to_vec(),
            ..IndexInfo::default()
        };
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

    fn chunk(bucket: u32) -> BucketChunk {
        BucketChunk {
            bucket,
            ..BucketChunk::default()
        }
    }

    #[test]
    fn an_answer_must_be_exactly_the_buckets_asked() {
        let expected = BTreeSet::from([4, 5, 6, 7]);
        let ok: Vec<BucketChunk> = (4..8).map(chunk).collect();
        assert!(check_answer(&expected, &ok).is_ok());
        let cases: [(Vec<u32>, u32); 3] = [
            (vec![4, 5, 6], 7),
            (vec![4, 5, 6, 7, 8], 8),
            (vec![4, 5, 5, 6, 7], 5),
        ];
        for (sent, blamed) in cases {
            let chunks: Vec<BucketChunk> = sent.into_iter().map(chunk).collect();
            let r = check_answer(&expected, &chunks);
            assert!(
                matches!(r, Err(ClientError::BadBucket { bucket, .. }) if bucket == blamed),
                "{r:?}"
            );
        }
    }
}
