//! # breachcheck-client
//!
//! Checks phone numbers against a breachcheck server without showing them to
//! it. Each number is canonicalised to E.164, blinded, evaluated by the server
//! under its VOPRF key (RFC 9497, ristretto255-SHA512) with a batched proof
//! that this client verifies against the pinned public key, unblinded, and
//! looked up in the k-anonymity buckets it downloads. Membership is decided
//! here; the server learns `j` bits of a public hash of each number.
//!
//! ```no_run
//! # async fn run() -> Result<(), breachcheck_client::ClientError> {
//! use breachcheck_client::Client;
//!
//! let client = Client::builder("http://127.0.0.1:50051")
//!     .api_key("bc_...")
//!     .default_region("CN")
//!     .connect()
//!     .await?;
//! for r in client.check(["+86 138 0013 8000", "13900139000", "not a number"]).await? {
//!     match (&r.number, &r.error) {
//!         (Some(n), None) => println!("{n}: {}", if r.found { "FOUND" } else { "not found" }),
//!         _ => println!("{:?}: invalid ({})", r.input, r.error.as_deref().unwrap_or("")),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! * [`Client`] / [`ClientBuilder`]: connection, pinning, retries, checks.
//! * [`CheckResult`]: one answer per input, in input order.
//! * [`ClientError`]: every failure, with what to do about it.

mod error;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breachcheck_proto as proto;
use breachcheck_proto::Mode;
use breachcheck_proto::Payload;
use breachcheck_proto::pb::breach_check_client::BreachCheckClient;
use breachcheck_proto::pb::{self, EvaluateRequest, GetBucketsRequest, GetIndexInfoRequest};
use breachcheck_proto::{EvaluatedElement, PhoneNumber, Proof, PublicKey, Region};
use serde::Serialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

pub use error::{ClientError, Result};
pub use pb::{Breach, IndexInfo};

/// The default prefix bits: `min(k, 14)`.
pub const DEFAULT_PREFIX_BITS: u32 = 14;
/// Size of the numbering plan the privacy summary divides: the ~1.7 billion
/// allocated Chinese mobile numbers.
pub const NUMBERING_PLAN: f64 = 1.7e9;
/// Numbers handled per round of the streaming check.
pub const STREAM_CHUNK: usize = 16_384;
/// Prefixes per GetBuckets request.
const PREFIXES_PER_REQUEST: usize = 1024;
/// Largest response message accepted (a bucket of a big, coarse index).
const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// Bucket payload bytes kept in memory across chunks.
const BUCKET_MEMORY: usize = 512 << 20;

/// The answer for one input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// The input as given.
    pub input: String,
    /// Its canonical E.164 form, if it parsed.
    pub number: Option<String>,
    /// Whether it is in the corpus.
    pub found: bool,
    /// The breaches it appeared in (empty when not found, or when the index
    /// carries no labels: then see [`Client::info`] for its one breach).
    pub breaches: Vec<BreachRef>,
    /// Why it did not parse.
    pub error: Option<String>,
}

/// A breach a number appeared in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreachRef {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Date.
    pub date: String,
}

impl From<&Breach> for BreachRef {
    fn from(b: &Breach) -> Self {
        BreachRef {
            id: b.id.clone(),
            name: b.name.clone(),
            date: b.date.clone(),
        }
    }
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoint: String,
    api_key: Option<String>,
    ca_pem: Option<Vec<u8>>,
    pinned: Option<[u8; 32]>,
    prefix_bits: Option<u32>,
    concurrency: usize,
    timeout: Duration,
    retries: u32,
    region: Option<Region>,
    cache_dir: Option<PathBuf>,
    region_error: Option<String>,
}

impl ClientBuilder {
    /// Sends `authorization: Bearer <token>` with every call.
    pub fn api_key(mut self, token: impl Into<String>) -> Self {
        self.api_key = Some(token.into());
        self
    }

