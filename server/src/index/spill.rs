//! The build's working storage: fixed 16-byte records partitioned by bucket
//! range, held in memory up to a budget and appended to one temporary file
//! per partition beyond it; and the temporary paths that an interrupted build
//! removes.
//!
//! A record on disk (little-endian, read back through
//! [`breachcheck_proto::Reader`]):
//!
//! ```text
//! offset  size  field
//! 0       8     key: the number's digits (phase 1) or its fingerprint (phase 2)
//! 8       4     word: the breach mask (phase 1) or the sealed label (phase 2)
//! 12      4     bucket value (32 bits)
//! ```

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use breachcheck_proto::{CodecError, Reader};

use crate::error::{Result, io_err};

/// Partitions by the top bits of the bucket value: 256 ranges.
pub(crate) const PART_BITS: u32 = 8;
/// Bytes of one record on disk.
const REC: usize = 16;

/// One build record (see the module docs for the two phases' meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    /// Digits or fingerprint.
    pub(crate) key: u64,
    /// Breach mask or sealed label.
    pub(crate) word: u32,
    /// The number's bucket value.
    pub(crate) bucket_value: u32,
}

impl Record {
    fn encode(&self) -> [u8; REC] {
        let mut r = [0u8; REC];
        r[..8].copy_from_slice(&self.key.to_le_bytes());
        r[8..12].copy_from_slice(&self.word.to_le_bytes());
        r[12..].copy_from_slice(&self.bucket_value.to_le_bytes());
        r
    }

    fn read(r: &mut Reader<'_>) -> std::result::Result<Self, CodecError> {
        Ok(Record {
            key: r.u64_le()?,
            word: r.u32_le()?,
            bucket_value: r.u32_le()?,
        })
    }
}

/// Temporary paths to remove if the process is interrupted.
static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes every temporary path of the builds running in this process. The
/// binary calls it from its signal handler before exiting, so an interrupted
/// build leaves nothing behind (a `kill -9` leaves the temporaries, which
/// the next build removes, but never a partial index: the index is renamed
/// into place only when complete).
pub(crate) fn cleanup_temporaries() {
    if let Ok(paths) = CLEANUP.lock() {
        for p in paths.iter() {
            let _ = fs::remove_dir_all(p);
            let _ = fs::remove_file(p);
        }
    }
}

/// For the binary: on SIGINT (Ctrl-C), SIGTERM or SIGHUP, removes the
/// temporaries of every running build, says so on stderr and exits the
/// process with status 128 + the signal number: 130 (SIGINT), 143 (SIGTERM)
/// or 129 (SIGHUP), as a shell reports a process killed by that signal.
///
/// The handlers are installed before this returns (a signal that arrives
/// right after is handled, not fatal); they run on their own thread, so they
/// work while a build blocks the main one.
pub fn remove_temporaries_on_interrupt() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(rt) = rt else {
        tracing::warn!("no signal handler: an interrupted build may leave temporary files");
        return;
    };
    let signals = {
        let _entered = rt.enter();
        interrupt_signals()
    };
    std::thread::spawn(move || {
        let (name, code) = rt.block_on(signals);
        cleanup_temporaries();
        eprintln!("interrupted by {name}: temporary files removed, no index written");
        std::process::exit(code);
    });
}

/// Registers the handlers now (inside a runtime) and returns the future of
/// the first signal's name and exit status.
#[cfg(unix)]
fn interrupt_signals() -> impl std::future::Future<Output = (&'static str, i32)> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    async move {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut int) => ("SIGINT", 130),
            _ = next(&mut term) => ("SIGTERM", 143),
            _ = next(&mut hup) => ("SIGHUP", 129),
        }
    }
}

/// Ctrl-C only, elsewhere.
#[cfg(not(unix))]
fn interrupt_signals() -> impl std::future::Future<Output = (&'static str, i32)> + Send {
    async {
        let _ = tokio::signal::ctrl_c().await;
        ("Ctrl-C", 130)
    }
}

/// A temporary path that is removed on drop and on Ctrl-C.
#[derive(Debug)]
pub(crate) struct TempGuard(PathBuf);

