//! What the service shares across calls: the served (index, key) pair, which
//! a reload swaps atomically, the ids of indexes served before, the
//! configuration, the API keys, the quota store and the metrics.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use breachcheck_proto::{PirShape, ServerKey};

use crate::error::{Refusal, Result};
use crate::index::reader::Index;
use crate::key::{InsecureKeyMode, load_key, load_key_with};
use crate::pir::{IpirSp, PirEngine};
use crate::serve::auth::ApiKeys;
use crate::serve::config::{Config, QuotaStoreConfig};
use crate::serve::guard::Admitted;
use crate::serve::metrics::Metrics;
use crate::serve::quota::{Call, Caller, MemoryQuotas, QuotaError, QuotaStore, REQUEST_RATE};
use crate::serve::redis::RedisQuotas;
use crate::serve::source::{client_address, quota_subject};

/// An index and the key it was built with, served together. A bucket-only
/// replica has no key: it answers GetIndexInfo and GetBuckets only.
#[derive(Debug)]
pub struct Served {
    /// The mapped index.
    pub index: Index,
    /// Its OPRF key (`None` on a bucket-only replica).
    pub key: Option<ServerKey>,
    /// Its PIR database, preprocessed (servers started with PIR only).
    pub pir: Option<Arc<dyn PirEngine>>,
}

impl Served {
    /// Loads a key and an index, checks that they match, and hashes every
    /// payload into the bucket Merkle tree, whose root must be the header's.
    ///
    /// The hash is not optional (index format 2): GetBuckets sends each
    /// bucket's proof from that tree. (`--no-verify` is still accepted so old
    /// command lines run, and changes nothing.)
    ///
    /// # Errors
    ///
    /// Key, index or mismatch errors.
    pub fn load(index: &Path, key: &Path) -> Result<Self> {
        Self::load_with_key(index, load_key(key)?)
    }

    /// Loads an index for `key`, as [`Served::load`].
    fn load_with_key(index: &Path, key: ServerKey) -> Result<Self> {
        let index = Index::open_with_key(index, &key)?;
        index.verify()?;
        Ok(Served {
            index,
            key: Some(key),
            pir: None,
        })
    }

    /// Loads an index without its key, for a bucket-only replica, and builds
    /// its bucket Merkle tree (as [`Served::load`]).
    ///
    /// # Errors
    ///
    /// Index errors.
    pub fn load_buckets_only(index: &Path) -> Result<Self> {
        let index = Index::open(index)?;
        index.verify()?;
        Ok(Served {
            index,
            key: None,
            pir: None,
        })
    }

    /// Builds and preprocesses the index's PIR database (one row a bucket:
    /// its payload and Merkle proof), logging how long it took (never a
    /// row).
    ///
    /// # Errors
    ///
    /// [`ServerError::Pir`](crate::ServerError::Pir) when the index's shape
    /// does not suit PIR (too few or too large buckets) or the scheme fails.
    pub fn with_pir(mut self) -> Result<Self> {
        let h = self.index.header();
        let shape = PirShape::new(h.bucket_bits, h.payload_len)
            .map_err(|e| crate::ServerError::Pir(e.to_string()))?;
        let index = &self.index;
        let engine = IpirSp::new(shape, index.index_id(), |b| {
            let payload = index.bucket_bytes(b)?;
            let proof = index.bucket_proof(b)?;
            shape.row(&payload, &proof).ok()
        })?;
        tracing::info!(
            scheme = engine.scheme(),
            rows = shape.rows(),
            instances = shape.instances,
            database_bytes = engine.database_bytes(),
            public_data_bytes = engine.public_data().len(),
            preprocessing_ms = engine.preprocessing.total().as_millis() as u64,
            database_ms = engine.preprocessing.database.as_millis() as u64,
            hint_ms = engine.preprocessing.hint.as_millis() as u64,
            packing_tables_ms = engine.preprocessing.packing_tables.as_millis() as u64,
            "PIR database preprocessed"
        );
        self.pir = Some(Arc::new(engine));
        Ok(self)
    }

    /// Loads the pair, or the index alone when `key` is `None`; `key_mode`
    /// says whether a key file others may read is refused (the default) or
    /// loaded with a warning (`allow_insecure_key_mode`).
    ///
    /// # Errors
    ///
    /// As [`Served::load`] and [`Served::load_buckets_only`].
    pub(crate) fn load_optional_key(
        index: &Path,
        key: Option<&Path>,
        key_mode: InsecureKeyMode,
    ) -> Result<Self> {
        match key {
            Some(key) => Self::load_with_key(index, load_key_with(key, key_mode)?),
            None => Self::load_buckets_only(index),
        }
    }
}

