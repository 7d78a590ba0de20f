//! The fuzz targets' bodies, shared by the cargo-fuzz binaries in
//! `fuzz_targets/` (nightly) and by the corpus replay in the test suite
//! (`tests/tests/corpus.rs`, stable), so CI runs exactly what was fuzzed.
//!
//! Each body feeds untrusted bytes to one decoder and checks the decoder's
//! own promises (it must not panic, and what it accepts must re-encode or
//! satisfy its documented bounds). `element` … `text` are the protocol's
//! decoders (breachcheck-proto); `index_header`, `dump` and `server_config`
//! are the server's (breachcheck-server, without its demo feature).

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

/// The index header decoder (docs/PROTOCOL.md §5). The first byte steers;
/// the rest is decoded as it is (against several file lengths), then fixed
/// up so the checks behind the checksum are reached: magic, version and
/// header length made consistent, the checksum recomputed, and by choice the
/// breach table replaced by `[]`, the index id recomputed and the file length
/// made exact. A header that decodes re-encodes to one that decodes to it.
pub(crate) fn index_header(data: &[u8]) {
    use breachcheck_server::Header;
    const FIXED: usize = 140;
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let n = rest.len() as u64;
    for len in [n, 0, n + 1, n.saturating_sub(1), u64::MAX] {
        check_header(rest, len);
    }
    if rest.len() < FIXED {
        return;
    }
    let mut h = rest[..FIXED].to_vec();
    h[..8].copy_from_slice(breachcheck_server::MAGIC);
    h[8..12].copy_from_slice(&breachcheck_server::VERSION.to_le_bytes());
    let table: &[u8] = if ctl & 1 != 0 {
        b"[]"
    } else {
        let want = u32::from_le_bytes([h[136], h[137], h[138], h[139]]) as usize;
        let tail = &rest[FIXED..];
        &tail[..want % (tail.len() + 1)]
    };
    h[136..140].copy_from_slice(&(table.len() as u32).to_le_bytes());
    let header_len = FIXED + table.len() + 32;
    h[12..16].copy_from_slice(&(header_len as u32).to_le_bytes());
    if ctl & 2 != 0 {
        let field = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let layout = proto::IndexLayout {
            public_key: h[40..72].try_into().expect("32 bytes"),
            bucket_bits: u32::from(h[17]),
            fingerprint_bits: u32::from(h[18]),
            bucket_entries: field(20),
            payload_len: field(32),
        };
        let root: [u8; 32] = h[72..104].try_into().expect("32 bytes");
        let id = layout.index_id(&root);
        h[104..136].copy_from_slice(&id);
    }
    h.extend_from_slice(table);
    let sum = blake3::hash(&h);
    h.extend_from_slice(sum.as_bytes());
    let body = u64::from(u32::from_le_bytes([h[32], h[33], h[34], h[35]])) << (h[17] & 63);
    let exact = (header_len as u64).saturating_add(body);
    let len = if ctl & 4 != 0 {
        exact
    } else {
        u64::from(ctl >> 3).wrapping_add(exact).wrapping_sub(16)
    };
    check_header(&h, len);
    check_header(&h, exact);
    /// Decodes; what is accepted must survive a round trip.
    fn check_header(bytes: &[u8], file_len: u64) {
        let Ok((h, header_len)) = Header::decode(bytes, file_len) else {
            return;
        };
        assert!(header_len <= bytes.len());
        assert_eq!(header_len as u64 + h.body_len(), file_len);
        let again = h.encode();
        let len = again.len() as u64 + h.body_len();
        assert_eq!(Header::decode(&again, len), Ok((h, again.len())));
    }
}

/// The dump reader (`read_dump`: lines, CSV, TSV, BOM, UTF-16, the line
/// cap) over the bytes after the first, which chooses the column and the
/// default region: it never fails on a slice but for a missing column, and
/// its counts and samples keep their bounds.
pub(crate) fn dump(data: &[u8]) {
    use breachcheck_server::{Column, ServerError};
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let column = match ctl & 3 {
        0 => None,
        1 => Some(Column::Number(usize::from((ctl >> 2) & 7))),
        2 => Some(Column::Name("phone".into())),
        _ => Some(Column::Name(String::new())),
    };
    let region = if ctl & 0x80 != 0 {
        proto::Region::parse("CN")
    } else {
        None
    };
    let mut emitted = 0u64;
    let name = std::path::Path::new("fuzz");
    match breachcheck_server::read_dump(rest, name, column.as_ref(), region, |_| emitted += 1) {
        Ok(stats) => {
            assert_eq!(stats.rows, stats.valid + stats.invalid_total());
            assert_eq!(stats.valid, emitted);
            assert!(stats.rows <= rest.len() as u64);
            for samples in stats.samples.values() {
                assert!(samples.len() <= breachcheck_server::MAX_SAMPLES);
                for s in samples {
                    assert!(s.chars().count() <= breachcheck_server::MAX_SAMPLE_CHARS);
                }
            }
        }
        Err(ServerError::Input(_)) => {}
        Err(e) => panic!("reading a slice failed: {e}"),
    }
}

