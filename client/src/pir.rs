//! Zero-leakage bucket fetches by PIR (docs/PROTOCOL.md §10): each bucket a
//! check needs is fetched as one row of the server's PIR database, so the
//! server learns nothing about which bucket (and so which number) it was.
//!
//! The scheme sits behind [`PirScheme`]; [`IpirSp`] is `ipir-sp` (YPIR+SP
//! with InspiRING packing) at its pinned `simplepir-p14-v1` profile. The
//! client trusts nothing of the server's setup but its public data: the
//! shape must be the one the pinned index's layout gives, every size must
//! be the one the profile gives, and the scheme's public setup seed is
//! derived here from the pinned index id. A decoded row is checked like a
//! `GetBuckets` chunk (padding, Merkle proof, strict decoding), so a server
//! answering from another row, or with a tampered one, is an error, never
//! "not found".

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use breachcheck_proto::pb::{IndexInfo, PirSetup};
use breachcheck_proto::{PIR_SYMBOL_BITS, PirShape, pir_setup_seed, symbols_to_bytes};
use ipir_sp::client::{ClientSeed, PublicQuerySetup};
use ipir_sp::modulus_switch::{published_c1_len, recover_published_c1, response_body_len};
use ipir_sp::serialize::{serialize_packing_keys, serialized_packing_keys_len};
use ipir_sp::{IPIRClient, ProductionSimplePirParams, SimplePirProfile};
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};

/// The scheme [`IpirSp`] speaks, as `PirSetup.scheme` must name it.
pub const IPIR_SP_SCHEME: &str = "ipir-sp/simplepir-p14-v1";

/// One query: what is sent, and the secret that decodes its answer (wiped
/// on drop).
pub struct PirQuery {
    /// The key material sent with it.
    pub keys: Vec<u8>,
    /// The encrypted row selector.
    pub query: Vec<u8>,
    secret: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for PirQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PirQuery").finish_non_exhaustive()
    }
}

/// A PIR scheme's client side, for one index.
pub trait PirScheme: Send + Sync + fmt::Debug {
    /// The index id this client is for.
    fn index_id(&self) -> &[u8];
    /// The rows' shape.
    fn shape(&self) -> PirShape;
    /// Bytes of an honest answer.
    fn answer_len(&self) -> usize;
    /// Bytes one query sends and receives (keys, selector, answer).
    fn exchange_len(&self) -> usize;
    /// A fresh query for `row`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Pir`] if the scheme fails.
    fn query(&self, row: u32) -> Result<PirQuery>;
    /// The row bytes of `answer` to `query`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Pir`] for an answer of the wrong length or one that
    /// does not decode.
    fn decode(&self, query: &PirQuery, answer: &[u8]) -> Result<Vec<u8>>;
}

/// The `ipir-sp` client of one index.
pub struct IpirSp {
    client: IPIRClient,
    setup: PublicQuerySetup,
    published: Vec<Vec<u64>>,
    shape: PirShape,
    index_id: Vec<u8>,
    /// Bytes of an honest answer, and of keys, query and answer together.
    answer_len: usize,
    exchange_len: usize,
}

impl fmt::Debug for IpirSp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpirSp")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

fn pir_err(why: impl Into<String>) -> ClientError {
    ClientError::Pir(why.into())
}

/// The profile of a shape.
fn profile(shape: &PirShape) -> Result<ProductionSimplePirParams> {
    let p = ProductionSimplePirParams::new(
        shape.rows() as u64,
        (shape.row_symbols() * PIR_SYMBOL_BITS) as u64,
        SimplePirProfile::P14,
    )
    .map_err(|e| pir_err(format!("no ipir-sp profile for this index: {e}")))?;
    if p.ypir().db_rows != shape.rows() || p.ypir().instances != shape.instances {
        return Err(pir_err("ipir-sp chose another shape than the index's"));
    }
    Ok(p)
}

/// Bytes of an honest `PirSetup` for the index `info` describes, at most.
///
/// # Errors
///
/// [`ClientError::Pir`] when the index's layout does not suit PIR.
pub fn max_setup_bytes(info: &IndexInfo) -> Result<usize> {
    let shape =
        PirShape::new(info.bucket_bits, info.payload_len).map_err(|e| pir_err(e.to_string()))?;
    let p = profile(&shape)?;
    Ok(shape.instances * published_c1_len(p.rlwe().d, p.rlwe().q) + 4096)
}

