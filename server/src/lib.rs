//! # breachcheck-server
//!
//! Everything the `breachcheck-server` binary does, as a library: build an
//! index from leak dumps, map and validate it, and serve it over gRPC with API
//! keys and quotas. `docs/PROTOCOL.md` is the byte-exact specification of the
//! index file and the wire.
//!
//! # Layout
//!
//! Two wings, one per data flow, and what they share. The modules are
//! private; the public surface is the flat list of exports below.
//!
//! * `index/`: the build flow, dump → index file → memory.
//!   * `dump`: reading rows from dumps (lines, CSV, TSV; gzip, zstd; stdin).
//!   * `breaches`: which breach each input belongs to.
//!   * `build`: [`build_index`], its options and report, phases 1–2.
//!   * `spill`: partitioned working records, in memory or on disk.
//!   * `progress`: progress bar or log lines.
//!   * `encode`: phase 3, the layout choice and padded bucket payloads.
//!   * `write`: phase 4, the file written and fsynced.
//!   * `format`: the header layout ([`Header`]).
//!   * `reader`: the validated, in-memory [`Index`] and its bucket Merkle tree.
//!   * `inspect`: the [`inspect`] report.
//! * `serve/`: the serve flow, index → gRPC.
//!   * `mod`: [`serve()`] on a bound listener; [`bind`] and [`Bound::run`]
//!     (TLS, metrics endpoint, SIGHUP reload); [`run`].
//!   * `config`: [`Settings`] (flags, environment, TOML) → [`Config`].
//!   * `state`: [`AppState`] and the [`Served`] pair.
//!   * `service`: the gRPC [`Service`], handlers returning [`Refusal`].
//!   * `auth`: API keys.
//!   * `quota`: [`QuotaStore`] and [`MemoryQuotas`].
//!   * `redis`: [`RedisQuotas`], the store shared by replicas.
//!   * `metrics`: [`Metrics`], its endpoint and the tower layer.
//!   * `guard`: the layer admitting calls from their headers.
//!   * `net`: the accept loop, connection deadlines, [`raise_nofile_limit`].
//! * Shared: `key` (the OPRF key file), `error` ([`ServerError`],
//!   [`IndexFault`], [`Refusal`] and its one mapping to `tonic::Status`),
//!   `corpus` (deterministic synthetic dumps).
//!
//! The binary adds `main.rs` (flags and dispatch) and, with the default
//! `demo` feature, `demo.rs` (a synthetic corpus checked through the real
//! client).

mod corpus;
mod error;
mod index;
mod key;
mod pir;
mod serve;

// Exports: the whole public surface, in one list.
pub use corpus::{
    CorpusFormat, CorpusSummary, SplitMix, cn_mobile, generate_corpus, non_members, write_corpus,
};
pub use error::{IndexFault, RETRY_AFTER, Refusal, Result, ServerError};
pub use index::breaches::plan_inputs;
pub use index::build::{
    BuildOptions, BuildReport, InputSpec, MIN_MEAN_BUCKET_ENTRIES, build_index,
    default_memory_limit, parse_size,
};
pub use index::dump::{
    Column, MAX_FIELDS, MAX_SAMPLE_CHARS, MAX_SAMPLES, RowStats, parse_region, read_dump,
};
pub use index::format::{BreachMeta, Header, MAGIC, VERSION};
pub use index::inspect::{InspectReport, inspect};
pub use index::progress::ProgressMode;
pub use index::reader::Index;
pub use index::spill::remove_temporaries_on_interrupt;
pub use key::{InsecureKeyMode, key_from_seed, keygen, load_key, load_key_with, save_key};
pub use pir::{IPIR_SP_SCHEME, IpirSp, PirEngine, PirError, PirTiming, PreprocessingTiming};
pub use serve::config::{
    ApiKeyEntry, Config, DEFAULT_MAX_BATCH, DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PREFIXES, DEFAULT_QUOTA_KEY_PREFIX, DEFAULT_QUOTA_TIMEOUT,
    ForwardedHeader, Quota, QuotaBackend, QuotaStoreConfig, QuotaStoreSettings, Settings,
    new_api_key,
};
pub use serve::metrics::Metrics;
pub use serve::net::{NofileLimit, raise_nofile_limit};
pub use serve::quota::{
    Call, Caller, Charge, Exhausted, MemoryQuotas, QuotaError, QuotaKey, QuotaStore,
};
pub use serve::redis::{RedisQuotas, RedisSettings};
pub use serve::service::Service;
pub use serve::source::Cidr;
pub use serve::state::{AppState, Served};
pub use serve::web::{CONTENT_SECURITY_POLICY, Page, PageLayer, page_size};
pub use serve::{Bound, bind, run, serve, shutdown_signal};
