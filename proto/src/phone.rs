//! Canonicalisation of phone numbers to E.164, shared by the index build and
//! the client.
//!
//! Both sides must turn the same number into the same bytes, forever: the OPRF
//! input is the canonical string, so any disagreement is a silent false
//! negative. That rules out validity metadata that changes between library
//! releases (a new mobile range would drop numbers from one side only). The
//! rules here are therefore *shape* rules, fixed by this crate's version and
//! written out in `docs/PROTOCOL.md` §2:
//!
//! 1. Strip a `tel:` prefix and an extension (`ext`, `x`, `#`, `;ext=`).
//! 2. Keep digits (ASCII and full-width), drop separators (space, `-`, `.`,
//!    `(`, `)`, `/`, NBSP and their full-width forms) and invisible characters
//!    (zero-width space/joiners, word joiner, a byte-order mark); a `+` may
//!    only lead. Letters are an error. A `(0)` right after an international
//!    country code is the national trunk prefix written out of habit
//!    (`+44 (0)20 …`) and is dropped (except for Italy, +39, where the 0 is
//!    part of the number).
//! 3. International form: `+CC…`, `00CC…` (and `011CC…` from NANP regions).
//!    Otherwise the number is national to the default region: its trunk prefix
//!    is stripped and its country code put in front. From CN, a 13-digit
//!    `861…` is read as `+86 1…` (dumps often drop the `+`).
//! 4. The country code must be an ITU-assigned one. The national number must
//!    have a length allowed for that country; CN and NANP numbers must match
//!    their numbering plan's shape (CN mobile `1[3-9]` + 9 digits, CN
//!    fixed-line area code + subscriber, NANP `[2-9]XX[2-9]XXXXXX`).
//!
//! It is a single pass over the bytes with no allocation: about 30 ns a
//! number, so it never slows an index build.

use std::fmt;

/// Why a string is not a phone number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// Nothing but whitespace and separators.
    #[error("empty")]
    Empty,
    /// Contains letters (vanity numbers such as 1-800-FLOWERS are not supported).
    #[error("contains letters")]
    Letters,
    /// Contains a character that is neither a digit nor a separator, or a `+`
    /// that does not lead.
    #[error("contains an invalid character")]
    InvalidCharacter,
    /// Too few digits for any number of its country.
    #[error("too short")]
    TooShort,
    /// Too many digits (more than 15 in E.164, or more than its country allows).
    #[error("too long")]
    TooLong,
    /// A national number given without a default region to place it in.
    #[error("no country code and no default region")]
    NoCountryCode,
    /// The country calling code is not assigned.
    #[error("unknown country code")]
    UnknownCountryCode,
    /// Digits of a plausible length that do not fit the country's numbering plan.
    #[error("not a valid number for its region")]
    InvalidForRegion,
}

/// A region (ISO 3166-1 alpha-2) used to read numbers written without a
/// country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    code: [u8; 2],
    cc: u16,
    trunk: Trunk,
}

/// The national (trunk) prefix a region's numbers are dialled with at home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Trunk {
    /// None: the national number is dialled as is (and may start with 0).
    None,
    /// A digit that is dialled before the national number and stripped.
    Digit(u8),
}

/// Regions that can be default regions: (code, calling code, trunk prefix).
const REGIONS: &[(&str, u16, Trunk)] = &[
    ("CN", 86, Trunk::Digit(b'0')),
    ("US", 1, Trunk::Digit(b'1')),
    ("CA", 1, Trunk::Digit(b'1')),
    ("GB", 44, Trunk::Digit(b'0')),
    ("DE", 49, Trunk::Digit(b'0')),
    ("FR", 33, Trunk::Digit(b'0')),
    ("IN", 91, Trunk::Digit(b'0')),
    ("JP", 81, Trunk::Digit(b'0')),
    ("KR", 82, Trunk::Digit(b'0')),
    ("HK", 852, Trunk::None),
    ("MO", 853, Trunk::None),
    ("TW", 886, Trunk::Digit(b'0')),
    ("SG", 65, Trunk::None),
    ("AU", 61, Trunk::Digit(b'0')),
    ("NZ", 64, Trunk::Digit(b'0')),
    ("RU", 7, Trunk::Digit(b'8')),
    ("KZ", 7, Trunk::Digit(b'8')),
    ("IT", 39, Trunk::None),
    ("ES", 34, Trunk::None),
    ("PT", 351, Trunk::None),
    ("BR", 55, Trunk::Digit(b'0')),
    ("MX", 52, Trunk::None),
    ("AR", 54, Trunk::Digit(b'0')),
    ("CL", 56, Trunk::None),
    ("CO", 57, Trunk::None),
    ("PE", 51, Trunk::Digit(b'0')),
    ("NL", 31, Trunk::Digit(b'0')),
    ("BE", 32, Trunk::Digit(b'0')),
    ("CH", 41, Trunk::Digit(b'0')),
    ("AT", 43, Trunk::Digit(b'0')),
    ("SE", 46, Trunk::Digit(b'0')),
    ("NO", 47, Trunk::None),
    ("DK", 45, Trunk::None),
    ("FI", 358, Trunk::Digit(b'0')),
    ("PL", 48, Trunk::None),
    ("IE", 353, Trunk::Digit(b'0')),
    ("TR", 90, Trunk::Digit(b'0')),
    ("UA", 380, Trunk::Digit(b'0')),
    ("IL", 972, Trunk::Digit(b'0')),
    ("AE", 971, Trunk::Digit(b'0')),
    ("SA", 966, Trunk::Digit(b'0')),
    ("EG", 20, Trunk::Digit(b'0')),
    ("ZA", 27, Trunk::Digit(b'0')),
    ("NG", 234, Trunk::Digit(b'0')),
    ("ID", 62, Trunk::Digit(b'0')),
    ("MY", 60, Trunk::Digit(b'0')),
    ("TH", 66, Trunk::Digit(b'0')),
    ("VN", 84, Trunk::Digit(b'0')),
    ("PH", 63, Trunk::Digit(b'0')),
    ("PK", 92, Trunk::Digit(b'0')),
    ("BD", 880, Trunk::Digit(b'0')),
];

