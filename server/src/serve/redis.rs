//! [`RedisQuotas`]: the quota state of every replica in one Redis, so that
//! three replicas give a key one quota, not three, and a restart (which an
//! attacker may force) resets nothing.
//!
//! Each charge is one atomic Lua script (`quota.lua`, run by EVALSHA) on one
//! hash per API key, `<prefix>{<name>}`: GCRA rates for requests and
//! elements, the per-UTC-day caps, all on the Redis server's clock (`TIME`),
//! so replicas with skewed clocks agree. The hash tag keeps a key's state in
//! one slot, so the same script runs on Redis Cluster.
//!
//! When Redis cannot be asked (down, unreachable, slower than the timeout)
//! the store fails closed: the call is refused `UNAVAILABLE` with a
//! `retry-after`, counted in `breachcheck_quota_store_errors_total` and
//! logged (at most once a second per replica). Letting calls through
//! uncounted would hand an attacker the way around the quota that killing
//! Redis is. `docs/PROTOCOL.md` §7.2 has the details.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use crate::error::{Result, ServerError};
use crate::serve::quota::{
    Call, Caller, Charge, Exhausted, PIR_CAP, QuotaError, QuotaKey, QuotaStore, REQUEST_RATE,
};

/// The charge script (see its header for arguments and replies).
const SCRIPT: &str = include_str!("quota.lua");

/// The longest GCRA interval passed to the script, in microseconds: a rate
/// of 0 (a burst that never refills) becomes one element per ~11 days.
const MAX_INTERVAL_US: f64 = 1e12;

/// How to reach the shared store.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db` (or `rediss://` for TLS is not
    /// built in; use a local TLS proxy).
    pub url: String,
    /// Prefix of every key this server writes.
    pub key_prefix: String,
    /// The longest a charge may take, connection included, before the call
    /// is refused `UNAVAILABLE`.
    pub timeout: Duration,
}

// By hand: the URL may hold a password.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `text` with the credentials of every URL in it masked, for logs and
/// errors: the `user:password@` part, and a query (where `redis+unix://`
/// URLs carry `?pass=`).
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        let url = match url.rfind('@') {
            Some(at) => format!("<redacted>@{}", &url[at + 1..]),
            None => url.to_owned(),
        };
        match url.find('?') {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?<redacted>");
            }
            None => out.push_str(&url),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Quota state in Redis, shared by every replica that points at it.
pub struct RedisQuotas {
    conn: ConnectionManager,
    script: redis::Script,
    settings: RedisSettings,
    last_warning: Mutex<Option<Instant>>,
}

impl fmt::Debug for RedisQuotas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQuotas")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RedisQuotas {
    /// A store for `settings`. Connects lazily, on the first charge, and
    /// reconnects by itself, so a server starts (and answers health checks)
    /// while Redis is still coming up; its calls are refused until then.
    ///
    /// # Errors
    ///
    /// [`ServerError::Input`] for a URL the `redis` crate cannot parse.
    pub fn new(settings: RedisSettings) -> Result<Self> {
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| {
            ServerError::Input(format!(
                "quota url {}: not a redis:// URL ({:?})",
                redact(&settings.url),
                e.kind()
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| ServerError::Input(format!("quota store: {e}")))?;
        Ok(RedisQuotas {
            conn,
            script: redis::Script::new(SCRIPT),
            settings,
            last_warning: Mutex::new(None),
        })
    }

    /// The hash of `caller`'s state.
    fn key(&self, caller: &Caller) -> String {
        format!("{}{{{}}}", self.settings.key_prefix, caller.quota_id())
    }

    /// Runs the script with `args` for `caller`, within the timeout.
    async fn run(&self, caller: &Caller, args: Vec<String>) -> Result<(), QuotaError> {
        let mut invocation = self.script.key(self.key(caller));
        for a in &args {
            invocation.arg(a);
        }
        let mut conn = self.conn.clone();
        let reply = tokio::time::timeout(
            self.settings.timeout,
            invocation.invoke_async::<(i64, i64)>(&mut conn),
        )
        .await;
        let (code, retry_ms) = match reply {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.unavailable(&e.to_string())),
            Err(_) => return Err(self.unavailable("no answer within the quota timeout")),
        };
        let Ok(retry_ms) = u64::try_from(retry_ms) else {
            return Err(self.unavailable("a negative retry time from the script"));
        };
        let retry_after = Duration::from_millis(retry_ms.max(1));
        let limit = match code {
            0 => return Ok(()),
            1 => REQUEST_RATE,
            2 => "daily evaluation cap",
            3 | 5 => "evaluation rate (burst)",
            4 => "daily bucket download cap",
            6 => PIR_CAP,
            other => return Err(self.unavailable(&format!("unknown script reply {other}"))),
        };
        Err(QuotaError::Exhausted(Exhausted { limit, retry_after }))
    }

    /// A fail-closed refusal, logged at most once a second.
    fn unavailable(&self, why: &str) -> QuotaError {
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            tracing::warn!(
                store = %redact(&self.settings.url),
                error = why,
                "quota store unavailable: refusing calls (fail closed)"
            );
        }
        QuotaError::Unavailable(why.to_owned())
    }
}

