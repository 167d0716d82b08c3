//! The shape of the crate, checked like behaviour (ARCHITECTURE.md, "The rules of the layout"):
//! no import cycle among the modules of `src/`, no module loose in `src/` beside `lib.rs` and
//! `main.rs`, `common/` a leaf, and the planes importing each other only in the allowed direction.
//!
//! The dependencies are read from the source text (`crate::` and `super::` paths, grouped `use`s
//! included), as a reader would follow them; a module `a::b` named by a path counts as a dependency on
//! the file that defines it. Comments are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every module of `src/` (path segments, `mod.rs` as its folder) and its file.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("src/ is readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(src)
                    .expect("under src/")
                    .with_extension("");
                let mut segs: Module = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    segs.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    segs.pop();
                }
                out.insert(segs, path);
            }
        }
    }
    out
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads `::a::b` (and a `::{x, y::z}` group) after a `crate`/`super` keyword; returns the paths.
fn paths_after(rest: &str, base: &[String]) -> Vec<Module> {
    let mut segs: Module = base.to_vec();
    let mut s = rest;
    loop {
        let Some(after) = s.strip_prefix("::") else {
            return vec![segs];
        };
        if let Some(group) = after.strip_prefix('{') {
            // A grouped import: split the top level of the group on commas.
            let mut depth = 0usize;
            let mut end = group.len();
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = i;
                        break;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            let mut out = Vec::new();
            let mut item = String::new();
            let mut depth = 0usize;
            for c in group[..end].chars().chain(std::iter::once(',')) {
                match c {
                    '{' => {
                        depth += 1;
                        item.push(c)
                    }
                    '}' => {
                        depth = depth.saturating_sub(1);
                        item.push(c)
                    }
                    ',' if depth == 0 => {
                        let name = item.split(" as ").next().unwrap_or("").trim();
                        let name = name.split('{').next().unwrap_or("").trim();
                        let mut p = segs.clone();
                        for part in name.split("::").filter(|x| !x.is_empty() && *x != "*") {
                            if part != "self" {
                                p.push(part.trim().to_string());
                            }
                        }
                        out.push(p);
                        item.clear();
                    }
                    _ => item.push(c),
                }
            }
            return out;
        }
        let len = after.find(|c: char| !is_ident(c)).unwrap_or(after.len());
        if len == 0 {
            return vec![segs];
        }
        segs.push(after[..len].to_string());
        s = &after[len..];
    }
}

/// The modules `module` (in `file`) depends on.
fn dependencies(module: &Module, file: &Path, all: &BTreeMap<Module, PathBuf>) -> BTreeSet<Module> {
    let text = strip_comments(&fs::read_to_string(file).expect("source is readable"));
    let super_base: Module = module[..module.len().saturating_sub(1)].to_vec();
    let mut out = BTreeSet::new();
    for (kw, base) in [("crate", Vec::new()), ("super", super_base)] {
        let mut from = 0;
        while let Some(i) = text[from..].find(kw) {
            let at = from + i;
            from = at + kw.len();
            let before_ok = text[..at].chars().next_back().is_none_or(|c| !is_ident(c));
            if !before_ok || !text[from..].starts_with("::") {
                continue;
            }
            for mut path in paths_after(&text[from..], &base) {
                while !path.is_empty() && !all.contains_key(&path) {
                    path.pop();
                }
                let is_parent_mod = path.len() < module.len()
                    && module.starts_with(&path)
                    && all[&path].ends_with("mod.rs");
                if !path.is_empty() && &path != module && !is_parent_mod {
                    out.insert(path);
                }
            }
        }
    }
    out
}

fn graph() -> (
    BTreeMap<Module, PathBuf>,
    BTreeMap<Module, BTreeSet<Module>>,
) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let all = modules(&src);
    let edges = all
        .iter()
        .map(|(m, f)| (m.clone(), dependencies(m, f, &all)))
        .collect();
    (all, edges)
}

fn name(m: &Module) -> String {
    m.join("::")
}

