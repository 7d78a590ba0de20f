//! Cross-check against the `voprf` crate (facebook/voprf 0.5, on
//! curve25519-dalek 4): byte-level, in both directions, on random inputs and
//! batches. The two implementations share no code.

use breachcheck_proto::{BlindedElement, EvaluatedElement, Proof, PublicKey, ServerKey};
use breachcheck_proto::{Mode, blind_batch, finalize};
use rand::RngExt;
use voprf::{Group, Ristretto255};

type Cs = Ristretto255;

fn random_input(rng: &mut impl rand::Rng) -> Vec<u8> {
    let len = rng.random_range(1..48);
    (0..len).map(|_| rng.random()).collect()
}

/// Their client against our server: voprf blinds and verifies, we evaluate.
#[test]
fn voprf_client_accepts_our_evaluations() {
    let mut rng = rand::rng();
    let mut their_rng = rand_core_06::OsRng;
    let mut checked = 0;
    for round in 0..66 {
        let key = ServerKey::random(Mode::Voprf, &mut rng);
        let pk = <Cs as Group>::deserialize_elem(&key.public_key().to_bytes()).expect("pk");
        let n = 1 + round % 31;
        let inputs: Vec<Vec<u8>> = (0..n).map(|_| random_input(&mut rng)).collect();
        let blinds: Vec<voprf::VoprfClientBlindResult<Cs>> = inputs
            .iter()
            .map(|x| voprf::VoprfClient::<Cs>::blind(x, &mut their_rng).expect("their blind"))
            .collect();
        let ours: Vec<BlindedElement> = blinds
            .iter()
            .map(|b| BlindedElement::from_bytes(&b.message.serialize()).expect("decode theirs"))
            .collect();
        let eval = key.blind_evaluate(&ours, &mut rng).expect("eval");
        let proof_bytes = eval.proof.expect("proof").to_bytes();
        let their_proof = voprf::Proof::<Cs>::deserialize(&proof_bytes).expect("their proof");
        let their_elems: Vec<voprf::EvaluationElement<Cs>> = eval
            .elements
            .iter()
            .map(|e| voprf::EvaluationElement::<Cs>::deserialize(e.as_bytes()).expect("elem"))
            .collect();
        let clients: Vec<voprf::VoprfClient<Cs>> = blinds.iter().map(|b| b.state.clone()).collect();
        let outputs: Vec<Vec<u8>> =
            voprf::VoprfClient::batch_finalize(&inputs, &clients, &their_elems, &their_proof, pk)
                .expect("their verify")
                .map(|o| o.expect("output").to_vec())
                .collect();
        let expected: Vec<Vec<u8>> = key
            .evaluate_batch(&inputs)
            .expect("evaluate")
            .iter()
            .map(|o| o.to_vec())
            .collect();
        assert_eq!(outputs, expected);
        checked += n;
    }
    assert!(checked >= 1000, "checked {checked}");
}

/// Our client against their server: we blind and verify, voprf evaluates.
#[test]
fn our_client_accepts_voprf_evaluations() {
    let mut rng = rand::rng();
    let mut their_rng = rand_core_06::OsRng;
    let mut checked = 0;
    for round in 0..66 {
        let server = voprf::VoprfServer::<Cs>::new(&mut their_rng).expect("their key");
        let pk_bytes = <Cs as Group>::serialize_elem(server.get_public_key());
        let pk = PublicKey::from_bytes(&pk_bytes).expect("pk");
        let n = 1 + round % 31;
        let inputs: Vec<Vec<u8>> = (0..n).map(|_| random_input(&mut rng)).collect();
        let (blinds, blinded) = blind_batch(Mode::Voprf, &inputs, &mut rng).expect("blind");
        let theirs: Vec<voprf::BlindedElement<Cs>> = blinded
            .iter()
            .map(|b| voprf::BlindedElement::<Cs>::deserialize(b.as_bytes()).expect("decode"))
            .collect();
        let result = server
            .batch_blind_evaluate(&mut their_rng, &theirs)
            .expect("their eval");
        let evaluated: Vec<EvaluatedElement> = result
            .messages
            .iter()
            .map(|m| EvaluatedElement::from_bytes(&m.serialize()).expect("decode theirs"))
            .collect();
        let proof = Proof::from_bytes(&result.proof.serialize()).expect("proof");
        let out = finalize(
            Mode::Voprf,
            &inputs,
            &blinds,
            &blinded,
            &evaluated,
            Some((&pk, &proof)),
        )
        .expect("our verify");
        for (x, o) in inputs.iter().zip(&out) {
            assert_eq!(
                o.to_vec(),
                server.evaluate(x).expect("their evaluate").to_vec()
            );
        }
        checked += n;
    }
    assert!(checked >= 1000, "checked {checked}");
}

/// Both Evaluate functions agree on the same key, in both modes.
#[test]
fn evaluate_agrees_with_voprf_on_random_keys() {
    let mut rng = rand::rng();
    for _ in 0..200 {
        let key = ServerKey::random(Mode::Voprf, &mut rng);
        let theirs = voprf::VoprfServer::<Cs>::new_with_key(&*key.to_secret_bytes()).expect("key");
        let x = random_input(&mut rng);
        assert_eq!(
            key.evaluate(&x).expect("ours").to_vec(),
            theirs.evaluate(&x).expect("theirs").to_vec()
        );
        let base = ServerKey::from_secret_bytes(Mode::Oprf, &key.to_secret_bytes()).expect("key");
        let their_base =
            voprf::OprfServer::<Cs>::new_with_key(&*key.to_secret_bytes()).expect("key");
        assert_eq!(
            base.evaluate(&x).expect("ours").to_vec(),
            their_base.evaluate(&x).expect("theirs").to_vec()
        );
    }
}
