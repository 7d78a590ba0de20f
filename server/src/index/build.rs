//! Building an index from leak dumps.
//!
//! Data flows one way: dump rows → canonical numbers → (partitioned by bucket
//! range, spilled to temporary files when over the memory limit) → sorted and
//! de-duplicated per partition, breach sets merged → `Evaluate(skS, x)` on all
//! cores → fingerprints and sealed labels → buckets padded to a common entry
//! count and byte length → one file, written to a temporary name, fsynced and
//! renamed.
//!
//! The output depends only on the key and the set of (number, breaches) pairs:
//! padding comes from a stream keyed by the secret key, and every sort is total.
//!
//! This file holds the options, the report and the orchestration, with
//! phases 1 (read, in `dump`) and 2 (de-duplicate and evaluate); phase 3 is in
//! `encode`, phase 4 in `write`, the working storage in `spill`.

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Instant;

use breachcheck_proto as proto;
use breachcheck_proto::{MAX_BUCKET_BITS, fingerprint_bits_for, seal_label, top_bits};
use breachcheck_proto::{PIR_INSTANCE_BYTES, PhoneNumber, PirShape, Region, ServerKey};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Result, ServerError, io_err};
use crate::index::dump::{Column, RowStats, read_numbers};
use crate::index::encode::{
    HIST_BITS, bucket_counts, choose_bucket_bits, choose_pir_bucket_bits, encode_buckets,
};
use crate::index::format::{BreachMeta, Header, MAX_BREACHES};
use crate::index::progress::{Progress, ProgressMode};
use crate::index::spill::{
    PART_BITS, Record, Spill, TempGuard, create_private_dir, remove_stale_temporaries,
};
use crate::index::write::write_index;

/// One input file and the breach (index into the breach table) it belongs to.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// The file, or `-` for stdin.
    pub path: PathBuf,
    /// Index of its breach in [`BuildOptions::breaches`].
    pub breach: usize,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The dumps.
    pub inputs: Vec<InputSpec>,
    /// Breach metadata, in label-bit order.
    pub breaches: Vec<BreachMeta>,
    /// Region for numbers written without a country code.
    pub default_region: Option<Region>,
    /// Which CSV/TSV column holds the numbers.
    pub column: Option<Column>,
    /// k, or `None` to choose it.
    pub bucket_bits: Option<u32>,
    /// Use `bucket_bits` even when its buckets hold fewer than
    /// [`MIN_MEAN_BUCKET_ENTRIES`] real entries on average
    /// (`--force-bucket-bits`).
    pub force_bucket_bits: bool,
    /// Choose k for PIR (`--pir`): at least 2^11 buckets, each with its
    /// proof within a PIR row (docs/PROTOCOL.md §10).
    pub pir: bool,
    /// Bytes of records to hold in memory before spilling to disk.
    pub memory_limit: u64,
    /// Where temporary files go (default: beside the output).
    pub temp_dir: Option<PathBuf>,
    /// How to report progress.
    pub progress: ProgressMode,
}

/// The end-of-build summary.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Path written.
    pub output: PathBuf,
    /// Row counts, invalid rows by reason, masked samples.
    pub rows: RowStats,
    /// Distinct numbers in the index.
    pub distinct: u64,
    /// Valid rows merged into an earlier number.
    pub duplicates_merged: u64,
    /// Buckets (`2^k`).
    pub buckets: u64,
    /// k.
    pub bucket_bits: u32,
    /// f.
    pub fingerprint_bits: u32,
    /// Entries per bucket after padding.
    pub bucket_entries: u32,
    /// Bytes per bucket payload.
    pub payload_len: u32,
    /// Bytes of the file.
    pub file_size: u64,
    /// File bytes per distinct number.
    pub bytes_per_entry: f64,
    /// Whether records were spilled to disk.
    pub spilled: bool,
    /// Instances per PIR row when `serve --pir` can serve the index
    /// (docs/PROTOCOL.md §10); `None` when it cannot.
    pub pir_instances: Option<usize>,
    /// Seconds, start to rename.
    pub wall_seconds: f64,
    /// Valid rows per second over the whole build.
    pub numbers_per_second: f64,
    /// Hex index id.
    pub index_id: String,
    /// Real (non-padding) entries per bucket: (lower bound, buckets). Kept
    /// in the report for the operator, never in the index file.
    pub bucket_histogram: std::collections::BTreeMap<u32, u64>,
    /// The process's peak resident memory so far, in bytes (`VmHWM` of
    /// `/proc/self/status`; `None` where that is not available).
    pub peak_memory_bytes: Option<u64>,
}

