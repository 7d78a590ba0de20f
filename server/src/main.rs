//! `breachcheck-server`: keygen, build-index, inspect, gen-corpus, apikey,
//! serve, demo. Flags and dispatch only; the library does the work.

use std::path::PathBuf;
use std::process::ExitCode;

use breachcheck_server as server;
use breachcheck_server::{BuildOptions, Column, CorpusFormat, ProgressMode, Settings};
use clap::{Parser, Subcommand};

#[cfg(feature = "demo")]
mod demo;

#[derive(Parser)]
#[command(
    name = "breachcheck-server",
    version,
    long_version = breachcheck_proto::long_version(env!("CARGO_PKG_VERSION")),
    about = "Serve a leaked phone-number corpus for private membership checks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process: `Serve`'s many settings cost nothing boxed or not.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Write a new OPRF key file (mode 0600).
    Keygen(KeygenArgs),
    /// Build an index from leak dumps.
    BuildIndex(BuildArgs),
    /// Print an index's header, counts and bucket histogram.
    Inspect(InspectArgs),
    /// Serve an index over gRPC.
    Serve {
        /// TOML config file (see server/server.example.toml); flags and
        /// BREACHCHECK_* environment variables override it.
        #[arg(long, env = "BREACHCHECK_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Manage API keys.
    #[command(subcommand)]
    Apikey(ApikeyCmd),
    /// Generate a demo corpus and index (cached), serve it on 127.0.0.1, and
    /// check a few numbers through the real client.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Write a deterministic synthetic Weibo-like dump.
    GenCorpus(GenCorpusArgs),
}

#[derive(clap::Args)]
struct KeygenArgs {
    /// Where to write the key.
    #[arg(long)]
    out: PathBuf,
    /// Derive the key from this hex seed (reproducible; for tests only).
    #[arg(long)]
    seed: Option<String>,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// The index file.
    index: PathBuf,
    /// Hash the whole body and fail on corruption.
    #[arg(long)]
    verify: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ApikeyCmd {
    /// Print a fresh token and the config entry (its hash) to paste.
    New {
        /// A name for logs, metrics and quota accounting.
        #[arg(long)]
        name: String,
    },
}

#[cfg(feature = "demo")]
#[derive(clap::Args)]
struct DemoArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: std::net::SocketAddr,
    /// Rows in the synthetic corpus.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Where the demo key, dump and index are kept.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Stop after the self-check instead of serving.
    #[arg(long)]
    exit_after_check: bool,
}

