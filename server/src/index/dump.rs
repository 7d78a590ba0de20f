//! Reading leak dumps, the first step of a build: plain one-number-per-line
//! files, CSV and TSV with a header, gzip or zstd compressed (detected by
//! magic bytes), or stdin. Every row becomes a canonical number or a counted,
//! masked rejection.
//!
//! Memory stays bounded whatever the input (#10): lines come through
//! [`TextReader`], the reader the CLI uses for its number lists (UTF-8 BOM
//! dropped, UTF-16 transcoded, a line over [`MAX_LINE`] bytes skipped
//! without being buffered and counted as one `line_too_long` row), and CSV
//! records through `csv-core` into fixed buffers (a record, quoted newlines
//! included, over [`MAX_LINE`] bytes or [`MAX_FIELDS`] fields is
//! `line_too_long` too). The report keeps at most [`MAX_SAMPLES`] masked
//! samples per reason, each at most [`MAX_SAMPLE_CHARS`] characters.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use breachcheck_proto::{MAX_LINE, mask};
use breachcheck_proto::{PhoneError, PhoneNumber, Region, TextReader};
use csv_core::ReadRecordResult;
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
    /// Up to [`MAX_SAMPLES`] masked samples per reason, each at most
    /// [`MAX_SAMPLE_CHARS`] characters.
    pub samples: BTreeMap<String, Vec<String>>,
}

/// Most samples kept per reason.
pub const MAX_SAMPLES: usize = 3;
/// Most characters of one sample (the last one `…` when it was cut).
pub const MAX_SAMPLE_CHARS: usize = 32;
/// Most fields of one CSV/TSV record; a record with more is `line_too_long`.
pub const MAX_FIELDS: usize = 4096;

/// `raw` masked (a log must not leak the dump), then cut to
/// [`MAX_SAMPLE_CHARS`] characters: the report never grows with the input.
fn sample(raw: &str) -> String {
    let masked = mask(raw.trim());
    if masked.chars().count() <= MAX_SAMPLE_CHARS {
        return masked;
    }
    let mut cut: String = masked.chars().take(MAX_SAMPLE_CHARS - 1).collect();
    cut.push('…');
    cut
}

