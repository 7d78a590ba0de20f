//! The index file layout (docs/PROTOCOL.md §5). All integers little-endian.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "BCHKIDX\0"
//! 8       4     format version (2)
//! 12      4     header_len H (bytes from offset 0 to the end of the header checksum)
//! 16      1     mode (1 = VOPRF)
//! 17      1     bucket_bits k
//! 18      1     fingerprint_bits f
//! 19      1     label_width W (bytes per label; 0 = no labels)
//! 20      4     bucket_entries P (entries per bucket after padding)
//! 24      8     entry_count (distinct numbers, padding excluded)
//! 32      4     payload_len L (bytes of every bucket payload)
//! 36      4     reserved, 0
//! 40      32    public key (SerializeElement(pkS))
//! 72      32    bucket_root: root of the bucket Merkle tree (PROTOCOL.md §6)
//! 104     32    index_id = IndexLayout(pkS, k, f, P, L).index_id(bucket_root)
//! 136     4     breach_len B
//! 140     B     breach table: JSON array of {id, name, date, description, data_classes}
//! 140+B   32    BLAKE3(bytes 0 .. 140+B)
//! H       L·2^k payloads, in bucket order, each exactly L bytes
//! ```
//!
//! Version 2 has no directory: every payload has the same length, so bucket
//! `b` starts at `H + b·L`, and nothing in the file tells how many real
//! entries a bucket holds (version 1 stored those counts, which let anyone
//! holding the file prove a bucket empty offline).

use breachcheck_proto::{IndexLayout, Reader};
use serde::{Deserialize, Serialize};

use crate::error::IndexFault;

/// The first 8 bytes of every index file.
pub const MAGIC: &[u8; 8] = b"BCHKIDX\0";
/// The format version written and read.
pub const VERSION: u32 = 2;
/// Bytes of the fixed header before the breach table.
pub(crate) const FIXED_HEADER_LEN: usize = 140;
/// Largest breach table accepted.
pub(crate) const MAX_BREACH_TABLE: usize = 1 << 20;
/// Most breaches one index can label (label width ≤ 4 bytes).
pub(crate) const MAX_BREACHES: usize = 32;

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
    /// L: bytes of every bucket payload.
    pub payload_len: u32,
    /// SerializeElement(pkS).
    pub public_key: [u8; 32],
    /// The root of the bucket Merkle tree.
    pub bucket_root: [u8; 32],
    /// The index id: binds the key, the layout and the bucket root.
    pub index_id: [u8; 32],
    /// The breaches, in label-bit order.
    pub breaches: Vec<BreachMeta>,
}

impl Header {
    /// Number of buckets, `2^k`.
    pub fn bucket_count(&self) -> usize {
        1usize << self.bucket_bits
    }

    /// Bytes of all payloads, `L·2^k`.
    pub fn body_len(&self) -> u64 {
        u64::from(self.payload_len) << self.bucket_bits
    }

    /// What the index id commits to besides the bucket root.
    pub fn layout(&self) -> IndexLayout {
        IndexLayout {
            public_key: self.public_key,
            bucket_bits: self.bucket_bits,
            fingerprint_bits: self.fingerprint_bits,
            bucket_entries: self.bucket_entries,
            payload_len: self.payload_len,
        }
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
        h.extend_from_slice(&self.payload_len.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&self.public_key);
        h.extend_from_slice(&self.bucket_root);
        h.extend_from_slice(&self.index_id);
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
        let magic = Reader::new(bytes).take(MAGIC.len())?;
        if magic != MAGIC {
            return Err(IndexFault::WrongMagic);
        }
        let fixed = Reader::new(bytes).take(FIXED_HEADER_LEN)?;
        let mut r = Reader::new(fixed);
        r.take(MAGIC.len())?;
        let version = r.u32_le()?;
        if version != VERSION {
            return Err(IndexFault::UnsupportedVersion(version));
        }
        let header_len = r.u32_le()? as usize;
        let mode = r.u8()?;
        let bucket_bits = u32::from(r.u8()?);
        let fingerprint_bits = u32::from(r.u8()?);
        let label_width = r.u8()?;
        let bucket_entries = r.u32_le()?;
        let entry_count = r.u64_le()?;
        let payload_len = r.u32_le()?;
        let reserved = r.u32_le()?;
        let public_key = r.array()?;
        let bucket_root = r.array()?;
        let index_id = r.array()?;
        let breach_len = r.u32_le()? as usize;
        r.finish()?;
        if breach_len > MAX_BREACH_TABLE || header_len != FIXED_HEADER_LEN + breach_len + 32 {
            return Err(IndexFault::Field("header length"));
        }
        // The whole header, exactly: fixed part, breach table, checksum.
        let header = Reader::new(bytes).take(header_len)?;
        let mut r = Reader::new(header);
        r.take(FIXED_HEADER_LEN)?;
        let breach_table = r.take(breach_len)?;
        let sum: [u8; 32] = r.array()?;
        r.finish()?;
        if blake3::hash(&header[..header_len - 32]).as_bytes() != &sum {
            return Err(IndexFault::HeaderChecksum);
        }
        let h = Header {
            mode,
            bucket_bits,
            fingerprint_bits,
            label_width,
            bucket_entries,
            entry_count,
            payload_len,
            public_key,
            bucket_root,
            index_id,
            breaches: serde_json::from_slice(breach_table)
                .map_err(|_| IndexFault::Field("breach table"))?,
        };
        if reserved != 0 {
            return Err(IndexFault::Field("reserved"));
        }
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
        if (h.payload_len as usize) < breachcheck_proto::PAYLOAD_HEADER_LEN {
            return Err(IndexFault::Field("payload_len"));
        }
        if h.layout().index_id(&h.bucket_root) != h.index_id {
            return Err(IndexFault::Field("index_id"));
        }
        match (header_len as u64).checked_add(h.body_len()) {
            Some(e) if e > file_len => return Err(IndexFault::Truncated),
            Some(e) if e < file_len => return Err(IndexFault::TrailingBytes),
            None => return Err(IndexFault::Field("payload_len")),
            Some(_) => {}
        }
        Ok((h, header_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_short_prefixes_are_truncated() {
        let mut h = Header {
            mode: 1,
            bucket_bits: 0,
            fingerprint_bits: 40,
            label_width: 0,
            bucket_entries: 1,
            entry_count: 1,
            payload_len: 20,
            public_key: [1; 32],
            bucket_root: [2; 32],
            index_id: [0; 32],
            breaches: vec![BreachMeta {
                id: "b".into(),
                ..Default::default()
            }],
        };
        h.index_id = h.layout().index_id(&h.bucket_root);
        let mut file = h.encode();
        let header_len = file.len();
        file.extend_from_slice(&[0; 20]);
        let len = file.len() as u64;
        assert_eq!(Header::decode(&file, len), Ok((h, header_len)));
        for cut in [0, 4, 8, 100, FIXED_HEADER_LEN, header_len - 1] {
            assert_eq!(
                Header::decode(&file[..cut], len).map(|_| ()),
                Err(IndexFault::Truncated),
                "cut at {cut}"
            );
        }
    }
}
