//! Hand-written servers that lie in GetBuckets, or refuse with quota
//! metadata (#9). A lie about buckets is a typed client error
//! (`ClientError::BadBucket`), never a panic and never "not found"; the CLI
//! exits 2 on it. The honest parts of each server delegate to the real
//! service over the shared fixture.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use breachcheck_client::{CheckResult, Client, ClientError};
use breachcheck_proto as proto;
use breachcheck_proto::pb::breach_check_server::BreachCheck;
use breachcheck_proto::pb::{
    self, BucketChunk, EvaluateRequest, GetBucketsRequest, GetIndexInfoRequest,
};
use breachcheck_server::Service;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::support::*;

/// How a [`BucketLiar`] lies.
#[derive(Debug, Clone, Copy)]
enum BucketLie {
    /// Every payload re-encoded with 8-byte labels: the width the client
    /// once copied into a 4-byte array, panicking a worker task.
    LabelWidth8,
    /// Every payload re-encoded one fingerprint bit narrower than IndexInfo says.
    NarrowerFingerprints,
    /// The last bucket asked for is not sent.
    Truncated,
    /// One bucket more than asked for.
    Unrequested,
    /// The first bucket is sent twice.
    Duplicate,
    /// One byte of every payload flipped: the length is right, the bytes
    /// are not the ones the index id names (#11 row 5).
    FlippedByte,
}

/// Answers GetIndexInfo and Evaluate honestly and lies in GetBuckets.
struct BucketLiar {
    inner: Service,
    lie: BucketLie,
}

#[tonic::async_trait]
impl Twist for BucketLiar {
    fn honest(&self) -> &Service {
        &self.inner
    }

    async fn get_buckets(
        &self,
        r: Request<GetBucketsRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let k = self
            .inner
            .get_index_info(Request::new(GetIndexInfoRequest {}))
            .await?
            .into_inner()
            .bucket_bits;
        let asked: BTreeSet<u32> = r
            .get_ref()
            .prefixes
            .iter()
            .flat_map(|&p| proto::buckets_under_prefix(p, r.get_ref().prefix_bits, k))
            .collect();
        let mut honest = self.inner.get_buckets(r).await?.into_inner();
        let mut chunks = Vec::new();
        while let Some(chunk) = honest.next().await {
            chunks.push(chunk?);
        }
        match self.lie {
            BucketLie::LabelWidth8 => {
                for c in &mut chunks {
                    c.payload = with_label_width_8(&c.payload).into();
                }
            }
            BucketLie::NarrowerFingerprints => {
                for c in &mut chunks {
                    c.payload = one_bit_narrower(&c.payload).into();
                }
            }
            BucketLie::Truncated => {
                chunks.pop();
            }
            BucketLie::Unrequested => {
                // A neighbour of the buckets asked for, or past the index.
                let extra = (0..1u32 << k)
                    .find(|b| !asked.contains(b))
                    .unwrap_or(1 << k);
                let payload = chunks[0].payload.clone();
                chunks.push(BucketChunk {
                    bucket: extra,
                    payload,
                    bucket_proof: chunks[0].bucket_proof.clone(),
                });
            }
            BucketLie::Duplicate => {
                let first = chunks[0].clone();
                chunks.push(first);
            }
            BucketLie::FlippedByte => {
                for c in &mut chunks {
                    let mut p = c.payload.to_vec();
                    let last = p.len() - 1;
                    p[last] ^= 1;
                    c.payload = p.into();
                }
            }
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }
}

/// `payload` re-encoded with 8 sealed bytes per entry (a width `Payload`
/// rejects), same fingerprints: a checked member's fingerprint is in it.
fn with_label_width_8(payload: &[u8]) -> Vec<u8> {
    let p = proto::Payload::decode(payload).expect("honest payload");
    let mut bytes =
        proto::encode_payload(&p.fingerprints, &[], 0, p.fingerprint_bits, 0).expect("encode");
    bytes[1] = 8;
    let labels = vec![0xA5; 8 * p.fingerprints.len()];
    bytes.splice(proto::PAYLOAD_HEADER_LEN..proto::PAYLOAD_HEADER_LEN, labels);
    bytes
}

/// `payload` re-encoded as a valid payload of `f - 1` bits.
fn one_bit_narrower(payload: &[u8]) -> Vec<u8> {
    let p = proto::Payload::decode(payload).expect("honest payload");
    let fps: Vec<u64> = p.fingerprints.iter().map(|fp| fp >> 1).collect();
    proto::encode_payload(&fps, &p.labels, p.label_width, p.fingerprint_bits - 1, 0)
        .expect("encode")
}

async fn liar(lie: BucketLie) -> CustomServer {
    CustomServer::start(BucketLiar {
        inner: fixture_service(),
        lie,
    })
    .await
}

/// Checks `batch` against a server lying with `lie`.
async fn check_against(lie: BucketLie, batch: &[String]) -> Result<Vec<CheckResult>, ClientError> {
    let server = liar(lie).await;
    let r = client(&server.url()).await.check(batch).await;
    server.stop().await;
    r
}

/// Members (found by an honest server) and non-members.
fn mixed_batch() -> Vec<String> {
    let f = fixture();
    f.members[..8]
        .iter()
        .chain(&f.non_members[..8])
        .cloned()
        .collect()
}

fn assert_bad_bucket(r: &Result<Vec<CheckResult>, ClientError>) {
    assert!(matches!(r, Err(ClientError::BadBucket { .. })), "{r:?}");
}

// --- the SDK ------------------------------------------------------------------

// See: #9
/// The old client copied an 8-byte label into a 4-byte array and panicked a
/// worker task; the CLI then printed "checked 0, found 0" and exited 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_width_8_is_a_bad_bucket_not_a_panic() {
    let r = check_against(BucketLie::LabelWidth8, &mixed_batch()).await;
    assert_bad_bucket(&r);
}

