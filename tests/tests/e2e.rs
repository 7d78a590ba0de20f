//! End-to-end tests over real gRPC on 127.0.0.1: the client SDK against the
//! real server library, plus raw protocol probes of every status code.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use breachcheck_client::{Client, ClientError};
use breachcheck_proto as proto;
use breachcheck_proto::pb::breach_check_client::BreachCheckClient;
use breachcheck_proto::pb::breach_check_server::BreachCheck;
use breachcheck_proto::pb::{self, EvaluateRequest, GetBucketsRequest, GetIndexInfoRequest};
use breachcheck_proto::{BlindedElement, Mode, ServerKey};
use breachcheck_server::{AppState, Config, Quota, Served, Service};
use support::*;
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};

// --- membership ---------------------------------------------------------------

/// A member is found and a non-member is not, in a mixed batch of 10,000 with
/// the exact expected counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_batch_of_10000_has_exact_counts() {
    let f = fixture();
    let server = start_fixture().await;
    let client = client(&server.url()).await;
    let mut batch: Vec<String> = f.members.iter().take(5000).cloned().collect();
    batch.extend(f.non_members.iter().take(5000).cloned());
    let results = client.check(&batch).await.expect("check");
    assert_eq!(results.len(), 10_000);
    let found: Vec<bool> = results.iter().map(|r| r.found).collect();
    assert!(found[..5000].iter().all(|&x| x), "a member was not found");
    assert!(found[5000..].iter().all(|&x| !x), "a non-member was found");
    assert_eq!(results[0].breaches[0].id, "synthetic");
    server.stop().await;
}

/// Numbers in other formats are canonicalised before the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_formats_are_found() {
    let f = fixture();
    let server = start_fixture().await;
    let client = client(&server.url()).await;
    let m = &f.members[0];
    let national = &m[3..];
    let forms = vec![
        m.clone(),
        national.to_string(),
        format!("0086{national}"),
        format!(
            "+86 {}-{}-{}",
            &national[..3],
            &national[3..7],
            &national[7..]
        ),
    ];
    let r = client.check(&forms).await.expect("check");
    assert!(
        r.iter()
            .all(|r| r.found && r.number.as_deref() == Some(m.as_str()))
    );
    server.stop().await;
}

/// Invalid numbers are reported per input and never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_numbers_are_reported_per_input() {
    let f = fixture();
    let server = start_fixture().await;
    let client = client(&server.url()).await;
    let inputs = vec![
        f.members[1].clone(),
        "hello".into(),
        "12345".into(),
        String::new(),
    ];
    let r = client.check(&inputs).await.expect("check");
    assert!(r[0].found && r[0].error.is_none());
    assert_eq!(r[1].error.as_deref(), Some("contains letters"));
    assert_eq!(r[2].error.as_deref(), Some("too short"));
    assert_eq!(r[3].error.as_deref(), Some("empty"));
    assert!(r[1..].iter().all(|r| !r.found && r.number.is_none()));
    server.stop().await;
}

/// j = 0 downloads the whole index and gives the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_download_gives_the_same_answers() {
    let f = fixture();
    let server = start_fixture().await;
    let client = Client::builder(server.url())
        .prefix_bits(0)
        .connect()
        .await
        .expect("connect");
    assert_eq!(client.prefix_bits().ok(), Some(0));
    let mut batch: Vec<String> = f.members[..50].to_vec();
    batch.extend(f.non_members[..50].iter().cloned());
    let r = client.check(&batch).await.expect("check");
    assert_eq!(r.iter().filter(|r| r.found).count(), 50);
    server.stop().await;
}

// --- lying servers -----------------------------------------------------------------

#[derive(Clone, Copy)]
enum Lie {
    OtherKey,
    TamperedProof,
    SwappedElements,
    DroppedElement,
}

/// A server that answers GetIndexInfo and GetBuckets honestly but lies in Evaluate.
struct Liar {
    inner: Service,
    lie: Lie,
    other: ServerKey,
}

