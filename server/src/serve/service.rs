//! The `breachcheck.v1.BreachCheck` gRPC service: three handlers that return
//! `Result<_, Refusal>`, and the trait impl that turns refusals into statuses
//! (through the one mapping in `error.rs`).
//!
//! The service is stateless between RPCs: each call reads the currently
//! served (index, key) pair once, so a reload never mixes two keys in one
//! answer, and in-flight calls finish on the pair they started with. Metrics
//! are not kept here: the layer in `metrics.rs` observes every call.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use breachcheck_proto as proto;
use breachcheck_proto::pb::breach_check_server::BreachCheck;
use breachcheck_proto::pb::{
    Breach, BucketChunk, EvaluateRequest, EvaluateResponse, GetBucketsRequest, GetIndexInfoRequest,
    GetPirSetupRequest, IndexInfo, PirAnswer, PirQueryRequest, PirSetup,
};
use breachcheck_proto::{BlindedElement, ProtocolError};
use rayon::prelude::*;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::error::{Refusal, ServerError};
use crate::pir::PirError;
use crate::serve::guard::mark_entered;
use crate::serve::quota::Call;
use crate::serve::state::AppState;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct Service {
    state: Arc<AppState>,
}

/// The stream of a GetBuckets answer.
type BucketStream = Pin<Box<dyn Stream<Item = Result<BucketChunk, Status>> + Send>>;

impl Service {
    /// A service over `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        Service { state }
    }

    /// GetIndexInfo: public, but a present, invalid key is refused.
    async fn index_info(&self, req: &Request<GetIndexInfoRequest>) -> Result<IndexInfo, Refusal> {
        let state = &self.state;
        state.authenticate(req, false).await?;
        let served = state.current();
        let h = served.index.header();
        Ok(IndexInfo {
            suite: proto::SUITE.into(),
            mode: u32::from(h.mode),
            public_key: h.public_key.to_vec(),
            index_id: h.index_id.to_vec(),
            bucket_bits: h.bucket_bits,
            fingerprint_bits: h.fingerprint_bits,
            entry_count: h.entry_count,
            breaches: h
                .breaches
                .iter()
                .map(|b| Breach {
                    id: b.id.clone(),
                    name: b.name.clone(),
                    date: b.date.clone(),
                    description: b.description.clone(),
                    data_classes: b.data_classes.clone(),
                })
                .collect(),
            max_batch: state.config().max_batch,
            min_prefix_bits: state.config().min_prefix_bits.min(h.bucket_bits),
            bucket_root: h.bucket_root.to_vec(),
            bucket_entries: h.bucket_entries,
            payload_len: h.payload_len,
        })
    }

    /// Evaluate: checks, in the order of docs/PROTOCOL.md §7, then one
    /// BlindEvaluate and one batched proof on the rayon pool.
    async fn evaluate_batch(
        &self,
        req: Request<EvaluateRequest>,
    ) -> Result<EvaluateResponse, Refusal> {
        let state = &self.state;
        // Admitted (token, request rate, a spent key) from the headers, by
        // the guard layer, before the body was read.
        let caller = state.caller(&req, Call::Evaluate).await?;
        let served = state.current();
        let req = req.into_inner();
        state.check_index_id(&served, &req.index_id)?;
        if served.key.is_none() {
            return Err(Refusal::BucketsOnly);
        }
        let n = req.blinded_elements.len();
        let max = state.config().max_batch as usize;
        if n == 0 {
            return Err(Refusal::EmptyBatch);
        }
        if n > max {
            return Err(Refusal::BatchTooLarge { len: n, max });
        }
        // Charge the batch before any per-element work: a batch refused for
        // a bad element below is paid for like any other, so invalid batches
        // cannot buy decoding work beyond the caller's quota.
        state.charge_elements(&caller, n as u64).await?;
        // Cheap checks first (lengths), then decoding (a decompression each)
        // on the rayon pool, stopping at the first bad element.
        if let Some(index) = req
            .blinded_elements
            .iter()
            .position(|b| b.len() != proto::ELEMENT_LEN)
        {
            return Err(Refusal::InvalidElement { index });
        }
        let wire = req.blinded_elements;
        let blinded = on_pool(move || decode_batch(&wire)).await??;
        // The multiplications run on the rayon pool too, never on the runtime.
        let key_holder = served.clone();
        let (elements, proof) = on_pool(move || {
            let Some(key) = key_holder.key.as_ref() else {
                return Err(ProtocolError::InvalidInput);
            };
            let elements: Vec<_> = blinded
                .par_chunks(64)
                .flat_map_iter(|c| key.blind_evaluate_elements(c))
                .collect();
            key.generate_proof(&blinded, &elements, &mut rand::rng())
                .map(|p| (elements, p))
        })
        .await?
        .map_err(ServerError::from)?;
        state.metrics.add_elements(n as u64);
        tracing::debug!(api_key = %caller.name, elements = n, "evaluated batch");
        Ok(EvaluateResponse {
            evaluated_elements: elements.iter().map(|e| e.to_bytes().to_vec()).collect(),
            proof: proof.to_bytes().to_vec(),
        })
    }

    /// GetBuckets: checks the prefixes, charges the bytes, then streams the
    /// payloads straight from the map.
    async fn bucket_stream(
        &self,
        req: Request<GetBucketsRequest>,
    ) -> Result<BucketStream, Refusal> {
        let state = &self.state;
        let caller = state.authenticate(&req, true).await?;
        let served = state.current();
        let req = req.into_inner();
        state.check_index_id(&served, &req.index_id)?;
        let k = served.index.header().bucket_bits;
        let j = req.prefix_bits;
        let floor = state.config().min_prefix_bits.min(k);
        if j > k {
            return Err(Refusal::PrefixAboveBucketBits {
                prefix_bits: j,
                bucket_bits: k,
            });
        }
        if j < floor {
            return Err(Refusal::PrefixBelowFloor {
                prefix_bits: j,
                floor,
            });
        }
        let mut prefixes = req.prefixes;
        if j == 0 && prefixes.is_empty() {
            prefixes.push(0);
        }
        let max = state.config().max_prefixes;
        if prefixes.len() > max as usize {
            return Err(Refusal::TooManyPrefixes {
                len: prefixes.len(),
                max,
            });
        }
        let mut seen = HashSet::with_capacity(prefixes.len());
        for (index, &prefix) in prefixes.iter().enumerate() {
            if j < 32 && prefix >> j != 0 {
                return Err(Refusal::PrefixDoesNotFit {
                    index,
                    prefix,
                    prefix_bits: j,
                });
            }
            if !seen.insert(prefix) {
                return Err(Refusal::PrefixRepeated { index, prefix });
            }
        }
        let per_prefix = 1u64 << (k - j);
        let payload_len = u64::from(served.index.header().payload_len);
        let bytes = prefixes.len() as u64 * per_prefix * payload_len;
        state.charge_bytes(&caller, bytes).await?;
        state.metrics.add_bucket_bytes(bytes);
        let index = served.index.clone();
        let chunks = prefixes
            .into_iter()
            .flat_map(move |p| proto::buckets_under_prefix(p, j, k))
            .map(move |b| {
                index
                    .bucket_bytes(b)
                    .zip(index.bucket_proof(b))
                    .map(|(payload, bucket_proof)| BucketChunk {
                        bucket: b,
                        payload,
                        bucket_proof,
                    })
                    .ok_or_else(|| {
                        Refusal::Internal(ServerError::Bug(
                            "a bucket in range has no payload or proof",
                        ))
                        .into()
                    })
            });
        Ok(Box::pin(tokio_stream::iter(chunks)))
    }
}

