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

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use breachcheck_proto as proto;
use breachcheck_proto::{
    MAX_BUCKET_BITS, encode_payload, fingerprint_bits_for, seal_label, top_bits,
};
use breachcheck_proto::{PhoneNumber, Region, ServerKey};
use rayon::prelude::*;
use serde::Serialize;

use super::format::{BreachMeta, DIR_ENTRY_LEN, DirEntry, Header, MAX_BREACHES};
use crate::error::{Result, ServerError, io_err};
use crate::input::{Column, RowStats, read_numbers};

/// Partitions by the top bits of the bucket value: 256 ranges.
const PART_BITS: u32 = 8;
/// Histogram resolution for choosing k.
const HIST_BITS: u32 = 20;
/// Largest k chosen automatically.
const AUTO_MAX_BITS: u32 = HIST_BITS;
/// Bytes of one spilled record.
const REC: usize = 16;

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
    /// Bytes of records to hold in memory before spilling to disk.
    pub memory_limit: u64,
    /// Where temporary files go (default: beside the output).
    pub temp_dir: Option<PathBuf>,
    /// How to report progress.
    pub progress: ProgressMode,
}

/// How a build reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A progress bar on stderr.
    Bar,
    /// Periodic log lines.
    Log,
    /// Nothing.
    Quiet,
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
    /// Seconds, start to rename.
    pub wall_seconds: f64,
    /// Valid rows per second over the whole build.
    pub numbers_per_second: f64,
    /// Hex index id.
    pub index_id: String,
}

/// Temporary paths to remove if the process is interrupted (see `main`).
pub(super) static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes every registered temporary path (called from the Ctrl-C handler).
pub fn cleanup_temporaries() {
    if let Ok(paths) = CLEANUP.lock() {
        for p in paths.iter() {
            let _ = fs::remove_dir_all(p);
            let _ = fs::remove_file(p);
        }
    }
}

/// A temporary path that is removed on drop and on Ctrl-C.
struct TempGuard(PathBuf);

impl TempGuard {
    fn new(path: PathBuf) -> Self {
        if let Ok(mut v) = CLEANUP.lock() {
            v.push(path.clone());
        }
        TempGuard(path)
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
        let _ = fs::remove_file(&self.0);
        if let Ok(mut v) = CLEANUP.lock() {
            v.retain(|p| p != &self.0);
        }
    }
}

/// Records partitioned by bucket range, in memory until a budget is passed,
/// then appended to one temporary file per partition.
struct Spill {
    dir: PathBuf,
    name: &'static str,
    mem: Vec<Vec<[u8; REC]>>,
    files: Vec<Option<BufWriter<File>>>,
    in_mem: usize,
    budget: usize,
    spilled: bool,
}

impl Spill {
    fn new(dir: &Path, name: &'static str, budget_bytes: u64) -> Self {
        let parts = 1usize << PART_BITS;
        Spill {
            dir: dir.to_owned(),
            name,
            mem: vec![Vec::new(); parts],
            files: (0..parts).map(|_| None).collect(),
            in_mem: 0,
            budget: usize::try_from(budget_bytes / REC as u64)
                .unwrap_or(usize::MAX)
                .max(1024),
            spilled: false,
        }
    }

    fn path(&self, part: usize) -> PathBuf {
        self.dir.join(format!("{}-{part:03}", self.name))
    }

