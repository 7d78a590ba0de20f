//! The fuzz targets' bodies, shared by the cargo-fuzz binaries in
//! `fuzz_targets/` (nightly) and by the corpus replay in the test suite
//! (`tests/tests/corpus.rs`, stable), so CI runs exactly what was fuzzed.
//!
//! Each body feeds untrusted bytes to one decoder and checks the decoder's
//! own promises (it must not panic, and what it accepts must re-encode or
//! satisfy its documented bounds).

#![allow(dead_code)]

use breachcheck_proto as proto;

/// Element and scalar/proof decoding: 32-byte elements, 64-byte proofs.
pub(crate) fn element(data: &[u8]) {
    if let Ok(e) = proto::BlindedElement::from_bytes(data) {
        assert_eq!(
            e.to_bytes().as_slice(),
            data,
            "an accepted element is canonical"
        );
    }
    if let Ok(e) = proto::EvaluatedElement::from_bytes(data) {
        assert_eq!(e.as_bytes().as_slice(), data);
    }
    let _ = proto::PublicKey::from_bytes(data);
}

/// Proof decoding.
pub(crate) fn proof(data: &[u8]) {
    if let Ok(p) = proto::Proof::from_bytes(data) {
        assert_eq!(
            p.to_bytes().as_slice(),
            data,
            "an accepted proof is canonical"
        );
    }
}

/// Bucket payload decoding, plain and against an expected shape, and the
/// breach-mask lookup on whatever decodes.
pub(crate) fn payload(data: &[u8]) {
    let Ok(p) = proto::Payload::decode(data) else {
        return;
    };
    assert!(usize::from(p.label_width) <= proto::MAX_LABEL_WIDTH);
    assert!(p.fingerprints.len() <= data.len() * 8);
    assert!(p.fingerprints.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(
        p.labels.len(),
        p.fingerprints.len() * usize::from(p.label_width)
    );
    let out = [data.first().copied().unwrap_or(0); 64];
    let _ = p.breach_mask(&out);
    let again = proto::Payload::decode_expecting(data, p.fingerprint_bits, u32::MAX)
        .expect("same bytes decode again");
    assert_eq!(again, p);
}

/// Phone number canonicalisation: never panics; what it accepts is
/// canonical and a fixed point.
pub(crate) fn phone(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    for region in [None, proto::Region::parse("CN"), proto::Region::parse("US")] {
        if let Ok(n) = proto::PhoneNumber::parse(&s, region) {
            let again = proto::PhoneNumber::parse(n.as_str(), None).expect("canonical parses");
            assert_eq!(again, n);
        }
    }
}

/// Merkle proof checking on arbitrary proofs and payloads.
pub(crate) fn merkle(data: &[u8]) {
    let (head, rest) = data.split_at(data.len().min(5));
    let mut b = [0u8; 4];
    b[..head.len().min(4)].copy_from_slice(&head[..head.len().min(4)]);
    let k = u32::from(head.get(4).copied().unwrap_or(0) % 30);
    let split = rest.len() / 2;
    let _ = proto::verify_bucket(
        u32::from_le_bytes(b),
        &rest[..split],
        &rest[split..],
        k,
        &[0; 32],
    );
}

/// The shared line reader (BOM, UTF-16, line cap): bounded lines, and UTF-8
/// input without a BOM passes through unchanged.
pub(crate) fn text(data: &[u8]) {
    use std::io::BufRead;
    let mut r = proto::TextReader::new(data);
    let mut line = Vec::new();
    while r
        .read_until(b'\n', &mut line)
        .expect("reading a slice never fails")
        > 0
    {
        assert!(line.len() <= proto::MAX_LINE);
        line.clear();
    }
}

/// A target: its name (the folder of its seeds) and its body.
pub(crate) type Target = (&'static str, fn(&[u8]));

/// Every target by name, for the replay test.
pub(crate) const TARGETS: &[Target] = &[
    ("element", element),
    ("proof", proof),
    ("payload", payload),
    ("phone", phone),
    ("merkle", merkle),
    ("text", text),
];
