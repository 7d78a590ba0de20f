//! The bucket Merkle tree: how a client checks that every bucket it receives
//! is a bucket of the index it pinned (docs/PROTOCOL.md §6).
//!
//! * `leaf(b) = BLAKE3.derive_key("breachcheck v1 bucket leaf", u32le(b) || payload(b))`
//!   for each of the `2^k` buckets `b`.
//! * `node(l, r) = BLAKE3.derive_key("breachcheck v1 bucket node", l || r)`;
//!   level 0 holds the leaves in bucket order, level `i + 1` holds
//!   `node(level_i[2n], level_i[2n + 1])`, level `k` is the bucket root.
//! * `index_id = BLAKE3.derive_key("breachcheck v1 index id", public_key ||
//!   u32le(k) || u32le(f) || u32le(bucket_entries) || u32le(payload_len) || root)`.
//!
//! A bucket's proof is its `k` sibling hashes, leaf level first (`32·k`
//! bytes). The index id binds the key, the layout and every byte of every
//! payload, so a client that pinned it can trust each bucket on its own,
//! whoever served it (the server, a replica, a CDN or its own disk cache).

/// BLAKE3 key-derivation context of a leaf.
pub const LEAF_CONTEXT: &str = "breachcheck v1 bucket leaf";
/// BLAKE3 key-derivation context of an inner node.
pub const NODE_CONTEXT: &str = "breachcheck v1 bucket node";
/// BLAKE3 key-derivation context of the index id.
pub const INDEX_ID_CONTEXT: &str = "breachcheck v1 index id";
/// Bytes of one hash in a proof.
pub const MERKLE_HASH_LEN: usize = 32;

/// The leaf hash of bucket `bucket` with payload `payload`.
pub fn leaf_hash(bucket: u32, payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(LEAF_CONTEXT);
    h.update(&bucket.to_le_bytes());
    h.update(payload);
    *h.finalize().as_bytes()
}

/// The hash of an inner node over its two children.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(NODE_CONTEXT);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// What the index id commits to besides the bucket root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLayout {
    /// The server's public key, SerializeElement(pkS).
    pub public_key: [u8; 32],
    /// Bucket bits `k`.
    pub bucket_bits: u32,
    /// Fingerprint bits `f`.
    pub fingerprint_bits: u32,
    /// Entries in every (padded) bucket payload.
    pub bucket_entries: u32,
    /// Bytes of every bucket payload.
    pub payload_len: u32,
}

impl IndexLayout {
    /// The index id of this layout with bucket root `root`.
    pub fn index_id(&self, root: &[u8; 32]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(INDEX_ID_CONTEXT);
        h.update(&self.public_key);
        h.update(&self.bucket_bits.to_le_bytes());
        h.update(&self.fingerprint_bits.to_le_bytes());
        h.update(&self.bucket_entries.to_le_bytes());
        h.update(&self.payload_len.to_le_bytes());
        h.update(root);
        *h.finalize().as_bytes()
    }
}

/// A whole tree over `2^k` leaves, kept by whoever serves buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// `levels[0]` are the leaves, the last level is the root alone.
    levels: Vec<Vec<[u8; 32]>>,
}

impl MerkleTree {
    /// The tree over `leaves` (in bucket order).
    ///
    /// # Errors
    ///
    /// [`crate::ProtocolError::InvalidPayload`] unless the number of leaves is
    /// a power of two.
    pub fn from_leaves(leaves: Vec<[u8; 32]>) -> Result<Self, crate::ProtocolError> {
        if !leaves.len().is_power_of_two() {
            return Err(crate::ProtocolError::InvalidPayload(
                "bucket count is not a power of two",
            ));
        }
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|l| l.len() > 1) {
            let up = below
                .chunks_exact(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
            levels.push(up);
        }
        Ok(MerkleTree { levels })
    }

    /// The bucket root.
    pub fn root(&self) -> [u8; 32] {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_default()
    }

    /// Tree depth `k` (`log2` of the leaf count).
    pub fn depth(&self) -> u32 {
        self.levels.len().saturating_sub(1) as u32
    }

    /// The proof of bucket `bucket`: its `k` sibling hashes, leaf level first,
    /// concatenated; `None` for a bucket outside the tree.
    pub fn proof(&self, bucket: u32) -> Option<Vec<u8>> {
        let mut i = bucket as usize;
        if i >= self.levels.first()?.len() {
            return None;
        }
        let mut out = Vec::with_capacity(MERKLE_HASH_LEN * self.depth() as usize);
        for level in &self.levels[..self.levels.len() - 1] {
            out.extend_from_slice(level.get(i ^ 1)?);
            i >>= 1;
        }
        Some(out)
    }
}