#[tonic::async_trait]
impl Twist for Liar {
    fn honest(&self) -> &Service {
        &self.inner
    }

    async fn evaluate(
        &self,
        r: Request<EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        let blinded: Vec<BlindedElement> = r
            .get_ref()
            .blinded_elements
            .iter()
            .map(|b| BlindedElement::from_bytes(b).expect("valid"))
            .collect();
        let mut resp = self.inner.evaluate(r).await?.into_inner();
        match self.lie {
            Lie::OtherKey => {
                let e = self
                    .other
                    .blind_evaluate(&blinded, &mut rand::rng())
                    .expect("eval");
                resp.evaluated_elements =
                    e.elements.iter().map(|x| x.to_bytes().to_vec()).collect();
                resp.proof = e.proof.expect("proof").to_bytes().to_vec();
            }
            Lie::TamperedProof => resp.proof[0] ^= 1,
            Lie::SwappedElements => {
                if resp.evaluated_elements.len() > 1 {
                    resp.evaluated_elements.swap(0, 1);
                }
            }
            Lie::DroppedElement => {
                resp.evaluated_elements.pop();
            }
        }
        Ok(Response::new(resp))
    }
}

async fn check_against_liar(lie: Lie) -> Result<Vec<breachcheck_client::CheckResult>, ClientError> {
    let f = fixture();
    let served = Served::load(&f.index, &f.key).expect("load");
    let state = Arc::new(AppState::new(served, open_config()).expect("state"));
    let liar = Liar {
        inner: Service::new(state),
        lie,
        other: ServerKey::random(Mode::Voprf, &mut rand::rng()),
    };
    let custom = CustomServer::start(liar).await;
    let client = client(&custom.url()).await;
    let batch: Vec<String> = f.members[..8]
        .iter()
        .chain(&f.non_members[..8])
        .cloned()
        .collect();
    let r = client.check(&batch).await;
    custom.stop().await;
    r
}

/// A server evaluating under another key than the one it presents is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_server_with_another_key_fails_loudly() {
    let r = check_against_liar(Lie::OtherKey).await;
    assert!(matches!(r, Err(ClientError::ProofFailed { .. })), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_server_with_tampered_proof_fails_loudly() {
    let r = check_against_liar(Lie::TamperedProof).await;
    assert!(matches!(r, Err(ClientError::ProofFailed { .. })), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_server_with_swapped_elements_fails_loudly() {
    let r = check_against_liar(Lie::SwappedElements).await;
    assert!(matches!(r, Err(ClientError::ProofFailed { .. })), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_server_dropping_an_element_fails_loudly() {
    let r = check_against_liar(Lie::DroppedElement).await;
    assert!(
        matches!(r, Err(ClientError::ResponseLength { .. })),
        "{r:?}"
    );
}

/// A pinned key that is not the server's is an error before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_key_mismatch_is_an_error() {
    let server = start_fixture().await;
    let other = ServerKey::random(Mode::Voprf, &mut rand::rng());
    let r = Client::builder(server.url())
        .pin_key(other.public_key().to_bytes())
        .connect()
        .await;
    assert!(matches!(r, Err(ClientError::KeyMismatch { .. })), "{r:?}");
    // The right pin connects.
    let info = client(&server.url()).await.info();
    let mut pk = [0u8; 32];
    pk.copy_from_slice(&info.public_key);
    assert!(
        Client::builder(server.url())
            .pin_key(pk)
            .connect()
            .await
            .is_ok()
    );
    server.stop().await;
}

// --- availability, quotas, cache ------------------------------------------------------

/// The client retries across a server restart on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_retries_across_a_server_restart() {
    let f = fixture();
    let server = start_fixture().await;
    let addr = server.addr;
    let client = client(&server.url()).await;
    server.stop().await;
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let listener = TcpListener::bind(addr).await.expect("rebind");
        serve_on(listener, &f.index, &f.key, open_config()).await
    });
    let r = client
        .check(&f.members[..20])
        .await
        .expect("check after restart");
    assert!(r.iter().all(|r| r.found));
    restart.await.expect("restart").stop().await;
}

/// RESOURCE_EXHAUSTED reaches the caller with the refill time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_quota_is_surfaced_with_refill_time() {
    let f = fixture();
    let (token, entry) = api_key(
        "small",
        Some(Quota {
            elements_per_second: 1.0,
            burst: 1000,
            elements_per_day: 30,
            bucket_bytes_per_day: 1 << 30,
            pir_answers_per_day: 1000,
            ..Quota::default()
        }),
    );
    let config = Config {
        api_keys: vec![entry],
        ..Config::default()
    };
    let server = start(&f.index, &f.key, config).await;
    let client = Client::builder(server.url())
        .api_key(token)
        .connect()
        .await
        .expect("connect");
    assert!(client.check(&f.members[..30]).await.is_ok());
    let r = client.check(&f.non_members[..5]).await;
    match r {
        Err(ClientError::QuotaExhausted {
            message,
            retry_after,
        }) => {
            assert!(message.contains("daily evaluation cap"), "{message}");
            assert!(retry_after.is_some_and(|d| d <= Duration::from_secs(86_400)));
        }
        other => panic!("expected QuotaExhausted, got {other:?}"),
    }
    server.stop().await;
}

