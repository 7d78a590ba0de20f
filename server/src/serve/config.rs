//! Server configuration in one layer: [`Settings`] is both the `serve` flags
//! (each also read from a `BREACHCHECK_…` environment variable) and the TOML
//! file (`server/server.example.toml` documents each key). Precedence is
//! flags > environment > file > defaults; [`Settings::resolve`] fills the
//! defaults and validates once, giving the [`Config`] the server runs with.
//! The `api_keys`, `anonymous` and `default_quota` tables are file-only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use serde::Deserialize;

use crate::error::{Result, ServerError, io_err};
use crate::serve::redis::{RedisSettings, redact};
use crate::serve::source::Cidr;

/// Default most elements per Evaluate.
pub const DEFAULT_MAX_BATCH: u32 = 4096;
/// Default most prefixes per GetBuckets.
pub const DEFAULT_MAX_PREFIXES: u32 = 4096;
/// Default most connections open at once (also capped by the descriptor
/// limit: see `docs/PROTOCOL.md` §8).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
/// Default most concurrent HTTP/2 streams per connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 128;

/// One layer of settings: the flags and environment, or the file. An unset
/// field falls through to the next layer, then to the default.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Listen address (default 127.0.0.1:50051; port 0 picks a free one).
    #[arg(long, env = "BREACHCHECK_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The index file.
    #[arg(long, env = "BREACHCHECK_INDEX")]
    pub index: Option<PathBuf>,
    /// The OPRF key file the index was built with.
    #[arg(long, env = "BREACHCHECK_KEY")]
    pub key: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key, turns TLS on.
    #[arg(long, env = "BREACHCHECK_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "BREACHCHECK_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mTLS.
    #[arg(long, env = "BREACHCHECK_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Serve Prometheus metrics on this address.
    #[arg(long, env = "BREACHCHECK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Most elements per Evaluate (IndexInfo.max_batch; default 4096).
    #[arg(long, env = "BREACHCHECK_MAX_BATCH")]
    pub max_batch: Option<u32>,
    /// Floor on GetBuckets prefix bits (0, the default, allows a full download).
    #[arg(long, env = "BREACHCHECK_MIN_PREFIX_BITS")]
    pub min_prefix_bits: Option<u32>,
    /// Most prefixes in one GetBuckets (default 4096).
    #[arg(long, env = "BREACHCHECK_MAX_PREFIXES")]
    pub max_prefixes: Option<u32>,
    /// Accept calls without an API key, under a small shared quota.
    #[arg(long, env = "BREACHCHECK_ALLOW_ANONYMOUS", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub allow_anonymous: Option<bool>,
    /// Serve the private-check web page and grpc-web (HTTP/1.1) on the
    /// gRPC port (docs/PROTOCOL.md §9).
    #[arg(long, env = "BREACHCHECK_WEB", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub web: Option<bool>,
    /// Answer zero-leakage lookups by PIR (GetPirSetup, PirQuery;
    /// docs/PROTOCOL.md §10): preprocesses the index at start and reload.
    /// The index needs at least 2^11 buckets (build-index --pir).
    #[arg(long, env = "BREACHCHECK_PIR", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub pir: Option<bool>,
    /// Origins whose pages may call this server's grpc-web (CORS), e.g.
    /// `https://check.example.org`; comma-separated. None by default.
    #[arg(
        long = "cors-origin",
        env = "BREACHCHECK_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Option<Vec<String>>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` and
    /// `Forwarded` headers name the client; comma-separated. None by
    /// default: the TCP peer is the client.
    #[arg(
        long = "trusted-proxy",
        env = "BREACHCHECK_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// The one header the trusted proxies set: `x-forwarded-for` (the
    /// default) or `forwarded`. The other is never read (a proxy passes on
    /// what it does not set).
    #[arg(long, env = "BREACHCHECK_FORWARDED_HEADER")]
    pub forwarded_header: Option<ForwardedHeader>,
    /// Most connections open at once; more are closed at accept (default 4096).
    #[arg(long, env = "BREACHCHECK_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Most concurrent HTTP/2 streams per connection (default 128).
    #[arg(long, env = "BREACHCHECK_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Seconds from accept to the first request's headers (default 10).
    #[arg(long, env = "BREACHCHECK_HANDSHAKE_TIMEOUT_SECS")]
    pub handshake_timeout_secs: Option<f64>,
    /// Seconds a connection may stay open with no request in flight (default 120).
    #[arg(long, env = "BREACHCHECK_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<f64>,
    /// Seconds from a request's headers to the end of its body (default 10).
    #[arg(long, env = "BREACHCHECK_REQUEST_BODY_TIMEOUT_SECS")]
    pub request_body_timeout_secs: Option<f64>,
    /// Seconds from a request's headers to its answer (default 60).
    #[arg(long, env = "BREACHCHECK_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<f64>,
    /// Seconds a source (IPv4 address or IPv6 /64) has its new connections
    /// closed at accept after one of its connections spent its refusal
    /// budget without a valid API key; 0: never (default 10).
    #[arg(long, env = "BREACHCHECK_SOURCE_COOLDOWN_SECS")]
    pub source_cooldown_secs: Option<f64>,
    /// Seconds between HTTP/2 keepalive pings (default 30).
    #[arg(long, env = "BREACHCHECK_KEEPALIVE_INTERVAL_SECS")]
    pub keepalive_interval_secs: Option<f64>,
    /// Seconds to wait for a keepalive ping's answer before closing (default 10).
    #[arg(long, env = "BREACHCHECK_KEEPALIVE_TIMEOUT_SECS")]
    pub keepalive_timeout_secs: Option<f64>,
    /// Seconds after which a connection is asked to close (default 600).
    #[arg(long, env = "BREACHCHECK_MAX_CONNECTION_AGE_SECS")]
    pub max_connection_age_secs: Option<f64>,
    /// Seconds an aged connection gets to finish its calls (default 30).
    #[arg(long, env = "BREACHCHECK_MAX_CONNECTION_AGE_GRACE_SECS")]
    pub max_connection_age_grace_secs: Option<f64>,
    /// Serve buckets only, without a key (Evaluate answers UNIMPLEMENTED).
    #[arg(long, env = "BREACHCHECK_BUCKETS_ONLY", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub buckets_only: Option<bool>,
    /// Skip the full-body hash check at start and reload.
    #[arg(long, env = "BREACHCHECK_NO_VERIFY", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub no_verify: Option<bool>,
    /// Load a key file that its group or other users may read, with a
    /// warning, instead of refusing it (`chmod 600` the file instead).
    #[arg(long, env = "BREACHCHECK_ALLOW_INSECURE_KEY_MODE", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub allow_insecure_key_mode: Option<bool>,
    /// Where quota state lives (the `[quota]` table of the file).
    #[command(flatten)]
    pub quota: QuotaStoreSettings,
    /// Quota for callers without a key (when allowed). File only.
    #[arg(skip)]
    pub anonymous: Option<Quota>,
    /// What all anonymous callers together may use (each address has
    /// `anonymous`). File only; default: 100 times `anonymous`.
    #[arg(skip)]
    pub anonymous_total: Option<Quota>,
    /// Quota for keys that do not set their own. File only.
    #[arg(skip)]
    pub default_quota: Option<Quota>,
    /// The API keys. File only.
    #[arg(skip)]
    pub api_keys: Option<Vec<ApiKeyEntry>>,
}

