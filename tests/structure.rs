//! Structure checks that keep the code base easy to change: no import circle between the modules
//! of any crate, and no long function on the per-message path.
//!
//! Both checks read the sources with a deliberately small, line-and-brace based reader (no
//! parser dependency), after blanking comments, string and character literals, and every item
//! under `#[cfg(test)]` (test code may import what it likes and may be long):
//!
//! - **Import circles.** A module is a file under `crates/*/src` (`lib.rs`/`main.rs` is the crate
//!   root, `a/mod.rs` and `a.rs` are `a`, `a/b.rs` is `a::b`). A module depends on another when
//!   its code names it: `crate::a::…` (also inside `use crate::{a::X, b}` groups), `super::…`,
//!   `self::child::…`, or a bare `child::…` of one of its own child modules. A path is
//!   attributed to the longest module prefix it names; a name the crate root re-exports
//!   (`pub use a::X;` in `lib.rs`) is attributed to the module it comes from. The crate root
//!   itself is left out of the graph: it only declares modules and re-exports, so every module
//!   "depends" on it and it on every module. Likewise a module and the modules nested in it
//!   (`scenario` and `scenario::chat`) are not edges of each other: a parent is the namespace of
//!   its children (it declares them and dispatches to them, they use its shared types), so only
//!   references between modules that do not contain one another count. Any strongly connected
//!   group of two or more modules is reported with one circle through it and the line of each
//!   edge.
//! - **Long functions.** In the per-message-path files listed in [`MESSAGE_PATH`], a `fn` whose
//!   text (signature line to closing brace) spans more than [`MAX_FN_LINES`] lines is reported
//!   with its file, line and length. Nested functions count on their own and inside their parent.
//!
//! - **Layout order.** A crate root whose `# Layout` section promises that "a module uses only
//!   modules listed after it" must keep that promise: every module is listed (`- [`name`]` or
//!   `` - `name` ``), and every edge of the graph above goes from a module to one listed later.
//!
//! What other engineers are still fixing is listed, with a comment, in [`ALLOWED_CIRCLES`] and
//! [`ALLOWED_LONG`]. An entry that no longer matches a violation fails the test too, so that the
//! lists only shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Longest function allowed on the per-message path, in lines.
const MAX_FN_LINES: usize = 60;

/// The files every client message or worker command passes through (relative to `crates/`).
const MESSAGE_PATH: &[&str] = &[
    "gatehouse-gateway/src/socket.rs",
    "gatehouse-gateway/src/events.rs",
    "gatehouse-gateway/src/commands.rs",
    "gatehouse-gateway/src/queue.rs",
    "gatehouse-gateway/src/links.rs",
    "gatehouse-gateway/src/routes.rs",
    "gatehouse-gateway/src/index.rs",
    "gatehouse-gateway/src/hub.rs",
    "gatehouse-gateway/src/conn.rs",
    "gatehouse-gateway/src/workers.rs",
    "gatehouse-sdk/src/link.rs",
    "gatehouse-sdk/src/cluster.rs",
    "gatehouse-sdk/src/handlers.rs",
    "gatehouse-sdk/src/runtime.rs",
    "gatehouse-store/src/sqlite.rs",
    "gatehouse-store/src/postgres.rs",
    "gatehouse-store/src/mysql.rs",
    "gatehouse-store/src/committer.rs",
    "gatehouse-store/src/plan.rs",
    "gatehouse-chat/src/service.rs",
    "gatehouse-chat/src/protocol.rs",
];

/// Import circles still being removed by their crates' owners: `(crate, modules of the circle)`,
/// each with a comment saying who and why. Empty since the chat service's circle was removed
/// (issue 15): no crate has one. Remove an entry when the circle is gone (the test says so).
const ALLOWED_CIRCLES: &[(&str, &[&str])] = &[];

/// Long functions still being split by their crates' owners: `(file under crates/, fn name)`,
/// each with a comment saying who and why. Empty since the chat service's were split (issue 15):
/// every function on the per-message path is short. Remove an entry when the function is short
/// (the test says so).
const ALLOWED_LONG: &[(&str, &str)] = &[];

