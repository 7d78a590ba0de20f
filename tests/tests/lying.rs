//! Hand-written servers that lie in GetBuckets, or refuse with quota
//! metadata (#9). A lie about buckets is a typed client error
//! (`ClientError::BadBucket`), never a panic and never "not found"; the CLI
//! exits 2 on it. The honest parts of each server delegate to the real
//! service over the shared fixture.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Command;
use std::time::Duration;

use breachcheck_client::{CheckResult, Client, ClientError};
use breachcheck_proto as proto;
use breachcheck_proto::pb::breach_check_server::BreachCheck;
use breachcheck_proto::pb::{
    self, BucketChunk, EvaluateRequest, GetBucketsRequest, GetIndexInfoRequest,
};
use breachcheck_server::Service;
use tokio_stream::{Stream, StreamExt};
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
}

/// Answers GetIndexInfo and Evaluate honestly and lies in GetBuckets.
struct BucketLiar {
    inner: Service,
    lie: BucketLie,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<BucketChunk, Status>> + Send>>;

#[tonic::async_trait]
impl BreachCheck for BucketLiar {
    async fn get_index_info(
        &self,
        r: Request<GetIndexInfoRequest>,
    ) -> Result<Response<pb::IndexInfo>, Status> {
        self.inner.get_index_info(r).await
    }

    async fn evaluate(
        &self,
        r: Request<EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        self.inner.evaluate(r).await
    }

    type GetBucketsStream = ChunkStream;

    async fn get_buckets(
        &self,
        r: Request<GetBucketsRequest>,
    ) -> Result<Response<Self::GetBucketsStream>, Status> {
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
impl BreachCheck for Exhausted {
    async fn get_index_info(
        &self,
        r: Request<GetIndexInfoRequest>,
    ) -> Result<Response<pb::IndexInfo>, Status> {
        self.inner.get_index_info(r).await
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

    type GetBucketsStream = <Service as BreachCheck>::GetBucketsStream;

    async fn get_buckets(
        &self,
        r: Request<GetBucketsRequest>,
    ) -> Result<Response<Self::GetBucketsStream>, Status> {
        self.inner.get_buckets(r).await
    }
}

async fn exhausted(retry_after: Option<&'static str>) -> Result<Vec<CheckResult>, ClientError> {
    let server = CustomServer::start(Exhausted {
        inner: fixture_service(),
        retry_after,
    })
    .await;
    let r = client(&server.url()).await.check(&mixed_batch()).await;
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