impl Settings {
    /// Parses a TOML layer.
    ///
    /// # Errors
    ///
    /// [`ServerError::Input`] with the TOML error (unknown keys included).
    pub fn from_toml(text: &str) -> Result<Self> {
        // A TOML error quotes the offending line, which may hold a password.
        toml::from_str(text).map_err(|e| ServerError::Input(redact(&format!("config: {e}"))))
    }

    /// Reads a TOML layer from a file.
    ///
    /// # Errors
    ///
    /// I/O or parse errors, naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        Self::from_toml(&text).map_err(|e| ServerError::Input(format!("{}: {e}", path.display())))
    }

    /// This layer over `lower`: each field set here wins.
    pub fn or(self, lower: Settings) -> Settings {
        Settings {
            listen: self.listen.or(lower.listen),
            index: self.index.or(lower.index),
            key: self.key.or(lower.key),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            client_ca: self.client_ca.or(lower.client_ca),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            max_batch: self.max_batch.or(lower.max_batch),
            min_prefix_bits: self.min_prefix_bits.or(lower.min_prefix_bits),
            max_prefixes: self.max_prefixes.or(lower.max_prefixes),
            max_connections: self.max_connections.or(lower.max_connections),
            max_concurrent_streams: self.max_concurrent_streams.or(lower.max_concurrent_streams),
            handshake_timeout_secs: self.handshake_timeout_secs.or(lower.handshake_timeout_secs),
            idle_timeout_secs: self.idle_timeout_secs.or(lower.idle_timeout_secs),
            request_body_timeout_secs: self
                .request_body_timeout_secs
                .or(lower.request_body_timeout_secs),
            request_timeout_secs: self.request_timeout_secs.or(lower.request_timeout_secs),
            source_cooldown_secs: self.source_cooldown_secs.or(lower.source_cooldown_secs),
            keepalive_interval_secs: self
                .keepalive_interval_secs
                .or(lower.keepalive_interval_secs),
            keepalive_timeout_secs: self.keepalive_timeout_secs.or(lower.keepalive_timeout_secs),
            max_connection_age_secs: self
                .max_connection_age_secs
                .or(lower.max_connection_age_secs),
            max_connection_age_grace_secs: self
                .max_connection_age_grace_secs
                .or(lower.max_connection_age_grace_secs),
            allow_anonymous: self.allow_anonymous.or(lower.allow_anonymous),
            web: self.web.or(lower.web),
            pir: self.pir.or(lower.pir),
            cors_origins: self.cors_origins.or(lower.cors_origins),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            forwarded_header: self.forwarded_header.or(lower.forwarded_header),
            buckets_only: self.buckets_only.or(lower.buckets_only),
            no_verify: self.no_verify.or(lower.no_verify),
            allow_insecure_key_mode: self
                .allow_insecure_key_mode
                .or(lower.allow_insecure_key_mode),
            quota: QuotaStoreSettings {
                backend: self.quota.backend.or(lower.quota.backend),
                url: self.quota.url.or(lower.quota.url),
                key_prefix: self.quota.key_prefix.or(lower.quota.key_prefix),
                timeout_ms: self.quota.timeout_ms.or(lower.quota.timeout_ms),
            },
            anonymous: self.anonymous.or(lower.anonymous),
            anonymous_total: self.anonymous_total.or(lower.anonymous_total),
            default_quota: self.default_quota.or(lower.default_quota),
            api_keys: self.api_keys.or(lower.api_keys),
        }
    }

    /// These settings over the file at `file` (if any), resolved: the
    /// command line's whole configuration.
    ///
    /// # Errors
    ///
    /// The file's errors, or [`Settings::resolve`]'s.
    pub fn over_file(self, file: Option<&Path>) -> Result<Config> {
        let lower = match file {
            Some(path) => Settings::load(path)?,
            None => Settings::default(),
        };
        self.or(lower).resolve()
    }

    /// Fills every unset field with its default and validates the result.
    ///
    /// # Errors
    ///
    /// [`ServerError::Input`] naming the bad field.
    pub fn resolve(self) -> Result<Config> {
        // A table that leaves `pir_answers_per_day` out gets its own
        // table's default, not the API keys' (which a shared serde default
        // would give every table).
        let anonymous = self.anonymous.map_or(Quota::anonymous(), |q| {
            q.with_pir_default(Quota::anonymous().pir_answers_per_day)
        });
        let anonymous_total = self.anonymous_total.map_or(anonymous.scaled(100), |q| {
            q.with_pir_default(anonymous.pir_answers_per_day.saturating_mul(100))
        });
        let default_quota = self.default_quota.map_or(Quota::default(), |q| {
            q.with_pir_default(Quota::default().pir_answers_per_day)
        });
        let api_keys = self.api_keys.map(|keys| {
            keys.into_iter()
                .map(|mut k| {
                    k.quota = k
                        .quota
                        .map(|q| q.with_pir_default(default_quota.pir_answers_per_day));
                    k
                })
                .collect()
        });
        let api_keys = api_keys.unwrap_or_default();
        let d = Config::default();
        let c = Config {
            listen: self.listen.unwrap_or(d.listen),
            index: self.index,
            key: self.key,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            client_ca: self.client_ca,
            metrics_listen: self.metrics_listen,
            max_batch: self.max_batch.unwrap_or(d.max_batch),
            min_prefix_bits: self.min_prefix_bits.unwrap_or(d.min_prefix_bits),
            max_prefixes: self.max_prefixes.unwrap_or(d.max_prefixes),
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            max_concurrent_streams: self
                .max_concurrent_streams
                .unwrap_or(d.max_concurrent_streams),
            handshake_timeout: secs(
                "handshake_timeout_secs",
                self.handshake_timeout_secs,
                d.handshake_timeout,
            )?,
            idle_timeout: secs("idle_timeout_secs", self.idle_timeout_secs, d.idle_timeout)?,
            request_body_timeout: secs(
                "request_body_timeout_secs",
                self.request_body_timeout_secs,
                d.request_body_timeout,
            )?,
            request_timeout: secs(
                "request_timeout_secs",
                self.request_timeout_secs,
                d.request_timeout,
            )?,
            source_cooldown: match self.source_cooldown_secs {
                Some(0.0) => Duration::ZERO,
                v => secs("source_cooldown_secs", v, d.source_cooldown)?,
            },
            keepalive_interval: secs(
                "keepalive_interval_secs",
                self.keepalive_interval_secs,
                d.keepalive_interval,
            )?,
            keepalive_timeout: secs(
                "keepalive_timeout_secs",
                self.keepalive_timeout_secs,
                d.keepalive_timeout,
            )?,
            max_connection_age: secs(
                "max_connection_age_secs",
                self.max_connection_age_secs,
                d.max_connection_age,
            )?,
            max_connection_age_grace: secs(
                "max_connection_age_grace_secs",
                self.max_connection_age_grace_secs,
                d.max_connection_age_grace,
            )?,
            allow_anonymous: self.allow_anonymous.unwrap_or(d.allow_anonymous),
            web: self.web.unwrap_or(d.web),
            pir: self.pir.unwrap_or(d.pir),
            cors_origins: self.cors_origins.unwrap_or(d.cors_origins),
            trusted_proxies: match self.trusted_proxies {
                Some(v) => v
                    .iter()
                    .map(|p| Cidr::parse(p))
                    .collect::<Result<Vec<_>>>()?,
                None => d.trusted_proxies,
            },
            forwarded_header: self.forwarded_header.unwrap_or(d.forwarded_header),
            buckets_only: self.buckets_only.unwrap_or(d.buckets_only),
            no_verify: self.no_verify.unwrap_or(d.no_verify),
            allow_insecure_key_mode: self
                .allow_insecure_key_mode
                .unwrap_or(d.allow_insecure_key_mode),
            quota_store: self.quota.resolve()?,
            anonymous,
            anonymous_total,
            default_quota,
            api_keys,
        };
        c.validate()?;
        Ok(c)
    }
}