#[test]
fn no_crate_has_an_import_circle() {
    let mut problems = String::new();
    let mut found: BTreeSet<(String, Vec<String>)> = BTreeSet::new();
    for krate in crates() {
        let name = krate.file_name().unwrap().to_string_lossy().into_owned();
        let sources = read_sources(&krate.join("src"));
        for circle in circles(&sources) {
            let members: Vec<String> = circle.members.clone();
            let allowed = ALLOWED_CIRCLES.iter().any(|(c, m)| *c == name && same_set(m, &members));
            found.insert((name.clone(), members));
            if !allowed {
                let _ = writeln!(problems, "crate {name}: import circle {}", circle.describe());
            }
        }
    }
    for (krate, members) in ALLOWED_CIRCLES {
        if !found.iter().any(|(c, m)| c == krate && same_set(members, m)) {
            let _ = writeln!(
                problems,
                "crate {krate}: the allowed circle {members:?} is gone: remove it from ALLOWED_CIRCLES"
            );
        }
    }
    assert!(problems.is_empty(), "\n{problems}");
}

#[test]
fn no_long_function_on_the_message_path() {
    let root = workspace().join("crates");
    let mut problems = String::new();
    let mut found: BTreeSet<(String, String)> = BTreeSet::new();
    for file in MESSAGE_PATH {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for f in long_functions(&text, MAX_FN_LINES) {
            found.insert((file.to_string(), f.name.clone()));
            if !ALLOWED_LONG.contains(&(file, f.name.as_str())) {
                let _ = writeln!(
                    problems,
                    "crates/{file}:{}: fn {} is {} lines (at most {MAX_FN_LINES} on the per-message path): split it into named steps",
                    f.line, f.name, f.lines
                );
            }
        }
    }
    for (file, name) in ALLOWED_LONG {
        if !found.contains(&(file.to_string(), name.to_string())) {
            let _ = writeln!(
                problems,
                "crates/{file}: fn {name} is no longer long: remove it from ALLOWED_LONG"
            );
        }
    }
    assert!(problems.is_empty(), "\n{problems}");
}

#[test]
fn a_layout_that_promises_an_order_keeps_it() {
    let mut problems = String::new();
    for krate in crates() {
        let name = krate.file_name().unwrap().to_string_lossy().into_owned();
        let root = ["lib.rs", "main.rs"]
            .iter()
            .map(|f| krate.join("src").join(f))
            .find(|p| p.exists())
            .expect("a crate root");
        let text = std::fs::read_to_string(&root).expect("readable root");
        for problem in layout_problems(&text, &read_sources(&krate.join("src"))) {
            let _ = writeln!(problems, "crate {name}: {problem}");
        }
    }
    assert!(problems.is_empty(), "\n{problems}");
}

