//! RFC 9497 vectors, negative cases and property tests for the OPRF.

use super::*;
use proptest::prelude::*;
use serde_json::Value;

const VECTORS: &str = include_str!("../../testdata/ristretto255-sha512-vectors.json");

fn hex32(v: &Value) -> [u8; 32] {
    let b = hex::decode(v.as_str().expect("hex string")).expect("hex");
    b.try_into().expect("32 bytes")
}

fn hexv(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

/// One RFC 9497 Appendix A.1 vector, decoded.
struct Vector {
    mode: Mode,
    key: ServerKey,
    inputs: Vec<Vec<u8>>,
    blinds: Vec<Blind>,
    blinded: Vec<[u8; 32]>,
    evaluated: Vec<[u8; 32]>,
    proof: Option<[u8; 64]>,
    proof_r: Option<[u8; 32]>,
    outputs: Vec<Vec<u8>>,
    sk: [u8; 32],
    pk: Option<[u8; 32]>,
}

fn vector(id: &str) -> Vector {
    let all: Value = serde_json::from_str(VECTORS).expect("json");
    let v = all["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| v["id"] == id)
        .expect("vector id");
    let mode = Mode::from_id(v["mode"].as_u64().expect("mode") as u8).expect("mode");
    let seed = hex32(&v["seed"]);
    let info = hexv(&v["keyInfo"]);
    let key = ServerKey::derive_key_pair(mode, &seed, &info).expect("derive");
    let list = |name: &str| -> Vec<Value> { v[name].as_array().expect(name).clone() };
    Vector {
        mode,
        key,
        inputs: list("inputs").iter().map(hexv).collect(),
        blinds: list("blinds")
            .iter()
            .map(|b| Blind::from_bytes(hex32(b)).expect("blind"))
            .collect(),
        blinded: list("blindedElements").iter().map(hex32).collect(),
        evaluated: list("evaluationElements").iter().map(hex32).collect(),
        proof: v["proof"].as_object().map(|p| {
            let mut out = [0u8; 64];
            out[..32].copy_from_slice(&hex32(&p["c"]));
            out[32..].copy_from_slice(&hex32(&p["s"]));
            out
        }),
        proof_r: (!v["proofRandomScalar"].is_null()).then(|| hex32(&v["proofRandomScalar"])),
        outputs: list("outputs").iter().map(hexv).collect(),
        sk: hex32(&v["skSm"]),
        pk: (!v["pkSm"].is_null()).then(|| hex32(&v["pkSm"])),
    }
}

fn check_derive_key_pair(id: &str) {
    let v = vector(id);
    assert_eq!(*v.key.to_secret_bytes(), v.sk, "skSm");
    if let Some(pk) = v.pk {
        assert_eq!(v.key.public_key().to_bytes(), pk, "pkSm");
    }
}

fn check_blind(id: &str) {
    let v = vector(id);
    let blinded = blind_batch_with(v.mode, &v.inputs, &v.blinds).expect("blind");
    let got: Vec<[u8; 32]> = blinded.iter().map(|b| b.to_bytes()).collect();
    assert_eq!(got, v.blinded);
}

fn decoded_blinded(v: &Vector) -> Vec<BlindedElement> {
    v.blinded
        .iter()
        .map(|b| BlindedElement::from_bytes(b).expect("decode"))
        .collect()
}

fn decoded_evaluated(v: &Vector) -> Vec<EvaluatedElement> {
    v.evaluated
        .iter()
        .map(|b| EvaluatedElement::from_bytes(b).expect("decode"))
        .collect()
}

fn check_blind_evaluate(id: &str) {
    let v = vector(id);
    let got: Vec<[u8; 32]> = v
        .key
        .blind_evaluate_elements(&decoded_blinded(&v))
        .iter()
        .map(|e| e.to_bytes())
        .collect();
    assert_eq!(got, v.evaluated);
}

fn check_proof(id: &str) {
    let v = vector(id);
    let r = canonical_scalar(v.proof_r.expect("proof r")).expect("r");
    let proof = v
        .key
        .generate_proof_with_nonce(&decoded_blinded(&v), &decoded_evaluated(&v), &r)
        .expect("proof");
    assert_eq!(proof.to_bytes(), v.proof.expect("proof"));
}

fn check_finalize(id: &str) {
    let v = vector(id);
    let proof = v.proof.map(|p| Proof::from_bytes(&p).expect("proof"));
    let out = finalize(
        v.mode,
        &v.inputs,
        &v.blinds,
        &decoded_blinded(&v),
        &decoded_evaluated(&v),
        proof.as_ref().map(|p| (v.key.public_key(), p)),
    )
    .expect("finalize");
    let got: Vec<Vec<u8>> = out.iter().map(|o| o.to_vec()).collect();
    assert_eq!(got, v.outputs);
}

fn check_evaluate(id: &str) {
    let v = vector(id);
    let got: Vec<Vec<u8>> = v
        .key
        .evaluate_batch(&v.inputs)
        .expect("evaluate")
        .iter()
        .map(|o| o.to_vec())
        .collect();
    assert_eq!(got, v.outputs);
}

/// One test per vector and step, so one failure does not hide the others.
macro_rules! vector_tests {
    ($($name:ident => $id:literal, [$($step:ident),*];)*) => {
        $(mod $name {
            $(#[test]
            fn $step() {
                super::$step($id);
            })*
        })*
    };
}

vector_tests! {
    oprf_1 => "OPRF-1", [check_derive_key_pair, check_blind, check_blind_evaluate, check_finalize, check_evaluate];
    oprf_2 => "OPRF-2", [check_derive_key_pair, check_blind, check_blind_evaluate, check_finalize, check_evaluate];
    voprf_1 => "VOPRF-1", [check_derive_key_pair, check_blind, check_blind_evaluate, check_proof, check_finalize, check_evaluate];
    voprf_2 => "VOPRF-2", [check_derive_key_pair, check_blind, check_blind_evaluate, check_proof, check_finalize, check_evaluate];
    voprf_3_batch => "VOPRF-3", [check_derive_key_pair, check_blind, check_blind_evaluate, check_proof, check_finalize, check_evaluate];
}

#[test]
fn oprf_mode_public_key_matches_the_computed_value() {
    let v = vector("OPRF-1");
    assert_eq!(
        hex::encode(v.key.public_key().to_bytes()),
        "f4a56c2f306cafe90769927fdc9dd4994d8ad18f8d35b7c568ececc842da7015"
    );
}

// --- negative decoding -------------------------------------------------------

#[test]
fn decode_rejects_identity() {
    assert_eq!(
        BlindedElement::from_bytes(&[0u8; 32]),
        Err(ProtocolError::InvalidElement)
    );
    assert_eq!(
        EvaluatedElement::from_bytes(&[0u8; 32]),
        Err(ProtocolError::InvalidElement)
    );
    assert_eq!(
        PublicKey::from_bytes(&[0u8; 32]),
        Err(ProtocolError::InvalidElement)
    );
}

#[test]
fn decode_rejects_wrong_lengths() {
    let good = vector("VOPRF-1").blinded[0];
    assert!(BlindedElement::from_bytes(&good).is_ok());
    assert_eq!(
        BlindedElement::from_bytes(&good[..31]),
        Err(ProtocolError::InvalidElement)
    );
    let mut long = good.to_vec();
    long.push(0);
    assert_eq!(
        BlindedElement::from_bytes(&long),
        Err(ProtocolError::InvalidElement)
    );
    assert_eq!(
        BlindedElement::from_bytes(&[]),
        Err(ProtocolError::InvalidElement)
    );
}

#[test]
fn decode_rejects_non_canonical_encodings() {
    // All-0xFF: s ≥ p and the top bit set.
    assert_eq!(
        BlindedElement::from_bytes(&[0xFF; 32]),
        Err(ProtocolError::InvalidElement)
    );
    // p itself (2^255 - 19), little-endian: a non-canonical encoding of 0.
    let mut p = [0xFFu8; 32];
    p[0] = 0xED;
    p[31] = 0x7F;
    assert_eq!(
        BlindedElement::from_bytes(&p),
        Err(ProtocolError::InvalidElement)
    );
    // A negative s (odd low bit) is non-canonical in ristretto255.
    let mut neg = vector("VOPRF-1").blinded[0];
    neg[0] |= 1;
    assert_eq!(
        BlindedElement::from_bytes(&neg),
        Err(ProtocolError::InvalidElement)
    );
    // The edwards d constant is not a valid ristretto encoding (dalek's test).
    let d = hex::decode("a3785913ca4deb75abd841414d0a700098e879777940c78c73fe6f2bee6c0352")
        .expect("hex");
    assert_eq!(
        BlindedElement::from_bytes(&d),
        Err(ProtocolError::InvalidElement)
    );
}

#[test]
fn proof_decode_rejects_non_canonical_scalars() {
    assert_eq!(
        Proof::from_bytes(&[0xFF; 64]),
        Err(ProtocolError::InvalidScalar)
    );
    assert_eq!(
        Proof::from_bytes(&[0; 63]),
        Err(ProtocolError::InvalidScalar)
    );
    assert!(Proof::from_bytes(&[0; 64]).is_ok());
}

// --- verification failures -----------------------------------------------------

fn run_batch(
    n: usize,
) -> (
    ServerKey,
    Vec<Vec<u8>>,
    Vec<Blind>,
    Vec<BlindedElement>,
    BlindEvaluation,
) {
    let mut rng = rand::rng();
    let key = ServerKey::random(Mode::Voprf, &mut rng);
    let inputs: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("+86138001380{i:02}").into_bytes())
        .collect();
    let (blinds, blinded) = blind_batch(Mode::Voprf, &inputs, &mut rng).expect("blind");
    let eval = key.blind_evaluate(&blinded, &mut rng).expect("eval");
    (key, inputs, blinds, blinded, eval)
}

#[test]
fn honest_batch_verifies_and_matches_evaluate() {
    let (key, inputs, blinds, blinded, eval) = run_batch(16);
    let proof = eval.proof.expect("proof");
    let out = finalize(
        Mode::Voprf,
        &inputs,
        &blinds,
        &blinded,
        &eval.elements,
        Some((key.public_key(), &proof)),
    )
    .expect("finalize");
    assert_eq!(out, key.evaluate_batch(&inputs).expect("evaluate"));
}

#[test]
fn tampered_proof_fails_verification() {
    let (key, inputs, blinds, blinded, eval) = run_batch(4);
    let mut bytes = eval.proof.expect("proof").to_bytes();
    bytes[0] ^= 1;
    let proof = Proof::from_bytes(&bytes).expect("still canonical");
    let r = finalize(
        Mode::Voprf,
        &inputs,
        &blinds,
        &blinded,
        &eval.elements,
        Some((key.public_key(), &proof)),
    );
    assert_eq!(r, Err(ProtocolError::Verify));
}

#[test]
fn proof_under_another_key_fails_verification() {
    let (_, inputs, blinds, blinded, _) = run_batch(4);
    let mut rng = rand::rng();
    let pinned = ServerKey::random(Mode::Voprf, &mut rng);
    let other = ServerKey::random(Mode::Voprf, &mut rng);
    let eval = other.blind_evaluate(&blinded, &mut rng).expect("eval");
    let proof = eval.proof.expect("proof");
    let r = finalize(
        Mode::Voprf,
        &inputs,
        &blinds,
        &blinded,
        &eval.elements,
        Some((pinned.public_key(), &proof)),
    );
    assert_eq!(r, Err(ProtocolError::Verify));
    // Under its own key the same answer verifies: the failure is the key.
    assert!(
        finalize(
            Mode::Voprf,
            &inputs,
            &blinds,
            &blinded,
            &eval.elements,
            Some((other.public_key(), &proof))
        )
        .is_ok()
    );
}

#[test]
fn reordered_batch_fails_verification() {
    let (key, inputs, blinds, blinded, mut eval) = run_batch(4);
    eval.elements.swap(0, 1);
    let proof = eval.proof.expect("proof");
    let r = finalize(
        Mode::Voprf,
        &inputs,
        &blinds,
        &blinded,
        &eval.elements,
        Some((key.public_key(), &proof)),
    );
    assert_eq!(r, Err(ProtocolError::Verify));
}

#[test]
fn reflected_elements_fail_verification() {
    let (key, inputs, blinds, blinded, eval) = run_batch(3);
    let reflected: Vec<EvaluatedElement> = blinded.iter().map(|b| EvaluatedElement(b.0)).collect();
    let proof = eval.proof.expect("proof");
    let r = finalize(
        Mode::Voprf,
        &inputs,
        &blinds,
        &blinded,
        &reflected,
        Some((key.public_key(), &proof)),
    );
    assert_eq!(r, Err(ProtocolError::Verify));
}

#[test]
fn missing_proof_in_voprf_mode_is_an_error() {
    let (_, inputs, blinds, blinded, eval) = run_batch(2);
    let r = finalize(
        Mode::Voprf,
        &inputs,
        &blinds,
        &blinded,
        &eval.elements,
        None,
    );
    assert_eq!(r, Err(ProtocolError::Verify));
}

#[test]
fn batch_limits_are_enforced() {
    let mut rng = rand::rng();
    let key = ServerKey::random(Mode::Voprf, &mut rng);
    assert_eq!(
        key.blind_evaluate(&[], &mut rng).err(),
        Some(ProtocolError::EmptyBatch)
    );
    let (_, inputs, blinds, blinded, eval) = run_batch(2);
    let r = finalize(
        Mode::Voprf,
        &inputs[..1],
        &blinds,
        &blinded,
        &eval.elements,
        None,
    );
    assert_eq!(r, Err(ProtocolError::BatchLengthMismatch));
}

#[test]
fn inputs_longer_than_u16_are_rejected() {
    let mut rng = rand::rng();
    let long = vec![7u8; MAX_INPUT_LEN + 1];
    assert_eq!(
        blind(Mode::Voprf, &long, &mut rng).err(),
        Some(ProtocolError::InputTooLong)
    );
    let key = ServerKey::random(Mode::Voprf, &mut rng);
    assert_eq!(key.evaluate(&long), Err(ProtocolError::InputTooLong));
    assert!(key.evaluate(&long[..MAX_INPUT_LEN]).is_ok());
}

#[test]
fn secret_types_do_not_print_secrets() {
    let v = vector("VOPRF-1");
    let debug = format!("{:?} {:?}", v.key, v.blinds[0]);
    assert!(!debug.contains(&hex::encode(v.sk)));
    assert!(!debug.contains(&hex::encode(&v.sk[..4])));
}

#[test]
fn secret_key_round_trips_and_rejects_zero() {
    let v = vector("VOPRF-1");
    let again = ServerKey::from_secret_bytes(Mode::Voprf, &v.sk).expect("key");
    assert_eq!(again.public_key(), v.key.public_key());
    assert_eq!(
        ServerKey::from_secret_bytes(Mode::Voprf, &[0; 32]).err(),
        Some(ProtocolError::InvalidScalar)
    );
    assert_eq!(
        ServerKey::from_secret_bytes(Mode::Voprf, &[0xFF; 32]).err(),
        Some(ProtocolError::InvalidScalar)
    );
}

// --- properties ------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn element_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = BlindedElement::from_bytes(&bytes);
        let _ = EvaluatedElement::from_bytes(&bytes);
        let _ = PublicKey::from_bytes(&bytes);
        let _ = Proof::from_bytes(&bytes);
    }

    #[test]
    fn finalize_of_blind_evaluate_equals_evaluate(
        inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
        seed in any::<[u8; 32]>(),
    ) {
        let mut rng = rand::rng();
        let key = ServerKey::derive_key_pair(Mode::Voprf, &seed, b"prop").expect("key");
        let (blinds, blinded) = blind_batch(Mode::Voprf, &inputs, &mut rng).expect("blind");
        let eval = key.blind_evaluate(&blinded, &mut rng).expect("eval");
        let proof = eval.proof.expect("proof");
        let out = finalize(Mode::Voprf, &inputs, &blinds, &blinded, &eval.elements, Some((key.public_key(), &proof))).expect("finalize");
        prop_assert_eq!(out, key.evaluate_batch(&inputs).expect("evaluate"));
    }
}

