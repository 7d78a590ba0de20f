//! `inspect`: an index's header and layout, as text or JSON, and optionally
//! whether its payloads hash to its bucket root. Version 2 files hold no
//! per-bucket counts (the build report has their histogram).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::index::format::{Header, VERSION};
use crate::index::reader::Index;

/// What `inspect` found in an index file.
#[derive(Debug, Clone)]
pub struct InspectReport {
    path: PathBuf,
    header: Header,
    public_key_fingerprint: String,
    payload_len: u32,
    file_size: usize,
    verified: Option<bool>,
}

/// Opens and checks the index at `path` and describes it; with `verify`, also
/// hashes every payload into the bucket root (a mismatch is reported, not
/// an error).
///
/// # Errors
///
/// The index cannot be opened or fails its structural checks.
pub fn inspect(path: &Path, verify: bool) -> Result<InspectReport> {
    let idx = Index::open(path)?;
    let header = idx.header().clone();
    Ok(InspectReport {
        path: path.to_owned(),
        public_key_fingerprint: idx.public_key_fingerprint(),
        payload_len: header.payload_len,
        file_size: idx.file_len(),
        verified: verify.then(|| idx.verify().is_ok()),
        header,
    })
}

impl InspectReport {
    /// The process exit status: 1 if the body hash was checked and does not
    /// match, else 0.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.verified == Some(false))
    }

    /// What `inspect` prints: pretty JSON if `json`, else the text.
    ///
    /// # Errors
    ///
    /// JSON serialization errors.
    pub fn render(&self, json: bool) -> serde_json::Result<String> {
        if json {
            Ok(serde_json::to_string_pretty(&self.to_json())? + "\n")
        } else {
            Ok(self.to_string())
        }
    }

    fn bytes_per_entry(&self) -> f64 {
        self.file_size as f64 / self.header.entry_count.max(1) as f64
    }

    /// The report as a JSON object (keys in alphabetical order).
    fn to_json(&self) -> serde_json::Value {
        let h = &self.header;
        serde_json::json!({
            "path": self.path,
            "format_version": VERSION,
            "suite": breachcheck_proto::SUITE,
            "mode": h.mode,
            "index_id": hex::encode(h.index_id),
            "public_key": hex::encode(h.public_key),
            "public_key_fingerprint": self.public_key_fingerprint,
            "bucket_bits": h.bucket_bits,
            "fingerprint_bits": h.fingerprint_bits,
            "label_width": h.label_width,
            "entry_count": h.entry_count,
            "bucket_entries": h.bucket_entries,
            "payload_len": self.payload_len,
            "file_size": self.file_size,
            "bytes_per_entry": self.bytes_per_entry(),
            "bucket_root": hex::encode(h.bucket_root),
            "breaches": h.breaches,
            "verified": self.verified,
        })
    }
}

impl fmt::Display for InspectReport {
    /// The text `inspect` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        writeln!(f, "index            {}", self.path.display())?;
        writeln!(f, "format version   {VERSION}")?;
        writeln!(
            f,
            "suite            {} (mode {} = VOPRF)",
            breachcheck_proto::SUITE,
            h.mode
        )?;
        writeln!(f, "index id         {}", hex::encode(h.index_id))?;
        writeln!(f, "bucket root      {}", hex::encode(h.bucket_root))?;
        writeln!(
            f,
            "public key       {} (fingerprint {})",
            hex::encode(h.public_key),
            self.public_key_fingerprint
        )?;
        writeln!(f, "entries          {}", h.entry_count)?;
        writeln!(
            f,
            "buckets          {} (k = {})",
            h.bucket_count(),
            h.bucket_bits
        )?;
        writeln!(
            f,
            "per bucket       {} entries padded, {} bytes",
            h.bucket_entries, self.payload_len
        )?;
        writeln!(f, "fingerprint bits {}", h.fingerprint_bits)?;
        if h.label_width == 0 {
            writeln!(f, "labels           none")?;
        } else {
            writeln!(f, "labels           {} bytes", h.label_width)?;
        }
        writeln!(
            f,
            "file size        {} bytes ({:.3} bytes per entry)",
            self.file_size,
            self.bytes_per_entry()
        )?;
        writeln!(f, "breaches:")?;
        for b in &h.breaches {
            writeln!(
                f,
                "  {:<16} {} {} {}",
                b.id,
                b.name,
                b.date,
                b.data_classes.join("/")
            )?;
        }
        if let Some(ok) = self.verified {
            let verdict = if ok { "OK" } else { "MISMATCH (corrupted)" };
            writeln!(f, "body hash        {verdict}")?;
        }
        Ok(())
    }
}
