//! The code's layout promises (ARCHITECTURE.md, "Where things are"), checked on the sources:
//! the crate's modules sit in layers and each uses only those above it; the page's modules
//! (`src/ui`) have no circle; no source file is over 500 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate's top-level modules, top layer first: each may use only those before it.
const LAYERS: [&str; 11] = [
    "gguf",
    "model",
    "ops",
    "regroup",
    "tokenizer",
    "sampling",
    "engine",
    "cpu",
    "gpu",
    "protocol",
    "ui",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (a path named in a doc comment is no import).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let lines = text.lines().map(|l| l.split("//").next().unwrap_or(""));
    lines.collect::<Vec<_>>().join("\n")
}

/// The names that follow `prefix` in `code` (`crate::engine::X` → `engine`; `super::{a, b::c}`
/// → `a`, `b`).
fn used_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| {
        let s = s.trim_start();
        let end = s.find(|c: char| !c.is_alphanumeric() && c != '_');
        s[..end.unwrap_or(s.len())].to_string()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices(prefix) {
        let rest = &code[i + prefix.len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                out.extend(group.split(',').map(ident));
            }
            None => {
                out.insert(ident(rest));
            }
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

/// The top-level module a source file belongs to (`src/cpu/walk.rs` → `cpu`).
fn top_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

#[test]
fn each_module_uses_only_the_layers_above_it() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        let Some(module) = top_module(f) else {
            continue;
        };
        let Some(layer) = LAYERS.iter().position(|m| *m == module) else {
            continue; // lib.rs, main.rs, cli/: above every layer
        };
        for used in used_after(&code(f), "crate::") {
            match LAYERS.iter().position(|m| *m == used) {
                Some(u) if u > layer => wrong.push(format!("{} uses crate::{used}", f.display())),
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

/// `src/ui`'s modules as a graph (`ui/engine/local.rs` → `engine`), by `super::` and
/// `crate::ui::` paths; its circles, if any.
#[test]
fn the_page_has_no_module_circle() {
    let ui = src().join("ui");
    let mut files = Vec::new();
    rust_files(&ui, &mut files);
    let module = |p: &Path| {
        let rel = p.strip_prefix(&ui).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        first.trim_end_matches(".rs").to_string()
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module(f);
        // ui/m/mod.rs is module m itself: its `super` is ui, as for ui/m.rs.
        let is_mod = f.file_name().is_some_and(|n| n == "mod.rs");
        let nested = f.parent() != Some(ui.as_path()) && !is_mod;
        let code = code(f);
        // From a file in ui/, `super::x` is ui's x; from ui/m/*.rs, `super::super::x` is.
        let mut used = used_after(&code, "crate::ui::");
        let up = if nested { "super::super::" } else { "super::" };
        used.extend(used_after(&code, up));
        used.remove(&from);
        used.retain(|m| m != "super");
        graph.entry(from).or_default().extend(used);
    }
    let circle = graph.keys().find_map(|start| reaches(&graph, start, start));
    assert!(circle.is_none(), "a module circle in src/ui: {circle:?}");
}

/// A path from `from` back to `target`, if there is one.
fn reaches(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    target: &str,
) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == target {
                return Some([path.clone(), vec![next.clone()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

#[test]
fn no_source_file_is_over_500_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 500).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}
