//! Criterion benchmarks of the protocol core, each beside its primitive floor
//! measured in the same run; the ratios are printed at the end.
//!
//! `cargo bench -p breachcheck-proto`

// A benchmark aborts on any failure; there is no caller to hand an error to.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use breachcheck_proto::{
    BlindedElement, Mode, Payload, PhoneNumber, Region, ServerKey, blind_batch, encode_payload,
    finalize, fingerprint_bits_for,
};
use criterion::{BatchSize, Criterion};
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use rand::RngExt;

const BATCH: usize = 1024;

fn inputs(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("+86138{i:08}").into_bytes())
        .collect()
}

fn primitives(c: &mut Criterion) {
    let mut rng = rand::rng();
    let mut g = c.benchmark_group("floor");
    let p = RistrettoPoint::random(&mut rng);
    let s = Scalar::random(&mut rng);
    let enc = p.compress();
    let uniform: [u8; 64] = rng.random();
    g.bench_function("scalar_mul", |b| b.iter(|| black_box(p) * black_box(s)));
    g.bench_function("decompress", |b| b.iter(|| black_box(enc).decompress()));
    g.bench_function("from_uniform_bytes", |b| {
        b.iter(|| RistrettoPoint::from_uniform_bytes(black_box(&uniform)))
    });
    // HashToGroup on the bare primitives: expand_message_xmd (SHA-512) then
    // from_uniform_bytes.
    g.bench_function("hash_to_group", |b| {
        b.iter(|| {
            use sha2::Digest;
            let dst = b"HashToGroup-OPRFV1-\x01-ristretto255-SHA512";
            let mut h = sha2::Sha512::new();
            h.update([0u8; 128]);
            h.update(black_box(b"+8613800138000"));
            h.update([0, 64, 0]);
            h.update(dst);
            h.update([dst.len() as u8]);
            let b0 = h.finalize();
            let mut h = sha2::Sha512::new();
            h.update(b0);
            h.update([1]);
            h.update(dst);
            h.update([dst.len() as u8]);
            let u: [u8; 64] = h.finalize().into();
            RistrettoPoint::from_uniform_bytes(&u)
        })
    });
    g.finish();
}

fn server(c: &mut Criterion) {
    let mut rng = rand::rng();
    let key = ServerKey::random(Mode::Voprf, &mut rng);
    let (_, blinded) = blind_batch(Mode::Voprf, &inputs(BATCH), &mut rng).expect("blind");
    let wire: Vec<[u8; 32]> = blinded.iter().map(|b| b.to_bytes()).collect();
    let mut g = c.benchmark_group("server");
    g.sample_size(10).measurement_time(Duration::from_secs(6));
    // Decode + BlindEvaluate + proof + encode: what one Evaluate RPC costs.
    g.bench_function("blind_evaluate_1024", |b| {
        b.iter(|| {
            let decoded: Vec<BlindedElement> = wire
                .iter()
                .map(|w| BlindedElement::from_bytes(w).expect("valid"))
                .collect();
            let eval = key
                .blind_evaluate(&decoded, &mut rand::rng())
                .expect("eval");
            let out: Vec<[u8; 32]> = eval.elements.iter().map(|e| e.to_bytes()).collect();
            black_box((out, eval.proof.map(|p| p.to_bytes())))
        })
    });
    g.bench_function("evaluate_1024", |b| {
        let xs = inputs(BATCH);
        b.iter(|| key.evaluate_batch(black_box(&xs)).expect("evaluate"))
    });
    g.finish();
}