    /// Trusts this CA (PEM) for TLS instead of the system roots. TLS is on
    /// for `https://` endpoints.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Pins the server's public key (32 bytes, SerializeElement). Without a
    /// pin the first key seen is pinned for the client's lifetime.
    pub fn pin_key(mut self, key: [u8; 32]) -> Self {
        self.pinned = Some(key);
        self
    }

    /// Prefix bits `j` to ask buckets by (default `min(k, 14)`; 0 downloads
    /// the whole index and leaks nothing).
    pub fn prefix_bits(mut self, j: u32) -> Self {
        self.prefix_bits = Some(j);
        self
    }

    /// Evaluate batches in flight at once (default 4).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Per-call timeout (default 60 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Retries of UNAVAILABLE calls, with exponential backoff (default 8, about 9 s).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Region for numbers without a country code (ISO code, e.g. `CN`).
    pub fn default_region(mut self, code: &str) -> Self {
        self.region = Region::parse(code);
        if self.region.is_none() {
            self.region_error = Some(code.to_owned());
        }
        self
    }

    /// Keeps downloaded buckets on disk, keyed by index id.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Connects and fetches the index description.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] if the server cannot be reached, and the
    /// errors of [`Client::refresh_info`].
    pub async fn connect(self) -> Result<Client> {
        if let Some(code) = &self.region_error {
            return Err(ClientError::UnsupportedIndex(format!(
                "unknown default region {code:?}"
            )));
        }
        let connect_err = |source| ClientError::Connect {
            endpoint: self.endpoint.clone(),
            source,
        };
        let mut ep = Endpoint::from_shared(self.endpoint.clone())
            .map_err(connect_err)?
            .timeout(self.timeout)
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        if self.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_webpki_roots();
            if let Some(pem) = &self.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            ep = ep.tls_config(tls).map_err(connect_err)?;
        }
        let channel = ep.connect().await.map_err(connect_err)?;
        let client = Client {
            inner: Arc::new(Inner {
                grpc: BreachCheckClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
                opts: self,
                state: Mutex::new(State::default()),
            }),
        };
        client.refresh_info().await?;
        Ok(client)
    }
}

#[derive(Debug, Default)]
struct State {
    info: Option<IndexInfo>,
    pinned: Option<[u8; 32]>,
    buckets: HashMap<u32, Arc<OwnedPayload>>,
    bucket_bytes: usize,
    bucket_index: Vec<u8>,
}

#[derive(Debug)]
struct Inner {
    grpc: BreachCheckClient<Channel>,
    opts: ClientBuilder,
    state: Mutex<State>,
}

/// A connected client. Cheap to clone; clones share the pin and the caches.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A decoded bucket payload, owned.
#[derive(Debug)]
struct OwnedPayload {
    fingerprints: Vec<u64>,
    labels: Vec<u8>,
    label_width: usize,
    len: usize,
}

impl OwnedPayload {
    fn decode(bucket: u32, bytes: &[u8], f: u32) -> Result<Self> {
        let p = Payload::decode(bytes).map_err(|e| ClientError::BadBucket {
            bucket,
            reason: e.to_string(),
        })?;
        if p.fingerprint_bits != f {
            return Err(ClientError::BadBucket {
                bucket,
                reason: "fingerprint width differs from IndexInfo".into(),
            });
        }
        Ok(OwnedPayload {
            label_width: usize::from(p.label_width),
            labels: p.labels.to_vec(),
            fingerprints: p.fingerprints,
            len: bytes.len(),
        })
    }
}

