//! The index file layout (docs/PROTOCOL.md §5). All integers little-endian.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "BCHKIDX\0"
//! 8       4     format version (1)
//! 12      4     header_len H (bytes from offset 0 to the end of the header checksum)
//! 16      1     mode (1 = VOPRF)
//! 17      1     bucket_bits k
//! 18      1     fingerprint_bits f
//! 19      1     label_width W (bytes per label; 0 = no labels)
//! 20      4     bucket_entries P (entries per bucket after padding)
//! 24      8     entry_count (distinct numbers, padding excluded)
//! 32      8     body_len (directory + payloads)
//! 40      32    public key (SerializeElement(pkS))
//! 72      32    index_id = BLAKE3(body)
//! 104     32    BLAKE3(directory)
//! 136     4     breach_len B
//! 140     B     breach table: JSON array of {id, name, date, description, data_classes}
//! 140+B   32    BLAKE3(bytes 0 .. 140+B)
//! H       16·2^k  directory: per bucket {offset u64 (from body start), len u32, real_entries u32}
//! ...           payloads
//! ```

use serde::{Deserialize, Serialize};

use crate::error::IndexFault;

/// The first 8 bytes of every index file.
pub const MAGIC: &[u8; 8] = b"BCHKIDX\0";
/// The format version written and read.
pub const VERSION: u32 = 1;
/// Bytes of the fixed header before the breach table.
pub(super) const FIXED_HEADER_LEN: usize = 140;
/// Bytes of one directory entry.
pub(super) const DIR_ENTRY_LEN: usize = 16;
/// Largest breach table accepted.
pub(super) const MAX_BREACH_TABLE: usize = 1 << 20;
/// Most breaches one index can label (label width ≤ 4 bytes).
pub(super) const MAX_BREACHES: usize = 32;

/// Public metadata of one breach, as stored in the index and sent in `IndexInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreachMeta {
    /// Short stable identifier.
    pub id: String,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// ISO 8601 date.
    #[serde(default)]
    pub date: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Kinds of data exposed.
    #[serde(default)]
    pub data_classes: Vec<String>,
}

/// The decoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// RFC 9497 mode id.
    pub mode: u8,
    /// k.
    pub bucket_bits: u32,
    /// f.
    pub fingerprint_bits: u32,
    /// W.
    pub label_width: u8,
    /// P: entries per bucket after padding.
    pub bucket_entries: u32,
    /// Distinct numbers.
    pub entry_count: u64,
    /// Bytes of directory plus payloads.
    pub body_len: u64,
    /// SerializeElement(pkS).
    pub public_key: [u8; 32],
    /// BLAKE3 of the body.
    pub index_id: [u8; 32],
    /// BLAKE3 of the directory.
    pub directory_hash: [u8; 32],
    /// The breaches, in label-bit order.
    pub breaches: Vec<BreachMeta>,
}

impl Header {
    /// Number of buckets, `2^k`.
    pub fn bucket_count(&self) -> usize {
        1usize << self.bucket_bits
    }

    /// Bytes of the directory.
    pub fn directory_len(&self) -> usize {
        self.bucket_count() * DIR_ENTRY_LEN
    }

