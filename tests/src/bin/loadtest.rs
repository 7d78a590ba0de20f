//! The multi-process load test of issue #12 (item 6): evaluators sharing a
//! Redis quota, on loopback.
//!
//! ```sh
//! cargo build --release -p breachcheck-tests --bin loadtest -p breachcheck-server
//! target/release/loadtest [--seconds 5] [--clients 6] [--replicas 3] [--rows 100000] [--quick] [--out FILE]
//! ```
//!
//! It starts its own `redis-server` on a free port (no persistence, a
//! temporary directory) and `breachcheck-server serve` processes from the
//! same target directory as this binary (`--server PATH` names another),
//! builds a fixture index with the server library, then measures, each as
//! its own scenario:
//!
//! * **(a) vs (b)**: one server with the in-memory quota against one with
//!   the Redis quota, one Evaluate call in flight, at batch 1 and at batch
//!   1,024. The two are measured in alternating rounds of 250 ms, so both
//!   see the same background load; the p50 difference is the Redis round
//!   trips one Evaluate costs (it charges the quota twice: the request, then
//!   its elements).
//! * **(c) vs (d)**: total elements/s at batch 1,024 from `--clients`
//!   concurrent clients, each spreading its calls round-robin over
//!   `--replicas` servers sharing the Redis (c), or sending them all to one
//!   of those servers (d); alternating windows of about 2 s, with the CPU
//!   each process used.
//!
//! The machine is usually shared: the report says how many cores processes
//! outside the test kept busy meanwhile (`/proc/stat` less the test's own
//! processes), and the hypervisor's steal.
//!
//! Every call of every scenario is counted; a failed call (any error, or an
//! answer of the wrong length) fails the run. At the end, the elements the
//! Redis counted for the key are compared with the elements the clients got
//! answers for from Redis-backed servers: they must be equal.
//!
//! The report (Markdown) goes to stdout and, with `--out FILE`, to that file.
//! `--seconds S` is the time per scenario (default 5; 1 with `--quick`,
//! which also uses a 20,000-row index). Everything is bounded in time and
//! stays on 127.0.0.1; every child process is killed on the way out, panics
//! included.

// A load test aborts on any setup failure; there is no caller to hand it to.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use breachcheck_proto as proto;
use breachcheck_proto::pb::breach_check_client::BreachCheckClient;
use breachcheck_proto::pb::{EvaluateRequest, GetIndexInfoRequest};
use breachcheck_server as server;
use breachcheck_tests::soak::cpu_secs;
use rand::RngExt as _;
use tonic::transport::Channel;

/// The API key every client uses (its quota is never reached).
const KEY_NAME: &str = "loadtest";
/// Its bearer token.
const TOKEN: &str = "loadtest-token";
/// The servers' `max_batch`, and the large batch measured.
const MAX_BATCH: usize = 1024;
/// Prefix of the quota keys in the test's Redis.
const KEY_PREFIX: &str = "loadtest:";
/// One round of the alternating latency measurement.
const LATENCY_ROUND: Duration = Duration::from_millis(250);

type Client = BreachCheckClient<Channel>;

