//! The OPRF round trip of RFC 9497, VOPRF mode (DESIGN.md, "The protocol",
//! steps 1 to 3), for a set of numbers: blind, Evaluate, check the response,
//! verify the batch proof against the pinned key, finalize.
//!
//! ```text
//! client: blinds, blinded = Blind(x_i)             (fresh random blind each)
//! server: evaluated, proof = BlindEvaluate(skS, blinded)
//! client: len(evaluated) == len(blinded), evaluated_i != blinded_i,
//!         VerifyProof(G, pkS, blinded, evaluated, proof),
//!         out_i = Finalize(x_i, blind_i, evaluated_i)   (64 bytes)
//! ```
//!
//! The scalar multiplications run on the blocking pool, never on a runtime
//! worker; batches of up to `max_batch` elements run `concurrency` at a
//! time, started in order, paced to the server's quota (`pace`). When a
//! batch fails for good, the batches before it still finish and their
//! outputs are returned with the error: quota spent on them is not thrown
//! away. The key checks are here too: which suite and mode this client
//! speaks, and which key it pins.

use std::collections::HashMap;
use std::sync::Arc;

use breachcheck_proto::pb::IndexInfo;
use breachcheck_proto::{
    MAX_PROOF_BATCH, Mode, Output, PhoneNumber, ProtocolError, PublicKey, blind_batch, finalize,
};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

use crate::checks::check_response;
use crate::error::{ClientError, Result};
use crate::pace::Pacer;
use crate::rpc::Rpc;
use crate::task::{blocking, failed};

/// Evaluates numbers under one index's key, pinned.
#[derive(Debug, Clone)]
pub(crate) struct Evaluator {
    rpc: Rpc,
    pacer: Arc<Pacer>,
    index_id: Vec<u8>,
    pinned: PublicKey,
    max_batch: usize,
    concurrency: usize,
}

/// The outcome of [`Evaluator::evaluate`]: the verified outputs of the
/// first numbers, in order, and why the rest have none.
#[derive(Debug)]
pub(crate) struct Evaluated {
    /// Outputs of `numbers[..outputs.len()]`.
    pub(crate) outputs: Vec<Output>,
    /// The error that stopped the rest; `None` when every number has its
    /// output.
    pub(crate) error: Option<ClientError>,
}

impl Evaluator {
    /// An evaluator for `info`'s index whose proofs must verify under
    /// `pinned`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Protocol`] if `pinned` is not a valid element.
    pub(crate) fn new(
        rpc: Rpc,
        pacer: Arc<Pacer>,
        info: &IndexInfo,
        pinned: &[u8; 32],
        concurrency: usize,
    ) -> Result<Self> {
        Ok(Evaluator {
            rpc,
            pacer,
            index_id: info.index_id.clone(),
            pinned: PublicKey::from_bytes(pinned)?,
            max_batch: (info.max_batch as usize).clamp(1, MAX_PROOF_BATCH),
            concurrency: concurrency.max(1),
        })
    }

    /// The key this evaluator's proofs must verify under.
    pub(crate) fn pinned(&self) -> [u8; 32] {
        self.pinned.to_bytes()
    }