/// What breaks the order a crate root's `# Layout` promises (nothing when it promises none).
fn layout_problems(root: &str, sources: &[Source]) -> Vec<String> {
    const PROMISE: &str = "a module uses only modules listed after it";
    let docs: Vec<&str> = root
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("//!"))
        .collect();
    if !docs
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .contains(PROMISE)
    {
        return Vec::new();
    }
    let listed: Vec<String> = docs
        .iter()
        .skip_while(|l| l.trim() != "# Layout")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.trim_start().strip_prefix("- "))
        .filter_map(|item| {
            let name: String = item
                .trim_start_matches(['[', '`'])
                .chars()
                .take_while(|c| ident_char(*c) || *c == ':')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    let place = |module: &str| listed.iter().position(|m| m == module);
    let mut problems = Vec::new();
    let (modules, edges) = graph(sources);
    for module in modules.iter().filter(|m| !m.is_empty()) {
        let module = module.join("::");
        if place(&module).is_none() {
            problems.push(format!("module {module} is missing from the # Layout list"));
        }
    }
    for (from, targets) in &edges {
        for (to, edge) in targets {
            if let (Some(a), Some(b)) = (place(from), place(to))
                && a > b
            {
                problems.push(format!(
                    "# Layout lists {to} before {from}, but {from} uses it ({}:{} `{}`): reorder the list",
                    edge.file, edge.line, edge.path
                ));
            }
        }
    }
    problems
}

#[test]
fn the_layout_check_names_a_module_used_by_one_listed_after_it_and_a_missing_one() {
    let root = "//! # Layout\n//! Inward; a module uses only modules listed after\n//! it.\n//! - [`a`] — first.\n//! - `b`: second.\nmod a; mod b; mod c;";
    let sources = vec![
        source("lib.rs", root),
        source("a.rs", "use crate::b::B;"),
        source("b.rs", "use crate::a::A;"),
        source("c.rs", ""),
    ];
    let problems = layout_problems(root, &sources);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("c is missing"), "{problems:?}");
    assert!(
        problems[1].contains("lists a before b") && problems[1].contains("b.rs:1"),
        "{problems:?}"
    );
    assert!(
        layout_problems("//! # Layout\n//! - `a`", &sources).is_empty(),
        "no promise, no check"
    );
}

// ---------------------------------------------------------------------- the checker's own tests

#[test]
fn the_circle_check_names_a_circle_and_its_edges() {
    let sources = vec![
        source("lib.rs", "mod a; mod b; mod c;"),
        source("a.rs", "use crate::b::B;\npub struct A;"),
        source(
            "b.rs",
            "// use crate::c::C; is a comment\npub struct B;\nfn f() { crate::c::g(); }",
        ),
        source("c.rs", "use crate::{a::A, b};\npub fn g() {}"),
    ];
    let found = circles(&sources);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].members, ["a", "b", "c"]);
    let text = found[0].describe();
    assert!(text.contains("a.rs:1"), "{text}");
    assert!(text.contains("b.rs:3"), "{text}");
    assert!(text.contains("c.rs:1"), "{text}");
}

#[test]
fn the_circle_check_follows_root_reexports_super_and_child_paths_but_not_tests_or_strings() {
    let sources = vec![
        source("lib.rs", "mod a; mod b;\npub use a::Thing;"),
        source(
            "a.rs",
            "pub struct Thing;\n#[cfg(test)]\nmod tests { use crate::b::x; }",
        ),
        source("b.rs", "use crate::Thing;\nfn s() { let _ = \"crate::a\"; }"),
        source("p/mod.rs", "mod q; mod r;\nfn f() { q::g(); }"),
        source("p/q.rs", "pub fn g() { super::f(); super::r::h() }"),
        source("p/r.rs", "use super::q;\npub fn h() { q::g() }"),
    ];
    let found = circles(&sources);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].members,
        ["p::q", "p::r"],
        "b → a only: the test module and the string do not count; p ↔ p::q is parent and child"
    );
}

#[test]
fn the_length_check_counts_from_signature_to_closing_brace_and_skips_tests() {
    let text = "fn short() {\n    let s = \"}}}\";\n}\n\nfn long(\n    x: u8,\n) {\n    let c = '{';\n    // }\n    x;\n}\ntrait T { fn declared(&self); }\n#[cfg(test)]\nmod tests {\n    fn long_test() {\n\n\n\n\n\n\n    }\n}\n";
    let long = long_functions(text, 3);
    let names: Vec<(&str, usize, usize)> = long.iter().map(|f| (f.name.as_str(), f.line, f.lines)).collect();
    assert_eq!(names, [("long", 5, 7)]);
}

// ---------------------------------------------------------------------- reading sources

struct Source {
    /// The module path (`[]` for the crate root).
    module: Vec<String>,
    /// Path relative to the crate's `src`, for messages.
    file: String,
    /// The text with comments, literals and test items blanked (newlines kept).
    code: String,
}

