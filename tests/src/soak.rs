//! The abuse soak (#10): a real `breachcheck-server` (the built binary, a
//! child process on a loopback port) under the attacks of the issue while
//! legitimate clients check numbers; measures the server's RSS and CPU from
//! `/proc` and the legitimate calls' latency and errors.
//!
//! Phases: warm-up, an unloaded baseline (legitimate clients only), the
//! attack (every attack at once, with the legitimate clients), then a
//! settling phase until the attackers' connections are gone, when the end
//! RSS is read. Everything is bounded: attacks stop at the end of the attack
//! phase, and every wait has a limit. Loopback only.
//!
//! The attacks, each on its own API key so quota refusals of one do not
//! touch the legitimate key, and all from their own loopback address
//! ([`raw::ATTACKER_SOURCE`], 127.0.0.2; the legitimate clients connect from
//! 127.0.0.1), so that what the server does to an abusive source is seen:
//!
//! * `half_open`: rounds of `half_open_streams` Evaluate streams without a
//!   key (headers and 5 bytes of a frame, never ended), spread over as many
//!   connections as the server's streams-per-connection cap needs (the first
//!   round runs whole, even past the end of the attack);
//! * `idle_sockets`: TCP connections that never send a byte, reopened when
//!   the server closes them (the first of each is waited for even past the
//!   end of the attack, up to 120 s);
//! * `bad_batches`: 4,095 valid elements and one bad one, per call;
//! * `spent_key`: full batches from a key whose daily quota is spent;
//! * `malformed`: bytes that are not protobuf, and frames cut short;
//! * `slow_readers`: GetBuckets of the whole index, never read;
//! * `dropped`: an Evaluate sent, then the connection dropped;
//! * `garbage`: TCP connections sending random bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use breachcheck_proto as proto;
use breachcheck_proto::pb;
use prost::Message as _;
use rand::RngExt as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::raw;

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The `breachcheck-server` binary.
    pub server_bin: PathBuf,
    /// Legitimate clients alone, before the attack.
    pub baseline: Duration,
    /// How long the attacks run.
    pub attack: Duration,
    /// Legitimate clients, each checking one number at a time.
    pub legit_clients: usize,
    /// Streams per round of the half-open attack.
    pub half_open_streams: usize,
    /// Idle sockets held open at once.
    pub idle_sockets: usize,
    /// Extra `serve` flags (e.g. `--handshake-timeout-secs 2`).
    pub server_args: Vec<String>,
    /// Run only these attacks (by name); all when empty.
    pub only: Vec<String>,
    /// Threads of the attackers' runtime. One (the default) leaves the
    /// server the other core of a two-core machine: an attacker elsewhere
    /// does not take the server's CPU, and one that shares the machine
    /// measures the machine, not the server.
    pub attack_threads: usize,
    /// Run the attackers' threads under `SCHED_IDLE` (Linux), on CPU that
    /// nothing else wants. An attacker on another machine spends its own
    /// CPU, not the server's; on a loopback soak the attackers' threads
    /// compete with the server and the legitimate clients for the same
    /// cores, and their own work (building frames, parsing answers) would be
    /// measured as the server's weakness. The server still sees every
    /// attack whole (each connection opened, each stream sent), at the rate
    /// the spare CPU allows. `false` measures the shared machine.
    pub attacker_idle: bool,
    /// Keep the server up this long after the run (its PID on stderr), to
    /// inspect its memory.
    pub hold: Duration,
}

impl Default for SoakOptions {
    fn default() -> Self {
        SoakOptions {
            server_bin: PathBuf::from("breachcheck-server"),
            baseline: Duration::from_secs(5),
            attack: Duration::from_secs(60),
            legit_clients: 2,
            half_open_streams: 30_000,
            idle_sockets: 2_000,
            server_args: Vec::new(),
            only: Vec::new(),
            attack_threads: 1,
            attacker_idle: true,
            hold: Duration::ZERO,
        }
    }
}

