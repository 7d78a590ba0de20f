//! Phase 3 of a build: choosing the layout (k, entries per bucket) and
//! padding and encoding every bucket's payload.
//!
//! Padding makes every bucket hold the same number of entries, so a payload's
//! size tells a network observer nothing about which bucket was fetched. The
//! dummies come from a stream keyed by the secret key: the output depends only
//! on the key and the set of (number, breaches) pairs.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use breachcheck_proto as proto;
use breachcheck_proto::{
    PIR_INSTANCE_BYTES, PIR_MAX_INSTANCES, PIR_MIN_BUCKET_BITS, encode_payload,
    fingerprint_bits_for, top_bits,
};
use rayon::prelude::*;

use crate::error::{Result, io_err};
use crate::index::format::Header;
use crate::index::progress::{Progress, ProgressMode};
use crate::index::spill::{PART_BITS, Spill, create_private_file};

/// Histogram resolution for choosing k.
pub(crate) const HIST_BITS: u32 = 20;
/// Largest k chosen automatically.
const AUTO_MAX_BITS: u32 = HIST_BITS;

/// The estimated file size, in bytes per entry, that the choice of k may
/// spend to make buckets (what a lookup downloads) smaller.
const AUTO_BYTES_PER_ENTRY: f64 = 4.4;

/// Chooses k for the bytes a lookup downloads (#13): among the k whose mean
/// bucket holds 1,024 to 16,384 entries ("a few thousand"), the largest
/// (smallest buckets) whose estimated file stays within
/// [`AUTO_BYTES_PER_ENTRY`], or, if none does, the one with the smallest
/// file; 0 for a corpus too small for any (under 1,024 numbers). The
/// estimate is exact about padding (from the histogram) and models a Golomb
/// code at `log2(2^f / P) + 1.5` bits per entry. Smaller buckets cost a
/// little padding (the fullest bucket sets every bucket's size) and save
/// fingerprint bits; at 1M numbers this picks buckets of a few thousand
/// entries (a few kB to 17 kB) where the smallest file had 15,000 (66 kB).
pub(crate) fn choose_bucket_bits(hist: &[u32], distinct: u64) -> u32 {
    let mut sizes = Vec::new();
    for k in 0..=AUTO_MAX_BITS {
        let mean = distinct as f64 / (1u64 << k) as f64;
        if !(1024.0..=16384.0).contains(&mean) {
            continue;
        }
        let p = fullest_bucket(hist, k);
        let f = fingerprint_bits_for(p);
        let bits = f64::from(f) - f64::from(p).log2() + 1.5;
        let size = (1u64 << k) as f64 * (f64::from(p) * bits / 8.0 + 32.0);
        sizes.push((k, size));
    }
    let budget = AUTO_BYTES_PER_ENTRY * distinct as f64;
    sizes
        .iter()
        .filter(|&&(_, size)| size <= budget)
        .map(|&(k, _)| k)
        .max()
        .or_else(|| {
            sizes
                .iter()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|&(k, _)| k)
        })
        .unwrap_or(0)
}

/// Entries of the fullest of the 2^k buckets (at least 1), from the
/// histogram (`k ≤ HIST_BITS`).
fn fullest_bucket(hist: &[u32], k: u32) -> u32 {
    let per = 1usize << (HIST_BITS - k);
    hist.chunks(per)
        .map(|c| c.iter().sum::<u32>())
        .max()
        .unwrap_or(0)
        .max(1)
}

/// Chooses k for PIR (`build-index --pir`, docs/PROTOCOL.md §10): the
/// smallest k of at least [`PIR_MIN_BUCKET_BITS`] whose fullest bucket
/// (from the histogram), with its labels and its Merkle proof, fits in
/// [`PIR_MAX_INSTANCES`] instances by the same Golomb estimate as
/// [`choose_bucket_bits`]. The smallest such k sends the least: a query
/// grows with the rows (2^k) faster than an answer with the instances.
pub(crate) fn choose_pir_bucket_bits(hist: &[u32], label_width: u8) -> u32 {
    for k in PIR_MIN_BUCKET_BITS..=AUTO_MAX_BITS {
        let p = fullest_bucket(hist, k);
        let f = fingerprint_bits_for(p);
        let bits = f64::from(f) - f64::from(p).log2() + 1.5 + 8.0 * f64::from(label_width);
        let row = f64::from(p) * bits / 8.0 + 64.0 + 32.0 * f64::from(k);
        if row <= (PIR_MAX_INSTANCES * PIR_INSTANCE_BYTES) as f64 {
            return k;
        }
    }
    AUTO_MAX_BITS
}