fn source(file: &str, text: &str) -> Source {
    Source {
        module: module_of(Path::new(file)),
        file: file.to_owned(),
        code: without_tests(&blank_comments_and_literals(text)),
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn crates() -> Vec<PathBuf> {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(workspace().join("crates"))
        .expect("crates/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    crates.sort();
    crates
}

fn read_sources(src: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    files.sort();
    files
        .iter()
        .map(|path| {
            let relative = path.strip_prefix(src).expect("under src");
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            source(&relative.to_string_lossy(), &text)
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `lib.rs`/`main.rs` → `[]`, `a.rs` and `a/mod.rs` → `[a]`, `a/b.rs` → `[a, b]`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Replaces comments, string literals (plain, byte, raw) and character literals by spaces,
/// keeping newlines, so that braces and paths inside them are not read as code. Any other
/// non-ASCII character becomes a space too: the result is ASCII, so byte offsets are positions.
fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
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
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_char(prev(&chars, i)) {
            // A raw string r"…" or r#"…"# (or an r#ident, which has no quote).
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            out.extend(std::iter::repeat_n(' ', j - i + 1));
            i = j + 1;
            while i < chars.len() {
                if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
                    out.extend(std::iter::repeat_n(' ', hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}') or a lifetime ('a, which has no closing
            // quote right after its first character).
            let end = if next == Some('\\') {
                (i + 2..chars.len()).find(|&j| chars[j] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.extend(std::iter::repeat_n(' ', end - i + 1));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(if c.is_ascii() { c } else { ' ' });
            i += 1;
        }
    }
    out
}

fn prev(chars: &[char], i: usize) -> char {
    if i == 0 { ' ' } else { chars[i - 1] }
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Blanks every item under `#[cfg(test)]`: up to its `;`, or its braces. `code` is ASCII (see
/// [`blank_comments_and_literals`]).
fn without_tests(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = code.as_bytes().to_vec();
    let mut from = 0;
    while let Some(found) = code[from..].find(MARK) {
        let start = from + found;
        let mut end = start;
        let mut depth = 0usize;
        while end < out.len() {
            match out[end] {
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                b';' if depth == 0 => break,
                _ => {}
            }
            end += 1;
        }
        let last = end.min(out.len() - 1);
        for b in &mut out[start..=last] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
        from = start + MARK.len();
    }
    String::from_utf8(out).expect("ASCII in, ASCII out")
}

fn line_of(code: &str, offset: usize) -> usize {
    code[..offset].matches('\n').count() + 1
}

// ---------------------------------------------------------------------- the import graph

/// One module's reference to another, for the message.
#[derive(Debug, Clone)]
struct Edge {
    file: String,
    line: usize,
    path: String,
}

#[derive(Debug)]
struct Circle {
    /// The modules of the strongly connected group, sorted, `::`-joined.
    members: Vec<String>,
    /// One circle through them, as `(from, to, evidence)`.
    steps: Vec<(String, String, Edge)>,
}

impl Circle {
    fn describe(&self) -> String {
        let mut text = self.steps.first().map(|s| s.0.clone()).unwrap_or_default();
        for (_, to, edge) in &self.steps {
            let _ = write!(text, " → {to} ({}:{} `{}`)", edge.file, edge.line, edge.path);
        }
        if self.members.len() > self.steps.len() {
            let _ = write!(text, "; all modules of the circle: {}", self.members.join(", "));
        }
        text
    }
}

fn same_set(a: &[&str], b: &[String]) -> bool {
    let a: BTreeSet<&str> = a.iter().copied().collect();
    let b: BTreeSet<&str> = b.iter().map(String::as_str).collect();
    a == b
}

/// The paths a piece of code names: `use` trees expanded (`crate::{a::X, b}` → `crate::a::X`,
/// `crate::b`), then every `crate::…`, `super::…` and `self::…` path elsewhere, and every path
/// that starts with one of `children`. Each with its byte offset.
fn paths(code: &str, children: &BTreeSet<String>) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_word = i == 0 || !ident_char(bytes[i - 1] as char) && bytes[i - 1] != b':';
        if at_word && code[i..].starts_with("use") && bytes.get(i + 3).is_some_and(|b| b.is_ascii_whitespace()) {
            let end = code[i..].find(';').map_or(code.len(), |e| i + e);
            for path in expand_use(&code[i + 3..end]) {
                found.push((i, path));
            }
            i = end;
            continue;
        }
        if at_word && ident_char(bytes[i] as char) {
            let mut j = i;
            let mut segments = Vec::new();
            loop {
                let start = j;
                while j < bytes.len() && ident_char(bytes[j] as char) {
                    j += 1;
                }
                segments.push(code[start..j].to_owned());
                if code[j..].starts_with("::") && bytes.get(j + 2).is_some_and(|b| ident_char(*b as char)) {
                    j += 2;
                } else {
                    break;
                }
            }
            let first = segments[0].as_str();
            if segments.len() > 1 && (matches!(first, "crate" | "super" | "self") || children.contains(first)) {
                found.push((i, segments));
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    found
}

/// Expands one `use` tree into its paths (`a::{b, c::{d, self}}` → `a::b`, `a::c::d`, `a::c`).
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn walk(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        if let Some(open) = tree.find('{') {
            let mut base = prefix.to_vec();
            base.extend(split_path(&tree[..open]));
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut start = 0;
            for (k, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        walk(&base, &inner[start..k], out);
                        start = k + 1;
                    }
                    _ => {}
                }
            }
            walk(&base, &inner[start..], out);
        } else {
            let item = tree.split(" as ").next().unwrap_or("").trim();
            if item.is_empty() {
                return;
            }
            let mut path = prefix.to_vec();
            for segment in split_path(item) {
                if segment != "self" || path.is_empty() {
                    path.push(segment);
                }
            }
            out.push(path);
        }
    }
    let mut out = Vec::new();
    walk(&[], tree, &mut out);
    out
}

fn split_path(text: &str) -> Vec<String> {
    text.split("::")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s != "*")
        .collect()
}

/// The module a path names, from the module `from`: the longest known module prefix; `None`
/// for the crate root and for paths outside the crate.
fn resolve(
    from: &[String],
    path: &[String],
    modules: &BTreeSet<Vec<String>>,
    reexports: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    let mut absolute: Vec<String> = match path[0].as_str() {
        "crate" => Vec::new(),
        "self" => from.to_vec(),
        "super" => from[..from.len().saturating_sub(1)].to_vec(),
        _ => {
            // A child module named directly.
            let mut child = from.to_vec();
            child.push(path[0].clone());
            if !modules.contains(&child) {
                return None;
            }
            from.to_vec()
        }
    };
    let rest = if matches!(path[0].as_str(), "crate" | "self" | "super") {
        &path[1..]
    } else {
        path
    };
    let mut rest = rest.iter().peekable();
    while rest.peek().is_some_and(|s| *s == "super") {
        absolute.pop();
        rest.next();
    }
    absolute.extend(rest.cloned());
    let longest = (0..=absolute.len())
        .rev()
        .map(|n| absolute[..n].to_vec())
        .find(|prefix| modules.contains(prefix))?;
    if longest.is_empty() {
        return absolute.first().and_then(|name| reexports.get(name).cloned());
    }
    Some(longest)
}

type Edges = BTreeMap<String, BTreeMap<String, Edge>>;

/// The crate's modules and the edges between them (see the module doc for what counts).
fn graph(sources: &[Source]) -> (BTreeSet<Vec<String>>, Edges) {
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    // Names the crate root re-exports from a module (`pub use a::b::X;` → X ↦ a::b).
    let mut reexports = BTreeMap::new();
    for root in sources.iter().filter(|s| s.module.is_empty()) {
        for (_, path) in paths(&root.code, &BTreeSet::new()) {
            let path = if path[0] == "crate" { path[1..].to_vec() } else { path };
            let Some(name) = path.last() else { continue };
            let module = (1..path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|prefix| modules.contains(prefix));
            if let Some(module) = module {
                reexports.insert(name.clone(), module);
            }
        }
    }
    let mut edges: Edges = BTreeMap::new();
    for source in sources.iter().filter(|s| !s.module.is_empty()) {
        let children: BTreeSet<String> = modules
            .iter()
            .filter(|m| m.len() == source.module.len() + 1 && m.starts_with(&source.module))
            .map(|m| m.last().unwrap().clone())
            .collect();
        let from = source.module.join("::");
        edges.entry(from.clone()).or_default();
        for (offset, path) in paths(&source.code, &children) {
            let Some(to) = resolve(&source.module, &path, &modules, &reexports) else {
                continue;
            };
            if to.starts_with(&source.module) || source.module.starts_with(&to) {
                continue; // itself, a module nested in it, or one it is nested in
            }
            edges
                .entry(from.clone())
                .or_default()
                .entry(to.join("::"))
                .or_insert(Edge {
                    file: source.file.clone(),
                    line: line_of(&source.code, offset),
                    path: path.join("::"),
                });
        }
    }
    (modules, edges)
}

fn circles(sources: &[Source]) -> Vec<Circle> {
    let (_, edges) = graph(sources);
    strongly_connected(&edges)
        .into_iter()
        .filter(|group| group.len() > 1)
        .map(|group| {
            let steps = one_circle(&group, &edges);
            Circle { members: group, steps }
        })
        .collect()
}

/// Tarjan's strongly connected components, each sorted, in a stable order.
fn strongly_connected(edges: &BTreeMap<String, BTreeMap<String, Edge>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, Edge>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        groups: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flat_map(|m| m.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    group.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                group.sort();
                self.groups.push(group);
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.groups.sort();
    walk.groups
}

/// The shortest circle from the group's first module back to itself (breadth first, within the
/// group).
fn one_circle(group: &[String], edges: &BTreeMap<String, BTreeMap<String, Edge>>) -> Vec<(String, String, Edge)> {
    let start = &group[0];
    let inside: BTreeSet<&String> = group.iter().collect();
    let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut last = None;
    'search: while let Some(v) = queue.pop_front() {
        for w in edges[v].keys().filter(|w| inside.contains(w)) {
            if w == start {
                last = Some(v);
                break 'search;
            }
            if !came_from.contains_key(w) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    let mut hops = Vec::new();
    let mut v = last.expect("a strongly connected group has a circle");
    while v != start {
        hops.push(v);
        v = came_from[v];
    }
    hops.reverse();
    let path: Vec<&String> = std::iter::once(start).chain(hops).chain([start]).collect();
    path.windows(2)
        .map(|w| (w[0].clone(), w[1].clone(), edges[w[0]][w[1]].clone()))
        .collect()
}

// ---------------------------------------------------------------------- function lengths

struct LongFn {
    name: String,
    line: usize,
    lines: usize,
}

/// Every `fn` of `text` (outside `#[cfg(test)]` items) spanning more than `limit` lines.
fn long_functions(text: &str, limit: usize) -> Vec<LongFn> {
    let code = without_tests(&blank_comments_and_literals(text));
    let bytes = code.as_bytes();
    let mut long = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("fn ") {
        let at = from + found;
        from = at + 3;
        if at > 0 && ident_char(bytes[at - 1] as char) {
            continue;
        }
        let name: String = code[at + 3..]
            .trim_start()
            .chars()
            .take_while(|c| ident_char(*c))
            .collect();
        if name.is_empty() {
            continue; // `fn(` types
        }
        let Some(body) = code[at..].find(['{', ';']).map(|k| at + k) else {
            continue;
        };
        if bytes[body] == b';' {
            continue; // a declaration without a body
        }
        let mut depth = 0usize;
        let mut end = body;
        for (k, b) in bytes[body..].iter().enumerate() {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = body + k;
                        break;
                    }
                }
                _ => {}
            }
        }
        let (first, last) = (line_of(&code, at), line_of(&code, end));
        let lines = last - first + 1;
        if lines > limit {
            long.push(LongFn {
                name,
                line: first,
                lines,
            });
        }
    }
    long
}
