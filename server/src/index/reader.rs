//! The served index: read whole into memory, checked, and its bucket Merkle
//! tree built once.
//!
//! Why memory and not a map: a mapped file that an operator truncates or
//! copies over while it is served (`cp other.idx served.idx`) makes the
//! process die of SIGBUS, or serve bytes that are not the ones its index id
//! names. A private copy costs RAM equal to the file (2.3 GB at Weibo
//! scale) and makes both impossible: the bytes served are exactly the bytes
//! checked against the bucket root at load, whatever happens to the file.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use breachcheck_proto::{MerkleTree, PublicKey, ServerKey, leaf_hash};
use prost::bytes::Bytes;
use rayon::prelude::*;

use crate::error::{IndexFault, Result, ServerError, io_err};
use crate::index::format::Header;

/// An open, structurally checked index. Cloning is cheap (the bytes are
/// shared).
#[derive(Debug, Clone)]
pub struct Index {
    inner: Arc<Inner>,
}

/// What identifies a file's contents cheaply: device, inode, length and
/// modification time. Two equal stamps are taken to be the same bytes; a
/// `cp` over the file, a `truncate` or a rename of another file over it each
/// change the stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    /// The stamp of `meta`.
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        FileStamp {
            dev,
            ino,
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// The file's stamp when it was opened.
    stamp: FileStamp,
    bytes: Bytes,
    header: Header,
    header_len: usize,
    /// Built by [`Index::verify`]; only ever holds a tree whose root is the
    /// header's bucket root.
    tree: OnceLock<MerkleTree>,
}

impl Index {
    /// Reads `path` into memory and checks magic, version, lengths, the
    /// header checksum and that the index id commits to the header's layout
    /// and bucket root. The payloads are checked against the root by
    /// [`Index::verify`].
    ///
    /// # Errors
    ///
    /// [`ServerError::Io`] or [`ServerError::BadIndexFile`] naming the fault.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |reason| ServerError::BadIndexFile {
            path: path.to_owned(),
            reason,
        };
        let mut file = File::open(path).map_err(io_err(path))?;
        let meta = file.metadata().map_err(io_err(path))?;
        let (len, stamp) = (meta.len(), FileStamp::of(&meta));
        if len == 0 {
            return Err(bad(IndexFault::Truncated));
        }
        // Check the header before reserving memory for the whole file.
        let mut head = vec![0u8; len.min(64 << 10) as usize];
        file.read_exact(&mut head).map_err(io_err(path))?;
        let (header, header_len) = Header::decode(&head, len).map_err(bad)?;
        let mut bytes = Vec::with_capacity(len as usize);
        bytes.extend_from_slice(&head);
        drop(head);
        // Read exactly what the header promised; a file that shrank or grew
        // since its length was taken is refused, never half-served.
        file.take(len - bytes.len() as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(path))?;
        match (bytes.len() as u64).cmp(&len) {
            std::cmp::Ordering::Less => return Err(bad(IndexFault::Truncated)),
            std::cmp::Ordering::Greater => return Err(bad(IndexFault::TrailingBytes)),
            std::cmp::Ordering::Equal => {}
        }
        Ok(Index {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                stamp,
                bytes: Bytes::from(bytes),
                header,
                header_len,
                tree: OnceLock::new(),
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

    /// Hashes every payload into the bucket Merkle tree (on all cores) and
    /// compares its root with the header's; on success keeps the tree, which
    /// [`Index::bucket_proof`] needs.
    ///
    /// # Errors
    ///
    /// [`ServerError::BadIndexFile`] with [`IndexFault::BodyChecksum`].
    pub fn verify(&self) -> Result<()> {
        if self.inner.tree.get().is_some() {
            return Ok(());
        }
        let leaves: Vec<[u8; 32]> = (0..self.header().bucket_count() as u32)
            .into_par_iter()
            .map(|b| leaf_hash(b, self.bucket(b).unwrap_or_default()))
            .collect();
        let tree = MerkleTree::from_leaves(leaves).map_err(ServerError::Protocol)?;
        if tree.root() != self.inner.header.bucket_root {
            return Err(ServerError::BadIndexFile {
                path: self.inner.path.clone(),
                reason: IndexFault::BodyChecksum,
            });
        }
        let _ = self.inner.tree.set(tree);
        Ok(())
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.inner.header
    }

    /// The index id.
    pub fn index_id(&self) -> &[u8; 32] {
        &self.inner.header.index_id
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The stamp the file had when it was read.
    pub(crate) fn stamp(&self) -> FileStamp {
        self.inner.stamp
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> usize {
        self.inner.bytes.len()
    }

    /// The fingerprint of the index's public key.
    pub fn public_key_fingerprint(&self) -> String {
        PublicKey::from_bytes(&self.inner.header.public_key)
            .map(|pk| pk.fingerprint())
            .unwrap_or_else(|_| "invalid".into())
    }

    /// Where bucket `b`'s payload lies in the file, if `b` exists.
    fn span(&self, b: u32) -> Option<std::ops::Range<usize>> {
        let h = &self.inner.header;
        if b as usize >= h.bucket_count() {
            return None;
        }
        let len = h.payload_len as usize;
        let start = self
            .inner
            .header_len
            .checked_add((b as usize).checked_mul(len)?)?;
        let end = start.checked_add(len)?;
        (end <= self.inner.bytes.len()).then_some(start..end)
    }

    /// The payload bytes of bucket `b`.
    pub fn bucket(&self, b: u32) -> Option<&[u8]> {
        self.inner.bytes.get(self.span(b)?)
    }

    /// The payload of bucket `b` as a shared, zero-copy `Bytes`.
    pub fn bucket_bytes(&self, b: u32) -> Option<Bytes> {
        Some(self.inner.bytes.slice(self.span(b)?))
    }

    /// Bucket `b`'s Merkle proof (its `k` sibling hashes, leaf level first);
    /// `None` before a successful [`Index::verify`] or for a bucket outside
    /// the index.
    pub fn bucket_proof(&self, b: u32) -> Option<Vec<u8>> {
        self.inner.tree.get()?.proof(b)
    }
}