impl BuildReport {
    /// What `build-index` prints: pretty JSON if `json`, else the text.
    ///
    /// # Errors
    ///
    /// JSON serialization errors.
    pub fn render(&self, json: bool) -> serde_json::Result<String> {
        if json {
            Ok(serde_json::to_string_pretty(self)? + "\n")
        } else {
            Ok(self.to_string())
        }
    }
}

impl fmt::Display for BuildReport {
    /// The human summary `build-index` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self;
        writeln!(f, "index written: {}", r.output.display())?;
        writeln!(f, "  rows read          {}", r.rows.rows)?;
        writeln!(f, "  valid              {}", r.rows.valid)?;
        writeln!(f, "  invalid            {}", r.rows.invalid_total())?;
        for (reason, n) in &r.rows.invalid {
            let samples = r
                .rows
                .samples
                .get(reason)
                .map(|s| s.join(", "))
                .unwrap_or_default();
            if samples.is_empty() {
                writeln!(f, "    {reason:<22} {n}")?;
            } else {
                writeln!(f, "    {reason:<22} {n}  (e.g. {samples})")?;
            }
        }
        writeln!(f, "  distinct numbers   {}", r.distinct)?;
        writeln!(f, "  duplicates merged  {}", r.duplicates_merged)?;
        writeln!(
            f,
            "  buckets            {} (k = {})",
            r.buckets, r.bucket_bits
        )?;
        writeln!(f, "  entries per bucket {} (padded)", r.bucket_entries)?;
        writeln!(f, "  fingerprint bits   {}", r.fingerprint_bits)?;
        writeln!(
            f,
            "  file size          {} bytes ({:.3} bytes per entry)",
            r.file_size, r.bytes_per_entry
        )?;
        writeln!(f, "  spilled to disk    {}", r.spilled)?;
        match r.pir_instances {
            Some(i) => writeln!(
                f,
                "  PIR rows           {} of {i} instance(s) ({} bytes each)",
                r.buckets,
                i * PIR_INSTANCE_BYTES
            )?,
            None => writeln!(
                f,
                "  PIR rows           none (build with --pir to serve PIR)"
            )?,
        }
        if let Some(m) = r.peak_memory_bytes {
            writeln!(
                f,
                "  peak memory        {:.1} MiB",
                m as f64 / f64::from(1 << 20)
            )?;
        }
        writeln!(
            f,
            "  wall time          {:.2} s ({:.0} numbers/s)",
            r.wall_seconds, r.numbers_per_second
        )?;
        writeln!(f, "  index id           {}", r.index_id)?;
        writeln!(
            f,
            "  real entries per bucket (histogram, not stored in the index):"
        )?;
        for (lo, n) in &r.bucket_histogram {
            writeln!(f, "    >= {lo:<8} {n}")?;
        }
        Ok(())
    }
}