/// Latency percentiles of the legitimate calls of one phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latencies {
    /// Calls.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Latencies {
    fn of(mut v: Vec<Duration>) -> Self {
        v.sort();
        let at = |q: f64| {
            if v.is_empty() {
                Duration::ZERO
            } else {
                v[((v.len() - 1) as f64 * q).round() as usize]
            }
        };
        Latencies {
            n: v.len(),
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

/// What one attack did: attempts, and what came of them.
#[derive(Debug, Clone, Default)]
pub struct AttackStats {
    /// Calls, streams or connections made.
    pub attempts: u64,
    /// Outcomes by name (a gRPC code, `closed_by_server`, ...).
    pub outcomes: BTreeMap<String, u64>,
}

impl AttackStats {
    fn count(&mut self, outcome: impl Into<String>) {
        *self.outcomes.entry(outcome.into()).or_default() += 1;
    }

    fn merge(&mut self, other: AttackStats) {
        self.attempts += other.attempts;
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
    }
}

/// The soak's figures.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    /// Server RSS when the attack started, KiB.
    pub rss_start_kb: u64,
    /// Highest server RSS seen during the attack, KiB.
    pub rss_peak_kb: u64,
    /// Server RSS after the attack, once its connections were gone, KiB.
    pub rss_end_kb: u64,
    /// Server CPU time during the attack, seconds (all threads).
    pub cpu_attack_secs: f64,
    /// Server CPU time during the baseline, seconds.
    pub cpu_baseline_secs: f64,
    /// The attack's wall time, seconds.
    pub attack_secs: f64,
    /// The baseline's wall time, seconds.
    pub baseline_secs: f64,
    /// Legitimate calls without attack.
    pub unloaded: Latencies,
    /// Legitimate calls under attack.
    pub loaded: Latencies,
    /// Legitimate calls that failed or answered wrongly, all phases.
    pub legit_errors: u64,
    /// A few of those errors.
    pub legit_error_samples: Vec<String>,
    /// Per attack.
    pub attacks: BTreeMap<&'static str, AttackStats>,
    /// The server's refusal and connection counters after the run.
    pub server_metrics: Vec<String>,
    /// The server's descriptor-limit log line.
    pub nofile_log: Option<String>,
    /// Warnings the server logged.
    pub server_warnings: Vec<String>,
}

impl SoakReport {
    /// RSS growth from the start of the attack to its end, MiB (negative:
    /// shrank).
    pub fn rss_growth_mb(&self) -> f64 {
        (self.rss_end_kb as f64 - self.rss_start_kb as f64) / 1024.0
    }

    /// The report, as Markdown.
    pub fn render(&self) -> String {
        let mb = |kb: u64| kb as f64 / 1024.0;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut o = String::new();
        let _ = writeln!(o, "| figure | value |\n|---|---|");
        let _ = writeln!(
            o,
            "| server RSS start / peak / end | {:.1} / {:.1} / {:.1} MB (end − start {:+.1} MB) |",
            mb(self.rss_start_kb),
            mb(self.rss_peak_kb),
            mb(self.rss_end_kb),
            self.rss_growth_mb()
        );
        let _ = writeln!(
            o,
            "| server CPU, baseline | {:.2} s in {:.1} s ({:.2} cores) |",
            self.cpu_baseline_secs,
            self.baseline_secs,
            self.cpu_baseline_secs / self.baseline_secs.max(1e-9)
        );
        let _ = writeln!(
            o,
            "| server CPU, attack | {:.2} s in {:.1} s ({:.2} cores) |",
            self.cpu_attack_secs,
            self.attack_secs,
            self.cpu_attack_secs / self.attack_secs.max(1e-9)
        );
        let _ = writeln!(
            o,
            "| legitimate check, unloaded | n = {}, p50 {:.1} ms, p99 {:.1} ms |",
            self.unloaded.n,
            ms(self.unloaded.p50),
            ms(self.unloaded.p99)
        );
        let ratio = if self.unloaded.p99 > Duration::ZERO {
            self.loaded.p99.as_secs_f64() / self.unloaded.p99.as_secs_f64()
        } else {
            0.0
        };
        let _ = writeln!(
            o,
            "| legitimate check, under attack | n = {}, p50 {:.1} ms, p99 {:.1} ms ({ratio:.2}× unloaded p99) |",
            self.loaded.n,
            ms(self.loaded.p50),
            ms(self.loaded.p99)
        );
        let _ = writeln!(o, "| legitimate errors | {} |", self.legit_errors);
        let _ = writeln!(o, "\n| attack | attempts | outcomes |\n|---|---|---|");
        for (name, s) in &self.attacks {
            let outcomes: Vec<String> =
                s.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(o, "| {name} | {} | {} |", s.attempts, outcomes.join(", "));
        }
        if let Some(l) = &self.nofile_log {
            let _ = writeln!(o, "\nserver: `{l}`");
        }
        if !self.server_metrics.is_empty() {
            let _ = writeln!(o, "\nserver counters after the run:\n```");
            for l in &self.server_metrics {
                let _ = writeln!(o, "{l}");
            }
            let _ = writeln!(o, "```");
        }
        for w in self.server_warnings.iter().take(5) {
            let _ = writeln!(o, "\nserver warning: `{w}`");
        }
        for e in &self.legit_error_samples {
            let _ = writeln!(o, "\nlegitimate error: {e}");
        }
        o
    }
}

/// API keys of the soak: the legitimate one and one per attack.
const KEYS: [&str; 6] = ["legit", "spent", "bad", "junk", "slow", "drop"];

fn token(name: &str) -> String {
    format!("soak-token-{name}")
}

/// A fixture index and the config naming it.
struct Setup {
    dir: PathBuf,
    config: PathBuf,
    members: Vec<String>,
    non_members: Vec<String>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn setup() -> anyhow::Result<Setup> {
    use breachcheck_server as server;
    let dir = std::env::temp_dir().join(format!("breachcheck-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let dump = dir.join("dump.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&dump)?);
    let (members, _) = server::generate_corpus(&mut f, 4000, 11, server::CorpusFormat::Csv, &[])?;
    drop(f);
    let non_members = server::non_members(&members, 2000, 11);
    let key = server::key_from_seed("50a4")?;
    let key_path = dir.join("oprf.key");
    server::save_key(&key_path, &key, true)?;
    let index = dir.join("soak.idx");
    let opts = server::BuildOptions {
        inputs: vec![server::InputSpec {
            path: dump,
            breach: 0,
        }],
        breaches: vec![server::BreachMeta {
            id: "soak".into(),
            name: "soak".into(),
            date: "2020-01".into(),
            description: "synthetic".into(),
            data_classes: vec!["phone numbers".into()],
        }],
        default_region: proto::Region::parse("CN"),
        column: None,
        bucket_bits: Some(4),
        force_bucket_bits: true,
        pir: false,
        memory_limit: 1 << 28,
        temp_dir: None,
        progress: server::ProgressMode::Quiet,
    };
    server::build_index(&key, &index, &opts)?;
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\nindex = {:?}\nkey = {:?}\n",
        index.display().to_string(),
        key_path.display().to_string()
    );
    for name in KEYS {
        let hash = hex::encode(blake3::hash(token(name).as_bytes()).as_bytes());
        let _ = write!(
            toml,
            "[[api_keys]]\nname = \"{name}\"\ntoken_blake3 = \"{hash}\"\n"
        );
        let quota = match name {
            // Nothing the soak does exhausts it.
            "legit" => Some(
                "1e9\nburst = 1000000000\nelements_per_day = 1000000000000\nbucket_bytes_per_day = 1000000000000000\nrequests_per_second = 1e6\nrequest_burst = 1000000",
            ),
            // One element a day: spent by the attack's first call.
            "spent" => {
                Some("1000.0\nburst = 4096\nelements_per_day = 1\nbucket_bytes_per_day = 1000")
            }
            _ => None,
        };
        if let Some(q) = quota {
            let _ = write!(toml, "[api_keys.quota]\nelements_per_second = {q}\n");
        }
    }
    let config = dir.join("soak.toml");
    std::fs::write(&config, toml)?;
    Ok(Setup {
        dir,
        config,
        members: members.into_iter().take(2000).collect(),
        non_members,
    })
}

/// The server child process; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    log: Arc<Mutex<ServerLog>>,
}

