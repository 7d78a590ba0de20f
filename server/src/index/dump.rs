//! Reading leak dumps, the first step of a build: plain one-number-per-line
//! files, CSV and TSV with a header, gzip or zstd compressed (detected by
//! magic bytes), or stdin. Every row becomes a canonical number or a counted,
//! masked rejection.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use breachcheck_proto::mask;
use breachcheck_proto::{PhoneError, PhoneNumber, Region};
use serde::Serialize;

use crate::error::{Result, ServerError, io_err};

/// Which column of a CSV/TSV holds the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// By header name (case-insensitive).
    Name(String),
    /// By position, 1-based.
    Number(usize),
}

impl std::str::FromStr for Column {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.parse::<usize>() {
            Ok(0) => Err("column numbers start at 1".into()),
            Ok(n) => Ok(Column::Number(n)),
            Err(_) => Ok(Column::Name(s.to_owned())),
        }
    }
}

/// Counts of what was read, with masked samples of the invalid rows.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RowStats {
    /// Rows read (header excluded).
    pub rows: u64,
    /// Rows that gave a number.
    pub valid: u64,
    /// Invalid rows by reason.
    pub invalid: BTreeMap<String, u64>,
    /// Up to 3 masked samples per reason.
    pub samples: BTreeMap<String, Vec<String>>,
}

impl RowStats {
    fn reject(&mut self, reason: &str, raw: &str) {
        *self.invalid.entry(reason.to_owned()).or_default() += 1;
        let samples = self.samples.entry(reason.to_owned()).or_default();
        if samples.len() < 3 {
            // Masked: a log must not leak the dump.
            samples.push(mask(raw.trim()));
        }
    }

    /// Total invalid rows.
    pub fn invalid_total(&self) -> u64 {
        self.invalid.values().sum()
    }

    /// Adds another file's counts.
    pub(crate) fn merge(&mut self, other: RowStats) {
        self.rows += other.rows;
        self.valid += other.valid;
        for (k, v) in other.invalid {
            *self.invalid.entry(k).or_default() += v;
        }
        for (k, v) in other.samples {
            let s = self.samples.entry(k).or_default();
            for x in v {
                if s.len() < 3 {
                    s.push(x);
                }
            }
        }
    }
}

/// The region `build-index --default-region` names (an ISO code, e.g. `CN`).
///
/// # Errors
///
/// [`ServerError::Input`] listing the known regions.
pub fn parse_region(code: &str) -> Result<Region> {
    Region::parse(code).ok_or_else(|| {
        let known = Region::known().collect::<Vec<_>>().join(", ");
        ServerError::Input(format!(
            "unknown --default-region {code:?} (known: {known})"
        ))
    })
}

/// The snake_case name of a phone error, used as a counter key.
pub(crate) fn reason_name(e: PhoneError) -> &'static str {
    match e {
        PhoneError::Empty => "empty",
        PhoneError::Letters => "letters",
        PhoneError::InvalidCharacter => "invalid_character",
        PhoneError::TooShort => "too_short",
        PhoneError::TooLong => "too_long",
        PhoneError::NoCountryCode => "no_country_code",
        PhoneError::UnknownCountryCode => "unknown_country_code",
        PhoneError::InvalidForRegion => "invalid_for_region",
        _ => "invalid",
    }
}

/// Opens a dump (`-` is stdin), transparently decompressing gzip (also
/// concatenated members) and zstd.
///
/// # Errors
///
/// [`ServerError::Io`] if it cannot be opened.
pub(crate) fn open_input(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let raw: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).map_err(io_err(path))?)
    };
    let mut buf = BufReader::with_capacity(1 << 16, raw);
    let head = buf.fill_buf().map_err(io_err(path))?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(buf),
        ))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let dec = zstd::stream::read::Decoder::with_buffer(buf).map_err(io_err(path))?;
        Box::new(BufReader::with_capacity(1 << 16, dec))
    } else {
        Box::new(buf)
    })
}