/// Builds an index at `out` from `opts`, with `key`.
///
/// # Errors
///
/// I/O errors, unreadable inputs, or a dump with no valid number. Invalid rows
/// are counted, never fatal.
pub fn build_index(key: &ServerKey, out: &Path, opts: &BuildOptions) -> Result<BuildReport> {
    let started = Instant::now();
    if opts.breaches.is_empty() || opts.breaches.len() > MAX_BREACHES {
        return Err(ServerError::Input(format!(
            "an index needs 1 to {MAX_BREACHES} breaches, got {}",
            opts.breaches.len()
        )));
    }
    if let Some(k) = opts.bucket_bits
        && k > MAX_BUCKET_BITS
    {
        return Err(ServerError::Input(format!(
            "--bucket-bits must be at most {MAX_BUCKET_BITS}"
        )));
    }
    let out_dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = out
        .file_name()
        .ok_or_else(|| ServerError::Input("output path has no file name".into()))?
        .to_string_lossy()
        .into_owned();
    let temp_root = opts.temp_dir.clone().unwrap_or_else(|| out_dir.to_owned());
    remove_stale_temporaries(&temp_root, out_dir, &file_name);
    let work = TempGuard::new(temp_root.join(format!(".{file_name}.build-{}", std::process::id())));
    create_private_dir(work.path())?;

    let (raw, rows) = read_inputs(opts, work.path())?;
    // Distinct numbers are at most the valid rows: refuse a sparse layout
    // now if even those are too few, before the costly evaluation.
    check_bucket_bits(opts, rows.valid, false)?;
    let label_width = if opts.breaches.len() <= 1 {
        0
    } else {
        opts.breaches.len().div_ceil(8) as u8
    };
    let mut ev = evaluate_partitions(key, opts, work.path(), raw, label_width, rows.valid)?;
    check_bucket_bits(opts, ev.distinct, true)?;

    // The layout: k, padded entries per bucket P, fingerprint bits f.
    let k = match (opts.bucket_bits, opts.pir) {
        (Some(k), _) => k,
        (None, false) => choose_bucket_bits(&ev.hist, ev.distinct),
        (None, true) => {
            let k = choose_pir_bucket_bits(&ev.hist, label_width);
            if ev.distinct < MIN_MEAN_BUCKET_ENTRIES << k {
                return Err(ServerError::Input(format!(
                    "{} numbers are too few for a PIR index: its 2^{k} buckets would hold fewer \
                     than {MIN_MEAN_BUCKET_ENTRIES} entries on average (give --bucket-bits {k} \
                     --force-bucket-bits to build it anyway)",
                    ev.distinct
                )));
            }
            k
        }
    };
    let counts = bucket_counts(&ev.hist, k, &mut ev.spill)?;
    let p = counts.iter().copied().max().unwrap_or(0).max(1);
    let header = Header {
        mode: 1,
        bucket_bits: k,
        fingerprint_bits: fingerprint_bits_for(p),
        label_width,
        bucket_entries: p,
        entry_count: ev.distinct,
        payload_len: 0,
        public_key: key.public_key().to_bytes(),
        bucket_root: [0; 32],
        index_id: [0; 32],
        breaches: opts.breaches.clone(),
    };
    let padding_key = blake3::derive_key("breachcheck v1 padding", &*key.to_secret_bytes());
    let (payloads, lens) = encode_buckets(
        opts.progress,
        work.path(),
        &mut ev.spill,
        &header,
        &padding_key,
    )?;
    let tmp_out = TempGuard::new(out_dir.join(format!(".{file_name}.tmp-{}", std::process::id())));
    let (header, file_size) = write_index(tmp_out.path(), header, &lens, &payloads)?;
    let pir = PirShape::new(k, header.payload_len);
    if opts.pir
        && let Err(e) = &pir
    {
        return Err(ServerError::Input(format!(
            "the index cannot be served by PIR: {e}; nothing was written (try another --bucket-bits)"
        )));
    }
    fs::rename(tmp_out.path(), out).map_err(io_err(out))?;
    if let Ok(d) = File::open(out_dir) {
        let _ = d.sync_all();
    }
    let wall = started.elapsed().as_secs_f64();
    let distinct = ev.distinct;
    Ok(BuildReport {
        output: out.to_owned(),
        duplicates_merged: rows.valid - distinct,
        rows,
        distinct,
        buckets: 1u64 << k,
        bucket_bits: k,
        fingerprint_bits: header.fingerprint_bits,
        bucket_entries: p,
        payload_len: lens.iter().copied().max().unwrap_or(0),
        file_size,
        bytes_per_entry: file_size as f64 / distinct as f64,
        spilled: ev.spilled,
        pir_instances: pir.ok().map(|s| s.instances),
        wall_seconds: wall,
        numbers_per_second: distinct as f64 / wall.max(1e-9),
        index_id: hex::encode(header.index_id),
        bucket_histogram: size_histogram(&counts),
        peak_memory_bytes: peak_memory_bytes(),
    })
}

