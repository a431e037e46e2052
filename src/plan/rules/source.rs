//! Source preparation: lets rules use the contract's `thread` name although `thread` is a
//! reserved word in Rhai.
//!
//! Outside strings and comments, every `thread` token is rewritten before compilation:
//! `x.thread` → `x["thread"]`, a map-literal key `thread:` → `"thread":`, and the variable
//! `thread` → [`THREAD_ALIAS`] (the name the engine pushes the thread block under). No
//! newline is added or removed, so line numbers in problems stay those of the file. It must
//! not change anything else in the source.

use std::borrow::Cow;

/// The scope name the `thread` block is pushed under.
pub(crate) const THREAD_ALIAS: &str = "__thread";

const WORD: &str = "thread";

/// Rewrites `thread` tokens (see module docs); borrows when there is nothing to do.
pub(crate) fn prepare(source: &str) -> Cow<'_, str> {
    if !source.contains(WORD) {
        return Cow::Borrowed(source);
    }
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len() + 16);
    let mut i = 0;
    scan_code(&chars, &mut i, &mut out, false);
    Cow::Owned(out)
}

/// Undoes the alias in messages shown to people.
pub(crate) fn unalias(message: &str) -> String {
    message.replace(THREAD_ALIAS, WORD)
}

fn scan_code(c: &[char], i: &mut usize, out: &mut String, in_interpolation: bool) {
    let mut depth = 0usize;
    while *i < c.len() {
        let ch = c[*i];
        let next = c.get(*i + 1).copied();
        match ch {
            '/' if next == Some('/') => {
                while *i < c.len() && c[*i] != '\n' {
                    out.push(c[*i]);
                    *i += 1;
                }
            }
            '/' if next == Some('*') => copy_block_comment(c, i, out),
            '"' => copy_quoted(c, i, out, '"'),
            '\'' => copy_quoted(c, i, out, '\''),
            '`' => copy_backtick(c, i, out),
            '#' if matches!(next, Some('"') | Some('#')) && is_raw_string_start(c, *i) => {
                copy_raw_string(c, i, out)
            }
            '{' => {
                depth += 1;
                out.push(ch);
                *i += 1;
            }
            '}' => {
                if in_interpolation && depth == 0 {
                    return;
                }
                depth = depth.saturating_sub(1);
                out.push(ch);
                *i += 1;
            }
            ch if ch.is_alphabetic() || ch == '_' => {
                let start = *i;
                while *i < c.len() && (c[*i].is_alphanumeric() || c[*i] == '_') {
                    *i += 1;
                }
                let ident: String = c[start..*i].iter().collect();
                if ident == WORD {
                    rewrite_thread(c, *i, out);
                } else {
                    out.push_str(&ident);
                }
            }
            _ => {
                out.push(ch);
                *i += 1;
            }
        }
    }
}

fn rewrite_thread(c: &[char], end: usize, out: &mut String) {
    // Property access: drop the `.` (keeping any `?` of `?.`) and index instead.
    let trimmed_len = out.trim_end().len();
    if out[..trimmed_len].ends_with('.') && !out[..trimmed_len].ends_with("..") {
        let ws = out[trimmed_len..].to_string();
        out.truncate(trimmed_len - 1);
        out.push_str(&ws);
        out.push_str("[\"thread\"]");
        return;
    }
    // Map-literal key: `thread:` but not `thread::`.
    let mut j = end;
    while j < c.len() && (c[j] == ' ' || c[j] == '\t') {
        j += 1;
    }
    if c.get(j) == Some(&':') && c.get(j + 1) != Some(&':') {
        out.push_str("\"thread\"");
        return;
    }
    out.push_str(THREAD_ALIAS);
}

fn copy_block_comment(c: &[char], i: &mut usize, out: &mut String) {
    let mut depth = 0usize;
    while *i < c.len() {
        if c[*i] == '/' && c.get(*i + 1) == Some(&'*') {
            depth += 1;
            out.push_str("/*");
            *i += 2;
        } else if c[*i] == '*' && c.get(*i + 1) == Some(&'/') {
            depth -= 1;
            out.push_str("*/");
            *i += 2;
            if depth == 0 {
                return;
            }
        } else {
            out.push(c[*i]);
            *i += 1;
        }
    }
}

fn copy_quoted(c: &[char], i: &mut usize, out: &mut String, quote: char) {
    out.push(c[*i]);
    *i += 1;
    while *i < c.len() {
        let ch = c[*i];
        out.push(ch);
        *i += 1;
        if ch == '\\' {
            if let Some(&n) = c.get(*i) {
                out.push(n);
                *i += 1;
            }
        } else if ch == quote {
            return;
        }
    }
}

fn copy_backtick(c: &[char], i: &mut usize, out: &mut String) {
    out.push('`');
    *i += 1;
    while *i < c.len() {
        let ch = c[*i];
        if ch == '`' {
            out.push(ch);
            *i += 1;
            return;
        }
        if ch == '$' && c.get(*i + 1) == Some(&'{') {
            out.push_str("${");
            *i += 2;
            scan_code(c, i, out, true);
            if *i < c.len() {
                out.push('}');
                *i += 1;
            }
            continue;
        }
        out.push(ch);
        *i += 1;
    }
}

fn is_raw_string_start(c: &[char], start: usize) -> bool {
    let mut j = start;
    while j < c.len() && c[j] == '#' {
        j += 1;
    }
    c.get(j) == Some(&'"')
}

fn copy_raw_string(c: &[char], i: &mut usize, out: &mut String) {
    let mut hashes = 0;
    while *i < c.len() && c[*i] == '#' {
        hashes += 1;
        out.push('#');
        *i += 1;
    }
    out.push('"');
    *i += 1;
    while *i < c.len() {
        let ch = c[*i];
        out.push(ch);
        *i += 1;
        if ch == '"' {
            let mut k = 0;
            while k < hashes && c.get(*i) == Some(&'#') {
                out.push('#');
                *i += 1;
                k += 1;
            }
            if k == hashes {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_code_tokens() {
        let src = "if thread.provider == \"thread\" && event.thread.id != () { x(#{thread: thread}); }\n// thread\n/* thread /* thread */ */ `t ${thread.id} thread`; 'a'; threads; my_thread; e?.thread";
        let out = prepare(src);
        assert_eq!(
            out,
            "if __thread.provider == \"thread\" && event[\"thread\"].id != () { x(#{\"thread\": __thread}); }\n// thread\n/* thread /* thread */ */ `t ${__thread.id} thread`; 'a'; threads; my_thread; e?[\"thread\"]"
        );
        assert_eq!(out.lines().count(), src.lines().count());
    }

    #[test]
    fn untouched_without_the_word() {
        assert!(matches!(prepare("reply(\"x\");"), Cow::Borrowed(_)));
    }
}
