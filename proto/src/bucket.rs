//! k-anonymity buckets and the bucket payload codec.
//!
//! * `bucket_value(x)`: the first 32 bits (big-endian) of
//!   `BLAKE3.derive_key("breachcheck v1 bucket", x)`; an index cut at `k` bits
//!   puts `x` in bucket `bucket_value(x) >> (32 - k)`.
//! * A client asks by a `j`-bit prefix (`j ≤ k`) and receives the `2^(k-j)`
//!   buckets under it.
//! * A payload holds the sorted `f`-bit fingerprints of one bucket,
//!   Golomb-coded, and optionally one encrypted label per fingerprint. Every
//!   payload of an index has the same entry count and byte length.
//!
//! The byte layout is specified in `docs/PROTOCOL.md` §4.

use std::ops::Range;
use std::sync::LazyLock;

use crate::codec::Reader;
use crate::error::ProtocolError;
use crate::oprf::Output;

/// BLAKE3 key-derivation context for bucket values.
pub const BUCKET_CONTEXT: &str = "breachcheck v1 bucket";
/// BLAKE3 key-derivation context for label keys.
pub const LABEL_CONTEXT: &str = "breachcheck v1 label";
/// Most bucket bits an index may use.
pub const MAX_BUCKET_BITS: u32 = 24;
/// Payload format version (the first byte of every payload).
pub const PAYLOAD_VERSION: u8 = 1;
/// Bytes before the label block: version, label width, f, reserved, count
/// (u32 LE), Golomb parameter (u64 LE).
pub const PAYLOAD_HEADER_LEN: usize = 16;
/// Most bytes a label may take: a label is a little-endian breach mask of up
/// to 32 breaches.
pub const MAX_LABEL_WIDTH: usize = 4;
/// The false-positive exponent: a checked number not in the corpus is
/// reported found with probability at most `2^-FALSE_POSITIVE_BITS`.
pub const FALSE_POSITIVE_BITS: u32 = 32;

static BUCKET_HASHER: LazyLock<blake3::Hasher> =
    LazyLock::new(|| blake3::Hasher::new_derive_key(BUCKET_CONTEXT));

/// The 32-bit bucket value of a canonical E.164 string.
pub fn bucket_value(e164: &[u8]) -> u32 {
    let mut h = BUCKET_HASHER.clone();
    h.update(e164);
    let out = h.finalize();
    let b = out.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The top `bits` bits of a bucket value (`bits` ≤ 32; 0 gives 0).
pub fn top_bits(value: u32, bits: u32) -> u32 {
    if bits == 0 {
        0
    } else {
        value >> (32 - bits.min(32))
    }
}

/// The `k`-bit buckets under the `j`-bit `prefix` (`j ≤ k`).
pub fn buckets_under_prefix(prefix: u32, j: u32, k: u32) -> Range<u32> {
    let shift = k - j.min(k);
    let start = prefix << shift;
    start..start + (1u32 << shift)
}

/// The fingerprint: the first `f` bits (big-endian) of the PRF output, `1 ≤ f ≤ 64`.
pub fn fingerprint(output: &Output, f: u32) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&output[..8]);
    let v = u64::from_be_bytes(first);
    if f >= 64 { v } else { v >> (64 - f) }
}

/// The fingerprint width for buckets of `entries` (padded) entries that keeps
/// the false-positive probability of one check at most `2^-32`:
/// `f = 32 + ceil(log2(entries))`.
pub fn fingerprint_bits_for(entries: u32) -> u32 {
    let ceil_log2 = if entries <= 1 {
        0
    } else {
        32 - (entries - 1).leading_zeros()
    };
    (FALSE_POSITIVE_BITS + ceil_log2).min(64)
}

/// The label key stream for one output: `BLAKE3.derive_key("breachcheck v1 label", out)`.
pub fn label_key(output: &Output) -> [u8; 32] {
    blake3::derive_key(LABEL_CONTEXT, output)
}

/// Encrypts (or decrypts: it is an XOR) a label of up to 32 bytes under the key
/// derived from `output`.
pub fn seal_label(output: &Output, label: &mut [u8]) {
    let key = label_key(output);
    for (b, k) in label.iter_mut().zip(key.iter()) {
        *b ^= k;
    }
}

/// The Golomb parameter for `n` values spread over `[0, 2^f)`: the gap mean
/// times ln 2, which is optimal for geometric gaps.
pub fn golomb_parameter(n: u32, f: u32) -> u64 {
    if n == 0 {
        return 1;
    }
    let universe = if f >= 64 {
        u64::MAX as f64
    } else {
        (1u64 << f) as f64
    };
    let m = (universe / f64::from(n) * std::f64::consts::LN_2).round();
    if m < 1.0 { 1 } else { m as u64 }
}