/// Real entries per k-bucket, from the histogram when `k ≤ HIST_BITS`, else
/// by a pass over the evaluated records (which stay where they are).
pub(crate) fn bucket_counts(hist: &[u32], k: u32, spill: &mut Spill) -> Result<Vec<u32>> {
    if k <= HIST_BITS {
        let per = 1usize << (HIST_BITS - k);
        return Ok(hist.chunks(per).map(|c| c.iter().sum()).collect());
    }
    let mut counts = vec![0u32; 1 << k];
    for part in 0..(1usize << PART_BITS) {
        let recs = spill.take(part)?;
        for r in &recs {
            counts[top_bits(r.bucket_value, k) as usize] += 1;
        }
        for r in recs {
            spill.push(part, r)?;
        }
    }
    Ok(counts)
}

/// Pads and encodes every bucket, unpadded in bytes, into a temporary file
/// in `work`; returns it with each payload's length.
pub(crate) fn encode_buckets(
    progress: ProgressMode,
    work: &Path,
    spill: &mut Spill,
    h: &Header,
    padding_key: &[u8; 32],
) -> Result<(PathBuf, Vec<u32>)> {
    let k = h.bucket_bits;
    let path = work.join("payloads");
    let mut payloads = BufWriter::new(create_private_file(&path)?);
    let mut lens = vec![0u32; 1 << k];
    let group_bits = k.min(PART_BITS);
    let parts_per_group = 1usize << (PART_BITS - group_bits);
    let encoding = Progress::new(progress, "encoding", Some(1u64 << k));
    for group in 0..(1usize << group_bits) {
        let mut ents = Vec::new();
        for part in group * parts_per_group..(group + 1) * parts_per_group {
            ents.append(&mut spill.take(part)?);
        }
        let range = proto::buckets_under_prefix(group as u32, group_bits, k);
        let mut by_bucket: Vec<Vec<(u64, u32)>> = vec![Vec::new(); range.len()];
        for e in &ents {
            let b = top_bits(e.bucket_value, k) - range.start;
            by_bucket[b as usize].push((e.key, e.word));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram of `n` numbers spread evenly over its 2^20 cells.
    fn even(n: u64) -> Vec<u32> {
        let cells = 1u64 << HIST_BITS;
        (0..cells)
            .map(|i| ((n * (i + 1)) / cells - (n * i) / cells) as u32)
            .collect()
    }

    #[test]
    fn k_is_chosen_for_small_downloads_within_the_size_budget() {
        // 1M numbers: buckets of 4,000 or fewer (k ≥ 8; an even histogram
        // needs no padding, so k = 9 fits the budget), not the 15,600
        // (k = 6) of the smallest file.
        let k = choose_bucket_bits(&even(1_000_000), 1_000_000);
        assert!(k >= 8, "k {k}");
        // Too few for buckets of 1,024: one bucket.
        assert_eq!(choose_bucket_bits(&even(1000), 1000), 0);
        // Every candidate within 1,024..=16,384 entries a bucket.
        for n in [5_000u64, 100_000, 10_000_000, 50_000_000] {
            let k = choose_bucket_bits(&even(n), n);
            let mean = n as f64 / (1u64 << k) as f64;
            assert!(
                (1024.0..=16384.0).contains(&mean),
                "{n}: k {k}, mean {mean}"
            );
        }
    }

    #[test]
    fn pir_k_is_the_smallest_whose_rows_fit() {
        // 1M numbers: 2^11 rows of ~490 entries, one instance.
        assert_eq!(choose_pir_bucket_bits(&even(1_000_000), 0), 11);
        for n in [10_000_000u64, 50_000_000, 200_000_000] {
            let k = choose_pir_bucket_bits(&even(n), 0);
            let entries = n >> k;
            // ~4.4 bytes an entry: the row fits 5 instances, and would not
            // at k - 1 (twice the entries).
            assert!(entries as f64 * 4.4 < 17_920.0, "{n}: k {k}");
            assert!(
                k == 11 || (2 * entries) as f64 * 4.0 > 17_920.0 - 32.0 * f64::from(k),
                "{n}: k {k}"
            );
        }
        // Labels make rows larger: never a smaller k.
        assert!(
            choose_pir_bucket_bits(&even(50_000_000), 1)
                >= choose_pir_bucket_bits(&even(50_000_000), 0)
        );
    }
}
