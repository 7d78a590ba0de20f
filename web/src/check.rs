//! One private check of one number, step by step, as the page runs it. Each
//! step is a function of bytes in and bytes out; the page's JavaScript only
//! carries them over `fetch`. Every check of what the server sends is the
//! SDK's own (`breachcheck_client::checks`), and the protocol is the proto
//! crate's: this module only puts them in order.
//!
//! ```text
//! GetIndexInfo → Session::new      suite, key (and the pin), layout, index id
//! Check::new                       E.164, blind                   (nothing sent)
//! Evaluate     → accept_evaluation length, reflection, DLEQ proof, finalize
//! GetBuckets   → accept_buckets    bucket numbers, Merkle proofs, strict decode, lookup
//! ```

use std::collections::BTreeSet;

use breachcheck_client::checks::{
    Answer, PrefixPlan, bad, breaches_in, bucket_of, check_layout, check_response, decode, pin,
    prefix_bits, served_key,
};
use breachcheck_client::{ClientError, privacy_statement};
use breachcheck_proto::pb::{
    Breach, BucketChunk, EvaluateRequest, EvaluateResponse, GetBucketsRequest, IndexInfo,
};
use breachcheck_proto::{
    Blind, BlindedElement, MERKLE_HASH_LEN, Mode, Output, PhoneNumber, ProtocolError, PublicKey,
    Region, blind_batch, finalize,
};
use prost::Message;
use serde::Serialize;

use crate::grpcweb::CallError;

/// Why a step of the page's check failed; shown to the user as is.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A check of the SDK failed (proof, key, bucket, layout).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The protocol refused an input or an element.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The grpc-web call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The user's input (region, pin) is not usable.
    #[error("{0}")]
    Input(String),
}

/// An index the page checks against: its description, checked, and the
/// key pinned for the check.
#[derive(Debug, Clone)]
pub struct Session {
    info: IndexInfo,
    pinned: PublicKey,
    j: u32,
}

impl Session {
    /// The session for a GetIndexInfo answer `message`. With `pinned_key`
    /// (the 64 hex digits of a public key the user got out of band), the
    /// served key must be that one; with `pinned_index` (64 hex digits of
    /// an index id), the index must be that one (which pins the key, the
    /// layout and every bucket).
    ///
    /// # Errors
    ///
    /// A message that does not decode, an unsupported suite or layout, an
    /// index id that does not commit to the rest, a key or index other than
    /// the pinned one.
    pub fn new(
        message: &[u8],
        pinned_key: Option<&str>,
        pinned_index: Option<&str>,
    ) -> Result<Self, WebError> {
        let info = IndexInfo::decode(message).map_err(|_| {
            ClientError::UnsupportedIndex("the index description does not decode".into())
        })?;
        let served = served_key(&info)?;
        check_layout(&info)?;
        let pinned = match pinned_key.map(str::trim).filter(|p| !p.is_empty()) {
            Some(hex_key) => Some(parse_hex32(hex_key, "the pinned key")?),
            None => None,
        };
        let key = pin(pinned, served)?;
        if let Some(id) = pinned_index.map(str::trim).filter(|p| !p.is_empty()) {
            let id = parse_hex32(id, "the pinned index id")?;
            if info.index_id != id {
                return Err(WebError::Input(format!(
                    "the server's index {} is not the pinned index {}; do not trust this server's \
                     answers until you have checked the index id out of band",
                    hex::encode(&info.index_id),
                    hex::encode(id)
                )));
            }
        }
        let j = prefix_bits(None, None, &info)?;
        Ok(Session {
            pinned: PublicKey::from_bytes(&key)?,
            info,
            j,
        })
    }

    /// The index id, hex: what to compare out of band.
    pub fn index_id(&self) -> String {
        hex::encode(&self.info.index_id)
    }

    /// The served (and pinned) key's fingerprint, as the CLI prints it.
    pub fn key_fingerprint(&self) -> String {
        self.pinned.fingerprint()
    }

    /// The public key, hex: what a pin names.
    pub fn public_key(&self) -> String {
        hex::encode(self.pinned.to_bytes())
    }

    /// Numbers in the index.
    pub fn entry_count(&self) -> u64 {
        self.info.entry_count
    }

    /// The breaches the index covers.
    pub fn breaches(&self) -> Vec<BreachView> {
        self.info.breaches.iter().map(BreachView::from).collect()
    }
}

/// The 32 bytes named by 64 hex digits (`what`, for the error).
fn parse_hex32(hex32: &str, what: &str) -> Result<[u8; 32], WebError> {
    hex::decode(hex32)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| WebError::Input(format!("{what} must be 64 hex digits")))
}

/// The most bytes of a GetBuckets answer the page reads: a bucket larger
/// than this is for the CLI, not a browser tab.
pub const MAX_PAGE_ANSWER: u64 = 64 << 20;

/// A breach as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreachView {
    /// Name.
    pub name: String,
    /// Date.
    pub date: String,
    /// Free text.
    pub description: String,
    /// Kinds of data exposed.
    pub data_classes: Vec<String>,
}