impl Service {
    /// GetPirSetup: the scheme, the shape and the public data of the
    /// served index's PIR database, charged as a download of its bytes.
    async fn pir_setup(&self, req: Request<GetPirSetupRequest>) -> Result<PirSetup, Refusal> {
        let state = &self.state;
        let caller = state.authenticate(&req, true).await?;
        let served = state.current();
        state.check_index_id(&served, &req.get_ref().index_id)?;
        let pir = served.pir.as_ref().ok_or(Refusal::PirOff)?;
        let public = pir.public_data();
        state.charge_bytes(&caller, public.len() as u64).await?;
        state.metrics.add_bucket_bytes(public.len() as u64);
        let shape = pir.shape();
        let len =
            |n: usize| u32::try_from(n).map_err(|_| ServerError::Bug("a PIR size over 4 GiB"));
        Ok(PirSetup {
            index_id: served.index.index_id().to_vec(),
            scheme: pir.scheme().into(),
            rows: len(shape.rows())?,
            instances: len(shape.instances)?,
            public_data: public.to_vec(),
            keys_len: len(pir.keys_len())?,
            query_len: len(pir.query_len())?,
            answer_len: len(pir.answer_len())?,
        })
    }

    /// PirQuery: sizes and index id checked, one PIR answer charged, then
    /// one pass over the database on the rayon pool. Nothing about the
    /// query is logged: the server has no row to log.
    async fn pir_answer(&self, req: Request<PirQueryRequest>) -> Result<PirAnswer, Refusal> {
        let state = &self.state;
        let caller = state.caller(&req, Call::Pir).await?;
        let served = state.current();
        let req = req.into_inner();
        state.check_index_id(&served, &req.index_id)?;
        let pir = served.pir.clone().ok_or(Refusal::PirOff)?;
        for (what, got, want) in [
            ("keys", req.keys.len(), pir.keys_len()),
            ("query", req.query.len(), pir.query_len()),
        ] {
            if got != want {
                return Err(Refusal::InvalidPirQuery(format!(
                    "{what} must be {want} bytes, got {got}"
                )));
            }
        }
        let slot = state.pir_slot().ok_or(Refusal::QuotaExhausted {
            what: "PIR answers in flight (server busy)",
            retry_after: std::time::Duration::from_secs(1),
        })?;
        state.charge_pir(&caller).await?;
        let started = std::time::Instant::now();
        let answer = on_pool(move || {
            let _slot = slot;
            pir.answer(&req.keys, &req.query)
        })
        .await?;
        let answer = match answer {
            Ok(a) => a,
            Err(PirError::Invalid(why)) => return Err(Refusal::InvalidPirQuery(why)),
            Err(PirError::Failed(why)) => return Err(ServerError::Pir(why).into()),
        };
        state.metrics.add_pir_answer(started.elapsed());
        tracing::debug!(api_key = %caller.name, "answered a PIR query");
        Ok(PirAnswer { answer })
    }
}

