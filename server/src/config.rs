//! Server configuration: a TOML file, every field of which a flag can override.
//! `server/server.example.toml` documents each one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Result, ServerError, io_err};

/// Default most elements per Evaluate.
pub const DEFAULT_MAX_BATCH: u32 = 4096;
/// Default most prefixes per GetBuckets.
pub const DEFAULT_MAX_PREFIXES: u32 = 4096;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
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
    #[serde(default = "default_max_batch")]
    pub max_batch: u32,
    /// Floor on the prefix bits j a client may ask buckets by (0 allows a
    /// full download).
    #[serde(default)]
    pub min_prefix_bits: u32,
    /// Most prefixes in one GetBuckets.
    #[serde(default = "default_max_prefixes")]
    pub max_prefixes: u32,
    /// Accept calls without an API key, under the `anonymous` quota.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Serve GetIndexInfo and GetBuckets only, without the key file (a
    /// bucket replica that holds nothing usable without the key).
    #[serde(default)]
    pub buckets_only: bool,
    /// Quota for callers without a key (when allowed).
    #[serde(default = "Quota::anonymous")]
    pub anonymous: Quota,
    /// Quota for keys that do not set their own.
    #[serde(default)]
    pub default_quota: Quota,
    /// The API keys.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyEntry>,
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

/// Per-key limits. Evaluations are counted in elements, not requests.
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
}

impl Default for Quota {
    /// A checking service for one organisation: 100k numbers a day.
    fn default() -> Self {
        Quota {
            elements_per_second: 1000.0,
            burst: 20_000,
            elements_per_day: 100_000,
            bucket_bytes_per_day: 10 << 30,
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
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_max_batch() -> u32 {
    DEFAULT_MAX_BATCH
}

fn default_max_prefixes() -> u32 {
    DEFAULT_MAX_PREFIXES
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            index: None,
            key: None,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            metrics_listen: None,
            max_batch: DEFAULT_MAX_BATCH,
            min_prefix_bits: 0,
            max_prefixes: DEFAULT_MAX_PREFIXES,
            allow_anonymous: false,
            buckets_only: false,
            anonymous: Quota::anonymous(),
            default_quota: Quota::default(),
            api_keys: Vec::new(),
        }
    }
}

impl Config {
    /// Parses a TOML config.
    ///
    /// # Errors
    ///
    /// [`ServerError::Input`] with the TOML error.
    pub fn from_toml(text: &str) -> Result<Self> {
        let c: Config =
            toml::from_str(text).map_err(|e| ServerError::Input(format!("config: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads and parses a TOML config file.
    ///
    /// # Errors
    ///
    /// I/O or parse errors.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        Self::from_toml(&text).map_err(|e| ServerError::Input(format!("{}: {e}", path.display())))
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

/// A fresh random API token and its config entry.
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
    fn example_config_parses() {
        let text = include_str!("../server.example.toml");
        let c = Config::from_toml(text).expect("example config");
        assert_eq!(c.max_batch, 4096);
        assert!(!c.api_keys.is_empty());
        assert!(!c.allow_anonymous);
    }

    #[test]
    fn unknown_fields_and_bad_hashes_are_rejected() {
        assert!(Config::from_toml("nonsense = 1").is_err());
        let bad = "[[api_keys]]\nname = \"x\"\ntoken_blake3 = \"abc\"\n";
        assert!(Config::from_toml(bad).is_err());
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
}