    fn push(&mut self, part: usize, rec: [u8; REC]) -> Result<()> {
        self.mem[part].push(rec);
        self.in_mem += 1;
        if self.in_mem >= self.budget {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        for part in 0..self.mem.len() {
            if self.mem[part].is_empty() {
                continue;
            }
            let path = self.path(part);
            if self.files[part].is_none() {
                let f = File::create(&path).map_err(io_err(&path))?;
                self.files[part] = Some(BufWriter::with_capacity(1 << 16, f));
            }
            if let Some(w) = self.files[part].as_mut() {
                for r in &self.mem[part] {
                    w.write_all(r).map_err(io_err(&path))?;
                }
            }
            self.mem[part] = Vec::new();
        }
        self.in_mem = 0;
        self.spilled = true;
        Ok(())
    }

    /// All records of one partition, from disk and memory.
    fn take(&mut self, part: usize) -> Result<Vec<[u8; REC]>> {
        let mut out = Vec::new();
        if let Some(mut w) = self.files[part].take() {
            let path = self.path(part);
            w.flush().map_err(io_err(&path))?;
            drop(w);
            let mut r = BufReader::new(File::open(&path).map_err(io_err(&path))?);
            let mut rec = [0u8; REC];
            loop {
                match r.read_exact(&mut rec) {
                    Ok(()) => out.push(rec),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
            let _ = fs::remove_file(&path);
        }
        out.append(&mut self.mem[part]);
        Ok(out)
    }
}

/// A parsed number: its digits as an integer (E.164 never starts with 0, so
/// this is lossless), its breach set, and its bucket value.
fn pack_number(n: &PhoneNumber, mask: u32) -> ([u8; REC], u32) {
    let digits: u64 = n.as_str()[1..].parse().unwrap_or(0);
    let bv = proto::bucket_value(n.as_bytes());
    let mut r = [0u8; REC];
    r[..8].copy_from_slice(&digits.to_le_bytes());
    r[8..12].copy_from_slice(&mask.to_le_bytes());
    r[12..].copy_from_slice(&bv.to_le_bytes());
    (r, bv)
}

fn u64_of(r: &[u8; REC], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&r[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_of(r: &[u8; REC], at: usize) -> u32 {
    u32::from_le_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]])
}

/// Progress reporting: an indicatif bar on a terminal, log lines otherwise.
struct Progress {
    mode: ProgressMode,
    bar: Option<indicatif::ProgressBar>,
    done: AtomicU64,
    last_log: Mutex<Instant>,
    what: &'static str,
    total: u64,
}

impl Progress {
    fn new(mode: ProgressMode, what: &'static str, total: Option<u64>) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = match total {
                Some(t) => indicatif::ProgressBar::new(t),
                None => indicatif::ProgressBar::new_spinner(),
            };
            let style = if total.is_some() {
                "{msg:>10} [{bar:40}] {pos}/{len} {per_sec} ETA {eta}"
            } else {
                "{msg:>10} {spinner} {pos} rows {per_sec}"
            };
            if let Ok(s) = indicatif::ProgressStyle::with_template(style) {
                bar.set_style(s.progress_chars("=> "));
            }
            bar.set_message(what);
            bar
        });
        Progress {
            mode,
            bar,
            done: AtomicU64::new(0),
            last_log: Mutex::new(Instant::now()),
            what,
            total: total.unwrap_or(0),
        }
    }

    fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else if self.mode == ProgressMode::Log
            && let Ok(mut last) = self.last_log.try_lock()
            && last.elapsed() >= Duration::from_secs(5)
        {
            *last = Instant::now();
            if self.total > 0 {
                tracing::info!(
                    stage = self.what,
                    done,
                    total = self.total,
                    "build progress"
                );
            } else {
                tracing::info!(stage = self.what, done, "build progress");
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
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
    let work = TempGuard::new(temp_root.join(format!(".{file_name}.build-{}", std::process::id())));
    fs::create_dir_all(&work.0).map_err(io_err(&work.0))?;

    let (raw, rows) = read_inputs(opts, &work.0)?;
    let label_width = if opts.breaches.len() <= 1 {
        0
    } else {
        opts.breaches.len().div_ceil(8) as u8
    };
    let mut ev = evaluate_partitions(key, opts, &work.0, raw, label_width, rows.valid)?;

    // The layout: k, padded entries per bucket P, fingerprint bits f.
    let k = opts
        .bucket_bits
        .unwrap_or_else(|| choose_bucket_bits(&ev.hist, ev.distinct));
    let counts = bucket_counts(&ev.hist, k, &mut ev.spill)?;
    let p = counts.iter().copied().max().unwrap_or(0).max(1);
    let header = Header {
        mode: 1,
        bucket_bits: k,
        fingerprint_bits: fingerprint_bits_for(p),
        label_width,
        bucket_entries: p,
        entry_count: ev.distinct,
        body_len: 0,
        public_key: key.public_key().to_bytes(),
        index_id: [0; 32],
        directory_hash: [0; 32],
        breaches: opts.breaches.clone(),
    };
    let padding_key = blake3::derive_key("breachcheck v1 padding", &*key.to_secret_bytes());
    let (payloads, lens) = encode_buckets(opts, &work.0, &mut ev.spill, &header, &padding_key)?;
    let tmp_out = TempGuard::new(out_dir.join(format!(".{file_name}.tmp-{}", std::process::id())));
    let (header, file_size) = write_index(&tmp_out.0, header, &counts, &lens, &payloads)?;
    fs::rename(&tmp_out.0, out).map_err(io_err(out))?;
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
        wall_seconds: wall,
        numbers_per_second: distinct as f64 / wall.max(1e-9),
        index_id: hex::encode(header.index_id),
    })
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
                let (rec, bv) = pack_number(&n, mask);
                if let Err(e) = raw.push(top_bits(bv, PART_BITS) as usize, rec) {
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
        recs.par_sort_unstable_by_key(|r| u64_of(r, 0));
        let mut uniq: Vec<[u8; REC]> = Vec::with_capacity(recs.len());
        for r in recs {
            match uniq.last_mut() {
                Some(last) if u64_of(last, 0) == u64_of(&r, 0) => {
                    let mask = u32_of(last, 8) | u32_of(&r, 8);
                    last[8..12].copy_from_slice(&mask.to_le_bytes());
                    evaluating.add(1);
                }
                _ => uniq.push(r),
            }
        }
        distinct += uniq.len() as u64;
        let entries: Vec<Vec<[u8; REC]>> = uniq
            .par_chunks(1024)
            .map(|chunk| -> Result<Vec<[u8; REC]>> {
                let inputs: Vec<String> =
                    chunk.iter().map(|r| format!("+{}", u64_of(r, 0))).collect();
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
            hist[top_bits(u32_of(&e, 12), HIST_BITS) as usize] += 1;
            spill.push(part, e)?;
        }
    }
    evaluating.finish();
    let spilled = raw.spilled || spill.spilled;
    Ok(Evaluated {
        spill,
        hist,
        distinct,
        spilled,
    })
}