/// The fewest real entries a bucket must hold on average under an explicit
/// `--bucket-bits` (unless `--force-bucket-bits`). Buckets of a handful of
/// numbers are mostly padding (the file grows several-fold), and their real
/// counts are what proves numbers absent offline if anything ever reveals
/// them (index format 1 stored them, #10); the automatic choice aims at
/// thousands.
pub const MIN_MEAN_BUCKET_ENTRIES: u64 = 256;

/// Refuses an explicit k whose buckets would hold fewer than
/// [`MIN_MEAN_BUCKET_ENTRIES`] of `numbers` on average, unless forced.
/// `exact`: `numbers` is the distinct count, not its upper bound.
fn check_bucket_bits(opts: &BuildOptions, numbers: u64, exact: bool) -> Result<()> {
    let Some(k) = opts.bucket_bits else {
        return Ok(());
    };
    if k == 0 || opts.force_bucket_bits || numbers >= MIN_MEAN_BUCKET_ENTRIES << k {
        return Ok(());
    }
    let mean = numbers as f64 / (1u64 << k) as f64;
    let largest = (numbers / MIN_MEAN_BUCKET_ENTRIES)
        .checked_ilog2()
        .unwrap_or(0);
    // Before de-duplication only an upper bound is known.
    let (what, at_most, largest_is) = if exact {
        ("distinct numbers", "", "is")
    } else {
        ("valid rows", "at most ", "is at most")
    };
    Err(ServerError::Input(format!(
        "--bucket-bits {k} leaves {at_most}{mean:.1} real entries per bucket on average \
         ({numbers} {what} in 2^{k} buckets), fewer than {MIN_MEAN_BUCKET_ENTRIES}; \
         the largest allowed for this input {largest_is} --bucket-bits {largest} \
         (or leave it out to choose; --force-bucket-bits to use {k} anyway)"
    )))
}

/// Peak resident memory of this process (`VmHWM`), where `/proc` has it.
fn peak_memory_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Phase 1: reads every input into records partitioned by bucket range. A
/// quarter of the memory budget goes to these records (vectors grow by
/// doubling, so their capacity can reach twice their length).
fn read_inputs(opts: &BuildOptions, work: &Path) -> Result<(Spill, RowStats)> {
    let mut raw = Spill::new(work, "raw", opts.memory_limit / 4);
    let mut rows = RowStats::default();
    let reading = Progress::new(opts.progress, "reading", None);
    for input in &opts.inputs {
        let mask = 1u32 << input.breach;
        let mut err = None;
        let mut pending = 0u64;
        let stats = read_numbers(
            &input.path,
            opts.column.as_ref(),
            opts.default_region,
            |n| {
                let rec = pack_number(&n, mask);
                if let Err(e) = raw.push(top_bits(rec.bucket_value, PART_BITS) as usize, rec) {
                    err.get_or_insert(e);
                }
                pending += 1;
                if pending == 65536 {
                    reading.add(pending);
                    pending = 0;
                }
            },
        )?;
        reading.add(pending);
        if let Some(e) = err {
            return Err(e);
        }
        tracing::info!(file = %input.path.display(), rows = stats.rows, valid = stats.valid, invalid = stats.invalid_total(), "read input");
        rows.merge(stats);
    }
    reading.finish();
    if rows.valid == 0 {
        return Err(ServerError::Input(
            "no valid phone number in the input".into(),
        ));
    }
    Ok((raw, rows))
}

/// What phase 2 leaves: evaluated records, their histogram at `HIST_BITS`,
/// the distinct count, and whether anything went to disk.
struct Evaluated {
    spill: Spill,
    hist: Vec<u32>,
    distinct: u64,
    spilled: bool,
}