/// A duration setting in seconds: positive, finite, at most a day.
fn secs(name: &str, value: Option<f64>, default: Duration) -> Result<Duration> {
    let Some(v) = value else {
        return Ok(default);
    };
    if !(v > 0.0 && v <= 86_400.0) {
        return Err(ServerError::Input(format!(
            "{name} must be above 0 and at most 86400 seconds (got {v})"
        )));
    }
    Duration::try_from_secs_f64(v).map_err(|e| ServerError::Input(format!("{name}: {e}")))
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The index file.
    pub index: Option<PathBuf>,
    /// The OPRF key file.
    pub key: Option<PathBuf>,
    /// TLS certificate chain (PEM); with `tls_key`, turns TLS on.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: turns on mTLS.
    pub client_ca: Option<PathBuf>,
    /// Address for the Prometheus `/metrics` endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Most blinded elements per Evaluate (`max_batch` in IndexInfo).
    pub max_batch: u32,
    /// Floor on the prefix bits j a client may ask buckets by (0 allows a
    /// full download).
    pub min_prefix_bits: u32,
    /// Most prefixes in one GetBuckets.
    pub max_prefixes: u32,
    /// Most connections open at once; more are closed as soon as they are
    /// accepted. `serve` also keeps it below the descriptor limit.
    pub max_connections: u32,
    /// Most concurrent HTTP/2 streams per connection (SETTINGS
    /// MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// From accept to the first request's headers (preface, TLS, SETTINGS,
    /// HEADERS): a connection that sends nothing usable is closed.
    pub handshake_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// From a request's headers to the end of its body.
    pub request_body_timeout: Duration,
    /// From a request's headers to its answer (tonic's `timeout`, answered
    /// `CANCELLED`).
    pub request_timeout: Duration,
    /// Between HTTP/2 keepalive pings.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is
    /// closed.
    pub keepalive_timeout: Duration,
    /// How long a source's new connections are closed at accept after one
    /// of its connections spent its refusal budget without a valid API key
    /// (zero: never). Trusted proxies are never cooled.
    pub source_cooldown: Duration,
    /// Age after which a connection is sent GOAWAY.
    pub max_connection_age: Duration,
    /// How long an aged connection may finish its calls before it is closed.
    pub max_connection_age_grace: Duration,
    /// Accept calls without an API key, under the `anonymous` quota (one
    /// per client address).
    pub allow_anonymous: bool,
    /// Serve the web page and grpc-web on the gRPC port.
    pub web: bool,
    /// Answer PIR queries (GetPirSetup, PirQuery).
    pub pir: bool,
    /// Origins allowed to call grpc-web from their pages (CORS); empty: none.
    pub cors_origins: Vec<String>,
    /// Proxies whose forwarding header names the client address.
    pub trusted_proxies: Vec<Cidr>,
    /// Which header that is.
    pub forwarded_header: ForwardedHeader,
    /// Serve GetIndexInfo and GetBuckets only, without the key file (a
    /// bucket replica that holds nothing usable without the key).
    pub buckets_only: bool,
    /// Skip hashing the whole index body at start and reload.
    pub no_verify: bool,
    /// Load a key file that its group or other users may read (with a
    /// warning) instead of refusing it.
    pub allow_insecure_key_mode: bool,
    /// Where quota state lives.
    pub quota_store: QuotaStoreConfig,
    /// Quota for callers without a key (when allowed), per client address.
    pub anonymous: Quota,
    /// Quota of all anonymous callers together.
    pub anonymous_total: Quota,
    /// Quota for keys that do not set their own.
    pub default_quota: Quota,
    /// The API keys.
    pub api_keys: Vec<ApiKeyEntry>,
}

