//! RFC 9497 OPRF and VOPRF over ristretto255-SHA512, written on curve25519-dalek.
//!
//! Only the two modes breachcheck uses are here: OPRF (0x00) and VOPRF (0x01).
//! Names follow the RFC: [`blind`], [`ServerKey::blind_evaluate`],
//! [`finalize`], [`ServerKey::evaluate`], [`ServerKey::derive_key_pair`].
//!
//! # Speed
//!
//! Every function here works on whole batches, because the protocol does and
//! because three tricks only pay off on a batch:
//!
//! * **Batch compression.** `RistrettoPoint::double_and_compress_batch` gives
//!   the encoding of `2·P` for many points at ~0.5 µs each instead of ~4.5 µs for
//!   `compress`. So every secret multiplication is done by `k/2` instead of `k`
//!   and the doubling comes free with the encoding.
//! * **Batch inversion** of the client's blinds (one inversion per batch).
//! * **Decode once.** Elements keep their wire bytes next to the point, so the
//!   DLEQ transcript never re-encodes what it already holds.
//!
//! # Constant time
//!
//! Every multiplication by a secret scalar (the server key `k`, the proof
//! nonce `r`, the client's blinds and their inverses) uses dalek's
//! constant-time `Scalar * RistrettoPoint`. Variable-time multiscalar
//! multiplication is used only for the composite elements `M` and `Z` and in
//! proof verification, whose scalars and points are all public (RFC 9497 §7.4).

use std::fmt;
use std::sync::LazyLock;

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand::CryptoRng;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::ProtocolError;

/// The ciphersuite identifier (RFC 9497 §4.1).
pub const SUITE: &str = "ristretto255-SHA512";
/// Length of a serialized element, `Ne` (RFC 9497 §4.1).
pub const ELEMENT_LEN: usize = 32;
/// Length of a serialized scalar, `Ns` (RFC 9497 §4.1).
pub const SCALAR_LEN: usize = 32;
/// Length of a serialized proof, `c || s`.
pub const PROOF_LEN: usize = 2 * SCALAR_LEN;
/// Length of a PRF output, `Nh` (SHA-512).
pub const OUTPUT_LEN: usize = 64;
/// Longest private input, `2^16 - 1` bytes (RFC 9497 §1.2).
pub const MAX_INPUT_LEN: usize = u16::MAX as usize;
/// Largest batch one DLEQ proof can cover: the composite index is `I2OSP(i, 2)`
/// (RFC 9497 §2.2.1).
pub const MAX_PROOF_BATCH: usize = u16::MAX as usize;

/// A PRF output: 64 bytes of SHA-512.
pub type Output = [u8; OUTPUT_LEN];

/// The protocol variant (RFC 9497 §3.1). It changes the context string, so the
/// same seed and input give different keys and outputs in each mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Base mode, 0x00: no proof.
    Oprf,
    /// Verifiable mode, 0x01: every batch carries a DLEQ proof.
    Voprf,
}

impl Mode {
    /// The mode's one-byte identifier.
    pub const fn id(self) -> u8 {
        match self {
            Mode::Oprf => 0,
            Mode::Voprf => 1,
        }
    }

    /// The mode with this identifier, if it is one implemented here.
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(Mode::Oprf),
            1 => Some(Mode::Voprf),
            _ => None,
        }
    }

    fn dsts(self) -> &'static Dsts {
        match self {
            Mode::Oprf => &OPRF_DSTS,
            Mode::Voprf => &VOPRF_DSTS,
        }
    }
}

/// The domain-separation tags of one mode (RFC 9497 §3.1, §2.2, §3.2.1).
struct Dsts {
    hash_to_group: [u8; 40],
    hash_to_scalar: [u8; 41],
    derive_key_pair: [u8; 41],
    seed: [u8; 33],
}

