//! The `breachcheck.v1.BreachCheck` gRPC service and the `serve` entry point.
//!
//! The service is stateless between RPCs: each call reads the currently
//! served (index, key) pair once, so a reload never mixes two keys in one
//! answer, and in-flight calls finish on the pair they started with.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use breachcheck_proto as proto;
use breachcheck_proto::pb::breach_check_server::{BreachCheck, BreachCheckServer};
use breachcheck_proto::pb::{
    Breach, BucketChunk, EvaluateRequest, EvaluateResponse, GetBucketsRequest, GetIndexInfoRequest,
    IndexInfo,
};
use breachcheck_proto::{BlindedElement, ServerKey};
use rayon::prelude::*;
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::error::Result;
use crate::index::Index;
use crate::key::load_key;
use crate::limits::{ApiKeys, AuthError, Caller, MemoryQuotas, QuotaStore};
use crate::metrics::Metrics;

/// An index and the key it was built with, served together. A bucket-only
/// replica has no key: it answers GetIndexInfo and GetBuckets only.
#[derive(Debug)]
pub struct Served {
    /// The mapped index.
    pub index: Index,
    /// Its OPRF key (`None` on a bucket-only replica).
    pub key: Option<ServerKey>,
}

impl Served {
    /// Loads a key and an index, checks that they match and (unless
    /// `verify_body` is false) hashes the whole body.
    ///
    /// # Errors
    ///
    /// Key, index or mismatch errors.
    pub fn load(index: &std::path::Path, key: &std::path::Path, verify_body: bool) -> Result<Self> {
        let key = load_key(key)?;
        let index = Index::open_with_key(index, &key)?;
        if verify_body {
            index.verify()?;
        }
        Ok(Served {
            index,
            key: Some(key),
        })
    }