/// RESOURCE_EXHAUSTED carries the refill time as `retry-after` metadata in
/// whole seconds, the same number as the message; the metrics layer counts the
/// refusal under its code. Other refusals carry no `retry-after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_quota_carries_retry_after_metadata() {
    let f = fixture();
    let (token, entry) = api_key(
        "meta",
        Some(Quota {
            elements_per_second: 1.0,
            burst: 1000,
            elements_per_day: 4,
            bucket_bytes_per_day: 1 << 30,
            pir_answers_per_day: 1000,
            ..Quota::default()
        }),
    );
    let config = Config {
        api_keys: vec![entry],
        ..Config::default()
    };
    let server = start(&f.index, &f.key, config).await;
    let mut c = raw(&server.url()).await;
    let req = |n: usize| {
        let mut r = Request::new(EvaluateRequest {
            index_id: vec![],
            blinded_elements: blinded(n),
        });
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        r
    };
    c.evaluate(req(4)).await.expect("within quota");
    let s = c.evaluate(req(1)).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    let secs: u64 = s
        .metadata()
        .get(breachcheck_server::RETRY_AFTER)
        .expect("retry-after")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!((1..=86_400).contains(&secs), "{secs}");
    assert!(
        s.message().contains(&format!("refills in {secs} s")),
        "{}",
        s.message()
    );
    // Another refusal (no key at all) has no retry-after. (An empty batch
    // from this key is refused as RESOURCE_EXHAUSTED now: a spent key's
    // Evaluate is refused from its headers, before the body is read.)
    let s = c
        .evaluate(EvaluateRequest {
            index_id: vec![],
            blinded_elements: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(s.metadata().get("retry-after").is_none());
    let m = server.state.metrics.render();
    assert!(
        m.contains("breachcheck_requests_total{rpc=\"Evaluate\",code=\"RESOURCE_EXHAUSTED\"} 1"),
        "{m}"
    );
    assert!(m.contains("breachcheck_in_flight_requests 0"), "{m}");
    server.stop().await;
}

/// The bucket cache is reused, and replaced when the index id changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_cache_is_reused_and_replaced_on_new_index() {
    let f = fixture();
    let cache = TempDir::new("cache");
    let server = start_fixture().await;
    let mk = || {
        Client::builder(server.url())
            .cache_dir(cache.path())
            .connect()
    };
    let c1 = mk().await.expect("connect");
    assert!(
        c1.check(&f.members[..10])
            .await
            .expect("check")
            .iter()
            .all(|r| r.found)
    );
    let sent = || server.state.metrics.render();
    let bytes_line = |m: String| {
        m.lines()
            .find(|l| l.starts_with("breachcheck_bucket_bytes_sent_total "))
            .map(str::to_owned)
    };
    let before = bytes_line(sent());
    let old_dir = cache.join(&hex::encode(c1.info().index_id));
    assert!(std::fs::read_dir(&old_dir).expect("cache dir").count() > 0);
    // A fresh client answers from the disk cache: no bucket bytes are sent.
    let c2 = mk().await.expect("connect");
    assert!(
        c2.check(&f.members[..10])
            .await
            .expect("check")
            .iter()
            .all(|r| r.found)
    );
    assert_eq!(before, bytes_line(sent()));
    // Swap in a different index with the same key: the cache moves.
    let other = make_fixture("cache-other", 3000, "5eed", Some(2));
    server
        .state
        .swap(Served::load(&other.index, &f.key).expect("load"));
    let c3 = mk().await.expect("connect");
    let r = c3.check(&other.members[..10]).await.expect("check");
    assert!(r.iter().all(|r| r.found));
    assert!(!old_dir.exists(), "stale cache kept");
    assert!(cache.join(&hex::encode(c3.info().index_id)).exists());
    server.stop().await;
}

