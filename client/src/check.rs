//! [`Client`]: a connected client, and [`Client::check`] and
//! [`Client::check_stream`], which put the protocol's steps together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use breachcheck_proto::{Output, PhoneNumber, Region};
use tokio::sync::mpsc;

use crate::buckets::{BucketCache, SentBits};
use crate::builder::ClientBuilder;
use crate::checks::{breach_refs, served_key};
use crate::display::anonymity_set;
use crate::error::{ClientError, Result};
use crate::evaluate::Evaluator;
use crate::pace::Pacer;
use crate::pir::{IpirSp, PirScheme, max_setup_bytes};
use crate::rpc::Rpc;
use crate::task::{Incomplete, blocking};
use crate::trust::{Trust, TrustFile};
use crate::{BreachRef, CheckResult, IndexInfo, STREAM_CHUNK};

/// A connected client. Cheap to clone; clones share the pin and the caches.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) region: Option<Region>,
    pub(crate) rpc: Rpc,
    pub(crate) buckets: BucketCache,
    pub(crate) sent: SentBits,
    pub(crate) pacer: Arc<Pacer>,
    pub(crate) trust: Option<TrustFile>,
    pub(crate) opts: ClientBuilder,
    pub(crate) state: Mutex<State>,
    /// The PIR client of the current index (PIR mode only), made from its
    /// GetPirSetup once per index.
    pub(crate) pir: tokio::sync::Mutex<Option<Arc<dyn PirScheme>>>,
}

/// What the last GetIndexInfo established: the index, and the evaluator
/// for it under the pinned key.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) info: IndexInfo,
    pub(crate) evaluator: Option<Evaluator>,
    pub(crate) first_use: bool,
}