const fn concat<const N: usize>(a: &[u8], b: &[u8]) -> [u8; N] {
    assert!(a.len() + b.len() == N);
    let mut out = [0u8; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < b.len() {
        out[i + j] = b[j];
        j += 1;
    }
    out
}

// contextString = "OPRFV1-" || I2OSP(mode, 1) || "-" || "ristretto255-SHA512"
const CONTEXT_OPRF: [u8; 28] = concat(b"OPRFV1-\x00-", b"ristretto255-SHA512");
const CONTEXT_VOPRF: [u8; 28] = concat(b"OPRFV1-\x01-", b"ristretto255-SHA512");

const fn dsts(ctx: &[u8; 28]) -> Dsts {
    Dsts {
        hash_to_group: concat(b"HashToGroup-", ctx),
        hash_to_scalar: concat(b"HashToScalar-", ctx),
        // No hyphen after "DeriveKeyPair" (RFC 9497 §3.2.1).
        derive_key_pair: concat(b"DeriveKeyPair", ctx),
        seed: concat(b"Seed-", ctx),
    }
}

static OPRF_DSTS: Dsts = dsts(&CONTEXT_OPRF);
static VOPRF_DSTS: Dsts = dsts(&CONTEXT_VOPRF);

/// SHA-512 state after absorbing `Z_pad = I2OSP(0, 128)`, the first block of
/// every expand_message_xmd call; cloning it saves one compression per hash.
static XMD_PREFIX: LazyLock<Sha512> = LazyLock::new(|| {
    let mut h = Sha512::new();
    h.update([0u8; 128]);
    h
});

/// expand_message_xmd with SHA-512 and `len_in_bytes = 64`, so `ell = 1`
/// (RFC 9380 §5.3.1). `msg` is given in parts to avoid concatenating it.
///
/// ```text
/// msg_prime = Z_pad || msg || I2OSP(64, 2) || I2OSP(0, 1) || DST_prime
/// b_0 = H(msg_prime)
/// b_1 = H(b_0 || I2OSP(1, 1) || DST_prime)
/// ```
fn expand_message_xmd(msg: &[&[u8]], dst: &[u8]) -> [u8; 64] {
    debug_assert!(dst.len() <= 255);
    let dst_len = [dst.len() as u8];
    let mut h = XMD_PREFIX.clone();
    for part in msg {
        h.update(part);
    }
    h.update([0, 64, 0]);
    h.update(dst);
    h.update(dst_len);
    let b0 = h.finalize();
    let mut h = Sha512::new();
    h.update(b0);
    h.update([1]);
    h.update(dst);
    h.update(dst_len);
    h.finalize().into()
}

/// HashToGroup: hash_to_ristretto255 (RFC 9380 App. B) with the mode's DST.
/// Not `RistrettoPoint::hash_from_bytes`, which has no DST and gives other points.
fn hash_to_group(mode: Mode, input: &[u8]) -> Result<RistrettoPoint, ProtocolError> {
    if input.len() > MAX_INPUT_LEN {
        return Err(ProtocolError::InputTooLong);
    }
    let uniform = expand_message_xmd(&[input], &mode.dsts().hash_to_group);
    let point = RistrettoPoint::from_uniform_bytes(&uniform);
    // RFC 9497 §3.3.1: InvalidInputError if the input hashes to the identity.
    if point.is_identity() {
        return Err(ProtocolError::InvalidInput);
    }
    Ok(point)
}

/// HashToScalar: expand_message_xmd then reduce the 64 bytes (little-endian) mod L.
fn hash_to_scalar(msg: &[&[u8]], dst: &[u8]) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&expand_message_xmd(msg, dst))
}

/// `1/2 mod L`: multiplying by `k/2` and then batch-doubling-and-compressing
/// gives the encoding of `k·P` (see the module docs).
static HALF: LazyLock<Scalar> = LazyLock::new(|| Scalar::from(2u64).invert());

/// A decoded element with the wire bytes it came from (or was encoded to).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Element {
    point: RistrettoPoint,
    bytes: [u8; ELEMENT_LEN],
}