#[derive(Default)]
struct ServerLog {
    nofile: Option<String>,
    warnings: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bin: &Path, config: &Path, extra: &[String]) -> anyhow::Result<Server> {
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    // stderr is read to the end by a thread (a full pipe would block the
    // server's logging); the metrics address comes from its log line.
    let log = Arc::new(Mutex::new(ServerLog::default()));
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("metrics on /metrics")
                && let Some(a) = field(&line, "addr=").and_then(|a| a.parse().ok())
            {
                let _ = tx.send(a);
            }
            let Ok(mut l) = log2.lock() else { continue };
            if line.contains("descriptor limit") {
                l.nofile = Some(strip_time(&line));
            }
            if line.contains("WARN") || line.contains("ERROR") {
                l.warnings.push(strip_time(&line));
            }
        }
    });
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first)?;
    let addr = first
        .trim()
        .strip_prefix("breachcheck-server listening on ")
        .with_context(|| format!("unexpected first line {first:?}"))?
        .parse()?;
    let metrics = rx
        .recv_timeout(Duration::from_secs(30))
        .context("no metrics address logged")?;
    Ok(Server {
        child,
        addr,
        metrics,
        log,
    })
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    Some(rest.split_whitespace().next().unwrap_or(rest))
}

fn strip_time(line: &str) -> String {
    // "2026-01-01T00:00:00.000000Z  INFO target: message": drop the time.
    line.split_once(' ')
        .map_or(line, |(_, rest)| rest)
        .trim()
        .to_owned()
}