/// An evaluated record: the fingerprint (the output's first 8 bytes read
/// big-endian), the sealed breach mask, and the bucket value.
fn evaluated_record(r: &[u8; REC], out: &breachcheck_proto::Output, label_width: u8) -> [u8; REC] {
    let mut label = [0u8; 4];
    if label_width > 0 {
        label = u32_of(r, 8).to_le_bytes();
        seal_label(out, &mut label[..usize::from(label_width)]);
    }
    let mut e = [0u8; REC];
    e[..8].copy_from_slice(&proto::fingerprint(out, 64).to_le_bytes());
    e[8..12].copy_from_slice(&label);
    e[12..].copy_from_slice(&r[12..16]);
    e
}

/// Phase 3: pads and encodes every bucket, unpadded in bytes, into a
/// temporary file; returns it with each payload's length.
fn encode_buckets(
    opts: &BuildOptions,
    work: &Path,
    spill: &mut Spill,
    h: &Header,
    padding_key: &[u8; 32],
) -> Result<(PathBuf, Vec<u32>)> {
    let k = h.bucket_bits;
    let path = work.join("payloads");
    let mut payloads = BufWriter::new(File::create(&path).map_err(io_err(&path))?);
    let mut lens = vec![0u32; 1 << k];
    let group_bits = k.min(PART_BITS);
    let parts_per_group = 1usize << (PART_BITS - group_bits);
    let encoding = Progress::new(opts.progress, "encoding", Some(1u64 << k));
    for group in 0..(1usize << group_bits) {
        let mut ents = Vec::new();
        for part in group * parts_per_group..(group + 1) * parts_per_group {
            ents.append(&mut spill.take(part)?);
        }
        let range = proto::buckets_under_prefix(group as u32, group_bits, k);
        let mut by_bucket: Vec<Vec<(u64, u32)>> = vec![Vec::new(); range.len()];
        for e in &ents {
            let b = top_bits(u32_of(e, 12), k) - range.start;
            by_bucket[b as usize].push((u64_of(e, 0), u32_of(e, 8)));
        }
        drop(ents);
        let encoded: Vec<Vec<u8>> = by_bucket
            .into_par_iter()
            .enumerate()
            .map(|(i, real)| {
                let b = range.start + i as u32;
                encode_bucket(
                    b,
                    real,
                    h.bucket_entries,
                    h.fingerprint_bits,
                    h.label_width,
                    padding_key,
                )
            })
            .collect::<std::result::Result<_, _>>()?;
        for (i, payload) in encoded.into_iter().enumerate() {
            lens[range.start as usize + i] = payload.len() as u32;
            payloads.write_all(&payload).map_err(io_err(&path))?;
            encoding.add(1);
        }
    }
    encoding.finish();
    payloads.flush().map_err(io_err(&path))?;
    Ok((path, lens))
}