/// The server configuration (`serve/config.rs`): TOML parsing into a
/// settings layer, layering, resolving and validating never panic, and
/// what resolves is valid.
pub(crate) fn server_config(data: &[u8]) {
    use breachcheck_server::Settings;
    let text = String::from_utf8_lossy(data);
    // `Config::from_toml` is exactly this parse, then `resolve`.
    let Ok(settings) = Settings::from_toml(&text) else {
        return;
    };
    let resolved = settings.clone().resolve();
    let layered = settings.clone().or(Settings::default()).resolve();
    let under = Settings::default().or(settings).resolve();
    assert_eq!(resolved.is_ok(), layered.is_ok());
    assert_eq!(resolved.is_ok(), under.is_ok());
    if let Ok(c) = resolved {
        assert!(c.validate().is_ok());
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
    ("index_header", index_header),
    ("dump", dump),
    ("server_config", server_config),
    ("client_info", client_info),
    ("client_bucket", client_bucket),
    ("client_response", client_response),
    ("grpc_web", grpc_web),
];

// --- the client's checks of untrusted messages (#11) -------------------------

/// A byte cursor that runs out gracefully: missing bytes read as zero.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = self.0.len().min(N);
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
}

/// SerializeElement of the ristretto255 generator: a valid public key.
const GENERATOR: [u8; 32] = [
    0xe2, 0xf2, 0xae, 0x0a, 0x6a, 0xbc, 0x4e, 0x71, 0xa8, 0x84, 0xa9, 0x61, 0xc5, 0x00, 0x51, 0x5f,
    0x58, 0xe3, 0x0b, 0x6a, 0xa5, 0x82, 0xdd, 0x8d, 0xb6, 0xa6, 0x59, 0x45, 0xe0, 0x8d, 0x2d, 0x76,
];

/// `IndexInfo` as the client checks it before use (suite, key, layout,
/// commitment). Flags in the first byte choose a valid suite, key and a
/// committing id, so the fuzzer reaches the layout checks; what the client
/// accepts must satisfy the bounds it promises.
pub(crate) fn client_info(data: &[u8]) {
    use breachcheck_client::fuzzing;
    use proto::pb::IndexInfo;
    let mut b = Bytes(data);
    let flags = b.u8();
    let key = if flags & 1 == 0 { GENERATOR } else { b.take() };
    let mut info = IndexInfo {
        suite: if flags & 2 == 0 {
            proto::SUITE.to_owned()
        } else {
            "other".into()
        },
        mode: if flags & 4 == 0 { 1 } else { u32::from(b.u8()) },
        public_key: key.to_vec(),
        bucket_bits: u32::from(b.u8()),
        fingerprint_bits: u32::from(b.u8()),
        entry_count: u64::from_le_bytes(b.take()),
        bucket_entries: b.u32(),
        payload_len: b.u32(),
        max_batch: b.u32(),
        min_prefix_bits: u32::from(b.u8()),
        bucket_root: b.take::<32>().to_vec(),
        ..IndexInfo::default()
    };
    if flags & 8 != 0 {
        // Fields of another length.
        info.bucket_root.truncate(usize::from(b.u8() % 40));
    }
    let root: [u8; 32] = info.bucket_root.as_slice().try_into().unwrap_or([0; 32]);
    let layout = proto::IndexLayout {
        public_key: key,
        bucket_bits: info.bucket_bits,
        fingerprint_bits: info.fingerprint_bits,
        bucket_entries: info.bucket_entries,
        payload_len: info.payload_len,
    };
    info.index_id = if flags & 16 == 0 {
        layout.index_id(&root).to_vec()
    } else {
        b.take::<32>().to_vec()
    };
    if fuzzing::index_info(&info).is_ok() {
        assert!(info.bucket_bits <= proto::MAX_BUCKET_BITS);
        assert!(info.bucket_entries >= 1);
        assert!(u64::from(info.bucket_entries) <= info.entry_count.max(1));
        assert_eq!(
            info.fingerprint_bits,
            proto::fingerprint_bits_for(info.bucket_entries)
        );
        assert!(info.payload_len as usize >= proto::PAYLOAD_HEADER_LEN);
        assert!(info.payload_len <= 256 << 20);
        assert_eq!(info.index_id, layout.index_id(&root).to_vec());
    }
}