impl From<&Breach> for BreachView {
    fn from(b: &Breach) -> Self {
        BreachView {
            name: b.name.clone(),
            date: b.date.clone(),
            description: b.description.clone(),
            data_classes: b.data_classes.clone(),
        }
    }
}

/// The answer for the number checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The number in E.164.
    pub number: String,
    /// Whether it is in the corpus.
    pub found: bool,
    /// The breaches it is in (every breach of the index when found in an
    /// index without labels).
    pub breaches: Vec<BreachView>,
    /// What the server learned, in the CLI's words.
    pub privacy: String,
    /// The prefix bits the bucket request revealed.
    pub prefix_bits: u32,
}

/// One number on its way through the protocol.
pub struct Check {
    number: PhoneNumber,
    blinds: Vec<Blind>,
    blinded: Vec<BlindedElement>,
    output: Option<Output>,
    plan: PrefixPlan,
    bucket: u32,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the number, the blind or the output.
        f.debug_struct("Check")
            .field("evaluated", &self.output.is_some())
            .finish_non_exhaustive()
    }
}

impl Check {
    /// Canonicalises `input` (national numbers in `region`, an ISO 3166
    /// code) and blinds it.
    ///
    /// # Errors
    ///
    /// An unknown region, or an input that is not a phone number.
    pub fn new(session: &Session, input: &str, region: &str) -> Result<Self, WebError> {
        let region = Region::parse(region)
            .ok_or_else(|| WebError::Input(format!("unknown region {region:?}")))?;
        let number = PhoneNumber::parse(input, Some(region)).map_err(ProtocolError::from)?;
        let (blinds, blinded) = blind_batch(Mode::Voprf, &[number.as_bytes()], &mut rand::rng())?;
        let k = session.info.bucket_bits;
        let bucket = bucket_of(&number, k);
        let floor = session.info.min_prefix_bits.min(k);
        let plan = PrefixPlan::new(k, session.j, floor, &BTreeSet::from([bucket]));
        Ok(Check {
            number,
            blinds,
            blinded,
            output: None,
            plan,
            bucket,
        })
    }

    /// The Evaluate request: the index id and the blinded element.
    pub fn evaluate_request(&self, session: &Session) -> EvaluateRequest {
        EvaluateRequest {
            index_id: session.info.index_id.clone(),
            blinded_elements: self.blinded.iter().map(|b| b.to_bytes().to_vec()).collect(),
        }
    }

    /// Checks the Evaluate answer `message` (one element, not the blinded
    /// one, a proof that verifies under the pinned key) and finalizes.
    ///
    /// # Errors
    ///
    /// A message that does not decode, or fails a check: the SDK's errors.
    pub fn accept_evaluation(&mut self, session: &Session, message: &[u8]) -> Result<(), WebError> {
        let resp = EvaluateResponse::decode(message)
            .map_err(|_| WebError::Input("the server's Evaluate answer does not decode".into()))?;
        let (evaluated, proof) = check_response(&self.blinded, &resp, &session.pinned)?;
        let out = finalize(
            Mode::Voprf,
            &[self.number.as_bytes()],
            &self.blinds,
            &self.blinded,
            &evaluated,
            Some((&session.pinned, &proof)),
        )
        .map_err(|e| match e {
            ProtocolError::Verify => WebError::Client(ClientError::ProofFailed {
                pinned: session.pinned.fingerprint(),
            }),
            other => other.into(),
        })?;
        self.output = out.into_iter().next();
        Ok(())
    }

    /// The GetBuckets request: the `j`-bit prefix of the number's bucket
    /// (or the whole index, when that reveals less for the same bytes).
    pub fn buckets_request(&self, session: &Session) -> GetBucketsRequest {
        GetBucketsRequest {
            index_id: session.info.index_id.clone(),
            prefix_bits: self.plan.j,
            prefixes: self.plan.prefixes.clone(),
        }
    }

    /// The most bytes an honest GetBuckets answer to
    /// [`buckets_request`](Self::buckets_request) takes: its buckets, each
    /// with its proof and framing, and the trailers. The page stops reading
    /// past it.
    ///
    /// # Errors
    ///
    /// An answer that would be larger than [`MAX_PAGE_ANSWER`].
    pub fn max_answer_bytes(&self, session: &Session) -> Result<u64, WebError> {
        let info = &session.info;
        let per_prefix = 1u64 << (info.bucket_bits - self.plan.j.min(info.bucket_bits));
        let buckets = per_prefix * self.plan.prefixes.len() as u64;
        let chunk = u64::from(info.payload_len)
            + (MERKLE_HASH_LEN as u64) * u64::from(info.bucket_bits)
            + 32;
        let bytes = buckets.saturating_mul(chunk).saturating_add(16 << 10);
        if bytes > MAX_PAGE_ANSWER {
            return Err(WebError::Input(format!(
                "this index's buckets are too large to check in a browser ({} MiB for one \
                 number); use the command-line client",
                bytes >> 20
            )));
        }
        Ok(bytes)
    }

