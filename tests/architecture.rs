//! The layering of DESIGN.md ("Layout and layers"), enforced on the source tree.
//!
//! Reads every `.rs` file under `src/`, strips comments and string literals, and collects
//! the crate paths each one uses (`crate::x::..`, `use crate::{x, y::..}`, and `super::x`
//! where it leaves a top-level module). From those it checks:
//! - no cycle between top-level modules, nor between the sub-modules of one layer
//!   (`roles::poller` and `roles::scheduler` may not need each other);
//! - each layer uses only the layers DESIGN.md allows it (`base` nothing, `channex` only
//!   `base`, `plan` neither NATS nor the store, nothing below `roles` uses `roles`, `cli`,
//!   `demo`, `wiring`, ...), and `plan`/`base` never touch `async_nats`;
//! - only `cli` reads the environment or the command line;
//! - no function in `src/` is longer than 100 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every top-level module and what it may use (besides itself). The order is the layering,
/// from the bottom up.
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &[]),
    ("channex", &["base"]),
    ("events", &["base", "channex"]),
    ("config", &["base", "channex", "events"]),
    ("plan", &["base", "events"]),
    ("content", &["base", "events", "plan"]),
    ("store", &["base", "channex", "events", "config"]),
    (
        "authoring",
        &[
            "base", "channex", "events", "config", "plan", "content", "store",
        ],
    ),
    (
        "roles",
        &[
            "base",
            "channex",
            "events",
            "config",
            "plan",
            "content",
            "store",
            "authoring",
        ],
    ),
    ("sim", &["base", "channex"]),
    (
        "http",
        &["base", "channex", "events", "config", "store", "roles"],
    ),
    (
        "wiring",
        &[
            "base",
            "channex",
            "events",
            "config",
            "plan",
            "content",
            "store",
            "authoring",
            "roles",
            "http",
        ],
    ),
    (
        "demo",
        &[
            "base",
            "channex",
            "events",
            "config",
            "plan",
            "content",
            "store",
            "authoring",
            "roles",
            "http",
            "sim",
            "wiring",
        ],
    ),
    (
        "cli",
        &[
            "base",
            "channex",
            "events",
            "config",
            "plan",
            "content",
            "store",
            "authoring",
            "roles",
            "http",
            "sim",
            "wiring",
            "demo",
        ],
    ),
];

/// Inner paths a layer may not use even where it may use the module: the store may use
/// Channex's ids and models, never its HTTP client.
const FORBIDDEN_INNER: &[(&str, &str)] = &[
    ("store", "channex::client"),
    ("events", "channex::client"),
    ("config", "channex::client"),
];

/// Crates that mean I/O, forbidden in the pure layers.
const PURE_LAYERS: &[&str] = &["base", "plan"];
const IO_CRATES: &[&str] = &[
    "async_nats",
    "reqwest",
    "tokio::net",
    "tokio::fs",
    "std::fs",
    "std::net",
];

const MAX_FUNCTION_LINES: usize = 100;

struct SourceFile {
    path: PathBuf,
    /// `roles::poller` for src/roles/poller.rs and src/roles/poller/*.rs; `config` for src/config.rs.
    unit: Vec<String>,
    /// The text with comments and string contents blanked out (line numbers kept).
    code: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

fn load_sources() -> Vec<SourceFile> {
    let root = src_dir();
    let mut paths = Vec::new();
    rust_files(&root, &mut paths);
    paths
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&root).ok()?.to_path_buf();
            let parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if parts == ["lib"] || parts == ["main"] {
                return None;
            }
            let unit = match parts.as_slice() {
                [top] => vec![top.clone()],
                [top, file] if file == "mod" => vec![top.clone()],
                [top, sub, ..] => vec![top.clone(), sub.clone()],
                [] => return None,
            };
            let text = fs::read_to_string(&path).ok()?;
            Some(SourceFile {
                path: rel,
                unit,
                code: blank_comments_and_strings(&text),
            })
        })
        .collect()
}