    /// Serializes the header, checksum included.
    pub fn encode(&self) -> Vec<u8> {
        let breaches = serde_json::to_vec(&self.breaches).unwrap_or_else(|_| b"[]".to_vec());
        let header_len = FIXED_HEADER_LEN + breaches.len() + 32;
        let mut h = Vec::with_capacity(header_len);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&(header_len as u32).to_le_bytes());
        h.push(self.mode);
        h.push(self.bucket_bits as u8);
        h.push(self.fingerprint_bits as u8);
        h.push(self.label_width);
        h.extend_from_slice(&self.bucket_entries.to_le_bytes());
        h.extend_from_slice(&self.entry_count.to_le_bytes());
        h.extend_from_slice(&self.body_len.to_le_bytes());
        h.extend_from_slice(&self.public_key);
        h.extend_from_slice(&self.index_id);
        h.extend_from_slice(&self.directory_hash);
        h.extend_from_slice(&(breaches.len() as u32).to_le_bytes());
        h.extend_from_slice(&breaches);
        let sum = blake3::hash(&h);
        h.extend_from_slice(sum.as_bytes());
        h
    }

    /// Parses and checks a header from the start of a file of `file_len`
    /// bytes. Returns the header and its length.
    ///
    /// # Errors
    ///
    /// The [`IndexFault`] of the first check that fails.
    pub fn decode(bytes: &[u8], file_len: u64) -> Result<(Self, usize), IndexFault> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(if bytes.len() < MAGIC.len() {
                IndexFault::Truncated
            } else {
                IndexFault::WrongMagic
            });
        }
        let fixed = bytes.get(..FIXED_HEADER_LEN).ok_or(IndexFault::Truncated)?;
        let version = u32_at(fixed, 8);
        if version != VERSION {
            return Err(IndexFault::UnsupportedVersion(version));
        }
        let header_len = u32_at(fixed, 12) as usize;
        let breach_len = u32_at(fixed, 136) as usize;
        if breach_len > MAX_BREACH_TABLE || header_len != FIXED_HEADER_LEN + breach_len + 32 {
            return Err(IndexFault::Field("header length"));
        }
        let header = bytes.get(..header_len).ok_or(IndexFault::Truncated)?;
        let (content, sum) = header.split_at(header_len - 32);
        if blake3::hash(content).as_bytes() != sum {
            return Err(IndexFault::HeaderChecksum);
        }
        let h = Header {
            mode: fixed[16],
            bucket_bits: u32::from(fixed[17]),
            fingerprint_bits: u32::from(fixed[18]),
            label_width: fixed[19],
            bucket_entries: u32_at(fixed, 20),
            entry_count: u64_at(fixed, 24),
            body_len: u64_at(fixed, 32),
            public_key: arr32(fixed, 40),
            index_id: arr32(fixed, 72),
            directory_hash: arr32(fixed, 104),
            breaches: serde_json::from_slice(&content[FIXED_HEADER_LEN..])
                .map_err(|_| IndexFault::Field("breach table"))?,
        };
        if h.mode != 1 {
            return Err(IndexFault::Field("mode"));
        }
        if h.bucket_bits > breachcheck_proto::MAX_BUCKET_BITS {
            return Err(IndexFault::Field("bucket_bits"));
        }
        if !(1..=64).contains(&h.fingerprint_bits) {
            return Err(IndexFault::Field("fingerprint_bits"));
        }
        if usize::from(h.label_width) > MAX_BREACHES / 8 || h.breaches.len() > MAX_BREACHES {
            return Err(IndexFault::Field("label_width"));
        }
        let expected = (header_len as u64).checked_add(h.body_len);
        match expected {
            Some(e) if e > file_len => return Err(IndexFault::Truncated),
            Some(e) if e < file_len => return Err(IndexFault::TrailingBytes),
            None => return Err(IndexFault::Field("body_len")),
            Some(_) => {}
        }
        if (h.directory_len() as u64) > h.body_len {
            return Err(IndexFault::Truncated);
        }
        Ok((h, header_len))
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn arr32(b: &[u8], at: usize) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[at..at + 32]);
    a
}

/// One directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry {
    /// Offset of the payload from the start of the body.
    pub offset: u64,
    /// Payload length.
    pub len: u32,
    /// Real (non-padding) entries in the bucket.
    pub real_entries: u32,
}

impl DirEntry {
    /// Serializes the entry (16 bytes).
    pub fn encode(&self) -> [u8; DIR_ENTRY_LEN] {
        let mut out = [0u8; DIR_ENTRY_LEN];
        out[..8].copy_from_slice(&self.offset.to_le_bytes());
        out[8..12].copy_from_slice(&self.len.to_le_bytes());
        out[12..].copy_from_slice(&self.real_entries.to_le_bytes());
        out
    }

    /// Parses entry `i` of a directory.
    pub fn decode(dir: &[u8], i: usize) -> Self {
        let at = i * DIR_ENTRY_LEN;
        DirEntry {
            offset: u64_at(dir, at),
            len: u32_at(dir, at + 8),
            real_entries: u32_at(dir, at + 12),
        }
    }
}
