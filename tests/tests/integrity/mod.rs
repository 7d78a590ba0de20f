//! The bytes served are the bytes the index id names (#10 row 3): a file
//! copied over or truncated under a running `breachcheck-server` changes
//! nothing it serves and cannot crash it, and a server that serves another
//! index's buckets (with valid proofs for that index) under this index's id
//! is caught by the client as `BadBucket`, never "not found".

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use breachcheck_client::ClientError;
use breachcheck_proto as proto;
use breachcheck_proto::pb::GetBucketsRequest;
use breachcheck_proto::pb::breach_check_server::BreachCheck;
use breachcheck_server::{AppState, Index, Served, Service, build_index};
use tonic::{Request, Response, Status};

use crate::support::*;

/// A `breachcheck-server serve` subprocess whose log lines are kept; killed
/// on drop.
struct LoggedServer {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl LoggedServer {
    fn start(index: &Path, key: &Path) -> Self {
        let config = index.with_extension("toml");
        std::fs::write(
            &config,
            "allow_anonymous = true\n[anonymous]\nelements_per_second = 1e9\nburst = 100000000\n\
             elements_per_day = 100000000\nbucket_bytes_per_day = 100000000000\n",
        )
        .expect("config");
        let mut child = Command::new(binary("breachcheck-server"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--index")
            .arg(index)
            .arg("--key")
            .arg(key)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("log").push(line);
            }
        });
        let addr = listening_addr(&mut child);
        LoggedServer {
            child,
            url: format!("http://{addr}"),
            log,
        }
    }

    /// Log lines containing `text`.
    fn count(&self, text: &str) -> usize {
        let log = self.log.lock().expect("log");
        log.iter().filter(|l| l.contains(text)).count()
    }