impl Client {
    /// Starts building a client for `endpoint` (`http://host:port` or
    /// `https://host:port`).
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.into(),
            api_key: None,
            ca_pem: None,
            pinned: None,
            prefix_bits: None,
            concurrency: 4,
            timeout: Duration::from_secs(60),
            retries: 8,
            region: None,
            cache_dir: None,
            region_error: None,
        }
    }

    /// The index description last fetched.
    pub fn info(&self) -> IndexInfo {
        self.lock().info.clone().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(token) = &self.inner.opts.api_key
            && let Ok(v) = format!("Bearer {token}").parse()
        {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    /// Calls `f` with retries on UNAVAILABLE (exponential backoff from
    /// 100 ms, capped at 2 s), mapping the final status to a [`ClientError`].
    async fn with_retries<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f().await {
                Ok(v) => return Ok(v),
                Err(s) if is_transient(&s) && attempt <= self.inner.opts.retries => {
                    tracing::debug!(attempt, code = ?s.code(), "retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(s) if is_transient(&s) => {
                    return Err(ClientError::Unavailable {
                        attempts: attempt,
                        message: s.message().to_owned(),
                    });
                }
                Err(s) => return Err(map_status(s)),
            }
        }
    }

    /// Fetches `IndexInfo` again and checks its key against the pin.
    ///
    /// # Errors
    ///
    /// [`ClientError::KeyMismatch`] if the key is not the pinned one;
    /// [`ClientError::UnsupportedIndex`] for another suite or mode.
    pub async fn refresh_info(&self) -> Result<IndexInfo> {
        let info = self
            .with_retries(|| {
                let mut grpc = self.inner.grpc.clone();
                let req = self.request(GetIndexInfoRequest {});
                async move { grpc.get_index_info(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        if info.suite != proto::SUITE || info.mode != u32::from(Mode::Voprf.id()) {
            return Err(ClientError::UnsupportedIndex(format!(
                "suite {:?} mode {}",
                info.suite, info.mode
            )));
        }
        let served: [u8; 32] = info
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::UnsupportedIndex("public key is not 32 bytes".into()))?;
        PublicKey::from_bytes(&served)?;
        if info.fingerprint_bits == 0
            || info.fingerprint_bits > 64
            || info.bucket_bits > proto::MAX_BUCKET_BITS
        {
            return Err(ClientError::UnsupportedIndex(
                "bucket layout out of range".into(),
            ));
        }
        let mut st = self.lock();
        let pin = st.pinned.or(self.inner.opts.pinned).unwrap_or(served);
        if pin != served {
            return Err(ClientError::KeyMismatch {
                pinned: fingerprint(&pin),
                served: fingerprint(&served),
            });
        }
        st.pinned = Some(pin);
        let new_index = st.bucket_index != info.index_id;
        if new_index {
            st.buckets.clear();
            st.bucket_bytes = 0;
            st.bucket_index = info.index_id.clone();
        }
        st.info = Some(info.clone());
        drop(st);
        if new_index {
            self.remove_stale_cache(&info.index_id);
        }
        Ok(info)
    }

    /// The prefix bits this client asks by, for the current index.
    pub fn prefix_bits(&self) -> u32 {
        let info = self.info();
        let j = self
            .inner
            .opts
            .prefix_bits
            .unwrap_or(DEFAULT_PREFIX_BITS)
            .min(info.bucket_bits);
        j.max(info.min_prefix_bits.min(info.bucket_bits))
    }

    /// Checks `numbers`, returning one result per input in input order.
    /// Numbers that do not parse are reported and never sent.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`]: a check either answers every number or fails.
    pub async fn check<I, S>(&self, numbers: I) -> Result<Vec<CheckResult>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let inputs: Vec<String> = numbers.into_iter().map(|s| s.as_ref().to_owned()).collect();
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(STREAM_CHUNK) {
            out.extend(self.check_chunk(chunk).await?);
        }
        Ok(out)
    }

    /// Checks a stream of numbers with bounded memory, sending results (in
    /// input order) to the returned channel as each chunk completes.
    pub fn check_stream<I>(&self, numbers: I) -> tokio::sync::mpsc::Receiver<Result<CheckResult>>
    where
        I: IntoIterator<Item = String> + Send + 'static,
        I::IntoIter: Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CHUNK);
        let client = self.clone();
        tokio::spawn(async move {
            let mut it = Some(numbers.into_iter());
            loop {
                // The iterator may block (a file, stdin): pull each chunk on
                // the blocking pool, never on a runtime worker.
                let Some(mut src) = it.take() else { break };
                let (chunk, src) = match tokio::task::spawn_blocking(move || {
                    let chunk: Vec<String> = src.by_ref().take(STREAM_CHUNK).collect();
                    (chunk, src)
                })
                .await
                {
                    Ok(pulled) => pulled,
                    Err(e) => {
                        // The input iterator panicked: say so, never end quietly.
                        let _ = tx
                            .send(Err(ClientError::Io(std::io::Error::other(e))))
                            .await;
                        return;
                    }
                };
                it = Some(src);
                if chunk.is_empty() {
                    break;
                }
                match client.check_chunk(&chunk).await {
                    Ok(results) => {
                        for r in results {
                            if tx.send(Ok(r)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        rx
    }

    async fn check_chunk(&self, inputs: &[String]) -> Result<Vec<CheckResult>> {
        let region = self.inner.opts.region;
        let parsed: Vec<std::result::Result<PhoneNumber, breachcheck_proto::PhoneError>> = inputs
            .iter()
            .map(|s| PhoneNumber::parse(s, region))
            .collect();
        // Distinct numbers, each evaluated once.
        let mut distinct: Vec<PhoneNumber> = parsed.iter().filter_map(|p| p.ok()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut found: HashMap<PhoneNumber, (bool, Vec<BreachRef>)> = HashMap::new();
        if !distinct.is_empty() {
            let mut refreshed = false;
            // Verified outputs survive an index replacement under the same
            // (pinned) key, so a retry re-fetches buckets but does not spend
            // quota on evaluating the same numbers again.
            let mut outputs = None;
            loop {
                match self.lookup(&distinct, &mut outputs).await {
                    Ok(f) => {
                        found = f;
                        break;
                    }
                    // The index was replaced: refetch IndexInfo and retry once.
                    Err(ClientError::Rpc(s))
                        if !refreshed
                            && matches!(s.code(), Code::FailedPrecondition | Code::NotFound) =>
                    {
                        refreshed = true;
                        self.refresh_info().await?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(inputs
            .iter()
            .zip(parsed)
            .map(|(input, p)| match p {
                Ok(n) => {
                    let (is_found, breaches) = found.get(&n).cloned().unwrap_or_default();
                    CheckResult {
                        input: input.clone(),
                        number: Some(n.as_str().to_owned()),
                        found: is_found,
                        breaches,
                        error: None,
                    }
                }
                Err(e) => CheckResult {
                    input: input.clone(),
                    number: None,
                    found: false,
                    breaches: Vec::new(),
                    error: Some(e.to_string()),
                },
            })
            .collect())
    }

    /// Evaluates and looks up distinct numbers against the current index.
    async fn lookup(
        &self,
        numbers: &[PhoneNumber],
        outputs: &mut Option<Vec<proto::Output>>,
    ) -> Result<HashMap<PhoneNumber, (bool, Vec<BreachRef>)>> {
        let info = self.info();
        let k = info.bucket_bits;
        let values: Vec<u32> = numbers
            .iter()
            .map(|n| proto::bucket_value(n.as_bytes()))
            .collect();
        let needed: BTreeSet<u32> = values.iter().map(|&v| proto::top_bits(v, k)).collect();
        let (evaluated, buckets) = tokio::join!(
            async {
                match outputs.take() {
                    Some(o) => Ok(o),
                    None => self.evaluate_all(&info, numbers).await,
                }
            },
            self.fetch_buckets(&info, &needed)
        );
        let buckets = match (evaluated, buckets) {
            (Ok(o), Ok(b)) => {
                *outputs = Some(o);
                b
            }
            (Ok(o), Err(e)) => {
                *outputs = Some(o);
                return Err(e);
            }
            (Err(e), _) => return Err(e),
        };
        let outputs = outputs.as_deref().unwrap_or_default();
        let mut result = HashMap::with_capacity(numbers.len());
        for ((n, v), out) in numbers.iter().zip(&values).zip(outputs.iter()) {
            let b = proto::top_bits(*v, k);
            let payload = buckets.get(&b).ok_or_else(|| ClientError::BadBucket {
                bucket: b,
                reason: "the server did not send it".into(),
            })?;
            let fp = proto::fingerprint(out, info.fingerprint_bits);
            let start = payload.fingerprints.partition_point(|&x| x < fp);
            let is_found = payload.fingerprints.get(start) == Some(&fp);
            let mut breaches = Vec::new();
            if is_found {
                breaches = self.breaches_of(&info, payload, start, out);
            }
            result.insert(*n, (is_found, breaches));
        }
        Ok(result)
    }

    /// Decrypts the label of entry `i` into breach references. A single-breach index has no labels.
    fn breaches_of(
        &self,
        info: &IndexInfo,
        p: &OwnedPayload,
        i: usize,
        out: &proto::Output,
    ) -> Vec<BreachRef> {
        let w = p.label_width;
        if w == 0 {
            return info.breaches.iter().map(BreachRef::from).collect();
        }
        let mut label = [0u8; 4];
        if let Some(sealed) = p.labels.get(i * w..(i + 1) * w) {
            label[..w].copy_from_slice(sealed);
            proto::seal_label(out, &mut label[..w]);
        }
        let mask = u32::from_le_bytes(label);
        info.breaches
            .iter()
            .enumerate()
            .filter(|(bit, _)| *bit < 32 && mask & (1 << bit) != 0)
            .map(|(_, b)| BreachRef::from(b))
            .collect()
    }

    /// Blind, Evaluate and verified Finalize of every number, in batches of
    /// `max_batch`, `concurrency` batches at once.
    async fn evaluate_all(
        &self,
        info: &IndexInfo,
        numbers: &[PhoneNumber],
    ) -> Result<Vec<proto::Output>> {
        let max = (info.max_batch as usize).clamp(1, proto::MAX_PROOF_BATCH);
        let sem = Arc::new(tokio::sync::Semaphore::new(self.inner.opts.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, batch) in numbers.chunks(max).enumerate() {
            let batch: Vec<PhoneNumber> = batch.to_vec();
            let client = self.clone();
            let info = info.clone();
            let sem = sem.clone();
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                client.evaluate_batch(&info, batch).await.map(|o| (i, o))
            });
        }
        let mut parts: Vec<(usize, Vec<proto::Output>)> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(part)) => parts.push(part),
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(ClientError::Io(std::io::Error::other(e))),
            }
        }
        parts.sort_by_key(|(i, _)| *i);
        Ok(parts.into_iter().flat_map(|(_, o)| o).collect())
    }

    async fn evaluate_batch(
        &self,
        info: &IndexInfo,
        numbers: Vec<PhoneNumber>,
    ) -> Result<Vec<proto::Output>> {
        let inputs = Arc::new(numbers);
        let blind_inputs = inputs.clone();
        let (blinds, blinded) = tokio::task::spawn_blocking(move || {
            let xs: Vec<&[u8]> = blind_inputs.iter().map(|n| n.as_bytes()).collect();
            proto::blind_batch(Mode::Voprf, &xs, &mut rand::rng())
        })
        .await
        .map_err(|e| ClientError::Io(std::io::Error::other(e)))??;
        let wire: Vec<Vec<u8>> = blinded.iter().map(|b| b.to_bytes().to_vec()).collect();
        let index_id = info.index_id.clone();
        let resp = self
            .with_retries(|| {
                let mut grpc = self.inner.grpc.clone();
                let req = self.request(EvaluateRequest {
                    index_id: index_id.clone(),
                    blinded_elements: wire.clone(),
                });
                async move { grpc.evaluate(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        if resp.evaluated_elements.len() != blinded.len() {
            return Err(ClientError::ResponseLength {
                sent: blinded.len(),
                got: resp.evaluated_elements.len(),
            });
        }
        let pinned = self
            .lock()
            .pinned
            .ok_or_else(|| ClientError::UnsupportedIndex("no pinned key".into()))?;
        let pk = PublicKey::from_bytes(&pinned)?;
        let pinned_fp = pk.fingerprint();
        tokio::task::spawn_blocking(move || {
            let mut evaluated = Vec::with_capacity(resp.evaluated_elements.len());
            for (e, b) in resp.evaluated_elements.iter().zip(&blinded) {
                let e = EvaluatedElement::from_bytes(e)?;
                if e.as_bytes() == b.as_bytes() {
                    return Err(ClientError::ReflectedElement);
                }
                evaluated.push(e);
            }
            let proof = Proof::from_bytes(&resp.proof).map_err(|_| ClientError::ProofFailed {
                pinned: pinned_fp.clone(),
            })?;
            let xs: Vec<&[u8]> = inputs.iter().map(|n| n.as_bytes()).collect();
            proto::finalize(
                Mode::Voprf,
                &xs,
                &blinds,
                &blinded,
                &evaluated,
                Some((&pk, &proof)),
            )
            .map_err(|e| match e {
                breachcheck_proto::ProtocolError::Verify => {
                    ClientError::ProofFailed { pinned: pinned_fp }
                }
                other => other.into(),
            })
        })
        .await
        .map_err(|e| ClientError::Io(std::io::Error::other(e)))?
    }

    /// Gets the payloads of `needed` buckets: from memory, the disk cache, or
    /// the server (by prefix, or the whole index when that is cheaper).
    async fn fetch_buckets(
        &self,
        info: &IndexInfo,
        needed: &BTreeSet<u32>,
    ) -> Result<HashMap<u32, Arc<OwnedPayload>>> {
        let k = info.bucket_bits;
        let mut have = HashMap::new();
        let mut missing = BTreeSet::new();
        {
            let st = self.lock();
            for &b in needed {
                match st.buckets.get(&b) {
                    Some(p) => {
                        have.insert(b, p.clone());
                    }
                    None => {
                        missing.insert(b);
                    }
                }
            }
        }
        let cache = self.cache_path(info);
        if let Some(dir) = &cache {
            for b in missing.clone() {
                if let Ok(bytes) = std::fs::read(dir.join(format!("{b:08x}.bin")))
                    && let Ok(p) = OwnedPayload::decode(b, &bytes, info.fingerprint_bits)
                {
                    have.insert(b, Arc::new(p));
                    missing.remove(&b);
                }
            }
        }
        if missing.is_empty() {
            return Ok(have);
        }
        let mut j = self.prefix_bits();
        let prefixes: BTreeSet<u32> = missing.iter().map(|&b| b >> (k - j)).collect();
        // When the asked prefixes would cover most of the index anyway, fetch
        // it whole: same bytes, and nothing learned about the numbers.
        if j == 0 || (prefixes.len() as u64) << (k - j) >= (1u64 << k) / 2 {
            j = 0;
        }
        let prefixes: Vec<u32> = if j == 0 {
            vec![0]
        } else {
            prefixes.into_iter().collect()
        };
        // Requests of up to PREFIXES_PER_REQUEST prefixes; a server with a
        // lower `max_prefixes` answers OUT_OF_RANGE, and the size is halved.
        let mut per_request = PREFIXES_PER_REQUEST;
        let mut rest: &[u32] = &prefixes;
        while !rest.is_empty() {
            let (group, tail) = rest.split_at(per_request.min(rest.len()));
            let fetched = match self.get_buckets(info, j, group).await {
                Ok(f) => f,
                Err(ClientError::Rpc(s)) if s.code() == Code::OutOfRange && per_request > 1 => {
                    per_request /= 2;
                    continue;
                }
                Err(e) => return Err(e),
            };
            rest = tail;
            for (b, bytes) in fetched {
                let p = OwnedPayload::decode(b, &bytes, info.fingerprint_bits)?;
                if let Some(dir) = &cache {
                    std::fs::create_dir_all(dir)?;
                    let tmp = dir.join(format!("{b:08x}.tmp"));
                    std::fs::write(&tmp, &bytes)?;
                    std::fs::rename(&tmp, dir.join(format!("{b:08x}.bin")))?;
                }
                have.insert(b, Arc::new(p));
            }
        }
        // Keep what fits in memory for later chunks.
        let mut st = self.lock();
        if st.bucket_index == info.index_id {
            for (b, p) in &have {
                if st.bucket_bytes + p.len <= BUCKET_MEMORY && !st.buckets.contains_key(b) {
                    st.bucket_bytes += p.len;
                    st.buckets.insert(*b, p.clone());
                }
            }
        }
        Ok(have)
    }

    async fn get_buckets(
        &self,
        info: &IndexInfo,
        j: u32,
        prefixes: &[u32],
    ) -> Result<Vec<(u32, Vec<u8>)>> {
        let k = info.bucket_bits;
        let expected: BTreeSet<u32> = prefixes
            .iter()
            .flat_map(|&p| proto::buckets_under_prefix(p, j, k))
            .collect();
        let chunks = self
            .with_retries(|| {
                let mut grpc = self.inner.grpc.clone();
                let req = self.request(GetBucketsRequest {
                    index_id: info.index_id.clone(),
                    prefix_bits: j,
                    prefixes: prefixes.to_vec(),
                });
                async move {
                    let mut stream = grpc.get_buckets(req).await?.into_inner();
                    let mut out = Vec::new();
                    while let Some(chunk) = stream.message().await? {
                        out.push((chunk.bucket, chunk.payload.to_vec()));
                    }
                    Ok(out)
                }
            })
            .await?;
        let got: BTreeSet<u32> = chunks.iter().map(|(b, _)| *b).collect();
        if got != expected || chunks.len() != expected.len() {
            return Err(ClientError::BadBucket {
                bucket: expected.difference(&got).next().copied().unwrap_or(0),
                reason: "the server sent a different set of buckets than asked".into(),
            });
        }
        Ok(chunks)
    }

    /// The disk cache directory of an index: one per index id.
    fn cache_path(&self, info: &IndexInfo) -> Option<PathBuf> {
        let dir = self.inner.opts.cache_dir.as_ref()?;
        Some(dir.join(hex::encode(&info.index_id)))
    }

    /// Removes cache directories of other index ids (once per index change,
    /// not per lookup).
    fn remove_stale_cache(&self, current: &[u8]) {
        let Some(dir) = self.inner.opts.cache_dir.as_ref() else {
            return;
        };
        let id = hex::encode(current);
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.len() == 64 && name != id && name.bytes().all(|c| c.is_ascii_hexdigit()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// What the server learns from a check at the current settings: the
    /// prefix bits and the size of the anonymity set of each number.
    pub fn privacy_cost(&self) -> (u32, f64) {
        let j = self.prefix_bits();
        (j, NUMBERING_PLAN / (1u64 << j) as f64)
    }
}

fn fingerprint(key: &[u8; 32]) -> String {
    PublicKey::from_bytes(key)
        .map(|k| k.fingerprint())
        .unwrap_or_else(|_| hex::encode(&key[..8]))
}

fn is_transient(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable)
        || (s.code() == Code::Unknown && s.message().contains("transport"))
        || (s.code() == Code::Internal && s.message().contains("h2 protocol error"))
}

fn map_status(s: Status) -> ClientError {
    match s.code() {
        Code::Unauthenticated => ClientError::Unauthenticated(s.message().to_owned()),
        Code::ResourceExhausted => ClientError::QuotaExhausted {
            retry_after: error::parse_retry_after(s.message()),
            message: s.message().to_owned(),
        },
        _ => ClientError::Rpc(s),
    }
}
