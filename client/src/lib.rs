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
//! One module per protocol step; this file only orchestrates them.
//!
//! * `lib.rs`: [`Client`], [`ClientBuilder`], [`CheckResult`], [`BreachRef`];
//!   [`Client::check`] and [`Client::check_stream`] put the steps together.
//! * `evaluate`: blind → Evaluate → response checks → verify the proof → finalize.
//! * `buckets`: the bucket cache: prefix plan, downloads and their checks, disk cache, memory budget.
//! * `rpc`: the channel, requests with credentials, retries by status code, status → error.
//! * `task`: tasks whose panic is an error of the check, never a short answer.
//! * `error`: [`ClientError`], every failure with what to do about it.

mod buckets;
mod error;
mod evaluate;
mod rpc;
mod task;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use breachcheck_proto::pb;
use breachcheck_proto::{Output, PhoneNumber, Region};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::buckets::BucketCache;
use crate::evaluate::{Evaluator, served_key};
use crate::rpc::Rpc;

pub use buckets::DEFAULT_PREFIX_BITS;
pub use error::{ClientError, Result};
pub use pb::{Breach, IndexInfo};

/// Size of the numbering plan the privacy summary divides: the ~1.7 billion
/// allocated Chinese mobile numbers.
pub const NUMBERING_PLAN: f64 = 1.7e9;
/// Numbers handled per round of the streaming check.
pub const STREAM_CHUNK: usize = 16_384;

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
    rpc: rpc::Settings,
    pinned: Option<[u8; 32]>,
    prefix_bits: Option<u32>,
    concurrency: usize,
    /// The default region, or the code that named none.
    region: std::result::Result<Option<Region>, String>,
    cache_dir: Option<PathBuf>,
}

impl ClientBuilder {
    /// Sends `authorization: Bearer <token>` with every call.
    pub fn api_key(mut self, token: impl Into<String>) -> Self {
        self.rpc.api_key = Some(token.into());
        self
    }

    /// Trusts this CA (PEM) for TLS instead of the system roots. TLS is on
    /// for `https://` endpoints.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.rpc.ca_pem = Some(pem.into());
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
        self.rpc.timeout = t;
        self
    }

    /// Retries of UNAVAILABLE calls, with exponential backoff (default 8, about 9 s).
    pub fn retries(mut self, n: u32) -> Self {
        self.rpc.retries = n;
        self
    }

    /// Region for numbers without a country code (ISO code, e.g. `CN`).
    pub fn default_region(mut self, code: &str) -> Self {
        self.region = Region::parse(code).map(Some).ok_or_else(|| code.to_owned());
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
        let region = self.region.clone().map_err(|code| {
            ClientError::UnsupportedIndex(format!("unknown default region {code:?}"))
        })?;
        let client = Client {
            inner: Arc::new(Inner {
                region,
                rpc: Rpc::connect(&self.rpc).await?,
                buckets: BucketCache::new(self.cache_dir.clone()),
                opts: self,
                state: Mutex::new(State::default()),
            }),
        };
        client.refresh_info().await?;
        Ok(client)
    }
}

/// A connected client. Cheap to clone; clones share the pin and the caches.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    region: Option<Region>,
    rpc: Rpc,
    buckets: BucketCache,
    opts: ClientBuilder,
    state: Mutex<State>,
}

/// What the last GetIndexInfo established: the index, and the evaluator
/// for it under the pinned key.
#[derive(Debug, Default)]
struct State {
    info: IndexInfo,
    evaluator: Option<Evaluator>,
}

