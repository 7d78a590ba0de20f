//! PIR answers (docs/PROTOCOL.md §10): the index as a database of one row a
//! bucket, answered by a single-server PIR scheme behind [`PirEngine`], so
//! the server answers a bucket's row without learning which.
//!
//! The scheme is `ipir-sp` (YPIR+SP with InspiRING packing), pinned to an
//! exact version and to its `simplepir-p14-v1` profile; another scheme (the
//! audited `valar-ypir`, a later release) replaces [`IpirSp`] without
//! touching the protocol: the RPCs carry opaque `keys`, `query`,
//! `public_data` and `answer` bytes of sizes the setup names.
//!
//! Nothing here logs a row index: the server never has one.

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use breachcheck_proto::{PirShape, bytes_to_symbols, pir_setup_seed};
use inspiring::{QueryPackPreprocessed, TopKeyImages};
use ipir_sp::modulus_switch::response_body_len;
use ipir_sp::serialize::{deserialize_packing_keys, serialized_packing_keys_len};
use ipir_sp::server::{MatvecBackend, build_pack_preprocessed_blocks, published_c1_rows};
use ipir_sp::{IPIRClient, IPIRServer, ProductionSimplePirParams, SimplePirProfile};

use crate::error::{Result, ServerError};

/// The scheme and profile [`IpirSp`] serves, as `PirSetup.scheme` names it.
pub const IPIR_SP_SCHEME: &str = "ipir-sp/simplepir-p14-v1";

/// A PIR scheme answering from one index's rows.
pub trait PirEngine: Send + Sync + fmt::Debug {
    /// The scheme and parameter profile (`PirSetup.scheme`).
    fn scheme(&self) -> &'static str;
    /// The rows' shape.
    fn shape(&self) -> PirShape;
    /// The per-index public data a client needs to decode answers.
    fn public_data(&self) -> &[u8];
    /// Exact bytes of a query's key material.
    fn keys_len(&self) -> usize;
    /// Exact bytes of a query.
    fn query_len(&self) -> usize;
    /// Exact bytes of an answer.
    fn answer_len(&self) -> usize;
    /// Bytes of the database one answer reads (the rows, as stored).
    fn database_bytes(&self) -> usize;
    /// Answers one query whose `keys` and `query` have the lengths above,
    /// with where the time went.
    ///
    /// # Errors
    ///
    /// [`PirError::Invalid`] for key material or a query the scheme refuses;
    /// [`PirError::Failed`] when the scheme itself failed.
    fn answer_timed(
        &self,
        keys: &[u8],
        query: &[u8],
    ) -> std::result::Result<(Vec<u8>, PirTiming), PirError>;

    /// Answers one query, as [`PirEngine::answer_timed`].
    ///
    /// # Errors
    ///
    /// As [`PirEngine::answer_timed`].
    fn answer(&self, keys: &[u8], query: &[u8]) -> std::result::Result<Vec<u8>, PirError> {
        self.answer_timed(keys, query).map(|(a, _)| a)
    }
}

/// Where the time of one answer went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PirTiming {
    /// The pass over the database (the first-dimension matrix-vector
    /// product): bound by memory bandwidth.
    pub database_pass: Duration,
    /// Packing the results into ciphertexts: a fixed cost per instance.
    pub packing: Duration,
}

/// Why a PIR query was not answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PirError {
    /// The query or its keys are malformed (the client's fault).
    Invalid(String),
    /// The scheme failed (the server's fault).
    Failed(String),
}

/// The `ipir-sp` scheme over one index.
pub struct IpirSp {
    profile: &'static ProductionSimplePirParams,
    server: IPIRServer<u16>,
    top: TopKeyImages<'static>,
    pre: Vec<QueryPackPreprocessed<'static>>,
    published: Vec<u8>,
    shape: PirShape,
    /// How long the preprocessing took, by phase.
    pub preprocessing: PreprocessingTiming,
}

/// Where the time of one index version's preprocessing went
/// (docs/PROTOCOL.md §10.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreprocessingTiming {
    /// Reading every row into the scheme's database layout.
    pub database: Duration,
    /// The hint: the database times the public setup's matrix, a pass of
    /// `d` multiply-adds per database symbol. It depends on every row.
    pub hint: Duration,
    /// The packing tables derived from the hint (so from every row too),
    /// and the public data.
    pub packing_tables: Duration,
}

impl PreprocessingTiming {
    /// All phases together.
    #[must_use]
    pub fn total(&self) -> Duration {
        self.database + self.hint + self.packing_tables
    }
}

impl fmt::Debug for IpirSp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpirSp")
            .field("shape", &self.shape)
            .field("preprocessing", &self.preprocessing)
            .finish_non_exhaustive()
    }
}

/// The profile of a shape. Preprocessed data borrows its parameters for
/// as long as it is served, so each distinct shape's profile is built once
/// and kept for the life of the process (a few per process at most: one
/// per index shape ever served).
fn profile(shape: &PirShape) -> Result<&'static ProductionSimplePirParams> {
    static PROFILES: OnceLock<Mutex<HashMap<(usize, usize), &'static ProductionSimplePirParams>>> =
        OnceLock::new();
    let key = (shape.rows(), shape.instances);
    let mut map = PROFILES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = map.get(&key) {
        return Ok(p);
    }
    let p = ProductionSimplePirParams::new(
        shape.rows() as u64,
        (shape.row_symbols() * breachcheck_proto::PIR_SYMBOL_BITS) as u64,
        SimplePirProfile::P14,
    )
    .map_err(|e| ServerError::Pir(format!("no ipir-sp profile for {key:?}: {e}")))?;
    if p.ypir().db_rows != shape.rows() || p.ypir().instances != shape.instances {
        return Err(ServerError::Pir(format!(
            "ipir-sp chose another shape than {key:?}"
        )));
    }
    let p: &'static ProductionSimplePirParams = Box::leak(Box::new(p));
    map.insert(key, p);
    Ok(p)
}