impl TempGuard {
    /// Registers `path` for removal.
    pub(crate) fn new(path: PathBuf) -> Self {
        if let Ok(mut v) = CLEANUP.lock() {
            v.push(path.clone());
        }
        TempGuard(path)
    }

    /// The path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
        let _ = fs::remove_file(&self.0);
        if let Ok(mut v) = CLEANUP.lock() {
            v.retain(|p| p != &self.0);
        }
    }
}

/// Creates the build's work directory, mode 0700: its files hold the dump's
/// numbers in plaintext (phase 1). Whatever was at the path before (the
/// leftover of an earlier process that had this PID) is removed first.
///
/// # Errors
///
/// [`ServerError::Io`](crate::ServerError::Io) naming the directory.
pub(crate) fn create_private_dir(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    if fs::symlink_metadata(path).is_ok() {
        let _ = fs::remove_dir_all(path);
        let _ = fs::remove_file(path);
    }
    let mut dir = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        dir.mode(0o700);
    }
    dir.create(path).map_err(io_err(path))
}

/// Creates (or truncates) a working file, mode 0600, set at creation so the
/// file is never readable by others, not even for a moment.
///
/// # Errors
///
/// [`ServerError::Io`](crate::ServerError::Io) naming the file.
pub(crate) fn create_private_file(path: &Path) -> Result<File> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts.open(path).map_err(io_err(path))?;
    // A file that existed keeps its mode through `open`: set it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err(path))?;
    }
    Ok(file)
}