impl Client {
    /// Starts building a client for `endpoint` (`http://host:port` or
    /// `https://host:port`).
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            rpc: rpc::Settings::new(endpoint.into()),
            pinned: None,
            prefix_bits: None,
            concurrency: 4,
            region: Ok(None),
            cache_dir: None,
        }
    }

    /// The index description last fetched.
    pub fn info(&self) -> IndexInfo {
        self.lock().info.clone()
    }

    /// Fetches `IndexInfo` again and checks its key against the pin.
    ///
    /// # Errors
    ///
    /// [`ClientError::KeyMismatch`] if the key is not the pinned one;
    /// [`ClientError::UnsupportedIndex`] for another suite or mode.
    pub async fn refresh_info(&self) -> Result<IndexInfo> {
        let info = self.inner.rpc.index_info().await?;
        let served = served_key(&info)?;
        buckets::check_layout(&info)?;
        let mut st = self.lock();
        let pinned = st.evaluator.as_ref().map(Evaluator::pinned);
        let pinned = evaluate::pin(pinned.or(self.inner.opts.pinned), served)?;
        let (rpc, n) = (self.inner.rpc.clone(), self.inner.opts.concurrency);
        st.evaluator = Some(Evaluator::new(rpc, &info, &pinned, n)?);
        st.info = info.clone();
        drop(st);
        self.inner.buckets.use_index(&info.index_id);
        Ok(info)
    }

    /// The prefix bits this client asks by, for the current index.
    pub fn prefix_bits(&self) -> u32 {
        buckets::prefix_bits(self.inner.opts.prefix_bits, &self.info())
    }

    /// What the server learns from a check at the current settings: the
    /// prefix bits and the size of the anonymity set of each number.
    pub fn privacy_cost(&self) -> (u32, f64) {
        let j = self.prefix_bits();
        (j, NUMBERING_PLAN / (1u64 << j) as f64)
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
            // A task of its own: a panic in it is an error, not a lost answer.
            let checked = self.clone().check_chunk(chunk.to_vec());
            out.extend(task::run("check", checked).await?);
        }
        Ok(out)
    }

    /// Checks a stream of numbers with bounded memory, sending results (in
    /// input order) to the returned channel as each chunk completes. A
    /// failure, a panic included, is the last item before the channel
    /// closes: the stream never just ends short.
    pub fn check_stream<I>(&self, numbers: I) -> mpsc::Receiver<Result<CheckResult>>
    where
        I: IntoIterator<Item = String> + Send + 'static,
        I::IntoIter: Send + 'static,
    {
        let client = self.clone();
        task::stream_chunks("check", numbers.into_iter(), STREAM_CHUNK, move |chunk| {
            client.clone().check_chunk(chunk)
        })
    }

    /// Checks one chunk of inputs (by value: it runs as a task of its own).
    async fn check_chunk(self, inputs: Vec<String>) -> Result<Vec<CheckResult>> {
        let parse = |s: &String| PhoneNumber::parse(s, self.inner.region);
        let parsed: Vec<_> = inputs.iter().map(parse).collect();
        // Distinct numbers, each evaluated once.
        let mut distinct: Vec<PhoneNumber> = parsed.iter().filter_map(|p| p.ok()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        // After the index was replaced (NOT_FOUND, FAILED_PRECONDITION),
        // refetch IndexInfo and look up once more. Verified outputs survive a
        // replacement under the same (pinned) key: no quota is spent twice.
        // (No numbers: no RPC either.)
        let (mut outputs, mut refreshed) = (None, false);
        let found = loop {
            match self.lookup(&distinct, &mut outputs).await {
                Err(e) if e.is_stale_index() && !refreshed => refreshed = true,
                r => break r?,
            }
            self.refresh_info().await?;
        };
        Ok(inputs
            .into_iter()
            .zip(parsed)
            .map(|(input, p)| {
                let breaches = p.as_ref().ok().and_then(|n| found.get(n));
                CheckResult {
                    input,
                    number: p.as_ref().ok().map(|n| n.as_str().to_owned()),
                    found: breaches.is_some(),
                    breaches: breaches.cloned().unwrap_or_default(),
                    error: p.err().map(|e| e.to_string()),
                }
            })
            .collect())
    }

    /// Evaluates `numbers` (unless `outputs` has them) while fetching their
    /// buckets, then looks each up: the found ones, with their breaches.
    async fn lookup(
        &self,
        numbers: &[PhoneNumber],
        outputs: &mut Option<Vec<Output>>,
    ) -> Result<Found> {
        let (info, evaluator) = {
            let st = self.lock();
            let no_pin = || ClientError::UnsupportedIndex("no pinned key".into());
            (st.info.clone(), st.evaluator.clone().ok_or_else(no_pin)?)
        };
        let j = buckets::prefix_bits(self.inner.opts.prefix_bits, &info);
        let (evaluated, fetched) = tokio::join!(
            async {
                match outputs.take() {
                    Some(o) => Ok(o),
                    None => evaluator.evaluate(numbers).await,
                }
            },
            self.inner.buckets.fetch(&self.inner.rpc, &info, j, numbers)
        );
        // Keep the outputs even when the buckets failed: a retry reuses them.
        let outputs = outputs.insert(evaluated?);
        let fetched = fetched?;
        let mut found = HashMap::new();
        for (n, out) in numbers.iter().zip(outputs.iter()) {
            if let Some(mask) = fetched.breach_mask(n, out)? {
                found.insert(*n, breach_refs(&info, mask));
            }
        }
        Ok(found)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        let state = &self.inner.state;
        state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The numbers found, with the breaches of each.
type Found = HashMap<PhoneNumber, Vec<BreachRef>>;

/// The breaches of `info` whose bits are set in `mask` (bit `i`: breach `i`).
fn breach_refs(info: &IndexInfo, mask: u32) -> Vec<BreachRef> {
    info.breaches
        .iter()
        .take(32)
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, b)| BreachRef::from(b))
        .collect()
}