/// Resident set size of `pid`, KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of `pid` (all threads), seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some(ticks as f64 / hz)
}

/// `GET /metrics` of the server.
async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await??;
    Ok(out)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Wait after the attackers' connections are gone, before the end RSS.
const SETTLE: Duration = Duration::from_secs(11);

/// Legitimate-client phases.
const WARMUP: u8 = 0;
const BASELINE: u8 = 1;
const ATTACK: u8 = 2;
const AFTER: u8 = 3;

#[derive(Default)]
struct LegitLog {
    latencies: [Vec<Duration>; 4],
    errors: u64,
    samples: Vec<String>,
}

/// Runs the soak (blocking: it makes its own runtimes, one for the
/// legitimate clients and one for the attackers, so attackers do not slow the
/// clients' own work).
///
/// # Errors
///
/// Setup failures (fixture, server start); not attack outcomes.
pub fn run(opts: &SoakOptions) -> anyhow::Result<SoakReport> {
    // Our own side holds thousands of sockets too.
    breachcheck_server::raise_nofile_limit();
    let setup = setup()?;
    let server = start_server(&opts.server_bin, &setup.config, &opts.server_args)?;
    let pid = server.child.id();
    let url = format!("http://{}", server.addr);

    let phase = Arc::new(AtomicU8::new(WARMUP));
    let stop = Arc::new(AtomicBool::new(false));
    let legit_log = Arc::new(Mutex::new(LegitLog::default()));
    let legit_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut legit = Vec::new();
    for c in 0..opts.legit_clients.max(1) {
        let (url, phase, stop, log) = (url.clone(), phase.clone(), stop.clone(), legit_log.clone());
        let members = setup.members.clone();
        let non_members = setup.non_members.clone();
        legit.push(legit_rt.spawn(async move {
            legit_client(c, url, members, non_members, phase, stop, log).await;
        }));
    }

    // RSS sampler: the peak of the attack phase.
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, phase) = (peak.clone(), sampling.clone(), phase.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if phase.load(Ordering::Relaxed) >= ATTACK
                    && let Some(kb) = rss_kb(pid)
                {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    std::thread::sleep(Duration::from_secs(1));
    phase.store(BASELINE, Ordering::SeqCst);
    let cpu0 = cpu_secs(pid).unwrap_or(0.0);
    let t0 = Instant::now();
    std::thread::sleep(opts.baseline);
    let baseline_secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_secs(pid).unwrap_or(0.0);

    let rss_start_kb = rss_kb(pid).unwrap_or(0);
    peak.store(rss_start_kb, Ordering::SeqCst);
    phase.store(ATTACK, Ordering::SeqCst);
    let attack_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.attack_threads.max(1))
        .on_thread_start({
            let idle = opts.attacker_idle;
            move || {
                if idle {
                    set_idle_priority();
                }
            }
        })
        .enable_all()
        .build()?;
    let t1 = Instant::now();
    let attacks = attack_rt.block_on(attack_all(server.addr, opts, t1 + opts.attack));
    let attack_secs = t1.elapsed().as_secs_f64();
    let cpu2 = cpu_secs(pid).unwrap_or(0.0);
    phase.store(AFTER, Ordering::SeqCst);
    drop(attack_rt);

    // Settle: the attackers' connections are closed on our side; wait until
    // the server has let go of them too, then read the end RSS.
    let metrics_addr = server.metrics;
    let legit_conns = opts.legit_clients as f64 + 1.0;
    let settle_until = Instant::now() + Duration::from_secs(30);
    legit_rt.block_on(async {
        while Instant::now() < settle_until {
            if let Ok(m) = scrape(metrics_addr).await
                && metric(&m, "breachcheck_connections_open").is_some_and(|n| n <= legit_conns)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // The server hands freed heap back within 5 s of connections closing
    // (`trim_after_churn`); give it two rounds.
    std::thread::sleep(SETTLE);
    let rss_end_kb = rss_kb(pid).unwrap_or(0);
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.join();
    stop.store(true, Ordering::SeqCst);
    legit_rt.block_on(async {
        for l in legit {
            let _ = tokio::time::timeout(Duration::from_secs(60), l).await;
        }
    });
    let final_metrics = legit_rt.block_on(scrape(metrics_addr)).unwrap_or_default();
    let server_metrics = final_metrics
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && (l.starts_with("breachcheck_refusals_total")
                    || l.starts_with("breachcheck_connections")
                    || l.starts_with("breachcheck_accept_errors_total")
                    || l.starts_with("breachcheck_source_cooldowns_total")
                    || l.starts_with("breachcheck_requests_total")
                    || l.starts_with("breachcheck_quota_rejections_total"))
        })
        .map(str::to_owned)
        .collect();

    if !opts.hold.is_zero() {
        eprintln!(
            "soak: server pid {pid} stays up for {} s",
            opts.hold.as_secs()
        );
        std::thread::sleep(opts.hold);
    }
    let log = legit_log
        .lock()
        .map_err(|_| anyhow::anyhow!("log poisoned"))?;
    let server_log = server
        .log
        .lock()
        .map_err(|_| anyhow::anyhow!("log poisoned"))?;
    Ok(SoakReport {
        rss_start_kb,
        rss_peak_kb: peak.load(Ordering::SeqCst).max(rss_start_kb),
        rss_end_kb,
        cpu_attack_secs: cpu2 - cpu1,
        cpu_baseline_secs: cpu1 - cpu0,
        attack_secs,
        baseline_secs,
        unloaded: Latencies::of(log.latencies[BASELINE as usize].clone()),
        loaded: Latencies::of(log.latencies[ATTACK as usize].clone()),
        legit_errors: log.errors,
        legit_error_samples: log.samples.clone(),
        attacks,
        server_metrics,
        nofile_log: server_log.nofile.clone(),
        server_warnings: server_log.warnings.clone(),
    })
}

/// Puts the calling thread under `SCHED_IDLE` (Linux keeps the policy per
/// thread). Best effort: where it is refused, the soak measures the shared
/// machine, as with `attacker_idle: false`.
fn set_idle_priority() {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid,
    // initialised parameter; no memory is shared with the kernel afterwards.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &p) };
    if rc != 0 {
        eprintln!("soak: SCHED_IDLE refused; the attackers share the CPU equally");
    }
}

/// One legitimate client: checks one number at a time (alternating members
/// and non-members, each answer verified) until `stop`.
async fn legit_client(
    c: usize,
    url: String,
    members: Vec<String>,
    non_members: Vec<String>,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<LegitLog>>,
) {
    let failed = |e: String| {
        if let Ok(mut l) = log.lock() {
            l.errors += 1;
            if l.samples.len() < 5 {
                l.samples.push(e);
            }
        }
    };
    let client = match breachcheck_client::Client::builder(url)
        .api_key(token("legit"))
        .default_region("CN")
        .connect()
        .await
    {
        Ok(c) => c,
        Err(e) => return failed(format!("connect: {e}")),
    };
    let mut i = c * 7919;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let member = i.is_multiple_of(2);
        let list = if member { &members } else { &non_members };
        let number = list[i % list.len()].clone();
        let p = phase.load(Ordering::Relaxed);
        let t = Instant::now();
        let r = client.check(&[number]).await;
        let took = t.elapsed();
        match r {
            Ok(r) if r.len() == 1 && r[0].found == member && r[0].error.is_none() => {
                if let Ok(mut l) = log.lock() {
                    l.latencies[usize::from(p)].push(took);
                }
            }
            Ok(r) => failed(format!("wrong answer: {:?}", r.first().map(|r| r.found))),
            Err(e) => failed(format!("{e}")),
        }
    }
}