/// The header trusted proxies name the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx, HAProxy, cloud load
    /// balancers).
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// Which quota store a server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaBackend {
    /// This process's memory: one replica, reset by a restart.
    Memory,
    /// A Redis shared by every replica, kept across restarts.
    Redis,
}

/// The quota store settings of one layer: `--quota-*` flags,
/// `BREACHCHECK_QUOTA_*` variables, or the file's `[quota]` table.
#[derive(Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaStoreSettings {
    /// Where quota state lives: `memory` (this process; the default) or
    /// `redis` (shared by replicas, kept across restarts; needs --quota-url).
    #[arg(long = "quota-backend", env = "BREACHCHECK_QUOTA_BACKEND")]
    pub backend: Option<QuotaBackend>,
    /// The Redis of the shared quota store, `redis://[:password@]host:port/db`
    /// (put a password in the environment variable, not on the command line).
    #[arg(
        long = "quota-url",
        env = "BREACHCHECK_QUOTA_URL",
        hide_env_values = true
    )]
    pub url: Option<String>,
    /// Prefix of the quota keys in Redis (default `breachcheck:`).
    #[arg(long = "quota-key-prefix", env = "BREACHCHECK_QUOTA_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    /// Milliseconds a quota charge may take, connecting included, before the
    /// call is refused UNAVAILABLE (default 250).
    #[arg(long = "quota-timeout-ms", env = "BREACHCHECK_QUOTA_TIMEOUT_MS")]
    pub timeout_ms: Option<u64>,
}

// By hand: the URL may hold a password.
impl std::fmt::Debug for QuotaStoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaStoreSettings")
            .field("backend", &self.backend)
            .field("url", &self.url.as_deref().map(redact))
            .field("key_prefix", &self.key_prefix)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Default prefix of the quota keys in Redis.
pub const DEFAULT_QUOTA_KEY_PREFIX: &str = "breachcheck:";
/// Default bound on one quota charge against Redis.
pub const DEFAULT_QUOTA_TIMEOUT: Duration = Duration::from_millis(250);