/// One bucket as the client checks it: the fuzz input (after two bytes of
/// `P`) is the payload of bucket 0 of a one-bucket index that commits to
/// it, so every input passes the Merkle check and reaches the Golomb
/// parameter and decode checks. What the client accepts holds exactly `P`
/// entries. The bucket-number check of a GetBuckets answer runs on the
/// same bytes.
pub(crate) fn client_bucket(data: &[u8]) {
    use breachcheck_client::fuzzing;
    use proto::pb::{BucketChunk, IndexInfo};
    let mut b = Bytes(data);
    let p = u32::from(u16::from_le_bytes(b.take())).max(1);
    let payload = b.0.to_vec();
    let root = proto::leaf_hash(0, &payload);
    let f = proto::fingerprint_bits_for(p);
    let layout = proto::IndexLayout {
        public_key: GENERATOR,
        bucket_bits: 0,
        fingerprint_bits: f,
        bucket_entries: p,
        payload_len: payload.len() as u32,
    };
    let info = IndexInfo {
        suite: proto::SUITE.to_owned(),
        mode: 1,
        public_key: GENERATOR.to_vec(),
        fingerprint_bits: f,
        entry_count: u64::from(p),
        bucket_entries: p,
        payload_len: payload.len() as u32,
        bucket_root: root.to_vec(),
        index_id: layout.index_id(&root).to_vec(),
        ..IndexInfo::default()
    };
    if fuzzing::index_info(&info).is_ok() {
        let chunk = BucketChunk {
            bucket: 0,
            payload: payload.clone().into(),
            bucket_proof: Default::default(),
        };
        if let Ok(n) = fuzzing::bucket(&info, &chunk) {
            assert_eq!(n, p as usize);
        }
    }
    // Bucket numbers: the first half of the bytes asked, the rest sent.
    let nums: Vec<u32> = data.iter().map(|&x| u32::from(x % 16)).collect();
    let (asked, sent) = nums.split_at(nums.len() / 2);
    let expected: std::collections::BTreeSet<u32> = asked.iter().copied().collect();
    if fuzzing::answer(expected.clone(), sent).is_ok() {
        let mut s = sent.to_vec();
        s.sort_unstable();
        assert_eq!(s, expected.into_iter().collect::<Vec<_>>());
    }
}

/// An Evaluate response as the client checks it before the proof: the
/// input is a count of elements, then 32-byte elements, then the proof.
/// Accepted responses have one element per element sent.
pub(crate) fn client_response(data: &[u8]) {
    use breachcheck_client::fuzzing;
    let Ok(blinded) = proto::BlindedElement::from_bytes(&GENERATOR) else {
        return;
    };
    let Ok(key) = proto::PublicKey::from_bytes(&GENERATOR) else {
        return;
    };
    let sent = vec![blinded; 2];
    let mut b = Bytes(data);
    let n = usize::from(b.u8() % 5);
    let elements: Vec<Vec<u8>> = (0..n).map(|_| b.take::<32>().to_vec()).collect();
    let resp = proto::pb::EvaluateResponse {
        evaluated_elements: elements,
        proof: b.0.to_vec(),
    };
    if let Ok(accepted) = fuzzing::evaluate_response(&sent, &resp, &key) {
        assert_eq!(accepted, sent.len());
    }
}

// --- the browser client's decoders (#14) -------------------------------------

/// What the page's WebAssembly core reads from the server: a grpc-web
/// response body (frames and trailers) with or without a status in the
/// headers, and an IndexInfo message as a session. The first byte picks the
/// header status. Accepted messages are slices of the body, in order.
pub(crate) fn grpc_web(data: &[u8]) {
    let (first, body) = data.split_first().unwrap_or((&0, data));
    let header = match first % 4 {
        0 => None,
        1 => Some("0"),
        2 => Some("8"),
        _ => Some("x"),
    };
    if let Ok(messages) = breachcheck_web::messages(body, header, Some("m%20x%zz")) {
        assert!(header.is_none(), "a status in the headers ends the answer");
        let total: usize = messages.iter().map(|m| m.len() + 5).sum();
        assert!(total < body.len(), "the trailers frame is part of the body");
    }
    let _ = breachcheck_web::Session::new(body, None, None);
    let _ = breachcheck_web::Session::new(body, Some("00"), Some(&"ab".repeat(32)));
}