    /// The verified PRF output of every number, in order, as far as the
    /// batches succeed: after the first batch that fails for good, the
    /// later ones are cancelled and the earlier ones finish.
    ///
    /// The error, if any, is the first failing batch's:
    /// [`ClientError::ResponseLength`], [`ClientError::ReflectedElement`],
    /// [`ClientError::ProofFailed`], [`ClientError::QuotaExhausted`], an RPC
    /// error, or [`ClientError::TaskFailed`].
    pub(crate) async fn evaluate(&self, numbers: &[PhoneNumber]) -> Evaluated {
        let batches: Vec<&[PhoneNumber]> = numbers.chunks(self.max_batch).collect();
        // Batches are sent in order (each waits for its turn after blinding),
        // so a quota that runs out refuses a batch and everything after it,
        // never an earlier one whose output would then be dropped.
        let turns = Arc::new(watch::channel(0usize).0);
        let mut tasks = JoinSet::new();
        let mut index_of = HashMap::new();
        let mut handles: Vec<AbortHandle> = Vec::new();
        let mut parts: Vec<Option<Vec<Output>>> = vec![None; batches.len()];
        // The first (lowest) failing batch and its error.
        let mut first_failure: Option<(usize, ClientError)> = None;
        loop {
            // At most `concurrency` in flight; none started after a failure.
            while first_failure.is_none()
                && handles.len() < batches.len()
                && tasks.len() < self.concurrency
            {
                let i = handles.len();
                let (this, batch, turns) = (self.clone(), batches[i].to_vec(), turns.clone());
                let h = tasks.spawn(async move { this.evaluate_batch(batch, i, &turns).await });
                index_of.insert(h.id(), i);
                handles.push(h);
            }
            let Some(joined) = tasks.join_next_with_id().await else {
                break;
            };
            let (i, result) = match joined {
                Ok((id, r)) => (index_of.get(&id).copied().unwrap_or(0), r),
                Err(e) if e.is_cancelled() => continue,
                Err(e) => (
                    index_of.get(&e.id()).copied().unwrap_or(0),
                    Err(failed("evaluate")(e)),
                ),
            };
            match result {
                Ok(outputs) => parts[i] = Some(outputs),
                Err(e) if first_failure.as_ref().is_none_or(|(f, _)| i < *f) => {
                    // Later batches are no use now: cancel them. Earlier
                    // ones, already sent and charged, finish.
                    for h in &handles[i + 1..] {
                        h.abort();
                    }
                    first_failure = Some((i, e));
                }
                Err(_) => {}
            }
        }
        let cut = first_failure.as_ref().map_or(parts.len(), |(i, _)| *i);
        let outputs = parts
            .into_iter()
            .take(cut)
            .map_while(|p| p)
            .flatten()
            .collect();
        Evaluated {
            outputs,
            error: first_failure.map(|(_, e)| e),
        }
    }

    /// One Evaluate call: blind, send, check, verify, finalize.
    /// `turn` is the batch's place in the check: it sends after every
    /// earlier batch has.
    async fn evaluate_batch(
        &self,
        numbers: Vec<PhoneNumber>,
        turn: usize,
        turns: &watch::Sender<usize>,
    ) -> Result<Vec<Output>> {
        let inputs = Arc::new(numbers);
        let to_blind = inputs.clone();
        let (blinds, blinded) = blocking("blind", move || {
            let xs: Vec<&[u8]> = to_blind.iter().map(PhoneNumber::as_bytes).collect();
            blind_batch(Mode::Voprf, &xs, &mut rand::rng())
        })
        .await??;
        let wire: Vec<Vec<u8>> = blinded.iter().map(|b| b.to_bytes().to_vec()).collect();
        let mut my_turn = turns.subscribe();
        // The sender lives in `evaluate` for as long as this task does.
        let _ = my_turn.wait_for(|&t| t >= turn).await;
        turns.send_modify(|t| *t = (*t).max(turn + 1));
        let resp = self
            .pacer
            .call(|| self.rpc.evaluate(&self.index_id, &wire))
            .await?;
        let pinned = self.pinned;
        blocking("finalize", move || {
            let (evaluated, proof) = check_response(&blinded, &resp, &pinned)?;
            let proof_failed = || ClientError::ProofFailed {
                pinned: pinned.fingerprint(),
            };
            let xs: Vec<&[u8]> = inputs.iter().map(PhoneNumber::as_bytes).collect();
            finalize(
                Mode::Voprf,
                &xs,
                &blinds,
                &blinded,
                &evaluated,
                Some((&pinned, &proof)),
            )
            .map_err(|e| match e {
                ProtocolError::Verify => proof_failed(),
                other => other.into(),
            })
        })
        .await?
    }
}
