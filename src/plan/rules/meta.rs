//! Parses the metadata comment header of a rule file (`// name:`, `// enabled:`,
//! `// dry_run:`, `// description:`).
//!
//! Only the leading run of `//` comment lines (blank lines allowed) is read; the first line
//! of code ends the header. Unknown keys and free-text comments are ignored. It must not
//! look at anything else in the file.

use std::path::Path;

use super::{RuleMeta, RuleProblem};

pub(crate) fn parse_header(file: &Path, stem: &str, source: &str) -> Result<RuleMeta, RuleProblem> {
    let mut meta = RuleMeta {
        name: stem.to_string(),
        enabled: true,
        dry_run: false,
        description: String::new(),
    };
    for (idx, raw) in source.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix("//") else {
            break;
        };
        let comment = comment.trim_start_matches(['/', '!']).trim();
        let Some((key, value)) = comment.split_once(':') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        let bad_bool = || {
            RuleProblem::new(
                file,
                Some(idx + 1),
                format!("metadata `{key}` must be true or false, not `{value}`"),
            )
        };
        match key.as_str() {
            "name" if !value.is_empty() => meta.name = value.to_string(),
            "description" => meta.description = value.to_string(),
            "enabled" => meta.enabled = parse_bool(value).ok_or_else(bad_bool)?,
            "dry_run" | "dry-run" => meta.dry_run = parse_bool(value).ok_or_else(bad_bool)?,
            _ => {}
        }
    }
    Ok(meta)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_read_until_first_code_line() {
        let src = "// name: FAQ\n// description: answers things\n\n// dry_run: yes\nlet x = 1;\n// enabled: false\n";
        let m = parse_header(Path::new("r.rhai"), "r", src).unwrap();
        assert_eq!(m.name, "FAQ");
        assert_eq!(m.description, "answers things");
        assert!(m.dry_run);
        assert!(m.enabled, "enabled: after code must be ignored");
    }

    #[test]
    fn bad_bool_names_the_line() {
        let src = "// name: x\n// enabled: maybe\n";
        let e = parse_header(Path::new("r.rhai"), "r", src).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("enabled"), "{e}");
    }

    #[test]
    fn defaults_use_the_stem() {
        let m = parse_header(Path::new("10_a.rhai"), "10_a", "reply(\"x\");").unwrap();
        assert_eq!(m.name, "10_a");
        assert!(m.enabled && !m.dry_run);
    }
}