impl QuotaStoreSettings {
    /// The store these settings name. A URL without a backend means Redis.
    fn resolve(self) -> Result<QuotaStoreConfig> {
        let backend = self.backend.unwrap_or(if self.url.is_some() {
            QuotaBackend::Redis
        } else {
            QuotaBackend::Memory
        });
        match (backend, self.url) {
            (QuotaBackend::Memory, None) => Ok(QuotaStoreConfig::Memory),
            (QuotaBackend::Memory, Some(_)) => Err(ServerError::Input(
                "quota url is set but the quota backend is memory: set backend = \"redis\" \
                 or drop the url"
                    .into(),
            )),
            (QuotaBackend::Redis, None) => Err(ServerError::Input(
                "quota backend redis needs a url (--quota-url, BREACHCHECK_QUOTA_URL or \
                 [quota] url)"
                    .into(),
            )),
            (QuotaBackend::Redis, Some(url)) => {
                let timeout_ms = self
                    .timeout_ms
                    .unwrap_or(DEFAULT_QUOTA_TIMEOUT.as_millis() as u64);
                if !(1..=60_000).contains(&timeout_ms) {
                    return Err(ServerError::Input(format!(
                        "quota timeout_ms must be 1..=60000 (got {timeout_ms})"
                    )));
                }
                Ok(QuotaStoreConfig::Redis(RedisSettings {
                    url,
                    key_prefix: self
                        .key_prefix
                        .unwrap_or_else(|| DEFAULT_QUOTA_KEY_PREFIX.to_owned()),
                    timeout: Duration::from_millis(timeout_ms),
                }))
            }
        }
    }
}

/// The resolved quota store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum QuotaStoreConfig {
    /// In this process ([`MemoryQuotas`](crate::MemoryQuotas)).
    #[default]
    Memory,
    /// In Redis ([`RedisQuotas`](crate::RedisQuotas)).
    Redis(RedisSettings),
}

/// One API key: its name and the BLAKE3 hash of its token; never the token.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// A label for logs and metrics.
    pub name: String,
    /// Hex BLAKE3 of the bearer token.
    pub token_blake3: String,
    /// Overrides of the default quota.
    #[serde(default)]
    pub quota: Option<Quota>,
}

/// Per-key limits. Evaluations are counted in elements; every call is also
/// counted against a request rate, refused calls included.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Token-bucket refill rate, elements per second.
    pub elements_per_second: f64,
    /// Token-bucket capacity (the most elements at once).
    pub burst: u64,
    /// Elements per UTC day.
    pub elements_per_day: u64,
    /// Bucket download bytes per UTC day.
    pub bucket_bytes_per_day: u64,
    /// PIR answers per UTC day (default 10,000 for a key, 200 for each
    /// anonymous address): each costs about one pass over the database.
    #[serde(default = "default_pir_answers_per_day")]
    pub pir_answers_per_day: u64,
    /// Token-bucket refill rate of calls, per second (default 50).
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: f64,
    /// Token-bucket capacity of calls (default 100).
    #[serde(default = "default_request_burst")]
    pub request_burst: u64,
}

impl Quota {
    /// Every rate, burst and daily cap times `factor` (saturating).
    pub fn scaled(self, factor: u64) -> Quota {
        Quota {
            elements_per_second: self.elements_per_second * factor as f64,
            burst: self.burst.saturating_mul(factor),
            elements_per_day: self.elements_per_day.saturating_mul(factor),
            bucket_bytes_per_day: self.bucket_bytes_per_day.saturating_mul(factor),
            pir_answers_per_day: self.pir_answers_per_day.saturating_mul(factor),
            requests_per_second: self.requests_per_second * factor as f64,
            request_burst: self.request_burst.saturating_mul(factor),
        }
    }
}

/// Calls per second of a quota that does not say.
const DEFAULT_REQUESTS_PER_SECOND: f64 = 50.0;
/// Call burst of a quota that does not say.
const DEFAULT_REQUEST_BURST: u64 = 100;

fn default_requests_per_second() -> f64 {
    DEFAULT_REQUESTS_PER_SECOND
}

fn default_request_burst() -> u64 {
    DEFAULT_REQUEST_BURST
}

/// What `pir_answers_per_day` reads as when a table leaves it out, until
/// [`Settings::resolve`] gives it that table's default.
const PIR_UNSET: u64 = u64::MAX;

fn default_pir_answers_per_day() -> u64 {
    PIR_UNSET
}

impl Quota {
    /// This quota, with `default` PIR answers a day if its table gave none.
    fn with_pir_default(mut self, default: u64) -> Quota {
        if self.pir_answers_per_day == PIR_UNSET {
            self.pir_answers_per_day = default;
        }
        self
    }
}

impl Default for Quota {
    /// A checking service for one organisation: 100k numbers a day.
    fn default() -> Self {
        Quota {
            elements_per_second: 1000.0,
            burst: 20_000,
            elements_per_day: 100_000,
            bucket_bytes_per_day: 10 << 30,
            pir_answers_per_day: 10_000,
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            request_burst: DEFAULT_REQUEST_BURST,
        }
    }
}