impl Element {
    /// DeserializeElement (RFC 9497 §4.1): ristretto255 Decode (RFC 9496
    /// §4.3.1), which rejects non-canonical encodings, plus the rejection of
    /// the identity that RFC 9497 adds.
    fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let bytes: [u8; ELEMENT_LEN] = bytes
            .try_into()
            .map_err(|_| ProtocolError::InvalidElement)?;
        let point = CompressedRistretto(bytes)
            .decompress()
            .ok_or(ProtocolError::InvalidElement)?;
        if point.is_identity() {
            return Err(ProtocolError::InvalidElement);
        }
        Ok(Element { point, bytes })
    }

    /// Computes `scalars[i]·points[i]` for each i, with batch compression.
    /// Every scalar is treated as secret (constant-time multiplication).
    fn mul_batch(scalars: &[Scalar], points: &[RistrettoPoint]) -> Vec<Element> {
        let half = *HALF;
        Self::doubled(
            scalars
                .iter()
                .zip(points)
                .map(|(s, p)| p * (s * half))
                .collect(),
        )
    }

    /// Like [`Element::mul_batch`] with one scalar for all points.
    fn mul_batch_same(scalar: &Scalar, points: &[RistrettoPoint]) -> Vec<Element> {
        let half = Zeroizing::new(scalar * *HALF);
        Self::doubled(points.iter().map(|p| p * *half).collect())
    }

    /// The elements `2·h` for each `h`, encoded with one batch compression.
    fn doubled(halves: Vec<RistrettoPoint>) -> Vec<Element> {
        let encoded = RistrettoPoint::double_and_compress_batch(&halves);
        halves
            .iter()
            .zip(encoded)
            .map(|(h, c)| Element {
                point: h + h,
                bytes: c.to_bytes(),
            })
            .collect()
    }
}

macro_rules! element_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq)]
        pub struct $name(Element);

        impl $name {
            /// Deserializes an element received from the peer.
            ///
            /// # Errors
            ///
            /// [`ProtocolError::InvalidElement`] if `bytes` is not 32 bytes, is
            /// not a canonical ristretto255 encoding, or encodes the identity.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
                Element::decode(bytes).map(Self)
            }

            /// SerializeElement: the 32-byte ristretto255 encoding.
            pub fn to_bytes(&self) -> [u8; ELEMENT_LEN] {
                self.0.bytes
            }

            /// The 32-byte encoding, borrowed.
            pub fn as_bytes(&self) -> &[u8; ELEMENT_LEN] {
                &self.0.bytes
            }
        }

        // Elements are not secret, but they are per-number protocol data that
        // must not end up in logs, so Debug shows no bytes.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    };
}

element_type!(
    /// A blinded element, `blind·HashToGroup(input)`: what the client sends.
    BlindedElement
);
element_type!(
    /// An evaluated element, `k·blindedElement`: what the server returns.
    EvaluatedElement
);
element_type!(
    /// The server's public key `pkS = k·G`, which VOPRF proofs are checked against.
    PublicKey
);

