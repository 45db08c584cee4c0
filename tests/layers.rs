//! The layer invariant of ARCHITECTURE.md ("Layers"): a file of `src/`
//! imports only from its own layer or one below, and the file-level import
//! graph has no cycle.
//!
//! An import is any `crate::…` or `super::…` path outside comments:
//! `use crate::…` (grouped trees included), inline paths such as
//! `crate::mask::name(..)`, and `super::…` paths: to a sibling file
//! (`daemon/serial.rs` → `daemon/port.rs`) or to the parent's own items
//! (`super::Ctx` → `daemon/mod.rs`), and a parent's relative paths to its
//! children (`serial::Readers`, `pub use port::Port` in `daemon/mod.rs`):
//! so a child that imports its parent's own items while the parent
//! imports the child is a cycle. It points at the file of the longest module
//! prefix of the path (`crate::registry::BindError` → `src/registry/mod.rs`,
//! `crate::registry::audit::Entry` → `src/registry/audit.rs`,
//! `crate::Ssn` → the crate root); a `mod.rs` and its children are separate
//! files. Unit-test modules (`#[cfg(test)] mod tests`, at the end of a
//! file) are not part of the layering, nor are `src/bin/` (the top, outside
//! the library) and `mod` declarations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layer list of ARCHITECTURE.md, lowest first: the modules of each.
fn layers() -> Vec<Vec<String>> {
    let doc = include_str!("../ARCHITECTURE.md");
    let list = doc
        .split("<!-- layers: begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- layers: end -->").next())
        .expect("ARCHITECTURE.md has the layer list between its markers");
    list.lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| {
            let names = l.split(" — ").next().unwrap_or(l);
            names
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// Every library source file, by module path (`""` is the crate root).
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "bin") {
                    walk(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix("src").unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
                    parts.pop();
                }
                out.insert(parts.join("::"), std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(Path::new("src"), &mut out);
    out
}

/// The code of a file without comments and without its unit tests.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::` and `super::` path in the code of `module`, as the
/// segments of its absolute path (use trees expanded).
fn crate_paths(module: &str, code: &str, children: &[String]) -> Vec<Vec<String>> {
    fn ident(s: &[u8], i: &mut usize) -> Option<String> {
        while *i < s.len() && s[*i].is_ascii_whitespace() {
            *i += 1;
        }
        let start = *i;
        while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == b'_') {
            *i += 1;
        }
        (start < *i).then(|| String::from_utf8_lossy(&s[start..*i]).into_owned())
    }
    fn skip_ws(s: &[u8], i: &mut usize) {
        while *i < s.len() && s[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }
    /// A use tree after `prefix::`.
    fn tree(s: &[u8], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        loop {
            skip_ws(s, i);
            if s.get(*i) == Some(&b'{') {
                *i += 1;
                loop {
                    skip_ws(s, i);
                    match s.get(*i) {
                        Some(b'}') | None => {
                            *i += 1;
                            return;
                        }
                        Some(b',') => *i += 1,
                        _ => {
                            let before = *i;
                            tree(s, i, path.clone(), out);
                            if *i == before {
                                *i += 1;
                            }
                        }
                    }
                }
            }
            match ident(s, i) {
                Some(seg) => path.push(seg),
                None => break,
            }
            if s[*i..].starts_with(b"::") {
                *i += 2;
            } else {
                break;
            }
        }
        out.push(path);
    }
    let s = code.as_bytes();
    let own: Vec<String> = module
        .split("::")
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    let mut out = Vec::new();
    let mut from = 0;
    // A parent's paths to its own children (`serial::Readers` in
    // `daemon/mod.rs`, `pub use port::Port`): the parent imports them.
    let child_keys: Vec<String> = children.iter().map(|c| format!("{c}::")).collect();
    let keys: Vec<&str> = ["crate::", "super::", "self::"]
        .into_iter()
        .chain(child_keys.iter().map(String::as_str))
        .collect();
    loop {
        let next = keys
            .iter()
            .filter_map(|k| code[from..].find(k).map(|at| (from + at, *k)))
            .min();
        let Some((start, key)) = next else { break };
        let mut i = start + key.len();
        let word_before = start > 0 && {
            let b = s[start - 1];
            b.is_ascii_alphanumeric() || b == b'_' || b == b':'
        };
        if !word_before {
            let mut base = Vec::new();
            if key == "self::" {
                base = own.clone();
            } else if key != "crate::" && key != "super::" {
                // A child of this module: the path goes on from it.
                base = own.clone();
                base.push(key.trim_end_matches("::").to_string());
            }
            if key == "super::" {
                // `super` of a file's module, as often as it is repeated.
                base = own.clone();
                base.pop();
                while code[i..].starts_with("super::") {
                    base.pop();
                    i += "super::".len();
                }
            }
            tree(s, &mut i, base, &mut out);
        }
        from = i.max(start + 1);
    }
    out
}

/// The file-level import graph: module → modules it imports.
fn graph(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    files
        .iter()
        .map(|(module, text)| {
            let prefix = if module.is_empty() {
                String::new()
            } else {
                format!("{module}::")
            };
            let children: Vec<String> = files
                .keys()
                .filter_map(|k| k.strip_prefix(prefix.as_str()))
                .filter(|rest| !module.is_empty() && !rest.is_empty() && !rest.contains("::"))
                .map(str::to_string)
                .collect();
            let targets = crate_paths(module, &code(text), &children)
                .into_iter()
                .map(|path| {
                    (0..=path.len())
                        .rev()
                        .map(|k| path[..k].join("::"))
                        .find(|m| files.contains_key(m))
                        .unwrap_or_default()
                })
                .filter(|t| t != module)
                .collect();
            (module.clone(), targets)
        })
        .collect()
}

/// A cycle of the graph, if there is one.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        n: &str,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut c = stack[at..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut done, &mut Vec::new()))
}