/// Every attack at once, until `deadline`.
async fn attack_all(
    addr: SocketAddr,
    opts: &SoakOptions,
    deadline: Instant,
) -> BTreeMap<&'static str, AttackStats> {
    let batch = full_batch();
    let deadline = tokio::time::Instant::from_std(deadline);
    let on = |name: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == name);
    let mut running: Vec<(&'static str, tokio::task::JoinHandle<AttackStats>)> = Vec::new();
    if on("half_open") {
        running.push((
            "half_open",
            tokio::spawn(half_open(addr, opts.half_open_streams, deadline)),
        ));
    }
    if on("idle_sockets") {
        running.push((
            "idle_sockets",
            tokio::spawn(idle_sockets(addr, opts.idle_sockets, deadline)),
        ));
    }
    if on("bad_batches") {
        let b = batch.clone();
        running.push(("bad_batches", tokio::spawn(bad_batches(addr, b, deadline))));
    }
    if on("spent_key") {
        let b = batch.clone();
        running.push(("spent_key", tokio::spawn(spent_key(addr, b, deadline))));
    }
    if on("malformed") {
        running.push(("malformed", tokio::spawn(malformed(addr, deadline))));
    }
    if on("slow_readers") {
        running.push(("slow_readers", tokio::spawn(slow_readers(addr, deadline))));
    }
    if on("dropped") {
        running.push(("dropped", tokio::spawn(dropped(addr, deadline))));
    }
    if on("garbage") {
        running.push(("garbage", tokio::spawn(garbage(addr, deadline))));
    }
    let mut out = BTreeMap::new();
    for (name, h) in running {
        out.insert(name, h.await.unwrap_or_default());
    }
    out
}

