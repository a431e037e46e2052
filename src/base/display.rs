//! Outside text made safe to show to a person: the one sanitiser every display edge uses
//! (the console's pages and live rows, alert texts, the command line's tables).
//!
//! Owns [`sanitize`]: control characters (C0 but tab and line feed, DEL, C1) become a
//! visible U+FFFD, so a NUL or an ESC sequence can neither hide text nor drive a terminal;
//! bidirectional formatting characters (the embeddings and overrides U+202A–U+202E, the
//! isolates U+2066–U+2069, the marks U+200E, U+200F and U+061C) are removed, so text
//! shows in its logical order and "gnp.exe" cannot read as "exe.png" (right-to-left
//! scripts still show right to left: that comes from their letters, not from these); and a
//! field longer than its cap is cut, ending in a visible `…`.
//!
//! Must not: escape HTML (maud does that where the text is rendered) or change text that
//! needs none of this (it is then borrowed, not copied).

use std::borrow::Cow;

/// What ends a field that was cut.
pub const ELLIPSIS: char = '…';
/// What a control character shows as.
pub const REPLACEMENT: char = char::REPLACEMENT_CHARACTER;

/// Whether line breaks survive: message bodies keep theirs, names and titles are one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Line feeds and tabs stay (a CR before a LF is dropped, a lone CR becomes a LF).
    Keep,
    /// Every line feed, CR and tab becomes a space.
    Join,
}

/// Is `c` a bidirectional formatting character (embedding, override, isolate or mark)?
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

/// What `c` shows as: itself, a replacement, or nothing.
fn shown_as(c: char, next: Option<char>, lines: Lines) -> Option<char> {
    match c {
        '\n' | '\t' if lines == Lines::Keep => Some(c),
        '\r' if lines == Lines::Keep => (next != Some('\n')).then_some('\n'),
        '\n' | '\t' | '\r' => Some(' '),
        c if c.is_control() => Some(REPLACEMENT),
        c if is_bidi_control(c) => None,
        c => Some(c),
    }
}

fn needs_work(text: &str, max_chars: usize, lines: Lines) -> bool {
    let mut count = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        count += 1;
        if count > max_chars || shown_as(c, chars.peek().copied(), lines) != Some(c) {
            return true;
        }
    }
    false
}

/// `text` as it may be shown: controls replaced, bidi formatting removed, and at most
/// `max_chars` characters (counted after cleaning), the last of which is `…` when the text
/// was longer. A `max_chars` of 0 shows nothing.
pub fn sanitize(text: &str, max_chars: usize, lines: Lines) -> Cow<'_, str> {
    if !needs_work(text, max_chars, lines) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    let mut count = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let Some(shown) = shown_as(c, chars.peek().copied(), lines) else {
            continue;
        };
        if count + 1 == max_chars && chars.peek().is_some() {
            // One character left: it is the ellipsis if anything visible follows.
            let rest_visible = chars.clone().any(|n| shown_as(n, None, lines).is_some());
            out.push(if rest_visible { ELLIPSIS } else { shown });
            return Cow::Owned(out);
        }
        if count == max_chars {
            return Cow::Owned(out);
        }
        out.push(shown);
        count += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let text = "Olá! Where is the key?\nThanks";
        assert!(matches!(
            sanitize(text, 100, Lines::Keep),
            Cow::Borrowed(t) if t == text
        ));
        // Right-to-left letters are not controls: they stay.
        let hebrew = "שלום, איפה המפתח?";
        assert_eq!(sanitize(hebrew, 100, Lines::Join), hebrew);
    }

    #[test]
    fn controls_show_as_replacements_and_bidi_formatting_goes() {
        let evil =
            "photo\u{202E}gnp.exe\u{0}\u{1b}[31m\u{7f}\u{85}\u{2066}x\u{2069}\u{200F}\u{61C}";
        assert_eq!(
            sanitize(evil, 100, Lines::Keep),
            "photognp.exe\u{FFFD}\u{FFFD}[31m\u{FFFD}\u{FFFD}x"
        );
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{2067}', '\u{2068}', '\u{200E}',
        ] {
            assert_eq!(sanitize(&format!("a{c}b"), 10, Lines::Join), "ab", "{c:?}");
        }
    }

    #[test]
    fn line_breaks_are_kept_or_joined() {
        assert_eq!(sanitize("a\r\nb\rc\td", 100, Lines::Keep), "a\nb\nc\td");
        assert_eq!(sanitize("a\r\nb\rc\td", 100, Lines::Join), "a  b c d");
    }

    #[test]
    fn long_fields_are_cut_with_a_visible_ellipsis() {
        let title = "x".repeat(200 * 1024);
        let shown = sanitize(&title, 200, Lines::Join);
        assert_eq!(shown.chars().count(), 200);
        assert!(shown.ends_with(ELLIPSIS));
        assert_eq!(sanitize("abcdef", 6, Lines::Join), "abcdef");
        assert_eq!(sanitize("abcdefg", 6, Lines::Join), "abcde…");
        // Removed characters do not count, and do not make a cut text look longer.
        assert_eq!(sanitize("abcde\u{202E}", 5, Lines::Join), "abcde");
        assert_eq!(sanitize("abcdef", 0, Lines::Join), "");
    }
}
