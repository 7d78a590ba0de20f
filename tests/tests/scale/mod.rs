//! Scale-out (#12): quotas shared by replicas in a real Redis (the suite
//! starts its own `redis-server` on a free port; `.ci/run` installs the
//! Debian package when it is missing), client-side failover over several
//! replicas, and bucket-only replicas beside evaluators.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use breachcheck_client::{Client, ClientError};
use breachcheck_proto::pb;
use breachcheck_proto::pb::breach_check_server::BreachCheck;
use breachcheck_server::{
    Call, Caller, Config, Quota, QuotaError, QuotaStore, QuotaStoreConfig, RedisQuotas,
    RedisSettings,
};
use tonic::Code;

use crate::support::*;

// --- a real Redis -------------------------------------------------------------

/// A `redis-server` of this test on a free loopback port; killed on drop.
pub(crate) struct Redis {
    child: Child,
    pub(crate) port: u16,
    _dir: TempDir,
}

impl Redis {
    /// Starts one on a free port (or on `port`), persisting nothing.
    pub(crate) fn start(port: Option<u16>) -> Redis {
        let port = port.unwrap_or_else(free_port);
        let dir = TempDir::new("redis");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the scale-out tests need it; \
                     `.ci/run` installs it (apt-get install redis-server)"
                )
            });
        let r = Redis {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.cmd(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// One command over RESP; the first line of the reply.
    pub(crate) fn cmd(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn settings(url: String, prefix: &str) -> RedisSettings {
    RedisSettings {
        url,
        key_prefix: prefix.into(),
        timeout: Duration::from_millis(500),
    }
}

fn caller(name: &str, q: Quota) -> Caller {
    Caller {
        name: name.into(),
        subject: None,
        quota: q.into(),
    }
}

fn exhausted(r: Result<(), QuotaError>) -> (&'static str, Duration) {
    match r {
        Err(QuotaError::Exhausted(e)) => (e.limit, e.retry_after),
        other => panic!("expected a quota refusal, got {other:?}"),
    }
}

// --- the store against a real Redis ---------------------------------------------

/// The Lua script keeps the in-memory store's rules, on the Redis clock:
/// burst and refill, the daily cap, a batch above the burst refused without
/// charging, the byte cap, the request rate; every key gets a TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_keeps_the_quota_rules() {
    let redis = Redis::start(None);
    let store = RedisQuotas::new(settings(redis.url(), "t1:")).expect("store");
    let q = Quota {
        elements_per_second: 100.0,
        burst: 50,
        elements_per_day: 120,
        bucket_bytes_per_day: 1000,
        pir_answers_per_day: 1000,
        requests_per_second: 10.0,
        request_burst: 5,
    };
    let c = caller("alice", q);
    // A batch above the burst can never fit: refused, nothing charged.
    let (limit, _) = exhausted(store.charge_elements(&c, 51).await);
    assert_eq!(limit, "evaluation rate (burst)");
    store.charge_elements(&c, 50).await.expect("a full burst");
    let (limit, retry) = exhausted(store.charge_elements(&c, 10).await);
    assert_eq!(limit, "evaluation rate (burst)");
    // 10 elements at 100/s: about 100 ms, never 0 and never a day.
    assert!(
        retry >= Duration::from_millis(50) && retry <= Duration::from_millis(150),
        "{retry:?}"
    );
    tokio::time::sleep(retry).await;
    store.charge_elements(&c, 10).await.expect("refilled");
    // The daily cap: 60 spent, 60 left, whatever the burst allows.
    tokio::time::sleep(Duration::from_millis(600)).await;
    store.charge_elements(&c, 50).await.expect("second burst");
    let (limit, retry) = exhausted(store.charge_elements(&c, 11).await);
    assert_eq!(limit, "daily evaluation cap");
    assert!(retry > Duration::ZERO && retry <= Duration::from_secs(86_400));
    tokio::time::sleep(Duration::from_millis(200)).await;
    store
        .charge_elements(&c, 10)
        .await
        .expect("exactly the cap");
    // Evaluate is refused up front once the day is spent (a request still
    // charged); other calls still pass.
    let (limit, _) = exhausted(store.charge_request(&c, Call::Evaluate).await);
    assert_eq!(limit, "daily evaluation cap");
    // Bytes.
    store.charge_bytes(&c, 1000).await.expect("byte cap");
    let (limit, _) = exhausted(store.charge_bytes(&c, 1).await);
    assert_eq!(limit, "daily bucket download cap");
    // Requests: 5 in the burst, the Evaluate above was one.
    for _ in 0..4 {
        store
            .charge_request(&c, Call::Buckets)
            .await
            .expect("burst");
    }
    let (limit, retry) = exhausted(store.charge_request(&c, Call::Buckets).await);
    assert_eq!(limit, "request rate (burst)");
    assert!(retry <= Duration::from_millis(100), "{retry:?}");
    // The state is one hash-tagged key with a TTL: idle keys vanish.
    assert_eq!(redis.cmd(&["EXISTS", "t1:{alice}"]).as_deref(), Some(":1"));
    let ttl: i64 = redis.cmd(&["PTTL", "t1:{alice}"]).expect("pttl")[1..]
        .parse()
        .expect("integer");
    assert!(ttl > 0 && ttl <= 86_401_000, "TTL {ttl}");
}

/// Two stores (two replicas) on one Redis share one quota: the second sees
/// what the first spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_quota() {
    let redis = Redis::start(None);
    let a = RedisQuotas::new(settings(redis.url(), "t2:")).expect("a");
    let b = RedisQuotas::new(settings(redis.url(), "t2:")).expect("b");
    let q = Quota {
        elements_per_second: 1e6,
        burst: 1000,
        elements_per_day: 1500,
        ..Quota::default()
    };
    let c = caller("bob", q);
    a.charge_elements(&c, 1000).await.expect("a");
    let (limit, _) = exhausted(b.charge_elements(&c, 501).await);
    assert_eq!(limit, "daily evaluation cap");
    b.charge_elements(&c, 500).await.expect("b");
    exhausted(a.charge_elements(&c, 1).await);
    // Another key, another quota.
    a.charge_elements(&caller("carol", q), 1000)
        .await
        .expect("carol");
}

/// Redis down: every charge is refused UNAVAILABLE within the timeout (fail
/// closed), the server counts it and says when to retry; when Redis comes
/// back on the same port, calls pass again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_fails_closed_then_recovers() {
    let port = free_port();
    let f = fixture();
    let config = Config {
        quota_store: QuotaStoreConfig::Redis(settings(
            format!("redis://127.0.0.1:{port}/0"),
            "t3:",
        )),
        ..open_config()
    };
    let server = start(&f.index, &f.key, config).await;
    let url = server.url();
    let started = Instant::now();
    let e = Client::builder(url.clone())
        .default_region("CN")
        .retries(0)
        .connect()
        .await
        .expect("connect")
        .check(&f.members[..1])
        .await
        .expect_err("no quota store, no evaluation");
    assert!(
        matches!(e, ClientError::Unavailable { .. }),
        "expected UNAVAILABLE, got {e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(server.state.metrics.quota_store_errors() >= 1);
    let text = server.state.metrics.render();
    assert!(
        text.contains("breachcheck_quota_store_errors_total"),
        "{text}"
    );
    // The raw status: UNAVAILABLE with retry-after.
    let mut raw =
        breachcheck_proto::pb::breach_check_client::BreachCheckClient::connect(url.clone())
            .await
            .expect("raw");
    let s = raw
        .evaluate(breachcheck_proto::pb::EvaluateRequest {
            index_id: vec![],
            blinded_elements: vec![vec![0; 32]],
        })
        .await
        .expect_err("refused");
    assert_eq!(s.code(), Code::Unavailable);
    assert!(s.metadata().get("retry-after").is_some());
    // Redis comes up: the same server recovers by itself.
    let _redis = Redis::start(Some(port));
    let client = Client::builder(url)
        .default_region("CN")
        .connect()
        .await
        .expect("connect");
    let r = client.check(&f.members[..1]).await.expect("recovered");
    assert!(r[0].found);
    server.stop().await;
}

// --- replicas as real processes ---------------------------------------------------

/// A `serve` subprocess with its own config; killed on drop.
pub(crate) struct Replica {
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) metrics: SocketAddr,
}