impl PublicKey {
    /// A short human-comparable fingerprint of the key: the first 8 bytes of
    /// BLAKE3 over its encoding, as 4 groups of 4 hex digits.
    pub fn fingerprint(&self) -> String {
        let h = blake3::hash(self.as_bytes());
        let b = h.as_bytes();
        format!(
            "{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

/// A client's secret blinding scalar for one input. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Blind(Scalar);

impl Blind {
    /// Uses a fixed scalar as the blind (for test vectors only).
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InvalidScalar`] if the bytes are not a canonical,
    /// non-zero scalar.
    #[doc(hidden)]
    pub fn from_bytes(bytes: [u8; SCALAR_LEN]) -> Result<Self, ProtocolError> {
        nonzero_scalar(bytes).map(Blind)
    }
}

impl fmt::Debug for Blind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Blind(..)")
    }
}

/// RandomScalar (RFC 9497 §2.1): uniform and non-zero.
fn random_scalar<R: CryptoRng + ?Sized>(rng: &mut R) -> Scalar {
    loop {
        let s = Scalar::random(rng);
        if s != Scalar::ZERO {
            return s;
        }
    }
}

fn canonical_scalar(bytes: [u8; SCALAR_LEN]) -> Result<Scalar, ProtocolError> {
    Option::from(Scalar::from_canonical_bytes(bytes)).ok_or(ProtocolError::InvalidScalar)
}

fn nonzero_scalar(bytes: [u8; SCALAR_LEN]) -> Result<Scalar, ProtocolError> {
    let s = canonical_scalar(bytes)?;
    if s == Scalar::ZERO {
        return Err(ProtocolError::InvalidScalar);
    }
    Ok(s)
}

/// A batched DLEQ proof `(c, s)` (RFC 9497 §2.2).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    c: Scalar,
    s: Scalar,
}

impl Proof {
    /// Deserializes `SerializeScalar(c) || SerializeScalar(s)`.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InvalidScalar`] if `bytes` is not 64 bytes or either
    /// scalar is not canonical (not below the group order).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let bytes: &[u8; PROOF_LEN] = bytes.try_into().map_err(|_| ProtocolError::InvalidScalar)?;
        let mut c = [0u8; SCALAR_LEN];
        let mut s = [0u8; SCALAR_LEN];
        c.copy_from_slice(&bytes[..SCALAR_LEN]);
        s.copy_from_slice(&bytes[SCALAR_LEN..]);
        Ok(Proof {
            c: canonical_scalar(c)?,
            s: canonical_scalar(s)?,
        })
    }

    /// Serializes the proof as `c || s`, 64 bytes.
    pub fn to_bytes(&self) -> [u8; PROOF_LEN] {
        let mut out = [0u8; PROOF_LEN];
        out[..SCALAR_LEN].copy_from_slice(self.c.as_bytes());
        out[SCALAR_LEN..].copy_from_slice(self.s.as_bytes());
        out
    }
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Proof(..)")
    }
}

/// The result of a batch BlindEvaluate.
#[derive(Debug, Clone)]
pub struct BlindEvaluation {
    /// One evaluated element per blinded element, in the same order.
    pub elements: Vec<EvaluatedElement>,
    /// One DLEQ proof for the whole batch (VOPRF mode only).
    pub proof: Option<Proof>,
}

/// The server's OPRF key pair. The secret scalar is zeroized on drop and never
/// printed by `Debug`.
#[derive(Clone, ZeroizeOnDrop)]
pub struct ServerKey {
    sk: Scalar,
    #[zeroize(skip)]
    mode: Mode,
    #[zeroize(skip)]
    pk: PublicKey,
    /// `SHA-512(LP(Ser(pkS)) || LP("Seed-" || contextString))`, fixed per key.
    #[zeroize(skip)]
    composite_seed: [u8; 64],
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("mode", &self.mode)
            .field("public_key", &self.pk.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ServerKey {
    fn from_scalar(mode: Mode, sk: Scalar) -> Self {
        let pk_point = RistrettoPoint::mul_base(&sk);
        let pk = PublicKey(Element {
            point: pk_point,
            bytes: pk_point.compress().to_bytes(),
        });
        let composite_seed = composite_seed(mode, &pk);
        ServerKey {
            sk,
            mode,
            pk,
            composite_seed,
        }
    }

    /// DeriveKeyPair (RFC 9497 §3.2.1): a deterministic key from a 32-byte
    /// secret seed and public `info`.
    ///
    /// ```text
    /// deriveInput = seed || I2OSP(len(info), 2) || info
    /// for counter in 0..=255:
    ///     skS = HashToScalar(deriveInput || I2OSP(counter, 1), DST = "DeriveKeyPair" || contextString)
    ///     if skS != 0: return (skS, ScalarMultGen(skS))
    /// raise DeriveKeyPairError
    /// ```
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InputTooLong`] if `info` is longer than 65535 bytes;
    /// [`ProtocolError::DeriveKeyPair`] if all 256 counters give zero.
    pub fn derive_key_pair(
        mode: Mode,
        seed: &[u8; 32],
        info: &[u8],
    ) -> Result<Self, ProtocolError> {
        let info_len = u16::try_from(info.len()).map_err(|_| ProtocolError::InputTooLong)?;
        let dst = &mode.dsts().derive_key_pair;
        for counter in 0..=255u8 {
            let sk = hash_to_scalar(&[seed, &info_len.to_be_bytes(), info, &[counter]], dst);
            if sk != Scalar::ZERO {
                return Ok(Self::from_scalar(mode, sk));
            }
        }
        Err(ProtocolError::DeriveKeyPair)
    }

    /// A fresh random key.
    pub fn random<R: CryptoRng + ?Sized>(mode: Mode, rng: &mut R) -> Self {
        Self::from_scalar(mode, random_scalar(rng))
    }

    /// Restores a key from its 32-byte secret scalar.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InvalidScalar`] if the bytes are not a canonical,
    /// non-zero scalar.
    pub fn from_secret_bytes(mode: Mode, bytes: &[u8; SCALAR_LEN]) -> Result<Self, ProtocolError> {
        let mut copy = Zeroizing::new(*bytes);
        let sk = nonzero_scalar(*copy)?;
        copy.zeroize();
        Ok(Self::from_scalar(mode, sk))
    }

    /// The 32-byte secret scalar, in a buffer that zeroizes itself.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; SCALAR_LEN]> {
        Zeroizing::new(self.sk.to_bytes())
    }