fn main() -> ExitCode {
    // Everything that owns a child process lives inside `run`, so it is
    // dropped (and the children killed) before the exit code is returned.
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loadtest: FAILED (failed calls or a quota count mismatch; see the report)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The command line.
struct Args {
    /// Time per scenario.
    seconds: f64,
    /// Concurrent clients of the throughput scenarios.
    clients: usize,
    /// Servers sharing the Redis in scenario (c).
    replicas: usize,
    /// Rows of the synthetic dump the index is built from.
    rows: u64,
    /// Where the report goes besides stdout.
    out: Option<PathBuf>,
    /// The `breachcheck-server` binary.
    server: PathBuf,
    /// The arguments as given, for the report (each after a space).
    command_line: String,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let known = [
            "--seconds",
            "--clients",
            "--replicas",
            "--rows",
            "--out",
            "--server",
        ];
        let mut i = 0;
        while i < args.len() {
            match args[i].as_str() {
                "--quick" => i += 1,
                a if known.contains(&a) && i + 1 < args.len() => i += 2,
                a => anyhow::bail!(
                    "unknown or incomplete argument {a:?}; flags: --seconds S, --clients N, \
                     --replicas R, --rows N, --out FILE, --server PATH, --quick"
                ),
            }
        }
        let quick = args.iter().any(|a| a == "--quick");
        let flag = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let num = |name: &str, default: f64| -> anyhow::Result<f64> {
            match flag(name) {
                Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{name} {v:?}: {e}")),
                None => Ok(default),
            }
        };
        let seconds = num("--seconds", if quick { 1.0 } else { 5.0 })?;
        anyhow::ensure!(
            seconds > 0.0 && seconds <= 600.0,
            "--seconds must be in (0, 600]"
        );
        let clients = num("--clients", 6.0)? as usize;
        let replicas = num("--replicas", 3.0)? as usize;
        anyhow::ensure!(
            (1..=64).contains(&clients) && (1..=16).contains(&replicas),
            "--clients must be 1..=64 and --replicas 1..=16"
        );
        let rows = num("--rows", if quick { 20_000.0 } else { 100_000.0 })? as u64;
        anyhow::ensure!(rows >= 1000, "--rows must be at least 1000");
        let server = match flag("--server") {
            Some(p) => PathBuf::from(p),
            None => sibling("breachcheck-server")?,
        };
        Ok(Args {
            seconds,
            clients,
            replicas,
            rows,
            out: flag("--out").map(PathBuf::from),
            server,
            command_line: args.iter().map(|a| format!(" {a}")).collect(),
        })
    }
}

/// A binary built next to this one (the same target directory and profile).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no directory above {}", exe.display()))?;
    let p = dir.join(name);
    anyhow::ensure!(
        p.exists(),
        "{} is not built: run `cargo build --release -p breachcheck-tests --bin loadtest \
         -p breachcheck-server` (or pass --server PATH)",
        p.display()
    );
    Ok(p)
}

// --- processes --------------------------------------------------------------------

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("breachcheck-loadtest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop, panics included.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test's own `redis-server`: loopback, a free port, nothing persisted.
struct Redis {
    child: Killed,
    port: u16,
}

impl Redis {
    fn start(dir: &Path) -> anyhow::Result<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data = dir.join("redis");
        std::fs::create_dir_all(&data)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start redis-server ({e}): apt-get install redis-server")
            })?;
        let r = Redis {
            child: Killed(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.cmd(&["PING"]).as_deref() != Some("PONG") {
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// One command over RESP on a fresh connection: a simple string or bulk
    /// reply's text (`None` for errors, nil and anything else).
    fn cmd(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(&resp(args)).ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if let Some(simple) = line.strip_prefix('+') {
            return Some(simple.to_owned());
        }
        let len: usize = line.strip_prefix('$')?.parse().ok()?;
        let mut body = vec![0; len + 2];
        r.read_exact(&mut body).ok()?;
        body.truncate(len);
        String::from_utf8(body).ok()
    }

    /// p50 and p99 of a PING round trip from this process, µs, over one
    /// kept connection: the floor under each quota charge.
    fn ping_round_trip(&self, count: usize) -> anyhow::Result<(f64, f64)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let ping = resp(&["PING"]);
        let mut reply = [0u8; 7]; // "+PONG\r\n"
        let mut v = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            s.write_all(&ping)?;
            s.read_exact(&mut reply)?;
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok((percentile(&mut v, 0.5), percentile(&mut v, 0.99)))
    }
}

/// A RESP array of bulk strings.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        let _ = write!(req, "${}\r\n{a}\r\n", a.len());
    }
    req.into_bytes()
}

/// A `breachcheck-server serve` child; its log goes to a file.
struct Server {
    child: Killed,
    addr: SocketAddr,
}