/// The PID in a temporary name `.NAME.KIND-PID`, if `name` is one for
/// `kind` (`build` or `tmp`) and, when `target` is given, for that target.
fn temporary_pid(name: &str, kind: &str, target: Option<&str>) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (stem, pid) = rest.rsplit_once(&format!(".{kind}-"))?;
    if stem.is_empty() || target.is_some_and(|t| t != stem) {
        return None;
    }
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` may be alive. Without `/proc` (not Linux) nothing
/// can be told, and every process counts as alive.
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Whether `dir` holds only what a build puts in its work directory (spill
/// files `raw-NNN`, `eval-NNN`, and `payloads`), so a directory of someone
/// else's that happens to match the name is never removed.
fn looks_like_work_dir(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.into_iter().all(|e| {
        e.is_ok_and(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name == "payloads"
                || ["raw-", "eval-"].iter().any(|p| {
                    name.strip_prefix(p)
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                });
            ours && e.file_type().is_ok_and(|t| t.is_file())
        })
    })
}

/// Removes what builds killed with `kill -9` (or a power cut) left: work
/// directories `.NAME.build-PID` in `work_root` (any NAME: their spill files
/// hold plaintext numbers) and temporary indexes `.TARGET.tmp-PID` in
/// `out_dir`, when process PID is gone. Each removal is logged; what cannot
/// be removed is logged and left.
pub(crate) fn remove_stale_temporaries(work_root: &Path, out_dir: &Path, target: &str) {
    let me = std::process::id();
    let stale = |dir: &Path, kind: &str, target: Option<&str>| -> Vec<(PathBuf, u32)> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let pid = temporary_pid(&e.file_name().to_string_lossy(), kind, target)?;
                (pid != me && !process_alive(pid)).then(|| (e.path(), pid))
            })
            .collect()
    };
    for (path, pid) in stale(work_root, "build", None) {
        let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if !is_dir || !looks_like_work_dir(&path) {
            tracing::info!(path = %path.display(), "not removing: not a build work directory");
            continue;
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                pid,
                "removed the work directory of an interrupted build (its process is gone)"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot remove the work directory of an interrupted build"
            ),
        }
    }
    for (path, pid) in stale(out_dir, "tmp", Some(target)) {
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                pid,
                "removed the temporary index of an interrupted build (its process is gone)"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot remove the temporary index of an interrupted build"
            ),
        }
    }
}

/// Records partitioned by bucket range, in memory until a budget is passed,
/// then appended to one temporary file per partition.
#[derive(Debug)]
pub(crate) struct Spill {
    dir: PathBuf,
    name: &'static str,
    mem: Vec<Vec<Record>>,
    files: Vec<Option<BufWriter<File>>>,
    in_mem: usize,
    budget: usize,
    spilled: bool,
}

impl Spill {
    /// Empty partitions named `name` in `dir`, holding up to `budget_bytes`
    /// of records in memory.
    pub(crate) fn new(dir: &Path, name: &'static str, budget_bytes: u64) -> Self {
        let parts = 1usize << PART_BITS;
        Spill {
            dir: dir.to_owned(),
            name,
            mem: vec![Vec::new(); parts],
            files: (0..parts).map(|_| None).collect(),
            in_mem: 0,
            budget: usize::try_from(budget_bytes / REC as u64)
                .unwrap_or(usize::MAX)
                .max(1024),
            spilled: false,
        }
    }

    /// Whether anything went to disk.
    pub(crate) fn spilled(&self) -> bool {
        self.spilled
    }

    fn path(&self, part: usize) -> PathBuf {
        self.dir.join(format!("{}-{part:03}", self.name))
    }

    /// Adds a record to partition `part`, spilling everything when over budget.
    pub(crate) fn push(&mut self, part: usize, rec: Record) -> Result<()> {
        self.mem[part].push(rec);
        self.in_mem += 1;
        if self.in_mem >= self.budget {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        for part in 0..self.mem.len() {
            if self.mem[part].is_empty() {
                continue;
            }
            let path = self.path(part);
            if self.files[part].is_none() {
                let f = create_private_file(&path)?;
                self.files[part] = Some(BufWriter::with_capacity(1 << 16, f));
            }
            if let Some(w) = self.files[part].as_mut() {
                for r in &self.mem[part] {
                    w.write_all(&r.encode()).map_err(io_err(&path))?;
                }
            }
            self.mem[part] = Vec::new();
        }
        self.in_mem = 0;
        self.spilled = true;
        Ok(())
    }

    /// All records of one partition, from disk and memory; the partition is
    /// empty afterwards.
    pub(crate) fn take(&mut self, part: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        if let Some(mut w) = self.files[part].take() {
            let path = self.path(part);
            w.flush().map_err(io_err(&path))?;
            drop(w);
            let file = File::open(&path).map_err(io_err(&path))?;
            read_records(file, &mut out).map_err(io_err(&path))?;
            let _ = fs::remove_file(&path);
        }
        out.append(&mut self.mem[part]);
        Ok(out)
    }
}

/// Reads a spill file of whole records; a partial record at the end is an
/// error (the file was cut short), never silently dropped.
fn read_records(file: File, out: &mut Vec<Record>) -> io::Result<()> {
    let mut file = BufReader::new(file);
    let mut buf = vec![0u8; REC << 12];
    loop {
        let n = fill(&mut file, &mut buf)?;
        let mut r = Reader::new(&buf[..n]);
        while r.remaining() > 0 {
            let rec =
                Record::read(&mut r).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            out.push(rec);
        }
        r.finish()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if n < buf.len() {
            return Ok(());
        }
    }
}

/// Reads until `buf` is full or the end of `r`; returns the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised_strictly() {
        assert_eq!(temporary_pid(".a.idx.build-42", "build", None), Some(42));
        assert_eq!(temporary_pid(".a.idx.tmp-7", "tmp", Some("a.idx")), Some(7));
        assert_eq!(temporary_pid(".a.idx.tmp-7", "tmp", Some("b.idx")), None);
        for name in [
            "a.idx.build-1",
            ".build-1",
            ".a.build-",
            ".a.build-1x",
            ".a.tmp-1",
        ] {
            assert_eq!(temporary_pid(name, "build", None), None, "{name}");
        }
        assert!(process_alive(std::process::id()));
    }

    #[test]
    fn records_round_trip_through_disk_and_a_cut_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("bc-spill-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut s = Spill::new(&dir, "t", 0);
        let recs: Vec<Record> = (0..5000u32)
            .map(|i| Record {
                key: u64::from(i) << 20,
                word: i,
                bucket_value: !i,
            })
            .collect();
        for r in &recs {
            s.push(3, *r).unwrap();
        }
        assert!(s.spilled());
        assert_eq!(s.take(3).unwrap(), recs);
        let cut = dir.join("cut");
        fs::write(&cut, &recs[0].encode()[..15]).unwrap();
        let e = read_records(File::open(&cut).unwrap(), &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        fs::remove_dir_all(&dir).unwrap();
    }
}
