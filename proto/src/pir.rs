//! The PIR row layout of an index (docs/PROTOCOL.md §10): how a bucket
//! becomes one row of the database a single-server PIR scheme answers from,
//! so a client can fetch its bucket without the server learning which.
//!
//! * Row `b` is bucket `b`: `payload(b) || proof(b) || zeros`, where
//!   `proof(b)` is the bucket's Merkle proof (`32·k` bytes, §6) and the
//!   zeros fill the row to `instances · 3,584` bytes. The client verifies
//!   the decoded row like a `GetBuckets` chunk, against the pinned index id.
//! * The row's bytes are read as a little-endian bit string and cut into
//!   14-bit symbols (the plaintext modulus `p = 2^14` of the scheme),
//!   symbol `i` being bits `14·i .. 14·i + 14`; an instance is 2,048 symbols
//!   (one ring element of degree 2,048), exactly 3,584 bytes.
//! * The scheme's public setup seed is derived from the index id, so a
//!   client never uses a setup the server picked:
//!   `BLAKE3.derive_key("breachcheck v1 pir setup", index_id)`.
//!
//! This module is the layout alone; the PIR scheme sits behind the `pir`
//! modules of the server and the client.

use crate::merkle::MERKLE_HASH_LEN;

/// Bits of one plaintext symbol (`p = 2^14`).
pub const PIR_SYMBOL_BITS: usize = 14;
/// Symbols of one instance (the ring degree).
pub const PIR_INSTANCE_SYMBOLS: usize = 2048;
/// Bytes of one instance: 2,048 symbols of 14 bits.
pub const PIR_INSTANCE_BYTES: usize = PIR_INSTANCE_SYMBOLS * PIR_SYMBOL_BITS / 8;
/// Fewest rows (bucket bits) a PIR index has: the scheme's smallest shape.
pub const PIR_MIN_BUCKET_BITS: u32 = 11;
/// Most instances a row may span (its server work and answer grow with it).
pub const PIR_MAX_INSTANCES: usize = 5;
/// BLAKE3 key-derivation context of the public setup seed.
pub const PIR_SETUP_CONTEXT: &str = "breachcheck v1 pir setup";

/// The PIR shape of an index: `2^k` rows of `instances` instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PirShape {
    /// Bucket bits `k`: the database has `2^k` rows.
    pub bucket_bits: u32,
    /// Bytes of every bucket payload.
    pub payload_len: u32,
    /// Instances per row.
    pub instances: usize,
}

/// Why an index cannot be served by PIR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PirShapeError {
    /// Fewer than `2^11` buckets.
    #[error(
        "the index has 2^{bucket_bits} buckets; PIR needs at least 2^{PIR_MIN_BUCKET_BITS} (build it with --pir)"
    )]
    TooFewRows {
        /// The index's bucket bits.
        bucket_bits: u32,
    },
    /// A bucket and its proof do not fit in [`PIR_MAX_INSTANCES`] instances.
    #[error(
        "a bucket and its proof take {row_bytes} bytes; a PIR row holds at most {} (build it with --pir)",
        PIR_MAX_INSTANCES * PIR_INSTANCE_BYTES
    )]
    RowTooLarge {
        /// Payload and proof bytes.
        row_bytes: usize,
    },
}

impl PirShape {
    /// The shape of an index of `2^bucket_bits` buckets of `payload_len`
    /// bytes.
    ///
    /// # Errors
    ///
    /// [`PirShapeError`] when the index has too few buckets or too large ones.
    pub fn new(bucket_bits: u32, payload_len: u32) -> Result<Self, PirShapeError> {
        if bucket_bits < PIR_MIN_BUCKET_BITS {
            return Err(PirShapeError::TooFewRows { bucket_bits });
        }
        let row_bytes = payload_len as usize + MERKLE_HASH_LEN * bucket_bits as usize;
        let instances = row_bytes.div_ceil(PIR_INSTANCE_BYTES).max(1);
        if instances > PIR_MAX_INSTANCES {
            return Err(PirShapeError::RowTooLarge { row_bytes });
        }
        Ok(PirShape {
            bucket_bits,
            payload_len,
            instances,
        })
    }

    /// Rows of the database (`2^k`).
    pub fn rows(&self) -> usize {
        1usize << self.bucket_bits
    }

    /// Bytes of the payload and proof a row carries.
    pub fn content_len(&self) -> usize {
        self.payload_len as usize + MERKLE_HASH_LEN * self.bucket_bits as usize
    }

    /// Bytes of a whole row, padding included.
    pub fn row_len(&self) -> usize {
        self.instances * PIR_INSTANCE_BYTES
    }