impl RowStats {
    /// Counts an invalid row, keeping a masked sample of `raw` if given.
    fn reject(&mut self, reason: &str, raw: Option<&str>) {
        self.rows += 1;
        *self.invalid.entry(reason.to_owned()).or_default() += 1;
        if let Some(raw) = raw {
            let samples = self.samples.entry(reason.to_owned()).or_default();
            if samples.len() < MAX_SAMPLES {
                samples.push(sample(raw));
            }
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
                if s.len() < MAX_SAMPLES {
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

/// Reads every row of a dump file (`-` is stdin), calling `emit` with each
/// valid number; as [`read_dump`] over [`open_input`].
///
/// # Errors
///
/// As [`open_input`] and [`read_dump`].
pub(crate) fn read_numbers(
    path: &Path,
    column: Option<&Column>,
    region: Option<Region>,
    emit: impl FnMut(PhoneNumber),
) -> Result<RowStats> {
    read_dump(open_input(path)?, path, column, region, emit)
}

/// Reads every row of a dump from `input` (already decompressed; `name`
/// names it in errors), calling `emit` with each valid number. Invalid rows
/// are counted in the returned stats and never stop the read; memory stays
/// bounded whatever the input (see the module docs).
///
/// The first line decides the shape: with a tab it is TSV, else with a comma
/// CSV, else one number per line. A CSV/TSV's first row is its header, and
/// also data when its cell in the numbers column is a number.
///
/// # Errors
///
/// [`ServerError::Io`] on read errors; [`ServerError::Input`] if a CSV has no
/// column that looks like phone numbers (or the named one is missing).
pub fn read_dump<R: BufRead>(
    input: R,
    name: &Path,
    column: Option<&Column>,
    region: Option<Region>,
    mut emit: impl FnMut(PhoneNumber),
) -> Result<RowStats> {
    let io = |source| ServerError::Io {
        path: name.to_owned(),
        source,
    };
    let mut text = TextReader::new(input);
    let mut stats = RowStats::default();
    // Bytes, not strings, throughout: a row that is not UTF-8 is an invalid
    // row (its replacement characters fail to parse), never the end of a dump.
    let mut first = Vec::new();
    text.read_until(b'\n', &mut first).map_err(io)?;
    let delimiter = if text.overlong_lines() > 0 {
        None
    } else if first.contains(&b'\t') {
        Some(b'\t')
    } else if first.contains(&b',') {
        Some(b',')
    } else {
        None
    };
    let mut check = |cell: &[u8], stats: &mut RowStats| {
        let text = String::from_utf8_lossy(cell);
        let cell = text.trim_end_matches(['\n', '\r']);
        match PhoneNumber::parse(cell, region) {
            Ok(n) => {
                stats.rows += 1;
                stats.valid += 1;
                emit(n);
            }
            Err(e) => stats.reject(reason_name(e), Some(cell)),
        }
    };
    let Some(delimiter) = delimiter else {
        // One number per line; the first line is data too.
        let mut line = first;
        let mut overlong = 0;
        loop {
            if text.overlong_lines() > overlong {
                overlong = text.overlong_lines();
                stats.reject(LINE_TOO_LONG, None);
            } else if !line.is_empty() {
                check(&line, &mut stats);
            }
            line.clear();
            if text.read_until(b'\n', &mut line).map_err(io)? == 0 {
                break;
            }
        }
        return Ok(stats);
    };
    let mut rows = CsvRows::new(first, text, delimiter);
    let mut headers = CsvRecord::default();
    match rows.next(&mut headers).map_err(io)? {
        None => return Ok(stats),
        Some(Row::Fields) => {}
        Some(Row::TooLong) => stats.reject(LINE_TOO_LONG, None),
    }
    // Buffer a sample to choose the column when none is named.
    let mut sample = Vec::new();
    let mut too_long = 0u64;
    let col = match column {
        Some(Column::Number(n)) => n.checked_sub(1).ok_or_else(|| {
            ServerError::Input(format!("{}: column numbers start at 1", name.display()))
        })?,
        Some(Column::Name(wanted)) => headers
            .iter()
            .position(|h| {
                String::from_utf8_lossy(h)
                    .trim()
                    .eq_ignore_ascii_case(wanted)
            })
            .ok_or_else(|| {
                ServerError::Input(format!("{}: no column named {wanted:?}", name.display()))
            })?,
        None => {
            let mut rec = CsvRecord::default();
            while sample.len() < GUESS_SAMPLE {
                match rows.next(&mut rec).map_err(io)? {
                    None => break,
                    Some(Row::Fields) => sample.push(rec.clone()),
                    Some(Row::TooLong) => too_long += 1,
                }
            }
            guess_column(&headers, &sample, region).ok_or_else(|| {
                ServerError::Input(format!(
                    "{}: no column looks like phone numbers; name one with --column",
                    name.display()
                ))
            })?
        }
    };
    let mut handle = |rec: &CsvRecord, stats: &mut RowStats| match rec.get(col) {
        None => stats.reject("missing_column", None),
        Some(cell) => check(cell, stats),
    };
    // A dump without a header row: its first row is data.
    if headers
        .get(col)
        .is_some_and(|h| PhoneNumber::parse(&String::from_utf8_lossy(h), region).is_ok())
    {
        handle(&headers, &mut stats);
    }
    for _ in 0..too_long {
        stats.reject(LINE_TOO_LONG, None);
    }
    for rec in &sample {
        handle(rec, &mut stats);
    }
    drop(sample);
    let mut rec = CsvRecord::default();
    while let Some(row) = rows.next(&mut rec).map_err(io)? {
        match row {
            Row::Fields => handle(&rec, &mut stats),
            Row::TooLong => stats.reject(LINE_TOO_LONG, None),
        }
    }
    Ok(stats)
}

/// The reason of a line (or CSV record) over [`MAX_LINE`] bytes.
const LINE_TOO_LONG: &str = "line_too_long";
/// Rows sampled to choose the numbers column.
const GUESS_SAMPLE: usize = 200;

/// One CSV/TSV record: its fields' unescaped bytes end to end, and where
/// each field ends.
#[derive(Debug, Clone, Default)]
struct CsvRecord {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl CsvRecord {
    /// Field `i`, if the record has it.
    fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = match i.checked_sub(1) {
            Some(p) => *self.ends.get(p)?,
            None => 0,
        };
        self.data.get(start..end)
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// What [`CsvRows::next`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// A record, in the caller's [`CsvRecord`].
    Fields,
    /// A record over [`MAX_LINE`] bytes or [`MAX_FIELDS`] fields, or holding
    /// a line over [`MAX_LINE`]: skipped, never buffered whole.
    TooLong,
}

/// CSV/TSV records through `csv-core` (the parser inside the `csv` crate:
/// RFC 4180 quoting, `""` escapes, `\n`, `\r` or `\r\n` terminators, blank
/// lines skipped) into fixed buffers, after the already-read first line.
struct CsvRows<R> {
    parser: csv_core::Reader,
    first: Vec<u8>,
    first_pos: usize,
    text: TextReader<R>,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl<R: BufRead> CsvRows<R> {
    fn new(first: Vec<u8>, text: TextReader<R>, delimiter: u8) -> Self {
        CsvRows {
            parser: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            first,
            first_pos: 0,
            text,
            out: vec![0; MAX_LINE],
            ends: vec![0; MAX_FIELDS],
        }
    }

    /// The next record into `rec`; `None` at the end of the input.
    fn next(&mut self, rec: &mut CsvRecord) -> io::Result<Option<Row>> {
        let overlong_before = self.text.overlong_lines();
        let (mut nout, mut nend, mut too_long) = (0, 0, false);
        loop {
            let from_first = self.first_pos < self.first.len();
            let input = if from_first {
                &self.first[self.first_pos..]
            } else {
                self.text.fill_buf()?
            };
            let (res, nin, o, e) =
                self.parser
                    .read_record(input, &mut self.out[nout..], &mut self.ends[nend..]);
            if from_first {
                self.first_pos += nin;
            } else {
                self.text.consume(nin);
            }
            nout += o;
            nend += e;
            match res {
                ReadRecordResult::InputEmpty => {}
                // Too big: keep parsing to the record's end, discarding.
                ReadRecordResult::OutputFull => {
                    too_long = true;
                    nout = 0;
                }
                ReadRecordResult::OutputEndsFull => {
                    too_long = true;
                    nend = 0;
                }
                ReadRecordResult::Record => {
                    if too_long || self.text.overlong_lines() != overlong_before {
                        return Ok(Some(Row::TooLong));
                    }
                    rec.data.clear();
                    rec.data.extend_from_slice(&self.out[..nout]);
                    rec.ends.clear();
                    rec.ends.extend_from_slice(&self.ends[..nend]);
                    return Ok(Some(Row::Fields));
                }
                ReadRecordResult::End => return Ok(None),
            }
        }
    }
}

/// The column holding the numbers: among the columns where at least half of
/// the sampled cells parse, one whose header names a phone (`phone`, `mobile`,
/// `tel`, `msisdn`, `number`) if any, else the one that parses most often.
fn guess_column(
    headers: &CsvRecord,
    sample: &[CsvRecord],
    region: Option<Region>,
) -> Option<usize> {
    let width = sample.iter().map(CsvRecord::len).max()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical numbers and the stats of `bytes` read as a dump.
    fn read(bytes: &[u8], column: Option<&Column>) -> (Vec<String>, RowStats) {
        let mut got = Vec::new();
        let cn = Region::parse("CN");
        let stats = read_dump(bytes, Path::new("t"), column, cn, |n| {
            got.push(n.as_str().to_owned());
        })
        .unwrap();
        assert_eq!(stats.rows, stats.valid + stats.invalid_total());
        assert_eq!(stats.valid, got.len() as u64);
        (got, stats)
    }

    fn utf16le(s: &str) -> Vec<u8> {
        let mut out = vec![0xFF, 0xFE];
        for u in s.encode_utf16() {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out
    }

    #[test]
    fn bom_and_utf16_dumps_read_like_utf8() {
        let plain = "13800138000\n+86 139 0013 9000\n";
        let csv = "uid,phone\n1,13800138000\n2,\"+86 139 0013 9000\"\n";
        let want = ["+8613800138000", "+8613900139000"];
        for text in [plain, csv] {
            for bytes in [
                text.as_bytes().to_vec(),
                [&b"\xEF\xBB\xBF"[..], text.as_bytes()].concat(),
                utf16le(text),
            ] {
                let (got, stats) = read(&bytes, None);
                assert_eq!(got, want, "{text:?}");
                assert_eq!(stats.invalid_total(), 0);
            }
        }
    }

    // See: #10 (row 5)
    #[test]
    fn an_overlong_line_is_one_invalid_row_and_samples_stay_short() {
        let long = "9".repeat(3 * MAX_LINE);
        let letters = "x".repeat(MAX_LINE / 2);
        let plain = format!("13800138000\n{long}\n{letters}\n13900139000");
        let (got, stats) = read(plain.as_bytes(), None);
        assert_eq!(got.len(), 2);
        assert_eq!(stats.invalid.get(LINE_TOO_LONG), Some(&1));
        assert_eq!(stats.invalid.get("letters"), Some(&1));
        let samples: Vec<&String> = stats.samples.values().flatten().collect();
        assert_eq!(samples.len(), 1, "{samples:?}");
        assert_eq!(samples[0].chars().count(), MAX_SAMPLE_CHARS);
        assert!(samples[0].ends_with('…'));
        // CSV: an overlong line, and a quoted field spanning lines past the cap.
        let quoted = format!("\"{}\"", "1\n".repeat(MAX_LINE));
        let csv = format!("id,phone\n1,13800138000\n2,{long}\n3,{quoted}\n4,13900139000\n");
        let (got, stats) = read(csv.as_bytes(), None);
        assert_eq!(got, ["+8613800138000", "+8613900139000"]);
        assert_eq!(stats.invalid.get(LINE_TOO_LONG), Some(&2), "{stats:?}");
        // Too many fields.
        let wide = format!(
            "a,phone\n{}13800138000\n1,13900139000\n",
            ",".repeat(MAX_FIELDS)
        );
        let (got, stats) = read(wide.as_bytes(), Some(&Column::Number(2)));
        assert_eq!(got, ["+8613900139000"]);
        assert_eq!(stats.invalid.get(LINE_TOO_LONG), Some(&1));
    }

    #[test]
    fn column_zero_is_an_error_not_a_panic() {
        let r = read_dump(
            &b"a,b\n1,2\n"[..],
            Path::new("t"),
            Some(&Column::Number(0)),
            None,
            |_| {},
        );
        assert!(matches!(r, Err(ServerError::Input(_))), "{r:?}");
    }
}
