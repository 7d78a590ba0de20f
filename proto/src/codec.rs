//! The one byte cursor every fixed-layout decoder reads through: the index
//! header and directory, the bucket payload header and the build's spill
//! records.
//!
//! Modelled on rustls `msgs/codec.rs` `Reader`: every read is bounds-checked
//! and fails instead of panicking, integers are little-endian, and
//! [`Reader::finish`] fails when bytes are left over, so a layout is parsed
//! exactly or not at all.

/// Why a fixed layout did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Fewer bytes than the layout needs.
    #[error("truncated")]
    Truncated,
    /// Bytes left over after the layout ended.
    #[error("trailing bytes")]
    TrailingBytes,
}

/// A forward-only cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    ///
    /// [`CodecError::Truncated`] if fewer than `n` bytes are left; the cursor
    /// does not move then.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).ok_or(CodecError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(CodecError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// The next `N` bytes as an array.
    ///
    /// # Errors
    ///
    /// [`CodecError::Truncated`].
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// One byte.
    ///
    /// # Errors
    ///
    /// [`CodecError::Truncated`].
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian `u16`.
    ///
    /// # Errors
    ///
    /// [`CodecError::Truncated`].
    pub fn u16_le(&mut self) -> Result<u16, CodecError> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    ///
    /// # Errors
    ///
    /// [`CodecError::Truncated`].
    pub fn u32_le(&mut self) -> Result<u32, CodecError> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    ///
    /// # Errors
    ///
    /// [`CodecError::Truncated`].
    pub fn u64_le(&mut self) -> Result<u64, CodecError> {
        self.array().map(u64::from_le_bytes)
    }

    /// Everything not read yet; the cursor moves to the end.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        self.pos = self.buf.len();
        rest
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Ends the layout.
    ///
    /// # Errors
    ///
    /// [`CodecError::TrailingBytes`] if anything is left unread.
    pub fn finish(self) -> Result<(), CodecError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(CodecError::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_little_endian_fields_in_order() {
        let bytes = [1u8, 2, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 9, 9];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16_le(), Ok(2));
        assert_eq!(r.u32_le(), Ok(3));
        assert_eq!(r.u64_le(), Ok(4));
        assert_eq!(r.position(), 15);
        assert_eq!(r.array::<2>(), Ok([9, 9]));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn short_reads_fail_and_do_not_move() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32_le(), Err(CodecError::Truncated));
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.take(usize::MAX), Err(CodecError::Truncated));
        assert_eq!(r.take(2), Ok(&[1u8, 2][..]));
    }

    #[test]
    fn finish_rejects_leftovers() {
        let mut r = Reader::new(&[1, 2]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.clone().finish(), Err(CodecError::TrailingBytes));
        assert_eq!(r.rest(), &[2]);
        assert_eq!(r.finish(), Ok(()));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_reads(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                           ops in proptest::collection::vec(0u8..6, 0..32)) {
            let mut r = Reader::new(&bytes);
            for op in ops {
                let _ = match op {
                    0 => r.u8().map(drop),
                    1 => r.u16_le().map(drop),
                    2 => r.u32_le().map(drop),
                    3 => r.u64_le().map(drop),
                    4 => r.array::<32>().map(drop),
                    _ => r.take(7).map(drop),
                };
            }
            prop_assert!(r.position() <= bytes.len());
        }
    }
}
