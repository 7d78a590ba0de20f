//! The one reader of text files of phone numbers, shared by the index build
//! (leak dumps) and the CLI (the user's list), so a line is read the same way
//! on both sides of the protocol.
//!
//! [`TextReader`] wraps any `BufRead` and yields UTF-8 lines in bounded
//! memory:
//!
//! * a UTF-8 byte-order mark at the start is dropped;
//! * UTF-16 (little- or big-endian, with a byte-order mark, or without one
//!   when the first two code units are ASCII) is transcoded to UTF-8, with
//!   unpaired surrogates as U+FFFD;
//! * a line longer than [`MAX_LINE`] bytes is never buffered whole: it is
//!   skipped and stands as one line reading [`OVERLONG_LINE`], so a reader
//!   counts it as one invalid row and memory stays bounded whatever the input
//!   (a gzip bomb of one 2 GB line costs 64 KiB).
//!
//! Bytes that are not valid UTF-8 in a UTF-8 file are passed through: callers
//! read lines as bytes and replace them lossily, so such a line is an invalid
//! row, never the end of the input.

use std::io::{self, BufRead, Read};

/// The longest line kept, in bytes of UTF-8 (newline included).
pub const MAX_LINE: usize = 64 * 1024;

/// What a line longer than [`MAX_LINE`] reads as (without its newline).
pub const OVERLONG_LINE: &str = "\u{FFFD}line too long\u{FFFD}";

/// The encoding a [`TextReader`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextEncoding {
    /// UTF-8 (or anything that is not UTF-16), BOM dropped.
    Utf8,
    /// UTF-16, little-endian.
    Utf16Le,
    /// UTF-16, big-endian.
    Utf16Be,
}

/// A `BufRead` of UTF-8 lines over a UTF-8 or UTF-16 source; see the module
/// docs.
#[derive(Debug)]
pub struct TextReader<R> {
    inner: R,
    encoding: Option<TextEncoding>,
    /// The current line, served from `pos`.
    line: Vec<u8>,
    pos: usize,
    overlong: u64,
}

impl<R: BufRead> TextReader<R> {
    /// Wraps `inner`; the encoding is detected at the first read.
    pub fn new(inner: R) -> Self {
        TextReader {
            inner,
            encoding: None,
            line: Vec::new(),
            pos: 0,
            overlong: 0,
        }
    }

    /// The encoding found (`None` before the first read).
    pub fn encoding(&self) -> Option<TextEncoding> {
        self.encoding
    }

    /// How many lines were longer than [`MAX_LINE`] so far.
    pub fn overlong_lines(&self) -> u64 {
        self.overlong
    }

    fn detect(&mut self) -> io::Result<TextEncoding> {
        let head = self.inner.fill_buf()?;
        let (encoding, bom) = match head {
            [0xEF, 0xBB, 0xBF, ..] => (TextEncoding::Utf8, 3),
            [0xFF, 0xFE, ..] => (TextEncoding::Utf16Le, 2),
            [0xFE, 0xFF, ..] => (TextEncoding::Utf16Be, 2),
            [a, 0, b, 0, ..] if *a != 0 && a.is_ascii() && b.is_ascii() => {
                (TextEncoding::Utf16Le, 0)
            }
            [0, a, 0, b, ..] if *a != 0 && a.is_ascii() && b.is_ascii() => {
                (TextEncoding::Utf16Be, 0)
            }
            _ => (TextEncoding::Utf8, 0),
        };
        self.inner.consume(bom);
        self.encoding = Some(encoding);
        Ok(encoding)
    }

    /// Reads the next line into `self.line`; empty at the end of input.
    fn next_line(&mut self) -> io::Result<()> {
        self.line.clear();
        self.pos = 0;
        let encoding = match self.encoding {
            Some(e) => e,
            None => self.detect()?,
        };
        let mut too_long = false;
        let mut newline = false;
        match encoding {
            TextEncoding::Utf8 => {
                while !newline {
                    let buf = self.inner.fill_buf()?;
                    if buf.is_empty() {
                        break;
                    }
                    let take = match buf.iter().position(|&b| b == b'\n') {
                        Some(i) => {
                            newline = true;
                            i + 1
                        }
                        None => buf.len(),
                    };
                    if !too_long {
                        if self.line.len() + take > MAX_LINE {
                            too_long = true;
                            self.line.clear();
                        } else {
                            self.line.extend_from_slice(&buf[..take]);
                        }
                    }
                    self.inner.consume(take);
                }
            }
            TextEncoding::Utf16Le | TextEncoding::Utf16Be => {
                let le = encoding == TextEncoding::Utf16Le;
                let mut high: Option<u16> = None;
                while !newline {
                    let Some(unit) = self.code_unit(le)? else {
                        if high.is_some() {
                            self.push_char(char::REPLACEMENT_CHARACTER, &mut too_long);
                        }
                        break;
                    };
                    let c = match (high.take(), unit) {
                        (None, 0xD800..=0xDBFF) => {
                            high = Some(unit);
                            continue;
                        }
                        (Some(h), 0xDC00..=0xDFFF) => char::decode_utf16([h, unit])
                            .next()
                            .and_then(Result::ok)
                            .unwrap_or(char::REPLACEMENT_CHARACTER),
                        (Some(_), _) => {
                            // An unpaired high surrogate, then this unit anew.
                            self.push_char(char::REPLACEMENT_CHARACTER, &mut too_long);
                            char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER)
                        }
                        (None, _) => {
                            char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER)
                        }
                    };
                    if c == '\u{FEFF}' && self.line.is_empty() && !too_long {
                        // A BOM the detection did not consume (BOM-less
                        // detection never sees one; this is belt and braces).
                        continue;
                    }
                    self.push_char(c, &mut too_long);
                    newline = c == '\n';
                }
            }
        }
        if too_long {
            self.overlong += 1;
            self.line.clear();
            self.line.extend_from_slice(OVERLONG_LINE.as_bytes());
            if newline {
                self.line.push(b'\n');
            }
        }
        Ok(())
    }

    fn push_char(&mut self, c: char, too_long: &mut bool) {
        if *too_long {
            return;
        }
        let mut utf8 = [0u8; 4];
        let s = c.encode_utf8(&mut utf8);
        if self.line.len() + s.len() > MAX_LINE {
            *too_long = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(s.as_bytes());
        }
    }

    /// One UTF-16 code unit; `None` at the end (a lone last byte is dropped).
    fn code_unit(&mut self, le: bool) -> io::Result<Option<u16>> {
        let mut pair = [0u8; 2];
        let mut got = 0;
        while got < 2 {
            let buf = self.inner.fill_buf()?;
            let Some(&b) = buf.first() else {
                return Ok(None);
            };
            pair[got] = b;
            got += 1;
            self.inner.consume(1);
        }
        Ok(Some(if le {
            u16::from_le_bytes(pair)
        } else {
            u16::from_be_bytes(pair)
        }))
    }
}

