//! `breachcheck-server`: keygen, build-index, inspect, gen-corpus, serve, demo.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use breachcheck_proto::Region;
use breachcheck_server::corpus::{self, CorpusFormat};
use breachcheck_server::index::{self, BreachMeta, BuildOptions, Index, InputSpec, ProgressMode};
use breachcheck_server::input::Column;
use breachcheck_server::key;
use clap::{Parser, Subcommand};

mod demo;

#[derive(Parser)]
#[command(
    name = "breachcheck-server",
    version,
    about = "Serve a leaked phone-number corpus for private membership checks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a new OPRF key file (mode 0600).
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
        /// Derive the key from this hex seed (reproducible; for tests only).
        #[arg(long)]
        seed: Option<String>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Build an index from leak dumps.
    BuildIndex(BuildArgs),
    /// Print an index's header, counts and bucket histogram.
    Inspect {
        /// The index file.
        index: PathBuf,
        /// Hash the whole body and fail on corruption.
        #[arg(long)]
        verify: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve an index over gRPC.
    Serve(ServeArgs),
    /// Manage API keys.
    Apikey {
        #[command(subcommand)]
        cmd: ApikeyCmd,
    },
    /// Generate a demo corpus and index (cached), serve it on 127.0.0.1, and
    /// check a few numbers through the real client.
    Demo {
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
    },
    /// Write a deterministic synthetic Weibo-like dump.
    GenCorpus {
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
    },
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

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file (see server/server.example.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The index file.
    #[arg(long)]
    index: Option<PathBuf>,
    /// The OPRF key file the index was built with.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Listen address (default 127.0.0.1:50051; port 0 picks a free one).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// TLS certificate chain (PEM).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Serve Prometheus metrics on this address.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Most elements per Evaluate.
    #[arg(long)]
    max_batch: Option<u32>,
    /// Floor on GetBuckets prefix bits.
    #[arg(long)]
    min_prefix_bits: Option<u32>,
    /// Accept calls without an API key, under a small shared quota.
    #[arg(long)]
    allow_anonymous: bool,
    /// Skip the full-body hash check at start and reload.
    #[arg(long)]
    no_verify: bool,
    /// Serve buckets only, without a key (Evaluate answers UNIMPLEMENTED).
    #[arg(long)]
    buckets_only: bool,
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
    #[arg(long)]
    bucket_bits: Option<u32>,
    /// Memory for records before spilling to disk (e.g. 8G, 512M).
    #[arg(long, value_parser = index::parse_size)]
    memory_limit: Option<u64>,
    /// Directory for temporary files (default: beside the output).
    #[arg(long)]
    temp_dir: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Overwrite an existing index.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Keygen { out, seed, force } => {
            let k = match seed {
                Some(s) => key::key_from_seed(&s)?,
                None => breachcheck_proto::ServerKey::random(
                    breachcheck_proto::Mode::Voprf,
                    &mut rand::rng(),
                ),
            };
            key::save_key(&out, &k, force)?;
            println!("wrote {} (mode 0600)", out.display());
            println!("public key:  {}", hex::encode(k.public_key().as_bytes()));
            println!("fingerprint: {}", k.public_key().fingerprint());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BuildIndex(args) => build(args),
        Cmd::Serve(args) => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(args))
        }
        Cmd::Demo {
            listen,
            count,
            cache_dir,
            exit_after_check,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(demo::run(listen, count, cache_dir, exit_after_check))
        }
        Cmd::Apikey {
            cmd: ApikeyCmd::New { name },
        } => {
            let (token, entry) = breachcheck_server::config::new_api_key(&name);
            println!("token (give this to the client; it is not stored anywhere):");
            println!("  {token}");
            println!();
            println!("config entry (paste into server.toml):");
            print!("{entry}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Inspect {
            index,
            verify,
            json,
        } => inspect(&index, verify, json),
        Cmd::GenCorpus {
            out,
            count,
            seed,
            format,
            members,
            non_members,
            non_member_count,
        } => {
            let mut w: Box<dyn Write> = if out.as_os_str() == "-" {
                Box::new(BufWriter::new(std::io::stdout().lock()))
            } else {
                Box::new(BufWriter::new(
                    File::create(&out).with_context(|| format!("creating {}", out.display()))?,
                ))
            };
            let (list, summary) = corpus::generate(&mut w, count, seed, format, &[])?;
            w.flush()?;
            if let Some(path) = members {
                write_lines(&path, &list)?;
            }
            if let Some(path) = non_members {
                write_lines(&path, &corpus::non_members(&list, non_member_count, seed))?;
            }
            eprintln!(
                "wrote {} rows ({} valid, {} distinct numbers)",
                summary.rows, summary.valid, summary.distinct
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_lines(path: &PathBuf, lines: &[String]) -> anyhow::Result<()> {
    let mut w =
        BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    for l in lines {
        writeln!(w, "{l}")?;
    }
    w.flush()?;
    Ok(())
}

fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    if args.out.exists() && !args.force {
        bail!(
            "{} already exists (use --force to overwrite)",
            args.out.display()
        );
    }
    let region = Region::parse(&args.default_region).with_context(|| {
        format!(
            "unknown --default-region {:?} (known: {})",
            args.default_region,
            Region::known().collect::<Vec<_>>().join(", ")
        )
    })?;
    let k = key::load_key(&args.key)?;
    let (breaches, inputs) = match (&args.breaches, &args.breach) {
        (Some(path), _) => {
            let entries = index::load_breaches(path)?;
            let inputs = index::assign_inputs(&args.inputs, &entries)?;
            (entries.into_iter().map(|e| e.meta).collect(), inputs)
        }
        (None, breach) => {
            let id = breach.clone().unwrap_or_else(|| "breach".into());
            let meta = BreachMeta {
                name: id.clone(),
                id,
                ..Default::default()
            };
            let inputs = args
                .inputs
                .iter()
                .map(|p| InputSpec {
                    path: p.clone(),
                    breach: 0,
                })
                .collect();
            (vec![meta], inputs)
        }
    };
    // Ctrl-C removes temporary files; kill -9 leaves them but never a partial index.
    std::thread::spawn(|| {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    index::cleanup_temporaries();
                    eprintln!("interrupted: temporary files removed, no index written");
                    std::process::exit(130);
                }
            });
        }
    });
    let opts = BuildOptions {
        inputs,
        breaches,
        default_region: Some(region),
        column: args.column,
        bucket_bits: args.bucket_bits,
        memory_limit: args
            .memory_limit
            .unwrap_or_else(index::default_memory_limit),
        temp_dir: args.temp_dir,
        progress: if std::io::stderr().is_terminal() && !args.json {
            ProgressMode::Bar
        } else {
            ProgressMode::Log
        },
    };
    let report = index::build_index(&k, &args.out, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let r = &report;
        println!("index written: {}", r.output.display());
        println!("  rows read          {}", r.rows.rows);
        println!("  valid              {}", r.rows.valid);
        println!("  invalid            {}", r.rows.invalid_total());
        for (reason, n) in &r.rows.invalid {
            let samples = r
                .rows
                .samples
                .get(reason)
                .map(|s| s.join(", "))
                .unwrap_or_default();
            println!("    {reason:<22} {n}  (e.g. {samples})");
        }
        println!("  distinct numbers   {}", r.distinct);
        println!("  duplicates merged  {}", r.duplicates_merged);
        println!("  buckets            {} (k = {})", r.buckets, r.bucket_bits);
        println!("  entries per bucket {} (padded)", r.bucket_entries);
        println!("  fingerprint bits   {}", r.fingerprint_bits);
        println!(
            "  file size          {} bytes ({:.3} bytes per entry)",
            r.file_size, r.bytes_per_entry
        );
        println!("  spilled to disk    {}", r.spilled);
        println!(
            "  wall time          {:.2} s ({:.0} numbers/s)",
            r.wall_seconds, r.numbers_per_second
        );
        println!("  index id           {}", r.index_id);
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(path: &PathBuf, verify: bool, json: bool) -> anyhow::Result<ExitCode> {
    let idx = Index::open(path)?;
    let h = idx.header();
    let counts: Vec<u32> = (0..h.bucket_count() as u32)
        .filter_map(|b| idx.dir_entry(b).map(|e| e.real_entries))
        .collect();
    let hist = index::size_histogram(&counts);
    let verified = if verify {
        Some(idx.verify().is_ok())
    } else {
        None
    };
    let payload_len = idx.dir_entry(0).map(|e| e.len).unwrap_or(0);
    if json {
        let v = serde_json::json!({
            "path": path,
            "format_version": index::VERSION,
            "suite": breachcheck_proto::SUITE,
            "mode": h.mode,
            "index_id": hex::encode(h.index_id),
            "public_key": hex::encode(h.public_key),
            "public_key_fingerprint": idx.public_key_fingerprint(),
            "bucket_bits": h.bucket_bits,
            "fingerprint_bits": h.fingerprint_bits,
            "label_width": h.label_width,
            "entry_count": h.entry_count,
            "bucket_entries": h.bucket_entries,
            "payload_len": payload_len,
            "file_size": idx.file_len(),
            "bytes_per_entry": idx.file_len() as f64 / h.entry_count.max(1) as f64,
            "bucket_histogram": hist,
            "breaches": h.breaches,
            "verified": verified,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("index            {}", path.display());
        println!("format version   {}", index::VERSION);
        println!(
            "suite            {} (mode {} = VOPRF)",
            breachcheck_proto::SUITE,
            h.mode
        );
        println!("index id         {}", hex::encode(h.index_id));
        println!(
            "public key       {} (fingerprint {})",
            hex::encode(h.public_key),
            idx.public_key_fingerprint()
        );
        println!("entries          {}", h.entry_count);
        println!(
            "buckets          {} (k = {})",
            h.bucket_count(),
            h.bucket_bits
        );
        println!(
            "per bucket       {} entries padded, {} bytes",
            h.bucket_entries, payload_len
        );
        println!("fingerprint bits {}", h.fingerprint_bits);
        println!(
            "labels           {}",
            if h.label_width == 0 {
                "none".to_string()
            } else {
                format!("{} bytes", h.label_width)
            }
        );
        println!(
            "file size        {} bytes ({:.3} bytes per entry)",
            idx.file_len(),
            idx.file_len() as f64 / h.entry_count.max(1) as f64
        );
        println!("breaches:");
        for b in &h.breaches {
            println!(
                "  {:<16} {} {} {}",
                b.id,
                b.name,
                b.date,
                b.data_classes.join("/")
            );
        }
        println!("real entries per bucket (histogram):");
        for (lo, n) in &hist {
            println!("  >= {lo:<8} {n}");
        }
        if let Some(ok) = verified {
            println!(
                "body hash        {}",
                if ok { "OK" } else { "MISMATCH (corrupted)" }
            );
        }
    }
    Ok(if verified == Some(false) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    use breachcheck_server::config::Config;
    use breachcheck_server::{AppState, Served};
    let mut config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(v) = args.index {
        config.index = Some(v);
    }
    if let Some(v) = args.key {
        config.key = Some(v);
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.tls_cert {
        config.tls_cert = Some(v);
    }
    if let Some(v) = args.tls_key {
        config.tls_key = Some(v);
    }
    if let Some(v) = args.client_ca {
        config.client_ca = Some(v);
    }
    if let Some(v) = args.metrics_listen {
        config.metrics_listen = Some(v);
    }
    if let Some(v) = args.max_batch {
        config.max_batch = v;
    }
    if let Some(v) = args.min_prefix_bits {
        config.min_prefix_bits = v;
    }
    if args.allow_anonymous {
        config.allow_anonymous = true;
    }
    if args.buckets_only {
        config.buckets_only = true;
    }
    config.validate()?;
    let index_path = config
        .index
        .clone()
        .context("no index: give --index or `index` in the config")?;
    // A bucket-only replica never reads the key, even if one is configured.
    let key_path = if config.buckets_only {
        None
    } else {
        Some(
            config
                .key
                .clone()
                .context("no key: give --key or `key` in the config (or --buckets-only)")?,
        )
    };
    let verify = !args.no_verify;
    let served = tokio::task::spawn_blocking({
        let (i, k) = (index_path.clone(), key_path.clone());
        move || match k {
            Some(k) => Served::load(&i, &k, verify),
            None => Served::load_buckets_only(&i, verify),
        }
    })
    .await??;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let identity = tonic::transport::Identity::from_pem(
                std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
                std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
            );
            let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
            if let Some(ca) = &config.client_ca {
                tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(
                    std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?,
                ));
            }
            Some(tls)
        }
        _ => None,
    };
    let h = served.index.header();
    tracing::info!(
        index = %index_path.display(),
        entries = h.entry_count,
        bucket_bits = h.bucket_bits,
        index_id = %hex::encode(h.index_id),
        public_key = %served.index.public_key_fingerprint(),
        buckets_only = served.key.is_none(),
        anonymous = config.allow_anonymous,
        api_keys = config.api_keys.len(),
        "index loaded"
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let state = std::sync::Arc::new(AppState::new(served, config.clone()));
    if let Some(m) = config.metrics_listen {
        let ml = tokio::net::TcpListener::bind(m)
            .await
            .with_context(|| format!("binding metrics {m}"))?;
        tracing::info!(addr = %ml.local_addr()?, "metrics on /metrics");
        tokio::spawn(breachcheck_server::metrics::serve_metrics(
            ml,
            state.metrics.clone(),
        ));
    }
    // SIGHUP: reload index and key; failures keep the old pair served.
    #[cfg(unix)]
    {
        let state = state.clone();
        let (i, k) = (index_path.clone(), key_path.clone());
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let (state, i, k) = (state.clone(), i.clone(), k.clone());
                let r = tokio::task::spawn_blocking(move || state.reload(&i, k.as_deref())).await;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "reload failed; still serving the previous index")
                    }
                    Err(e) => tracing::error!(error = %e, "reload task failed"),
                }
            }
        });
    }
    println!("breachcheck-server listening on {addr}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    breachcheck_server::serve(listener, state, tls, shutdown_signal()).await?;
    tracing::info!("shut down");
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested: draining in-flight calls");
}
