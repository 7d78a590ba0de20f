//! Bucket arithmetic and payload codec tests.

use super::*;
use proptest::prelude::*;

#[test]
fn bucket_value_is_blake3_derive_key() {
    let x = b"+8613800138000";
    let full = blake3::derive_key(BUCKET_CONTEXT, x);
    assert_eq!(
        bucket_value(x),
        u32::from_be_bytes([full[0], full[1], full[2], full[3]])
    );
}

#[test]
fn prefixes_cover_their_buckets() {
    assert_eq!(buckets_under_prefix(0, 0, 3), 0..8);
    assert_eq!(buckets_under_prefix(5, 3, 3), 5..6);
    assert_eq!(buckets_under_prefix(1, 1, 4), 8..16);
    let v = 0xDEAD_BEEF;
    let b = top_bits(v, 16);
    assert!(buckets_under_prefix(top_bits(v, 10), 10, 16).contains(&b));
    assert_eq!(top_bits(v, 0), 0);
    assert_eq!(top_bits(v, 32), v);
}

#[test]
fn fingerprint_bits_keep_false_positives_below_2_pow_32() {
    assert_eq!(fingerprint_bits_for(1), 32);
    assert_eq!(fingerprint_bits_for(4096), 44);
    assert_eq!(fingerprint_bits_for(4097), 45);
    for n in [1u32, 7, 1000, 4096, 5000, 100_000] {
        let f = fingerprint_bits_for(n);
        assert!(f64::from(n) / 2f64.powi(f as i32) <= 2f64.powi(-32));
    }
}

#[test]
fn fingerprint_takes_the_leading_bits() {
    let mut out = [0u8; 64];
    out[0] = 0xAB;
    out[1] = 0xCD;
    assert_eq!(fingerprint(&out, 8), 0xAB);
    assert_eq!(fingerprint(&out, 16), 0xABCD);
    assert_eq!(fingerprint(&out, 64), 0xABCD << 48);
}

#[test]
fn label_seal_is_an_involution() {
    let out = [7u8; 64];
    let mut label = [1u8, 2];
    seal_label(&out, &mut label);
    assert_ne!(label, [1, 2]);
    seal_label(&out, &mut label);
    assert_eq!(label, [1, 2]);
}

fn sorted_random(n: usize, f: u32, seed: u64) -> Vec<u64> {
    let mut x = seed | 1;
    let mut v: Vec<u64> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if f == 64 { x } else { x >> (64 - f) }
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn payload_round_trips_with_labels_and_padding() {
    let fps = sorted_random(3000, 44, 42);
    let labels: Vec<u8> = (0..fps.len() * 2).map(|i| i as u8).collect();
    let bytes = encode_payload(&fps, &labels, 2, 44, 20_000).expect("encode");
    assert_eq!(bytes.len(), 20_000);
    let p = Payload::decode(&bytes).expect("decode");
    assert_eq!(p.fingerprints, fps);
    assert_eq!(p.label(5), Some(&labels[10..12]));
    assert!(p.contains(fps[1234]));
    assert!(!p.contains(fps[1234] + 1) || fps.contains(&(fps[1234] + 1)));
}

#[test]
fn payload_without_labels_is_under_4_5_bytes_per_entry() {
    // f chosen for 2^-32 false positives at 4096 entries.
    let n = 4096;
    let f = fingerprint_bits_for(n as u32);
    let fps = sorted_random(n, f, 7);
    let bytes = encode_payload(&fps, &[], 0, f, 0).expect("encode");
    let per_entry = bytes.len() as f64 / n as f64;
    assert!(per_entry <= 4.3, "{per_entry} bytes per entry");
}

#[test]
fn truncated_and_corrupt_payloads_are_errors() {
    let fps = sorted_random(100, 40, 3);
    let bytes = encode_payload(&fps, &[], 0, 40, 0).expect("encode");
    assert!(Payload::decode(&bytes[..bytes.len() - 20]).is_err());
    assert!(Payload::decode(&bytes[..10]).is_err());
    let mut bad = bytes.clone();
    bad[0] = 9;
    assert!(Payload::decode(&bad).is_err());
    let mut bad = bytes.clone();
    bad[8..16].copy_from_slice(&0u64.to_le_bytes());
    assert!(Payload::decode(&bad).is_err());
    let mut bad = bytes;
    bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(Payload::decode(&bad).is_err());
}

#[test]
fn encoder_rejects_unsorted_or_wide_values() {
    assert!(encode_payload(&[5, 3], &[], 0, 8, 0).is_err());
    assert!(encode_payload(&[300], &[], 0, 8, 0).is_err());
    assert!(encode_payload(&[1], &[0], 2, 8, 0).is_err());
}

proptest! {
    #[test]
    fn payload_codec_round_trips(
        mut fps in proptest::collection::vec(any::<u64>(), 0..300),
        f in 1u32..=64,
        width in 0u8..3,
    ) {
        for fp in &mut fps {
            if f < 64 { *fp >>= 64 - f; }
        }
        fps.sort_unstable();
        let labels: Vec<u8> = (0..fps.len() * usize::from(width)).map(|i| (i * 7) as u8).collect();
        let bytes = encode_payload(&fps, &labels, width, f, 0).expect("encode");
        let p = Payload::decode(&bytes).expect("decode");
        prop_assert_eq!(&p.fingerprints, &fps);
        prop_assert_eq!(&p.labels[..], &labels[..]);
    }

    #[test]
    fn payload_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Payload::decode(&bytes);
    }
}

