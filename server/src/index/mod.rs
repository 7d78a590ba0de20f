//! The build flow: leak dumps in, one immutable index file out, and the
//! read-only map the serve wing answers from. Nothing here knows about gRPC.
//!
//! * `dump`: reading rows from dumps (lines, CSV, TSV; gzip, zstd; stdin).
//! * `breaches`: which breach each input belongs to.
//! * `build`: options, report, orchestration, phases 1–2 (read, evaluate).
//! * `spill`: partitioned working records, in memory or in temporary files.
//! * `progress`: progress bar or log lines.
//! * `encode`: phase 3, the layout choice and padded bucket payloads.
//! * `write`: phase 4, the file written, hashed and fsynced.
//! * `format`: the byte layout of the header and directory.
//! * `reader`: the validated, memory-mapped [`Index`](reader::Index).
//! * `inspect`: the `inspect` report.

pub(crate) mod breaches;
pub(crate) mod build;
pub(crate) mod dump;
mod encode;
pub(crate) mod format;
pub(crate) mod inspect;
pub(crate) mod progress;
pub(crate) mod reader;
pub(crate) mod spill;
mod write;