/// Encodes a payload: `entries` must be sorted by fingerprint, each value
/// below `2^f`, each label exactly `label_width` bytes. The result is padded
/// with zero bytes to `pad_to` bytes if it is shorter.
///
/// # Errors
///
/// [`ProtocolError::InvalidPayload`] if an argument breaks those rules.
pub fn encode_payload(
    fingerprints: &[u64],
    labels: &[u8],
    label_width: u8,
    f: u32,
    pad_to: usize,
) -> Result<Vec<u8>, ProtocolError> {
    if !(1..=64).contains(&f) {
        return Err(ProtocolError::InvalidPayload(
            "fingerprint bits out of range",
        ));
    }
    let n = u32::try_from(fingerprints.len())
        .map_err(|_| ProtocolError::InvalidPayload("too many entries"))?;
    if usize::from(label_width) > MAX_LABEL_WIDTH {
        return Err(ProtocolError::InvalidPayload("label width above 4 bytes"));
    }
    if labels.len() != fingerprints.len() * usize::from(label_width) {
        return Err(ProtocolError::InvalidPayload("label block length"));
    }
    let max = if f == 64 { u64::MAX } else { (1u64 << f) - 1 };
    let m = golomb_parameter(n, f);
    let mut out = Vec::with_capacity(PAYLOAD_HEADER_LEN + labels.len() + fingerprints.len() * 5);
    out.push(PAYLOAD_VERSION);
    out.push(label_width);
    out.push(f as u8);
    out.push(0);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&m.to_le_bytes());
    out.extend_from_slice(labels);
    let mut w = BitWriter::new(out);
    let coder = Golomb::new(m);
    let mut prev = 0u64;
    for &fp in fingerprints {
        if fp > max || fp < prev {
            return Err(ProtocolError::InvalidPayload(
                "fingerprints not sorted or too wide",
            ));
        }
        coder.encode(&mut w, fp - prev);
        prev = fp;
    }
    let mut out = w.finish();
    if out.len() < pad_to {
        out.resize(pad_to, 0);
    }
    Ok(out)
}

/// A decoded payload, owned: what a client keeps of a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Fingerprint width `f`.
    pub fingerprint_bits: u32,
    /// Bytes per label (0: no labels).
    pub label_width: u8,
    /// The sorted fingerprints.
    pub fingerprints: Vec<u64>,
    /// `label_width` bytes per fingerprint, in the same order.
    pub labels: Vec<u8>,
}