#[test]
fn label_width_above_4_is_rejected() {
    // See: #9. A width of 8 used to decode, and the client then panicked
    // copying an 8-byte label into a 4-byte mask.
    let fps = sorted_random(50, 44, 5);
    let bytes = encode_payload(&fps, &[0; 50 * 4], 4, 44, 0).expect("encode");
    let mut wide = bytes[..PAYLOAD_HEADER_LEN].to_vec();
    wide[1] = 8;
    wide.extend_from_slice(&vec![0; 50 * 8]);
    wide.extend_from_slice(&bytes[PAYLOAD_HEADER_LEN + 50 * 4..]);
    assert_eq!(
        Payload::decode(&wide),
        Err(ProtocolError::InvalidPayload("label width above 4 bytes"))
    );
    assert!(encode_payload(&fps, &vec![0; 50 * 8], 8, 44, 0).is_err());
}

#[test]
fn non_zero_reserved_byte_or_padding_is_rejected() {
    let fps = sorted_random(100, 44, 9);
    let bytes = encode_payload(&fps, &[], 0, 44, 2_000).expect("encode");
    assert!(Payload::decode(&bytes).is_ok());
    let mut bad = bytes.clone();
    bad[3] = 1;
    assert_eq!(
        Payload::decode(&bad),
        Err(ProtocolError::InvalidPayload("non-zero reserved byte"))
    );
    let mut bad = bytes.clone();
    *bad.last_mut().expect("padded") = 0x80;
    assert_eq!(
        Payload::decode(&bad),
        Err(ProtocolError::InvalidPayload("non-zero padding"))
    );
}

#[test]
fn decode_expecting_checks_width_and_count_before_decoding() {
    let fps = sorted_random(100, 44, 9);
    let bytes = encode_payload(&fps, &[], 0, 44, 0).expect("encode");
    assert!(Payload::decode_expecting(&bytes, 44, 100).is_ok());
    assert!(Payload::decode_expecting(&bytes, 45, 100).is_err());
    assert!(Payload::decode_expecting(&bytes, 44, 99).is_err());
    assert!(Payload::decode_expecting(&bytes[..5], 44, 100).is_err());
}

#[test]
fn count_is_bounded_by_the_bytes_received() {
    // A tiny payload that claims 2^32 - 1 entries with m = 1 (one bit each)
    // must be refused before a vector of that size is reserved.
    let mut bytes = vec![PAYLOAD_VERSION, 0, 44, 0];
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&[0xFF; 64]);
    assert_eq!(
        Payload::decode(&bytes),
        Err(ProtocolError::InvalidPayload(
            "count exceeds the bit stream"
        ))
    );
}

#[test]
fn breach_mask_decrypts_the_label_of_the_matching_entry() {
    let mut fps = sorted_random(200, 44, 11);
    let mut out = [0u8; 64];
    out[..8].copy_from_slice(&0x1234_5678_9abc_u64.wrapping_shl(20).to_be_bytes());
    let fp = fingerprint(&out, 44);
    fps.push(fp);
    fps.sort_unstable();
    fps.dedup();
    let i = fps.iter().position(|&x| x == fp).expect("inserted");
    let mut labels = vec![0u8; fps.len() * 4];
    let mut mine = 0b101u32.to_le_bytes();
    seal_label(&out, &mut mine);
    labels[i * 4..i * 4 + 4].copy_from_slice(&mine);
    let bytes = encode_payload(&fps, &labels, 4, 44, 0).expect("encode");
    let p = Payload::decode(&bytes).expect("decode");
    assert_eq!(p.breach_mask(&out), Some(0b101));
    let mut other = out;
    other[0] ^= 0x80;
    assert_eq!(p.breach_mask(&other), None);

    let unlabelled = encode_payload(&fps, &[], 0, 44, 0).expect("encode");
    let p = Payload::decode(&unlabelled).expect("decode");
    assert_eq!(p.breach_mask(&out), Some(u32::MAX));
}
