//! Bucket payloads (DESIGN.md, "Buckets"): which to download and by which
//! prefixes, where from (memory, the disk cache, the server), and the checks
//! a payload passes before a lookup trusts it.
//!
//! * **The prefix plan.** Numbers are asked for by `j`-bit prefixes of
//!   their bucket values ([`prefix_bits`]: the caller's `j`, default
//!   `min(k, 14)`). A server floor above what the caller allows is refused
//!   before anything is sent ([`ClientError::PrefixBitsRefused`]): `j` is
//!   never raised silently. When the prefixes would cover half the index or
//!   more and the server allows it, the whole index is fetched instead (`j =
//!   0`): about the same bytes, and the server learns nothing. Requests carry
//!   up to [`PREFIXES_PER_REQUEST`] prefixes; a server with a lower limit
//!   answers OUT_OF_RANGE and the request size is halved.
//! * **Trust.** The index id must commit to the advertised key, layout and
//!   bucket root, and the layout must be one an honest build makes
//!   ([`check_layout`]: `f` and `P` as §4 derives them, `P` at most the
//!   entry count, `payload_len` at most what `P` Golomb-coded entries can
//!   take). A GetBuckets answer is checked chunk by chunk as it streams: the
//!   first bucket not asked for, sent twice, or past the end of the answer
//!   stops the call. Every payload must be exactly `payload_len` bytes, its
//!   Merkle proof must lead to the bucket root ([`verify_bucket`],
//!   docs/PROTOCOL.md §6), its Golomb parameter must be the one §4 derives
//!   (so every code takes about 32 bits and the decoded fingerprints take
//!   at most twice the bytes received), and it must decode strictly with the
//!   index's fingerprint width and exactly `bucket_entries` entries
//!   ([`Payload::decode_expecting`]). Anything else is
//!   [`ClientError::BadBucket`]: a doubt never becomes "not found".
//! * **Memory.** No size is taken from a peer's claim: a message above one
//!   honest chunk is refused by the transport, a chunk is checked and
//!   decoded before the next is read, and of a download only the buckets
//!   the numbers need (plus what fits the memory budget) are kept.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use breachcheck_proto::pb::IndexInfo;
use breachcheck_proto::{MERKLE_HASH_LEN, Output, Payload, PhoneNumber, buckets_under_prefix};
use tonic::Code;

use crate::checks::{Answer, PrefixPlan, bad, bucket_of, decode};
use crate::error::{ClientError, Result};
use crate::pir::PirScheme;
use crate::rpc::Rpc;
use crate::task::blocking;

/// Prefixes per GetBuckets request.
const PREFIXES_PER_REQUEST: usize = 1024;
/// Bytes of decoded payloads kept in memory across chunks.
const MEMORY_BUDGET: usize = 512 << 20;

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

/// The payloads a client has: in memory, and on disk if it has a cache
/// directory. Shared by every clone of a client.
pub(crate) struct BucketCache {
    dir: Option<PathBuf>,
    memory: Mutex<Memory>,
}

/// The number of prefix bits of the GetBuckets requests sent: the most
/// revealing one, `None` while none was sent; and the PIR queries sent
/// (which reveal nothing).
#[derive(Debug, Default)]
pub(crate) struct SentBits {
    bits: Mutex<Option<u32>>,
    pir_queries: AtomicU64,
}

impl SentBits {
    fn record(&self, j: u32) {
        let mut s = self.bits.lock().unwrap_or_else(PoisonError::into_inner);
        *s = Some(s.map_or(j, |old| old.max(j)));
    }