/// Elements per decoding chunk: one task of the rayon pool.
const DECODE_CHUNK: usize = 256;

/// Decodes a batch whose lengths are checked, in chunks over the rayon
/// pool. A chunk stops at its first bad element, and every chunk stops once
/// it is past a bad element another has found, so the work after the first
/// bad element is at most one chunk per thread; the refusal names the first
/// bad element (chunks before it run to their end, and may find an earlier
/// one).
fn decode_batch(wire: &[Vec<u8>]) -> Result<Vec<BlindedElement>, Refusal> {
    let first_bad = AtomicUsize::new(usize::MAX);
    let chunks: Vec<Option<Vec<BlindedElement>>> = wire
        .par_chunks(DECODE_CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let mut out = Vec::with_capacity(chunk.len());
            for (i, bytes) in chunk.iter().enumerate() {
                let index = c * DECODE_CHUNK + i;
                if first_bad.load(Ordering::Relaxed) < index {
                    return None;
                }
                match BlindedElement::from_bytes(bytes) {
                    Ok(e) => out.push(e),
                    Err(_) => {
                        first_bad.fetch_min(index, Ordering::Relaxed);
                        return None;
                    }
                }
            }
            Some(out)
        })
        .collect();
    let index = first_bad.into_inner();
    if index != usize::MAX {
        return Err(Refusal::InvalidElement { index });
    }
    Ok(chunks.into_iter().flatten().flatten().collect())
}

/// Runs `f` on the rayon pool and awaits its result.
async fn on_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Refusal> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await
        .map_err(|_| ServerError::Bug("a rayon task ended without an answer").into())
}

impl Service {
    /// A refusal as its status (the one mapping, in `error.rs`), counted by
    /// reason.
    fn refuse(&self, r: Refusal) -> Status {
        self.state.metrics.refused(r.reason());
        r.into()
    }
}

#[tonic::async_trait]
impl BreachCheck for Service {
    async fn get_index_info(
        &self,
        req: Request<GetIndexInfoRequest>,
    ) -> Result<Response<IndexInfo>, Status> {
        mark_entered(req.extensions());
        let info = self.index_info(&req).await.map_err(|r| self.refuse(r))?;
        Ok(Response::new(info))
    }

    async fn evaluate(
        &self,
        req: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        mark_entered(req.extensions());
        let answer = self.evaluate_batch(req).await.map_err(|r| self.refuse(r))?;
        Ok(Response::new(answer))
    }

    type GetBucketsStream = BucketStream;

    async fn get_buckets(
        &self,
        req: Request<GetBucketsRequest>,
    ) -> Result<Response<Self::GetBucketsStream>, Status> {
        mark_entered(req.extensions());
        let stream = self.bucket_stream(req).await.map_err(|r| self.refuse(r))?;
        Ok(Response::new(stream))
    }

    async fn get_pir_setup(
        &self,
        req: Request<GetPirSetupRequest>,
    ) -> Result<Response<PirSetup>, Status> {
        mark_entered(req.extensions());
        let setup = self.pir_setup(req).await.map_err(|r| self.refuse(r))?;
        Ok(Response::new(setup))
    }

    async fn pir_query(
        &self,
        req: Request<PirQueryRequest>,
    ) -> Result<Response<PirAnswer>, Status> {
        mark_entered(req.extensions());
        let answer = self.pir_answer(req).await.map_err(|r| self.refuse(r))?;
        Ok(Response::new(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(n: usize) -> Vec<Vec<u8>> {
        let inputs: Vec<String> = (0..n).map(|i| format!("+86137{i:08}")).collect();
        let (_, b) =
            proto::blind_batch(proto::Mode::Voprf, &inputs, &mut rand::rng()).expect("blind");
        b.iter().map(|x| x.to_bytes().to_vec()).collect()
    }

    #[test]
    fn decode_batch_names_the_first_bad_element_across_chunks() {
        let good = elements(3 * DECODE_CHUNK);
        assert_eq!(decode_batch(&good).expect("all valid").len(), good.len());
        for bad in [
            vec![5, 2 * DECODE_CHUNK + 1],
            vec![DECODE_CHUNK + 3, 10],
            vec![0],
        ] {
            let mut batch = good.clone();
            for &i in &bad {
                batch[i] = vec![0xFF; 32];
            }
            let first = *bad.iter().min().expect("one");
            match decode_batch(&batch) {
                Err(Refusal::InvalidElement { index }) => assert_eq!(index, first, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
