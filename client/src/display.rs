//! Text for people: control characters escaped, anonymity sets in words.
//!
//! Everything a server says (breach ids, names, descriptions, status
//! messages) and everything a user's file holds can contain terminal escape
//! sequences. Human-readable output passes it through [`escape_controls`]
//! first, so a server cannot rewrite the user's screen, hide a line or
//! change a window title (#11). Machine-readable output (JSON, CSV) stays
//! exact: its own quoting is unambiguous.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Size of the numbering plan the privacy summary divides: the ~1.7 billion
/// allocated Chinese mobile numbers.
pub const NUMBERING_PLAN: f64 = 1.7e9;

/// `s` with every control character (C0, DEL, C1) and every Unicode
/// bidirectional override or isolate escaped as `\u{..}` (`\n`, `\r`, `\t`
/// as themselves escaped), and backslashes doubled so the escaping is
/// unambiguous. Text without any is borrowed as is.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The anonymity set of one number when the server learns `j` bits of its
/// hash: [`NUMBERING_PLAN`]` / 2^j`.
pub fn anonymity_set(j: u32) -> f64 {
    NUMBERING_PLAN / 2f64.powi(j.min(64) as i32)
}

/// What the server learned about the numbers of a check whose bucket
/// requests revealed at most `j` prefix bits (`None`: no bucket was
/// requested). The CLI prints it after every check, and the browser page
/// shows it with its own `j`.
pub fn privacy_statement(j: Option<u32>) -> String {
    match j {
        None => "no bucket was requested (all came from the cache); the server learned nothing \
                 about which numbers were checked"
            .to_owned(),
        Some(0) => "the whole index was downloaded (prefix bits 0); the server learned nothing \
                    about which numbers were checked"
            .to_owned(),
        Some(j) => format!(
            "the server learned {j} bits (prefix bits used) of a hash of each number: about {} \
             candidates each",
            human_count(anonymity_set(j))
        ),
    }
}

/// What the server learned about the numbers of a check made in PIR mode,
/// whose buckets came by `queries` PIR queries (and, when that was
/// cheaper, one whole-index download, `whole_index`).
pub fn pir_privacy_statement(queries: u64, whole_index: bool) -> String {
    let how = match (queries, whole_index) {
        (0, false) => "no bucket was requested (all came from the cache)".to_owned(),
        (0, true) => "the whole index was downloaded (cheaper than PIR)".to_owned(),
        (q, false) => format!("{q} bucket(s) fetched by PIR"),
        (q, true) => format!("{q} bucket(s) fetched by PIR and the whole index downloaded"),
    };
    format!("{how}; the server learned nothing about which numbers you checked")
}

/// A count in words: "104,000", "1.7 million", "1.7 billion".
pub fn human_count(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.1} billion", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1} million", x / 1e6)
    } else {
        let n = x.round() as u64;
        let digits = n.to_string();
        let mut out = String::new();
        for (i, d) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(d);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_escaped() {
        assert_eq!(escape_controls("weibo-2020"), "weibo-2020");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("\u{1b}[2J\u{1b}]0;pwned\u{7}x"),
            "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}x"
        );
        assert_eq!(escape_controls("a\nb\\c"), "a\\nb\\\\c");
        assert_eq!(escape_controls("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape_controls("abc\u{202E}fed"), "abc\\u{202e}fed");
        // Non-ASCII text stays readable.
        assert_eq!(escape_controls("微博 (0)"), "微博 (0)");
    }

    #[test]
    fn counts_read_well() {
        assert_eq!(human_count(anonymity_set(14)), "103,760");
        assert_eq!(human_count(anonymity_set(10)), "1.7 million");
        assert_eq!(human_count(anonymity_set(0)), "1.7 billion");
        assert_eq!(human_count(anonymity_set(24)), "101");
    }
}