/// Replaces comments and the contents of string and char literals by spaces, keeping line
/// breaks, so paths in docs or strings are not mistaken for uses.
fn blank_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if let Some(len) = raw_string_start(&chars, i) {
            let hashes = len - 2;
            out.push('"');
            i += len;
            while i < chars.len() {
                if chars[i] == '"' && (0..hashes).all(|h| chars.get(i + 1 + h) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
            out.push('"');
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                let step = if chars[i] == '\\' { 2 } else { 1 };
                for k in 0..step {
                    if let Some(&ch) = chars.get(i + k) {
                        out.push(blank(ch));
                    }
                }
                i += step;
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && is_char_literal(&chars, i) {
            // `'x'` ends two after the quote; an escape (`'\''`, `'\u{..}'`) at the next quote
            // after the escaped character.
            let end = if chars[i + 1] == '\\' {
                (i + 3..chars.len())
                    .find(|&k| chars[k] == '\'')
                    .unwrap_or(i + 2)
            } else {
                i + 2
            };
            out.push_str("' '");
            i = end + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Length of `r"`, `r#"`, `br##"`... starting at `i`, if a raw string starts there.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    let prev_is_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    if prev_is_ident {
        return None;
    }
    let mut k = i;
    if chars.get(k) == Some(&'b') {
        k += 1;
    }
    if chars.get(k) != Some(&'r') {
        return None;
    }
    k += 1;
    while chars.get(k) == Some(&'#') {
        k += 1;
    }
    (chars.get(k) == Some(&'"')).then_some(k + 1 - i)
}

/// A `'` that opens a char literal (`'a'`, `'\n'`, `'\''`), not a lifetime (`'a`).
fn is_char_literal(chars: &[char], i: usize) -> bool {
    matches!(
        (chars.get(i + 1), chars.get(i + 2)),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every crate path `file` uses, as segments (`["store", "audit", "AuditRecord"]`).
fn crate_paths(file: &SourceFile) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let code = &file.code;
    for (start, _) in code.match_indices("crate::") {
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| is_ident_char(c) || c == ':') {
            continue;
        }
        collect_tree(&code[start + "crate::".len()..], Vec::new(), &mut paths);
    }
    // `super::x` in src/<top>.rs or src/<top>/mod.rs leaves the top-level module.
    let at_top = file.unit.len() == 1;
    if at_top {
        for (start, _) in code.match_indices("super::") {
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| is_ident_char(c) || c == ':') {
                continue;
            }
            collect_tree(&code[start + "super::".len()..], Vec::new(), &mut paths);
        }
    }
    paths
}

/// Parses `a::b::{c, d::e}` at the start of `rest` into full paths under `prefix`.
fn collect_tree(rest: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('{') {
        for item in split_top_level(inner) {
            collect_tree(item, prefix.clone(), out);
        }
        return;
    }
    let ident: String = rest.chars().take_while(|&c| is_ident_char(c)).collect();
    if ident.is_empty() {
        if !prefix.is_empty() {
            out.push(prefix);
        }
        return;
    }
    let mut path = prefix;
    path.push(ident.clone());
    match rest[ident.len()..].strip_prefix("::") {
        Some(more) => collect_tree(more, path, out),
        None => out.push(path),
    }
}

/// The comma-separated items of a `{...}` group, up to its closing brace.
fn split_top_level(inner: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&inner[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

/// The unit a path points into: `roles::poller` when src/roles/poller(.rs|/) exists.
fn unit_of(path: &[String], units: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let top = path.first()?;
    if path.len() >= 2 {
        let two = vec![top.clone(), path[1].clone()];
        if units.contains(&two) {
            return Some(two);
        }
    }
    let one = vec![top.clone()];
    let is_module = units.iter().any(|u| u[0] == *top);
    is_module.then_some(one)
}

struct Graph {
    /// unit -> (unit it uses -> a file and path showing it)
    edges: BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>,
}

fn build_graph(files: &[SourceFile]) -> Graph {
    let units: BTreeSet<Vec<String>> = files.iter().map(|f| f.unit.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>> = BTreeMap::new();
    for file in files {
        for path in crate_paths(file) {
            let Some(target) = unit_of(&path, &units) else {
                continue;
            };
            if target == file.unit {
                continue;
            }
            edges
                .entry(file.unit.clone())
                .or_default()
                .entry(target)
                .or_insert_with(|| {
                    format!("{} uses crate::{}", file.path.display(), path.join("::"))
                });
        }
    }
    Graph { edges }
}

/// Strongly connected components with more than one member (Tarjan), over `project(unit)`.
fn cycles(graph: &Graph, project: impl Fn(&[String]) -> Option<String>) -> Vec<Vec<String>> {
    let mut adjacency: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &graph.edges {
        let Some(a) = project(from) else { continue };
        for to in tos.keys() {
            let Some(b) = project(to) else { continue };
            if a != b {
                adjacency.entry(a.clone()).or_default().insert(b.clone());
            }
            adjacency.entry(b).or_default();
        }
    }
    let nodes: Vec<String> = adjacency.keys().cloned().collect();
    let mut reach: BTreeMap<&String, BTreeSet<&String>> = BTreeMap::new();
    for n in &nodes {
        let mut seen = BTreeSet::new();
        let mut stack = vec![n];
        while let Some(x) = stack.pop() {
            for y in &adjacency[x] {
                if seen.insert(y) {
                    stack.push(y);
                }
            }
        }
        reach.insert(n, seen);
    }
    let mut components: BTreeSet<Vec<String>> = BTreeSet::new();
    for n in &nodes {
        let component: Vec<String> = nodes
            .iter()
            .filter(|m| m != &n && reach[n].contains(m) && reach[m].contains(n))
            .chain(std::iter::once(n))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if component.len() > 1 {
            components.insert(component);
        }
    }
    components.into_iter().collect()
}

fn allowed(layer: &str) -> Option<&'static [&'static str]> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == layer)
        .map(|(_, uses)| *uses)
}

#[test]
fn every_top_level_module_has_a_layer() {
    let files = load_sources();
    let tops: BTreeSet<&str> = files.iter().map(|f| f.unit[0].as_str()).collect();
    let unknown: Vec<_> = tops.iter().filter(|t| allowed(t).is_none()).collect();
    assert!(
        unknown.is_empty(),
        "top-level modules without a layer in tests/architecture.rs (and DESIGN.md): {unknown:?}"
    );
    assert!(tops.len() >= 10, "the source tree was not found: {tops:?}");
}

#[test]
fn no_cycles_between_top_level_modules() {
    let graph = build_graph(&load_sources());
    let found = cycles(&graph, |u| Some(u[0].clone()));
    assert!(
        found.is_empty(),
        "cycles between top-level modules: {found:?}"
    );
}

#[test]
fn no_cycles_between_the_modules_of_one_layer() {
    let graph = build_graph(&load_sources());
    for (top, _) in LAYERS {
        let found = cycles(&graph, |u| (u[0] == *top).then(|| u.join("::")));
        assert!(found.is_empty(), "cycles inside `{top}`: {found:?}");
    }
}

#[test]
fn each_layer_uses_only_what_it_may() {
    let graph = build_graph(&load_sources());
    let mut violations = Vec::new();
    for (from, tos) in &graph.edges {
        let may = allowed(&from[0]).unwrap_or(&[]);
        for (to, witness) in tos {
            let inner = to.join("::");
            let forbidden_inner = FORBIDDEN_INNER
                .iter()
                .any(|(layer, path)| *layer == from[0] && inner == *path);
            if to[0] != from[0] && (!may.contains(&to[0].as_str()) || forbidden_inner) {
                violations.push(format!("{} -> {inner}: {witness}", from[0]));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "forbidden edges:\n{}",
        violations.join("\n")
    );
}

#[test]
fn pure_layers_do_no_io() {
    let mut violations = Vec::new();
    for file in load_sources() {
        if !PURE_LAYERS.contains(&file.unit[0].as_str()) {
            continue;
        }
        for krate in IO_CRATES {
            if file.code.contains(&format!("{krate}::")) {
                violations.push(format!("{} uses {krate}", file.path.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "I/O in a pure layer:\n{}",
        violations.join("\n")
    );
}

#[test]
fn only_cli_reads_the_environment_and_the_command_line() {
    let mut violations = Vec::new();
    for file in load_sources() {
        if file.unit[0] == "cli" {
            continue;
        }
        for needle in ["env::var(", "env::vars(", "env::args", "env!(\"CONCIERGE"] {
            if file.code.contains(needle) {
                violations.push(format!("{} reads {needle}", file.path.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "outside cli:\n{}",
        violations.join("\n")
    );
}

/// `(lines, file, name)` of every function with a body.
fn function_lengths(file: &SourceFile) -> Vec<(usize, String)> {
    let code = &file.code;
    let bytes: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 3 < bytes.len() {
        let is_fn = bytes[i] == 'f'
            && bytes[i + 1] == 'n'
            && bytes[i + 2].is_whitespace()
            && (i == 0 || !is_ident_char(bytes[i - 1]));
        if !is_fn {
            i += 1;
            continue;
        }
        let name: String = bytes[i + 3..]
            .iter()
            .skip_while(|c| c.is_whitespace())
            .take_while(|c| is_ident_char(**c))
            .collect();
        if let Some(lines) = body_lines(&bytes, i) {
            found.push((lines, name));
        }
        i += 3;
    }
    found
}

/// Lines from `fn` to the closing brace of its body; `None` for a declaration without body.
fn body_lines(chars: &[char], fn_at: usize) -> Option<usize> {
    let mut k = fn_at;
    let mut depth = 0usize;
    let mut opened = false;
    while k < chars.len() {
        match chars[k] {
            ';' if !opened => return None,
            '{' => {
                opened = true;
                depth += 1;
            }
            '}' if opened => {
                depth -= 1;
                if depth == 0 {
                    let lines = chars[fn_at..=k].iter().filter(|&&c| c == '\n').count() + 1;
                    return Some(lines);
                }
            }
            _ => {}
        }
        k += 1;
    }
    None
}

#[test]
fn no_function_is_longer_than_100_lines() {
    let mut long = Vec::new();
    for file in load_sources() {
        for (lines, name) in function_lengths(&file) {
            if lines > MAX_FUNCTION_LINES {
                long.push(format!(
                    "{}: fn {name} is {lines} lines",
                    file.path.display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// The checker itself: a cycle and a forbidden edge are found, comments and strings ignored.
#[test]
fn the_checker_sees_uses_and_ignores_comments_and_strings() {
    let file = |unit: &[&str], text: &str| SourceFile {
        path: PathBuf::from(format!("{}.rs", unit.join("/"))),
        unit: unit.iter().map(|s| s.to_string()).collect(),
        code: blank_comments_and_strings(text),
    };
    let files = vec![
        file(
            &["base"],
            "// crate::roles::x\nconst S: &str = \"crate::roles\";\nuse crate::{events::{Event, Sender}, plan};\n",
        ),
        file(&["events"], "fn f() { let _ = crate::base::keys::encode(\"x\"); }\n"),
        file(&["plan"], "/* crate::store */ use crate::base;\n"),
    ];
    let graph = build_graph(&files);
    let base_uses: Vec<String> = graph.edges[&vec!["base".to_string()]]
        .keys()
        .map(|u| u.join("::"))
        .collect();
    assert_eq!(base_uses, ["events", "plan"]);
    let found = cycles(&graph, |u| Some(u[0].clone()));
    assert_eq!(
        found,
        vec![vec![
            "base".to_string(),
            "events".to_string(),
            "plan".to_string()
        ]]
    );
    let long = file(
        &["base"],
        &format!(
            "fn long() {{\n{}}}\nfn short() {{}}\n",
            "x();\n".repeat(120)
        ),
    );
    assert_eq!(
        function_lengths(&long),
        vec![(122, "long".into()), (1, "short".into())]
    );
}
