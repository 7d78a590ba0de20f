//! The read-only, memory-mapped index.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use breachcheck_proto::{PublicKey, Reader, ServerKey};
use memmap2::Mmap;

use crate::error::{IndexFault, Result, ServerError, io_err};
use crate::index::format::{DIR_ENTRY_LEN, DirEntry, Header};

/// An open, validated index. Cloning is cheap (the map is shared).
#[derive(Debug, Clone)]
pub struct Index {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    map: Mmap,
    header: Header,
    header_len: usize,
}

impl Index {
    /// Maps `path` read-only and validates magic, version, lengths, the header
    /// and directory checksums and every directory entry. The body hash is
    /// checked by [`Index::verify`], on demand.
    ///
    /// # Errors
    ///
    /// [`ServerError::Io`] or [`ServerError::BadIndexFile`] naming the fault.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |reason| ServerError::BadIndexFile {
            path: path.to_owned(),
            reason,
        };
        let file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        if len == 0 {
            return Err(bad(IndexFault::Truncated));
        }
        let map = map_readonly(&file).map_err(io_err(path))?;
        let (header, header_len) = Header::decode(&map, len).map_err(bad)?;
        let dir = map
            .get(header_len..header_len + header.directory_len())
            .ok_or_else(|| bad(IndexFault::Truncated))?;
        if blake3::hash(dir).as_bytes() != &header.directory_hash {
            return Err(bad(IndexFault::DirectoryChecksum));
        }
        let mut r = Reader::new(dir);
        for _ in 0..header.bucket_count() {
            let e = DirEntry::read(&mut r).map_err(|e| bad(e.into()))?;
            let end = e.offset.checked_add(u64::from(e.len));
            if e.offset < header.directory_len() as u64
                || end.is_none_or(|end| end > header.body_len)
            {
                return Err(bad(IndexFault::Directory));
            }
        }
        r.finish().map_err(|e| bad(e.into()))?;
        let _ = map.advise(memmap2::Advice::Random);
        Ok(Index {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                map,
                header,
                header_len,
            }),
        })
    }

    /// Opens the index and checks that `key` is the key it was built with.
    ///
    /// # Errors
    ///
    /// As [`Index::open`], plus [`ServerError::KeyMismatch`].
    pub fn open_with_key(path: &Path, key: &ServerKey) -> Result<Self> {
        let index = Self::open(path)?;
        index.check_key(key)?;
        Ok(index)
    }

    /// Checks that `key`'s public key is the index's.
    ///
    /// # Errors
    ///
    /// [`ServerError::KeyMismatch`].
    pub fn check_key(&self, key: &ServerKey) -> Result<()> {
        if key.public_key().as_bytes() != &self.inner.header.public_key {
            return Err(ServerError::KeyMismatch {
                index: self.public_key_fingerprint(),
                key: key.public_key().fingerprint(),
            });
        }
        Ok(())
    }

    /// Hashes the whole body and compares it with the index id.
    ///
    /// # Errors
    ///
    /// [`ServerError::BadIndexFile`] with [`IndexFault::BodyChecksum`].
    pub fn verify(&self) -> Result<()> {
        let body = &self.inner.map[self.inner.header_len..];
        let mut h = blake3::Hasher::new();
        h.update_rayon(body);
        if h.finalize().as_bytes() != &self.inner.header.index_id {
            return Err(ServerError::BadIndexFile {
                path: self.inner.path.clone(),
                reason: IndexFault::BodyChecksum,
            });
        }
        Ok(())
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.inner.header
    }

    /// The index id (BLAKE3 of the body).
    pub fn index_id(&self) -> &[u8; 32] {
        &self.inner.header.index_id
    }

    /// The file it was opened from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> usize {
        self.inner.map.len()
    }

    /// The fingerprint of the index's public key.
    pub fn public_key_fingerprint(&self) -> String {
        PublicKey::from_bytes(&self.inner.header.public_key)
            .map(|pk| pk.fingerprint())
            .unwrap_or_else(|_| "invalid".into())
    }

    /// The directory entry of bucket `b`, if it exists.
    pub fn dir_entry(&self, b: u32) -> Option<DirEntry> {
        let i = b as usize;
        if i >= self.inner.header.bucket_count() {
            return None;
        }
        let start = self
            .inner
            .header_len
            .checked_add(i.checked_mul(DIR_ENTRY_LEN)?)?;
        let bytes = self
            .inner
            .map
            .get(start..start.checked_add(DIR_ENTRY_LEN)?)?;
        DirEntry::decode(bytes).ok()
    }

    /// The payload bytes of bucket `b`, borrowed from the map (no copy).
    pub fn bucket(&self, b: u32) -> Option<&[u8]> {
        let e = self.dir_entry(b)?;
        let start = self.inner.header_len + usize::try_from(e.offset).ok()?;
        self.inner.map.get(start..start + e.len as usize)
    }

    /// The payload of bucket `b` as a shared, zero-copy `Bytes` that keeps
    /// the map alive.
    pub fn bucket_bytes(&self, b: u32) -> Option<prost::bytes::Bytes> {
        let e = self.dir_entry(b)?;
        let start = self.inner.header_len + usize::try_from(e.offset).ok()?;
        let end = start + e.len as usize;
        if end > self.inner.map.len() {
            return None;
        }
        Some(prost::bytes::Bytes::from_owner(MapSlice(self.inner.clone())).slice(start..end))
    }
}

/// Lets `Bytes` borrow the whole map while holding the index alive.
struct MapSlice(Arc<Inner>);

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.0.map
    }
}

#[allow(unsafe_code)]
fn map_readonly(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the map is read-only and the file is never modified in place:
    // builds write a new file and rename it over the old name, which leaves
    // existing maps of the old inode intact.
    unsafe { Mmap::map(file) }
}