impl IpirSp {
    /// The client for the index `info` describes (already checked against
    /// the pins), from the server's `setup`, which must agree with it in
    /// every size.
    ///
    /// # Errors
    ///
    /// [`ClientError::Pir`] for a setup of another scheme, index or shape.
    pub fn new(info: &IndexInfo, setup: &PirSetup) -> Result<Self> {
        if setup.scheme != IPIR_SP_SCHEME {
            return Err(pir_err(format!(
                "the server offers PIR scheme {:?}; this client speaks {IPIR_SP_SCHEME}",
                setup.scheme
            )));
        }
        if setup.index_id != info.index_id {
            return Err(pir_err("the PIR setup is for another index"));
        }
        let shape = PirShape::new(info.bucket_bits, info.payload_len)
            .map_err(|e| pir_err(e.to_string()))?;
        if setup.rows as usize != shape.rows() || setup.instances as usize != shape.instances {
            return Err(pir_err("the PIR setup's shape is not the index's"));
        }
        let p = profile(&shape)?;
        let (rlwe, ypir) = (p.rlwe(), p.ypir());
        let keys_len = serialized_packing_keys_len(rlwe);
        let query_len = (ypir.db_rows * ypir.query_bits).div_ceil(8);
        let answer_len = shape.instances * response_body_len(rlwe.d, ypir.q_prime_1);
        let public_len = shape.instances * published_c1_len(rlwe.d, rlwe.q);
        if setup.keys_len as usize != keys_len
            || setup.query_len as usize != query_len
            || setup.answer_len as usize != answer_len
            || setup.public_data.len() != public_len
        {
            return Err(pir_err("the PIR setup's sizes are not the profile's"));
        }
        let published = recover_published_c1(&setup.public_data, rlwe.d, shape.instances, rlwe.q);
        let client = IPIRClient::new(&p);
        // The seed is derived here from the pinned index id: the server
        // never picks the client's setup.
        let seed = pir_setup_seed(&info.index_id);
        let setup = catch_unwind(AssertUnwindSafe(|| {
            client.generate_public_query_setup_simplepir_from_seed(seed)
        }))
        .map_err(|_| pir_err("ipir-sp refused the setup seed"))?;
        Ok(IpirSp {
            client,
            setup,
            published,
            shape,
            index_id: info.index_id.clone(),
            answer_len,
            exchange_len: keys_len + query_len + answer_len,
        })
    }
}

impl PirScheme for IpirSp {
    fn index_id(&self) -> &[u8] {
        &self.index_id
    }

    fn shape(&self) -> PirShape {
        self.shape
    }

    fn answer_len(&self) -> usize {
        self.answer_len
    }

    fn exchange_len(&self) -> usize {
        self.exchange_len
    }

    fn query(&self, row: u32) -> Result<PirQuery> {
        if row as usize >= self.shape.rows() {
            return Err(pir_err("a row past the database"));
        }
        catch_unwind(AssertUnwindSafe(|| {
            let rlwe = self.client.rlwe_params();
            let (query, keys, seed) = self
                .client
                .generate_fresh_query_simplepir(&self.setup, row as usize);
            let keys = serialize_packing_keys(rlwe, &keys)
                .map_err(|e| pir_err(format!("packing keys: {e}")))?;
            let query = query.to_switched_bytes(rlwe.q, self.client.params().query_bits);
            Ok(PirQuery {
                keys,
                query,
                secret: Zeroizing::new(*seed.expose_bytes()),
            })
        }))
        .unwrap_or_else(|_| Err(pir_err("ipir-sp failed to make a query")))
    }

    fn decode(&self, query: &PirQuery, answer: &[u8]) -> Result<Vec<u8>> {
        if answer.len() != self.answer_len() {
            return Err(pir_err(format!(
                "a PIR answer of {} bytes, expected {}",
                answer.len(),
                self.answer_len()
            )));
        }
        let seed = ClientSeed::from_bytes(*query.secret);
        let symbols = catch_unwind(AssertUnwindSafe(|| {
            self.client
                .decode_response_simplepir_raw(&seed, &self.published, answer)
        }))
        .map_err(|_| pir_err("ipir-sp could not decode the answer"))?;
        let bytes = symbols_to_bytes(&symbols)
            .ok_or_else(|| pir_err("a decoded PIR symbol out of range"))?;
        if bytes.len() != self.shape.row_len() {
            return Err(pir_err("a decoded PIR row of the wrong length"));
        }
        Ok(bytes)
    }
}
