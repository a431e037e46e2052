//! The one encoding of outside data (Channex ids, template, rule and schedule names) into
//! NATS KV key tokens.
//!
//! Owns: [`encode`] / [`decode`] and the alphabet they produce. Every KV key built from
//! data we do not control goes through [`encode`]; nothing else may escape or sanitise
//! key parts on its own (three ad-hoc escapers existed, one of them lossy: the cooldown
//! keys of templates `faq.wifi` and `faq_wifi` collided).
//! Must not: do I/O or know which bucket a key lives in.
//!
//! # The encoding
//! KV keys allow `[-/_=.a-zA-Z0-9]` and use `.` to separate tokens. A token keeps the bytes
//! `[-/_a-zA-Z0-9]` as they are and writes every other byte of the UTF-8 text (`.`, `=`,
//! spaces, CR/LF, `*`, `>`, non-ASCII) as `=XX` (two upper-case hex digits). The empty
//! string is the token `=` (a bare `=` never occurs otherwise, since every escape has two
//! hex digits). So the encoding is injective, [`decode`] inverts it, and a token never
//! contains `.`, `*`, `>` or whitespace.
//!
//! Compatibility: plain ids (letters, digits, `-`, `_`, `/`, so every Channex UUID) encode to
//! themselves, so keys written before this module existed stay valid. Only keys of names
//! with other characters change (e.g. template `faq.wifi`: old cooldown key token
//! `faq_wifi`, now `faq=2Ewifi`); such a cooldown mark is forgotten once after the upgrade.

/// The escape character; itself always escaped.
const ESCAPE: u8 = b'=';

/// Bytes that stand for themselves in a token.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/')
}

/// `raw` as one KV key token (never empty, never containing `.`).
pub fn encode(raw: &str) -> String {
    if raw.is_empty() {
        return "=".to_string();
    }
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            out.push(char::from(ESCAPE));
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        }
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(n & 0x0f)])
}

/// Why a token is not the output of [`encode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("byte {byte:#04x} at {at} is not allowed in an encoded key token")]
    Disallowed { at: usize, byte: u8 },
    #[error("escape at {at} is not followed by two upper-case hex digits")]
    BadEscape { at: usize },
    #[error("decoded bytes are not UTF-8")]
    NotUtf8,
}

/// The text [`encode`] made `token` from. Rejects anything `encode` cannot produce
/// (lower-case hex, a truncated escape, a plain `.`), so decode is the exact inverse.
pub fn decode(token: &str) -> Result<String, DecodeError> {
    if token == "=" {
        return Ok(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_plain(b) {
            out.push(b);
            i += 1;
        } else if b == ESCAPE {
            let byte = bytes
                .get(i + 1..i + 3)
                .and_then(|h| Some(hex_value(h[0])? << 4 | hex_value(h[1])?))
                .ok_or(DecodeError::BadEscape { at: i })?;
            if is_plain(byte) {
                // `encode` never escapes a plain byte: not its output.
                return Err(DecodeError::BadEscape { at: i });
            }
            out.push(byte);
            i += 3;
        } else {
            return Err(DecodeError::Disallowed { at: i, byte: b });
        }
    }
    if out.is_empty() {
        return Err(DecodeError::BadEscape { at: 0 });
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Whether every byte of `s` is allowed in a NATS KV key (`[-/_=.a-zA-Z0-9]`).
pub fn is_key_alphabet(s: &str) -> bool {
    s.bytes().all(|b| is_plain(b) || b == ESCAPE || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_encode_to_themselves() {
        for id in [
            "p1",
            "7c2d0e3c-1f7a-4f0e-9d39-6a1c1bd0c1a2",
            "a_b",
            "a/b",
            "X-9",
        ] {
            assert_eq!(encode(id), id);
            assert_eq!(decode(id).as_deref(), Ok(id));
        }
    }

    #[test]
    fn dot_and_underscore_no_longer_collide() {
        assert_ne!(encode("faq.wifi"), encode("faq_wifi"));
        assert_eq!(encode("faq.wifi"), "faq=2Ewifi");
        assert_eq!(encode(""), "=");
        assert_eq!(encode("="), "=3D");
        assert_eq!(encode("t1\r\n>*"), "t1=0D=0A=3E=2A");
        assert_eq!(decode("=").as_deref(), Ok(""));
    }

    #[test]
    fn decode_rejects_what_encode_never_produces() {
        for bad in ["a.b", "=2e", "=4", "=41", "a b", "==", "=FF"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