/// A reload under concurrent load fails no request (the client refetches
/// IndexInfo once on FAILED_PRECONDITION).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_concurrent_load_fails_no_request() {
    let f = fixture();
    let server = start_fixture().await;
    let other = make_fixture("reload-other", 3000, "5eed", Some(3));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let url = server.url();
        let batch: Vec<String> = f.members[i * 100..i * 100 + 100].to_vec();
        tasks.push(tokio::spawn(async move {
            let c = client(&url).await;
            let mut ok = 0;
            for _ in 0..4 {
                let r = c
                    .check(&batch)
                    .await
                    .expect("no request may fail during a reload");
                ok += r.len();
            }
            ok
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let state = server.state.clone();
    let (oi, ok) = (other.index.clone(), f.key.clone());
    tokio::task::spawn_blocking(move || state.reload(&oi, Some(&ok)))
        .await
        .expect("join")
        .expect("reload");
    for t in tasks {
        assert_eq!(t.await.expect("task"), 400);
    }
    server.stop().await;
}

/// Shutdown waits for in-flight calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_calls() {
    let server = start_fixture().await;
    let mut c = raw(&server.url()).await;
    let info = c
        .get_index_info(GetIndexInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    let elems = blinded(4096);
    let call = tokio::spawn(async move {
        c.evaluate(EvaluateRequest {
            index_id: info.index_id,
            blinded_elements: elems,
        })
        .await
    });
    // Wait until the call is being handled, then shut down.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.state.metrics.in_flight() == 0 {
        assert!(std::time::Instant::now() < deadline, "call never arrived");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let state = server.state.clone();
    server.stop().await;
    let r = call
        .await
        .expect("join")
        .expect("in-flight call completes")
        .into_inner();
    assert_eq!(r.evaluated_elements.len(), 4096);
    assert_eq!(state.metrics.in_flight(), 0);
}

// --- raw protocol: every status code -------------------------------------------

async fn raw(url: &str) -> BreachCheckClient<tonic::transport::Channel> {
    BreachCheckClient::connect(url.to_owned())
        .await
        .expect("connect")
}

fn blinded(n: usize) -> Vec<Vec<u8>> {
    let inputs: Vec<String> = (0..n).map(|i| format!("+8613800{i:06}")).collect();
    let (_, b) = proto::blind_batch(Mode::Voprf, &inputs, &mut rand::rng()).expect("blind");
    b.iter().map(|x| x.to_bytes().to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_code_is_produced() {
    let f = fixture();
    let (token, entry) = api_key(
        "probe",
        Some(Quota {
            elements_per_second: 1.0,
            burst: 100,
            elements_per_day: 100,
            bucket_bytes_per_day: 1 << 30,
            pir_answers_per_day: 1000,
            ..Quota::default()
        }),
    );
    let config = Config {
        api_keys: vec![entry],
        max_batch: 64,
        ..Config::default()
    };
    let server = start(&f.index, &f.key, config).await;
    let mut c = raw(&server.url()).await;
    let info = c
        .get_index_info(GetIndexInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.suite, "ristretto255-SHA512");
    assert_eq!(info.mode, 1);
    assert_eq!(info.max_batch, 64);
    let authed = |msg: EvaluateRequest, tok: &str| {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {tok}").parse().expect("header"),
        );
        r
    };
    let ev = |elems: Vec<Vec<u8>>, id: Vec<u8>| EvaluateRequest {
        index_id: id,
        blinded_elements: elems,
    };
    let id = info.index_id.clone();

    // UNAUTHENTICATED: none, and a wrong token.
    let s = c.evaluate(ev(blinded(1), id.clone())).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    let s = c
        .evaluate(authed(ev(blinded(1), id.clone()), "wrong"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    // INVALID_ARGUMENT names the element index: identity, short, non-canonical.
    let mut elems = blinded(3);
    elems[1] = vec![0u8; 32];
    let s = c
        .evaluate(authed(ev(elems, id.clone()), &token))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("blinded_elements[1]"),
        "{}",
        s.message()
    );
    let mut elems = blinded(3);
    elems[2].pop();
    let s = c
        .evaluate(authed(ev(elems, id.clone()), &token))
        .await
        .unwrap_err();
    assert!(s.code() == Code::InvalidArgument && s.message().contains("blinded_elements[2]"));
    let s = c
        .evaluate(authed(ev(vec![vec![0xFF; 32]], id.clone()), &token))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    // OUT_OF_RANGE above max_batch.
    let s = c
        .evaluate(authed(ev(blinded(65), id.clone()), &token))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    // Far above: refused by the message size limit before decoding, same code.
    let s = c
        .evaluate(authed(ev(blinded(3000), id.clone()), &token))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    // NOT_FOUND for an unknown index id.
    let s = c
        .evaluate(authed(ev(blinded(1), vec![9; 32]), &token))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    // OK, then RESOURCE_EXHAUSTED past the daily cap, saying when it refills.
    let ok = c
        .evaluate(authed(ev(blinded(64), id.clone()), &token))
        .await
        .expect("evaluate")
        .into_inner();
    assert_eq!(ok.evaluated_elements.len(), 64);
    assert_eq!(ok.proof.len(), 64);
    let s = c
        .evaluate(authed(ev(blinded(64), id.clone()), &token))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(s.message().contains("refills in"), "{}", s.message());
    // GetBuckets: bad prefix bits and prefixes.
    let gb = |j: u32, prefixes: Vec<u32>| {
        let mut r = Request::new(GetBucketsRequest {
            index_id: id.clone(),
            prefix_bits: j,
            prefixes,
        });
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        r
    };
    let s = c
        .get_buckets(gb(info.bucket_bits + 1, vec![0]))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = c.get_buckets(gb(2, vec![4])).await.map(|_| ()).unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = c
        .get_buckets(gb(2, vec![1, 1]))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let mut stream = c
        .get_buckets(gb(2, vec![1]))
        .await
        .expect("buckets")
        .into_inner();
    let mut got = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        got.push(chunk.bucket);
    }
    assert_eq!(got, (4..8).collect::<Vec<u32>>());
    // FAILED_PRECONDITION for the id of a replaced index.
    let other = make_fixture("status-other", 2000, "5eed", Some(2));
    server
        .state
        .swap(Served::load(&other.index, &f.key).expect("load"));
    let s = c.get_buckets(gb(0, vec![])).await.map(|_| ()).unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    server.stop().await;
}

/// Every bucket payload of an index has the same length (padding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_payloads_all_have_one_size() {
    let server = start_fixture().await;
    let mut c = raw(&server.url()).await;
    let info = c
        .get_index_info(GetIndexInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    let mut stream = c
        .get_buckets(GetBucketsRequest {
            index_id: info.index_id,
            prefix_bits: 0,
            prefixes: vec![],
        })
        .await
        .expect("buckets")
        .into_inner();
    let mut sizes = std::collections::BTreeSet::new();
    let mut n = 0;
    while let Some(chunk) = stream.message().await.expect("chunk") {
        sizes.insert(chunk.payload.len());
        n += 1;
    }
    assert_eq!(n, 1 << info.bucket_bits);
    assert_eq!(sizes.len(), 1, "{sizes:?}");
    server.stop().await;
}

// --- operations ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving_and_reflection_lists_the_service() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let server = start_fixture().await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut h = HealthClient::new(channel.clone());
    let r = h
        .check(HealthCheckRequest {
            service: breachcheck_proto::SERVICE_NAME.into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let msg = resp.message().await.expect("msg").expect("some");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"breachcheck.v1.BreachCheck".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    server.stop().await;
}

/// TLS (rustls): a check over https with a pinned CA works; plaintext to the
/// TLS port does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_and_plaintext_is_refused() {
    use tonic::transport::{Identity, ServerTlsConfig};
    let f = fixture();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("cert");
    let cert_pem = ck.cert.pem();
    let key_pem = ck.signing_key.serialize_pem();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&cert_pem, &key_pem));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let state = Arc::new(
        AppState::new(Served::load(&f.index, &f.key).expect("load"), open_config()).expect("state"),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(breachcheck_server::serve(
        listener,
        state,
        Some(tls),
        async {
            let _ = rx.await;
        },
    ));
    let c = Client::builder(format!("https://localhost:{port}"))
        .ca_pem(cert_pem.clone())
        .connect()
        .await
        .expect("TLS connect");
    let r = c.check(&f.members[..5]).await.expect("check over TLS");
    assert!(r.iter().all(|r| r.found));
    // Without the CA the certificate is not trusted.
    let untrusted = Client::builder(format!("https://localhost:{port}"))
        .retries(0)
        .connect()
        .await;
    assert!(untrusted.is_err());
    // Plaintext against the TLS port fails.
    let plain = Client::builder(format!("http://127.0.0.1:{port}"))
        .retries(0)
        .connect()
        .await;
    assert!(plain.is_err());
    let _ = tx.send(());
    h.await.expect("join").expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_elements_and_rejections() {
    let f = fixture();
    let server = start_fixture().await;
    let c = client(&server.url()).await;
    c.check(&f.members[..5]).await.expect("check");
    let m = server.state.metrics.render();
    assert!(
        m.contains("breachcheck_requests_total{rpc=\"Evaluate\",code=\"OK\"} 1"),
        "{m}"
    );
    assert!(m.contains("breachcheck_elements_evaluated_total 5"), "{m}");
    assert!(
        m.contains("breachcheck_request_duration_seconds_count{rpc=\"GetBuckets\"}"),
        "{m}"
    );
    // Metrics never carry numbers.
    assert!(!m.contains(&f.members[0][3..]));
    server.stop().await;
}

mod abuse;
mod binaries;
mod browser;
mod corpus;
mod deploy;
mod dispatch;
mod index;
mod integrity;
mod lying;
mod pir;
mod scale;

/// An empty index_id means the current index (the proof still binds the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_index_id_means_the_current_index() {
    let server = start_fixture().await;
    let mut c = raw(&server.url()).await;
    let r = c
        .evaluate(EvaluateRequest {
            index_id: vec![],
            blinded_elements: blinded(3),
        })
        .await
        .expect("evaluate")
        .into_inner();
    assert_eq!(r.evaluated_elements.len(), 3);
    server.stop().await;
}

/// A bucket-only replica serves IndexInfo and buckets without the key and
/// refuses Evaluate with UNIMPLEMENTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_only_replica_serves_buckets_without_the_key() {
    let f = fixture();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let state = Arc::new(
        AppState::new(
            Served::load_buckets_only(&f.index).expect("load"),
            open_config(),
        )
        .expect("state"),
    );
    let server = serve_state(listener, state).await;
    let mut c = raw(&server.url()).await;
    let info = c
        .get_index_info(GetIndexInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.public_key.len(), 32);
    let mut stream = c
        .get_buckets(GetBucketsRequest {
            index_id: info.index_id.clone(),
            prefix_bits: 0,
            prefixes: vec![],
        })
        .await
        .expect("buckets")
        .into_inner();
    let mut n = 0;
    while stream.message().await.expect("chunk").is_some() {
        n += 1;
    }
    assert_eq!(n, 1 << info.bucket_bits);
    let s = c
        .evaluate(EvaluateRequest {
            index_id: info.index_id,
            blinded_elements: blinded(2),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unimplemented, "{s:?}");
    server.stop().await;
}

/// A server with a low `max_prefixes` still answers a many-prefix check: the
/// client splits its GetBuckets requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_adapts_to_a_low_prefix_limit() {
    let f = make_fixture("prefix-limit", 6000, "5eed", Some(5));
    let config = Config {
        max_prefixes: 3,
        ..open_config()
    };
    let server = start(&f.index, &f.key, config).await;
    let c = client(&server.url()).await;
    // Ten numbers touch fewer than half of the 32 buckets: fetched by prefix.
    let batch: Vec<String> = f.members[..10].to_vec();
    let r = c.check(&batch).await.expect("check");
    assert!(r.iter().all(|r| r.found));
    server.stop().await;
}

/// A server whose first GetBuckets says the index was replaced.
struct FlakyBuckets {
    inner: Service,
    failed: std::sync::atomic::AtomicBool,
}

#[tonic::async_trait]
impl Twist for FlakyBuckets {
    fn honest(&self) -> &Service {
        &self.inner
    }

    async fn evaluate(
        &self,
        r: Request<EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        // Charged now, answered after the bucket refusal has reached the
        // client: the order a loaded machine once produced, which made the
        // client drop a paid evaluation and be charged again.
        let answer = self.inner.evaluate(r).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        answer
    }

    async fn get_buckets(
        &self,
        r: Request<GetBucketsRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // After the Evaluate has been sent (and charged).
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Err(Status::failed_precondition("index_id is stale"));
        }
        self.inner.get_buckets(r).await
    }
}