/// Reads every row of a dump, calling `emit` with each valid number.
/// Invalid rows are counted in the returned stats and never stop the read.
///
/// # Errors
///
/// [`ServerError::Io`] on read errors; [`ServerError::Input`] if a CSV has no
/// column that looks like phone numbers (or the named one is missing).
pub(crate) fn read_numbers(
    path: &Path,
    column: Option<&Column>,
    region: Option<Region>,
    mut emit: impl FnMut(PhoneNumber),
) -> Result<RowStats> {
    let mut reader = open_input(path)?;
    let mut stats = RowStats::default();
    // Bytes, not strings, throughout: a row that is not UTF-8 is an invalid
    // row (its replacement characters fail to parse), never the end of a dump.
    let mut first = Vec::new();
    reader.read_until(b'\n', &mut first).map_err(io_err(path))?;
    let delimiter = if first.contains(&b'\t') {
        Some(b'\t')
    } else if first.contains(&b',') {
        Some(b',')
    } else {
        None
    };
    let mut check = |cell: &str, stats: &mut RowStats| {
        stats.rows += 1;
        match PhoneNumber::parse(cell, region) {
            Ok(n) => {
                stats.valid += 1;
                emit(n);
            }
            Err(e) => stats.reject(reason_name(e), cell),
        }
    };
    let Some(delimiter) = delimiter else {
        // One number per line; the first line is data too.
        let mut line = first;
        loop {
            if !line.is_empty() {
                let text = String::from_utf8_lossy(&line);
                check(text.trim_end_matches(['\n', '\r']), &mut stats);
            }
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io_err(path))? == 0 {
                break;
            }
        }
        return Ok(stats);
    };
    let chained = io::Cursor::new(first).chain(reader);
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(chained);
    let headers = csv
        .byte_headers()
        .map_err(|e| ServerError::Input(format!("{}: {e}", path.display())))?
        .clone();
    let mut records = csv.into_byte_records();
    let io_fail = |e: csv::Error| ServerError::Input(format!("{}: {e}", path.display()));
    // Buffer a sample to choose the column when none is named.
    let mut sample = Vec::new();
    let mut malformed = 0u64;
    let col = match column {
        Some(Column::Number(n)) => n - 1,
        Some(Column::Name(name)) => headers
            .iter()
            .position(|h| String::from_utf8_lossy(h).trim().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                ServerError::Input(format!("{}: no column named {name:?}", path.display()))
            })?,
        None => {
            for r in records.by_ref().take(200) {
                match r {
                    Ok(r) => sample.push(r),
                    Err(e) if e.is_io_error() => return Err(io_fail(e)),
                    Err(_) => malformed += 1,
                }
            }
            guess_column(&headers, &sample, region).ok_or_else(|| {
                ServerError::Input(format!(
                    "{}: no column looks like phone numbers; name one with --column",
                    path.display()
                ))
            })?
        }
    };
    let mut handle = |rec: &csv::ByteRecord, stats: &mut RowStats| match rec.get(col) {
        None => {
            stats.rows += 1;
            stats.reject("missing_column", "");
        }
        Some(cell) => check(&String::from_utf8_lossy(cell), stats),
    };
    // A dump without a header row: its first row is data.
    if headers
        .get(col)
        .is_some_and(|h| PhoneNumber::parse(&String::from_utf8_lossy(h), region).is_ok())
    {
        handle(&headers, &mut stats);
    }
    for _ in 0..malformed {
        stats.rows += 1;
        stats.reject("malformed_row", "");
    }
    for rec in &sample {
        handle(rec, &mut stats);
    }
    for rec in records {
        match rec {
            Ok(rec) => handle(&rec, &mut stats),
            Err(e) if e.is_io_error() => return Err(io_fail(e)),
            Err(_) => {
                stats.rows += 1;
                stats.reject("malformed_row", "");
            }
        }
    }
    Ok(stats)
}

/// The column holding the numbers: among the columns where at least half of
/// the sampled cells parse, one whose header names a phone (`phone`, `mobile`,
/// `tel`, `msisdn`, `number`) if any, else the one that parses most often.
fn guess_column(
    headers: &csv::ByteRecord,
    sample: &[csv::ByteRecord],
    region: Option<Region>,
) -> Option<usize> {
    let width = sample.iter().map(|r| r.len()).max()?;
    let ok: Vec<usize> = (0..width)
        .map(|c| {
            sample
                .iter()
                .filter(|r| {
                    r.get(c).is_some_and(|v| {
                        PhoneNumber::parse(&String::from_utf8_lossy(v), region).is_ok()
                    })
                })
                .count()
        })
        .collect();
    let plausible = |c: &usize| ok[*c] > 0 && ok[*c] * 2 >= sample.len();
    let named = |c: &usize| {
        let h = String::from_utf8_lossy(headers.get(*c).unwrap_or(b"")).to_ascii_lowercase();
        ["phone", "mobile", "tel", "msisdn", "number"]
            .iter()
            .any(|k| h.contains(k))
    };
    (0..width).filter(plausible).find(named).or_else(|| {
        (0..width)
            .filter(plausible)
            .max_by_key(|c| (ok[*c], usize::MAX - c))
    })
}