    /// Loads an index without its key, for a bucket-only replica.
    ///
    /// # Errors
    ///
    /// Index errors.
    pub fn load_buckets_only(index: &std::path::Path, verify_body: bool) -> Result<Self> {
        let index = Index::open(index)?;
        if verify_body {
            index.verify()?;
        }
        Ok(Served { index, key: None })
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
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// State for `served` under `config`, with in-memory quotas.
    pub fn new(served: Served, config: Config) -> Self {
        Self::with_quotas(served, config, Arc::new(MemoryQuotas::new()))
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
    pub fn reload(&self, index: &std::path::Path, key: Option<&std::path::Path>) -> Result<()> {
        let next = match key {
            Some(key) => Served::load(index, key, true)?,
            None => Served::load_buckets_only(index, true)?,
        };
        tracing::info!(
            index = %index.display(),
            index_id = %hex::encode(next.index.index_id()),
            public_key = %next.index.public_key_fingerprint(),
            "reloaded index"
        );
        self.swap(next);
        Ok(())
    }

    fn authenticate<T>(&self, req: &Request<T>, required: bool) -> Result<Caller, Status> {
        let header = req.metadata().get("authorization").map(|v| v.as_bytes());
        if header.is_none() && !required {
            return Ok(Caller {
                name: "public".into(),
                quota: self.config.anonymous.into(),
            });
        }
        self.keys.authenticate(header).map_err(|e| match e {
            AuthError::Missing => {
                Status::unauthenticated("missing API key: send `authorization: Bearer <token>`")
            }
            AuthError::Invalid => Status::unauthenticated("invalid API key"),
        })
    }

    fn check_index_id(&self, served: &Served, id: &[u8]) -> Result<(), Status> {
        // An empty id means "the current index": the proof still binds the
        // answer to the key, so a client that does not track ids loses nothing.
        if id.is_empty() || id == served.index.index_id() {
            return Ok(());
        }
        let retired = self.retired.read().unwrap_or_else(|e| e.into_inner());
        if retired.iter().any(|r| r.as_slice() == id) {
            Err(Status::failed_precondition(
                "index_id is stale: the index was replaced; refetch GetIndexInfo",
            ))
        } else {
            Err(Status::not_found("unknown index_id: refetch GetIndexInfo"))
        }
    }

    fn charge<T>(&self, caller: &Caller, r: std::result::Result<(), T>) -> Result<(), Status>
    where
        T: std::fmt::Display,
    {
        r.map_err(|e| {
            self.metrics.quota_rejected(&caller.name);
            tracing::info!(api_key = %caller.name, "quota exhausted");
            Status::resource_exhausted(e.to_string())
        })
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct Service {
    state: Arc<AppState>,
}

impl Service {
    /// A service over `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        Service { state }
    }

    fn observe<T>(&self, rpc: &'static str, start: Instant, r: &Result<T, Status>) {
        let code = match r {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.state.metrics.observe(rpc, code, start.elapsed());
    }

    fn index_info(&self) -> IndexInfo {
        let served = self.state.current();
        let h = served.index.header();
        IndexInfo {
            suite: proto::SUITE.into(),
            mode: u32::from(h.mode),
            public_key: h.public_key.to_vec(),
            index_id: h.index_id.to_vec(),
            bucket_bits: h.bucket_bits,
            fingerprint_bits: h.fingerprint_bits,
            entry_count: h.entry_count,
            breaches: h
                .breaches
                .iter()
                .map(|b| Breach {
                    id: b.id.clone(),
                    name: b.name.clone(),
                    date: b.date.clone(),
                    description: b.description.clone(),
                    data_classes: b.data_classes.clone(),
                })
                .collect(),
            max_batch: self.state.config.max_batch,
            min_prefix_bits: self.state.config.min_prefix_bits.min(h.bucket_bits),
        }
    }

    async fn evaluate_inner(
        &self,
        req: Request<EvaluateRequest>,
    ) -> Result<EvaluateResponse, Status> {
        let state = &self.state;
        let caller = state.authenticate(&req, true)?;
        let served = state.current();
        let req = req.into_inner();
        state.check_index_id(&served, &req.index_id)?;
        if served.key.is_none() {
            return Err(Status::unimplemented(
                "this replica serves buckets only (it holds no key); send Evaluate to an evaluation server",
            ));
        }
        let n = req.blinded_elements.len();
        let max = state.config.max_batch as usize;
        if n == 0 {
            return Err(Status::invalid_argument("blinded_elements is empty"));
        }
        if n > max {
            return Err(Status::out_of_range(format!(
                "batch of {n} elements is above max_batch {max}"
            )));
        }
        // Validate every element before any scalar multiplication: lengths
        // here, decoding (one decompression each) on the rayon pool.
        if let Some(i) = req
            .blinded_elements
            .iter()
            .position(|b| b.len() != proto::ELEMENT_LEN)
        {
            return Err(Status::invalid_argument(format!(
                "blinded_elements[{i}]: {}",
                breachcheck_proto::ProtocolError::InvalidElement
            )));
        }
        let wire = req.blinded_elements;
        let blinded = on_pool(move || {
            wire.par_iter()
                .enumerate()
                .map(|(i, b)| {
                    BlindedElement::from_bytes(b).map_err(|e| {
                        Status::invalid_argument(format!("blinded_elements[{i}]: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, Status>>()
        })
        .await??;
        state.charge(&caller, state.quotas.charge_elements(&caller, n as u64))?;
        // The multiplications run on the rayon pool too, never on the runtime.
        let key_holder = served.clone();
        let (elements, proof) = on_pool(move || {
            let Some(key) = key_holder.key.as_ref() else {
                return Err(breachcheck_proto::ProtocolError::InvalidInput);
            };
            let elements: Vec<_> = blinded
                .par_chunks(64)
                .flat_map_iter(|c| key.blind_evaluate_elements(c))
                .collect();
            key.generate_proof(&blinded, &elements, &mut rand::rng())
                .map(|p| (elements, p))
        })
        .await?
        .map_err(crate::ServerError::from)?;
        state.metrics.add_elements(n as u64);
        tracing::debug!(api_key = %caller.name, elements = n, "evaluated batch");
        Ok(EvaluateResponse {
            evaluated_elements: elements.iter().map(|e| e.to_bytes().to_vec()).collect(),
            proof: proof.to_bytes().to_vec(),
        })
    }

    fn get_buckets_inner(&self, req: Request<GetBucketsRequest>) -> Result<BucketStream, Status> {
        let state = &self.state;
        let caller = state.authenticate(&req, true)?;
        let served = state.current();
        let req = req.into_inner();
        state.check_index_id(&served, &req.index_id)?;
        let h = served.index.header();
        let k = h.bucket_bits;
        let j = req.prefix_bits;
        let floor = state.config.min_prefix_bits.min(k);
        if j > k {
            return Err(Status::invalid_argument(format!(
                "prefix_bits {j} is above the index's bucket_bits {k}"
            )));
        }
        if j < floor {
            return Err(Status::invalid_argument(format!(
                "prefix_bits {j} is below the server's min_prefix_bits {floor}"
            )));
        }
        let mut prefixes = req.prefixes;
        if j == 0 && prefixes.is_empty() {
            prefixes.push(0);
        }
        if prefixes.len() > state.config.max_prefixes as usize {
            return Err(Status::out_of_range(format!(
                "{} prefixes is above the limit of {} per request",
                prefixes.len(),
                state.config.max_prefixes
            )));
        }
        let mut seen = std::collections::HashSet::with_capacity(prefixes.len());
        for (i, &p) in prefixes.iter().enumerate() {
            if j < 32 && p >> j != 0 {
                return Err(Status::invalid_argument(format!(
                    "prefixes[{i}] = {p} does not fit in prefix_bits {j}"
                )));
            }
            if !seen.insert(p) {
                return Err(Status::invalid_argument(format!(
                    "prefixes[{i}] = {p} is repeated"
                )));
            }
        }
        let per_prefix = 1u64 << (k - j);
        let payload_len = served.index.dir_entry(0).map_or(0, |e| u64::from(e.len));
        let bytes = prefixes.len() as u64 * per_prefix * payload_len;
        state.charge(&caller, state.quotas.charge_bytes(&caller, bytes))?;
        state.metrics.add_bucket_bytes(bytes);
        let index = served.index.clone();
        let chunks = prefixes
            .into_iter()
            .flat_map(move |p| proto::buckets_under_prefix(p, j, k))
            .map(move |b| {
                index
                    .bucket_bytes(b)
                    .map(|payload| BucketChunk { bucket: b, payload })
                    .ok_or_else(|| Status::internal("internal error"))
            });
        Ok(Box::pin(tokio_stream::iter(chunks)))
    }
}

/// Runs `f` on the rayon pool and awaits its result.
async fn on_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.map_err(|_| Status::internal("internal error"))
}

type BucketStream = Pin<Box<dyn Stream<Item = Result<BucketChunk, Status>> + Send>>;

#[tonic::async_trait]
impl BreachCheck for Service {
    async fn get_index_info(
        &self,
        req: Request<GetIndexInfoRequest>,
    ) -> Result<Response<IndexInfo>, Status> {
        let start = Instant::now();
        self.state.metrics.started();
        let r = self
            .state
            .authenticate(&req, false)
            .map(|_| Response::new(self.index_info()));
        self.observe("GetIndexInfo", start, &r);
        r
    }

    async fn evaluate(
        &self,
        req: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        let start = Instant::now();
        self.state.metrics.started();
        let r = self.evaluate_inner(req).await.map(Response::new);
        self.observe("Evaluate", start, &r);
        r
    }

    type GetBucketsStream = BucketStream;

    async fn get_buckets(
        &self,
        req: Request<GetBucketsRequest>,
    ) -> Result<Response<Self::GetBucketsStream>, Status> {
        let start = Instant::now();
        self.state.metrics.started();
        let r = self.get_buckets_inner(req).map(Response::new);
        self.observe("GetBuckets", start, &r);
        r
    }
}

/// Largest request the server decodes: a full batch of elements plus framing.
pub fn max_request_bytes(max_batch: u32) -> usize {
    max_batch as usize * (proto::ELEMENT_LEN + 3) + 1024
}

/// Serves the BreachCheck service, health and reflection on `listener` until
/// `shutdown` resolves, then drains in-flight calls.
///
/// # Errors
///
/// Transport errors (TLS configuration, accept failures).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::result::Result<(), tonic::transport::Error> {
    let max_batch = state.config.max_batch;
    let svc = BreachCheckServer::new(Service::new(state))
        .max_decoding_message_size(max_request_bytes(max_batch));
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<BreachCheckServer<Service>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(breachcheck_proto::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(breachcheck_proto::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha();
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let mut router = builder.add_service(health).add_service(svc);
    if let Ok(r) = reflection_v1 {
        router = router.add_service(r);
    }
    if let Ok(r) = reflection_v1alpha {
        router = router.add_service(r);
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    router
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            reporter
                .set_not_serving::<BreachCheckServer<Service>>()
                .await;
        })
        .await
}
