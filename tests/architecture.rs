//! The house's structure as a test: reads `runtime/src` and fails, naming the file and the
//! rule, when a module imports upward, two modules import each other (or any longer loop), or a
//! file lacks its `//!` doc line. ARCHITECTURE.md explains the layers; this keeps them true.
//!
//! A module is a file (`engine/worker.rs` is `engine::worker`, `sources/mod.rs` is `sources`).
//! An import is any `crate::a::b` path (or `super::x` in a folder) outside `#[cfg(test)]` code,
//! `tests.rs` files and comments: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may import (besides itself). `*` means anything.
const LAYERS: &[(&str, &[&str])] = &[
    // The bottom: the event model imports nothing of medic.
    ("event", &[]),
    ("config", &["event"]),
    ("logging", &[]),
    ("metrics", &[]),
    ("shutdown", &[]),
    ("os", &[]),
    ("types_db", &["event"]),
    ("store", &["event", "config", "logging", "os", "metrics"]),
    ("mqtt", &["event", "config", "logging", "store", "metrics"]),
    // Sources produce events; they import neither the engine nor an effect.
    (
        "sources",
        &[
            "event", "config", "logging", "shutdown", "types_db", "store", "mqtt", "metrics",
        ],
    ),
    // The engine consumes events and emits decisions through its own port.
    (
        "engine",
        &[
            "event", "config", "logging", "shutdown", "types_db", "store", "os", "metrics",
        ],
    ),
    // Effects implement the engine's port (and only that part of the engine).
    (
        "effects",
        &[
            "event",
            "config",
            "logging",
            "store",
            "os",
            "mqtt",
            "metrics",
            "engine::port",
        ],
    ),
    // The HTTP endpoints read what the others publish (status boards, metrics, the history);
    // they change nothing.
    (
        "http",
        &[
            "event",
            "config",
            "logging",
            "shutdown",
            "metrics",
            "store",
            "engine::status",
            "effects::view",
        ],
    ),
    ("cli", &["*"]),
    ("test_fixtures", &["*"]),
    ("daemon", &["*"]),
    // A daemon in virtual time: it wires the same parts.
    ("replay", &["*"]),
    ("", &["*"]),
];

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Violation(String);

struct Tree {
    /// Module path → file.
    files: BTreeMap<String, PathBuf>,
    /// Module path → modules it imports.
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn read_tree(src: &Path) -> Tree {
    let mut files = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                // Unit tests in a file of their own are test code: they may reach anywhere.
                && path.file_stem().is_some_and(|s| s != "tests")
            {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let rel = rel.to_string_lossy().replace('/', "::");
                let module = match rel.as_str() {
                    "lib" | "main" => String::new(),
                    m => m.strip_suffix("::mod").unwrap_or(m).to_string(),
                };
                files.insert(module, path);
            }
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut edges = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let code = code_outside_tests(&text);
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p).to_string();
        let mut to = BTreeSet::new();
        for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
            for path in paths_after(&code, prefix) {
                let full = if base.is_empty() {
                    path
                } else {
                    format!("{base}::{path}")
                };
                if let Some(target) = longest_module(&modules, &full)
                    && target != *module
                    && !module.starts_with(&format!("{target}::"))
                    && !target.is_empty()
                {
                    to.insert(target);
                }
            }
        }
        edges.insert(module.clone(), to);
    }
    Tree { files, edges }
}

/// The source without `#[cfg(test)]` items (from the first one on, as test modules come
/// last) and without comments.
fn code_outside_tests(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `a::b::c` path that follows `prefix` (lower-case segments only: modules, not types).
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        let mut segments = Vec::new();
        for seg in rest.split("::") {
            let name: String = seg
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.is_empty() {
                break;
            }
            let whole = name.len() == seg.len();
            segments.push(name);
            if !whole {
                break;
            }
        }
        if !segments.is_empty() {
            out.push(segments.join("::"));
        }
    }
    out
}

fn longest_module(modules: &BTreeSet<String>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

fn check(src: &Path) -> Vec<Violation> {
    let tree = read_tree(src);
    let mut found = Vec::new();
    let layer = |m: &str| LAYERS.iter().find(|(name, _)| *name == top(m)).map(|l| l.1);
    for (module, targets) in &tree.edges {
        let file = tree.files[module].strip_prefix(src).unwrap().display();
        let Some(allowed) = layer(module) else {
            found.push(Violation(format!(
                "{file}: top-level module `{}` has no layer in tests/architecture.rs",
                top(module)
            )));
            continue;
        };
        for target in targets {
            let ok = top(target) == top(module)
                || allowed.iter().any(|a| {
                    *a == "*"
                        || *a == top(target)
                        || target == a
                        || target.starts_with(&format!("{a}::"))
                });
            if !ok {
                found.push(Violation(format!(
                    "{file}: `{module}` imports `{target}`, which its layer may not use \
                     (allowed: {allowed:?})"
                )));
            }
        }
    }
    for circle in circles(&tree.edges) {
        found.push(Violation(format!(
            "import circle: {} (modules that import each other; move the shared part below both)",
            circle.join(" -> ")
        )));
    }
    for (module, path) in &tree.files {
        let text = std::fs::read_to_string(path).unwrap();
        let first = text.lines().find(|l| !l.starts_with("#!")).unwrap_or("");
        if !first.starts_with("//!") {
            let file = path.strip_prefix(src).unwrap().display();
            found.push(Violation(format!(
                "{file}: `{module}` does not start with a `//!` line saying what it is for"
            )));
        }
    }
    found.sort();
    found
}

/// Strongly connected components of more than one module (Tarjan).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn runtime_src_keeps_its_layers_and_has_no_circles() {
    let src = medic_integration::workspace().join("runtime/src");
    let found = check(&src);
    assert!(
        found.is_empty(),
        "runtime/src breaks the house rules (see ARCHITECTURE.md):\n{}",
        found
            .iter()
            .map(|v| format!("  {}", v.0))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The checker itself must be able to fail: a small tree with one of each mistake.
#[test]
fn the_checker_catches_circles_upward_imports_and_missing_docs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |rel: &str, text: &str| {
        let path = src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "lib.rs",
        "//! root\npub mod event;\npub mod engine;\npub mod effects;\n",
    );
    write("event.rs", "//! model\n");
    write(
        "engine/mod.rs",
        "//! engine\npub mod worker;\npub mod port;\n",
    );
    write(
        "engine/worker.rs",
        "//! worker\nuse crate::effects::executor::Run;\nuse super::port::Decision;\n",
    );
    write(
        "engine/port.rs",
        "//! port\nuse crate::engine::worker::Thing;\n",
    );
    write("effects/mod.rs", "//! effects\npub mod executor;\n");
    write(
        "effects/executor.rs",
        "use crate::engine::port::Decision;\n#[cfg(test)]\nmod tests { use crate::engine::worker::X; }\n",
    );
    let found: Vec<String> = check(src).into_iter().map(|v| v.0).collect();
    let has = |needle: &str| found.iter().any(|f| f.contains(needle));
    assert!(
        has("`engine::worker` imports `effects::executor`"),
        "{found:#?}"
    );
    // worker -> port -> worker, and worker -> executor -> port -> worker: one loop of three.
    assert!(
        has("import circle: effects::executor -> engine::port -> engine::worker"),
        "{found:#?}"
    );
    assert!(
        has("effects/executor.rs: `effects::executor` does not start with a `//!`"),
        "{found:#?}"
    );
    // Effects may use the engine's port, and test code may reach anywhere.
    assert!(!has("`effects::executor` imports"), "{found:#?}");
    assert_eq!(found.len(), 3, "{found:#?}");
}