impl Server {
    fn start(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Server> {
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .env_remove("BREACHCHECK_QUOTA_URL")
            .env_remove("BREACHCHECK_QUOTA_BACKEND")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawning {}: {e}", bin.display()))?;
        let mut child = Killed(child);
        let stdout = child
            .0
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        let Some(addr) = first
            .trim()
            .strip_prefix("breachcheck-server listening on ")
            .and_then(|a| a.parse().ok())
        else {
            let _ = child.0.wait();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            anyhow::bail!("the server did not start (first line {first:?}); its log:\n{log}");
        };
        Ok(Server { child, addr })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

// --- fixture ----------------------------------------------------------------------

/// Builds an index of `rows` synthetic rows; returns (index, key) paths.
fn fixture(dir: &Path, rows: u64) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dump = dir.join("dump.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&dump)?);
    server::generate_corpus(&mut f, rows, 12, server::CorpusFormat::Csv, &[])?;
    f.flush()?;
    drop(f);
    let key = server::key_from_seed("10ad")?;
    let key_path = dir.join("oprf.key");
    server::save_key(&key_path, &key, true)?;
    let index = dir.join("loadtest.idx");
    let opts = server::BuildOptions {
        inputs: vec![server::InputSpec {
            path: dump,
            breach: 0,
        }],
        breaches: vec![server::BreachMeta {
            id: "loadtest".into(),
            name: "loadtest".into(),
            date: "2020-01".into(),
            description: "synthetic".into(),
            data_classes: vec!["phone numbers".into()],
        }],
        default_region: proto::Region::parse("CN"),
        column: None,
        bucket_bits: None,
        force_bucket_bits: false,
        pir: false,
        memory_limit: 1 << 28,
        temp_dir: None,
        progress: server::ProgressMode::Quiet,
    };
    server::build_index(&key, &index, &opts)?;
    Ok((index, key_path))
}

/// A server config: `max_batch` 1,024, one API key whose quota no scenario
/// reaches (every burst ≥ `max_batch`, as the server requires), the quota in
/// memory or in the Redis at `redis_url`.
fn config(
    dir: &Path,
    name: &str,
    index: &Path,
    key: &Path,
    redis_url: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\nindex = {:?}\nkey = {:?}\nmax_batch = {MAX_BATCH}\n",
        index.display().to_string(),
        key.display().to_string()
    );
    if let Some(url) = redis_url {
        let _ = write!(
            toml,
            "[quota]\nbackend = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{KEY_PREFIX}\"\n"
        );
    }
    let hash = hex::encode(blake3::hash(TOKEN.as_bytes()).as_bytes());
    let _ = write!(
        toml,
        "[[api_keys]]\nname = \"{KEY_NAME}\"\ntoken_blake3 = \"{hash}\"\n\
         [api_keys.quota]\nelements_per_second = 1e9\nburst = 1000000000\n\
         elements_per_day = 10000000000000\nbucket_bytes_per_day = 1000000000000000\n\
         requests_per_second = 1e6\nrequest_burst = 1000000\n"
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml)?;
    Ok(path)
}

// --- calls ------------------------------------------------------------------------

/// What a set of Evaluate calls gave.
#[derive(Default)]
struct Calls {
    /// Latency of each successful call, µs.
    latencies_us: Vec<f64>,
    /// Elements answered.
    elements: u64,
    /// Calls that failed or answered the wrong number of elements.
    failed: u64,
    /// The first few failures.
    samples: Vec<String>,
    /// Wall time the calls were measured over, seconds.
    wall: f64,
}

impl Calls {
    fn record(&mut self, r: Result<(Duration, usize), String>) {
        match r {
            Ok((d, n)) => {
                self.latencies_us.push(d.as_secs_f64() * 1e6);
                self.elements += n as u64;
            }
            Err(e) => {
                self.failed += 1;
                if self.samples.len() < 5 {
                    self.samples.push(e);
                }
            }
        }
    }

    fn merge(&mut self, other: Calls) {
        self.latencies_us.extend(other.latencies_us);
        self.elements += other.elements;
        self.failed += other.failed;
        for s in other.samples {
            if self.samples.len() < 5 {
                self.samples.push(s);
            }
        }
        self.wall += other.wall;
    }

    fn calls(&self) -> usize {
        self.latencies_us.len() + self.failed as usize
    }

    /// p50 and p99 latency, µs.
    fn p50_p99(&self) -> (f64, f64) {
        let mut v = self.latencies_us.clone();
        (percentile(&mut v, 0.5), percentile(&mut v, 0.99))
    }

    fn rate(&self) -> f64 {
        self.elements as f64 / self.wall.max(1e-9)
    }
}

/// Nearest-rank percentile (0 for no samples).
fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// One authenticated Evaluate; its latency and the elements answered.
async fn evaluate(c: &mut Client, req: &EvaluateRequest) -> Result<(Duration, usize), String> {
    let mut r = tonic::Request::new(req.clone());
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii header"),
    );
    let t = Instant::now();
    let resp = c
        .evaluate(r)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    let d = t.elapsed();
    let n = resp.into_inner().evaluated_elements.len();
    if n != req.blinded_elements.len() {
        return Err(format!(
            "{n} elements answered for {}",
            req.blinded_elements.len()
        ));
    }
    Ok((d, n))
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(BreachCheckClient::new(ch))
}

/// Scenarios (a) and (b) at one batch size.
struct Pair {
    batch: usize,
    /// (a): the server with the in-memory quota.
    memory: Calls,
    /// (b): the server with the Redis quota.
    redis: Calls,
    /// Median over rounds of (b)'s p50 minus (a)'s p50 in the same round,
    /// µs: less sensitive to drift than the difference of the pooled p50s.
    paired_us: f64,
}

/// Alternating rounds of one call in flight on `memory`, then on `redis`
/// (then `redis` then `memory`, and so on), about `per_scenario` on each:
/// both scenarios see the same background load.
async fn latency_pair(
    memory: &mut Client,
    redis: &mut Client,
    req: &EvaluateRequest,
    per_scenario: Duration,
) -> Pair {
    let (mut ca, mut cb) = (Calls::default(), Calls::default());
    let mut diffs = Vec::new();
    let rounds = (per_scenario.as_secs_f64() / LATENCY_ROUND.as_secs_f64())
        .ceil()
        .max(2.0) as usize;
    for r in 0..rounds {
        let mut p50 = [0.0; 2];
        for on_memory in [r % 2 == 0, r % 2 == 1] {
            let (c, calls) = if on_memory {
                (&mut *memory, &mut ca)
            } else {
                (&mut *redis, &mut cb)
            };
            let mut block = Calls::default();
            let start = Instant::now();
            loop {
                block.record(evaluate(c, req).await);
                if start.elapsed() >= LATENCY_ROUND {
                    break;
                }
            }
            block.wall = start.elapsed().as_secs_f64();
            p50[usize::from(!on_memory)] = block.p50_p99().0;
            calls.merge(block);
        }
        diffs.push(p50[1] - p50[0]);
    }
    Pair {
        batch: req.blinded_elements.len(),
        memory: ca,
        redis: cb,
        paired_us: percentile(&mut diffs, 0.5),
    }
}

/// One window of `fleet.len()` concurrent clients, each calling in a loop
/// until `length` has passed, spreading its calls round-robin over its
/// servers. The window's wall time runs until the last call returns, so
/// every element counted was answered within it.
async fn window(fleet: &[Vec<Client>], req: &EvaluateRequest, length: Duration) -> Calls {
    let start = Instant::now();
    let deadline = start + length;
    let mut tasks = Vec::new();
    for (i, targets) in fleet.iter().enumerate() {
        let mut targets = targets.clone();
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let mut calls = Calls::default();
            // Client i starts on server i: the first calls spread too.
            let mut next = i;
            while Instant::now() < deadline {
                let n = targets.len();
                calls.record(evaluate(&mut targets[next % n], &req).await);
                next += 1;
            }
            calls
        }));
    }
    let mut all = Calls::default();
    for t in tasks {
        all.merge(t.await.expect("client task"));
    }
    all.wall = start.elapsed().as_secs_f64();
    all
}

