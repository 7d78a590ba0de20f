//! Phase 4 of a build: the index file itself, written to a temporary name
//! and fsynced (the caller renames it into place).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use breachcheck_proto::{MerkleTree, leaf_hash};

use crate::error::{Result, ServerError, io_err};
use crate::index::format::Header;

/// Writes a placeholder header, then the payloads each padded to one length
/// (hashing each into its Merkle leaf as it goes), then the real header with
/// the bucket root and the index id, and fsyncs. Returns the final header
/// and the file size.
pub(crate) fn write_index(
    tmp: &Path,
    mut header: Header,
    lens: &[u32],
    payloads: &Path,
) -> Result<(Header, u64)> {
    header.payload_len = lens.iter().copied().max().unwrap_or(0);
    let header_len = header.encode().len();
    let werr = || io_err(tmp);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(tmp).map_err(werr())?);
    w.write_all(&vec![0u8; header_len]).map_err(werr())?;
    let mut r = BufReader::new(File::open(payloads).map_err(io_err(payloads))?);
    let mut buf = vec![0u8; header.payload_len as usize];
    let mut leaves = Vec::with_capacity(lens.len());
    for (b, &len) in lens.iter().enumerate() {
        buf.fill(0);
        r.read_exact(&mut buf[..len as usize])
            .map_err(io_err(payloads))?;
        leaves.push(leaf_hash(b as u32, &buf));
        w.write_all(&buf).map_err(werr())?;
    }
    let tree = MerkleTree::from_leaves(leaves).map_err(ServerError::Protocol)?;
    header.bucket_root = tree.root();
    header.index_id = header.layout().index_id(&header.bucket_root);
    let mut file = w.into_inner().map_err(|e| werr()(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(werr())?;
    file.write_all(&header.encode()).map_err(werr())?;
    file.sync_all().map_err(werr())?;
    let size = file.metadata().map_err(werr())?.len();
    Ok((header, size))
}