impl Region {
    /// The region with this ISO 3166-1 alpha-2 code (case-insensitive), if it
    /// is one breachcheck knows the dialling rules of.
    pub fn parse(code: &str) -> Option<Self> {
        let upper = code.trim().to_ascii_uppercase();
        REGIONS
            .iter()
            .find(|(c, _, _)| *c == upper)
            .map(|&(c, cc, trunk)| Region {
                code: [c.as_bytes()[0], c.as_bytes()[1]],
                cc,
                trunk,
            })
    }

    /// China, the default region of the reference corpus.
    pub fn cn() -> Self {
        Region {
            code: *b"CN",
            cc: 86,
            trunk: Trunk::Digit(b'0'),
        }
    }

    /// The two-letter code.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("??")
    }

    /// The country calling code.
    pub fn calling_code(&self) -> u16 {
        self.cc
    }

    /// Every region code [`Region::parse`] accepts.
    pub fn known() -> impl Iterator<Item = &'static str> {
        REGIONS.iter().map(|(c, _, _)| *c)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// ITU-T E.164 assigned country calling codes (a prefix-free set).
const CALLING_CODES: &[u16] = &[
    1, 7, 20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54,
    55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98, 211,
    212, 213, 216, 218, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234,
    235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253,
    254, 255, 256, 257, 258, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 290, 291, 297, 298,
    299, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 370, 371, 372, 373, 374, 375, 376, 377,
    378, 380, 381, 382, 383, 385, 386, 387, 389, 420, 421, 423, 500, 501, 502, 503, 504, 505, 506,
    507, 508, 509, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 670, 672, 673, 674, 675, 676,
    677, 678, 679, 680, 681, 682, 683, 685, 686, 687, 688, 689, 690, 691, 692, 800, 808, 850, 852,
    853, 855, 856, 870, 878, 880, 881, 882, 883, 886, 888, 960, 961, 962, 963, 964, 965, 966, 967,
    968, 970, 971, 972, 973, 974, 975, 976, 977, 979, 992, 993, 994, 995, 996, 998,
];

/// Allowed national-number lengths for countries whose plan is fixed-length
/// enough to say so; every other country allows 4 to (15 − len(cc)) digits.
const NATIONAL_LENGTHS: &[(u16, u8, u8)] = &[
    (1, 10, 10),
    (7, 10, 10),
    (33, 9, 9),
    (34, 9, 9),
    (44, 9, 10),
    (49, 6, 13),
    (61, 9, 9),
    (65, 8, 8),
    (81, 9, 10),
    (82, 8, 10),
    (86, 9, 11),
    (91, 10, 10),
    (852, 8, 8),
    (853, 8, 8),
    (886, 8, 9),
];

/// Longest E.164 number: 15 digits.
const MAX_DIGITS: usize = 15;
/// Longest input digit run considered before giving up as too long.
const SCAN_DIGITS: usize = 24;

/// A phone number in canonical E.164 form (`+` then at most 15 digits), stored
/// inline: parsing allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber {
    len: u8,
    buf: [u8; 1 + MAX_DIGITS],
}