impl Quota {
    /// The small shared quota of anonymous callers (demo use).
    pub fn anonymous() -> Self {
        Quota {
            elements_per_second: 50.0,
            burst: 10_000,
            elements_per_day: 20_000,
            bucket_bytes_per_day: 4 << 30,
            pir_answers_per_day: 200,
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            request_burst: DEFAULT_REQUEST_BURST,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            index: None,
            key: None,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            metrics_listen: None,
            max_batch: DEFAULT_MAX_BATCH,
            min_prefix_bits: 0,
            max_prefixes: DEFAULT_MAX_PREFIXES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            request_body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            source_cooldown: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(600),
            max_connection_age_grace: Duration::from_secs(30),
            allow_anonymous: false,
            web: false,
            pir: false,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            buckets_only: false,
            no_verify: false,
            allow_insecure_key_mode: false,
            quota_store: QuotaStoreConfig::Memory,
            anonymous: Quota::anonymous(),
            anonymous_total: Quota::anonymous().scaled(100),
            default_quota: Quota::default(),
            api_keys: Vec::new(),
        }
    }
}

impl Config {
    /// Parses and resolves a TOML config (the file as the only layer).
    ///
    /// # Errors
    ///
    /// [`ServerError::Input`] with the TOML or validation error.
    pub fn from_toml(text: &str) -> Result<Self> {
        Settings::from_toml(text)?.resolve()
    }

    /// Reads, parses and resolves a TOML config file.
    ///
    /// # Errors
    ///
    /// I/O, parse or validation errors.
    pub fn load(path: &Path) -> Result<Self> {
        Settings::load(path)?
            .resolve()
            .map_err(|e| ServerError::Input(format!("{}: {e}", path.display())))
    }

    /// Checks ranges and the API key hashes.
    ///
    /// # Errors
    ///
    /// [`ServerError::Input`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.max_batch == 0 || self.max_batch > breachcheck_proto::MAX_PROOF_BATCH as u32 {
            return Err(ServerError::Input("max_batch must be 1..=65535".into()));
        }
        if self.max_prefixes == 0 {
            return Err(ServerError::Input("max_prefixes must be at least 1".into()));
        }
        for o in &self.cors_origins {
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains('/'))
                || http::HeaderValue::from_str(o).is_err()
            {
                return Err(ServerError::Input(format!(
                    "cors origin {o:?} must be a scheme and host, like https://check.example.org \
                     (no path, no wildcard)"
                )));
            }
        }
        if self.max_connections == 0 || self.max_concurrent_streams == 0 {
            return Err(ServerError::Input(
                "max_connections and max_concurrent_streams must be at least 1".into(),
            ));
        }
        // A key whose burst is below max_batch could never send a full
        // batch: the client would take IndexInfo.max_batch at its word and
        // be refused forever (#11).
        let mut quotas = Vec::new();
        if self.api_keys.iter().any(|k| k.quota.is_none()) {
            quotas.push(("default_quota".to_owned(), self.default_quota));
        }
        if self.allow_anonymous {
            quotas.push(("anonymous".to_owned(), self.anonymous));
            quotas.push(("anonymous_total".to_owned(), self.anonymous_total));
        }
        for k in &self.api_keys {
            if let Some(q) = k.quota {
                quotas.push((format!("api key {:?}", k.name), q));
            }
        }
        for (who, q) in quotas {
            if u64::from(self.max_batch) > q.burst {
                return Err(ServerError::Input(format!(
                    "max_batch {} is above the burst {} of the {who} quota: a full batch \
                     could never be evaluated; lower max_batch or raise that burst",
                    self.max_batch, q.burst
                )));
            }
            if !(q.elements_per_second >= 0.0 && q.elements_per_second.is_finite()) {
                return Err(ServerError::Input(format!(
                    "the {who} quota needs a finite elements_per_second of at least 0 (got {})",
                    q.elements_per_second
                )));
            }
            if !(q.requests_per_second > 0.0 && q.requests_per_second.is_finite())
                || q.request_burst == 0
            {
                return Err(ServerError::Input(format!(
                    "the {who} quota needs requests_per_second above 0 and request_burst \
                     at least 1"
                )));
            }
        }
        for k in &self.api_keys {
            if hex::decode(&k.token_blake3).map(|b| b.len()) != Ok(32) {
                return Err(ServerError::Input(format!(
                    "api key {:?}: token_blake3 must be 64 hex digits",
                    k.name
                )));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ServerError::Input(
                "tls_cert and tls_key go together".into(),
            ));
        }
        Ok(())
    }
}