/// 4,096 valid blinded elements, encoded (the attacker reuses them).
fn full_batch() -> Vec<Vec<u8>> {
    let inputs: Vec<String> = (0..4096).map(|i| format!("+86138{i:08}")).collect();
    match proto::blind_batch(proto::Mode::Voprf, &inputs, &mut rand::rng()) {
        Ok((_, b)) => b.iter().map(|x| x.to_bytes().to_vec()).collect(),
        Err(_) => Vec::new(),
    }
}

fn evaluate(elements: Vec<Vec<u8>>) -> Vec<u8> {
    pb::EvaluateRequest {
        index_id: vec![],
        blinded_elements: elements,
    }
    .encode_to_vec()
}

fn code_name(code: i32) -> String {
    format!("{:?}", tonic::Code::from_i32(code))
}

/// Half-open Evaluate streams without a key, `streams` per round.
async fn half_open(
    addr: SocketAddr,
    streams: usize,
    deadline: tokio::time::Instant,
) -> AttackStats {
    let mut stats = AttackStats::default();
    // The server's cap; an attacker that ignores it gets REFUSED_STREAM.
    const PER_CONN: usize = 128;
    // The first round runs whole however long it takes (a loaded machine
    // slows the attacker too): the soak always sends `streams` at least.
    let mut first = true;
    while std::mem::replace(&mut first, false) || tokio::time::Instant::now() < deadline {
        let conns = streams.div_ceil(PER_CONN);
        let mut tasks = Vec::new();
        for c in 0..conns {
            let n = PER_CONN.min(streams - c * PER_CONN);
            tasks.push(tokio::spawn(async move {
                let mut s = AttackStats::default();
                let Ok(h2) = raw::attacker_h2(addr).await else {
                    // Closed before HTTP/2 (the source is cooling down):
                    // none of its streams could be sent.
                    s.attempts += n as u64;
                    *s.outcomes.entry("closed_before_http2".into()).or_default() += n as u64;
                    return s;
                };
                let mut pending = Vec::with_capacity(n);
                for _ in 0..n {
                    s.attempts += 1;
                    match raw::half_open(&h2.send, raw::EVALUATE, None, 5).await {
                        Ok(p) => pending.push(p),
                        Err(_) => s.count("stream_failed"),
                    }
                }
                for (resp, _held) in pending {
                    match tokio::time::timeout(Duration::from_secs(30), raw::grpc_status(resp))
                        .await
                    {
                        Ok(Ok((code, _))) => s.count(code_name(code)),
                        Ok(Err(e)) => s.count(format!("reset ({})", e.root_cause())),
                        Err(_) => s.count("no_answer_in_30s"),
                    }
                }
                h2.conn.abort();
                s
            }));
        }
        for t in tasks {
            if let Ok(s) = t.await {
                stats.merge(s);
            }
        }
    }
    stats
}