impl Client {
    /// Starts building a client for `endpoint` (`http://host:port` or
    /// `https://host:port`); [`ClientBuilder::replica`] adds more servers.
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(endpoint.into())
    }

    /// The index description last fetched.
    pub fn info(&self) -> IndexInfo {
        self.lock().info.clone()
    }

    /// Fetches `IndexInfo` again and checks it: the suite, the index id's
    /// commitment and layout, the pinned index id, the trust file, and the
    /// key against the pin.
    ///
    /// # Errors
    ///
    /// [`ClientError::IndexMismatch`] if an index id is pinned and this is
    /// another; [`ClientError::UnsupportedIndex`] for another suite or mode,
    /// or a layout or index id that cannot be trusted;
    /// [`ClientError::TrustedKeyChanged`] or [`ClientError::TrustFile`];
    /// [`ClientError::KeyMismatch`] if the key is not the pinned one.
    pub async fn refresh_info(&self) -> Result<IndexInfo> {
        let info = self.inner.rpc.index_info().await?;
        if let Some(pin) = self.inner.opts.pinned_index
            && info.index_id != pin
        {
            return Err(ClientError::IndexMismatch {
                pinned: hex::encode(pin),
                served: hex::encode(&info.index_id),
            });
        }
        let served = served_key(&info)?;
        crate::checks::check_layout(&info)?;
        // Every replica serves the one key: each URL's record must match it
        // (a replica added to the list is recorded, never trusted instead).
        let mut first_use = false;
        if let Some(t) = &self.inner.trust {
            for url in self.inner.rpc.urls() {
                first_use |= t.check(url, &served)? == Trust::FirstUse;
            }
        }
        let mut st = self.lock();
        let pinned = st.evaluator.as_ref().map(Evaluator::pinned);
        let pinned = crate::checks::pin(pinned.or(self.inner.opts.pinned), served)?;
        let (rpc, n) = (self.inner.rpc.clone(), self.inner.opts.concurrency);
        let pacer = self.inner.pacer.clone();
        st.evaluator = Some(Evaluator::new(rpc, pacer, &info, &pinned, n)?);
        st.info = info.clone();
        st.first_use |= first_use;
        drop(st);
        self.inner.buckets.use_index(&info.index_id);
        Ok(info)
    }

    /// Whether this client recorded the server's key in its trust file (a
    /// first use), rather than finding it there.
    pub fn trusted_on_first_use(&self) -> bool {
        self.lock().first_use
    }

    /// The trust file, if the client has one.
    pub fn trust_file(&self) -> Option<&std::path::Path> {
        self.inner.trust.as_ref().map(TrustFile::path)
    }

    /// The prefix bits this client asks by, for the current index.
    ///
    /// # Errors
    ///
    /// [`ClientError::PrefixBitsRefused`] when the server's floor is above
    /// what the client allows ([`ClientBuilder::max_prefix_bits`]).
    pub fn prefix_bits(&self) -> Result<u32> {
        let o = &self.inner.opts;
        crate::checks::prefix_bits(o.prefix_bits, o.max_prefix_bits, &self.info())
    }

    /// The most prefix bits this client has sent in a GetBuckets request,
    /// `None` if it sent none (every bucket came from its caches). A whole
    /// index download is 0: the server learned nothing.
    pub fn prefix_bits_sent(&self) -> Option<u32> {
        self.inner.sent.get()
    }

    /// What the server learns from a check at the current settings: the
    /// prefix bits and the size of the anonymity set of each number.
    ///
    /// # Errors
    ///
    /// As [`Client::prefix_bits`].
    pub fn privacy_cost(&self) -> Result<(u32, f64)> {
        let j = self.prefix_bits()?;
        Ok((j, anonymity_set(j)))
    }

    /// Checks `numbers`, returning one result per input in input order.
    /// Numbers that do not parse are reported and never sent.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`]: a check either answers every number or fails
    /// ([`Client::check_stream`] also delivers the results obtained before
    /// a failure).
    pub async fn check<I, S>(&self, numbers: I) -> Result<Vec<CheckResult>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let inputs: Vec<String> = numbers.into_iter().map(|s| s.as_ref().to_owned()).collect();
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(STREAM_CHUNK) {
            // A task of its own: a panic in it is an error, not a lost answer.
            let checked = self.clone().check_chunk(chunk.to_vec());
            let results = crate::task::run("check", checked).await;
            out.extend(results.map_err(|i: Incomplete<CheckResult>| i.error)?);
        }
        Ok(out)
    }

    /// Checks a stream of numbers with bounded memory, sending results (in
    /// input order) to the returned channel as each chunk completes. A
    /// failure, a panic included, is the last item before the channel
    /// closes: the stream never just ends short. Before it come the results
    /// of every input whose evaluation was paid for (those before the first
    /// number the failure left without an answer).
    pub fn check_stream<I>(&self, numbers: I) -> mpsc::Receiver<Result<CheckResult>>
    where
        I: IntoIterator<Item = String> + Send + 'static,
        I::IntoIter: Send + 'static,
    {
        let client = self.clone();
        crate::task::stream_chunks("check", numbers.into_iter(), STREAM_CHUNK, move |chunk| {
            client.clone().check_chunk(chunk)
        })
    }

    /// Checks one chunk of inputs (by value: it runs as a task of its own).
    /// On a failure, the results of the inputs before the first one left
    /// without an answer come with the error.
    async fn check_chunk(
        self,
        inputs: Vec<String>,
    ) -> std::result::Result<Vec<CheckResult>, Incomplete<CheckResult>> {
        let parse = |s: &String| PhoneNumber::parse(s, self.inner.region);
        let parsed: Vec<_> = inputs.iter().map(parse).collect();
        // Distinct numbers, each evaluated once, in order of first
        // appearance: batches follow the input, so the answered part of a
        // failed chunk is a prefix of it.
        let mut position = HashMap::new();
        let mut distinct = Vec::new();
        for n in parsed.iter().flatten() {
            position.entry(*n).or_insert_with(|| {
                distinct.push(*n);
                distinct.len() - 1
            });
        }
        // Refused here, before anything is sent, if the server's floor is
        // above what the caller allows (PIR sends no prefix).
        if !self.inner.opts.pir {
            self.prefix_bits()?;
        }
        // After the index was replaced (NOT_FOUND, FAILED_PRECONDITION),
        // refetch IndexInfo and look up once more. Verified outputs survive a
        // replacement under the same (pinned) key: no quota is spent twice.
        let (mut outputs, mut refreshed) = (Vec::new(), false);
        let (found, error) = loop {
            match self.lookup(&distinct, &mut outputs).await {
                Err(e) if e.is_stale_index() && !refreshed => refreshed = true,
                Ok((_, Some(e))) if e.is_stale_index() && !refreshed => refreshed = true,
                r => break r?,
            }
            self.refresh_info().await?;
        };
        let answered = outputs.len();
        let results = inputs
            .into_iter()
            .zip(parsed)
            .map_while(|(input, p)| {
                let n = p.as_ref().ok();
                if n.is_some_and(|n| position.get(n).is_none_or(|&i| i >= answered)) {
                    return None;
                }
                let breaches = n.and_then(|n| found.get(n));
                Some(CheckResult {
                    input,
                    number: n.map(|n| n.as_str().to_owned()),
                    found: breaches.is_some(),
                    breaches: breaches.cloned().unwrap_or_default(),
                    error: p.err().map(|e| e.to_string()),
                })
            })
            .collect();
        match error {
            None => Ok(results),
            Some(error) => Err(Incomplete {
                done: results,
                error,
            }),
        }
    }

    /// Evaluates the `numbers` that `outputs` lacks while fetching their
    /// buckets, then looks up those with outputs: the found ones, with their
    /// breaches, and the error that left the others without an output.
    async fn lookup(
        &self,
        numbers: &[PhoneNumber],
        outputs: &mut Vec<Output>,
    ) -> Result<(Found, Option<ClientError>)> {
        let (info, evaluator) = {
            let st = self.lock();
            let no_pin = || ClientError::UnsupportedIndex("no pinned key".into());
            (st.info.clone(), st.evaluator.clone().ok_or_else(no_pin)?)
        };
        let (j, pir) = match self.inner.opts.pir {
            true => (0, Some(self.pir_scheme(&info).await?)),
            false => (self.prefix_bits()?, None),
        };
        let rest = &numbers[outputs.len().min(numbers.len())..];
        let evaluating = evaluator.evaluate(rest);
        let fetching = (self.inner.buckets).fetch(
            &self.inner.rpc,
            &info,
            j,
            numbers,
            &self.inner.sent,
            pir.as_ref(),
        );
        tokio::pin!(evaluating, fetching);
        // Whichever fails first for good ends the lookup early; an
        // evaluation that answered part of the numbers still needs the
        // buckets of that part.
        let (evaluated, fetched) = tokio::select! {
            e = &mut evaluating => {
                if e.outputs.is_empty() && e.error.is_some() {
                    (e, None)
                } else {
                    (e, Some(fetching.await))
                }
            }
            f = &mut fetching => match f {
                // The index changed: the caller refetches IndexInfo and looks
                // up again. An evaluation in flight is still paid for, so
                // keep its verified outputs (same key) rather than drop
                // them and be charged twice.
                Err(err) if err.is_stale_index() => {
                    outputs.extend(evaluating.await.outputs);
                    return Err(err);
                }
                Err(err) => return Err(err),
                ok => (evaluating.await, Some(ok)),
            },
        };
        // Keep the outputs even when the buckets failed: a retry reuses them.
        outputs.extend(evaluated.outputs);
        let Some(fetched) = fetched else {
            return Ok((Found::new(), evaluated.error));
        };
        let fetched = fetched?;
        let mut found = HashMap::new();
        for (n, out) in numbers.iter().zip(outputs.iter()) {
            if let Some(mask) = fetched.breach_mask(n, out)? {
                found.insert(*n, breach_refs(&info, mask));
            }
        }
        Ok((found, evaluated.error))
    }

    /// The PIR client of `info`'s index: the one made before, or one made
    /// from a fresh GetPirSetup, checked against `info`.
    async fn pir_scheme(&self, info: &IndexInfo) -> Result<Arc<dyn PirScheme>> {
        let mut slot = self.inner.pir.lock().await;
        if let Some(s) = slot.as_ref()
            && s.index_id() == info.index_id.as_slice()
        {
            return Ok(s.clone());
        }
        let setup = self
            .inner
            .rpc
            .pir_setup(&info.index_id, max_setup_bytes(info)?)
            .await?;
        let info_owned = info.clone();
        let scheme = blocking("pir setup", move || IpirSp::new(&info_owned, &setup)).await??;
        let scheme: Arc<dyn PirScheme> = Arc::new(scheme);
        *slot = Some(scheme.clone());
        Ok(scheme)
    }

    /// Whether the client is in PIR mode, and the PIR queries it sent.
    pub fn pir_queries(&self) -> Option<u64> {
        self.inner.opts.pir.then(|| self.inner.sent.pir_queries())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        let state = &self.inner.state;
        state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The numbers found, with the breaches of each.
type Found = HashMap<PhoneNumber, Vec<BreachRef>>;