impl Replica {
    pub(crate) fn start(
        config: &Path,
        index: &Path,
        key: Option<&Path>,
        extra: &[&str],
    ) -> Replica {
        let mut cmd = Command::new(binary("breachcheck-server"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--index")
            .arg(index);
        match key {
            Some(k) => cmd.arg("--key").arg(k),
            None => cmd.arg("--buckets-only"),
        };
        let mut child = cmd
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("BREACHCHECK_QUOTA_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("metrics on /metrics")
                    && let Some(a) = line.split("addr=").nth(1)
                    && let Ok(a) = a.trim().parse()
                {
                    let _ = tx.send(a);
                }
            }
        });
        let addr = listening_addr(&mut child);
        let metrics = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("metrics address in the log");
        Replica {
            child,
            addr,
            metrics,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The text of `/metrics`.
    pub(crate) fn scrape(&self) -> String {
        let mut s = TcpStream::connect(self.metrics).expect("metrics");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// A counter or gauge of `/metrics` (0 when absent).
    pub(crate) fn metric(&self, name: &str) -> u64 {
        self.scrape()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A config for replicas sharing `redis` (or in memory), with one API key.
fn replica_config(dir: &TempDir, redis: Option<&Redis>, quota: &str) -> (PathBuf, String) {
    let (token, entry) = api_key("analyst", None);
    let store = match redis {
        Some(r) => format!("[quota]\nbackend = \"redis\"\nurl = \"{}\"\n", r.url()),
        None => String::new(),
    };
    let text = format!(
        "max_batch = 500\n{store}\n[[api_keys]]\nname = \"{}\"\ntoken_blake3 = \"{}\"\n[api_keys.quota]\n{quota}",
        entry.name, entry.token_blake3
    );
    let path = dir.join("server.toml");
    std::fs::write(&path, text).expect("config");
    (path, token)
}

/// `n` evaluators of the shared fixture under `config`, and their URLs.
fn evaluators(n: usize, config: &Path) -> (Vec<Replica>, Vec<String>) {
    let f = fixture();
    let replicas: Vec<Replica> = (0..n)
        .map(|_| Replica::start(config, &f.index, Some(&f.key), &[]))
        .collect();
    let urls = replicas.iter().map(Replica::url).collect();
    (replicas, urls)
}

/// A file of `first` then `then`, one number a line.
fn numbers_file(dir: &TempDir, first: &[String], then: &[String]) -> PathBuf {
    let path = dir.join("q.txt");
    std::fs::write(&path, [first, then].concat().join("\n")).expect("write");
    path
}

/// A CLI check that answered all `checked` numbers (JSON lines) and found
/// exactly `found`: exit 1, nothing short.
fn assert_complete(out: &std::process::Output, checked: usize, found: usize) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), checked, "{stderr}");
    let hits = stdout
        .lines()
        .filter(|l| l.contains("\"found\":true"))
        .count();
    assert_eq!(hits, found, "{stderr}");
}

fn check_cli(urls: &[String], token: &str, file: &Path) -> Command {
    let mut c = Command::new(binary("breachcheck"));
    c.args(["check", "--server", &urls.join(",")])
        .args([
            "--api-key",
            token,
            "--format",
            "jsonl",
            "--concurrency",
            "2",
        ])
        .args(["--max-wait", "1", "--file"])
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Three `serve` processes share one Redis; a client spreads its check over
/// all three: the total evaluated never exceeds the key's daily quota. After
/// `kill -9` and a restart of every replica, the spent quota is still spent.
#[test]
fn three_replicas_share_a_quota_that_survives_kill_9() {
    let f = fixture();
    let redis = Redis::start(None);
    let dir = TempDir::new("three");
    let (config, token) = replica_config(
        &dir,
        Some(&redis),
        "elements_per_second = 1e6\nburst = 500\nelements_per_day = 2500\n\
         bucket_bytes_per_day = 100000000000\nrequests_per_second = 1e6\nrequest_burst = 1000000\n",
    );
    let (replicas, urls) = evaluators(3, &config);
    let numbers = numbers_file(&dir, &f.members[..2000], &f.non_members[..2000]);
    let out = check_cli(&urls, &token, &numbers).output().expect("client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("daily evaluation cap"), "{stderr}");
    let per_replica: Vec<u64> = replicas
        .iter()
        .map(|r| r.metric("breachcheck_elements_evaluated_total"))
        .collect();
    let total: u64 = per_replica.iter().sum();
    assert!(
        total <= 2500,
        "three replicas evaluated {per_replica:?}: above the one quota"
    );
    assert!(total >= 2000, "the quota was not used: {per_replica:?}");
    assert!(
        per_replica.iter().filter(|&&n| n > 0).count() >= 2,
        "the client did not spread its batches: {per_replica:?}"
    );
    // kill -9 every replica; restart them all: the day is still spent.
    drop(replicas);
    let (replicas, urls) = evaluators(3, &config);
    std::fs::write(&numbers, &f.members[0]).expect("write");
    let out = check_cli(&urls, &token, &numbers).output().expect("client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("daily evaluation cap"), "{stderr}");
    let after: u64 = replicas
        .iter()
        .map(|r| r.metric("breachcheck_elements_evaluated_total"))
        .sum();
    assert_eq!(after, 0, "a restart gave the key a new quota");
}

const GENEROUS: &str = "elements_per_second = 1e9\nburst = 100000000\nelements_per_day = 100000000\n\
     bucket_bytes_per_day = 100000000000\nrequests_per_second = 1e9\nrequest_burst = 100000000\n";

/// A replica killed mid-check costs a retry, not the check: the CLI,
/// given three replicas, finishes with every member found.
#[test]
fn a_replica_killed_mid_check_costs_a_retry() {
    let f = fixture();
    let redis = Redis::start(None);
    let dir = TempDir::new("failover");
    let (config, token) = replica_config(&dir, Some(&redis), GENEROUS);
    let (mut replicas, urls) = evaluators(3, &config);
    let numbers = numbers_file(&dir, &f.non_members[..6000], &f.members[..3000]);
    let mut cmd = check_cli(&urls, &token, &numbers);
    let client = cmd.spawn().expect("client");
    // Kill one as soon as it has evaluated something.
    let deadline = Instant::now() + Duration::from_secs(30);
    while replicas[1].metric("breachcheck_elements_evaluated_total") == 0 {
        assert!(Instant::now() < deadline, "replica 1 never got a batch");
        std::thread::sleep(Duration::from_millis(20));
    }
    replicas[1].kill_9();
    let out = client.wait_with_output().expect("wait");
    assert_complete(&out, 9000, 3000);
}

/// Two evaluators and a bucket-only replica (no key) given to one client:
/// the bucket-only one serves buckets and is sent no more Evaluate calls
/// once it has said UNIMPLEMENTED; the answer is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_only_replica_serves_buckets_beside_evaluators() {
    let f = fixture();
    let dir = TempDir::new("bucket-replica");
    let (config, token) = replica_config(&dir, None, GENEROUS);
    let evaluators: Vec<Replica> = (0..2)
        .map(|_| Replica::start(&config, &f.index, Some(&f.key), &[]))
        .collect();
    let buckets = Replica::start(&config, &f.index, None, &[]);
    let mut batch: Vec<String> = f.members.iter().take(300).cloned().collect();
    batch.extend(f.non_members.iter().take(300).cloned());
    // Fresh clients (no bucket cache): calls go round the three in turn.
    for _ in 0..3 {
        let client = Client::builder(evaluators[0].url())
            .replica(buckets.url())
            .replica(evaluators[1].url())
            .api_key(token.clone())
            .default_region("CN")
            .connect()
            .await
            .expect("connect");
        for _ in 0..2 {
            let r = client.check(&batch).await.expect("check");
            assert!(r[..300].iter().all(|r| r.found));
            assert!(r[300..].iter().all(|r| !r.found));
        }
    }
    assert_eq!(buckets.metric("breachcheck_elements_evaluated_total"), 0);
    assert!(buckets.metric("breachcheck_bucket_bytes_sent_total") > 0);
    let evaluated: u64 = evaluators
        .iter()
        .map(|r| r.metric("breachcheck_elements_evaluated_total"))
        .sum();
    assert_eq!(evaluated, 3 * 2 * 600);
    // A client given only the bucket replica gets its clear refusal.
    let only = Client::builder(buckets.url())
        .api_key(token)
        .default_region("CN")
        .connect()
        .await
        .expect("connect");
    let e = only.check(&batch[..1]).await.expect_err("no evaluator");
    assert!(e.to_string().contains("buckets only"), "{e}");
}

/// Answers honestly, but breaks its first GetBuckets stream after one chunk
/// (a replica going away mid-answer).
struct BreaksFirstStream {
    inner: breachcheck_server::Service,
    asked: std::sync::Arc<std::sync::Mutex<Vec<Vec<u32>>>>,
}

#[tonic::async_trait]
impl Twist for BreaksFirstStream {
    fn honest(&self) -> &breachcheck_server::Service {
        &self.inner
    }

    async fn get_buckets(
        &self,
        r: tonic::Request<pb::GetBucketsRequest>,
    ) -> Result<tonic::Response<ChunkStream>, tonic::Status> {
        use tokio_stream::StreamExt;
        let first = {
            let mut asked = self.asked.lock().expect("lock");
            asked.push(r.get_ref().prefixes.clone());
            asked.len() == 1
        };
        let honest = self.inner.get_buckets(r).await?.into_inner();
        let stream: ChunkStream = if first {
            let gone = tonic::Status::unavailable("replica going away");
            Box::pin(honest.take(1).chain(tokio_stream::once(Err(gone))))
        } else {
            Box::pin(honest)
        };
        Ok(tonic::Response::new(stream))
    }
}

/// A GetBuckets stream broken after one chunk costs one retry, which asks
/// only for what was not delivered; the answer is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_broken_mid_answer_is_resumed() {
    let f = fixture();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = CustomServer::start(BreaksFirstStream {
        inner: fixture_service(),
        asked: asked.clone(),
    })
    .await;
    let client = Client::builder(server.url())
        .default_region("CN")
        .prefix_bits(4)
        .connect()
        .await
        .expect("connect");
    // A few numbers: a few prefixes, not the whole index.
    let mut batch: Vec<String> = f.members.iter().take(3).cloned().collect();
    batch.extend(f.non_members.iter().take(3).cloned());
    let r = client.check(&batch).await.expect("check");
    assert!(r[..3].iter().all(|r| r.found));
    assert!(r[3..].iter().all(|r| !r.found));
    let asked = asked.lock().expect("lock").clone();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(asked[0].len() >= 2, "{asked:?}");
    assert_eq!(asked[1].len() + 1, asked[0].len(), "{asked:?}");
    assert!(asked[1].iter().all(|p| asked[0].contains(p)));
    server.stop().await;
}

/// A replica that goes silent (SIGSTOP: the connection stays open and
/// nothing comes back) costs the calls sent to it their timeout and one
/// retry elsewhere, not the check.
#[test]
fn a_silent_replica_is_failed_over() {
    let f = fixture();
    let dir = TempDir::new("silent");
    let (config, token) = replica_config(&dir, None, GENEROUS);
    let (replicas, urls) = evaluators(3, &config);
    let numbers = numbers_file(&dir, &f.non_members[..4000], &f.members[..2000]);
    let pid = replicas[1].child.id().to_string();
    let stop = Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill");
    assert!(stop.success());
    let started = Instant::now();
    let out = check_cli(&urls, &token, &numbers)
        .args(["--timeout", "3"])
        .output()
        .expect("client");
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    assert_complete(&out, 6000, 2000);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