// See: #9
/// The streaming check ends in the error, after no result at all: never a
/// short stream that reads as "nothing found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_width_8_ends_the_stream_in_an_error() {
    let server = liar(BucketLie::LabelWidth8).await;
    let c = client(&server.url()).await;
    let mut rx = c.check_stream(mixed_batch());
    let mut got = Vec::new();
    while let Some(r) = rx.recv().await {
        got.push(r);
    }
    server.stop().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        matches!(got[0], Err(ClientError::BadBucket { .. })),
        "{got:?}"
    );
}

// See: #9
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fingerprint_width_is_a_bad_bucket() {
    let r = check_against(BucketLie::NarrowerFingerprints, &mixed_batch()).await;
    assert_bad_bucket(&r);
}

// See: #9
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_bucket_stream_is_a_bad_bucket() {
    let r = check_against(BucketLie::Truncated, &mixed_batch()).await;
    assert_bad_bucket(&r);
}

// See: #9
/// One number: the client asks by prefix, and the extra bucket is a
/// plausible neighbour, not one past the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrequested_bucket_is_a_bad_bucket() {
    let one = vec![fixture().members[0].clone()];
    let r = check_against(BucketLie::Unrequested, &one).await;
    assert_bad_bucket(&r);
    let r = check_against(BucketLie::Unrequested, &mixed_batch()).await;
    assert_bad_bucket(&r);
}

// See: #9
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_bucket_is_a_bad_bucket() {
    let r = check_against(BucketLie::Duplicate, &mixed_batch()).await;
    assert_bad_bucket(&r);
}

// --- the CLI ------------------------------------------------------------------

// See: #9
/// The `breachcheck` binary against the width-8 server: exit 2 with the
/// error, no "not found" row and no summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exits_2_on_label_width_8() {
    let server = liar(BucketLie::LabelWidth8).await;
    let url = server.url();
    let member = fixture().members[0].clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(binary("breachcheck"))
            .args(["check", "--server", &url, &member])
            .env_remove("BREACHCHECK_SERVER")
            .env_remove("BREACHCHECK_API_KEY")
            .output()
            .expect("run breachcheck")
    })
    .await
    .expect("join");
    server.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(!stdout.contains("not found"), "{stdout}");
    assert!(!stderr.contains("checked "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The altered payload is not the one the index id names (length, then
    // Merkle proof); it is refused before it is decoded.
    assert!(stderr.contains("error: bucket "), "{stderr}");
}

// --- the disk cache -----------------------------------------------------------

// See: #9
/// A cache file tampered to label width 8 is not trusted and not fatal: the
/// client refetches the bucket from the server and overwrites the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_cache_file_is_refetched() {
    let f = fixture();
    let cache = TempDir::new("tampered-cache");
    let server = start_fixture().await;
    let connect = || {
        Client::builder(server.url())
            .cache_dir(cache.path())
            .connect()
    };
    let batch = &f.members[..10];
    let c1 = connect().await.expect("connect");
    assert!(
        c1.check(batch)
            .await
            .expect("check")
            .iter()
            .all(|r| r.found)
    );
    let dir = cache.join(&hex::encode(c1.info().index_id));
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    assert!(!files.is_empty());
    // A cache file is the payload, then its Merkle proof.
    let payload_len = c1.info().payload_len as usize;
    for p in &files {
        let honest = std::fs::read(p).expect("read");
        let (payload, proof) = honest.split_at(payload_len);
        std::fs::write(p, [&with_label_width_8(payload)[..], proof].concat()).expect("tamper");
    }
    let bytes_sent = || {
        server
            .state
            .metrics
            .render()
            .lines()
            .find(|l| l.starts_with("breachcheck_bucket_bytes_sent_total "))
            .map(str::to_owned)
    };
    let before = bytes_sent();
    // A fresh client: nothing in memory, only the tampered files on disk.
    let c2 = connect().await.expect("connect");
    let r = c2.check(batch).await.expect("refetched, not an error");
    assert!(r.iter().all(|r| r.found));
    assert_ne!(
        before,
        bytes_sent(),
        "the tampered buckets were not refetched"
    );
    for p in &files {
        let bytes = std::fs::read(p).expect("read");
        assert!(
            proto::Payload::decode(&bytes[..payload_len]).is_ok(),
            "{} kept",
            p.display()
        );
    }
    server.stop().await;
}

// --- quota metadata -----------------------------------------------------------

/// Answers GetIndexInfo and GetBuckets honestly and refuses every Evaluate
/// with RESOURCE_EXHAUSTED, carrying `retry-after` metadata or not.
struct Exhausted {
    inner: Service,
    retry_after: Option<&'static str>,
}

#[tonic::async_trait]
impl Twist for Exhausted {
    fn honest(&self) -> &Service {
        &self.inner
    }

    async fn evaluate(
        &self,
        _: Request<EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        // The prose names a refill time too: the client must not read it.
        let mut s = Status::resource_exhausted("quota exhausted: daily cap; refills in 7 s");
        if let Some(v) = self.retry_after {
            s.metadata_mut()
                .insert("retry-after", v.parse().expect("ascii"));
        }
        Err(s)
    }
}

async fn exhausted(retry_after: Option<&'static str>) -> Result<Vec<CheckResult>, ClientError> {
    let server = CustomServer::start(Exhausted {
        inner: fixture_service(),
        retry_after,
    })
    .await;
    // A refill of 42 s is no wait this client accepts (#11: it would pace).
    let c = Client::builder(server.url())
        .max_quota_wait(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect");
    let r = c.check(&mixed_batch()).await;
    server.stop().await;
    r
}

// See: #9
/// The refill time travels as `retry-after` metadata (integer seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_refill_time_is_read_from_retry_after_metadata() {
    match exhausted(Some("42")).await {
        Err(ClientError::QuotaExhausted { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(42)));
        }
        other => panic!("expected QuotaExhausted, got {other:?}"),
    }
}

