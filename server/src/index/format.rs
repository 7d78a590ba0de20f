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

use breachcheck_proto::{CodecError, Reader};
use serde::{Deserialize, Serialize};

use crate::error::IndexFault;

/// The first 8 bytes of every index file.
pub const MAGIC: &[u8; 8] = b"BCHKIDX\0";
/// The format version written and read.
pub const VERSION: u32 = 1;
/// Bytes of the fixed header before the breach table.
pub(crate) const FIXED_HEADER_LEN: usize = 140;
/// Bytes of one directory entry.
pub(crate) const DIR_ENTRY_LEN: usize = 16;
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
        let body_len = r.u64_le()?;
        let public_key = r.array()?;
        let index_id = r.array()?;
        let directory_hash = r.array()?;
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
            body_len,
            public_key,
            index_id,
            directory_hash,
            breaches: serde_json::from_slice(breach_table)
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

    /// Reads one entry at the cursor.
    ///
    /// # Errors
    ///
    /// [`CodecError::Truncated`] if fewer than 16 bytes are left.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(DirEntry {
            offset: r.u64_le()?,
            len: r.u32_le()?,
            real_entries: r.u32_le()?,
        })
    }

    /// Parses exactly one entry (16 bytes).
    ///
    /// # Errors
    ///
    /// [`IndexFault::Truncated`] or [`IndexFault::TrailingBytes`].
    pub fn decode(bytes: &[u8]) -> Result<Self, IndexFault> {
        let mut r = Reader::new(bytes);
        let e = Self::read(&mut r)?;
        r.finish()?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_entry_round_trips_and_rejects_wrong_lengths() {
        let e = DirEntry {
            offset: 1 << 40,
            len: 77,
            real_entries: 5,
        };
        assert_eq!(DirEntry::decode(&e.encode()), Ok(e));
        assert_eq!(
            DirEntry::decode(&e.encode()[..15]),
            Err(IndexFault::Truncated)
        );
        let mut long = e.encode().to_vec();
        long.push(0);
        assert_eq!(DirEntry::decode(&long), Err(IndexFault::TrailingBytes));
    }

    #[test]
    fn header_round_trips_and_short_prefixes_are_truncated() {
        let h = Header {
            mode: 1,
            bucket_bits: 0,
            fingerprint_bits: 40,
            label_width: 0,
            bucket_entries: 1,
            entry_count: 1,
            body_len: DIR_ENTRY_LEN as u64,
            public_key: [1; 32],
            index_id: [2; 32],
            directory_hash: [3; 32],
            breaches: vec![BreachMeta {
                id: "b".into(),
                ..Default::default()
            }],
        };
        let mut file = h.encode();
        let header_len = file.len();
        file.extend_from_slice(&[0; DIR_ENTRY_LEN]);
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