fn shown(m: &str) -> &str {
    if m.is_empty() {
        "crate"
    } else {
        m
    }
}

#[test]
fn nothing_imports_upward_and_there_is_no_cycle() {
    let layers = layers();
    let layer_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, ms)| ms.iter().map(move |m| (m.as_str(), i)))
        .collect();
    assert!(layers.len() > 5, "the layer list is missing: {layers:?}");
    let files = sources();
    let top = |m: &str| shown(m.split("::").next().unwrap_or("")).to_string();
    let tops: BTreeSet<String> = files.keys().map(|m| top(m)).collect();
    let listed: BTreeSet<String> = layer_of.keys().map(|m| m.to_string()).collect();
    assert_eq!(
        tops, listed,
        "every top-level module of src/ is in exactly one layer of ARCHITECTURE.md"
    );
    let g = graph(&files);
    let mut upward = Vec::new();
    for (from, targets) in &g {
        for to in targets {
            let (a, b) = (layer_of[top(from).as_str()], layer_of[top(to).as_str()]);
            if b > a {
                upward.push(format!("{} -> {}", shown(from), shown(to)));
            }
        }
    }
    assert!(upward.is_empty(), "imports upward: {upward:#?}");
    if let Some(c) = cycle(&g) {
        let c: Vec<&str> = c.iter().map(|m| shown(m)).collect();
        panic!("import cycle: {}", c.join(" -> "));
    }
}

/// The checker itself: it sees grouped and inline paths, not comments or
/// unit tests, and finds a cycle.
#[test]
fn the_checker_sees_imports_and_cycles() {
    let text = "use crate::a::{self, b::{C, d}};\n// crate::x::y\nfn f() { crate::e::g(); }\n\
                let s = my_crate::z::w;\n#[cfg(test)]\nmod tests { use crate::t::u; }\n";
    let paths = crate_paths("m::n", &code(text), &[]);
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["a::self", "a::b::C", "a::b::d", "e::g"]);
    let text = "use super::{k::L, Ctx};\nfn f() { super::super::q::r(); }\n";
    let joined: Vec<String> = crate_paths("m::n", text, &[])
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(joined, ["m::k::L", "m::Ctx", "q::r"]);
    // A parent's paths to its children count; a path that only ends in a
    // child's name does not.
    let text = "pub use k::L;\nfn f() { k::g(); other::k::h(); }\n";
    let joined: Vec<String> = crate_paths("m", text, &["k".into()])
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(joined, ["m::k::L", "m::k::g"]);
    // A parent and a child that import each other are a cycle.
    let files: BTreeMap<String, String> = [
        ("m".into(), "pub use k::L;\npub struct Ctx;".into()),
        ("m::k".into(), "use super::Ctx;\npub struct L;".into()),
    ]
    .into_iter()
    .collect();
    assert!(cycle(&graph(&files)).is_some());
    let files: BTreeMap<String, String> = [
        ("a".into(), "use crate::b::X;".into()),
        ("b".into(), "fn f() { crate::c::f() }".into()),
        ("c".into(), "use crate::{a::Y, Ssn};".into()),
        ("".into(), String::new()),
    ]
    .into_iter()
    .collect();
    let g = graph(&files);
    assert_eq!(g["c"], ["".to_string(), "a".to_string()].into());
    assert_eq!(
        cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let acyclic: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), ["b".to_string()].into()),
        ("b".into(), BTreeSet::new()),
    ]
    .into();
    assert_eq!(cycle(&acyclic), None);
}
