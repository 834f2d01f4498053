//! The emulator is an island: `src/emulator.rs` and every file under
//! `src/emulator/` may use only `crate::emulator::…`, `super::` paths that stay
//! inside the emulator, and external crates. A product import would let the
//! emulator agree with the client by construction instead of checking it
//! against the service's rules.
//!
//! The check reads the source text: comments and string literals are blanked
//! first, inline `mod name { … }` blocks deepen the `super::` allowance, and
//! a file's own depth under `src/emulator/` sets where `super::` leaves the
//! emulator. This file must not import the crate: it reads files only.

use std::path::{Path, PathBuf};

/// One forbidden path: 1-based line and what was found there.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    line: usize,
    found: String,
}

/// `src/emulator.rs` and every `.rs` file under `src/emulator/`, sorted.
fn emulator_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("src/emulator.rs")];
    let mut dirs = vec![root.join("src/emulator")];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// How many `super::` a file's top level may climb and still be inside the
/// emulator: 0 for `src/emulator.rs`, 1 for `src/emulator/x.rs`, 2 for
/// `src/emulator/x/y.rs`.
fn module_depth(root: &Path, file: &Path) -> usize {
    match file.strip_prefix(root.join("src/emulator")) {
        Ok(rel) => rel.components().count(),
        Err(_) => 0,
    }
}

