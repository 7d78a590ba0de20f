//! `breachcheck`: check phone numbers against a breachcheck server, privately.
//!
//! Exit codes: 0 none of the numbers was found, 1 at least one was found,
//! 2 an error (nothing is reported as "not found" when in doubt).

use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use breachcheck_client::{CheckResult, Client, ClientBuilder};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "breachcheck",
    version,
    about = "Check whether phone numbers are in a leaked corpus, without revealing them"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Conn {
    /// Server URL (http:// or https://).
    #[arg(
        long,
        env = "BREACHCHECK_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// API key (bearer token).
    #[arg(long, env = "BREACHCHECK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Pin the server's public key (64 hex digits); a different key is an error.
    #[arg(long)]
    pin_key: Option<String>,
    /// CA certificate (PEM) to trust for https:// servers.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check numbers (arguments, --file, or stdin with --file -).
    Check {
        /// Numbers to check.
        numbers: Vec<String>,
        /// Read numbers from a file, one per line (`-` for stdin).
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
        /// Keep downloaded buckets here, keyed by index id.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Evaluate batches in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A human table.
    Table,
    /// One JSON object per input.
    Jsonl,
    /// CSV with a header.
    Csv,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
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
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn builder(conn: &Conn) -> anyhow::Result<ClientBuilder> {
    let mut b = Client::builder(conn.server.clone());
    if let Some(k) = &conn.api_key {
        b = b.api_key(k.clone());
    }
    if let Some(hexkey) = &conn.pin_key {
        let mut key = [0u8; 32];
        hex::decode_to_slice(hexkey.trim(), &mut key).context("--pin-key must be 64 hex digits")?;
        b = b.pin_key(key);
    }
    if let Some(ca) = &conn.ca_cert {
        b = b.ca_pem(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?);
    }
    Ok(b)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Info { conn, json } => {
            let client = builder(&conn)?.connect().await?;
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
                println!("server           {}", conn.server);
                println!("entries          {}", info.entry_count);
                println!(
                    "public key       {} (fingerprint {})",
                    hex::encode(&info.public_key),
                    pk.fingerprint()
                );
                println!("index id         {}", hex::encode(&info.index_id));
                println!("suite            {} (mode {})", info.suite, info.mode);
                println!("bucket bits k    {}", info.bucket_bits);
                println!("fingerprint bits {}", info.fingerprint_bits);
                println!("max batch        {}", info.max_batch);
                println!("min prefix bits  {}", info.min_prefix_bits);
                println!("breaches:");
                for b in &info.breaches {
                    println!(
                        "  {:<16} {:<20} {:<10} {}",
                        b.id,
                        b.name,
                        b.date,
                        b.data_classes.join(", ")
                    );
                }
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
            cache_dir,
            concurrency,
        } => {
            let mut b = builder(&conn)?
                .default_region(&default_region)
                .concurrency(concurrency);
            if let Some(j) = prefix_bits {
                b = b.prefix_bits(j);
            }
            if let Some(d) = cache_dir {
                b = b.cache_dir(d);
            }
            let client = b.connect().await?;
            let mut inputs: Vec<String> = numbers;
            let total_hint;
            let source: Box<dyn Iterator<Item = String> + Send> = match file {
                Some(path) => {
                    let reader: Box<dyn BufRead + Send> = if path.as_os_str() == "-" {
                        Box::new(std::io::BufReader::new(std::io::stdin()))
                    } else {
                        Box::new(std::io::BufReader::new(
                            std::fs::File::open(&path)
                                .with_context(|| format!("opening {}", path.display()))?,
                        ))
                    };
                    total_hint = None;
                    let args = std::mem::take(&mut inputs);
                    Box::new(args.into_iter().chain(reader.split(b'\n').map(move |line| {
                        match line {
                            // Bytes that are not UTF-8 still make a row (an
                            // invalid one), so line numbers stay right.
                            Ok(bytes) => String::from_utf8_lossy(&bytes)
                                .trim_end_matches('\r')
                                .to_owned(),
                            Err(e) => {
                                eprintln!("error: reading {}: {e}", path.display());
                                std::process::exit(2);
                            }
                        }
                    })))
                }
                None => {
                    if inputs.is_empty() {
                        anyhow::bail!("no numbers: give them as arguments or with --file");
                    }
                    total_hint = Some(inputs.len() as u64);
                    Box::new(std::mem::take(&mut inputs).into_iter())
                }
            };
            check(client, source, format, total_hint).await
        }
    }
}

async fn check(
    client: Client,
    source: Box<dyn Iterator<Item = String> + Send>,
    format: Format,
    total: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let bar = (std::io::stderr().is_terminal()).then(|| {
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        if let Ok(s) =
            indicatif::ProgressStyle::with_template("{spinner} {pos} checked {per_sec} {elapsed}")
        {
            bar.set_style(s);
        }
        bar
    });
    let mut rx = client.check_stream(source);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let (mut checked, mut found, mut invalid) = (0u64, 0u64, 0u64);
    let mut invalid_lines: Vec<(u64, String)> = Vec::new();
    if format == Format::Csv {
        writeln!(out, "input,number,found,breaches,error")?;
    }
    if format == Format::Table {
        writeln!(
            out,
            "{:<6} {:<24} {:<16} {:<9} breaches / error",
            "line", "input", "number", "result"
        )?;
    }
    while let Some(r) = rx.recv().await {
        let r = r?;
        checked += 1;
        if r.found {
            found += 1;
        }
        if r.error.is_some() {
            invalid += 1;
            if invalid_lines.len() < 10 {
                invalid_lines.push((checked, r.error.clone().unwrap_or_default()));
            }
        }
        write_result(&mut out, format, checked, &r)?;
        if let Some(b) = &bar
            && checked % 1024 == 0
        {
            b.set_position(checked);
        }
    }
    out.flush()?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (j, candidates) = client.privacy_cost();
    eprintln!(
        "checked {checked}, found {found}, not found {}, invalid {invalid}",
        checked - found - invalid
    );
    for (line, why) in &invalid_lines {
        eprintln!("  invalid number on line {line}: {why}");
    }
    if j == 0 {
        eprintln!(
            "privacy: the whole index was downloaded; the server learned nothing about which numbers were checked"
        );
    } else {
        eprintln!(
            "privacy: the server learned {j} bits of a hash of each number: about {} candidates each",
            human(candidates)
        );
    }
    Ok(if found > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn human(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.1} billion", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1} million", x / 1e6)
    } else {
        format!("{x:.0}")
    }
}