    /// The public key `pkS`.
    pub fn public_key(&self) -> &PublicKey {
        &self.pk
    }

    /// The mode this key was made for.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// BlindEvaluate for a whole batch (RFC 9497 §3.3.1, §3.3.2): the evaluated
    /// elements and, in VOPRF mode, one batched proof over all of them.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::EmptyBatch`] for an empty batch,
    /// [`ProtocolError::BatchTooLarge`] above [`MAX_PROOF_BATCH`].
    pub fn blind_evaluate<R: CryptoRng + ?Sized>(
        &self,
        blinded: &[BlindedElement],
        rng: &mut R,
    ) -> Result<BlindEvaluation, ProtocolError> {
        check_batch(blinded.len())?;
        let elements = self.blind_evaluate_elements(blinded);
        let proof = match self.mode {
            Mode::Oprf => None,
            Mode::Voprf => Some(self.generate_proof(blinded, &elements, rng)?),
        };
        Ok(BlindEvaluation { elements, proof })
    }

    /// The multiplication half of BlindEvaluate, `k·blindedElement` for each
    /// element, without a proof. Callers that spread a batch over threads call
    /// this per chunk and then [`ServerKey::generate_proof`] once.
    pub fn blind_evaluate_elements(&self, blinded: &[BlindedElement]) -> Vec<EvaluatedElement> {
        let points: Vec<RistrettoPoint> = blinded.iter().map(|b| b.0.point).collect();
        Element::mul_batch_same(&self.sk, &points)
            .into_iter()
            .map(EvaluatedElement)
            .collect()
    }

    /// GenerateProof (RFC 9497 §2.2.1) with `A = G`, `B = pkS`, `C = blinded`,
    /// `D = evaluated`, one proof for the whole batch.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::EmptyBatch`], [`ProtocolError::BatchTooLarge`], or
    /// [`ProtocolError::BatchLengthMismatch`] if the two lists differ in length.
    pub fn generate_proof<R: CryptoRng + ?Sized>(
        &self,
        blinded: &[BlindedElement],
        evaluated: &[EvaluatedElement],
        rng: &mut R,
    ) -> Result<Proof, ProtocolError> {
        let r = Zeroizing::new(random_scalar(rng));
        self.generate_proof_with_nonce(blinded, evaluated, &r)
    }

    fn generate_proof_with_nonce(
        &self,
        blinded: &[BlindedElement],
        evaluated: &[EvaluatedElement],
        r: &Scalar,
    ) -> Result<Proof, ProtocolError> {
        check_batch(blinded.len())?;
        if blinded.len() != evaluated.len() {
            return Err(ProtocolError::BatchLengthMismatch);
        }
        // ComputeCompositesFast: M = Σ d_i·C_i over public data, Z = k·M.
        let m = composite_m(self.mode, &self.composite_seed, blinded, evaluated);
        let z = m * self.sk;
        // t2 = r·A, t3 = r·M (r is secret: constant-time).
        let t2 = RistrettoPoint::mul_base(r);
        let t3 = m * r;
        let c = challenge(self.mode, &self.pk, &m, &z, &t2, &t3);
        let s = r - c * self.sk;
        Ok(Proof { c, s })
    }

