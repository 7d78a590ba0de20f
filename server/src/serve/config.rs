//! Server configuration in one layer: [`Settings`] is both the `serve` flags
//! (each also read from a `BREACHCHECK_…` environment variable) and the TOML
//! file (`server/server.example.toml` documents each key). Precedence is
//! flags > environment > file > defaults; [`Settings::resolve`] fills the
//! defaults and validates once, giving the [`Config`] the server runs with.
//! The `api_keys`, `anonymous` and `default_quota` tables are file-only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::builder::BoolishValueParser;
use serde::Deserialize;

use crate::error::{Result, ServerError, io_err};

/// Default most elements per Evaluate.
pub const DEFAULT_MAX_BATCH: u32 = 4096;
/// Default most prefixes per GetBuckets.
pub const DEFAULT_MAX_PREFIXES: u32 = 4096;

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
    /// Quota for callers without a key (when allowed). File only.
    #[arg(skip)]
    pub anonymous: Option<Quota>,
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
        toml::from_str(text).map_err(|e| ServerError::Input(format!("config: {e}")))
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
            allow_anonymous: self.allow_anonymous.or(lower.allow_anonymous),
            buckets_only: self.buckets_only.or(lower.buckets_only),
            no_verify: self.no_verify.or(lower.no_verify),
            allow_insecure_key_mode: self
                .allow_insecure_key_mode
                .or(lower.allow_insecure_key_mode),
            anonymous: self.anonymous.or(lower.anonymous),
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
            allow_anonymous: self.allow_anonymous.unwrap_or(d.allow_anonymous),
            buckets_only: self.buckets_only.unwrap_or(d.buckets_only),
            no_verify: self.no_verify.unwrap_or(d.no_verify),
            allow_insecure_key_mode: self
                .allow_insecure_key_mode
                .unwrap_or(d.allow_insecure_key_mode),
            anonymous: self.anonymous.unwrap_or(d.anonymous),
            default_quota: self.default_quota.unwrap_or(d.default_quota),
            api_keys: self.api_keys.unwrap_or(d.api_keys),
        };
        c.validate()?;
        Ok(c)
    }
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
    /// Accept calls without an API key, under the `anonymous` quota.
    pub allow_anonymous: bool,
    /// Serve GetIndexInfo and GetBuckets only, without the key file (a
    /// bucket replica that holds nothing usable without the key).
    pub buckets_only: bool,
    /// Skip hashing the whole index body at start and reload.
    pub no_verify: bool,
    /// Load a key file that its group or other users may read (with a
    /// warning) instead of refusing it.
    pub allow_insecure_key_mode: bool,
    /// Quota for callers without a key (when allowed).
    pub anonymous: Quota,
    /// Quota for keys that do not set their own.
    pub default_quota: Quota,
    /// The API keys.
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
            allow_anonymous: false,
            buckets_only: false,
            no_verify: false,
            allow_insecure_key_mode: false,
            anonymous: Quota::anonymous(),
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
    fn example_config_parses() {
        let text = include_str!("../../server.example.toml");
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
             [anonymous]\nelements_per_second = 1.0\nburst = 2\n\
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
        assert_eq!(c.anonymous.burst, 2);
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