/// A fresh random API token and its config entry (for `apikey new`).
pub fn new_api_key(name: &str) -> (String, String) {
    use rand::RngExt;
    let bytes: [u8; 24] = rand::rng().random();
    let token = format!("bc_{}", hex::encode(bytes));
    let hash = hex::encode(blake3::hash(token.as_bytes()).as_bytes());
    let entry = format!("[[api_keys]]\nname = {name:?}\ntoken_blake3 = \"{hash}\"\n");
    (token, entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_settings_parse_and_bad_origins_or_proxies_are_refused() {
        let c = Config::from_toml(
            "web = true\ncors_origins = [\"https://a.example\"]\n\
             trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
        )
        .expect("web settings");
        assert!(c.web);
        assert_eq!(c.cors_origins, ["https://a.example"]);
        assert_eq!(c.trusted_proxies.len(), 2);
        for bad in [
            "*",
            "null",
            "https://a.example/path",
            "a.example",
            "https://",
        ] {
            let e = Config::from_toml(&format!("cors_origins = [{bad:?}]"))
                .expect_err(bad)
                .to_string();
            assert!(e.contains("cors origin"), "{e}");
        }
        assert!(Config::from_toml("trusted_proxies = [\"10.0.0.0/40\"]").is_err());
        assert!(Config::from_toml("trusted_proxies = [\"proxy.local\"]").is_err());
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../server.example.toml");
        let c = Config::from_toml(text).expect("example config");
        assert_eq!(c.max_batch, 4096);
        assert_eq!(c.anonymous_total, c.anonymous.scaled(100));
        assert_eq!(c.forwarded_header, ForwardedHeader::XForwardedFor);
        // The example spells out the defaults.
        let d = Config::default();
        assert_eq!(
            (c.max_connections, c.max_concurrent_streams),
            (d.max_connections, d.max_concurrent_streams)
        );
        assert_eq!(
            (c.handshake_timeout, c.idle_timeout, c.request_body_timeout),
            (d.handshake_timeout, d.idle_timeout, d.request_body_timeout)
        );
        assert_eq!(c.request_timeout, d.request_timeout);
        assert_eq!(
            (c.keepalive_interval, c.keepalive_timeout),
            (d.keepalive_interval, d.keepalive_timeout)
        );
        assert_eq!(
            (c.max_connection_age, c.max_connection_age_grace),
            (d.max_connection_age, d.max_connection_age_grace)
        );
        assert_eq!(c.default_quota, Quota::default());
        assert!(!c.api_keys.is_empty());
        assert!(!c.allow_anonymous);
    }

    #[test]
    fn unknown_fields_and_bad_hashes_are_rejected() {
        assert!(Config::from_toml("nonsense = 1").is_err());
        let bad = "[[api_keys]]\nname = \"x\"\ntoken_blake3 = \"abc\"\n";
        assert!(Config::from_toml(bad).is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn flags(args: &[&str]) -> Settings {
        use clap::Parser;
        let mut argv = vec!["serve"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("flags").settings
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file = Settings::from_toml(
            "max_batch = 100\nmin_prefix_bits = 3\nallow_anonymous = true\n\
             [anonymous]\nelements_per_second = 1.0\nburst = 200\n\
             elements_per_day = 3\nbucket_bytes_per_day = 4\n",
        )
        .expect("file");
        let c = flags(&["--max-batch", "7", "--allow-anonymous=false"])
            .or(file.clone())
            .resolve()
            .expect("resolve");
        assert_eq!(c.max_batch, 7);
        assert_eq!(c.min_prefix_bits, 3);
        assert!(!c.allow_anonymous);
        assert_eq!(c.anonymous.burst, 200);
        assert_eq!(c.anonymous.requests_per_second, 50.0);
        assert_eq!(c.max_prefixes, DEFAULT_MAX_PREFIXES);
        let c = flags(&["--allow-anonymous", "--buckets-only", "--no-verify"])
            .or(Settings::default())
            .resolve()
            .expect("resolve");
        assert!(c.allow_anonymous && c.buckets_only && c.no_verify);
        assert_eq!(
            flags(&[]).or(file).resolve().expect("resolve").max_batch,
            100
        );
    }

    #[test]
    fn resolve_validates_the_merged_layers() {
        let e = flags(&["--max-batch", "0"]).resolve().unwrap_err();
        assert!(e.to_string().contains("max_batch"), "{e}");
        let e = flags(&["--tls-cert", "c.pem"]).resolve().unwrap_err();
        assert!(e.to_string().contains("tls_key"), "{e}");
    }

    /// The source cool-down: 10 s by default, 0 turns it off, and otherwise
    /// the same bounds as every other duration.
    #[test]
    fn the_source_cooldown_defaults_to_10_s_and_0_turns_it_off() {
        assert_eq!(Config::default().source_cooldown, Duration::from_secs(10));
        let off = Settings::from_toml("source_cooldown_secs = 0\n")
            .expect("file")
            .resolve()
            .expect("resolve");
        assert_eq!(off.source_cooldown, Duration::ZERO);
        let c = flags(&["--source-cooldown-secs", "2.5"])
            .resolve()
            .expect("resolve");
        assert_eq!(c.source_cooldown, Duration::from_millis(2500));
        for bad in ["-1", "nan", "100000"] {
            let flag = format!("--source-cooldown-secs={bad}");
            let e = flags(&[flag.as_str()]).resolve().unwrap_err();
            assert!(e.to_string().contains("source_cooldown_secs"), "{bad}: {e}");
        }
    }

    #[test]
    fn connection_limits_have_defaults_flags_env_and_file_layers() {
        let d = Config::default();
        assert_eq!(d.max_concurrent_streams, 128);
        assert_eq!(d.handshake_timeout, Duration::from_secs(10));
        let file = Settings::from_toml(
            "max_connections = 10\nidle_timeout_secs = 2.5\nrequest_timeout_secs = 30\n",
        )
        .expect("file");
        let c = flags(&["--max-connections", "20", "--handshake-timeout-secs", "0.5"])
            .or(file)
            .resolve()
            .expect("resolve");
        assert_eq!(c.max_connections, 20);
        assert_eq!(c.handshake_timeout, Duration::from_millis(500));
        assert_eq!(c.idle_timeout, Duration::from_millis(2500));
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.keepalive_interval, d.keepalive_interval);
        for bad in ["0", "-1", "nan", "100000"] {
            let bad = format!("--idle-timeout-secs={bad}");
            let e = flags(&[bad.as_str()]).resolve().unwrap_err();
            assert!(e.to_string().contains("idle_timeout_secs"), "{e}");
        }
        let e = flags(&["--max-concurrent-streams", "0"])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("max_concurrent_streams"), "{e}");
    }

    /// See: #11 (row 7). A burst below max_batch refuses every full batch.
    #[test]
    fn an_element_rate_that_is_not_a_finite_number_is_refused() {
        for rate in ["inf", "nan", "-1.0"] {
            let text = format!(
                "allow_anonymous = true\n[anonymous]\nelements_per_second = {rate}\n\
                 burst = 5000\nelements_per_day = 10\nbucket_bytes_per_day = 10\n"
            );
            let e = Config::from_toml(&text).expect_err(rate);
            assert!(e.to_string().contains("elements_per_second"), "{rate}: {e}");
        }
    }

    #[test]
    fn a_quota_url_selects_redis_and_its_password_never_prints() {
        let c =
            Config::from_toml("[quota]\nurl = \"redis://:hunter2@r:6379/0\"\n").expect("config");
        assert!(matches!(c.quota_store, QuotaStoreConfig::Redis(_)));
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = Config::from_toml("[quota]\nbackend = \"redis\"\n").expect_err("no url");
        assert!(e.to_string().contains("needs a url"), "{e}");
        let e = Config::from_toml("[quota]\nbackend = \"memory\"\nurl = \"redis://h\"\n")
            .expect_err("both");
        assert!(e.to_string().contains("backend is memory"), "{e}");
        let e = Config::from_toml("[quota]\nurll = \"redis://:hunter2@h\"\n").expect_err("typo");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn max_batch_above_a_quota_burst_is_refused_naming_both() {
        let key = |quota: &str| {
            format!(
                "max_batch = 5000\n[[api_keys]]\nname = \"small\"\n\
                 token_blake3 = \"{}\"\n{quota}",
                "ab".repeat(32)
            )
        };
        // The default quota (burst 20,000) covers a key without its own.
        assert!(Config::from_toml(&key("")).is_ok());
        let e = Config::from_toml(&key(
            "[api_keys.quota]\nelements_per_second = 1.0\nburst = 4096\n\
             elements_per_day = 10\nbucket_bytes_per_day = 10\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("max_batch 5000") && e.contains("burst 4096") && e.contains("\"small\""),
            "{e}"
        );
        let e = Config::from_toml(
            "max_batch = 4096\nallow_anonymous = true\n[anonymous]\nelements_per_second = 1.0\n\
             burst = 100\nelements_per_day = 10\nbucket_bytes_per_day = 10\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("anonymous") && e.contains("burst 100"), "{e}");
        let e = Config::from_toml(
            "[[api_keys]]\nname = \"k\"\ntoken_blake3 = \"00\"\n[default_quota]\n\
             elements_per_second = 1.0\nburst = 10\nelements_per_day = 10\n\
             bucket_bytes_per_day = 10\n",
        );
        assert!(e.is_err());
        let e = Config::from_toml(
            "[default_quota]\nelements_per_second = 1.0\nburst = 10\nelements_per_day = 10\n\
             bucket_bytes_per_day = 10\n",
        );
        // No key uses the default quota: nothing to refuse.
        assert!(e.is_ok(), "{e:?}");
    }

    #[test]
    fn new_api_key_entry_parses_and_matches_its_token() {
        let (token, entry) = new_api_key("ops");
        let c = Config::from_toml(&entry).expect("entry");
        assert_eq!(
            c.api_keys[0].token_blake3,
            hex::encode(blake3::hash(token.as_bytes()).as_bytes())
        );
    }

    #[test]
    fn each_table_left_without_a_pir_cap_gets_its_own_default() {
        let q = "elements_per_second = 1e6\nburst = 100000\nelements_per_day = 10\n\
                 bucket_bytes_per_day = 10\n";
        let c = Config::from_toml(&format!(
            "allow_anonymous = true\n[anonymous]\n{q}[default_quota]\n{q}\
             [[api_keys]]\nname = \"k\"\ntoken_blake3 = \"abababababababababababababababababababababababababababababababab\"\n[api_keys.quota]\n{q}"
        ))
        .expect("config");
        assert_eq!(c.anonymous.pir_answers_per_day, 200);
        assert_eq!(c.anonymous_total.pir_answers_per_day, 20_000);
        assert_eq!(c.default_quota.pir_answers_per_day, 10_000);
        let key = c.api_keys[0].quota.expect("its quota");
        assert_eq!(key.pir_answers_per_day, 10_000);
        let c = Config::from_toml(&format!("[anonymous_total]\n{q}pir_answers_per_day = 7\n"))
            .expect("config");
        assert_eq!(c.anonymous_total.pir_answers_per_day, 7);
    }
}