/// The GCRA interval of `rate` per second, in microseconds (Rust's `f64`
/// display never uses an exponent, which Lua's `tonumber` would also read).
fn interval_us(rate: f64) -> String {
    let i = if rate > 0.0 && rate.is_finite() {
        (1e6 / rate).min(MAX_INTERVAL_US)
    } else {
        MAX_INTERVAL_US
    };
    i.to_string()
}

impl QuotaStore for RedisQuotas {
    fn charge_request<'a>(&'a self, caller: &'a Caller, call: Call) -> Charge<'a> {
        let q: QuotaKey = caller.quota;
        let args = vec![
            "request".to_owned(),
            interval_us(q.requests_per_second()),
            q.request_burst().to_string(),
            u8::from(call == Call::Evaluate).to_string(),
            interval_us(q.per_second()),
            q.burst().to_string(),
            q.per_day().to_string(),
        ];
        Box::pin(self.run(caller, args))
    }

    fn charge_elements<'a>(&'a self, caller: &'a Caller, n: u64) -> Charge<'a> {
        let q = caller.quota;
        let args = vec![
            "elements".to_owned(),
            n.to_string(),
            interval_us(q.per_second()),
            q.burst().to_string(),
            q.per_day().to_string(),
        ];
        Box::pin(self.run(caller, args))
    }

    fn charge_bytes<'a>(&'a self, caller: &'a Caller, bytes: u64) -> Charge<'a> {
        let args = vec![
            "bytes".to_owned(),
            bytes.to_string(),
            caller.quota.bytes_per_day().to_string(),
        ];
        Box::pin(self.run(caller, args))
    }

    fn charge_pir<'a>(&'a self, caller: &'a Caller, n: u64) -> Charge<'a> {
        let args = vec![
            "pir".to_owned(),
            n.to_string(),
            caller.quota.pir_per_day().to_string(),
        ];
        Box::pin(self.run(caller, args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_a_log() {
        assert_eq!(
            redact("redis://user:hunter2@redis:6379/0"),
            "redis://<redacted>@redis:6379/0"
        );
        assert_eq!(redact("redis://redis:6379"), "redis://redis:6379");
        assert_eq!(
            redact("redis+unix:///run/r.sock?db=0&pass=hunter2"),
            "redis+unix:///run/r.sock?<redacted>"
        );
        // A TOML error quotes the offending line.
        let e = "line 3: urll = \"redis://:hunter2@h:6379\" unknown field";
        assert!(!redact(e).contains("hunter2"), "{}", redact(e));
        assert!(redact(e).contains("unknown field"));
        let s = RedisSettings {
            url: "redis://:hunter2@h/0".into(),
            key_prefix: "p:".into(),
            timeout: Duration::from_millis(5),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn intervals_are_plain_decimals() {
        assert_eq!(interval_us(1000.0), "1000");
        assert_eq!(interval_us(4.0), "250000");
        assert_eq!(interval_us(0.0), "1000000000000");
        assert!(!interval_us(3e7).contains('e'));
    }
}