/// Phase 2: per partition, de-duplicates numbers (merging breach masks) and
/// evaluates them on all cores into (fingerprint, sealed label, bucket value).
fn evaluate_partitions(
    key: &ServerKey,
    opts: &BuildOptions,
    work: &Path,
    mut raw: Spill,
    label_width: u8,
    valid: u64,
) -> Result<Evaluated> {
    let mut spill = Spill::new(work, "eval", opts.memory_limit / 4);
    let mut hist = vec![0u32; 1 << HIST_BITS];
    let mut distinct = 0u64;
    let evaluating = Progress::new(opts.progress, "evaluating", Some(valid));
    for part in 0..(1usize << PART_BITS) {
        let mut recs = raw.take(part)?;
        if recs.is_empty() {
            continue;
        }
        recs.par_sort_unstable_by_key(|r| r.key);
        let mut uniq: Vec<Record> = Vec::with_capacity(recs.len());
        for r in recs {
            match uniq.last_mut() {
                Some(last) if last.key == r.key => {
                    last.word |= r.word;
                    evaluating.add(1);
                }
                _ => uniq.push(r),
            }
        }
        distinct += uniq.len() as u64;
        let entries: Vec<Vec<Record>> = uniq
            .par_chunks(1024)
            .map(|chunk| -> Result<Vec<Record>> {
                let inputs: Vec<String> = chunk.iter().map(|r| format!("+{}", r.key)).collect();
                let outputs = key.evaluate_batch(&inputs)?;
                evaluating.add(chunk.len() as u64);
                Ok(chunk
                    .iter()
                    .zip(&outputs)
                    .map(|(r, out)| evaluated_record(r, out, label_width))
                    .collect())
            })
            .collect::<Result<_>>()?;
        for e in entries.into_iter().flatten() {
            hist[top_bits(e.bucket_value, HIST_BITS) as usize] += 1;
            spill.push(part, e)?;
        }
    }
    evaluating.finish();
    let spilled = raw.spilled() || spill.spilled();
    Ok(Evaluated {
        spill,
        hist,
        distinct,
        spilled,
    })
}

/// An evaluated record: the fingerprint (the output's first 8 bytes read
/// big-endian), the sealed breach mask, and the bucket value.
fn evaluated_record(r: &Record, out: &proto::Output, label_width: u8) -> Record {
    let mut label = [0u8; 4];
    if label_width > 0 {
        label = r.word.to_le_bytes();
        seal_label(out, &mut label[..usize::from(label_width)]);
    }
    Record {
        key: proto::fingerprint(out, 64),
        word: u32::from_le_bytes(label),
        bucket_value: r.bucket_value,
    }
}

/// A parsed number as a phase 1 record: its digits as an integer (E.164
/// never starts with 0, so this is lossless), its breach set, and its bucket
/// value.
fn pack_number(n: &PhoneNumber, mask: u32) -> Record {
    Record {
        key: n.as_str()[1..].parse().unwrap_or(0),
        word: mask,
        bucket_value: proto::bucket_value(n.as_bytes()),
    }
}

/// A default memory limit: half of physical memory, or 4 GiB if unknown.
pub fn default_memory_limit() -> u64 {
    let total = fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    total.map_or(4 << 30, |t| t / 2)
}

/// Parses sizes like `512M`, `4G`, `1048576`.
///
/// # Errors
///
/// A message if the text is not a size.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s:?}")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("not a size: {s:?}"))
}

/// Histogram of real-entry counts: (lower bound, buckets), 8 bins or fewer.
fn size_histogram(counts: &[u32]) -> std::collections::BTreeMap<u32, u64> {
    let max = counts.iter().copied().max().unwrap_or(0);
    let width = (max / 8).max(1);
    let mut h = std::collections::BTreeMap::new();
    for &c in counts {
        *h.entry(c / width * width).or_insert(0u64) += 1;
    }
    h
}
