//! Zero-leakage lookups by PIR (#15, docs/PROTOCOL.md §10): the real
//! binaries over loopback (build-index --pir, serve --pir, check --pir), the
//! SDK against lying PIR servers (another row, a tampered row, garbage),
//! malformed queries, and the PIR quota.

use std::process::Command;
use std::sync::{Arc, OnceLock};

use breachcheck_client::{Client, ClientError};
use breachcheck_proto::pb::breach_check_client::BreachCheckClient;
use breachcheck_proto::pb::breach_check_server::BreachCheck;
use breachcheck_proto::pb::{self, GetPirSetupRequest, PirQueryRequest};
use breachcheck_proto::{MERKLE_HASH_LEN, PirShape};
use breachcheck_server::{AppState, Config, IpirSp, Quota, Served, Service};
use tonic::{Code, Request, Response, Status};

use crate::support::*;

/// A fixture of 2^11 buckets (forced: a few numbers a bucket), served
/// with PIR.
fn pir_fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| make_fixture("pir", 6000, "91", Some(11)))
}

fn served(f: &Fixture) -> Served {
    Served::load(&f.index, &f.key)
        .expect("load")
        .with_pir()
        .expect("PIR preprocessing")
}

/// The shared PIR state (preprocessed once for the module's tests).
fn pir_served_state(config: Config) -> Arc<AppState> {
    Arc::new(AppState::new(served(pir_fixture()), config).expect("state"))
}

async fn pir_client(url: &str) -> Client {
    Client::builder(url.to_owned())
        .default_region("CN")
        .pir(true)
        .connect()
        .await
        .expect("connect")
}

fn mixed(f: &Fixture, n: usize) -> Vec<String> {
    let mut batch: Vec<String> = f.members[..n].to_vec();
    batch.extend(f.non_members[..n].iter().cloned());
    batch
}