#[derive(clap::Args)]
struct GenCorpusArgs {
    /// Output file (`-` for stdout).
    #[arg(long)]
    out: PathBuf,
    /// Rows to write.
    #[arg(long)]
    count: u64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output shape.
    #[arg(long, value_enum, default_value_t = CorpusFormat::Csv)]
    format: CorpusFormat,
    /// Also write every distinct valid number of the dump, canonical, one per line.
    #[arg(long)]
    members: Option<PathBuf>,
    /// Also write this many canonical CN numbers that are not in the dump.
    #[arg(long)]
    non_members: Option<PathBuf>,
    /// How many non-members to write.
    #[arg(long, default_value_t = 1000)]
    non_member_count: usize,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The OPRF key file.
    #[arg(long)]
    key: PathBuf,
    /// Where to write the index.
    #[arg(long)]
    out: PathBuf,
    /// Input dumps (`-` for stdin): lines, CSV or TSV, optionally gzip or zstd.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Region for numbers without a country code (ISO code, e.g. CN).
    #[arg(long, default_value = "CN")]
    default_region: String,
    /// CSV/TSV column with the numbers: a header name or a 1-based number.
    #[arg(long)]
    column: Option<Column>,
    /// The breach id, for a single-breach index.
    #[arg(long, conflicts_with = "breaches")]
    breach: Option<String>,
    /// A TOML file of breaches (`[[breach]]` with id, name, date,
    /// description, data_classes, files).
    #[arg(long)]
    breaches: Option<PathBuf>,
    /// Bucket bits k (default: chosen for a few thousand entries per bucket).
    /// A k that leaves fewer than 256 real entries per bucket on average is
    /// refused.
    #[arg(long)]
    bucket_bits: Option<u32>,
    /// Use --bucket-bits even if buckets hold fewer than 256 entries on average.
    #[arg(long, requires = "bucket_bits")]
    force_bucket_bits: bool,
    /// Choose bucket bits for PIR lookups (serve --pir): at least 2^11
    /// buckets, each with its Merkle proof within a PIR row.
    #[arg(long)]
    pir: bool,
    /// Memory for records before spilling to disk (e.g. 8G, 512M).
    #[arg(long, value_parser = server::parse_size)]
    memory_limit: Option<u64>,
    /// Directory for temporary files (default: beside the output).
    #[arg(long)]
    temp_dir: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Load a key file that its group or other users may read (with a
    /// warning) instead of refusing it; `chmod 600` it instead.
    #[arg(long)]
    allow_insecure_key_mode: bool,
    /// Overwrite an existing index.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = log.with_writer(std::io::stderr).try_init();
    run(cli).unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Keygen(a) => {
            let k = *server::keygen(&a.out, a.seed.as_deref(), a.force)?.public_key();
            println!("wrote {} (mode 0600)", a.out.display());
            println!("public key:  {}", hex::encode(k.as_bytes()));
            println!("fingerprint: {}", k.fingerprint());
        }
        Cmd::BuildIndex(a) => {
            if a.out.exists() && !a.force {
                return Err(server::ServerError::Exists(a.out).into());
            }
            let region = server::parse_region(&a.default_region)?;
            let key_mode = server::InsecureKeyMode::allow_if(a.allow_insecure_key_mode);
            let key = server::load_key_with(&a.key, key_mode)?;
            let (breaches, inputs) =
                server::plan_inputs(&a.inputs, a.breaches.as_deref(), a.breach.as_deref())?;
            server::remove_temporaries_on_interrupt();
            let opts = BuildOptions {
                inputs,
                breaches,
                default_region: Some(region),
                column: a.column,
                bucket_bits: a.bucket_bits,
                force_bucket_bits: a.force_bucket_bits,
                pir: a.pir,
                memory_limit: a.memory_limit.unwrap_or_else(server::default_memory_limit),
                temp_dir: a.temp_dir,
                progress: ProgressMode::for_stderr(a.json),
            };
            let report = server::build_index(&key, &a.out, &opts)?;
            print!("{}", report.render(a.json)?);
        }
        Cmd::Inspect(a) => {
            let report = server::inspect(&a.index, a.verify)?;
            print!("{}", report.render(a.json)?);
            return Ok(ExitCode::from(report.exit_code()));
        }
        Cmd::Serve { config, settings } => {
            let config = settings.over_file(config.as_deref())?;
            tokio::runtime::Runtime::new()?.block_on(async {
                let bound = server::bind(config).await?;
                // Line-buffered: the line is out before the first call is taken.
                println!("breachcheck-server listening on {}", bound.local_addr());
                anyhow::Ok(bound.run(server::shutdown_signal()).await?)
            })?;
        }
        Cmd::Apikey(ApikeyCmd::New { name }) => {
            let (token, entry) = server::new_api_key(&name);
            let how = "token (give this to the client; it is not stored anywhere)";
            print!("{how}:\n  {token}\n\nconfig entry (paste into server.toml):\n{entry}");
        }
        #[cfg(feature = "demo")]
        Cmd::Demo(a) => {
            let demo = demo::run(a.listen, a.count, a.cache_dir, a.exit_after_check);
            tokio::runtime::Runtime::new()?.block_on(demo)?;
        }
        Cmd::GenCorpus(a) => {
            let (members, others) = (a.members.as_deref(), a.non_members.as_deref());
            let others = others.map(|p| (p, a.non_member_count));
            let s = server::write_corpus(&a.out, a.count, a.seed, a.format, members, others)?;
            let (rows, valid, n) = (s.rows, s.valid, s.distinct);
            eprintln!("wrote {rows} rows ({valid} valid, {n} distinct numbers)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