impl IpirSp {
    /// Preprocesses the rows of index `index_id` (`row(b)` gives bucket
    /// `b`'s row bytes, `shape.row_len()` of them).
    ///
    /// # Errors
    ///
    /// [`ServerError::Pir`] when the scheme cannot hold the shape or a row
    /// has the wrong length.
    pub fn new(
        shape: PirShape,
        index_id: &[u8],
        row: impl Fn(u32) -> Option<Vec<u8>>,
    ) -> Result<Self> {
        let mut timing = PreprocessingTiming::default();
        let mut started = Instant::now();
        let profile = profile(&shape)?;
        let rlwe = profile.rlwe();
        // The rows go to the scheme one at a time (no second copy of the
        // database): a missing or misshapen row is replaced by zeros and
        // refused once the scheme has read them all.
        let bad_row = std::cell::Cell::new(None);
        let symbols = (0..shape.rows() as u32).flat_map(|b| match row(b) {
            Some(bytes) if bytes.len() == shape.row_len() => bytes_to_symbols(&bytes),
            _ => {
                bad_row.set(bad_row.get().or(Some(b)));
                vec![0; shape.row_symbols()]
            }
        });
        let built = catch_unwind(AssertUnwindSafe(|| {
            let server = IPIRServer::try_from_profile_with_backend(
                profile,
                symbols,
                false,
                false,
                MatvecBackend::Cpu,
            )
            .map_err(|e| ServerError::Pir(format!("ipir-sp database: {e}")))?;
            timing.database = lap(&mut started);
            let setup = IPIRClient::new(profile)
                .generate_public_query_setup_simplepir_from_seed(pir_setup_seed(index_id));
            let offline = server.perform_offline_precomputation_simplepir(rlwe, setup.polys());
            timing.hint = lap(&mut started);
            let pre = build_pack_preprocessed_blocks(rlwe, &offline.crs_blocks)
                .map_err(|e| ServerError::Pir(format!("ipir-sp preprocessing: {e}")))?;
            let published = published_c1_rows(&pre, rlwe.q);
            Ok::<_, ServerError>((server, pre, published))
        }))
        .map_err(|_| ServerError::Pir("ipir-sp panicked while preprocessing".into()))?;
        if let Some(b) = bad_row.get() {
            return Err(ServerError::Pir(format!(
                "bucket {b} has no row of the right length"
            )));
        }
        let (server, pre, published) = built?;
        let top = TopKeyImages::build(rlwe);
        timing.packing_tables = lap(&mut started);
        Ok(IpirSp {
            profile,
            server,
            top,
            pre,
            published,
            shape,
            preprocessing: timing,
        })
    }

    /// Bytes of the hint (one `d × d` block of 64-bit coefficients per
    /// instance): what a build-time sidecar holding the hint would store.
    #[must_use]
    pub fn hint_bytes(&self) -> usize {
        let d = self.profile.rlwe().d;
        self.shape.instances * d * d * 8
    }

    /// Bytes of the packing tables held in memory: what a build-time
    /// sidecar holding them would store.
    #[must_use]
    pub fn packing_tables_bytes(&self) -> usize {
        self.pre
            .iter()
            .map(|p| {
                p.collapse_a_final_ntt.data.len()
                    + p.digits_ntt.iter().map(|m| m.data.len()).sum::<usize>()
            })
            .sum::<usize>()
            * 8
    }
}

/// The time since `*since`, restarting it.
fn lap(since: &mut Instant) -> Duration {
    let now = Instant::now();
    let d = now - *since;
    *since = now;
    d
}

impl PirEngine for IpirSp {
    fn scheme(&self) -> &'static str {
        IPIR_SP_SCHEME
    }

    fn shape(&self) -> PirShape {
        self.shape
    }

    fn public_data(&self) -> &[u8] {
        &self.published
    }

    fn keys_len(&self) -> usize {
        serialized_packing_keys_len(self.profile.rlwe())
    }

    fn query_len(&self) -> usize {
        let y = self.profile.ypir();
        (y.db_rows * y.query_bits).div_ceil(8)
    }

    fn answer_len(&self) -> usize {
        self.shape.instances
            * response_body_len(self.profile.rlwe().d, self.profile.ypir().q_prime_1)
    }

    fn database_bytes(&self) -> usize {
        std::mem::size_of_val(self.server.db())
    }

    fn answer_timed(
        &self,
        keys: &[u8],
        query: &[u8],
    ) -> std::result::Result<(Vec<u8>, PirTiming), PirError> {
        if keys.len() != self.keys_len() || query.len() != self.query_len() {
            return Err(PirError::Invalid("wrong length".into()));
        }
        let rlwe = self.profile.rlwe();
        // The library is release-candidate code: a panic on hostile bytes
        // is a refused query, never a dead server.
        catch_unwind(AssertUnwindSafe(|| {
            let keys = deserialize_packing_keys(rlwe, keys)
                .map_err(|e| PirError::Invalid(format!("packing keys: {e}")))?;
            let (answer, t) = self
                .server
                .perform_full_online_computation_simplepir_measured(
                    rlwe, query, &keys, &self.top, &self.pre,
                )
                .map_err(|e| PirError::Invalid(format!("query: {e}")))?;
            if answer.len() != self.answer_len() {
                return Err(PirError::Failed("answer of the wrong length".into()));
            }
            let timing = PirTiming {
                database_pass: t.matrix_vector,
                packing: t.packing,
            };
            Ok((answer, timing))
        }))
        .unwrap_or_else(|_| Err(PirError::Failed("ipir-sp panicked".into())))
    }
}
