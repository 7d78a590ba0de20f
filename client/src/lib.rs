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
//! One module per protocol step. Without the `grpc` feature (on by
//! default) only `checks`, `display` and `error` are built: the
//! transport-free core that the browser client (`web/`) shares.
//!
//! * `lib.rs`: [`CheckResult`], [`BreachRef`], the exports.
//! * `checks`: every check of what a server sends (IndexInfo, Evaluate
//!   responses, bucket payloads and answers), the key pin, the prefix plan.
//! * `check`: [`Client`]; [`Client::check`]
//!   and [`Client::check_stream`] put the steps together.
//! * `builder`: [`ClientBuilder`], every setting, and `connect`.
//! * `evaluate`: blind → Evaluate → check the response → verify the proof → finalize.
//! * `buckets`: the bucket cache: downloads, disk cache, memory budget.
//! * `rpc`: the channel, requests with credentials, deadlines and idle
//!   timeouts, message caps, retries by status code, status → error.
//! * `pace`: waits for the server's evaluation rate to refill ([`Progress`]).
//! * `trust`: trust on first use of a server's key (the trust file).
//! * `display`: text for people: control characters escaped, anonymity sets,
//!   the privacy statement.
//! * `task`: tasks whose panic is an error of the check, never a short answer.
//! * `error`: [`ClientError`], every failure with what to do about it.
//! * `fuzzing`: the client's checks of untrusted messages, for `fuzz/` only.

pub mod checks;
mod display;
mod error;

// The SDK over tonic and the CLI (the `grpc` feature, on by default).
#[cfg(feature = "grpc")]
mod buckets;
#[cfg(feature = "grpc")]
mod builder;
#[cfg(feature = "grpc")]
mod evaluate;
#[cfg(feature = "grpc")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "grpc")]
mod pace;
#[cfg(feature = "grpc")]
pub mod pir;
#[cfg(feature = "grpc")]
mod replicas;
#[cfg(feature = "grpc")]
mod rpc;
#[cfg(feature = "grpc")]
mod task;
#[cfg(feature = "grpc")]
mod trust;

#[cfg(feature = "grpc")]
mod check;

use breachcheck_proto::pb;
use serde::Serialize;

#[cfg(feature = "grpc")]
pub use builder::{ClientBuilder, DEFAULT_MAX_QUOTA_WAIT};
#[cfg(feature = "grpc")]
pub use check::Client;
pub use checks::DEFAULT_PREFIX_BITS;
pub use display::{
    NUMBERING_PLAN, anonymity_set, escape_controls, human_count, pir_privacy_statement,
    privacy_statement,
};
pub use error::{ClientError, Result};
#[cfg(feature = "grpc")]
pub use pace::Progress;
pub use pb::{Breach, IndexInfo};

/// Numbers handled per round of the streaming check.
pub const STREAM_CHUNK: usize = 16_384;

/// The answer for one input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// The input as given.
    pub input: String,
    /// Its canonical E.164 form, if it parsed.
    pub number: Option<String>,
    /// Whether it is in the corpus (`false` for an input that did not
    /// parse: see `error`).
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
