//! API-key authentication: the `authorization: Bearer <token>` metadata,
//! matched by BLAKE3 hash in constant time against the configured keys.

use subtle::ConstantTimeEq;

use crate::error::Refusal;
use crate::serve::config::{ApiKeyEntry, Quota};
use crate::serve::quota::Caller;

/// Why a call was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthError {
    /// No `authorization` header and anonymous access is off.
    Missing,
    /// A header that is not `Bearer <token>`, or an unknown token.
    Invalid,
}

/// The configured API keys, by hash.
#[derive(Debug, Clone)]
pub(crate) struct ApiKeys {
    keys: Vec<(String, [u8; 32], Quota)>,
    anonymous: Option<Quota>,
}

impl ApiKeys {
    /// From the config entries (hashes already validated).
    pub(crate) fn new(
        entries: &[ApiKeyEntry],
        default_quota: Quota,
        anonymous: Option<Quota>,
    ) -> Self {
        let keys = entries
            .iter()
            .filter_map(|e| {
                let mut h = [0u8; 32];
                hex::decode_to_slice(&e.token_blake3, &mut h).ok()?;
                Some((e.name.clone(), h, e.quota.unwrap_or(default_quota)))
            })
            .collect();
        ApiKeys { keys, anonymous }
    }

    /// Resolves the `authorization` header value to a caller. Every key is
    /// compared, in constant time, against the token's BLAKE3 hash.
    ///
    /// # Errors
    ///
    /// [`AuthError`].
    pub(crate) fn authenticate(&self, header: Option<&[u8]>) -> Result<Caller, AuthError> {
        let Some(value) = header else {
            return match self.anonymous {
                Some(q) => Ok(Caller {
                    name: "anonymous".into(),
                    subject: None,
                    quota: q.into(),
                }),
                None => Err(AuthError::Missing),
            };
        };
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
            .ok_or(AuthError::Invalid)?;
        let hash = blake3::hash(token.trim_ascii());
        let mut found = None;
        for (name, h, q) in &self.keys {
            if bool::from(h.ct_eq(hash.as_bytes())) {
                found = Some((name, q));
            }
        }
        found
            .map(|(name, q)| Caller {
                name: name.clone(),
                subject: None,
                quota: (*q).into(),
            })
            .ok_or(AuthError::Invalid)
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => Refusal::MissingApiKey,
            AuthError::Invalid => Refusal::InvalidApiKey,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_matched_by_hash() {
        let (token, _) = crate::serve::config::new_api_key("a");
        let entry = ApiKeyEntry {
            name: "a".into(),
            token_blake3: hex::encode(blake3::hash(token.as_bytes()).as_bytes()),
            quota: None,
        };
        let keys = ApiKeys::new(&[entry], Quota::default(), None);
        let header = format!("Bearer {token}");
        assert_eq!(
            keys.authenticate(Some(header.as_bytes())).unwrap().name,
            "a"
        );
        assert_eq!(
            keys.authenticate(Some(b"Bearer nope")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            keys.authenticate(Some(token.as_bytes())),
            Err(AuthError::Invalid)
        );
        assert_eq!(keys.authenticate(None), Err(AuthError::Missing));
        let anon = ApiKeys::new(&[], Quota::default(), Some(Quota::anonymous()));
        assert_eq!(anon.authenticate(None).unwrap().name, "anonymous");
    }
}