impl<R: BufRead> Read for TextReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let buf = self.fill_buf()?;
            let n = buf.len().min(out.len());
            out[..n].copy_from_slice(&buf[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for TextReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.line.len() {
            self.next_line()?;
        }
        Ok(&self.line[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.line.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(bytes: &[u8]) -> Vec<String> {
        let mut r = TextReader::new(io::BufReader::with_capacity(7, bytes));
        let mut out = Vec::new();
        let mut line = Vec::new();
        while r.read_until(b'\n', &mut line).expect("read") > 0 {
            out.push(String::from_utf8_lossy(&line).trim_end().to_owned());
            line.clear();
        }
        out
    }

    fn utf16(s: &str, le: bool, bom: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let units = bom.then_some(0xFEFF).into_iter().chain(s.encode_utf16());
        for u in units {
            out.extend_from_slice(&if le { u.to_le_bytes() } else { u.to_be_bytes() });
        }
        out
    }

    #[test]
    fn utf8_bom_is_dropped() {
        // See: #11. The BOM used to glue itself to the first number.
        assert_eq!(lines(b"\xEF\xBB\xBF13800138000\n2\n"), ["13800138000", "2"]);
    }

    #[test]
    fn utf16_with_and_without_bom_is_transcoded() {
        let text = "13800138000\r\n+86 159 1234 5678\n（86）138\n";
        let want = ["13800138000", "+86 159 1234 5678", "（86）138"];
        for le in [true, false] {
            for bom in [true, false] {
                assert_eq!(lines(&utf16(text, le, bom)), want, "le={le} bom={bom}");
            }
        }
        let be = utf16("1\n", false, true);
        let mut r = TextReader::new(&be[..]);
        let mut s = String::new();
        r.read_to_string(&mut s).expect("read");
        assert_eq!(r.encoding(), Some(TextEncoding::Utf16Be));
    }

    #[test]
    fn surrogate_pairs_and_lone_surrogates() {
        let mut bytes = utf16("a😀b\n", true, true);
        assert_eq!(lines(&bytes), ["a😀b"]);
        // A lone high surrogate before 'b'.
        bytes = [0xFF, 0xFE, b'a', 0, 0x3D, 0xD8, b'b', 0, b'\n', 0].to_vec();
        assert_eq!(lines(&bytes), ["a\u{FFFD}b"]);
    }

    #[test]
    fn overlong_lines_are_one_marker_line_in_bounded_memory() {
        let mut dump = b"13800138000\n".to_vec();
        dump.extend(std::iter::repeat_n(0u8, 3 * MAX_LINE));
        dump.extend_from_slice(b"\n15912345678\n");
        let mut r = TextReader::new(io::BufReader::new(&dump[..]));
        let mut got = Vec::new();
        let mut line = Vec::new();
        while r.read_until(b'\n', &mut line).expect("read") > 0 {
            assert!(r.line.capacity() <= 2 * MAX_LINE);
            got.push(String::from_utf8_lossy(&line).trim_end().to_owned());
            line.clear();
        }
        assert_eq!(got, ["13800138000", OVERLONG_LINE, "15912345678"]);
        assert_eq!(r.overlong_lines(), 1);
        // Exactly MAX_LINE bytes (newline included) still fits.
        let mut exact = vec![b'1'; MAX_LINE - 1];
        exact.push(b'\n');
        assert_eq!(lines(&exact)[0].len(), MAX_LINE - 1);
    }

    #[test]
    fn invalid_utf8_passes_through_as_bytes() {
        assert_eq!(lines(b"\xFF138\n2"), ["\u{FFFD}138", "2"]);
    }

    proptest! {
        #[test]
        fn never_panics_and_keeps_utf8_text(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut r = TextReader::new(&bytes[..]);
            let mut out = Vec::new();
            r.read_to_end(&mut out).expect("read");
            if !bytes.starts_with(&[0xEF, 0xBB, 0xBF]) && r.encoding() == Some(TextEncoding::Utf8) {
                prop_assert_eq!(out, bytes);
            }
        }
    }
}