/// Phase 4: writes a placeholder header, the directory and the payloads
/// padded to one length (hashing the body as it goes), then the real header,
/// and fsyncs. Returns the final header and the file size.
fn write_index(
    tmp: &Path,
    mut header: Header,
    counts: &[u32],
    lens: &[u32],
    payloads: &Path,
) -> Result<(Header, u64)> {
    let payload_len = lens.iter().copied().max().unwrap_or(0);
    let nb = lens.len();
    let dir_len = nb * DIR_ENTRY_LEN;
    header.body_len = dir_len as u64 + nb as u64 * u64::from(payload_len);
    let header_len = header.encode().len();
    let werr = || io_err(tmp);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(tmp).map_err(werr())?);
    w.write_all(&vec![0u8; header_len]).map_err(werr())?;
    let mut dir = Vec::with_capacity(dir_len);
    for (b, &real) in counts.iter().enumerate() {
        let e = DirEntry {
            offset: dir_len as u64 + b as u64 * u64::from(payload_len),
            len: payload_len,
            real_entries: real,
        };
        dir.extend_from_slice(&e.encode());
    }
    let mut body_hash = blake3::Hasher::new();
    body_hash.update(&dir);
    w.write_all(&dir).map_err(werr())?;
    let mut r = BufReader::new(File::open(payloads).map_err(io_err(payloads))?);
    let mut buf = vec![0u8; payload_len as usize];
    for &len in lens {
        buf.fill(0);
        r.read_exact(&mut buf[..len as usize])
            .map_err(io_err(payloads))?;
        body_hash.update(&buf);
        w.write_all(&buf).map_err(werr())?;
    }
    header.index_id = *body_hash.finalize().as_bytes();
    header.directory_hash = *blake3::hash(&dir).as_bytes();
    let mut file = w.into_inner().map_err(|e| werr()(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(werr())?;
    file.write_all(&header.encode()).map_err(werr())?;
    file.sync_all().map_err(werr())?;
    let size = file.metadata().map_err(werr())?.len();
    Ok((header, size))
}

/// Real entries per k-bucket, from the histogram when `k ≤ HIST_BITS`, else
/// by a pass over the evaluated records (which stay where they are).
fn bucket_counts(hist: &[u32], k: u32, spill: &mut Spill) -> Result<Vec<u32>> {
    if k <= HIST_BITS {
        let per = 1usize << (HIST_BITS - k);
        return Ok(hist.chunks(per).map(|c| c.iter().sum()).collect());
    }
    let mut counts = vec![0u32; 1 << k];
    for part in 0..(1usize << PART_BITS) {
        let recs = spill.take(part)?;
        for r in &recs {
            counts[top_bits(u32_of(r, 12), k) as usize] += 1;
        }
        for r in recs {
            spill.push(part, r)?;
        }
    }
    Ok(counts)
}

/// Chooses k: among the k whose mean bucket holds 1,024 to 16,384 entries ("a
/// few thousand"), the one with the smallest estimated file; 0 for a corpus
/// too small for any (under 1,024 numbers). The estimate is exact about
/// padding (from the histogram) and models a Golomb code at
/// `log2(2^f / P) + 1.5` bits per entry.
pub fn choose_bucket_bits(hist: &[u32], distinct: u64) -> u32 {
    let mut best: Option<(f64, u32)> = None;
    for k in 0..=AUTO_MAX_BITS {
        let mean = distinct as f64 / (1u64 << k) as f64;
        if !(1024.0..=16384.0).contains(&mean) {
            continue;
        }
        let per = 1usize << (HIST_BITS - k);
        let p = hist
            .chunks(per)
            .map(|c| c.iter().sum::<u32>())
            .max()
            .unwrap_or(0)
            .max(1);
        let f = fingerprint_bits_for(p);
        let bits = f64::from(f) - f64::from(p).log2() + 1.5;
        let size = (1u64 << k) as f64 * (f64::from(p) * bits / 8.0 + 32.0);
        if best.is_none_or(|(s, _)| size < s) {
            best = Some((size, k));
        }
    }
    best.map_or(0, |(_, k)| k)
}

/// Pads one bucket to `p` entries with keyed pseudo-random dummies and encodes it.
fn encode_bucket(
    b: u32,
    real: Vec<(u64, u32)>,
    p: u32,
    f: u32,
    label_width: u8,
    padding_key: &[u8; 32],
) -> std::result::Result<Vec<u8>, breachcheck_proto::ProtocolError> {
    let shift = 64 - f;
    let mut all: Vec<(u64, u32)> = real.into_iter().map(|(fp, l)| (fp >> shift, l)).collect();
    let missing = (p as usize).saturating_sub(all.len());
    if missing > 0 {
        let mut h = blake3::Hasher::new_keyed(padding_key);
        h.update(&b.to_le_bytes());
        let mut xof = h.finalize_xof();
        let mut buf = [0u8; 12];
        for _ in 0..missing {
            xof.fill(&mut buf);
            let mut fp = [0u8; 8];
            fp.copy_from_slice(&buf[..8]);
            let label = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
            let label = if label_width == 0 { 0 } else { label };
            all.push((u64::from_be_bytes(fp) >> shift, label));
        }
    }
    all.sort_unstable();
    let w = usize::from(label_width);
    let fps: Vec<u64> = all.iter().map(|(fp, _)| *fp).collect();
    let mut labels = Vec::with_capacity(all.len() * w);
    for (_, l) in &all {
        labels.extend_from_slice(&l.to_le_bytes()[..w]);
    }
    encode_payload(&fps, &labels, label_width, f, 0)
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

/// Breach metadata plus the input files that belong to it, as written in a
/// `--breaches` TOML file.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BreachFileEntry {
    /// The metadata.
    #[serde(flatten)]
    pub meta: BreachMeta,
    /// Input files of this breach (matched by path or file name).
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, serde::Deserialize)]
struct BreachFile {
    breach: Vec<BreachFileEntry>,
}

