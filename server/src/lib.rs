//! # breachcheck-server
//!
//! Everything the `breachcheck-server` binary does, as a library: build an
//! index from leak dumps, map and validate it, and serve it over gRPC with API
//! keys and quotas.
//!
//! # Layout
//!
//! * [`key`]: the OPRF key file (0600, zeroized).
//! * [`input`]: reading dumps (lines, CSV, TSV; gzip, zstd; stdin).
//! * [`index`]: the index file format, the builder and the mmap reader.
//! * [`corpus`]: deterministic synthetic dumps.
//! * [`error`]: [`ServerError`] and its one mapping to `tonic::Status`.

pub mod corpus;
pub mod error;
pub mod index;
pub mod input;
pub mod key;

pub use error::{IndexFault, Result, ServerError};