#[test]
fn no_import_cycle_among_the_modules() {
    let (all, edges) = graph();
    let reach = |from: &Module| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for d in &edges[&m] {
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        seen
    };
    let mut in_cycles = Vec::new();
    for m in all.keys() {
        if reach(m).contains(m) {
            let back: Vec<String> = edges[m]
                .iter()
                .filter(|d| reach(d).contains(m))
                .map(name)
                .collect();
            in_cycles.push(format!("{} (back through {})", name(m), back.join(", ")));
        }
    }
    assert!(
        in_cycles.is_empty(),
        "modules in an import cycle:\n  {}",
        in_cycles.join("\n  ")
    );
}

#[test]
fn nothing_is_loose_in_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let loose: Vec<String> = fs::read_dir(&src)
        .expect("src/ is readable")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rs") && n != "lib.rs" && n != "main.rs")
        .collect();
    assert!(
        loose.is_empty(),
        "files loose in src/ (put them in the folder of their plane): {loose:?}"
    );
}

#[test]
fn the_planes_import_each_other_only_one_way() {
    let (_, edges) = graph();
    let top = |m: &Module| m.first().cloned().unwrap_or_default();
    let mut wrong = Vec::new();
    for (m, deps) in &edges {
        for d in deps {
            let (from, to) = (top(m), top(d));
            let why = match (from.as_str(), to.as_str()) {
                ("common", t) if t != "common" => Some("common/ is a leaf: it imports nothing"),
                ("dataplane" | "drivers", "control") => {
                    Some("the data plane never calls the control plane (only Redis joins them)")
                }
                ("control", "dataplane")
                    if matches!(
                        d.get(1).map(String::as_str),
                        Some("worker" | "core" | "session" | "proxy" | "h2")
                    ) =>
                {
                    Some("the control plane never reaches into a worker's state or traffic")
                }
                ("dataplane" | "drivers" | "control" | "config" | "tls" | "common", "process")
                    if !matches!(
                        d.get(1).map(String::as_str),
                        Some("events" | "restart" | "shutdown")
                    ) =>
                {
                    Some("only process/ starts things; others may use its leaves (events, restart, shutdown)")
                }
                _ => None,
            };
            if let Some(why) = why {
                wrong.push(format!("{} → {}: {why}", name(m), name(d)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layout:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_reader_follows_grouped_imports() {
    // The check itself must be able to fail: a grouped import is a dependency like any other.
    let all: BTreeMap<Module, PathBuf> = [
        (vec!["a".to_string()], PathBuf::from("a.rs")),
        (
            vec!["b".to_string(), "c".to_string()],
            PathBuf::from("b/c.rs"),
        ),
    ]
    .into_iter()
    .collect();
    let paths = paths_after("::{a::X, b::c::{Y, Z}};", &[]);
    let resolved: BTreeSet<Module> = paths
        .into_iter()
        .map(|mut p| {
            while !p.is_empty() && !all.contains_key(&p) {
                p.pop();
            }
            p
        })
        .collect();
    assert!(resolved.contains(&vec!["a".to_string()]));
    assert!(resolved.contains(&vec!["b".to_string(), "c".to_string()]));
}

#[test]
fn the_docs_name_files_that_exist() {
    // ARCHITECTURE.md and LIFECYCLE.md walk the code by file: every `src/…` path they name must be there.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    for doc in [
        "ARCHITECTURE.md",
        "src/dataplane/http1/LIFECYCLE.md",
        "README.md",
    ] {
        let text = fs::read_to_string(root.join(doc)).expect("the doc is readable");
        for (i, _) in text.match_indices("`src/") {
            let rest = &text[i + 1..];
            let Some(end) = rest.find('`') else { continue };
            let path = rest[..end].trim_end_matches('/');
            let path = path.split(' ').next().unwrap_or(path);
            if !root.join(path).exists() {
                missing.push(format!("{doc}: {path}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths named in the docs that do not exist:\n  {}",
        missing.join("\n  ")
    );
}