    /// Waits until `n` log lines contain `text` (the deadline only keeps a
    /// broken server from hanging the test).
    fn wait_for(&self, text: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count(text) < n {
            assert!(
                Instant::now() < deadline,
                "no {n}th log line {text:?}: {:#?}",
                self.log.lock().expect("log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// The served index id (`breachcheck info`) and how many of `numbers`
    /// `breachcheck check` finds; panics unless the check succeeds.
    fn ask(&self, numbers: &[String]) -> (String, usize) {
        let info = Command::new(binary("breachcheck"))
            .args(["info", "--json", "--server", &self.url])
            .env_remove("BREACHCHECK_API_KEY")
            .output()
            .expect("info");
        assert!(info.status.success(), "{info:?}");
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
        let out = Command::new(binary("breachcheck"))
            .args(["check", "--format", "jsonl", "--server", &self.url])
            .args(numbers)
            .env_remove("BREACHCHECK_API_KEY")
            .output()
            .expect("check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{stderr}");
        let found = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("\"found\":true"))
            .count();
        let id = info["index_id"].as_str().expect("index_id").to_owned();
        (id, found)
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CHANGED: &str = "the index file changed on disk; send SIGHUP to load it";

// See: #10 (row 3)
/// `cp other.idx served.idx` (another key) without SIGHUP, then `truncate
/// -s 100000 served.idx`: the server goes on answering from the index it
/// loaded (same id, members found), warns once per change, never crashes,
/// and a SIGHUP reload of the truncated file fails with a log line and keeps
/// the old index.
#[test]
fn a_file_changed_under_the_server_changes_nothing_it_serves() {
    let a = fixture();
    let dir = TempDir::new("integrity-cp");
    let served = dir.join("served.idx");
    std::fs::copy(&a.index, &served).expect("copy");
    // B: another key, and big enough that truncating it to 100,000 bytes cuts it.
    let b = make_fixture("integrity-other", 40_000, "0ff1", None);
    let b_len = std::fs::metadata(&b.index).expect("b").len();
    assert!(b_len > 100_000, "B is only {b_len} bytes");
    let a_id = hex::encode(Index::open(&a.index).expect("a").index_id());

    let mut server = LoggedServer::start(&served, &a.key);
    let members: Vec<String> = a.members[..20].to_vec();
    assert_eq!(server.ask(&members), (a_id.clone(), 20));

    std::fs::copy(&b.index, &served).expect("cp B over the served file");
    server.wait_for(CHANGED, 1);
    // (A look in the middle of the copy may have warned once more.)
    let after_cp = server.count(CHANGED);
    assert_eq!(server.ask(&members), (a_id.clone(), 20));

    std::fs::OpenOptions::new()
        .write(true)
        .open(&served)
        .expect("open")
        .set_len(100_000)
        .expect("truncate");
    server.wait_for(CHANGED, after_cp + 1);
    assert!(server.alive(), "the server died on a truncated file");
    assert_eq!(server.ask(&members), (a_id.clone(), 20));

    server.signal("-HUP");
    server.wait_for("reload failed; still serving the previous index", 1);
    let log = server.log.lock().expect("log").join("\n");
    assert!(log.contains("truncated"), "{log}");
    drop(log);
    assert!(server.alive());
    assert_eq!(server.ask(&members), (a_id, 20));
    // One warning per change, not one per look (the watch looks every 2 s).
    let warned = server.count(CHANGED);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(server.count(CHANGED), warned);
}

/// Answers GetIndexInfo and Evaluate from index A, and GetBuckets from index
/// B (same key and layout, other contents) with B's valid proofs.
struct IndexSwapper {
    a: Service,
    b: Service,
}

#[tonic::async_trait]
impl Twist for IndexSwapper {
    /// A's answers, but for the buckets.
    fn honest(&self) -> &Service {
        &self.a
    }

    async fn get_buckets(
        &self,
        mut r: Request<GetBucketsRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        // "The current index" to B, which would refuse A's id.
        r.get_mut().index_id.clear();
        self.b.get_buckets(r).await
    }
}

fn service(index: &Path, key: &Path) -> Service {
    let served = Served::load(index, key).expect("load");
    Service::new(Arc::new(
        AppState::new(served, open_config()).expect("state"),
    ))
}

/// Index B: A's dump without the members in A's bucket `bucket`, same key
/// and bucket bits; `None` unless its layout (entries and bytes per bucket)
/// is A's, so that only the Merkle proof can tell the buckets apart.
fn without_bucket(a: &Fixture, k: u32, bucket: u32, out: &Path) -> Option<Vec<String>> {
    let gone: Vec<String> = a
        .members
        .iter()
        .filter(|m| proto::top_bits(proto::bucket_value(m.as_bytes()), k) == bucket)
        .take(8)
        .cloned()
        .collect();
    let dump = out.with_extension("txt");
    let kept: Vec<&String> = a.members.iter().filter(|m| !gone.contains(m)).collect();
    std::fs::write(
        &dump,
        kept.iter().map(|m| format!("{m}\n")).collect::<String>(),
    )
    .expect("dump");
    let key = breachcheck_server::load_key(&a.key).expect("key");
    build_index(&key, out, &options(vec![dump], Some(k))).expect("build B");
    let (ha, hb) = (
        Index::open(&a.index).expect("a").header().clone(),
        Index::open(out).expect("b").header().clone(),
    );
    (ha.payload_len == hb.payload_len && ha.bucket_entries == hb.bucket_entries).then_some(gone)
}

// See: #10 (row 3)
/// IndexInfo names A, the buckets are B's (valid proofs, but to B's root):
/// the client refuses them. Trusting them would report A's members in that
/// bucket "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_of_another_index_under_this_ones_id_are_a_bad_bucket() {
    let a = fixture();
    let k = Index::open(&a.index).expect("a").header().bucket_bits;
    let dir = TempDir::new("integrity-swap");
    let b_index: PathBuf = dir.join("b.idx");
    let gone = (0..1u32 << k)
        .find_map(|bucket| without_bucket(a, k, bucket, &b_index))
        .expect("no bucket gives B the layout of A");
    assert!(!gone.is_empty());
    // B really lacks them: an honest server over B says "not found".
    let honest_b = start(&b_index, &a.key, open_config()).await;
    let r = client(&honest_b.url()).await.check(&gone).await.expect("B");
    assert!(r.iter().all(|r| !r.found));
    honest_b.stop().await;

    let server = CustomServer::start(IndexSwapper {
        a: service(&a.index, &a.key),
        b: service(&b_index, &a.key),
    })
    .await;
    let r = client(&server.url()).await.check(&gone).await;
    server.stop().await;
    assert!(matches!(r, Err(ClientError::BadBucket { .. })), "{r:?}");
}