/// CPU seconds of each process in `pids`.
fn cpu(pids: &[u32]) -> Vec<f64> {
    pids.iter().map(|&p| cpu_secs(p).unwrap_or(0.0)).collect()
}

/// The machine's CPU ticks from `/proc/stat`: (busy, steal, total), busy
/// being everything but idle, I/O wait and steal.
fn machine_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest times are
    // already in user and nice).
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() != 8 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some((total - v[3] - v[4] - v[7], v[7], total))
}

/// What the machine did during the scenarios besides this test.
struct Background {
    /// Cores busy with processes outside this test (other tenants of a
    /// shared machine), on average.
    other_cores: f64,
    /// Share of the machine's CPU time the hypervisor gave other guests, %.
    steal_percent: f64,
}

/// Samples the machine and this test's processes (`pids`) to tell, at
/// [`Sampler::finish`], how busy the machine was with other work.
struct Sampler {
    start: Instant,
    ticks: Option<(u64, u64, u64)>,
    ours: f64,
}

impl Sampler {
    fn new(pids: &[u32]) -> Sampler {
        Sampler {
            start: Instant::now(),
            ticks: machine_ticks(),
            ours: cpu(pids).iter().sum(),
        }
    }

    fn finish(&self, pids: &[u32]) -> Option<Background> {
        let wall = self.start.elapsed().as_secs_f64();
        let ours = cpu(pids).iter().sum::<f64>() - self.ours;
        let (b0, s0, t0) = self.ticks?;
        let (b1, s1, t1) = machine_ticks()?;
        let hz = rustix::param::clock_ticks_per_second() as f64;
        Some(Background {
            other_cores: ((b1.saturating_sub(b0)) as f64 / hz - ours).max(0.0) / wall,
            steal_percent: 100.0 * s1.saturating_sub(s0) as f64
                / t1.saturating_sub(t0).max(1) as f64,
        })
    }
}