    /// Symbols of a row.
    pub fn row_symbols(&self) -> usize {
        self.instances * PIR_INSTANCE_SYMBOLS
    }

    /// The row of a bucket: its payload, its proof, zeros.
    ///
    /// # Errors
    ///
    /// [`crate::ProtocolError::InvalidInput`] if the payload or proof has not
    /// this shape's length.
    pub fn row(&self, payload: &[u8], proof: &[u8]) -> crate::Result<Vec<u8>> {
        if payload.len() != self.payload_len as usize
            || proof.len() != MERKLE_HASH_LEN * self.bucket_bits as usize
        {
            return Err(crate::ProtocolError::InvalidInput);
        }
        let mut row = Vec::with_capacity(self.row_len());
        row.extend_from_slice(payload);
        row.extend_from_slice(proof);
        row.resize(self.row_len(), 0);
        Ok(row)
    }

    /// Splits a decoded row into its payload and proof; `None` if it has
    /// not this shape's length or its padding is not zeros (a wrong row).
    pub fn split<'a>(&self, row: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        if row.len() != self.row_len() {
            return None;
        }
        let (content, padding) = row.split_at(self.content_len());
        if padding.iter().any(|&b| b != 0) {
            return None;
        }
        Some(content.split_at(self.payload_len as usize))
    }
}

/// The 14-bit symbols of `bytes` (a little-endian bit string), the last
/// one zero-filled.
pub fn bytes_to_symbols(bytes: &[u8]) -> Vec<u16> {
    let mut out = Vec::with_capacity((bytes.len() * 8).div_ceil(PIR_SYMBOL_BITS));
    let (mut acc, mut bits) = (0u32, 0usize);
    for &b in bytes {
        acc |= u32::from(b) << bits;
        bits += 8;
        while bits >= PIR_SYMBOL_BITS {
            out.push((acc & 0x3FFF) as u16);
            acc >>= PIR_SYMBOL_BITS;
            bits -= PIR_SYMBOL_BITS;
        }
    }
    if bits > 0 {
        out.push((acc & 0x3FFF) as u16);
    }
    out
}

/// The bytes of 14-bit `symbols`, inverse of [`bytes_to_symbols`]; `None`
/// if a symbol does not fit 14 bits.
pub fn symbols_to_bytes(symbols: &[u64]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(symbols.len() * PIR_SYMBOL_BITS / 8);
    let (mut acc, mut bits) = (0u32, 0usize);
    for &s in symbols {
        if s >> PIR_SYMBOL_BITS != 0 {
            return None;
        }
        acc |= (s as u32) << bits;
        bits += PIR_SYMBOL_BITS;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    Some(out)
}

/// The public setup seed of the PIR scheme for index `index_id`.
pub fn pir_setup_seed(index_id: &[u8]) -> [u8; 32] {
    blake3::derive_key(PIR_SETUP_CONTEXT, index_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn symbols_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let symbols: Vec<u64> = bytes_to_symbols(&bytes).into_iter().map(u64::from).collect();
            prop_assert!(symbols.iter().all(|&s| s < 1 << 14));
            let back = symbols_to_bytes(&symbols).expect("14-bit symbols");
            prop_assert_eq!(&back[..bytes.len()], &bytes[..]);
            prop_assert!(back[bytes.len()..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn an_instance_is_2048_symbols() {
        assert_eq!(bytes_to_symbols(&[0xA5; PIR_INSTANCE_BYTES]).len(), 2048);
        assert_eq!(symbols_to_bytes(&[1 << 14]), None);
    }

    #[test]
    fn shapes() {
        assert_eq!(
            PirShape::new(10, 100),
            Err(PirShapeError::TooFewRows { bucket_bits: 10 })
        );
        let s = PirShape::new(11, 3000).expect("fits");
        assert_eq!((s.instances, s.rows(), s.row_len()), (1, 2048, 3584));
        assert_eq!(PirShape::new(11, 3232).expect("fits").instances, 1);
        assert_eq!(PirShape::new(11, 3233).expect("fits").instances, 2);
        assert!(matches!(
            PirShape::new(17, 17_921),
            Err(PirShapeError::RowTooLarge { .. })
        ));
    }

    #[test]
    fn rows_split_back_and_refuse_dirty_padding() {
        let s = PirShape::new(11, 10).expect("fits");
        let proof = vec![7u8; 32 * 11];
        let mut row = s.row(&[1; 10], &proof).expect("row");
        assert_eq!(s.split(&row), Some((&[1u8; 10][..], &proof[..])));
        assert!(s.row(&[1; 9], &proof).is_err());
        *row.last_mut().expect("padding") = 1;
        assert_eq!(s.split(&row), None);
        assert_eq!(s.split(&row[1..]), None);
    }
}
