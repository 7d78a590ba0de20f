//! Deterministic synthetic leak dumps for demos, tests and benchmarks.
//!
//! A Weibo-like `uid,phone` CSV: Chinese mobile numbers spread over the
//! allocated prefixes, in the mixed formats real dumps hold, with a small
//! share of junk rows and a few numbers from other countries.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use breachcheck_proto::{PhoneNumber, Region};

use crate::error::{Result, io_err};

/// Allocated Chinese mobile prefixes (first three digits).
const CN_PREFIXES: &[u16] = &[
    130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 145, 147, 150, 151, 152, 153, 155, 156, 157,
    158, 159, 162, 165, 166, 167, 170, 171, 172, 173, 175, 176, 177, 178, 180, 181, 182, 183, 184,
    185, 186, 187, 188, 189, 190, 191, 192, 193, 195, 196, 197, 198, 199,
];

/// Output shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CorpusFormat {
    /// `uid,phone` with a header.
    Csv,
    /// One number per line.
    Lines,
}

/// A splitmix64 stream: deterministic across platforms and versions.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A stream from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A random CN mobile number's 11 national digits.
pub fn cn_mobile(rng: &mut SplitMix) -> String {
    let prefix = CN_PREFIXES[rng.below(CN_PREFIXES.len() as u64) as usize];
    format!("{prefix}{:08}", rng.below(100_000_000))
}

/// What a generated corpus holds.
#[derive(Debug, Clone, Default)]
pub struct CorpusSummary {
    /// Rows written.
    pub rows: u64,
    /// Rows with a valid number.
    pub valid: u64,
    /// Distinct valid numbers (canonical E.164).
    pub distinct: u64,
}

/// Writes `count` rows, none of whose numbers is in `exclude` (canonical
/// E.164). Returns the canonical members (all distinct valid numbers, in
/// first-seen order) and a summary.
///
/// # Errors
///
/// I/O errors from `out`.
pub fn generate_corpus(
    out: &mut dyn Write,
    count: u64,
    seed: u64,
    format: CorpusFormat,
    exclude: &[&str],
) -> std::io::Result<(Vec<String>, CorpusSummary)> {
    let mut rng = SplitMix::new(seed);
    let mut seen = HashSet::new();
    let mut members = Vec::new();
    let mut summary = CorpusSummary::default();
    if format == CorpusFormat::Csv {
        writeln!(out, "uid,phone")?;
    }
    for i in 0..count {
        let roll = rng.below(1000);
        let cell = if roll < 15 {
            // Junk, as real dumps have it.
            match rng.below(5) {
                0 => String::new(),
                1 => "N/A".into(),
                2 => format!("{}", rng.below(100_000)),
                3 => "null".into(),
                _ => format!("{}-{}", rng.below(1000), rng.below(1000)),
            }
        } else if roll < 30 {
            // A few other countries.
            match rng.below(3) {
                0 => format!("+1 415 555 {:04}", rng.below(10_000)),
                1 => format!("+44 20 7946 {:04}", rng.below(10_000)),
                _ => format!("+852 9{:03} {:04}", rng.below(1000), rng.below(10_000)),
            }
        } else {
            let n = cn_mobile(&mut rng);
            match rng.below(10) {
                0 => format!("+86 {} {} {}", &n[..3], &n[3..7], &n[7..]),
                1 => format!("86{n}"),
                2 => format!("+86-{}-{}-{}", &n[..3], &n[3..7], &n[7..]),
                3 => format!("0086{n}"),
                _ => n,
            }
        };
        let mut cell = cell;
        while PhoneNumber::parse(&cell, Some(Region::cn()))
            .is_ok_and(|p| exclude.contains(&p.as_str()))
        {
            cell = cn_mobile(&mut rng);
        }
        summary.rows += 1;
        if let Ok(p) = PhoneNumber::parse(&cell, Some(Region::cn())) {
            summary.valid += 1;
            if seen.insert(p) {
                members.push(p.as_str().to_owned());
            }
        }
        match format {
            CorpusFormat::Csv => {
                let uid = 1_000_000_000 + (i * 7919 + rng.below(7919)) % 6_000_000_000;
                if cell.contains(',') {
                    writeln!(out, "{uid},\"{cell}\"")?;
                } else {
                    writeln!(out, "{uid},{cell}")?;
                }
            }
            CorpusFormat::Lines => writeln!(out, "{cell}")?,
        }
    }
    summary.distinct = members.len() as u64;
    Ok((members, summary))
}

/// `gen-corpus`: writes `count` rows to `out` (`-` for stdout) and, if asked,
/// the canonical members and `n` non-members to files, one number per line.
///
/// # Errors
///
/// [`ServerError::Io`](crate::error::ServerError::Io) naming the file that failed.
pub fn write_corpus(
    out: &Path,
    count: u64,
    seed: u64,
    format: CorpusFormat,
    members: Option<&Path>,
    non_members: Option<(&Path, usize)>,
) -> Result<CorpusSummary> {
    let (list, summary) = if out.as_os_str() == "-" {
        let mut w = BufWriter::new(std::io::stdout().lock());
        let r = generate_corpus(&mut w, count, seed, format, &[]).map_err(io_err(out))?;
        w.flush().map_err(io_err(out))?;
        r
    } else {
        let mut w = BufWriter::new(File::create(out).map_err(io_err(out))?);
        let r = generate_corpus(&mut w, count, seed, format, &[]).map_err(io_err(out))?;
        w.flush().map_err(io_err(out))?;
        r
    };
    if let Some(path) = members {
        write_lines(path, &list)?;
    }
    if let Some((path, n)) = non_members {
        write_lines(path, &self::non_members(&list, n, seed))?;
    }
    Ok(summary)
}

fn write_lines(path: &Path, lines: &[String]) -> Result<()> {
    let mut w = BufWriter::new(File::create(path).map_err(io_err(path))?);
    for l in lines {
        writeln!(w, "{l}").map_err(io_err(path))?;
    }
    w.flush().map_err(io_err(path))
}

/// `count` CN mobile numbers (canonical) that are not in `members`.
pub fn non_members(members: &[String], count: usize, seed: u64) -> Vec<String> {
    let set: HashSet<&str> = members.iter().map(String::as_str).collect();
    let mut rng = SplitMix::new(seed ^ 0x005E_ED0F_0DD5);
    let mut chosen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let n = format!("+86{}", cn_mobile(&mut rng));
        if !set.contains(n.as_str()) && chosen.insert(n.clone()) {
            out.push(n);
        }
    }
    out
}