impl Payload {
    /// Decodes a payload strictly (docs/PROTOCOL.md §4): the version, a
    /// label width of at most [`MAX_LABEL_WIDTH`] bytes, a zero reserved
    /// byte, `1 ≤ f ≤ 64`, a non-zero Golomb parameter, every Golomb code
    /// within the bytes, every value below `2^f`, and nothing but zero bits
    /// after the last code (the padding).
    ///
    /// Memory is never reserved from the claimed count alone: a count that
    /// the bit stream cannot hold (each code takes at least `max(1, b)` bits)
    /// is rejected before anything is allocated. Callers that know the
    /// index's shape use [`Payload::decode_expecting`] as well.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InvalidPayload`] naming what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let short = |_| ProtocolError::InvalidPayload("shorter than its header");
        let mut r = Reader::new(bytes);
        if r.u8().map_err(short)? != PAYLOAD_VERSION {
            return Err(ProtocolError::InvalidPayload("unsupported payload version"));
        }
        let label_width = r.u8().map_err(short)?;
        let f = u32::from(r.u8().map_err(short)?);
        let reserved = r.u8().map_err(short)?;
        let n = r.u32_le().map_err(short)? as usize;
        let m = r.u64_le().map_err(short)?;
        if usize::from(label_width) > MAX_LABEL_WIDTH {
            return Err(ProtocolError::InvalidPayload("label width above 4 bytes"));
        }
        if reserved != 0 {
            return Err(ProtocolError::InvalidPayload("non-zero reserved byte"));
        }
        if !(1..=64).contains(&f) {
            return Err(ProtocolError::InvalidPayload(
                "fingerprint bits out of range",
            ));
        }
        if m == 0 {
            return Err(ProtocolError::InvalidPayload("zero Golomb parameter"));
        }
        let label_len = n
            .checked_mul(usize::from(label_width))
            .ok_or(ProtocolError::InvalidPayload("label block length"))?;
        let labels = r
            .take(label_len)
            .map_err(|_| ProtocolError::InvalidPayload("truncated label block"))?;
        let stream = r.rest();
        let coder = Golomb::new(m);
        // Every code takes at least max(1, b) bits: bound the count by the
        // bytes actually received before reserving memory for it.
        let min_code_bits = coder.b.max(1) as usize;
        if n > stream.len().saturating_mul(8) / min_code_bits {
            return Err(ProtocolError::InvalidPayload(
                "count exceeds the bit stream",
            ));
        }
        let max = if f == 64 { u64::MAX } else { (1u64 << f) - 1 };
        let mut bits = BitReader::new(stream);
        let mut fingerprints = Vec::with_capacity(n);
        let mut acc = 0u64;
        for _ in 0..n {
            let gap = coder
                .decode(&mut bits)
                .ok_or(ProtocolError::InvalidPayload("truncated bit stream"))?;
            acc = acc
                .checked_add(gap)
                .filter(|v| *v <= max)
                .ok_or(ProtocolError::InvalidPayload("fingerprint out of range"))?;
            fingerprints.push(acc);
        }
        if !bits.rest_is_zero() {
            return Err(ProtocolError::InvalidPayload("non-zero padding"));
        }
        Ok(Payload {
            fingerprint_bits: f,
            label_width,
            fingerprints,
            labels: labels.to_vec(),
        })
    }

    /// [`Payload::decode`] for a payload whose shape the caller knows from
    /// the index description: the fingerprint width must be `f` and the count
    /// at most `max_entries`, both checked before any allocation.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InvalidPayload`] naming what is wrong.
    pub fn decode_expecting(bytes: &[u8], f: u32, max_entries: u32) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(bytes);
        let header = r
            .array::<PAYLOAD_HEADER_LEN>()
            .map_err(|_| ProtocolError::InvalidPayload("shorter than its header"))?;
        if u32::from(header[2]) != f {
            return Err(ProtocolError::InvalidPayload(
                "fingerprint width differs from the index's",
            ));
        }
        let n = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if n > max_entries {
            return Err(ProtocolError::InvalidPayload(
                "more entries than the index's buckets hold",
            ));
        }
        Self::decode(bytes)
    }

    /// The breach mask of the number whose PRF output is `output`, or `None`
    /// when its fingerprint is not in this bucket.
    ///
    /// Bit `i` of the mask stands for breach `i` of the index's breach table.
    /// A payload without labels belongs to an index of one breach set and
    /// answers `u32::MAX` (every breach of the table). A label is decrypted
    /// with the key derived from `output` (DESIGN.md, "Labels"), so only the
    /// client that evaluated this very number can read it.
    pub fn breach_mask(&self, output: &Output) -> Option<u32> {
        let fp = fingerprint(output, self.fingerprint_bits);
        let i = self.find(fp).next()?;
        let Some(sealed) = self.label(i) else {
            return Some(u32::MAX);
        };
        let mut label = [0u8; MAX_LABEL_WIDTH];
        // `decode` bounds the width by MAX_LABEL_WIDTH, so this cannot be short.
        let w = sealed.len().min(MAX_LABEL_WIDTH);
        label[..w].copy_from_slice(&sealed[..w]);
        seal_label(output, &mut label[..w]);
        Some(u32::from_le_bytes(label))
    }

    /// The position of every entry equal to `fp` (usually none or one).
    pub fn find(&self, fp: u64) -> Range<usize> {
        let start = self.fingerprints.partition_point(|&x| x < fp);
        let end = start + self.fingerprints[start..].partition_point(|&x| x == fp);
        start..end
    }

    /// Whether `fp` is in the set.
    pub fn contains(&self, fp: u64) -> bool {
        !self.find(fp).is_empty()
    }

    /// The sealed label of entry `i`.
    pub fn label(&self, i: usize) -> Option<&[u8]> {
        let w = usize::from(self.label_width);
        if w == 0 {
            return None;
        }
        self.labels.get(i * w..(i + 1) * w)
    }
}

/// Golomb coding with parameter `m`: quotient in unary (`q` zero bits then a
/// one), remainder in truncated binary.
struct Golomb {
    m: u64,
    /// `b = ceil(log2 m)`.
    b: u32,
    /// `u = 2^b - m`: remainders below `u` take `b - 1` bits.
    u: u64,
}

impl Golomb {
    fn new(m: u64) -> Self {
        let b = if m <= 1 {
            0
        } else {
            64 - (m - 1).leading_zeros()
        };
        let u = if b == 64 {
            0u64.wrapping_sub(m)
        } else {
            (1u64 << b) - m
        };
        Golomb { m, b, u }
    }

    fn encode(&self, w: &mut BitWriter, v: u64) {
        let q = v / self.m;
        let r = v % self.m;
        w.write_unary(q);
        if self.b == 0 {
            return;
        }
        if r < self.u {
            w.write(r, self.b - 1);
        } else {
            let x = r + self.u;
            w.write(x >> 1, self.b - 1);
            w.write(x & 1, 1);
        }
    }