impl PhoneNumber {
    /// Canonicalises `input`, reading a number without a country code as
    /// national to `default_region`.
    ///
    /// # Errors
    ///
    /// A [`PhoneError`] saying why the input is not a number.
    pub fn parse(input: &str, default_region: Option<Region>) -> Result<Self, PhoneError> {
        let scan = scan(input)?;
        let digits = &scan.digits[..scan.n];
        let (cc, mut national) = split_country(scan.plus, digits, default_region)?;
        // "(0)" right after an international country code: a trunk prefix.
        let international = scan.plus || digits.starts_with(b"00");
        let national_at = digits.len() - national.len();
        if international && cc != 39 && scan.trunk_zero == Some(national_at) {
            national = &national[1..];
        }
        validate(cc, national)?;
        let mut buf = [0u8; 1 + MAX_DIGITS];
        buf[0] = b'+';
        let mut len = 1;
        let cc_digits = [(cc / 100) as u8, (cc / 10 % 10) as u8, (cc % 10) as u8].map(|d| b'0' + d);
        let cc_digits = &cc_digits[3 - calling_code_len(cc)..];
        for &b in cc_digits.iter().chain(national) {
            if len > MAX_DIGITS {
                return Err(PhoneError::TooLong);
            }
            buf[len] = b;
            len += 1;
        }
        Ok(PhoneNumber {
            len: len as u8,
            buf,
        })
    }

    /// The E.164 string, e.g. `+8613800138000`.
    pub fn as_str(&self) -> &str {
        // Only ASCII '+' and digits are ever written into buf.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }

    /// The E.164 string as bytes: the OPRF input.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// The number with all but its country code, first three and last four
    /// national digits masked, for logs and samples (`+86138****8000`).
    pub fn masked(&self) -> String {
        mask(self.as_str())
    }
}

/// Masks the middle of a digit string, keeping at most the first 3+cc and last
/// 4 characters, so a log line never carries a whole number.
pub fn mask(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    if n <= 6 {
        return "*".repeat(n);
    }
    let keep_head = (n / 3).min(5);
    let keep_tail = 4.min(n - keep_head - 2);
    let mut out = String::with_capacity(n);
    for (i, c) in chars.iter().enumerate() {
        if i < keep_head || i >= n - keep_tail {
            out.push(*c);
        } else {
            out.push('*');
        }
    }
    out
}

impl fmt::Debug for PhoneNumber {
    // A phone number is the secret this product protects: Debug masks it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Steps 1 and 2.
fn scan(input: &str) -> Result<Scan, PhoneError> {
    let mut s = input.trim();
    if s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("tel:")) {
        s = &s[4..];
    }
    let mut digits = [0u8; SCAN_DIGITS];
    let mut n = 0usize;
    let mut plus = false;
    // Digit count at the last '(' and, when a group held exactly "0", the
    // position of that 0 (a possible "(0)" trunk prefix).
    let mut open: Option<usize> = None;
    let mut trunk_zero = None;
    for (i, c) in s.char_indices() {
        let digit = match c {
            '0'..='9' => Some(c as u8),
            // Full-width digits, as typed on CJK keyboards.
            '\u{FF10}'..='\u{FF19}' => Some(b'0' + (c as u32 - 0xFF10) as u8),
            _ => None,
        };
        if let Some(d) = digit {
            if n == SCAN_DIGITS {
                return Err(PhoneError::TooLong);
            }
            digits[n] = d;
            n += 1;
            continue;
        }
        match c {
            '+' | '\u{FF0B}' if n == 0 && !plus => plus = true,
            '(' | '\u{FF08}' => open = Some(n),
            ')' | '\u{FF09}' => {
                if let Some(at) = open.take()
                    && n == at + 1
                    && digits[at] == b'0'
                {
                    trunk_zero = Some(at);
                }
            }
            ' '
            | '\t'
            | '-'
            | '.'
            | '/'
            | '\u{00A0}'
            | '\u{2010}'..='\u{2015}'
            | '\u{FF0D}'
            | '\u{FF0E}'
            | '\u{FF0F}'
            | '\u{3000}'
            // Invisible: zero-width space, non-joiner, joiner, word joiner, BOM.
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FEFF}' => {}
            // An extension ends the number: "ext", "x", "#", ";ext=".
            '#' | ';' if n > 0 => break,
            'x' | 'X' | 'e' | 'E' if n > 0 && is_extension(&s[i..]) => break,
            c if c.is_alphabetic() => return Err(PhoneError::Letters),
            _ => return Err(PhoneError::InvalidCharacter),
        }
    }
    if n == 0 {
        return Err(PhoneError::Empty);
    }
    Ok(Scan {
        plus,
        digits,
        n,
        trunk_zero,
    })
}