/// `n` sockets that never send a byte, reopened when the server closes them.
async fn idle_sockets(addr: SocketAddr, n: usize, deadline: tokio::time::Instant) -> AttackStats {
    let mut tasks = Vec::new();
    for _ in 0..n {
        tasks.push(tokio::spawn(async move {
            let mut s = AttackStats::default();
            // The first socket waits for the server to close it even past
            // the deadline (bounded), so all `n` are seen through; later
            // ones stop at the deadline.
            let mut first = true;
            while first || tokio::time::Instant::now() < deadline {
                s.attempts += 1;
                let Ok(mut tcp) = raw::attacker_tcp(addr).await else {
                    s.count("connect_failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    first = false;
                    continue;
                };
                let left = if std::mem::replace(&mut first, false) {
                    Duration::from_secs(120)
                } else {
                    deadline.saturating_duration_since(tokio::time::Instant::now())
                };
                let (closed, _) = raw::until_closed(&mut tcp, left).await;
                s.count(if closed {
                    "closed_by_server"
                } else {
                    "open_at_end"
                });
            }
            s
        }));
    }
    let mut stats = AttackStats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            stats.merge(s);
        }
    }
    stats
}

/// Calls of `message` to `path` with `token`'s key, `parallel` at a time.
async fn flood(
    addr: SocketAddr,
    path: &'static str,
    token_name: &'static str,
    message: Arc<Vec<u8>>,
    parallel: usize,
    deadline: tokio::time::Instant,
) -> AttackStats {
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let message = message.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = AttackStats::default();
            let t = token(token_name);
            while tokio::time::Instant::now() < deadline {
                let Ok(h2) = raw::attacker_h2(addr).await else {
                    s.count("connect_failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                while tokio::time::Instant::now() < deadline {
                    s.attempts += 1;
                    match raw::unary(&h2.send, path, Some(&t), &message).await {
                        Ok((code, _)) => s.count(code_name(code)),
                        Err(_) => {
                            s.count("connection_error");
                            break;
                        }
                    }
                }
                h2.conn.abort();
            }
            s
        }));
    }
    let mut stats = AttackStats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            stats.merge(s);
        }
    }
    stats
}

/// 4,095 valid elements and a bad last one.
async fn bad_batches(
    addr: SocketAddr,
    mut batch: Vec<Vec<u8>>,
    deadline: tokio::time::Instant,
) -> AttackStats {
    if let Some(last) = batch.last_mut() {
        *last = vec![0xFF; 32];
    }
    flood(
        addr,
        raw::EVALUATE,
        "bad",
        Arc::new(evaluate(batch)),
        4,
        deadline,
    )
    .await
}

/// Full batches from a key whose day is spent (one element spends it).
async fn spent_key(
    addr: SocketAddr,
    batch: Vec<Vec<u8>>,
    deadline: tokio::time::Instant,
) -> AttackStats {
    if let Ok(h2) = raw::attacker_h2(addr).await {
        let one = evaluate(batch.iter().take(1).cloned().collect());
        let _ = raw::unary(&h2.send, raw::EVALUATE, Some(&token("spent")), &one).await;
        h2.conn.abort();
    }
    flood(
        addr,
        raw::EVALUATE,
        "spent",
        Arc::new(evaluate(batch)),
        4,
        deadline,
    )
    .await
}

/// Bytes that are not protobuf (an invalid wire type), and frames cut short.
async fn malformed(addr: SocketAddr, deadline: tokio::time::Instant) -> AttackStats {
    let junk: Vec<u8> = vec![0x0f; 64];
    let mut stats = flood(addr, raw::EVALUATE, "junk", Arc::new(junk), 2, deadline).await;
    // And one round of truncated frames: a 100-byte frame with 10 bytes.
    if let Ok(h2) = raw::attacker_h2(addr).await {
        for _ in 0..20 {
            stats.attempts += 1;
            let Ok(mut ready) = h2.send.clone().ready().await else {
                break;
            };
            let t = token("junk");
            let Ok((resp, mut stream)) =
                ready.send_request(raw::grpc_request(raw::EVALUATE, Some(&t)), false)
            else {
                break;
            };
            let mut frame = vec![0u8, 0, 0, 0, 100];
            frame.extend_from_slice(&[0x0a; 10]);
            let _ = stream.send_data(bytes::Bytes::from(frame), true);
            match raw::grpc_status(resp).await {
                Ok((code, _)) => stats.count(format!("truncated {}", code_name(code))),
                Err(_) => stats.count("truncated reset"),
            }
        }
        h2.conn.abort();
    }
    stats
}