/// A throughput scenario: its calls and the CPU its processes used.
#[derive(Default)]
struct Load {
    calls: Calls,
    /// CPU seconds of the servers it sent calls to.
    server_cpu: f64,
    /// CPU seconds of the redis-server.
    redis_cpu: f64,
    /// CPU seconds of this process (the clients).
    client_cpu: f64,
}

impl Load {
    fn add(&mut self, calls: Calls, before: &[f64], after: &[f64], servers: &[usize]) {
        // Layout of the CPU vectors: servers..., redis, this process.
        let d = |i: usize| after[i] - before[i];
        let n = before.len();
        self.server_cpu += servers.iter().map(|&i| d(i)).sum::<f64>();
        self.redis_cpu += d(n - 2);
        self.client_cpu += d(n - 1);
        self.calls.merge(calls);
    }
}

// --- the run ----------------------------------------------------------------------

/// Every figure of the report.
struct Figures {
    rows: u64,
    entries: u64,
    bucket_bits: u32,
    cores: usize,
    cpu_model: String,
    redis_version: String,
    ping: (f64, f64),
    /// Scenarios (a) and (b), at batch 1 and 1,024.
    latency: Vec<Pair>,
    shared: Load,
    single: Load,
    /// The machine's other load during the scenarios.
    background: Option<Background>,
    /// Elements the Redis counted for the key today.
    redis_counted: Option<u64>,
    /// Elements answered by Redis-backed servers, warm-up included.
    redis_answered: u64,
}

fn run() -> anyhow::Result<bool> {
    let args = Args::parse()?;
    let per = Duration::from_secs_f64(args.seconds);
    // Declared in this order so they drop in reverse: servers, Redis, files.
    let dir = TempDir::new()?;
    eprintln!("loadtest: building a {}-row index", args.rows);
    let (index, key) = fixture(&dir.0, args.rows)?;
    let redis = Redis::start(&dir.0)?;
    let redis_version = Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into());
    let memory_cfg = config(&dir.0, "memory", &index, &key, None)?;
    let redis_cfg = config(&dir.0, "redis", &index, &key, Some(&redis.url()))?;
    eprintln!(
        "loadtest: starting 1 server with the memory quota and {} sharing Redis on port {}",
        args.replicas, redis.port
    );
    let memory = Server::start(&args.server, &memory_cfg, &dir.0.join("memory.log"))?;
    let replicas: Vec<Server> = (0..args.replicas)
        .map(|i| {
            Server::start(
                &args.server,
                &redis_cfg,
                &dir.0.join(format!("redis-{i}.log")),
            )
        })
        .collect::<anyhow::Result<_>>()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut f = rt.block_on(async { measure(&args, per, &memory, &replicas, &redis).await })?;
    drop(rt);

    f.rows = args.rows;
    f.redis_version = redis_version;
    f.redis_counted = redis
        .cmd(&["HGET", &format!("{KEY_PREFIX}{{{KEY_NAME}}}"), "e"])
        .and_then(|v| v.parse().ok());
    let ok = f
        .latency
        .iter()
        .all(|p| p.memory.failed + p.redis.failed == 0)
        && f.shared.calls.failed + f.single.calls.failed == 0
        && f.redis_counted == Some(f.redis_answered);
    let text = render(&args, &f);
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text)?;
        eprintln!("loadtest: wrote {}", out.display());
    }
    drop(replicas);
    drop(memory);
    drop(redis);
    drop(dir);
    Ok(ok)
}