    fn decode(&self, r: &mut BitReader<'_>) -> Option<u64> {
        // Fast path: the whole code lies in one 57-bit window, so one load
        // and a trailing-zero count decode it.
        if self.b > 0 && r.remaining() >= 64 {
            let w = r.peek64();
            let tz = w.trailing_zeros();
            if tz + self.b < 57 {
                let after = w >> (tz + 1);
                let x = after & ((1u64 << (self.b - 1)) - 1);
                let (rem, used) = if x < self.u {
                    (x, tz + self.b)
                } else {
                    (
                        (((x << 1) | ((after >> (self.b - 1)) & 1)) - self.u),
                        tz + 1 + self.b,
                    )
                };
                r.pos += used as usize;
                return u64::from(tz).checked_mul(self.m)?.checked_add(rem);
            }
        }
        let q = r.read_unary()?;
        if self.b == 0 {
            return q.checked_mul(self.m);
        }
        let x = r.read(self.b - 1)?;
        let rem = if x < self.u {
            x
        } else {
            ((x << 1) | r.read(1)?) - self.u
        };
        q.checked_mul(self.m)?.checked_add(rem)
    }
}

/// LSB-first bit writer: bit `i` of the stream is bit `i % 8` of byte `i / 8`.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    fn new(out: Vec<u8>) -> Self {
        BitWriter {
            out,
            acc: 0,
            nbits: 0,
        }
    }

    fn write(&mut self, v: u64, bits: u32) {
        if bits == 0 {
            return;
        }
        let mut v = if bits == 64 {
            v
        } else {
            v & ((1u64 << bits) - 1)
        };
        let mut bits = bits;
        while bits > 0 {
            let room = 64 - self.nbits;
            let take = room.min(bits);
            let part = if take == 64 {
                v
            } else {
                v & ((1u64 << take) - 1)
            };
            self.acc |= part << self.nbits;
            self.nbits += take;
            bits -= take;
            v = if take == 64 { 0 } else { v >> take };
            if self.nbits == 64 {
                self.out.extend_from_slice(&self.acc.to_le_bytes());
                self.acc = 0;
                self.nbits = 0;
            }
        }
    }

    fn write_unary(&mut self, q: u64) {
        let mut q = q;
        while q >= 32 {
            self.write(0, 32);
            q -= 32;
        }
        self.write(1u64 << q, q as u32 + 1);
    }

    fn finish(mut self) -> Vec<u8> {
        let bytes = self.nbits.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
        self.out
    }
}

/// LSB-first bit reader over a byte slice; reading past the end fails.
struct BitReader<'a> {
    bytes: &'a [u8],
    /// Next bit position.
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    /// Up to 57 bits starting at `pos`, zero-filled past the end.
    fn peek64(&self) -> u64 {
        let byte = self.pos / 8;
        let shift = self.pos % 8;
        let mut buf = [0u8; 8];
        if let Some(src) = self.bytes.get(byte..byte + 8) {
            buf.copy_from_slice(src);
        } else if byte < self.bytes.len() {
            let tail = &self.bytes[byte..];
            buf[..tail.len()].copy_from_slice(tail);
        }
        u64::from_le_bytes(buf) >> shift
    }

    fn remaining(&self) -> usize {
        (self.bytes.len() * 8).saturating_sub(self.pos)
    }

    /// Whether every bit from `pos` to the end is zero (the padding).
    fn rest_is_zero(&self) -> bool {
        let byte = self.pos / 8;
        let Some(&first) = self.bytes.get(byte) else {
            return true;
        };
        let shift = self.pos % 8;
        first >> shift == 0 && self.bytes[byte + 1..].iter().all(|&b| b == 0)
    }

    fn read(&mut self, bits: u32) -> Option<u64> {
        if bits as usize > self.remaining() {
            return None;
        }
        let mut v = 0u64;
        let mut got = 0u32;
        while got < bits {
            let take = (bits - got).min(56);
            let chunk = self.peek64() & ((1u64 << take) - 1);
            v |= chunk << got;
            got += take;
            self.pos += take as usize;
        }
        Some(v)
    }

    fn read_unary(&mut self) -> Option<u64> {
        let mut q = 0u64;
        loop {
            if self.remaining() == 0 {
                return None;
            }
            let window = self.peek64();
            let avail = (self.remaining()).min(57) as u32;
            let tz = window.trailing_zeros();
            if tz < avail {
                self.pos += tz as usize + 1;
                return Some(q + u64::from(tz));
            }
            q += u64::from(avail);
            self.pos += avail as usize;
        }
    }
}

#[cfg(test)]
mod tests;
