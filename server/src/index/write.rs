//! Phase 4 of a build: the index file itself, written to a temporary name
//! and fsynced (the caller renames it into place).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Result, io_err};
use crate::index::format::{DIR_ENTRY_LEN, DirEntry, Header};

/// Writes a placeholder header, the directory and the payloads padded to one
/// length (hashing the body as it goes), then the real header, and fsyncs.
/// Returns the final header and the file size.
pub(crate) fn write_index(
    tmp: &Path,
    mut header: Header,
    counts: &[u32],
    lens: &[u32],
    payloads: &Path,
) -> Result<(Header, u64)> {
    let payload_len = lens.iter().copied().max().unwrap_or(0);
    let nb = lens.len();
    let dir_len = nb * DIR_ENTRY_LEN;
    header.body_len = dir_len as u64 + nb as u64 * u64::from(payload_len);
    let header_len = header.encode().len();
    let werr = || io_err(tmp);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(tmp).map_err(werr())?);
    w.write_all(&vec![0u8; header_len]).map_err(werr())?;
    let mut dir = Vec::with_capacity(dir_len);
    for (b, &real) in counts.iter().enumerate() {
        let e = DirEntry {
            offset: dir_len as u64 + b as u64 * u64::from(payload_len),
            len: payload_len,
            real_entries: real,
        };
        dir.extend_from_slice(&e.encode());
    }
    let mut body_hash = blake3::Hasher::new();
    body_hash.update(&dir);
    w.write_all(&dir).map_err(werr())?;
    let mut r = BufReader::new(File::open(payloads).map_err(io_err(payloads))?);
    let mut buf = vec![0u8; payload_len as usize];
    for &len in lens {
        buf.fill(0);
        r.read_exact(&mut buf[..len as usize])
            .map_err(io_err(payloads))?;
        body_hash.update(&buf);
        w.write_all(&buf).map_err(werr())?;
    }
    header.index_id = *body_hash.finalize().as_bytes();
    header.directory_hash = *blake3::hash(&dir).as_bytes();
    let mut file = w.into_inner().map_err(|e| werr()(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(werr())?;
    file.write_all(&header.encode()).map_err(werr())?;
    file.sync_all().map_err(werr())?;
    let size = file.metadata().map_err(werr())?.len();
    Ok((header, size))
}