/// GetBuckets of the whole index over connections that never read: the
/// answers stop at the flow-control window and wait.
async fn slow_readers(addr: SocketAddr, deadline: tokio::time::Instant) -> AttackStats {
    let mut stats = AttackStats::default();
    let message = pb::GetBucketsRequest {
        index_id: vec![],
        prefix_bits: 0,
        prefixes: vec![],
    }
    .encode_to_vec();
    let t = token("slow");
    let mut held = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..4 {
        let Ok(tcp) = raw::attacker_tcp(addr).await else {
            stats.count("connect_failed");
            continue;
        };
        let Ok((send, conn)) = h2::client::Builder::new()
            .initial_window_size(1024)
            .initial_connection_window_size(4096)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
        else {
            stats.count("handshake_failed");
            continue;
        };
        let conn = tokio::spawn(conn);
        for _ in 0..32 {
            stats.attempts += 1;
            let Ok(mut ready) = send.clone().ready().await else {
                break;
            };
            let Ok((resp, mut stream)) =
                ready.send_request(raw::grpc_request(raw::GET_BUCKETS, Some(&t)), false)
            else {
                break;
            };
            let _ = stream.send_data(raw::grpc_frame(&message), true);
            // Headers only; the body is never read.
            match tokio::time::timeout(Duration::from_secs(10), resp).await {
                Ok(Ok(r)) => {
                    let code = r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .map_or("streaming".to_owned(), |c| format!("code {c}"));
                    stats.count(code);
                    held.push(r);
                }
                Ok(Err(_)) => stats.count("reset"),
                Err(_) => stats.count("no_headers_in_10s"),
            }
        }
        conns.push(conn);
    }
    tokio::time::sleep_until(deadline).await;
    drop(held);
    for c in conns {
        c.abort();
    }
    stats
}

/// A valid 64-element Evaluate, then the connection dropped before the answer.
async fn dropped(addr: SocketAddr, deadline: tokio::time::Instant) -> AttackStats {
    let mut stats = AttackStats::default();
    let batch: Vec<Vec<u8>> = full_batch().into_iter().take(64).collect();
    let message = evaluate(batch);
    let t = token("drop");
    while tokio::time::Instant::now() < deadline {
        stats.attempts += 1;
        let Ok(h2) = raw::attacker_h2(addr).await else {
            stats.count("connect_failed");
            continue;
        };
        if let Ok(mut ready) = h2.send.clone().ready().await
            && let Ok((_resp, mut stream)) =
                ready.send_request(raw::grpc_request(raw::EVALUATE, Some(&t)), false)
        {
            let _ = stream.send_data(raw::grpc_frame(&message), true);
            tokio::time::sleep(Duration::from_millis(5)).await;
            stats.count("dropped");
        }
        h2.conn.abort();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stats
}

/// Connections sending random bytes, with and without the preface.
async fn garbage(addr: SocketAddr, deadline: tokio::time::Instant) -> AttackStats {
    let mut stats = AttackStats::default();
    let mut i = 0u64;
    while tokio::time::Instant::now() < deadline {
        i += 1;
        stats.attempts += 1;
        let Ok(mut tcp) = raw::attacker_tcp(addr).await else {
            stats.count("connect_failed");
            continue;
        };
        let mut bytes: Vec<u8> = (0..1024).map(|_| rand::rng().random()).collect();
        if i.is_multiple_of(2) {
            bytes.splice(0..0, raw::PREFACE.iter().copied());
        }
        let _ = tcp.write_all(&bytes).await;
        let (closed, _) = raw::until_closed(&mut tcp, Duration::from_secs(15)).await;
        stats.count(if closed {
            "closed_by_server"
        } else {
            "still_open_after_15s"
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stats
}

/// The run, printed to stdout as it would go into `docs/BENCHMARKS.md`.
///
/// # Errors
///
/// Writing to stdout.
pub fn print(report: &SoakReport) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(report.render().as_bytes())
}