// See: #9
/// Without metadata there is no refill time: the message is for people.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_message_prose_is_not_parsed() {
    match exhausted(None).await {
        Err(ClientError::QuotaExhausted {
            retry_after,
            message,
        }) => {
            assert_eq!(retry_after, None);
            assert!(message.contains("refills in 7 s"), "{message}");
        }
        other => panic!("expected QuotaExhausted, got {other:?}"),
    }
}

// === #11: a liar in every RPC, bounded calls, and what the CLI refuses ===

/// The honest index description and every bucket of the shared fixture.
async fn honest_index(svc: &Service) -> (pb::IndexInfo, Vec<Vec<u8>>) {
    let info = svc
        .get_index_info(Request::new(GetIndexInfoRequest {}))
        .await
        .expect("info")
        .into_inner();
    let mut s = svc
        .get_buckets(Request::new(GetBucketsRequest {
            index_id: vec![],
            prefix_bits: 0,
            prefixes: vec![],
        }))
        .await
        .expect("buckets")
        .into_inner();
    let mut payloads = Vec::new();
    while let Some(c) = s.next().await {
        payloads.push(c.expect("chunk").payload.to_vec());
    }
    (info, payloads)
}

/// A forged index: altered payloads (padded to one length), the Merkle
/// tree over them, and an IndexInfo whose root and index id commit to
/// them, exactly as an honest build would. The client, not pinning the
/// honest id, has no way to tell it from a real index by the commitment:
/// only its checks of the layout and of each payload can.
struct Forged {
    info: pb::IndexInfo,
    payloads: Vec<tonic::codegen::Bytes>,
    tree: proto::MerkleTree,
}

fn forge(
    honest: &pb::IndexInfo,
    payloads: Vec<Vec<u8>>,
    shape: impl FnOnce(&mut pb::IndexInfo),
) -> Forged {
    let mut info = honest.clone();
    shape(&mut info);
    let len = payloads.iter().map(Vec::len).max().unwrap_or(16);
    let payloads: Vec<Vec<u8>> = payloads
        .into_iter()
        .map(|mut p| {
            p.resize(len, 0);
            p
        })
        .collect();
    info.payload_len = len as u32;
    info.bucket_bits = payloads.len().trailing_zeros();
    let leaves = (0u32..)
        .zip(&payloads)
        .map(|(b, p)| proto::leaf_hash(b, p))
        .collect();
    let tree = proto::MerkleTree::from_leaves(leaves).expect("power of two");
    let root = tree.root();
    let layout = proto::IndexLayout {
        public_key: info.public_key.as_slice().try_into().expect("32-byte key"),
        bucket_bits: info.bucket_bits,
        fingerprint_bits: info.fingerprint_bits,
        bucket_entries: info.bucket_entries,
        payload_len: info.payload_len,
    };
    info.bucket_root = root.to_vec();
    info.index_id = layout.index_id(&root).to_vec();
    Forged {
        info,
        payloads: payloads.into_iter().map(Into::into).collect(),
        tree,
    }
}

/// How a [`ConsistentLiar`] alters the honest index.
#[derive(Debug, Clone, Copy)]
enum Forgery {
    /// Labels of 8 bytes, in buckets claimed four times as large (so the
    /// length stays within what the layout allows) with the matching `f`
    /// and Golomb parameter: only the decode's label-width check is left.
    LabelWidth8,
    /// The payloads say one fingerprint bit fewer than IndexInfo.
    WrongFingerprintBits,
    /// One entry fewer than `bucket_entries`, under the right Golomb
    /// parameter: only the exact-count check is left.
    OneEntryShort,
    /// Every Golomb code one bit (M = 1): cheap bytes, many entries.
    GolombOne,
    /// Four buckets of 16 MiB, every code one bit, in an index claiming
    /// 4 Mi entries per bucket (#11 row 4).
    Huge16MiB,
    /// Honest buckets under another server's public key.
    OtherKey,
}

fn forgery(lie: Forgery, honest: &pb::IndexInfo, payloads: &[Vec<u8>]) -> Forged {
    let decoded: Vec<proto::Payload> = payloads
        .iter()
        .map(|p| proto::Payload::decode(p).expect("honest payload"))
        .collect();
    let p = honest.bucket_entries;
    let f = honest.fingerprint_bits;
    match lie {
        Forgery::LabelWidth8 => {
            let (pc, fc) = (4 * p, proto::fingerprint_bits_for(4 * p));
            let altered = decoded
                .iter()
                .map(|d| {
                    let mut bytes = payload_header(8, fc, p, proto::golomb_parameter(pc, fc));
                    bytes.extend(vec![0xA5; 8 * p as usize]);
                    let fps: Vec<u64> = d.fingerprints.iter().map(|x| x << (fc - f)).collect();
                    bytes.extend(golomb_stream(&fps, proto::golomb_parameter(pc, fc)));
                    bytes
                })
                .collect();
            forge(honest, altered, |i| {
                i.bucket_entries = pc;
                i.fingerprint_bits = fc;
                i.entry_count = u64::from(pc) * 16;
            })
        }
        Forgery::WrongFingerprintBits => {
            let altered = payloads
                .iter()
                .map(|pl| {
                    let mut pl = pl.clone();
                    pl[2] -= 1;
                    pl
                })
                .collect();
            forge(honest, altered, |_| {})
        }
        Forgery::OneEntryShort => {
            let m = proto::golomb_parameter(p, f);
            let altered = decoded
                .iter()
                .map(|d| {
                    let mut bytes = payload_header(0, f, p - 1, m);
                    bytes.extend(golomb_stream(
                        &d.fingerprints[..d.fingerprints.len() - 1],
                        m,
                    ));
                    // The hand-written stream decodes: only the count is wrong.
                    proto::Payload::decode(&bytes).expect("forged stream decodes");
                    bytes
                })
                .collect();
            forge(honest, altered, |_| {})
        }
        Forgery::GolombOne => {
            let altered = (0..payloads.len())
                .map(|_| {
                    let mut bytes = payload_header(0, f, p, 1);
                    bytes.extend(vec![0xFF; (p as usize).div_ceil(8)]);
                    bytes
                })
                .collect();
            forge(honest, altered, |_| {})
        }
        Forgery::Huge16MiB => {
            let pc = 4 << 20;
            let fc = proto::fingerprint_bits_for(pc);
            let altered = (0..4)
                .map(|_| {
                    let mut bytes = payload_header(0, fc, pc, 1);
                    bytes.extend(vec![0xFF; pc as usize / 8]);
                    bytes.resize(16 << 20, 0);
                    bytes
                })
                .collect();
            forge(honest, altered, |i| {
                i.bucket_entries = pc;
                i.fingerprint_bits = fc;
                i.entry_count = 1 << 32;
            })
        }
        Forgery::OtherKey => {
            let other = breachcheck_server::key_from_seed("07e4").expect("key");
            forge(honest, payloads.to_vec(), |i| {
                i.public_key = other.public_key().to_bytes().to_vec();
            })
        }
    }
}