/// The scenarios, in one runtime (this process is every client).
async fn measure(
    args: &Args,
    per: Duration,
    memory: &Server,
    replicas: &[Server],
    redis: &Redis,
) -> anyhow::Result<Figures> {
    let mut probe = connect(&memory.url()).await?;
    let info = probe
        .get_index_info(GetIndexInfoRequest {})
        .await?
        .into_inner();
    anyhow::ensure!(
        info.max_batch as usize == MAX_BATCH,
        "max_batch {}",
        info.max_batch
    );
    // 1,024 random phone numbers, blinded once: valid ristretto points the
    // servers evaluate as they would a real client's.
    let mut rng = rand::rng();
    let numbers: Vec<String> = (0..MAX_BATCH)
        .map(|_| format!("+86139{:08}", rng.random_range(0..100_000_000u32)))
        .collect();
    let (_, blinded) = proto::blind_batch(proto::Mode::Voprf, &numbers, &mut rng)?;
    let request = |n: usize| EvaluateRequest {
        index_id: info.index_id.clone(),
        blinded_elements: blinded[..n].iter().map(|b| b.to_bytes().to_vec()).collect(),
    };
    let (one, full) = (request(1), request(MAX_BATCH));

    // Warm-up of every server: connections, the Redis script, the pools.
    let mut mem_client = connect(&memory.url()).await?;
    let mut redis_client = connect(&replicas[0].url()).await?;
    let mut warm_memory = Calls::default();
    let mut warm_redis = Calls::default();
    for _ in 0..20 {
        warm_memory.record(evaluate(&mut mem_client, &one).await);
        warm_redis.record(evaluate(&mut redis_client, &one).await);
    }
    for r in replicas {
        let mut c = connect(&r.url()).await?;
        for _ in 0..3 {
            warm_redis.record(evaluate(&mut c, &full).await);
        }
    }
    for _ in 0..3 {
        warm_memory.record(evaluate(&mut mem_client, &full).await);
    }
    anyhow::ensure!(
        warm_memory.failed + warm_redis.failed == 0,
        "warm-up calls failed: {:?} {:?}",
        warm_memory.samples,
        warm_redis.samples
    );
    // Every element a Redis-backed server answers, to compare with the
    // count in Redis at the end.
    let mut redis_answered = warm_redis.elements;

    eprintln!("loadtest: Redis PING round trip");
    let ping = redis.ping_round_trip(2000)?;

    // Every process of the test, for the background figure.
    let mut ours: Vec<u32> = replicas.iter().map(Server::pid).collect();
    ours.extend([memory.pid(), redis.child.0.id(), std::process::id()]);
    let sampler = Sampler::new(&ours);
    let mut latency = Vec::new();
    for req in [&one, &full] {
        eprintln!(
            "loadtest: (a) memory vs (b) Redis quota, batch {}, 1 call in flight",
            req.blinded_elements.len()
        );
        let pair = latency_pair(&mut mem_client, &mut redis_client, req, per).await;
        redis_answered += pair.redis.elements;
        latency.push(pair);
    }

    eprintln!(
        "loadtest: (c) {} servers sharing Redis vs (d) 1 server, {} clients, batch {MAX_BATCH}",
        replicas.len(),
        args.clients
    );
    let urls: Vec<String> = replicas.iter().map(Server::url).collect();
    let mut shared_fleet = Vec::new();
    let mut single_fleet = Vec::new();
    for _ in 0..args.clients {
        let mut all = Vec::new();
        for u in &urls {
            all.push(connect(u).await?);
        }
        shared_fleet.push(all);
        single_fleet.push(vec![connect(&urls[0]).await?]);
    }
    // Alternating windows of about 2 s (c, d, d, c, c, d, ...), `per` in
    // all for each.
    let windows = (args.seconds / 2.0).round().max(1.0) as usize;
    let length = per / windows as u32;
    let mut pids: Vec<u32> = replicas.iter().map(Server::pid).collect();
    pids.push(redis.child.0.id());
    pids.push(std::process::id());
    let all_servers: Vec<usize> = (0..replicas.len()).collect();
    let (mut shared, mut single) = (Load::default(), Load::default());
    for w in 0..windows {
        for on_shared in [w % 2 == 0, w % 2 == 1] {
            let before = cpu(&pids);
            let calls = if on_shared {
                window(&shared_fleet, &full, length).await
            } else {
                window(&single_fleet, &full, length).await
            };
            let after = cpu(&pids);
            redis_answered += calls.elements;
            if on_shared {
                shared.add(calls, &before, &after, &all_servers);
            } else {
                single.add(calls, &before, &after, &[0]);
            }
        }
    }

    let background = sampler.finish(&ours);

    Ok(Figures {
        rows: 0,
        background,
        entries: info.entry_count,
        bucket_bits: info.bucket_bits,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: breachcheck_tests::cpu_model().unwrap_or_else(|| "?".into()),
        redis_version: String::new(),
        ping,
        latency,
        shared,
        single,
        redis_counted: None,
        redis_answered,
    })
}