/// After FAILED_PRECONDITION the client refetches IndexInfo and retries, but
/// reuses outputs already verified under the same key: the quota is charged
/// once. (A quota of exactly the batch size would run out on a second charge.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_index_change_does_not_charge_twice() {
    let f = fixture();
    let (token, entry) = api_key(
        "exact",
        Some(Quota {
            elements_per_second: 1e6,
            burst: 1 << 20,
            elements_per_day: 40,
            bucket_bytes_per_day: 1 << 30,
            pir_answers_per_day: 1000,
            ..Quota::default()
        }),
    );
    let config = Config {
        api_keys: vec![entry],
        ..Config::default()
    };
    let served = Served::load(&f.index, &f.key).expect("load");
    let svc = FlakyBuckets {
        inner: Service::new(Arc::new(AppState::new(served, config).expect("state"))),
        failed: std::sync::atomic::AtomicBool::new(false),
    };
    let custom = CustomServer::start(svc).await;
    let c = Client::builder(custom.url())
        .api_key(token)
        .connect()
        .await
        .expect("connect");
    let batch: Vec<String> = f.members[..20]
        .iter()
        .chain(&f.non_members[..20])
        .cloned()
        .collect();
    let r = c
        .check(&batch)
        .await
        .expect("check succeeds with one charge");
    assert_eq!(r.iter().filter(|r| r.found).count(), 20);
    custom.stop().await;
}