fn write_result(
    out: &mut impl Write,
    format: Format,
    line: u64,
    r: &CheckResult,
) -> std::io::Result<()> {
    let breach_ids: Vec<&str> = r.breaches.iter().map(|b| b.id.as_str()).collect();
    match format {
        Format::Jsonl => {
            // A struct, not `json!`, so the keys keep the documented order.
            #[derive(serde::Serialize)]
            struct Row<'a> {
                input: &'a str,
                number: Option<&'a str>,
                found: bool,
                breaches: &'a [&'a str],
                error: Option<&'a str>,
            }
            let row = Row {
                input: &r.input,
                number: r.number.as_deref(),
                found: r.found,
                breaches: &breach_ids,
                error: r.error.as_deref(),
            };
            let line = serde_json::to_string(&row).map_err(std::io::Error::other)?;
            writeln!(out, "{line}")
        }
        Format::Csv => writeln!(
            out,
            "{},{},{},{},{}",
            csv_field(&r.input),
            r.number.as_deref().unwrap_or(""),
            r.found,
            csv_field(&breach_ids.join(";")),
            csv_field(r.error.as_deref().unwrap_or(""))
        ),
        Format::Table => {
            let result = match (&r.error, r.found) {
                (Some(_), _) => "INVALID",
                (None, true) => "FOUND",
                (None, false) => "not found",
            };
            let detail = r.error.clone().unwrap_or_else(|| breach_ids.join(", "));
            writeln!(
                out,
                "{line:<6} {:<24} {:<16} {result:<9} {detail}",
                truncate(&r.input, 24),
                r.number.as_deref().unwrap_or("-")
            )
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
