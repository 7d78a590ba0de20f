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
//! * [`config`]: the TOML configuration and API key entries.
//! * [`limits`]: API-key authentication and per-key quotas behind a trait.
//! * [`metrics`]: Prometheus counters and histograms, and their endpoint.
//! * [`service`]: the gRPC service, hot reload, and [`serve`].
//! * [`error`]: [`ServerError`] and its one mapping to `tonic::Status`.

pub mod config;
pub mod corpus;
pub mod error;
pub mod index;
pub mod input;
pub mod key;
pub mod limits;
pub mod metrics;
pub mod service;

pub use error::{IndexFault, Result, ServerError};
pub use service::{AppState, Served, serve};