/// Everything the service shares across calls.
#[derive(Debug)]
pub struct AppState {
    served: RwLock<Arc<Served>>,
    retired: RwLock<Vec<[u8; 32]>>,
    config: Config,
    keys: ApiKeys,
    quotas: Arc<dyn QuotaStore>,
    pir_slots: Arc<tokio::sync::Semaphore>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// State for `served` under `config`, with the quota store it names
    /// (in memory by default; a Redis store connects lazily).
    ///
    /// # Errors
    ///
    /// A Redis URL that does not parse.
    pub fn new(served: Served, config: Config) -> Result<Self> {
        let quotas: Arc<dyn QuotaStore> = match &config.quota_store {
            QuotaStoreConfig::Memory => Arc::new(MemoryQuotas::new()),
            QuotaStoreConfig::Redis(settings) => Arc::new(RedisQuotas::new(settings.clone())?),
        };
        Ok(Self::with_quotas(served, config, quotas))
    }

    /// State with a given quota store.
    pub fn with_quotas(served: Served, config: Config, quotas: Arc<dyn QuotaStore>) -> Self {
        let anonymous = config.allow_anonymous.then_some(config.anonymous);
        let keys = ApiKeys::new(&config.api_keys, config.default_quota, anonymous);
        AppState {
            served: RwLock::new(Arc::new(served)),
            retired: RwLock::new(Vec::new()),
            config,
            keys,
            quotas,
            pir_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// The pair being served now.
    pub fn current(&self) -> Arc<Served> {
        self.served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Atomically replaces the served pair. Calls already running finish on
    /// the old one; afterwards its `index_id` is answered with
    /// FAILED_PRECONDITION.
    pub fn swap(&self, next: Served) {
        let mut cur = self.served.write().unwrap_or_else(|e| e.into_inner());
        let old_id = *cur.index.index_id();
        if &old_id != next.index.index_id() {
            self.retired
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(old_id);
        }
        *cur = Arc::new(next);
        self.metrics.reloaded();
    }

    /// Reloads the index and key from the configured paths (SIGHUP); without
    /// a key path, as a bucket-only replica.
    ///
    /// # Errors
    ///
    /// Whatever loading fails with; the old pair stays served.
    pub fn reload(&self, index: &Path, key: Option<&Path>) -> Result<()> {
        let key_mode = InsecureKeyMode::allow_if(self.config.allow_insecure_key_mode);
        let mut next = Served::load_optional_key(index, key, key_mode)?;
        if self.config.pir {
            next = next.with_pir()?;
        }
        tracing::info!(
            index = %index.display(),
            index_id = %hex::encode(next.index.index_id()),
            public_key = %next.index.public_key_fingerprint(),
            "reloaded index"
        );
        self.swap(next);
        Ok(())
    }

    /// The caller behind the `authorization` metadata. GetIndexInfo does not
    /// `require` a key: without one, it is answered as `public`.
    pub(crate) async fn authenticate<T>(
        &self,
        req: &tonic::Request<T>,
        required: bool,
    ) -> Result<Caller, Refusal> {
        self.caller(
            req,
            if required {
                Call::Buckets
            } else {
                Call::IndexInfo
            },
        )
        .await
    }

    /// The caller of `req`: the one the guard layer admitted from the
    /// headers, or, for a [`Service`](crate::Service) used without that
    /// layer (a hand-written server around it), admitted here the same way.
    pub(crate) async fn caller<T>(
        &self,
        req: &tonic::Request<T>,
        call: Call,
    ) -> Result<Caller, Refusal> {
        if let Some(admitted) = req.extensions().get::<Admitted>() {
            return Ok(admitted.caller.clone());
        }
        let header = req.metadata().get("authorization").map(|v| v.as_bytes());
        let client = req.remote_addr().map(|peer| {
            client_address(
                peer.ip(),
                &req.metadata().clone().into_headers(),
                &self.config.trusted_proxies,
                self.config.forwarded_header,
            )
        });
        self.admit(header, call, client).await
    }

    /// Admits a call from its `authorization` header alone, before its body
    /// is read: authenticates it and charges one request to its key (the
    /// request rate; for Evaluate, a spent element quota is refused here too).
    /// A GetIndexInfo without a key is public and not charged. An
    /// anonymous caller is charged per `client` address block
    /// ([`quota_subject`]); without an address (a transport that has none),
    /// all share one.
    pub(crate) async fn admit(
        &self,
        header: Option<&[u8]>,
        call: Call,
        client: Option<IpAddr>,
    ) -> Result<Caller, Refusal> {
        if header.is_none() && call == Call::IndexInfo {
            return Ok(Caller {
                name: "public".into(),
                subject: None,
                quota: self.config.anonymous.into(),
            });
        }
        let mut caller = self.keys.authenticate(header)?;
        if header.is_none() {
            caller.subject = client.map(quota_subject);
        }
        if let Some(total) = self.anonymous_total(&caller) {
            let r = self.quotas.charge_request(&total, call).await;
            self.charged(&total, r)?;
        }
        let r = self.quotas.charge_request(&caller, call).await;
        self.charged(&caller, r)?;
        Ok(caller)
    }

    /// For an anonymous caller charged per address, the pool all anonymous
    /// callers share as well (`anonymous_total`): many addresses together
    /// get no more than it, and it is charged first, so a refused call
    /// creates no per-address state.
    fn anonymous_total(&self, caller: &Caller) -> Option<Caller> {
        caller.subject.as_ref().map(|_| Caller {
            name: caller.name.clone(),
            subject: None,
            quota: self.config.anonymous_total.into(),
        })
    }

    /// Checks a request's `index_id` against the served index.
    pub(crate) fn check_index_id(&self, served: &Served, id: &[u8]) -> Result<(), Refusal> {
        // An empty id means "the current index": the proof still binds the
        // answer to the key, so a client that does not track ids loses nothing.
        if id.is_empty() || id == served.index.index_id() {
            return Ok(());
        }
        let retired = self.retired.read().unwrap_or_else(|e| e.into_inner());
        if retired.iter().any(|r| r.as_slice() == id) {
            Err(Refusal::StaleIndex)
        } else {
            Err(Refusal::UnknownIndex)
        }
    }

    /// Charges `n` elements to `caller`, counting and logging a refusal.
    pub(crate) async fn charge_elements(&self, caller: &Caller, n: u64) -> Result<(), Refusal> {
        if let Some(total) = self.anonymous_total(caller) {
            let r = self.quotas.charge_elements(&total, n).await;
            self.charged(&total, r)?;
        }
        let r = self.quotas.charge_elements(caller, n).await;
        self.charged(caller, r)
    }

    /// Charges `bytes` of bucket download to `caller`, likewise.
    pub(crate) async fn charge_bytes(&self, caller: &Caller, bytes: u64) -> Result<(), Refusal> {
        if let Some(total) = self.anonymous_total(caller) {
            let r = self.quotas.charge_bytes(&total, bytes).await;
            self.charged(&total, r)?;
        }
        let r = self.quotas.charge_bytes(caller, bytes).await;
        self.charged(caller, r)
    }

    /// Charges one PIR answer to `caller`. Unlike the other charges, an
    /// anonymous caller's own address is charged before the pool all
    /// anonymous callers share: an address past its own cap is refused
    /// there and cannot go on spending the pool (PIR has no refusal at
    /// admission, before the body is read).
    pub(crate) async fn charge_pir(&self, caller: &Caller) -> Result<(), Refusal> {
        let r = self.quotas.charge_pir(caller, 1).await;
        self.charged(caller, r)?;
        if let Some(total) = self.anonymous_total(caller) {
            let r = self.quotas.charge_pir(&total, 1).await;
            self.charged(&total, r)?;
        }
        Ok(())
    }

    /// A slot for one PIR answer in flight, or `None` when as many answers
    /// as the machine has cores are running (each is a pass over the whole
    /// database: queueing more only delays them all).
    pub(crate) fn pir_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.pir_slots.clone().try_acquire_owned().ok()
    }

    fn charged(&self, caller: &Caller, r: Result<(), QuotaError>) -> Result<(), Refusal> {
        r.map_err(|e| {
            let e = match e {
                QuotaError::Exhausted(e) => e,
                QuotaError::Unavailable(_) => {
                    // Logged (rate-limited) by the store; counted here.
                    self.metrics.quota_store_error();
                    return Refusal::QuotaUnavailable;
                }
            };
            self.metrics.quota_rejected(&caller.name);
            // Request-rate refusals cost the sender nothing more, so a flood
            // of them is possible: counted, logged only at debug.
            if e.limit == REQUEST_RATE {
                tracing::debug!(api_key = %caller.name, limit = e.limit, "quota exhausted");
            } else {
                tracing::info!(api_key = %caller.name, limit = e.limit, "quota exhausted");
            }
            e.into()
        })
    }
}