/// Serves a [`Forged`] index: its IndexInfo and buckets (with proofs from
/// its own tree), and honest evaluations.
struct ConsistentLiar {
    inner: Service,
    forged: Forged,
}

#[tonic::async_trait]
impl Twist for ConsistentLiar {
    fn honest(&self) -> &Service {
        &self.inner
    }

    async fn get_index_info(
        &self,
        _: Request<GetIndexInfoRequest>,
    ) -> Result<Response<pb::IndexInfo>, Status> {
        Ok(Response::new(self.forged.info.clone()))
    }

    async fn evaluate(
        &self,
        r: Request<EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        // The forged id is not the served one: evaluate on the current index.
        let mut r = r;
        r.get_mut().index_id.clear();
        self.inner.evaluate(r).await
    }

    async fn get_buckets(
        &self,
        r: Request<GetBucketsRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let k = self.forged.info.bucket_bits;
        let r = r.into_inner();
        let prefixes = if r.prefix_bits == 0 {
            vec![0]
        } else {
            r.prefixes
        };
        let chunks: Vec<Result<BucketChunk, Status>> = prefixes
            .iter()
            .flat_map(|&p| proto::buckets_under_prefix(p, r.prefix_bits, k))
            .map(|b| {
                Ok(BucketChunk {
                    bucket: b,
                    payload: self.forged.payloads[b as usize].clone(),
                    bucket_proof: self.forged.tree.proof(b).unwrap_or_default(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

async fn consistent_liar(lie: Forgery) -> (CustomServer, pb::IndexInfo) {
    let inner = fixture_service();
    let (honest, payloads) = honest_index(&inner).await;
    let forged = forgery(lie, &honest, &payloads);
    let server = CustomServer::start(ConsistentLiar { inner, forged }).await;
    (server, honest)
}

/// Every item of a streaming check of `batch`: it must end in an error,
/// with no result before it (the lie is in the first chunk).
async fn stream_against(url: &str, batch: Vec<String>) -> ClientError {
    let c = client(url).await;
    let mut rx = c.check_stream(batch);
    let mut got = Vec::new();
    while let Some(r) = rx.recv().await {
        got.push(r);
    }
    assert_eq!(got.len(), 1, "a lie must end the stream at once: {got:?}");
    match got.pop() {
        Some(Err(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

// See: #11
/// Decode-level lies in a self-consistent index (Merkle tree and index id
/// rebuilt over the altered buckets): each is a BadBucket, for `check` and
/// as the one item of `check_stream`, never "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_liar_is_caught_by_the_payload_checks() {
    let cases = [
        (Forgery::LabelWidth8, "label width"),
        (Forgery::WrongFingerprintBits, "fingerprint width"),
        (Forgery::OneEntryShort, "bucket_entries"),
        (Forgery::GolombOne, "Golomb parameter"),
    ];
    for (lie, why) in cases {
        let (server, _) = consistent_liar(lie).await;
        let c = client(&server.url()).await;
        let r = c.check(&mixed_batch()).await;
        match &r {
            Err(ClientError::BadBucket { reason, .. }) => {
                assert!(reason.contains(why), "{lie:?}: {reason}");
            }
            other => panic!("{lie:?}: expected BadBucket, got {other:?}"),
        }
        let e = stream_against(&server.url(), mixed_batch()).await;
        assert!(matches!(e, ClientError::BadBucket { .. }), "{lie:?}: {e:?}");
        // The CLI: exit 2 with the reason, no row, no summary.
        let mut args = vec!["check".to_owned(), "--server".into(), server.url()];
        args.extend(mixed_batch());
        let out = run_cli(args).await;
        assert_eq!(out.code(), Some(2), "{lie:?}: {}", out.stderr());
        assert!(out.stderr().contains(why), "{lie:?}: {}", out.stderr());
        assert!(!out.stdout().contains("not found") && !out.stderr().contains("checked "));
        server.stop().await;
    }
}

// See: #11
/// A user who pinned the honest index id refuses the forged index at
/// IndexInfo, before any number is evaluated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_index_id_refuses_a_forged_index() {
    let (server, honest) = consistent_liar(Forgery::LabelWidth8).await;
    let id: [u8; 32] = honest.index_id.as_slice().try_into().expect("id");
    let r = Client::builder(server.url()).pin_index(id).connect().await;
    assert!(matches!(r, Err(ClientError::IndexMismatch { .. })), "{r:?}");
    let out = run_cli(vec![
        "check".into(),
        "--server".into(),
        server.url(),
        "--pin-index".into(),
        hex::encode(id),
        fixture().members[0].clone(),
    ])
    .await;
    assert_eq!(out.code(), Some(2), "{}", out.stderr());
    assert!(
        out.stderr().contains("not the pinned index"),
        "{}",
        out.stderr()
    );
    server.stop().await;
}

// See: #11
/// An index under another key, consistently committed: the proofs of the
/// (honest) evaluations fail against the advertised key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_index_under_another_key_fails_its_proofs() {
    let (server, _) = consistent_liar(Forgery::OtherKey).await;
    let r = client(&server.url()).await.check(&mixed_batch()).await;
    assert!(matches!(r, Err(ClientError::ProofFailed { .. })), "{r:?}");
    server.stop().await;
}

/// How an [`InfoLiar`] lies in GetIndexInfo.
#[derive(Debug, Clone, Copy)]
enum InfoLie {
    /// No bucket root at all.
    MissingRoot,
    /// Another root, the id left as it was.
    WrongRoot,
    /// An id that commits to nothing.
    IdNotCommitting,
    /// More entries per bucket than in the whole index, consistently committed.
    BucketBiggerThanIndex,
    /// 2^27 entries per bucket, consistently committed.
    HugeBuckets,
    /// A payload length far above what the entries take, consistently committed.
    HugePayloadLen,
}

struct InfoLiar {
    inner: Service,
    lie: InfoLie,
}

fn commit(i: &mut pb::IndexInfo) {
    let layout = proto::IndexLayout {
        public_key: i.public_key.as_slice().try_into().expect("key"),
        bucket_bits: i.bucket_bits,
        fingerprint_bits: i.fingerprint_bits,
        bucket_entries: i.bucket_entries,
        payload_len: i.payload_len,
    };
    let root: [u8; 32] = i.bucket_root.as_slice().try_into().expect("root");
    i.index_id = layout.index_id(&root).to_vec();
}

#[tonic::async_trait]
impl Twist for InfoLiar {
    fn honest(&self) -> &Service {
        &self.inner
    }

    async fn get_index_info(
        &self,
        r: Request<GetIndexInfoRequest>,
    ) -> Result<Response<pb::IndexInfo>, Status> {
        let mut i = self.inner.get_index_info(r).await?.into_inner();
        match self.lie {
            InfoLie::MissingRoot => i.bucket_root.clear(),
            InfoLie::WrongRoot => i.bucket_root = vec![0xEE; 32],
            InfoLie::IdNotCommitting => i.index_id = vec![0x11; 32],
            InfoLie::BucketBiggerThanIndex => {
                i.bucket_entries = i.entry_count as u32 + 1;
                i.fingerprint_bits = proto::fingerprint_bits_for(i.bucket_entries);
                commit(&mut i);
            }
            InfoLie::HugeBuckets => {
                i.bucket_entries = 1 << 27;
                i.entry_count = u64::MAX;
                i.fingerprint_bits = proto::fingerprint_bits_for(i.bucket_entries);
                commit(&mut i);
            }
            InfoLie::HugePayloadLen => {
                i.payload_len = 256 << 20;
                commit(&mut i);
            }
        }
        Ok(Response::new(i))
    }
}

// See: #11
/// Every lie in GetIndexInfo is refused at connect, before any number is
/// sent; the CLI exits 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lie_in_index_info_is_refused_at_connect() {
    let lies = [
        InfoLie::MissingRoot,
        InfoLie::WrongRoot,
        InfoLie::IdNotCommitting,
        InfoLie::BucketBiggerThanIndex,
        InfoLie::HugeBuckets,
        InfoLie::HugePayloadLen,
    ];
    for lie in lies {
        let server = CustomServer::start(InfoLiar {
            inner: fixture_service(),
            lie,
        })
        .await;
        let r = Client::builder(server.url()).connect().await;
        assert!(
            matches!(r, Err(ClientError::UnsupportedIndex(_))),
            "{lie:?}: {r:?}"
        );
        let out = run_cli(vec![
            "check".into(),
            "--server".into(),
            server.url(),
            fixture().members[0].clone(),
        ])
        .await;
        assert_eq!(out.code(), Some(2), "{lie:?}: {}", out.stderr());
        assert!(
            out.stderr().contains("unsupported index"),
            "{}",
            out.stderr()
        );
        server.stop().await;
    }
}

/// How a [`StreamLiar`] answers GetBuckets.
#[derive(Debug, Clone, Copy)]
enum StreamLie {
    /// 4 MiB chunks for a requested bucket, without end (#11 row 2).
    Endless4MiB,
    /// The honest chunks, then the first one again and again, without end.
    EndlessRepeats,
    /// One honest chunk, then silence (#11 row 3).
    StallAfterOne,
    /// Every honest chunk, each after a pause shorter than the idle
    /// timeout: only the call's deadline ends it.
    Trickle(Duration),
}

struct StreamLiar {
    inner: Service,
    lie: StreamLie,
}

#[tonic::async_trait]
impl Twist for StreamLiar {
    fn honest(&self) -> &Service {
        &self.inner
    }

    async fn get_buckets(
        &self,
        r: Request<GetBucketsRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let mut honest = self.inner.get_buckets(r).await?.into_inner();
        let mut chunks = Vec::new();
        while let Some(c) = honest.next().await {
            chunks.push(c?);
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BucketChunk, Status>>(1);
        let lie = self.lie;
        tokio::spawn(async move {
            match lie {
                StreamLie::Endless4MiB => {
                    let big = BucketChunk {
                        bucket: chunks[0].bucket,
                        payload: vec![0x5A; 4 << 20].into(),
                        bucket_proof: chunks[0].bucket_proof.clone(),
                    };
                    while tx.send(Ok(big.clone())).await.is_ok() {}
                }
                StreamLie::EndlessRepeats => {
                    for c in chunks.iter().chain(std::iter::repeat(&chunks[0])) {
                        if tx.send(Ok(c.clone())).await.is_err() {
                            return;
                        }
                    }
                }
                StreamLie::StallAfterOne => {
                    let _ = tx.send(Ok(chunks[0].clone())).await;
                    tx.closed().await;
                }
                StreamLie::Trickle(pause) => {
                    for c in chunks {
                        tokio::time::sleep(pause).await;
                        if tx.send(Ok(c)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

async fn stream_liar(lie: StreamLie) -> CustomServer {
    CustomServer::start(StreamLiar {
        inner: fixture_service(),
        lie,
    })
    .await
}

/// A client with short timeouts, so a stalling server fails a test fast.
async fn impatient(url: &str) -> Client {
    Client::builder(url.to_owned())
        .timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect("connect")
}

// See: #11
/// Endless, stalled and trickling answers end in bounded time with a typed
/// error; a stall names the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_stalled_and_trickling_answers_end_in_errors() {
    let whole = |c: Client| async move {
        // Half the buckets or more: the whole index, 16 chunks.
        let r = c.check(&fixture().members[..64]).await;
        (c, r)
    };
    for lie in [
        StreamLie::Endless4MiB,
        StreamLie::EndlessRepeats,
        StreamLie::StallAfterOne,
        StreamLie::Trickle(Duration::from_millis(300)),
    ] {
        let server = stream_liar(lie).await;
        let started = std::time::Instant::now();
        let (_c, r) = whole(impatient(&server.url()).await).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(30), "{lie:?} took {took:?}");
        match (lie, &r) {
            (StreamLie::Endless4MiB, Err(ClientError::BadBucket { reason, .. })) => {
                assert!(reason.contains("larger than a bucket"), "{reason}");
            }
            (StreamLie::EndlessRepeats, Err(ClientError::BadBucket { reason, .. })) => {
                assert!(reason.contains("twice"), "{reason}");
            }
            (StreamLie::StallAfterOne, Err(e @ ClientError::Timeout { idle: true, .. })) => {
                assert!(e.to_string().contains(&server.url()), "{e}");
            }
            (StreamLie::Trickle(_), Err(ClientError::Timeout { idle: false, .. })) => {}
            _ => panic!("{lie:?}: {r:?}"),
        }
        server.stop().await;
    }
}

/// Evaluate that never answers.
struct SilentEvaluate {
    inner: Service,
}

#[tonic::async_trait]
impl Twist for SilentEvaluate {
    fn honest(&self) -> &Service {
        &self.inner
    }

    async fn evaluate(
        &self,
        _: Request<EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        std::future::pending().await
    }
}

// See: #11
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_evaluate_is_a_timeout() {
    let server = CustomServer::start(SilentEvaluate {
        inner: fixture_service(),
    })
    .await;
    let r = impatient(&server.url()).await.check(&mixed_batch()).await;
    assert!(
        matches!(
            r,
            Err(ClientError::Timeout {
                call: "Evaluate",
                ..
            })
        ),
        "{r:?}"
    );
    server.stop().await;
}

// See: #11
/// Rows 2 to 4 of the issue, through the real CLI: endless 4 MiB chunks,
/// endless repeats, a stall, and 16 MiB payloads whose every code is one
/// bit. Each exits 2 quickly, with the child's peak memory bounded (the
/// old client reached 4 GB and 3.2 GB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exits_2_in_bounded_time_and_memory_on_stream_lies() {
    let batch = fixture().members[..64].to_vec();
    let mut peaks = Vec::new();
    for lie in [
        StreamLie::Endless4MiB,
        StreamLie::EndlessRepeats,
        StreamLie::StallAfterOne,
    ] {
        let server = stream_liar(lie).await;
        let out = cli_fails_bounded(server.url(), &[], &batch, 128).await;
        if matches!(lie, StreamLie::StallAfterOne) {
            assert!(out.stderr().contains(&server.url()), "{}", out.stderr());
            assert!(
                out.stderr().contains("sent nothing for"),
                "{}",
                out.stderr()
            );
        }
        peaks.push((format!("{lie:?}"), out.peak_kib, out.wall));
        server.stop().await;
    }
    let (server, _) = consistent_liar(Forgery::Huge16MiB).await;
    let three: Vec<String> = fixture().members[..3].to_vec();
    let out = cli_fails_bounded(server.url(), &[], &three, 160).await;
    assert!(
        out.stderr().contains("Golomb parameter"),
        "{}",
        out.stderr()
    );
    peaks.push(("Huge16MiB".into(), out.peak_kib, out.wall));
    server.stop().await;
    eprintln!("CLI peak RSS and wall time per lie: {peaks:?}");
}

/// An index whose breach metadata, and one status message, carry terminal
/// escape sequences.
struct EscapingLiar {
    inner: Service,
}

const ESCAPES: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{9b}31m";

#[tonic::async_trait]
impl Twist for EscapingLiar {
    fn honest(&self) -> &Service {
        &self.inner
    }

    async fn get_index_info(
        &self,
        r: Request<GetIndexInfoRequest>,
    ) -> Result<Response<pb::IndexInfo>, Status> {
        let mut i = self.inner.get_index_info(r).await?.into_inner();
        for b in &mut i.breaches {
            b.id = format!("id{ESCAPES}");
            b.name = format!("name{ESCAPES}");
            b.description = format!("desc{ESCAPES}");
            b.data_classes = vec![format!("class{ESCAPES}")];
        }
        Ok(Response::new(i))
    }

    async fn evaluate(
        &self,
        r: Request<EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        if r.get_ref().blinded_elements.len() == 2 {
            return Err(Status::permission_denied(format!("no{ESCAPES}")));
        }
        self.inner.evaluate(r).await
    }
}

// See: #11
/// No control character from the server reaches the terminal through
/// `info`, the table or an error message; JSON Lines keeps the exact id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_strings_are_escaped_in_human_output() {
    let server = CustomServer::start(EscapingLiar {
        inner: fixture_service(),
    })
    .await;
    let url = server.url();
    let member = fixture().members[0].clone();
    let clean = |s: &str| !s.chars().any(|c| c.is_control() && c != '\n');
    let info = run_cli(vec!["info".into(), "--server".into(), url.clone()]).await;
    assert_eq!(info.code(), Some(0), "{}", info.stderr());
    assert!(clean(&info.stdout()), "{:?}", info.stdout());
    assert!(
        info.stdout().contains("name\\u{1b}[2J"),
        "{}",
        info.stdout()
    );
    let table = run_cli(vec![
        "check".into(),
        "--server".into(),
        url.clone(),
        member.clone(),
    ])
    .await;
    assert_eq!(table.code(), Some(1), "{}", table.stderr());
    assert!(
        clean(&table.stdout()) && clean(&table.stderr()),
        "{:?}",
        table.stdout()
    );
    assert!(table.stdout().contains("id\\u{1b}"), "{}", table.stdout());
    let jsonl = run_cli(vec![
        "check".into(),
        "--server".into(),
        url.clone(),
        "--format".into(),
        "jsonl".into(),
        member.clone(),
    ])
    .await;
    let row: serde_json::Value = serde_json::from_str(jsonl.stdout().trim()).expect("json");
    assert_eq!(row["breaches"][0], format!("id{ESCAPES}"));
    let two = fixture().members[1].clone();
    let refused = run_cli(vec!["check".into(), "--server".into(), url, member, two]).await;
    assert_eq!(refused.code(), Some(2));
    assert!(clean(&refused.stderr()), "{:?}", refused.stderr());
    assert!(
        refused.stderr().contains("no\\u{1b}"),
        "{}",
        refused.stderr()
    );
    server.stop().await;
}

// See: #11
/// Bytes that are not the ones the index id names (right length, one bit
/// off) fail their Merkle proof: BadBucket, and exit 2 from the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_is_not_the_index_ids_fails_its_merkle_proof() {
    let r = check_against(BucketLie::FlippedByte, &mixed_batch()).await;
    match &r {
        Err(ClientError::BadBucket { reason, .. }) => {
            assert!(reason.contains("Merkle"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let server = liar(BucketLie::FlippedByte).await;
    let out = run_cli(vec![
        "check".into(),
        "--server".into(),
        server.url(),
        fixture().members[0].clone(),
    ])
    .await;
    assert_eq!(out.code(), Some(2), "{}", out.stderr());
    assert!(
        out.stderr().contains("Merkle proof fails"),
        "{}",
        out.stderr()
    );
    server.stop().await;
}

fn metric(server: &TestServer, name: &str) -> Option<u64> {
    server
        .state
        .metrics
        .render()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

// See: #11
/// A server floor above the asked prefix bits is refused before anything
/// is sent, naming both values and their anonymity sets; an explicit
/// --max-prefix-bits accepts it, and the footer reports the bits used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_floor_above_the_asked_bits_is_refused_before_sending() {
    let f = fixture();
    let config = breachcheck_server::Config {
        min_prefix_bits: 3,
        ..open_config()
    };
    let server = start(&f.index, &f.key, config).await;
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = vec!["check".into(), "--server".into(), server.url()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(f.members[0].clone());
        a
    };
    let out = run_cli(args(&["--prefix-bits", "0"])).await;
    assert_eq!(out.code(), Some(2), "{}", out.stderr());
    let err = out.stderr();
    assert!(
        err.contains("at least 3 prefix bits (about 212.5 million candidates per number)"),
        "{err}"
    );
    assert!(
        err.contains("the 0 allowed (about 1.7 billion candidates)"),
        "{err}"
    );
    assert!(err.contains("nothing was sent"), "{err}");
    let m = server.state.metrics.render();
    assert!(
        !m.contains("rpc=\"Evaluate\"") && !m.contains("rpc=\"GetBuckets\""),
        "{m}"
    );
    // The SDK says the same before any call.
    let c = Client::builder(server.url())
        .prefix_bits(0)
        .connect()
        .await
        .expect("connect");
    assert!(matches!(
        c.prefix_bits(),
        Err(ClientError::PrefixBitsRefused {
            allowed: 0,
            required: 3
        })
    ));
    let out = run_cli(args(&["--prefix-bits", "0", "--max-prefix-bits", "3"])).await;
    assert_eq!(out.code(), Some(1), "{}", out.stderr());
    assert!(out.stderr().contains("learned 3 bits"), "{}", out.stderr());
    server.stop().await;
}

// See: #11
/// With a rate that runs out mid-check (1,000 burst, 500/s, 3,000 numbers
/// in batches of 500), the CLI waits for the refill, says so, answers every
/// number, and the server evaluates each number exactly once: no quota is
/// spent on thrown-away work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_paces_itself_to_the_rate_and_wastes_no_quota() {
    let f = fixture();
    let (token, entry) = api_key(
        "paced",
        Some(breachcheck_server::Quota {
            elements_per_second: 500.0,
            burst: 1000,
            elements_per_day: 1_000_000,
            bucket_bytes_per_day: 1 << 40,
            pir_answers_per_day: 1000,
            ..breachcheck_server::Quota::default()
        }),
    );
    let config = breachcheck_server::Config {
        api_keys: vec![entry],
        max_batch: 500,
        ..breachcheck_server::Config::default()
    };
    let server = start(&f.index, &f.key, config).await;
    let dir = TempDir::new("paced");
    let list = dir.join("numbers.txt");
    let numbers: Vec<String> = f.members[..2000]
        .iter()
        .chain(&f.non_members[..1000])
        .cloned()
        .collect();
    std::fs::write(&list, numbers.join("\n")).expect("write");
    let out = run_cli(vec![
        "check".into(),
        "--server".into(),
        server.url(),
        "--api-key".into(),
        token,
        "--format".into(),
        "jsonl".into(),
        "--file".into(),
        list.display().to_string(),
    ])
    .await;
    assert_eq!(out.code(), Some(1), "{}", out.stderr());
    let rows: Vec<serde_json::Value> = out
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect();
    assert_eq!(rows.len(), 3000);
    assert_eq!(rows.iter().filter(|r| r["found"] == true).count(), 2000);
    assert!(out.stderr().contains("waiting "), "{}", out.stderr());
    assert_eq!(
        metric(&server, "breachcheck_elements_evaluated_total"),
        Some(3000)
    );
    assert!(metric(&server, "breachcheck_quota_rejections_total{").is_some_and(|n| n >= 1));
    server.stop().await;
}

// See: #11
/// A daily cap mid-check is an error with its reset time, after the
/// results of every number already paid for; nothing evaluated is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_cap_delivers_what_was_paid_for_then_the_reset_time() {
    let f = fixture();
    let (token, entry) = api_key(
        "capped",
        Some(breachcheck_server::Quota {
            elements_per_second: 1e9,
            burst: 1 << 30,
            elements_per_day: 1000,
            bucket_bytes_per_day: 1 << 40,
            pir_answers_per_day: 1000,
            ..breachcheck_server::Quota::default()
        }),
    );
    let config = breachcheck_server::Config {
        api_keys: vec![entry],
        max_batch: 250,
        ..breachcheck_server::Config::default()
    };
    let server = start(&f.index, &f.key, config).await;
    let c = Client::builder(server.url())
        .api_key(token)
        .max_quota_wait(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect");
    let numbers: Vec<String> = f.members[..750]
        .iter()
        .chain(&f.non_members[..750])
        .cloned()
        .collect();
    let mut rx = c.check_stream(numbers);
    let mut got = Vec::new();
    while let Some(r) = rx.recv().await {
        got.push(r);
    }
    let last = got.pop();
    match &last {
        Some(Err(
            e @ ClientError::QuotaExhausted {
                retry_after: Some(_),
                ..
            },
        )) => {
            assert!(e.to_string().contains("resetting at "), "{e}");
        }
        other => panic!("expected the daily cap, got {other:?}"),
    }
    assert!(got.iter().all(Result::is_ok));
    assert_eq!(got.len(), 1000);
    assert_eq!(
        metric(&server, "breachcheck_elements_evaluated_total"),
        Some(1000)
    );
    server.stop().await;
}

// See: #11
/// --pin-index accepts the served index; the summary names the key and the
/// index; the trust file records the first key and refuses a changed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_and_the_trust_file_are_enforced_and_reported() {
    let server = start_fixture().await;
    let url = server.url();
    let info = client(&url).await.info();
    let id = hex::encode(&info.index_id);
    let fp = proto::PublicKey::from_bytes(&info.public_key)
        .expect("key")
        .fingerprint();
    let dir = TempDir::new("trust");
    let trust = dir.join("known_keys").display().to_string();
    let member = fixture().members[0].clone();
    let check = |extra: Vec<String>| {
        let mut a: Vec<String> = vec!["check".into(), "--server".into(), url.clone()];
        a.extend(extra);
        a.push(member.clone());
        run_cli(a)
    };
    let out = check(vec![
        "--pin-index".into(),
        id.clone(),
        "--trust-file".into(),
        trust.clone(),
    ])
    .await;
    assert_eq!(out.code(), Some(1), "{}", out.stderr());
    let err = out.stderr();
    assert!(
        err.contains(&format!("key {fp} (first use: recorded in {trust})")),
        "{err}"
    );
    assert!(err.contains(&format!("index {id}")), "{err}");
    let out = check(vec!["--trust-file".into(), trust.clone()]).await;
    assert_eq!(out.code(), Some(1), "{}", out.stderr());
    assert!(out.stderr().contains("(as recorded in"), "{}", out.stderr());
    // Another index id pinned: refused at IndexInfo.
    let out = check(vec!["--pin-index".into(), "ab".repeat(32)]).await;
    assert_eq!(out.code(), Some(2), "{}", out.stderr());
    assert!(
        out.stderr().contains("not the pinned index"),
        "{}",
        out.stderr()
    );
    // The server's key "changed" since first use.
    let other = breachcheck_server::key_from_seed("07e4").expect("key");
    std::fs::write(
        dir.join("known_keys"),
        format!("{url} {}\n", hex::encode(other.public_key().to_bytes())),
    )
    .expect("write");
    let out = check(vec!["--trust-file".into(), trust.clone()]).await;
    assert_eq!(out.code(), Some(2), "{}", out.stderr());
    assert!(out.stderr().contains("HAS CHANGED"), "{}", out.stderr());
    server.stop().await;
}

// See: #11
/// The case: 40,000 numbers with every server default (max_batch
/// 4,096; burst 20,000 at 1,000/s; 100,000 a day). The check waits about
/// 20 s for the rate, reports the waits, answers every number, and the
/// server evaluates each number once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_thousand_numbers_complete_with_server_defaults() {
    let f = fixture();
    let (token, entry) = api_key("defaults", Some(breachcheck_server::Quota::default()));
    let config = breachcheck_server::Config {
        api_keys: vec![entry],
        ..breachcheck_server::Config::default()
    };
    let server = start(&f.index, &f.key, config).await;
    let waits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = waits.clone();
    let c = Client::builder(server.url())
        .api_key(token)
        .on_progress(move |p| sink.lock().expect("lock").push(p))
        .connect()
        .await
        .expect("connect");
    let numbers: Vec<String> = (0..40_000).map(|i| format!("+86135{i:08}")).collect();
    let r = c.check(&numbers).await.expect("a paced check completes");
    assert_eq!(r.len(), 40_000);
    assert!(r.iter().all(|r| r.error.is_none()));
    assert_eq!(
        metric(&server, "breachcheck_elements_evaluated_total"),
        Some(40_000)
    );
    assert!(
        !waits.lock().expect("lock").is_empty(),
        "the rate never ran out"
    );
    server.stop().await;
}
