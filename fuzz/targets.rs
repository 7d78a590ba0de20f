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
];
