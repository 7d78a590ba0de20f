//! The OPRF key file: one secret scalar, mode 0600, never in the index.
//!
//! Format (text, two lines):
//!
//! ```text
//! breachcheck-oprf-key v1 ristretto255-SHA512 voprf
//! <64 hex digits: SerializeScalar(skS)>
//! ```

use std::fs;
use std::io::Write;
use std::path::Path;

use breachcheck_proto::{Mode, ServerKey};
use zeroize::Zeroizing;

use crate::error::{Result, ServerError, io_err};

const HEADER: &str = "breachcheck-oprf-key v1 ristretto255-SHA512 voprf";

/// Reads a key file.
///
/// # Errors
///
/// [`ServerError::Io`] if it cannot be read, [`ServerError::BadKeyFile`] if it
/// is not a key file or holds an invalid scalar.
pub fn load_key(path: &Path) -> Result<ServerKey> {
    let bad = |reason| ServerError::BadKeyFile {
        path: path.to_owned(),
        reason,
    };
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err(path))?);
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
}