/// What step 2 keeps of the input.
struct Scan {
    /// A leading `+`.
    plus: bool,
    digits: [u8; SCAN_DIGITS],
    /// Digits used in `digits`.
    n: usize,
    /// Index in `digits` of a `0` written alone in parentheses.
    trunk_zero: Option<usize>,
}

/// Whether `rest` (starting at a letter) is an extension marker followed by digits.
fn is_extension(rest: &str) -> bool {
    let lower = rest.to_ascii_lowercase();
    let after = ["extension", "ext.", "ext", "x"]
        .iter()
        .find_map(|m| lower.strip_prefix(m));
    match after {
        Some(tail) => {
            let tail = tail.trim_start_matches([' ', '.', ':', '=']);
            !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Step 3: splits off the country code, returning (cc, national digits).
fn split_country(
    plus: bool,
    digits: &[u8],
    region: Option<Region>,
) -> Result<(u16, &[u8]), PhoneError> {
    if plus {
        return split_calling_code(digits);
    }
    if let Some(rest) = digits.strip_prefix(b"00") {
        return split_calling_code(rest);
    }
    let Some(region) = region else {
        return Err(PhoneError::NoCountryCode);
    };
    if region.cc == 1
        && let Some(rest) = digits.strip_prefix(b"011")
    {
        return split_calling_code(rest);
    }
    // Dumps often drop the '+': from CN, 86 + a 11-digit mobile is international.
    if region.cc == 86 && digits.len() == 13 && digits.starts_with(b"861") {
        return Ok((86, &digits[2..]));
    }
    let national = match region.trunk {
        Trunk::Digit(t) if digits.first() == Some(&t) => &digits[1..],
        _ => digits,
    };
    Ok((region.cc, national))
}

fn split_calling_code(digits: &[u8]) -> Result<(u16, &[u8]), PhoneError> {
    for len in 1..=3 {
        if digits.len() < len {
            return Err(PhoneError::TooShort);
        }
        let cc = digits[..len]
            .iter()
            .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
        if CALLING_CODES.binary_search(&cc).is_ok() {
            return Ok((cc, &digits[len..]));
        }
    }
    Err(PhoneError::UnknownCountryCode)
}

fn calling_code_len(cc: u16) -> usize {
    if cc >= 100 {
        3
    } else if cc >= 10 {
        2
    } else {
        1
    }
}

/// Step 4: length and numbering-plan shape.
fn validate(cc: u16, national: &[u8]) -> Result<(), PhoneError> {
    let cc_len = calling_code_len(cc);
    let (min, max) = NATIONAL_LENGTHS
        .iter()
        .find(|(c, _, _)| *c == cc)
        .map(|&(_, lo, hi)| (lo as usize, hi as usize))
        .unwrap_or((4, MAX_DIGITS - cc_len));
    let n = national.len();
    match cc {
        86 => validate_cn(national),
        1 => {
            if n < 10 {
                Err(PhoneError::TooShort)
            } else if n > 10 {
                Err(PhoneError::TooLong)
            } else if national[0] < b'2' || national[3] < b'2' {
                // NANP: NPA and NXX both start with 2-9.
                Err(PhoneError::InvalidForRegion)
            } else {
                Ok(())
            }
        }
        _ if n < min => Err(PhoneError::TooShort),
        _ if n > max => Err(PhoneError::TooLong),
        _ if national[0] == b'0' && cc != 39 => Err(PhoneError::InvalidForRegion),
        _ => Ok(()),
    }
}

/// China: mobile `1[3-9]` + 9 digits; fixed line area code (`10`, `2X`, or
/// `[3-9]XX`) + a 7 or 8 digit subscriber number.
fn validate_cn(national: &[u8]) -> Result<(), PhoneError> {
    let n = national.len();
    match national.first() {
        Some(b'1') if national.get(1) == Some(&b'0') => match n {
            // Beijing: 10 + 8 digits.
            0..=9 => Err(PhoneError::TooShort),
            10 => Ok(()),
            _ => Err(PhoneError::TooLong),
        },
        Some(b'1') => match n {
            0..=10 => Err(PhoneError::TooShort),
            11 if matches!(national[1], b'3'..=b'9') => Ok(()),
            11 => Err(PhoneError::InvalidForRegion),
            _ => Err(PhoneError::TooLong),
        },
        Some(b'2') => match n {
            0..=8 => Err(PhoneError::TooShort),
            9 | 10 => Ok(()),
            _ => Err(PhoneError::TooLong),
        },
        Some(b'3'..=b'9') => match n {
            0..=9 => Err(PhoneError::TooShort),
            10 | 11 => Ok(()),
            _ => Err(PhoneError::TooLong),
        },
        Some(_) => Err(PhoneError::InvalidForRegion),
        None => Err(PhoneError::TooShort),
    }
}

#[cfg(test)]
mod tests;