    /// Checks the GetBuckets answer (`messages`, one BucketChunk each):
    /// exactly the buckets asked for, each once, each proven against the
    /// index id and decoded strictly; then looks the number up.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadBucket`] for anything but an honest answer, or the
    /// evaluation not accepted first.
    pub fn accept_buckets(
        &self,
        session: &Session,
        messages: &[&[u8]],
    ) -> Result<Outcome, WebError> {
        let output = self
            .output
            .as_ref()
            .ok_or_else(|| bad(self.bucket, "no verified evaluation to look up"))?;
        let info = &session.info;
        let expected: BTreeSet<u32> = self
            .plan
            .prefixes
            .iter()
            .flat_map(|&p| {
                breachcheck_proto::buckets_under_prefix(p, self.plan.j, info.bucket_bits)
            })
            .collect();
        let mut answer = Answer::new(expected);
        let mut mine = None;
        for m in messages {
            let chunk = BucketChunk::decode(*m)
                .map_err(|_| bad(self.bucket, "a chunk of the answer does not decode"))?;
            answer.accept(&chunk)?;
            let payload = decode(chunk.bucket, &chunk.payload, &chunk.bucket_proof, info)?;
            if chunk.bucket == self.bucket {
                mine = Some(payload);
            }
        }
        answer.finish()?;
        let payload = mine.ok_or_else(|| bad(self.bucket, "the server did not send it"))?;
        let mask = payload.breach_mask(output);
        let breaches = match mask {
            None => Vec::new(),
            Some(m) => {
                let named: Vec<BreachView> = breaches_in(info, m).map(BreachView::from).collect();
                if named.is_empty() {
                    session.breaches()
                } else {
                    named
                }
            }
        };
        Ok(Outcome {
            number: self.number.as_str().to_owned(),
            found: mask.is_some(),
            breaches,
            privacy: privacy_statement(Some(self.plan.j)),
            prefix_bits: self.plan.j,
        })
    }
}

/// The client's work for one number, in the same steps as a check (blind;
/// then check the response, verify the proof and finalize), over `rounds`
/// numbers, with a local key standing in for the server (its work is not
/// counted). `now` is a clock in milliseconds. Returns milliseconds per
/// number. The benchmark runs it natively and in the browser, so the two
/// figures measure the same code.
///
/// # Errors
///
/// A protocol error (none with a correct implementation).
pub fn client_work_ms(rounds: u32, now: &dyn Fn() -> f64) -> Result<f64, WebError> {
    let mut rng = rand::rng();
    let key = breachcheck_proto::ServerKey::random(Mode::Voprf, &mut rng);
    let public = key.public_key();
    let mut spent = 0.0;
    for i in 0..rounds.max(1) {
        let input = format!("+861380013{:04}", i % 10_000);
        let t0 = now();
        let (blinds, blinded) = blind_batch(Mode::Voprf, &[input.as_bytes()], &mut rng)?;
        let t1 = now();
        let eval = key.blind_evaluate(&blinded, &mut rng)?;
        let resp = EvaluateResponse {
            evaluated_elements: eval
                .elements
                .iter()
                .map(|e| e.to_bytes().to_vec())
                .collect(),
            proof: eval
                .proof
                .map(|p| p.to_bytes().to_vec())
                .unwrap_or_default(),
        };
        let t2 = now();
        let (evaluated, proof) = check_response(&blinded, &resp, public)?;
        finalize(
            Mode::Voprf,
            &[input.as_bytes()],
            &blinds,
            &blinded,
            &evaluated,
            Some((public, &proof)),
        )?;
        spent += (t1 - t0) + (now() - t2);
    }
    Ok(spent / f64::from(rounds.max(1)))
}

#[cfg(test)]
mod tests {
    use breachcheck_proto::SUITE;

    use super::*;

    #[test]
    fn the_client_work_runs_the_whole_round_trip() {
        let t = std::time::Instant::now();
        let clock = move || t.elapsed().as_secs_f64() * 1e3;
        let ms = client_work_ms(3, &clock).expect("round trip");
        assert!(ms > 0.0);
    }

    #[test]
    fn a_description_that_does_not_decode_or_commit_is_refused() {
        assert!(Session::new(&[0xff, 0xff, 0xff], None, None).is_err());
        let key = breachcheck_proto::ServerKey::random(Mode::Voprf, &mut rand::rng());
        let info = IndexInfo {
            suite: SUITE.into(),
            mode: 1,
            public_key: key.public_key().to_bytes().to_vec(),
            index_id: vec![7; 32],
            bucket_root: vec![1; 32],
            bucket_bits: 4,
            bucket_entries: 1,
            fingerprint_bits: 32,
            entry_count: 1,
            payload_len: 64,
            ..IndexInfo::default()
        };
        let e = Session::new(&info.encode_to_vec(), None, None)
            .expect_err("a layout no honest build makes, an id that commits to nothing");
        assert!(e.to_string().starts_with("unsupported index"), "{e}");
    }

    #[test]
    fn a_pin_is_64_hex_digits() {
        assert!(parse_hex32("not hex", "pin").is_err());
        assert!(parse_hex32(&"ab".repeat(31), "pin").is_err());
        assert_eq!(parse_hex32(&"ab".repeat(32), "pin").ok(), Some([0xab; 32]));
    }
}