    /// Evaluate (RFC 9497 §3.3.1): the PRF output for an input the server
    /// holds itself, as the index build does for every leaked number.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InputTooLong`] or [`ProtocolError::InvalidInput`].
    pub fn evaluate(&self, input: &[u8]) -> Result<Output, ProtocolError> {
        let mut out = self.evaluate_batch(&[input])?;
        out.pop().ok_or(ProtocolError::EmptyBatch)
    }

    /// Evaluate for many inputs at once, using batch compression.
    ///
    /// # Errors
    ///
    /// As [`ServerKey::evaluate`], for the first input that fails.
    pub fn evaluate_batch<I: AsRef<[u8]>>(
        &self,
        inputs: &[I],
    ) -> Result<Vec<Output>, ProtocolError> {
        let points = inputs
            .iter()
            .map(|x| hash_to_group(self.mode, x.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let evaluated = Element::mul_batch_same(&self.sk, &points);
        Ok(inputs
            .iter()
            .zip(&evaluated)
            .map(|(x, e)| finalize_hash(x.as_ref(), &e.bytes))
            .collect())
    }
}

fn check_batch(len: usize) -> Result<(), ProtocolError> {
    if len == 0 {
        return Err(ProtocolError::EmptyBatch);
    }
    if len > MAX_PROOF_BATCH {
        return Err(ProtocolError::BatchTooLarge {
            len,
            max: MAX_PROOF_BATCH,
        });
    }
    Ok(())
}

/// `seed = SHA-512(LP(Ser(B)) || LP("Seed-" || contextString))` (RFC 9497 §2.2.1).
fn composite_seed(mode: Mode, pk: &PublicKey) -> [u8; 64] {
    let seed_dst = &mode.dsts().seed;
    let mut h = Sha512::new();
    h.update([0, ELEMENT_LEN as u8]);
    h.update(pk.as_bytes());
    h.update([0, seed_dst.len() as u8]);
    h.update(seed_dst);
    h.finalize().into()
}

/// `M = Σ d_i·C_i` of ComputeCompositesFast (RFC 9497 §2.2.1), over public
/// data (variable time). With the `parallel` feature, a large batch is cut
/// into one slice per rayon thread, each hashing its `d_i` and computing its
/// partial sum; the sum of the parts is the same point.
fn composite_m(
    mode: Mode,
    seed: &[u8; 64],
    blinded: &[BlindedElement],
    evaluated: &[EvaluatedElement],
) -> RistrettoPoint {
    let part = |start: usize, b: &[BlindedElement], e: &[EvaluatedElement]| {
        let d = composite_weights(
            mode,
            seed,
            start,
            b.iter().map(|b| &b.0.bytes),
            e.iter().map(|e| &e.0.bytes),
        );
        RistrettoPoint::vartime_multiscalar_mul(&d, b.iter().map(|b| b.0.point))
    };
    #[cfg(feature = "parallel")]
    {
        use curve25519_dalek::traits::Identity;
        use rayon::prelude::*;
        // Below this, one thread is faster than splitting.
        const MIN_PART: usize = 128;
        let parts = rayon::current_num_threads().min(blinded.len() / MIN_PART);
        if parts > 1 {
            let size = blinded.len().div_ceil(parts);
            return blinded
                .par_chunks(size)
                .zip(evaluated.par_chunks(size))
                .enumerate()
                .map(|(i, (b, e))| part(i * size, b, e))
                .reduce(RistrettoPoint::identity, |a, b| a + b);
        }
    }
    part(0, blinded, evaluated)
}

/// The composite weights of ComputeComposites (RFC 9497 §2.2.1), for the
/// elements at `start..` of the batch:
///
/// ```text
/// d_i = HashToScalar(LP(seed) || I2OSP(i, 2) || LP(Ser(C[i])) || LP(Ser(D[i])) || "Composite")
/// ```
fn composite_weights<'a>(
    mode: Mode,
    seed: &[u8; 64],
    start: usize,
    c: impl Iterator<Item = &'a [u8; 32]>,
    d: impl Iterator<Item = &'a [u8; 32]>,
) -> Vec<Scalar> {
    let dst = &mode.dsts().hash_to_scalar;
    c.zip(d)
        .enumerate()
        .map(|(i, (ci, di))| {
            // i < MAX_PROOF_BATCH is checked by every caller.
            let index = ((start + i) as u16).to_be_bytes();
            hash_to_scalar(
                &[
                    &[0, 64],
                    seed,
                    &index,
                    &[0, 32],
                    ci,
                    &[0, 32],
                    di,
                    b"Composite",
                ],
                dst,
            )
        })
        .collect()
}

/// `c = HashToScalar(LP(Ser(B)) || LP(Ser(M)) || LP(Ser(Z)) || LP(Ser(t2)) || LP(Ser(t3)) || "Challenge")`
fn challenge(
    mode: Mode,
    pk: &PublicKey,
    m: &RistrettoPoint,
    z: &RistrettoPoint,
    t2: &RistrettoPoint,
    t3: &RistrettoPoint,
) -> Scalar {
    let [m, z, t2, t3] = [m, z, t2, t3].map(|p| p.compress().to_bytes());
    let lp = [0u8, 32];
    hash_to_scalar(
        &[
            &lp,
            pk.as_bytes(),
            &lp,
            &m,
            &lp,
            &z,
            &lp,
            &t2,
            &lp,
            &t3,
            b"Challenge",
        ],
        &mode.dsts().hash_to_scalar,
    )
}

/// VerifyProof (RFC 9497 §2.2.2) with `A = G`. Every value here is public, so
/// the multiscalar multiplications may be variable-time.
fn verify_proof(
    mode: Mode,
    pk: &PublicKey,
    blinded: &[BlindedElement],
    evaluated: &[EvaluatedElement],
    proof: &Proof,
) -> Result<(), ProtocolError> {
    let seed = composite_seed(mode, pk);
    let d = composite_weights(
        mode,
        &seed,
        0,
        blinded.iter().map(|b| &b.0.bytes),
        evaluated.iter().map(|e| &e.0.bytes),
    );
    let m = RistrettoPoint::vartime_multiscalar_mul(&d, blinded.iter().map(|b| b.0.point));
    let z = RistrettoPoint::vartime_multiscalar_mul(&d, evaluated.iter().map(|e| e.0.point));
    // t2 = s·G + c·B ;  t3 = s·M + c·Z
    let t2 = RistrettoPoint::vartime_double_scalar_mul_basepoint(&proof.c, &pk.0.point, &proof.s);
    let t3 = RistrettoPoint::vartime_multiscalar_mul([proof.s, proof.c], [m, z]);
    let expected = challenge(mode, pk, &m, &z, &t2, &t3);
    if bool::from(expected.ct_eq(&proof.c)) {
        Ok(())
    } else {
        Err(ProtocolError::Verify)
    }
}

/// `SHA-512(I2OSP(len(input), 2) || input || I2OSP(32, 2) || element || "Finalize")`
fn finalize_hash(input: &[u8], element: &[u8; ELEMENT_LEN]) -> Output {
    // hash_to_group (or the caller) already bounded input to 65535 bytes.
    let len = (input.len() as u16).to_be_bytes();
    let mut h = Sha512::new();
    h.update(len);
    h.update(input);
    h.update([0, ELEMENT_LEN as u8]);
    h.update(element);
    h.update(b"Finalize");
    h.finalize().into()
}

/// Blind (RFC 9497 §3.3.1) for one input: a fresh random blind and
/// `blind·HashToGroup(input)`.
///
/// # Errors
///
/// [`ProtocolError::InputTooLong`] or [`ProtocolError::InvalidInput`].
pub fn blind<R: CryptoRng + ?Sized>(
    mode: Mode,
    input: &[u8],
    rng: &mut R,
) -> Result<(Blind, BlindedElement), ProtocolError> {
    let (mut blinds, mut elements) = blind_batch(mode, &[input], rng)?;
    match (blinds.pop(), elements.pop()) {
        (Some(b), Some(e)) => Ok((b, e)),
        _ => Err(ProtocolError::EmptyBatch),
    }
}

/// Blind for a batch of inputs, with one fresh random blind per input.
///
/// # Errors
///
/// As [`blind`], for the first input that fails.
pub fn blind_batch<I: AsRef<[u8]>, R: CryptoRng + ?Sized>(
    mode: Mode,
    inputs: &[I],
    rng: &mut R,
) -> Result<(Vec<Blind>, Vec<BlindedElement>), ProtocolError> {
    let blinds: Vec<Blind> = inputs.iter().map(|_| Blind(random_scalar(rng))).collect();
    let elements = blind_batch_with(mode, inputs, &blinds)?;
    Ok((blinds, elements))
}

/// Blind with given blinds (the vectors fix them).
fn blind_batch_with<I: AsRef<[u8]>>(
    mode: Mode,
    inputs: &[I],
    blinds: &[Blind],
) -> Result<Vec<BlindedElement>, ProtocolError> {
    let points = inputs
        .iter()
        .map(|x| hash_to_group(mode, x.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let scalars: Zeroizing<Vec<Scalar>> = Zeroizing::new(blinds.iter().map(|b| b.0).collect());
    Ok(Element::mul_batch(&scalars, &points)
        .into_iter()
        .map(BlindedElement)
        .collect())
}

/// Finalize for a whole batch (RFC 9497 §3.3.1, §3.3.2).
///
/// In VOPRF mode `proof` must be `Some((pkS, proof))`: the batched proof is
/// verified first, and no output is produced if it fails. In OPRF mode
/// `proof` must be `None`.
///
/// ```text
/// N = blind^-1 · evaluatedElement
/// output = SHA-512(LP(input) || LP(SerializeElement(N)) || "Finalize")
/// ```
///
/// # Errors
///
/// [`ProtocolError::BatchLengthMismatch`] if the lists differ in length,
/// [`ProtocolError::EmptyBatch`] / [`ProtocolError::BatchTooLarge`],
/// [`ProtocolError::Verify`] if the proof fails (or is missing in VOPRF mode,
/// or given in OPRF mode), [`ProtocolError::InputTooLong`].
pub fn finalize<I: AsRef<[u8]>>(
    mode: Mode,
    inputs: &[I],
    blinds: &[Blind],
    blinded: &[BlindedElement],
    evaluated: &[EvaluatedElement],
    proof: Option<(&PublicKey, &Proof)>,
) -> Result<Vec<Output>, ProtocolError> {
    let n = inputs.len();
    if blinds.len() != n || blinded.len() != n || evaluated.len() != n {
        return Err(ProtocolError::BatchLengthMismatch);
    }
    check_batch(n)?;
    if inputs.iter().any(|x| x.as_ref().len() > MAX_INPUT_LEN) {
        return Err(ProtocolError::InputTooLong);
    }
    match (mode, proof) {
        (Mode::Voprf, Some((pk, proof))) => verify_proof(mode, pk, blinded, evaluated, proof)?,
        (Mode::Oprf, None) => {}
        _ => return Err(ProtocolError::Verify),
    }
    // Unblind with one batch inversion. Blinds are non-zero by construction.
    let mut inverses: Zeroizing<Vec<Scalar>> = Zeroizing::new(blinds.iter().map(|b| b.0).collect());
    Scalar::invert_batch_alloc(&mut inverses);
    let points: Vec<RistrettoPoint> = evaluated.iter().map(|e| e.0.point).collect();
    let unblinded = Element::mul_batch(&inverses, &points);
    Ok(inputs
        .iter()
        .zip(&unblinded)
        .map(|(x, n)| finalize_hash(x.as_ref(), &n.bytes))
        .collect())
}

#[cfg(test)]
mod tests;