// --- the report -------------------------------------------------------------------

fn render(args: &Args, f: &Figures) -> String {
    let ms = |us: f64| us / 1e3;
    let mut s = String::new();
    let _ = writeln!(s, "# Multi-process load test: evaluators sharing Redis\n");
    let _ = writeln!(
        s,
        "`target/release/loadtest{}` (built by `cargo build --release -p breachcheck-tests --bin loadtest -p breachcheck-server`). \
         Index of {} synthetic rows ({} entries, k = {}), `max_batch` = {MAX_BATCH}, one API key whose quota no scenario reaches; \
         a private `redis-server` {} (`--save \"\" --appendonly no`) and every `serve` process on 127.0.0.1; {} s per scenario.\n",
        args.command_line, f.rows, f.entries, f.bucket_bits, f.redis_version, args.seconds
    );
    let _ = writeln!(
        s,
        "* machine: {} cores ({}), shared by the client, every server and Redis; absolute figures drift on this noisy machine, \
         so each pair of scenarios is measured in alternating rounds under the same load{}.",
        f.cores,
        f.cpu_model,
        f.background.as_ref().map_or_else(String::new, |b| format!(
            "; during the scenarios, processes outside this test kept {:.2} cores busy on average \
             and the hypervisor took {:.1} % of the CPU time",
            b.other_cores, b.steal_percent
        ))
    );
    let _ = writeln!(
        s,
        "* Redis PING round trip from a client process over loopback: p50 {:.0} µs, p99 {:.0} µs. \
         An Evaluate charges the quota twice (its request, then its elements): two EVALSHA round trips.\n",
        f.ping.0, f.ping.1
    );
    let _ = writeln!(
        s,
        "## (a) vs (b): one server, memory quota vs Redis quota, 1 call in flight\n"
    );
    let _ = writeln!(
        s,
        "| batch | (a) memory: p50 / p99 | (b) Redis: p50 / p99 | p50 added by Redis | paired estimate | (b) / (a) p50 | target | calls (a) / (b) | failed |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for p in &f.latency {
        let (a50, a99) = p.memory.p50_p99();
        let (b50, b99) = p.redis.p50_p99();
        let target = if p.batch == 1 {
            format!(
                "≤ 1,000 µs added: **{}**",
                if b50 - a50 <= 1000.0 { "met" } else { "missed" }
            )
        } else {
            format!(
                "≤ 1.05: **{}**",
                if b50 / a50 <= 1.05 { "met" } else { "missed" }
            )
        };
        let _ = writeln!(
            s,
            "| {} | {:.3} / {:.3} ms | {:.3} / {:.3} ms | **{:+.0} µs** | {:+.0} µs | **{:.3}** | {target} | {} / {} | {} |",
            p.batch,
            ms(a50),
            ms(a99),
            ms(b50),
            ms(b99),
            b50 - a50,
            p.paired_us,
            b50 / a50.max(1e-9),
            p.memory.calls(),
            p.redis.calls(),
            p.memory.failed + p.redis.failed
        );
    }
    let _ = writeln!(
        s,
        "\nThe paired estimate is the median over {:.0}-ms rounds of (b)'s p50 minus (a)'s p50 in the adjacent round. \
         The quota is charged per call, not per element, so the Redis cost is the same at both batch sizes; \
         at batch 1,024 it is far below this machine's run-to-run noise.",
        LATENCY_ROUND.as_secs_f64() * 1e3
    );
    let _ = writeln!(
        s,
        "\n## (c) vs (d): {} concurrent clients, batch {MAX_BATCH}, Redis quota\n",
        args.clients
    );
    let _ = writeln!(
        s,
        "| scenario | elements/s | calls | failed | latency p50 / p99 | server CPU | redis-server CPU | client CPU |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for (name, l) in [
        (
            format!(
                "(c) {} servers sharing Redis, calls round-robin",
                args.replicas
            ),
            &f.shared,
        ),
        ("(d) 1 server (Redis quota)".to_owned(), &f.single),
    ] {
        let (p50, p99) = l.calls.p50_p99();
        let wall = l.calls.wall.max(1e-9);
        let _ = writeln!(
            s,
            "| {name} | **{:.0}** | {} | {} | {:.0} / {:.0} ms | {:.2} cores | {:.3} cores | {:.2} cores |",
            l.calls.rate(),
            l.calls.calls(),
            l.calls.failed,
            ms(p50),
            ms(p99),
            l.server_cpu / wall,
            l.redis_cpu / wall,
            l.client_cpu / wall
        );
    }
    let _ = writeln!(
        s,
        "\n(c) / (d) elements/s: **{:.3}**. CPU figures are CPU seconds over the scenario's wall time \
         ({:.1} s each, in alternating windows).\n",
        f.shared.calls.rate() / f.single.calls.rate().max(1e-9),
        f.shared.calls.wall
    );
    let failed: u64 = f
        .latency
        .iter()
        .map(|p| p.memory.failed + p.redis.failed)
        .sum::<u64>()
        + f.shared.calls.failed
        + f.single.calls.failed;
    let _ = writeln!(s, "## Correctness\n");
    let _ = writeln!(s, "* failed calls, all scenarios: **{failed}**");
    let _ = writeln!(
        s,
        "* elements the Redis counted for the key: {}; elements answered by the Redis-backed servers (warm-up included): {} ({})",
        f.redis_counted
            .map_or_else(|| "none".to_owned(), |n| n.to_string()),
        f.redis_answered,
        if f.redis_counted == Some(f.redis_answered) {
            "equal: every replica charged the one shared quota"
        } else {
            "MISMATCH"
        }
    );
    let mut samples: Vec<&String> = f
        .latency
        .iter()
        .flat_map(|p| p.memory.samples.iter().chain(&p.redis.samples))
        .chain(&f.shared.calls.samples)
        .chain(&f.single.calls.samples)
        .collect();
    samples.truncate(5);
    for e in samples {
        let _ = writeln!(s, "* failure: `{e}`");
    }
    let _ = writeln!(
        s,
        "\nOn {} shared cores, {} server processes cannot evaluate more elements per second than one: \
         one server's rayon pool already uses every core, and the client and Redis take their share. \
         What (c) against (d) shows is that spreading calls over replicas that share one Redis quota \
         costs nothing measurable and fails no call; on separate machines each evaluator adds its own cores.",
        f.cores, args.replicas
    );
    s
}
