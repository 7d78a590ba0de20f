//! `breachcheck`: check phone numbers against a breachcheck server, privately.
//!
//! Exit codes: 0 none of the numbers was found, 1 at least one was found,
//! 2 an error (nothing is reported as "not found" when in doubt).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use breachcheck_client::{Client, ClientBuilder, Progress, escape_controls};
use breachcheck_proto::TextReader;
use clap::{Parser, Subcommand};

#[path = "cli/output.rs"]
mod output;

use output::Format;

#[derive(Parser)]
#[command(
    name = "breachcheck",
    version,
    long_version = breachcheck_proto::long_version(env!("CARGO_PKG_VERSION")),
    about = "Check whether phone numbers are in a leaked corpus, without revealing them"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Conn {
    /// Server URL (http:// or https://). Several replicas of one service:
    /// repeat the flag or separate the URLs with commas; calls are spread
    /// over them and move on from one that fails.
    #[arg(
        long,
        env = "BREACHCHECK_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ','
    )]
    server: Vec<String>,
    /// API key (bearer token).
    #[arg(long, env = "BREACHCHECK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Pin the server's public key (64 hex digits); a different key is an error.
    #[arg(long)]
    pin_key: Option<String>,
    /// Pin the index id (64 hex digits): the key, the layout and every
    /// bucket; a different index is an error.
    #[arg(long)]
    pin_index: Option<String>,
    /// Remember the first key each server shows in this file and refuse a
    /// changed one (like ssh's known_hosts). Default with --cache-dir:
    /// CACHE_DIR/known_keys.
    #[arg(long, env = "BREACHCHECK_TRUST_FILE")]
    trust_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for https:// servers.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Seconds a call may take (a bucket download: plus its bytes at 2 Mbit/s).
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Seconds of silence from the server within a call before giving up.
    #[arg(long, default_value_t = 30.0)]
    idle_timeout: f64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check numbers (arguments, --file, or stdin with --file -).
    Check {
        /// Numbers to check.
        numbers: Vec<String>,
        /// Read numbers from a file, one per line (`-` for stdin); UTF-8
        /// (with or without a byte-order mark) or UTF-16.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
        /// Region for numbers without a country code.
        #[arg(long, default_value = "CN")]
        default_region: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Prefix bits j sent per number (default min(k, 14); 0 downloads the
        /// whole index and reveals nothing).
        #[arg(long)]
        prefix_bits: Option<u32>,
        /// The most prefix bits to send if the server requires more than
        /// --prefix-bits (default: --prefix-bits, else 14). A server whose
        /// floor is higher is refused before anything is sent.
        #[arg(long)]
        max_prefix_bits: Option<u32>,
        /// Keep downloaded buckets here, keyed by index id.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Zero leakage: fetch every bucket by PIR (the server must run with
        /// --pir), so the server learns nothing about which numbers are
        /// checked; the whole index is downloaded instead when smaller.
        #[arg(long, conflicts_with_all = ["prefix_bits", "max_prefix_bits"])]
        pir: bool,
        /// Evaluate batches in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// The longest wait, in seconds, for the server's evaluation rate to
        /// refill; a longer one (a daily cap) is an error.
        #[arg(long, default_value_t = 120)]
        max_wait: u64,
    },
    /// Describe the server's index.
    Info {
        #[command(flatten)]
        conn: Conn,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never into a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // Server messages are in there: no escape sequences reach the terminal.
            eprintln!("error: {}", escape_controls(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

fn hex32(s: &str, flag: &str) -> anyhow::Result<[u8; 32]> {
    let mut v = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut v)
        .with_context(|| format!("{flag} must be 64 hex digits"))?;
    Ok(v)
}

fn seconds(s: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds"))
}

fn builder(conn: &Conn, cache_dir: Option<&PathBuf>) -> anyhow::Result<ClientBuilder> {
    let (first, replicas) = conn
        .server
        .split_first()
        .context("--server needs at least one URL")?;
    let mut b = Client::builder(first.clone())
        .timeout(seconds(conn.timeout, "--timeout")?)
        .idle_timeout(seconds(conn.idle_timeout, "--idle-timeout")?);
    for r in replicas {
        b = b.replica(r.clone());
    }
    if let Some(k) = &conn.api_key {
        b = b.api_key(k.clone());
    }
    if let Some(k) = &conn.pin_key {
        b = b.pin_key(hex32(k, "--pin-key")?);
    }
    if let Some(id) = &conn.pin_index {
        b = b.pin_index(hex32(id, "--pin-index")?);
    }
    match (&conn.trust_file, cache_dir) {
        (Some(f), _) => b = b.trust_file(f),
        (None, Some(d)) => b = b.trust_file(d.join("known_keys")),
        (None, None) => {}
    }
    if let Some(ca) = &conn.ca_cert {
        b = b.ca_pem(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?);
    }
    Ok(b)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Info { conn, json } => {
            let client = builder(&conn, None)?.connect().await?;
            let info = client.info();
            let pk = breachcheck_proto::PublicKey::from_bytes(&info.public_key)?;
            if json {
                let v = serde_json::json!({
                    "suite": info.suite,
                    "mode": info.mode,
                    "public_key": hex::encode(&info.public_key),
                    "public_key_fingerprint": pk.fingerprint(),
                    "index_id": hex::encode(&info.index_id),
                    "entry_count": info.entry_count,
                    "bucket_bits": info.bucket_bits,
                    "fingerprint_bits": info.fingerprint_bits,
                    "max_batch": info.max_batch,
                    "min_prefix_bits": info.min_prefix_bits,
                    "breaches": info.breaches.iter().map(|b| serde_json::json!({
                        "id": b.id, "name": b.name, "date": b.date,
                        "description": b.description, "data_classes": b.data_classes,
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                output::info_text(&conn.server.join(","), &info, &pk.fingerprint());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check {
            numbers,
            file,
            conn,
            default_region,
            format,
            prefix_bits,
            max_prefix_bits,
            cache_dir,
            pir,
            concurrency,
            max_wait,
        } => {
            let mut b = builder(&conn, cache_dir.as_ref())?
                .default_region(&default_region)
                .concurrency(concurrency)
                .max_quota_wait(Duration::from_secs(max_wait))
                .on_progress(|p| {
                    if let Progress::QuotaWait { wait } = p {
                        eprintln!(
                            "waiting {} s for the server's evaluation rate limit to refill (no quota is lost)",
                            wait.as_secs().max(1)
                        );
                    }
                });
            if let Some(j) = prefix_bits {
                b = b.prefix_bits(j);
            }
            if let Some(j) = max_prefix_bits {
                b = b.max_prefix_bits(j);
            }
            if let Some(d) = cache_dir {
                b = b.cache_dir(d);
            }
            let client = b.pir(pir).connect().await?;
            // Refused now, before any number is read or sent, if the
            // server's floor is above what the user allows (PIR sends no
            // prefix).
            if !pir {
                client.prefix_bits()?;
            }
            let (source, total) = numbers_source(numbers, file)?;
            output::check(client, source, format, total).await
        }
    }
}

/// The numbers to check: the arguments, then the lines of `file` (if any),
/// read by the same line reader as the index build (BOM, UTF-16, line cap).
#[allow(clippy::type_complexity)]
fn numbers_source(
    numbers: Vec<String>,
    file: Option<PathBuf>,
) -> anyhow::Result<(Box<dyn Iterator<Item = String> + Send>, Option<u64>)> {
    let Some(path) = file else {
        if numbers.is_empty() {
            anyhow::bail!("no numbers: give them as arguments or with --file");
        }
        let total = Some(numbers.len() as u64);
        return Ok((Box::new(numbers.into_iter()), total));
    };
    let reader: Box<dyn BufRead + Send> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    let lines = TextReader::new(reader)
        .split(b'\n')
        .map(move |line| match line {
            // Bytes that are not UTF-8 still make a row (an invalid one), so
            // line numbers stay right.
            Ok(bytes) => String::from_utf8_lossy(&bytes)
                .trim_end_matches('\r')
                .to_owned(),
            Err(e) => {
                eprintln!(
                    "error: reading {}: {e}",
                    escape_controls(&path.display().to_string())
                );
                std::process::exit(2);
            }
        });
    Ok((Box::new(numbers.into_iter().chain(lines)), None))
}