    /// The most prefix bits sent so far.
    pub(crate) fn get(&self) -> Option<u32> {
        *self.bits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The PIR queries sent so far.
    pub(crate) fn pir_queries(&self) -> u64 {
        self.pir_queries.load(Ordering::Relaxed)
    }
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

    /// The payloads of the buckets of `numbers` in `info`'s index, asking
    /// the server by `j`-bit prefixes for those neither in memory nor on
    /// disk (and recording the `j` sent in `sent`). Of a download, the
    /// buckets `numbers` need are returned; the others are kept within the
    /// memory budget, or dropped.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadBucket`] for a lying or broken answer, an RPC error
    /// or [`ClientError::Timeout`], or [`ClientError::Io`] writing the disk
    /// cache.
    pub(crate) async fn fetch(
        &self,
        rpc: &Rpc,
        info: &IndexInfo,
        j: u32,
        numbers: &[PhoneNumber],
        sent: &SentBits,
        pir: Option<&Arc<dyn PirScheme>>,
    ) -> Result<Fetched> {
        let k = info.bucket_bits;
        let needed: BTreeSet<u32> = numbers.iter().map(|n| bucket_of(n, k)).collect();
        let mut have = self.in_memory(info, &needed);
        let dir = self.index_dir(info);
        let mut missing = BTreeSet::new();
        for &b in &needed {
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
        if let Some(pir) = pir
            && !missing.is_empty()
            && !whole_index_is_cheaper(info, pir.as_ref(), missing.len())
        {
            for (b, (payload, proof), p) in fetch_by_pir(rpc, info, pir, &missing, sent).await? {
                if let Some(dir) = dir.as_deref() {
                    write_cached(dir, b, &payload, &proof)?;
                }
                have.insert(b, Arc::new(p));
            }
            missing.clear();
        }
        if !missing.is_empty() {
            let floor = info.min_prefix_bits.min(k);
            // In PIR mode only the whole index is as private; it is fetched
            // when it is smaller than the queries would be.
            let j = if pir.is_some() { 0 } else { j };
            let plan = PrefixPlan::new(k, j, floor, &missing);
            sent.record(plan.j);
            let mut place = |b: u32, p: Payload| {
                if needed.contains(&b) {
                    have.insert(b, Arc::new(p));
                } else {
                    self.keep_one(info, b, Arc::new(p));
                }
            };
            download(rpc, info, &plan, dir.as_deref(), &mut place).await?;
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
        for (b, p) in have {
            self.keep_one(info, *b, p.clone());
        }
    }

    /// Keeps bucket `b` of `info`'s index if it fits the memory budget.
    fn keep_one(&self, info: &IndexInfo, b: u32, p: Arc<Payload>) {
        let mut m = self.lock();
        if m.index_id != info.index_id || m.payloads.contains_key(&b) {
            return;
        }
        let size = p.fingerprints.len() * size_of::<u64>() + p.labels.len();
        if m.bytes + size <= MEMORY_BUDGET {
            m.bytes += size;
            m.payloads.insert(b, p);
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

/// Whether downloading the whole index sends fewer bytes than `queries`
/// PIR queries would, and the server allows it (both reveal nothing).
fn whole_index_is_cheaper(info: &IndexInfo, pir: &dyn PirScheme, queries: usize) -> bool {
    let proof_len = MERKLE_HASH_LEN as u64 * u64::from(info.bucket_bits);
    let whole = (1u64 << info.bucket_bits) * (u64::from(info.payload_len) + proof_len);
    let by_pir = (queries as u64).saturating_mul(pir.exchange_len() as u64);
    let cheaper = info.min_prefix_bits == 0 && whole <= by_pir;
    if cheaper {
        tracing::info!(
            queries,
            pir_bytes = by_pir,
            index_bytes = whole,
            "the whole index is smaller than the PIR queries: downloading it (reveals nothing either)"
        );
    }
    cheaper
}

/// A row's payload and proof, as the server would send them.
type RowParts = (Vec<u8>, Vec<u8>);

/// Fetches the `buckets` by one PIR query each and checks every decoded
/// row like a GetBuckets chunk: zero padding, the Merkle proof to the
/// pinned root, strict decoding. A server that answered from another row,
/// or with a tampered one, fails here ([`ClientError::BadBucket`]).
///
/// Every query is sent and every answer received before any is decoded, so
/// a server answering some queries from a modified database learns nothing
/// from where the client stops: at most whether the check as a whole failed
/// (docs/SECURITY.md, "PIR mode"). The scheme's work runs on blocking
/// threads, off the async executor.
async fn fetch_by_pir(
    rpc: &Rpc,
    info: &IndexInfo,
    pir: &Arc<dyn PirScheme>,
    buckets: &BTreeSet<u32>,
    sent: &SentBits,
) -> Result<Vec<(u32, RowParts, Payload)>> {
    let mut pending = Vec::with_capacity(buckets.len());
    for &b in buckets {
        let scheme = pir.clone();
        let mut query = blocking("pir query", move || scheme.query(b)).await??;
        sent.pir_queries.fetch_add(1, Ordering::Relaxed);
        let answer = rpc
            .pir_query(&info.index_id, &query.keys, &query.query, pir.answer_len())
            .await?;
        // Only the secret is needed to decode.
        query.keys = Vec::new();
        query.query = Vec::new();
        pending.push((b, query, answer));
    }
    let mut fetched = Vec::with_capacity(pending.len());
    for (b, query, answer) in pending {
        let scheme = pir.clone();
        let row = blocking("pir decode", move || scheme.decode(&query, &answer)).await??;
        let (payload, proof) = pir.shape().split(&row).ok_or_else(|| {
            bad(
                b,
                "the PIR answer is not a row of this index (non-zero padding)",
            )
        })?;
        let p = decode(b, payload, proof, info)?;
        fetched.push((b, (payload.to_vec(), proof.to_vec()), p));
    }
    Ok(fetched)
}

/// Downloads the buckets of `plan`, giving each checked, decoded payload to
/// `place` (and writing it to the disk cache) as it arrives.
async fn download(
    rpc: &Rpc,
    info: &IndexInfo,
    plan: &PrefixPlan,
    dir: Option<&Path>,
    place: &mut impl FnMut(u32, Payload),
) -> Result<()> {
    let proof_len = MERKLE_HASH_LEN * info.bucket_bits as usize;
    let chunk_bytes = info.payload_len as usize + proof_len;
    let mut per_request = PREFIXES_PER_REQUEST;
    let mut rest: Vec<u32> = plan.prefixes.clone();
    // Streams broken under way (a replica lost mid-answer): each is asked
    // again, of another replica, for what it did not deliver.
    let mut broken = 0;
    while !rest.is_empty() {
        let n = per_request.min(rest.len());
        let group = &rest[..n];
        let expected: BTreeSet<u32> = group
            .iter()
            .flat_map(|&p| buckets_under_prefix(p, plan.j, info.bucket_bits))
            .collect();
        let bytes = (expected.len() as u64).saturating_mul(chunk_bytes as u64);
        let opened = rpc
            .get_buckets(&info.index_id, plan.j, group, chunk_bytes, bytes)
            .await;
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(ClientError::Rpc(s)) if s.code() == Code::OutOfRange && per_request > 1 => {
                per_request /= 2;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut answer = Answer::new(expected);
        let complete = loop {
            let chunk = match stream.next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break true,
                Err(ClientError::Unavailable { .. }) if broken < rpc.retries() => {
                    broken += 1;
                    break false;
                }
                // Above the cap of one honest chunk: the transport refused
                // it before reading it whole.
                Err(ClientError::Rpc(s)) if s.code() == Code::OutOfRange => {
                    return Err(bad(
                        answer.next_missing(),
                        "the server sent a message larger than a bucket of this index can be",
                    ));
                }
                Err(e) => return Err(e),
            };
            answer.accept(&chunk)?;
            let p = decode(chunk.bucket, &chunk.payload, &chunk.bucket_proof, info)?;
            if let Some(dir) = dir {
                write_cached(dir, chunk.bucket, &chunk.payload, &chunk.bucket_proof)?;
            }
            place(chunk.bucket, p);
        };
        if complete {
            answer.finish()?;
            rest.drain(..n);
        } else {
            // Keep the prefixes of the group not delivered in full.
            let mut i = 0;
            rest.retain(|&p| {
                i += 1;
                i > n
                    || !buckets_under_prefix(p, plan.j, info.bucket_bits)
                        .all(|b| answer.was_sent(b))
            });
        }
    }
    Ok(())
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
