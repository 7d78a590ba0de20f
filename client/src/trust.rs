//! Trust on first use of a server's key, like ssh's `known_hosts` (#11).
//!
//! The trust file holds one line per server, `<endpoint> <public key in 64
//! hex digits>`, and `#` comments. The first time a client meets a server
//! it records the key it was shown; every later connection must be shown
//! the same key, or fails with [`ClientError::TrustedKeyChanged`] until a
//! person removes the line. A key rotation is therefore always a human
//! decision, even for a client run without `--pin-key`.
//!
//! The file holds public keys only. Lines are appended with one `write`
//! each, so two clients recording at once do not interleave.

use std::io::Write;
use std::path::{Path, PathBuf};

use breachcheck_proto::PublicKey;

use crate::error::{ClientError, Result};

const HEADER: &str = "# breachcheck: server keys trusted on first use (like ssh's known_hosts).\n\
# One line per server: <endpoint> <public key, 64 hex digits>.\n\
# A changed key is refused; after verifying a new key out of band, remove its server's line.\n";

/// A trust file.
#[derive(Debug, Clone)]
pub(crate) struct TrustFile {
    path: PathBuf,
}

/// What the trust file said about a server's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// The key is the one recorded.
    Known,
    /// No key was recorded for the server: this one now is.
    FirstUse,
}

impl TrustFile {
    /// The trust file at `path` (created at the first record).
    pub(crate) fn new(path: PathBuf) -> Self {
        TrustFile { path }
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Checks `served`, the key `server` presents, against the file, and
    /// records it if the server is new.
    ///
    /// # Errors
    ///
    /// [`ClientError::TrustedKeyChanged`] for another key than the recorded
    /// one; [`ClientError::TrustFile`] if the file cannot be read or written
    /// or has a malformed line.
    pub(crate) fn check(&self, server: &str, served: &[u8; 32]) -> Result<Trust> {
        let server = normalise(server);
        match self.lookup(server)? {
            Some(trusted) if &trusted == served => Ok(Trust::Known),
            Some(trusted) => Err(ClientError::TrustedKeyChanged {
                server: server.to_owned(),
                file: self.path.display().to_string(),
                trusted: fingerprint(&trusted),
                served: fingerprint(served),
            }),
            None => {
                self.record(server, served)?;
                Ok(Trust::FirstUse)
            }
        }
    }

    /// The key recorded for `server`, if any.
    fn lookup(&self, server: &str) -> Result<Option<[u8; 32]>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(format!("cannot read it: {e}"))),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut key = [0u8; 32];
            let parsed = line
                .split_once(char::is_whitespace)
                .map(|(s, k)| (s, hex::decode_to_slice(k.trim(), &mut key)));
            match parsed {
                Some((s, Ok(()))) if s == server => return Ok(Some(key)),
                Some((_, Ok(()))) => {}
                _ => {
                    return Err(self.error(format!(
                        "line {} is not `<endpoint> <64 hex digits>`",
                        n + 1
                    )));
                }
            }
        }
        Ok(None)
    }

    /// Appends `server`'s `key`, creating the file (with its header) if need be.
    fn record(&self, server: &str, key: &[u8; 32]) -> Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| self.error(format!("cannot create its directory: {e}")))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.error(format!("cannot open it: {e}")))?;
        let fresh = f.metadata().map(|m| m.len() == 0).unwrap_or(false);
        let mut line = if fresh {
            HEADER.to_owned()
        } else {
            String::new()
        };
        line.push_str(&format!("{server} {}\n", hex::encode(key)));
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| self.error(format!("cannot write it: {e}")))
    }

    fn error(&self, reason: String) -> ClientError {
        ClientError::TrustFile {
            file: self.path.display().to_string(),
            reason,
        }
    }
}

/// The server as the file names it: the endpoint without a trailing `/`.
fn normalise(server: &str) -> &str {
    server.trim().trim_end_matches('/')
}

/// A key's fingerprint for messages.
fn fingerprint(key: &[u8; 32]) -> String {
    PublicKey::from_bytes(key)
        .map(|k| k.fingerprint())
        .unwrap_or_else(|_| hex::encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("breachcheck-trust-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn the_first_key_is_recorded_and_a_change_refused() {
        let path = temp("change");
        let t = TrustFile::new(path.clone());
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(t.check("http://s:1/", &a).ok(), Some(Trust::FirstUse));
        assert_eq!(t.check("http://s:1", &a).ok(), Some(Trust::Known));
        assert_eq!(t.check("http://other:1", &b).ok(), Some(Trust::FirstUse));
        let r = t.check("http://s:1", &b);
        assert!(
            matches!(r, Err(ClientError::TrustedKeyChanged { .. })),
            "{r:?}"
        );
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(text.starts_with("# breachcheck"), "{text}");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 2);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_malformed_line_is_an_error_not_a_first_use() {
        let path = temp("malformed");
        std::fs::write(&path, "http://s:1 not-hex\n").unwrap_or_default();
        let r = TrustFile::new(path.clone()).check("http://s:1", &[1; 32]);
        assert!(matches!(r, Err(ClientError::TrustFile { .. })), "{r:?}");
        let _ = std::fs::remove_file(&path);
    }
}