fn client(c: &mut Criterion) {
    let mut rng = rand::rng();
    let key = ServerKey::random(Mode::Voprf, &mut rng);
    let xs = inputs(BATCH);
    let mut g = c.benchmark_group("client");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("blind_1024", |b| {
        b.iter(|| blind_batch(Mode::Voprf, black_box(&xs), &mut rand::rng()).expect("blind"))
    });
    g.bench_function("finalize_verify_1024", |b| {
        b.iter_batched(
            || {
                let mut rng = rand::rng();
                let (blinds, blinded) = blind_batch(Mode::Voprf, &xs, &mut rng).expect("blind");
                let eval = key.blind_evaluate(&blinded, &mut rng).expect("eval");
                let wire: Vec<[u8; 32]> = eval.elements.iter().map(|e| e.to_bytes()).collect();
                (blinds, blinded, wire, eval.proof.expect("proof"))
            },
            |(blinds, blinded, wire, proof)| {
                let decoded: Vec<_> = wire
                    .iter()
                    .map(|w| breachcheck_proto::EvaluatedElement::from_bytes(w).expect("valid"))
                    .collect();
                finalize(
                    Mode::Voprf,
                    &xs,
                    &blinds,
                    &blinded,
                    &decoded,
                    Some((key.public_key(), &proof)),
                )
                .expect("finalize")
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn voprf_crate(c: &mut Criterion) {
    use voprf::Ristretto255 as Cs;
    let mut rng = rand_core_06::OsRng;
    let server = voprf::VoprfServer::<Cs>::new(&mut rng).expect("key");
    let pk = server.get_public_key();
    let xs = inputs(BATCH);
    let mut g = c.benchmark_group("voprf_crate");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let blinds: Vec<_> = xs
        .iter()
        .map(|x| voprf::VoprfClient::<Cs>::blind(x, &mut rng).expect("blind"))
        .collect();
    let wire: Vec<Vec<u8>> = blinds
        .iter()
        .map(|b| b.message.serialize().to_vec())
        .collect();
    g.bench_function("blind_evaluate_1024", |b| {
        b.iter(|| {
            let msgs: Vec<voprf::BlindedElement<Cs>> = wire
                .iter()
                .map(|w| voprf::BlindedElement::<Cs>::deserialize(w).expect("valid"))
                .collect();
            let r = server
                .batch_blind_evaluate(&mut rand_core_06::OsRng, &msgs)
                .expect("eval");
            let out: Vec<Vec<u8>> = r.messages.iter().map(|m| m.serialize().to_vec()).collect();
            black_box((out, r.proof.serialize()))
        })
    });
    g.bench_function("blind_finalize_1024", |b| {
        b.iter(|| {
            let mut rng = rand_core_06::OsRng;
            let blinds: Vec<_> = xs
                .iter()
                .map(|x| voprf::VoprfClient::<Cs>::blind(x, &mut rng).expect("blind"))
                .collect();
            let msgs: Vec<_> = blinds.iter().map(|b| b.message.clone()).collect();
            let r = server.batch_blind_evaluate(&mut rng, &msgs).expect("eval");
            let clients: Vec<_> = blinds.iter().map(|b| b.state.clone()).collect();
            let out: Vec<_> =
                voprf::VoprfClient::batch_finalize(&xs, &clients, &r.messages, &r.proof, pk)
                    .expect("verify")
                    .collect();
            black_box(out)
        })
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let mut rng = rand::rng();
    let n = 4096usize;
    let f = fingerprint_bits_for(n as u32);
    let mut fps: Vec<u64> = (0..n).map(|_| rng.random::<u64>() >> (64 - f)).collect();
    fps.sort_unstable();
    let payload = encode_payload(&fps, &[], 0, f, 0).expect("encode");
    let mut g = c.benchmark_group("codec");
    g.bench_function("decode_4096", |b| {
        b.iter(|| Payload::decode(black_box(&payload)).expect("decode"))
    });
    let numbers: Vec<String> = (0..1000)
        .map(|i| format!("+86 138-{:04}-{:04}", i, i * 7 % 10_000))
        .collect();
    g.bench_function("phone_parse_1000", |b| {
        b.iter(|| {
            for s in &numbers {
                black_box(PhoneNumber::parse(s, Some(Region::cn())).expect("valid"));
            }
        })
    });
    g.finish();
}

fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/criterion")
}

/// Mean time in ns of one benchmark from criterion's saved estimates.
fn mean_ns(id: &str) -> Option<f64> {
    let path = out_dir().join(id).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn report() {
    let get = |id: &str| mean_ns(id).unwrap_or(f64::NAN) / 1000.0; // µs
    let per = |id: &str, n: usize| get(id) / n as f64;
    let smul = get("floor/scalar_mul");
    let dec = get("floor/decompress");
    let h2g = get("floor/hash_to_group");
    let server = per("server/blind_evaluate_1024", BATCH);
    let evaluate = per("server/evaluate_1024", BATCH);
    let client = per("client/blind_1024", BATCH) + per("client/finalize_verify_1024", BATCH);
    let theirs_server = per("voprf_crate/blind_evaluate_1024", BATCH);
    let theirs_client = per("voprf_crate/blind_finalize_1024", BATCH) - theirs_server;
    let decode = get("codec/decode_4096") / 4096.0;
    let phone = get("codec/phone_parse_1000") / 1000.0;
    println!("\n== breachcheck-proto: ratios to floors measured in this run ==");
    println!("backend: {}", backend());
    println!(
        "floor  scalar_mul {smul:.2} µs, decompress {dec:.2} µs, hash_to_group (xmd + from_uniform_bytes) {h2g:.2} µs"
    );
    let server_floor = dec + smul;
    println!(
        "server BlindEvaluate+proof, batch 1024: {server:.2} µs/elem = {:.3} x (decompress + scalar_mul = {server_floor:.2} µs)  [target <= 1.15]",
        server / server_floor
    );
    let client_floor = h2g + 2.0 * smul + dec;
    println!(
        "client Blind+verify+Finalize, batch 1024: {client:.2} µs/elem = {:.3} x (h2g + 2 scalar_mul + decompress = {client_floor:.2} µs)  [target <= 1.2]",
        client / client_floor
    );
    println!(
        "index Evaluate, batch 1024: {evaluate:.2} µs/elem = {:.3} x (h2g + scalar_mul = {:.2} µs)",
        evaluate / (h2g + smul),
        h2g + smul
    );
    println!(
        "voprf crate: server {theirs_server:.2} µs/elem (ours {:.2}x faster, target >= 3), client {theirs_client:.2} µs/elem (ours {:.2}x faster, target >= 2)",
        theirs_server / server,
        theirs_client / client
    );
    println!(
        "payload decode: {:.1} M entries/s [target >= 50]; phone parse: {:.2} M numbers/s/core [target >= 1]",
        1.0 / decode,
        1.0 / phone
    );
}

fn backend() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512ifma") && std::is_x86_feature_detected!("avx512vl")
        {
            return "avx512ifma (runtime-detected)";
        }
        if std::is_x86_feature_detected!("avx2") {
            return "avx2 (runtime-detected; no IFMA on this CPU)";
        }
    }
    "serial"
}

fn main() {
    let mut c = Criterion::default()
        .output_directory(&out_dir())
        .configure_from_args();
    primitives(&mut c);
    server(&mut c);
    client(&mut c);
    voprf_crate(&mut c);
    codec(&mut c);
    c.final_summary();
    report();
}