/// build-index --pir refuses a corpus too small for 2^11 buckets of a few
/// hundred; with --bucket-bits 11 --force-bucket-bits it builds, serve
/// --pir serves it, and check --pir finds the hidden leaked numbers and not
/// the clean ones, saying the server learned nothing.
#[test]
fn pir_check_through_the_real_binaries() {
    let dir = TempDir::new("pir-binaries");
    let key = dir.join("oprf.key");
    let server_bin = binary("breachcheck-server");
    let ok = |cmd: &mut Command| {
        let out = cmd.output().expect("spawn");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(Command::new(&server_bin)
        .args(["keygen", "--out"])
        .arg(&key));
    let dump = dir.join("dump.csv");
    ok(Command::new(&server_bin)
        .args(["gen-corpus", "--count", "5000", "--seed", "9", "--out"])
        .arg(&dump)
        .arg("--members")
        .arg(dir.join("members.txt"))
        .arg("--non-members")
        .arg(dir.join("non.txt")));
    let index = dir.join("leak.idx");
    let build = |extra: &[&str]| {
        Command::new(&server_bin)
            .args(["build-index", "--pir", "--breach", "weibo-2020", "--key"])
            .arg(&key)
            .arg("--out")
            .arg(&index)
            .args(extra)
            .arg(&dump)
            .output()
            .expect("spawn")
    };
    // An operator mistake: an index built without --pir (2^k buckets with
    // k < 11) served with --pir. The server refuses it at start, saying
    // why, within seconds, rather than serving without PIR.
    let plain = dir.join("plain.idx");
    ok(Command::new(&server_bin)
        .args(["build-index", "--breach", "weibo-2020", "--key"])
        .arg(&key)
        .arg("--out")
        .arg(&plain)
        .arg(&dump));
    let started = std::time::Instant::now();
    let refused_serve = Command::new(&server_bin)
        .args(["serve", "--pir", "--listen", "127.0.0.1:0", "--index"])
        .arg(&plain)
        .arg("--key")
        .arg(&key)
        .output()
        .expect("serve");
    assert_eq!(refused_serve.status.code(), Some(2), "{refused_serve:?}");
    let err = String::from_utf8_lossy(&refused_serve.stderr);
    assert!(err.contains("PIR needs at least 2^11"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    let refused = build(&[]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("too few for a PIR index"), "{err}");
    assert!(!index.exists(), "a refused build left a file");
    let built = build(&["--bucket-bits", "11", "--force-bucket-bits"]);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(
        String::from_utf8_lossy(&built.stdout).contains("PIR rows           2048 of 1 instance(s)")
    );

    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        "allow_anonymous = true\n[anonymous]\nelements_per_second = 1e9\nburst = 100000000\n\
         elements_per_day = 100000000\nbucket_bytes_per_day = 100000000000\n\
         pir_answers_per_day = 1000\nrequests_per_second = 1e9\nrequest_burst = 100000000\n",
    )
    .expect("config");
    let mut child = Command::new(&server_bin)
        .args(["serve", "--pir", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--index")
        .arg(&index)
        .arg("--key")
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let url = format!("http://{}", listening_addr(&mut child));
    let members = std::fs::read_to_string(dir.join("members.txt")).expect("members");
    let non = std::fs::read_to_string(dir.join("non.txt")).expect("non");
    let mut query: Vec<&str> = members.lines().take(3).collect();
    query.extend(non.lines().take(3));
    let out = Command::new(binary("breachcheck"))
        .args(["check", "--pir", "--format", "jsonl", "--server", &url])
        .args(&query)
        .env_remove("BREACHCHECK_API_KEY")
        .output()
        .expect("check");
    let _ = child.kill();
    let server_out = child.wait_with_output().expect("server output");
    assert_eq!(
        out.status.code(),
        Some(1),
        "found numbers exit 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect();
    assert_eq!(rows.len(), 6);
    assert!(rows[..3].iter().all(|r| r["found"] == true), "{rows:?}");
    assert!(rows[3..].iter().all(|r| r["found"] == false), "{rows:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("fetched by PIR; the server learned nothing about which numbers you checked"),
        "{stderr}"
    );
    // The server's log names the PIR database, never a row or a number.
    let log = String::from_utf8_lossy(&server_out.stderr);
    assert!(log.contains("PIR database preprocessed"), "{log}");
    for n in query {
        assert!(
            !log.contains(n.trim_start_matches('+')),
            "a number in the log"
        );
    }
    assert!(!log.contains("row="), "{log}");
}

/// The SDK in PIR mode against an in-process server: members found,
/// non-members not, the PIR answers counted in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_pir_mode_finds_members_and_not_the_others() {
    let f = pir_fixture();
    let state = pir_served_state(open_config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = serve_state(listener, state.clone()).await;
    let client = pir_client(&server.url()).await;
    let results = client.check(mixed(f, 4)).await.expect("check");
    assert!(results[..4].iter().all(|r| r.found));
    assert!(results[4..].iter().all(|r| !r.found));
    let queries = client.pir_queries().expect("PIR mode");
    assert!((1..=8).contains(&queries), "{queries}");
    assert!(client.prefix_bits_sent().is_none(), "a prefix was sent");
    let metrics = state.metrics.render();
    assert!(
        metrics.contains(&format!("breachcheck_pir_answers_total {queries}")),
        "{metrics}"
    );
    server.stop().await;
}

/// How a PIR liar lies.
#[derive(Clone, Copy, Debug)]
enum PirLie {
    /// Answers every query from the row of the next bucket.
    OtherRow,
    /// Answers from a database where every payload has a byte flipped.
    TamperedRow,
    /// Answers with random bytes of the right length.
    Garbage,
}

/// Honest but for PIR, which it answers from `liar`'s database.
struct PirLiar {
    honest: Service,
    liar: Service,
    lie: PirLie,
}

#[tonic::async_trait]
impl Twist for PirLiar {
    fn honest(&self) -> &Service {
        &self.honest
    }

    async fn get_pir_setup(
        &self,
        r: Request<GetPirSetupRequest>,
    ) -> Result<Response<pb::PirSetup>, Status> {
        self.liar.get_pir_setup(r).await
    }

    async fn pir_query(
        &self,
        r: Request<PirQueryRequest>,
    ) -> Result<Response<pb::PirAnswer>, Status> {
        let mut answer = self.liar.pir_query(r).await?;
        if let PirLie::Garbage = self.lie {
            for b in answer.get_mut().answer.iter_mut() {
                *b = rand::random();
            }
        }
        Ok(answer)
    }
}

/// A service over the PIR fixture whose PIR database is built by `row`.
fn lying_service(row: impl Fn(&Served, PirShape, u32) -> Option<Vec<u8>>) -> Service {
    let f = pir_fixture();
    let mut s = Served::load(&f.index, &f.key).expect("load");
    let h = s.index.header();
    let shape = PirShape::new(h.bucket_bits, h.payload_len).expect("shape");
    let id = *s.index.index_id();
    let engine = IpirSp::new(shape, &id, |b| row(&s, shape, b)).expect("engine");
    s.pir = Some(Arc::new(engine));
    Service::new(Arc::new(AppState::new(s, open_config()).expect("state")))
}

fn honest_row(s: &Served, shape: PirShape, b: u32) -> Option<Vec<u8>> {
    shape
        .row(&s.index.bucket_bytes(b)?, &s.index.bucket_proof(b)?)
        .ok()
}

/// A server answering PIR from another row, a tampered row, or with
/// garbage is an error on the client, never "not found": in the SDK, and
/// through the real CLI (`check --pir`), which exits 2 in bounded time and
/// memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_pir_server_is_an_error_never_not_found() {
    let f = pir_fixture();
    let honest = Service::new(pir_served_state(open_config()));
    let mut peaks = Vec::new();
    for lie in [PirLie::OtherRow, PirLie::TamperedRow, PirLie::Garbage] {
        let liar = match lie {
            PirLie::OtherRow => {
                lying_service(|s, shape, b| honest_row(s, shape, (b + 1) % shape.rows() as u32))
            }
            PirLie::TamperedRow => lying_service(|s, shape, b| {
                let mut row = honest_row(s, shape, b)?;
                row[shape.payload_len as usize / 2] ^= 1;
                Some(row)
            }),
            PirLie::Garbage => lying_service(honest_row),
        };
        let server = CustomServer::start(PirLiar {
            honest: honest.clone(),
            liar,
            lie,
        })
        .await;
        let client = pir_client(&server.url()).await;
        // A member and a non-member: neither may come back "not found".
        let r = client
            .check([f.members[0].clone(), f.non_members[0].clone()])
            .await;
        match r {
            Err(ClientError::BadBucket { .. }) | Err(ClientError::Pir(_)) => {}
            other => panic!("{lie:?}: {other:?}"),
        }
        let numbers = [f.members[0].clone(), f.non_members[0].clone()];
        let out = cli_fails_bounded(server.url(), &["--pir"], &numbers, 256).await;
        peaks.push((lie, out.peak_kib, out.wall));
        server.stop().await;
    }
    eprintln!("CLI check --pir against PIR liars, peak RSS KiB and wall time: {peaks:?}");
}

/// Malformed PIR queries are INVALID_ARGUMENT before any work; a server
/// without PIR says so; the daily PIR cap is RESOURCE_EXHAUSTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pir_queries_and_the_pir_quota() {
    let mut config = open_config();
    config.anonymous = Quota {
        pir_answers_per_day: 2,
        ..config.anonymous
    };
    let state = pir_served_state(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = serve_state(listener, state.clone()).await;
    let mut grpc = BreachCheckClient::connect(server.url())
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let setup = grpc
        .get_pir_setup(GetPirSetupRequest { index_id: vec![] })
        .await
        .expect("setup")
        .into_inner();
    assert_eq!(setup.scheme, "ipir-sp/simplepir-p14-v1");
    assert_eq!(setup.rows, 2048);
    let keys = setup.keys_len as usize;
    let query = setup.query_len as usize;
    let ask = |keys: usize, query: usize| PirQueryRequest {
        index_id: setup.index_id.clone(),
        keys: vec![0; keys],
        query: vec![0; query],
    };
    for (what, req) in [
        ("empty", ask(0, 0)),
        ("short keys", ask(keys - 1, query)),
        ("long query", ask(keys, query + 1)),
        ("no query", ask(keys, 0)),
    ] {
        let e = grpc.pir_query(req).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
    }
    let mut stale = ask(keys, query);
    stale.index_id = vec![7; 32];
    let e = grpc.pir_query(stale).await.expect_err("unknown index");
    assert_eq!(e.code(), Code::NotFound);
    // Well-sized zero bytes are a query like any other (it selects nothing
    // useful): answered, and charged.
    for _ in 0..2 {
        let a = grpc.pir_query(ask(keys, query)).await.expect("answered");
        assert_eq!(a.into_inner().answer.len(), setup.answer_len as usize);
    }
    let e = grpc.pir_query(ask(keys, query)).await.expect_err("cap");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("daily PIR answer cap"), "{e:?}");
    assert!(
        e.metadata().get("retry-after").is_some(),
        "no retry-after on the PIR cap"
    );
    server.stop().await;

    // A server not started with PIR.
    let plain = start_fixture().await;
    let mut grpc = BreachCheckClient::connect(plain.url())
        .await
        .expect("connect");
    let e = grpc
        .get_pir_setup(GetPirSetupRequest { index_id: vec![] })
        .await
        .expect_err("no PIR");
    assert_eq!(e.code(), Code::Unimplemented);
    let client = Client::builder(plain.url())
        .default_region("CN")
        .pir(true)
        .connect()
        .await
        .expect("connect");
    let e = client
        .check([fixture().members[0].clone()])
        .await
        .expect_err("PIR against a server without it");
    assert!(e.to_string().contains("--pir"), "{e}");
    plain.stop().await;
}

/// A Merkle proof is 32 bytes a level.
#[test]
fn a_pir_row_holds_the_payload_and_the_proof() {
    let f = pir_fixture();
    let s = Served::load(&f.index, &f.key).expect("load");
    let h = s.index.header();
    let shape = PirShape::new(h.bucket_bits, h.payload_len).expect("shape");
    let row = honest_row(&s, shape, 5).expect("row");
    let (payload, proof) = shape.split(&row).expect("split");
    assert_eq!(proof.len(), MERKLE_HASH_LEN * 11);
    assert!(breachcheck_proto::verify_bucket(
        5,
        payload,
        proof,
        11,
        &h.bucket_root
    ));
}

/// Preprocessing reports each phase, and the sizes a build-time sidecar
/// would have (docs/PROTOCOL.md §10, the decision against one): the hint
/// is one 2,048 × 2,048 block of 64-bit words per instance, the packing
/// tables derived from it are larger still.
#[test]
fn preprocessing_is_timed_by_phase_and_sized() {
    let f = pir_fixture();
    let s = Served::load(&f.index, &f.key).expect("load");
    let h = s.index.header();
    let shape = PirShape::new(h.bucket_bits, h.payload_len).expect("shape");
    let engine =
        IpirSp::new(shape, s.index.index_id(), |b| honest_row(&s, shape, b)).expect("engine");
    let t = engine.preprocessing;
    assert!(!t.hint.is_zero() && !t.packing_tables.is_zero(), "{t:?}");
    assert_eq!(t.total(), t.database + t.hint + t.packing_tables);
    assert_eq!(engine.hint_bytes(), shape.instances * 2048 * 2048 * 8);
    assert!(
        engine.packing_tables_bytes() > engine.hint_bytes(),
        "{} tables bytes",
        engine.packing_tables_bytes()
    );
}
