//! The `check` command's output: rows in three formats, the progress bar and
//! the summary on stderr.
//!
//! Human-readable text (the table, the summary, `info`) passes everything a
//! server or an input file supplied through [`escape_controls`], so neither
//! can send terminal escape sequences to the user's screen. JSON Lines and
//! CSV stay exact: their quoting is unambiguous, and programs read them.

use std::io::{BufWriter, IsTerminal, Write};
use std::process::ExitCode;

use breachcheck_client::{
    CheckResult, Client, escape_controls, pir_privacy_statement, privacy_statement,
};
use clap::ValueEnum;

/// Output format of `check`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// A human table.
    Table,
    /// One JSON object per input.
    Jsonl,
    /// CSV with a header.
    Csv,
}

/// Counts for the summary.
#[derive(Default)]
struct Counts {
    checked: u64,
    found: u64,
    invalid: u64,
    invalid_lines: Vec<(u64, String)>,
}

/// Streams the check of `source` to stdout in `format`, then the summary to
/// stderr. Exit code 1 if a number was found, 0 if none.
///
/// # Errors
///
/// The check's error (after the rows it answered), or an output error.
pub(crate) async fn check(
    client: Client,
    source: Box<dyn Iterator<Item = String> + Send>,
    format: Format,
    total: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let bar = std::io::stderr().is_terminal().then(|| {
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
    let mut n = Counts::default();
    match format {
        Format::Csv => writeln!(out, "input,number,found,breaches,error")?,
        Format::Table => writeln!(
            out,
            "{:<6} {:<24} {:<16} {:<9} breaches / error",
            "line", "input", "number", "result"
        )?,
        Format::Jsonl => {}
    }
    while let Some(r) = rx.recv().await {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                out.flush()?;
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                if n.checked > 0 {
                    eprintln!(
                        "stopped after {} inputs: the rows above are answered; the rest (from input {}) is not",
                        n.checked,
                        n.checked + 1
                    );
                }
                return Err(e.into());
            }
        };
        n.checked += 1;
        if r.found {
            n.found += 1;
        }
        if let Some(why) = &r.error {
            n.invalid += 1;
            if n.invalid_lines.len() < 10 {
                n.invalid_lines.push((n.checked, why.clone()));
            }
        }
        write_result(&mut out, format, n.checked, &r)?;
        if let Some(b) = &bar
            && n.checked % 1024 == 0
        {
            b.set_position(n.checked);
        }
    }
    out.flush()?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    summary(&client, &n);
    Ok(if n.found > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The summary on stderr: counts, invalid lines, the key and index the
/// answers are under, and what the server learned.
fn summary(client: &Client, n: &Counts) {
    eprintln!(
        "checked {}, found {}, not found {}, invalid {}",
        n.checked,
        n.found,
        n.checked - n.found - n.invalid,
        n.invalid
    );
    for (line, why) in &n.invalid_lines {
        eprintln!("  invalid number on line {line}: {}", escape_controls(why));
    }
    let info = client.info();
    let key = breachcheck_proto::PublicKey::from_bytes(&info.public_key)
        .map(|k| k.fingerprint())
        .unwrap_or_default();
    let trust = match client.trust_file() {
        Some(f) if client.trusted_on_first_use() => {
            format!(" (first use: recorded in {})", f.display())
        }
        Some(f) => format!(" (as recorded in {})", f.display()),
        None => String::new(),
    };
    eprintln!("key {key}{trust}");
    eprintln!("index {}", hex::encode(&info.index_id));
    let privacy = match client.pir_queries() {
        Some(queries) => pir_privacy_statement(queries, client.prefix_bits_sent().is_some()),
        None => privacy_statement(client.prefix_bits_sent()),
    };
    eprintln!("privacy: {privacy}");
}

/// One row. `found` is null (JSON) or empty (CSV) for an input that is not
/// a number: it was not checked.
fn write_result(
    out: &mut impl Write,
    format: Format,
    line: u64,
    r: &CheckResult,
) -> std::io::Result<()> {
    let breach_ids: Vec<&str> = r.breaches.iter().map(|b| b.id.as_str()).collect();
    let found = r.error.is_none().then_some(r.found);
    match format {
        Format::Jsonl => {
            // A struct, not `json!`, so the keys keep the documented order.
            #[derive(serde::Serialize)]
            struct Row<'a> {
                input: &'a str,
                number: Option<&'a str>,
                found: Option<bool>,
                breaches: &'a [&'a str],
                error: Option<&'a str>,
            }
            let row = Row {
                input: &r.input,
                number: r.number.as_deref(),
                found,
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
            found.map(|f| f.to_string()).unwrap_or_default(),
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
                "{line:<6} {:<24} {:<16} {result:<9} {}",
                truncate(&escape_controls(&r.input), 24),
                r.number.as_deref().unwrap_or("-"),
                escape_controls(&detail)
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

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line
/// break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// `info` for people, every server-supplied string escaped.
pub(crate) fn info_text(server: &str, info: &breachcheck_client::IndexInfo, fingerprint: &str) {
    let e = |s: &str| escape_controls(s).into_owned();
    println!("server           {}", e(server));
    println!("entries          {}", info.entry_count);
    println!(
        "public key       {} (fingerprint {fingerprint})",
        hex::encode(&info.public_key)
    );
    println!("index id         {}", hex::encode(&info.index_id));
    println!("suite            {} (mode {})", e(&info.suite), info.mode);
    println!("bucket bits k    {}", info.bucket_bits);
    println!("fingerprint bits {}", info.fingerprint_bits);
    println!("max batch        {}", info.max_batch);
    println!("min prefix bits  {}", info.min_prefix_bits);
    println!("breaches:");
    for b in &info.breaches {
        let classes: Vec<String> = b.data_classes.iter().map(|c| e(c)).collect();
        println!(
            "  {:<16} {:<20} {:<10} {}",
            e(&b.id),
            e(&b.name),
            e(&b.date),
            classes.join(", ")
        );
        if !b.description.is_empty() {
            println!("    {}", e(&b.description));
        }
    }
}
