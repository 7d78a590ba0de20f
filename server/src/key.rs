//! The OPRF key file: one secret scalar, mode 0600, never in the index.
//!
//! A key file that its group or other users may read or write is refused,
//! as ssh refuses such a private key: the key is the corpus's only
//! protection (docs/SECURITY.md). [`InsecureKeyMode::Allow`]
//! (`--allow-insecure-key-mode`) loads it anyway, with a loud warning.
//!
//! Format (text, two lines):
//!
//! ```text
//! breachcheck-oprf-key v1 ristretto255-SHA512 voprf
//! <64 hex digits: SerializeScalar(skS)>
//! ```

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use breachcheck_proto::{Mode, ServerKey};
use zeroize::Zeroizing;

use crate::error::{Result, ServerError, io_err};

const HEADER: &str = "breachcheck-oprf-key v1 ristretto255-SHA512 voprf";
/// The most bytes read from a key file.
const MAX_KEY_FILE: usize = 1024;

/// What to do with a key file whose mode lets its group or other users in
/// (`mode & 0o077 != 0`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InsecureKeyMode {
    /// Refuse it with [`ServerError::InsecureKeyMode`] (the default).
    #[default]
    Refuse,
    /// Load it, with a `tracing::warn!` (`--allow-insecure-key-mode`).
    Allow,
}

impl InsecureKeyMode {
    /// [`InsecureKeyMode::Allow`] if `allow`, else [`InsecureKeyMode::Refuse`].
    pub fn allow_if(allow: bool) -> Self {
        if allow { Self::Allow } else { Self::Refuse }
    }
}

/// Reads a key file, refusing one whose mode has group or other bits
/// (`chmod 600` it).
///
/// # Errors
///
/// As [`load_key_with`] under [`InsecureKeyMode::Refuse`].
pub fn load_key(path: &Path) -> Result<ServerKey> {
    load_key_with(path, InsecureKeyMode::Refuse)
}

/// Reads a key file; `insecure` says what to do with a file that its group
/// or other users may access.
///
/// # Errors
///
/// [`ServerError::Io`] if it cannot be read, [`ServerError::InsecureKeyMode`]
/// if its mode has group or other bits under [`InsecureKeyMode::Refuse`],
/// [`ServerError::BadKeyFile`] if it is not a key file or holds an invalid
/// scalar.
pub fn load_key_with(path: &Path, insecure: InsecureKeyMode) -> Result<ServerKey> {
    let bad = |reason| ServerError::BadKeyFile {
        path: path.to_owned(),
        reason,
    };
    let file = fs::File::open(path).map_err(io_err(path))?;
    // The mode of the file opened, not of whatever the path names later.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(io_err(path))?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            match insecure {
                InsecureKeyMode::Refuse => {
                    return Err(ServerError::InsecureKeyMode {
                        path: path.to_owned(),
                        mode,
                    });
                }
                InsecureKeyMode::Allow => tracing::warn!(
                    path = %path.display(),
                    mode = %format!("{mode:04o}"),
                    "INSECURE: the OPRF key file is accessible to its group or other users; \
                     loading it because of --allow-insecure-key-mode. Run `chmod 600` on it"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = insecure;
    // A key file is about 116 bytes: reserved up front, so the secret is
    // never left behind in a buffer that grew, and capped, so a path to
    // something huge is refused instead of read.
    let mut text = Zeroizing::new(String::with_capacity(MAX_KEY_FILE + 1));
    file.take(MAX_KEY_FILE as u64 + 1)
        .read_to_string(&mut text)
        .map_err(io_err(path))?;
    if text.len() > MAX_KEY_FILE {
        return Err(bad("longer than a key file"));
    }
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(bad("missing or wrong header line"));
    }
    let hex_line = lines.next().ok_or_else(|| bad("missing secret line"))?;
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(bad("trailing content"));
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_line.trim(), &mut *bytes)
        .map_err(|_| bad("secret is not 64 hex digits"))?;
    ServerKey::from_secret_bytes(Mode::Voprf, &bytes)
        .map_err(|_| bad("secret is not a valid scalar"))
}

/// Writes a key file with mode 0600, through a temporary file and a rename.
///
/// # Errors
///
/// [`ServerError::Exists`] if `path` exists and `force` is false;
/// [`ServerError::Io`] on write failure.
pub fn save_key(path: &Path, key: &ServerKey, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(ServerError::Exists(path.to_owned()));
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let secret = key.to_secret_bytes();
    let body = Zeroizing::new(format!("{HEADER}\n{}\n", hex::encode(*secret)));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// `keygen`: a new key (random, or derived from `seed_hex` for tests),
/// written to `path` with mode 0600.
///
/// # Errors
///
/// As [`key_from_seed`] and [`save_key`].
pub fn keygen(path: &Path, seed_hex: Option<&str>, force: bool) -> Result<ServerKey> {
    let key = match seed_hex {
        Some(s) => key_from_seed(s)?,
        None => ServerKey::random(Mode::Voprf, &mut rand::rng()),
    };
    save_key(path, &key, force)?;
    Ok(key)
}

/// A key derived from a seed given as hex (any length), for reproducible test
/// keys: `DeriveKeyPair(BLAKE3(seed), "breachcheck test key")`.
///
/// # Errors
///
/// [`ServerError::Input`] if the seed is not hex.
pub fn key_from_seed(seed_hex: &str) -> Result<ServerKey> {
    let seed = Zeroizing::new(
        hex::decode(seed_hex.trim())
            .map_err(|_| ServerError::Input("--seed must be hex".into()))?,
    );
    let seed32 = Zeroizing::new(*blake3::hash(&seed).as_bytes());
    Ok(ServerKey::derive_key_pair(
        Mode::Voprf,
        &seed32,
        b"breachcheck test key",
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("bc-key-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        let key = key_from_seed("01").unwrap();
        save_key(&path, &key, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(load_key(&path).unwrap().public_key(), key.public_key());
        assert!(matches!(
            save_key(&path, &key, false),
            Err(ServerError::Exists(_))
        ));
        save_key(&path, &key, true).unwrap();
        fs::write(&path, "nonsense\n").unwrap();
        assert!(matches!(
            load_key(&path),
            Err(ServerError::BadKeyFile { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    // See: #10 (row 8)
    #[cfg(unix)]
    #[test]
    fn a_key_file_readable_by_others_is_refused_unless_allowed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("bc-key-mode-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        let key = key_from_seed("02").unwrap();
        save_key(&path, &key, false).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let e = load_key(&path).unwrap_err();
            assert!(
                matches!(e, ServerError::InsecureKeyMode { mode: m, .. } if m == mode),
                "{e:?}"
            );
            let text = e.to_string();
            assert!(
                text.contains(&format!("mode {mode:04o}")) && text.contains("chmod 600"),
                "{text}"
            );
            let loaded = load_key_with(&path, InsecureKeyMode::Allow).unwrap();
            assert_eq!(loaded.public_key(), key.public_key());
        }
        for mode in [0o600, 0o400] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(load_key(&path).unwrap().public_key(), key.public_key());
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, vec![b'a'; 5000]).unwrap();
        assert!(matches!(
            load_key(&path),
            Err(ServerError::BadKeyFile { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
