//! The canonicalisation table and its properties.

use super::*;
use proptest::prelude::*;

fn cn() -> Option<Region> {
    Some(Region::cn())
}

fn us() -> Option<Region> {
    Region::parse("US")
}

/// (input, default region, expected E.164 or error)
fn table() -> Vec<(
    &'static str,
    Option<Region>,
    Result<&'static str, PhoneError>,
)> {
    use PhoneError::*;
    vec![
        // What people paste, and what leak dumps hold.
        ("+86 138-0013-8000", cn(), Ok("+8613800138000")),
        ("008613800138000", cn(), Ok("+8613800138000")),
        ("8613800138000", cn(), Ok("+8613800138000")),
        ("13800138000", cn(), Ok("+8613800138000")),
        ("+8613800138000", None, Ok("+8613800138000")),
        ("+86 138 0013 8000", None, Ok("+8613800138000")),
        ("138-0013-8000", cn(), Ok("+8613800138000")),
        ("(138) 0013 8000", cn(), Ok("+8613800138000")),
        ("138.0013.8000", cn(), Ok("+8613800138000")),
        ("  13800138000\t", cn(), Ok("+8613800138000")),
        ("１３８００１３８０００", cn(), Ok("+8613800138000")),
        ("＋８６１３８００１３８０００", None, Ok("+8613800138000")),
        ("tel:+86-138-0013-8000", None, Ok("+8613800138000")),
        // See: #11. Invisible characters, full-width brackets, "(0)" trunks.
        ("\u{FEFF}13800138000", cn(), Ok("+8613800138000")),
        (
            "138\u{200B}0013\u{200D}8000\u{2060}",
            cn(),
            Ok("+8613800138000"),
        ),
        ("（86）138 0013 8000", cn(), Ok("+8613800138000")),
        ("+（86）138 0013 8000", None, Ok("+8613800138000")),
        ("（０１０）６５５２ ９９８８", cn(), Ok("+861065529988")),
        ("+44 (0)20 7946 0000", None, Ok("+442079460000")),
        ("0044 (0)20 7946 0000", None, Ok("+442079460000")),
        ("+86 (0)10 6552 9988", None, Ok("+861065529988")),
        ("+39 (0)6 1234 5678", None, Ok("+390612345678")),
        ("+44 20 (0)7946 0000", None, Err(TooLong)),
        ("13800138000 ext. 12", cn(), Ok("+8613800138000")),
        ("13800138000;ext=12", cn(), Ok("+8613800138000")),
        ("16100001234", cn(), Ok("+8616100001234")),
        ("19912345678", cn(), Ok("+8619912345678")),
        ("17900000001", cn(), Ok("+8617900000001")),
        ("010 1234 5678", cn(), Ok("+861012345678")),
        ("0755-12345678", cn(), Ok("+8675512345678")),
        ("+86 21 1234 5678", None, Ok("+862112345678")),
        ("(415) 555-2671", us(), Ok("+14155552671")),
        ("1 (415) 555-2671", us(), Ok("+14155552671")),
        ("+1 415 555 2671", None, Ok("+14155552671")),
        ("011 86 138 0013 8000", us(), Ok("+8613800138000")),
        ("+44 20 7946 0958", None, Ok("+442079460958")),
        ("020 7946 0958", Region::parse("GB"), Ok("+442079460958")),
        ("+49 30 123456", None, Ok("+4930123456")),
        ("+852 9123 4567", None, Ok("+85291234567")),
        ("+39 06 1234 5678", None, Ok("+390612345678")),
        ("+7 912 345 67 89", None, Ok("+79123456789")),
        ("8 912 345 67 89", Region::parse("RU"), Ok("+79123456789")),
        // Errors, each with its reason.
        ("", cn(), Err(Empty)),
        ("  - ( ) ", cn(), Err(Empty)),
        ("abc", cn(), Err(Letters)),
        ("1-800-FLOWERS", us(), Err(Letters)),
        ("138001380*0", cn(), Err(InvalidCharacter)),
        ("138+00138000", cn(), Err(InvalidCharacter)),
        ("12345", cn(), Err(TooShort)),
        ("1380013800", cn(), Err(TooShort)),
        ("138001380001", cn(), Err(TooLong)),
        ("+86 12345678901", None, Err(InvalidForRegion)),
        ("23800138000", cn(), Err(TooLong)),
        ("0013800138000", cn(), Err(InvalidForRegion)),
        ("+999 1234 5678", None, Err(UnknownCountryCode)),
        ("13800138000", None, Err(NoCountryCode)),
        ("(415) 555-267", us(), Err(TooShort)),
        ("(015) 555-2671", us(), Err(InvalidForRegion)),
        ("+1 415 155 2671", None, Err(InvalidForRegion)),
        ("1234567890123456789012345", cn(), Err(TooLong)),
        ("+44 12", None, Err(TooShort)),
        ("+", None, Err(Empty)),
    ]
}

#[test]
fn canonicalisation_table() {
    let rows = table();
    assert!(rows.len() >= 40);
    for (input, region, expected) in rows {
        let got = PhoneNumber::parse(input, region);
        assert_eq!(
            got.as_ref().map(|p| p.as_str()).map_err(|e| *e),
            expected,
            "input {input:?} region {region:?}"
        );
    }
}

#[test]
fn debug_masks_the_number() {
    let p = PhoneNumber::parse("13800138000", cn()).expect("valid");
    let d = format!("{p:?}");
    assert!(!d.contains("13800138000"), "{d}");
    assert!(d.contains("8000"));
}

#[test]
fn mask_keeps_head_and_tail_only() {
    assert_eq!(mask("13800138000"), "138****8000");
    assert_eq!(mask("12345"), "*****");
}

#[test]
fn region_parse_is_case_insensitive() {
    assert_eq!(Region::parse("cn"), Some(Region::cn()));
    assert_eq!(Region::parse("XX"), None);
}

proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,40}") {
        let _ = PhoneNumber::parse(&s, cn());
        let _ = PhoneNumber::parse(&s, None);
    }

    #[test]
    fn parse_never_panics_on_digit_soup(s in "[0-9+ ()\\-.x]{0,30}") {
        let _ = PhoneNumber::parse(&s, us());
    }

    #[test]
    fn canonicalisation_is_idempotent(
        prefix in 3u8..10,
        rest in 0u64..1_000_000_000,
        fmt in 0usize..5,
    ) {
        let national = format!("1{prefix}{rest:09}");
        let input = match fmt {
            0 => national.clone(),
            1 => format!("+86 {national}"),
            2 => format!("0086{national}"),
            3 => format!("86{national}"),
            _ => format!("{}-{}-{}", &national[..3], &national[3..7], &national[7..]),
        };
        let once = PhoneNumber::parse(&input, cn()).expect("valid CN mobile");
        prop_assert_eq!(once.as_str(), format!("+86{national}"));
        for region in [None, cn(), us()] {
            let twice = PhoneNumber::parse(once.as_str(), region).expect("canonical reparses");
            prop_assert_eq!(twice, once);
        }
    }
}