/// The source with comments, string and char literals replaced by spaces;
/// newlines are kept so that line numbers still match.
fn blank_literals(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
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
        } else if let Some(hashes) = raw_string_start(&chars, i) {
            // `r"…"`, `r#"…"#`, `br#"…"#`: no escapes, ends at `"` + hashes.
            let open = chars[i..].iter().position(|&c| c == '"').unwrap_or(0) + 1;
            for _ in 0..open {
                out.push(' ');
            }
            i += open;
            while i < chars.len() {
                let closes =
                    chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#'));
                if closes {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() {
                match chars[i] {
                    '\\' => {
                        out.push(' ');
                        if let Some(&e) = chars.get(i + 1) {
                            out.push(blank(e));
                        }
                        i += 2;
                    }
                    '"' => {
                        out.push(' ');
                        i += 1;
                        break;
                    }
                    other => {
                        out.push(blank(other));
                        i += 1;
                    }
                }
            }
        } else if c == '\'' {
            // A char literal (`'x'`, `'\n'`, `'\u{1F600}'`) or a lifetime.
            let end = if next == Some('\\') {
                chars
                    .get(i + 3..)
                    .and_then(|rest| rest.iter().position(|&c| c == '\''))
                    .map(|p| i + 3 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    for _ in i..=end {
                        out.push(' ');
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At `i`, the number of `#` of a raw string literal that starts there.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && is_ident(chars[i - 1]) {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some(hashes)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A tiny cursor over blanked source that tracks line numbers.
struct Cursor {
    chars: Vec<char>,
    pos: usize,
}

impl Cursor {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(is_ident) {
            self.pos += 1;
        }
        (self.pos > start).then(|| self.chars[start..self.pos].iter().collect())
    }

    /// Consumes `::` (after optional whitespace) if it is there.
    fn path_sep(&mut self) -> bool {
        let save = self.pos;
        self.skip_ws();
        if self.peek() == Some(':') && self.chars.get(self.pos + 1) == Some(&':') {
            self.pos += 2;
            self.skip_ws();
            true
        } else {
            self.pos = save;
            false
        }
    }

    /// The text of a `{ … }` group starting at the cursor, braces excluded.
    fn group(&mut self) -> String {
        let mut depth = 0usize;
        let start = self.pos + 1;
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return self.chars[start..self.pos - 1].iter().collect();
                    }
                }
                _ => {}
            }
        }
        self.chars[start.min(self.pos)..self.pos].iter().collect()
    }
}

/// The top-level items of a `{a::b, c, d::{e, f}}` group.
fn group_items(group: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut item = String::new();
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    items.push(item);
    items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Every product path in `src`, for a file whose top level sits `depth`
/// modules below `crate::emulator`.
fn product_paths(src: &str, depth: usize) -> Vec<Violation> {
    let blanked = blank_literals(src);
    let mut cur = Cursor {
        chars: blanked.chars().collect(),
        pos: 0,
    };
    let line_of =
        |chars: &[char], pos: usize| chars[..pos].iter().filter(|&&c| c == '\n').count() + 1;
    let mut found = Vec::new();
    let mut braces = 0usize;
    // Brace depth just outside each open inline `mod name { … }`.
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut mod_opens = false;
    while let Some(c) = cur.peek() {
        let start = cur.pos;
        let after_ident = start > 0 && is_ident(cur.chars[start - 1]);
        if c == '{' {
            if mod_opens {
                inline_mods.push(braces);
                mod_opens = false;
            }
            braces += 1;
            cur.pos += 1;
            continue;
        }
        if c == '}' {
            braces = braces.saturating_sub(1);
            if inline_mods.last() == Some(&braces) {
                inline_mods.pop();
            }
            cur.pos += 1;
            continue;
        }
        if c == ';' {
            mod_opens = false;
        }
        if c == '#' && !after_ident {
            let save = cur.pos;
            cur.pos += 1;
            cur.skip_ws();
            if cur.peek() == Some('[') {
                cur.pos += 1;
                cur.skip_ws();
                if cur.ident().as_deref() == Some("path") {
                    found.push(Violation {
                        line: line_of(&cur.chars, start),
                        found: "#[path]".into(),
                    });
                }
            }
            cur.pos = save + 1;
            continue;
        }
        if !is_ident(c) || after_ident {
            cur.pos += 1;
            continue;
        }
        let Some(word) = cur.ident() else {
            cur.pos += 1;
            continue;
        };
        match word.as_str() {
            "mod" => {
                cur.skip_ws();
                if cur.ident().is_some() {
                    cur.skip_ws();
                    mod_opens = cur.peek() == Some('{');
                }
            }
            "crate" => {
                if !cur.path_sep() {
                    continue;
                }
                if cur.peek() == Some('{') {
                    let group = cur.group();
                    for item in group_items(&group) {
                        let first: String = item.chars().take_while(|&c| is_ident(c)).collect();
                        if first != "emulator" {
                            found.push(Violation {
                                line: line_of(&cur.chars, start),
                                found: format!("crate::{{{item}}}"),
                            });
                        }
                    }
                } else {
                    let next = cur.ident().unwrap_or_default();
                    if next != "emulator" {
                        found.push(Violation {
                            line: line_of(&cur.chars, start),
                            found: format!("crate::{next}"),
                        });
                    }
                }
            }
            "super" => {
                let mut climbs = 0usize;
                while cur.path_sep() {
                    climbs += 1;
                    let save = cur.pos;
                    if cur.ident().as_deref() != Some("super") {
                        cur.pos = save;
                        break;
                    }
                }
                let allowed = depth + inline_mods.len();
                if climbs > allowed {
                    found.push(Violation {
                        line: line_of(&cur.chars, start),
                        found: format!(
                            "{} (climbs {climbs}, the emulator ends at {allowed})",
                            "super::".repeat(climbs)
                        ),
                    });
                }
            }
            "ingestd" if cur.path_sep() => {
                found.push(Violation {
                    line: line_of(&cur.chars, start),
                    found: "ingestd::".into(),
                });
            }
            _ => {}
        }
    }
    found
}

#[test]
fn the_emulator_imports_nothing_from_the_product() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = emulator_files(root);
    assert!(
        files.len() > 1,
        "expected src/emulator.rs and the files of src/emulator/, found {files:?}"
    );
    let mut report = Vec::new();
    for file in &files {
        let src = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let rel = file.strip_prefix(root).unwrap_or(file);
        for v in product_paths(&src, module_depth(root, file)) {
            report.push(format!("{}:{}: {}", rel.display(), v.line, v.found));
        }
    }
    assert!(
        report.is_empty(),
        "the emulator must import nothing from the product:\n{}",
        report.join("\n")
    );
}

fn found(src: &str, depth: usize) -> Vec<String> {
    product_paths(src, depth)
        .into_iter()
        .map(|v| format!("{}: {}", v.line, v.found))
        .collect()
}

#[test]
fn the_detector_flags_product_paths_and_accepts_emulator_ones() {
    assert_eq!(
        found("use crate::journal::Journal;", 1),
        ["1: crate::journal"]
    );
    assert!(found("use crate::emulator::store::Store;", 1).is_empty());
    assert!(found("use crate::emulator::store::Store;", 0).is_empty());

    assert_eq!(
        found("use crate::{emulator::faults::Fault, journal::Journal};", 1),
        ["1: crate::{journal::Journal}"]
    );
    assert_eq!(
        found("\n\nlet j = ingestd::journal::open();", 1),
        ["3: ingestd::"]
    );
    assert_eq!(
        found("fn f() {\n    crate::config::Settings::default();\n}", 2),
        ["2: crate::config"]
    );
    assert_eq!(
        found("#[path = \"../journal.rs\"]\nmod journal;", 1),
        ["1: #[path]"]
    );
}

#[test]
fn the_detector_counts_super_from_where_it_is() {
    // From src/emulator.rs, `super::` is the crate root.
    assert_eq!(
        found("use super::journal::Journal;", 0),
        ["1: super:: (climbs 1, the emulator ends at 0)"]
    );
    // From src/emulator/x.rs, one `super::` is the emulator, two leave it.
    assert!(found("use super::catalogue::{self as cat, Problem};", 1).is_empty());
    assert_eq!(
        found("use super::super::journal;", 1),
        ["1: super::super:: (climbs 2, the emulator ends at 1)"]
    );
    assert!(found("use super::super::catalogue::Problem;", 2).is_empty());
    // An inline module is one level deeper until its brace closes.
    let inline = "#[cfg(test)]\nmod tests {\n    use super::*;\n}\nuse super::X;\n";
    assert_eq!(
        found(inline, 0),
        ["5: super:: (climbs 1, the emulator ends at 0)"]
    );
    assert!(found("mod a { mod b { use super::super::super::X; } }", 1).is_empty());
    // `pub(super)` is a visibility, not a path.
    assert!(found("pub(super) fn f() {}", 0).is_empty());
}

#[test]
fn the_detector_ignores_comments_and_literals() {
    let src = r##"
// use crate::journal::Journal;
/* crate::journal /* nested */ crate::upload */
/// [`crate::journal`]
let a = "crate::journal::Journal";
let b = r#"ingestd::journal "quoted" super::super::x"#;
let c = '"'; let d = crate::emulator::X;
fn f<'a>(x: &'a str) -> &'a str { x }
"##;
    assert!(found(src, 0).is_empty(), "{:?}", found(src, 0));
    assert_eq!(
        found("let c = '\"'; use crate::journal;", 0),
        ["1: crate::journal"]
    );
}