/// The composite of a large batch split over the rayon pool (the server's
/// `parallel` feature) is the serial one, and its proof verifies: the split
/// keeps each element's index `i` in its weight `d_i`.
#[test]
fn a_split_composite_is_the_serial_one() {
    let mut rng = rand::rng();
    let key = ServerKey::random(Mode::Voprf, &mut rng);
    let inputs: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("+86138{i:08}").into_bytes())
        .collect();
    let (_, blinded) = blind_batch(Mode::Voprf, &inputs, &mut rng).expect("blind");
    let evaluated = key.blind_evaluate_elements(&blinded);
    let seed = composite_seed(Mode::Voprf, key.public_key());
    let d = composite_weights(
        Mode::Voprf,
        &seed,
        0,
        blinded.iter().map(|b| &b.0.bytes),
        evaluated.iter().map(|e| &e.0.bytes),
    );
    let serial = RistrettoPoint::vartime_multiscalar_mul(&d, blinded.iter().map(|b| b.0.point));
    assert_eq!(
        composite_m(Mode::Voprf, &seed, &blinded, &evaluated),
        serial
    );
    let proof = key
        .generate_proof(&blinded, &evaluated, &mut rng)
        .expect("proof");
    verify_proof(Mode::Voprf, key.public_key(), &blinded, &evaluated, &proof)
        .expect("the split proof verifies");
}