/// Reads a `--breaches` file.
///
/// # Errors
///
/// I/O or TOML errors.
pub fn load_breaches(path: &Path) -> Result<Vec<BreachFileEntry>> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let parsed: BreachFile = toml::from_str(&text)
        .map_err(|e| ServerError::Input(format!("{}: {e}", path.display())))?;
    Ok(parsed.breach)
}

/// Assigns each input to its breach by path or file name.
///
/// # Errors
///
/// [`ServerError::Input`] naming an input no breach lists.
pub fn assign_inputs(inputs: &[PathBuf], breaches: &[BreachFileEntry]) -> Result<Vec<InputSpec>> {
    inputs
        .iter()
        .map(|path| {
            let name = path.file_name();
            breaches
                .iter()
                .position(|b| {
                    b.files.iter().any(|f| {
                        f == path || (f.components().count() == 1 && f.file_name() == name)
                    })
                })
                .map(|breach| InputSpec {
                    path: path.clone(),
                    breach,
                })
                .ok_or_else(|| {
                    ServerError::Input(format!(
                        "{}: no breach in the --breaches file lists this input",
                        path.display()
                    ))
                })
        })
        .collect()
}

/// Histogram of payload real-entry counts for `inspect`: (lower bound, buckets).
pub fn size_histogram(counts: &[u32]) -> BTreeMap<u32, u64> {
    let max = counts.iter().copied().max().unwrap_or(0);
    let width = (max / 8).max(1);
    let mut h = BTreeMap::new();
    for &c in counts {
        *h.entry(c / width * width).or_insert(0u64) += 1;
    }
    h
}
