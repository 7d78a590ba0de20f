//! [`ClientBuilder`]: every setting of a [`Client`], and `connect`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breachcheck_proto::Region;

use crate::buckets::{BucketCache, SentBits};
use crate::check::{Client, Inner, State};
use crate::error::{ClientError, Result};
use crate::pace::{OnProgress, Pacer, Progress};
use crate::rpc::{self, Rpc};
use crate::trust::TrustFile;

/// How long a check waits, by default, for the server's evaluation rate to
/// refill before it calls the quota exhausted.
pub const DEFAULT_MAX_QUOTA_WAIT: Duration = Duration::from_secs(120);

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    pub(crate) rpc: rpc::Settings,
    pub(crate) pinned: Option<[u8; 32]>,
    pub(crate) pinned_index: Option<[u8; 32]>,
    pub(crate) trust_file: Option<PathBuf>,
    pub(crate) prefix_bits: Option<u32>,
    pub(crate) max_prefix_bits: Option<u32>,
    pub(crate) concurrency: usize,
    /// The default region, or the code that named none.
    pub(crate) region: std::result::Result<Option<Region>, String>,
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) max_quota_wait: Duration,
    pub(crate) on_progress: Option<OnProgress>,
    pub(crate) pir: bool,
}

impl ClientBuilder {
    pub(crate) fn new(endpoint: String) -> Self {
        ClientBuilder {
            rpc: rpc::Settings::new(endpoint),
            pinned: None,
            pinned_index: None,
            trust_file: None,
            prefix_bits: None,
            max_prefix_bits: None,
            concurrency: 4,
            region: Ok(None),
            cache_dir: None,
            max_quota_wait: DEFAULT_MAX_QUOTA_WAIT,
            on_progress: None,
            pir: false,
        }
    }

    /// Adds a replica: another server with the same key and index. Calls are
    /// spread over all of them round-robin; a replica that fails a call
    /// transiently is skipped for a few seconds and the call retried at once
    /// on another, so a replica lost mid-check costs a retry, not the check.
    /// A bucket-only replica (Evaluate UNIMPLEMENTED) serves the buckets.
    pub fn replica(mut self, endpoint: impl Into<String>) -> Self {
        self.rpc.endpoints.push(endpoint.into());
        self
    }

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
    /// pin the first key seen is pinned for the client's lifetime (and, with
    /// a [trust file](Self::trust_file), across runs).
    pub fn pin_key(mut self, key: [u8; 32]) -> Self {
        self.pinned = Some(key);
        self
    }

    /// Pins the index id (32 bytes): the server must serve exactly this
    /// index, which pins its key, its layout and every byte of every bucket
    /// (docs/PROTOCOL.md §6). A rebuilt or reloaded index is then an error
    /// ([`ClientError::IndexMismatch`]) until the caller pins the new id.
    pub fn pin_index(mut self, index_id: [u8; 32]) -> Self {
        self.pinned_index = Some(index_id);
        self
    }

    /// Remembers the first key each server presents in this file and
    /// refuses a different one later (trust on first use, like ssh's
    /// `known_hosts`; [`ClientError::TrustedKeyChanged`]).
    pub fn trust_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.trust_file = Some(path.into());
        self
    }

    /// Prefix bits `j` to ask buckets by (default `min(k, 14)`; 0 downloads
    /// the whole index and leaks nothing). It is never raised to meet a
    /// server's `min_prefix_bits` beyond [`max_prefix_bits`](Self::max_prefix_bits).
    pub fn prefix_bits(mut self, j: u32) -> Self {
        self.prefix_bits = Some(j);
        self
    }

    /// The most prefix bits the client may send (default: the
    /// [`prefix_bits`](Self::prefix_bits) asked for, 14 if none). A server
    /// whose `min_prefix_bits` is higher is refused before anything is sent
    /// ([`ClientError::PrefixBitsRefused`]).
    pub fn max_prefix_bits(mut self, j: u32) -> Self {
        self.max_prefix_bits = Some(j);
        self
    }

    /// Evaluate batches in flight at once (default 4).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The deadline of a call (default 60 s); a bucket download gets this
    /// plus the time its bytes take at 2 Mbit/s.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.rpc.timeout = t;
        self
    }

    /// The longest silence between two messages of a call (default 30 s).
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.rpc.idle_timeout = t;
        self
    }

    /// Retries of UNAVAILABLE calls, with exponential backoff (default 8, about 9 s).
    pub fn retries(mut self, n: u32) -> Self {
        self.rpc.retries = n;
        self
    }

    /// The longest refill of the server's evaluation rate a check waits for
    /// (default [`DEFAULT_MAX_QUOTA_WAIT`]); a longer one, such as a daily
    /// cap, is [`ClientError::QuotaExhausted`].
    pub fn max_quota_wait(mut self, t: Duration) -> Self {
        self.max_quota_wait = t;
        self
    }

    /// Calls `f` with progress events, such as a wait for the quota.
    pub fn on_progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.on_progress = Some(OnProgress(Arc::new(f)));
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

    /// Zero-leakage mode (docs/PROTOCOL.md §10): every bucket a check needs
    /// is fetched by PIR, so the server learns nothing about which numbers
    /// are checked (or the whole index is downloaded when that is smaller).
    /// The server must answer PIR (`serve --pir`); each bucket costs one PIR
    /// query of the caller's quota and some tens of ms of client CPU.
    pub fn pir(mut self, on: bool) -> Self {
        self.pir = on;
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
                sent: SentBits::default(),
                pacer: Arc::new(Pacer::new(self.max_quota_wait, self.on_progress.clone())),
                trust: self.trust_file.clone().map(TrustFile::new),
                opts: self,
                state: Mutex::new(State::default()),
                pir: tokio::sync::Mutex::new(None),
            }),
        };
        client.refresh_info().await?;
        Ok(client)
    }
}