/// Checks that `payload` is bucket `bucket` of a tree of depth `k` with
/// root `root`, given its `proof` (`32·k` bytes, leaf level first).
pub fn verify_bucket(bucket: u32, payload: &[u8], proof: &[u8], k: u32, root: &[u8; 32]) -> bool {
    if proof.len() != MERKLE_HASH_LEN * k as usize || (k < 32 && bucket >> k != 0) {
        return false;
    }
    let mut acc = leaf_hash(bucket, payload);
    let mut i = bucket;
    for sibling in proof.chunks_exact(MERKLE_HASH_LEN) {
        let mut s = [0u8; 32];
        s.copy_from_slice(sibling);
        acc = if i & 1 == 0 {
            node_hash(&acc, &s)
        } else {
            node_hash(&s, &acc)
        };
        i >>= 1;
    }
    // The root is public; a plain comparison leaks nothing.
    &acc == root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tree(k: u32) -> (Vec<Vec<u8>>, MerkleTree) {
        let payloads: Vec<Vec<u8>> = (0..1u32 << k).map(|b| vec![b as u8; 5]).collect();
        let leaves = payloads
            .iter()
            .enumerate()
            .map(|(b, p)| leaf_hash(b as u32, p))
            .collect();
        (
            payloads,
            MerkleTree::from_leaves(leaves).expect("power of two"),
        )
    }

    #[test]
    fn every_bucket_verifies_against_the_root() {
        for k in [0, 1, 3, 6] {
            let (payloads, t) = tree(k);
            assert_eq!(t.depth(), k);
            for (b, p) in payloads.iter().enumerate() {
                let proof = t.proof(b as u32).expect("in range");
                assert_eq!(proof.len(), 32 * k as usize);
                assert!(verify_bucket(b as u32, p, &proof, k, &t.root()));
            }
            assert_eq!(t.proof(1 << k), None);
        }
    }

    #[test]
    fn a_tree_of_one_bucket_has_its_leaf_as_root() {
        let (payloads, t) = tree(0);
        assert_eq!(t.root(), leaf_hash(0, &payloads[0]));
    }

    #[test]
    fn altered_payload_bucket_number_or_proof_fails() {
        let (payloads, t) = tree(4);
        let root = t.root();
        let proof = t.proof(5).expect("in range");
        let mut p = payloads[5].clone();
        p[0] ^= 1;
        assert!(!verify_bucket(5, &p, &proof, 4, &root));
        // Bucket 4's payload presented as bucket 5, or 5's under 4's number.
        assert!(!verify_bucket(5, &payloads[4], &proof, 4, &root));
        assert!(!verify_bucket(4, &payloads[5], &proof, 4, &root));
        let mut bad = proof.clone();
        bad[40] ^= 1;
        assert!(!verify_bucket(5, &payloads[5], &bad, 4, &root));
        assert!(!verify_bucket(5, &payloads[5], &proof[..96], 4, &root));
        assert!(!verify_bucket(21, &payloads[5], &proof, 4, &root));
    }

    #[test]
    fn index_id_binds_every_layout_field() {
        let base = IndexLayout {
            public_key: [1; 32],
            bucket_bits: 6,
            fingerprint_bits: 44,
            bucket_entries: 4000,
            payload_len: 20_000,
        };
        let root = [9; 32];
        let id = base.index_id(&root);
        assert_ne!(id, base.index_id(&[8; 32]));
        for other in [
            IndexLayout {
                public_key: [2; 32],
                ..base
            },
            IndexLayout {
                bucket_bits: 7,
                ..base
            },
            IndexLayout {
                fingerprint_bits: 45,
                ..base
            },
            IndexLayout {
                bucket_entries: 4001,
                ..base
            },
            IndexLayout {
                payload_len: 20_001,
                ..base
            },
        ] {
            assert_ne!(id, other.index_id(&root));
        }
    }

    #[test]
    fn odd_leaf_counts_are_refused() {
        assert!(MerkleTree::from_leaves(vec![[0; 32]; 3]).is_err());
        assert!(MerkleTree::from_leaves(Vec::new()).is_err());
    }

    proptest! {
        #[test]
        fn verify_never_panics(bucket in any::<u32>(), k in 0u32..40,
                               proof in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = verify_bucket(bucket, b"x", &proof, k, &[0; 32]);
        }
    }
}
