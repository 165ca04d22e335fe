//! The house's structure as a test: reads `runtime/src` and fails, naming the file and the
//! rule, when a module imports upward, two modules import each other (or any longer loop), or a
//! file lacks its `//!` doc line. ARCHITECTURE.md explains the layers; this keeps them true.
//!
//! A module is a file (`engine/worker.rs` is `engine::worker`, `sources/mod.rs` is `sources`).
//! An import is any `crate::a::b` or `super::x` path the file's Rust names (parsed with `syn`:
//! `use` trees with their groups, paths in types and expressions, and paths inside macro calls)
//! outside `#[cfg(test)]` items and `tests.rs` files: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may import (besides itself). `*` means anything.
const LAYERS: &[(&str, &[&str])] = &[
    // The bottom, `event` and `config`, are crates now (`medic-event`, `medic-config`): the
    // compiler keeps them from importing medic. `crate::event::…` and `crate::config::…` paths
    // resolve to no file here and count for nothing.
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
        // `super` in `a/b.rs` (module `a::b`) and in `a/b/mod.rs` (module `a::b` too) is `a`.
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut to = BTreeSet::new();
        for (prefix, imported) in imported_paths(&text, path) {
            let base = if prefix == "crate::" { "" } else { parent };
            let full = if base.is_empty() {
                imported
            } else {
                format!("{base}::{imported}")
            };
            if let Some(target) = longest_module(&modules, &full)
                && target != *module
                && !module.starts_with(&format!("{target}::"))
                && !target.is_empty()
            {
                to.insert(target);
            }
        }
        edges.insert(module.clone(), to);
    }
    Tree { files, edges }
}

/// Every `crate::…` and `super::…` path in `text` outside `#[cfg(test)]` items, as
/// `(prefix, "a::b::c")` with lower-case segments only (modules, not types).
fn imported_paths(text: &str, file: &Path) -> Vec<(&'static str, String)> {
    use syn::visit_mut::VisitMut;

    #[derive(Default)]
    struct Paths(Vec<(&'static str, String)>);

    impl Paths {
        fn add(&mut self, segments: &[String]) {
            let Some((first, rest)) = segments.split_first() else {
                return;
            };
            let prefix = match first.as_str() {
                "crate" => "crate::",
                "super" => "super::",
                _ => return,
            };
            let modules: Vec<&str> = rest
                .iter()
                .map(String::as_str)
                .take_while(|s| {
                    s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
                .collect();
            if !modules.is_empty() {
                self.0.push((prefix, modules.join("::")));
            }
        }

        /// `use` trees: `crate::{a::b, c::{d, e}}` is three paths.
        fn use_tree(&mut self, tree: &syn::UseTree, above: &mut Vec<String>) {
            match tree {
                syn::UseTree::Path(p) => {
                    above.push(p.ident.to_string());
                    self.use_tree(&p.tree, above);
                    above.pop();
                }
                syn::UseTree::Name(n) => {
                    above.push(n.ident.to_string());
                    self.add(above);
                    above.pop();
                }
                syn::UseTree::Rename(r) => {
                    above.push(r.ident.to_string());
                    self.add(above);
                    above.pop();
                }
                syn::UseTree::Glob(_) => self.add(above),
                syn::UseTree::Group(g) => {
                    for tree in &g.items {
                        self.use_tree(tree, above);
                    }
                }
            }
        }

        /// Macro arguments are tokens to `syn`: find `crate :: a :: b` runs in them.
        fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
            let tokens: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
            let mut i = 0;
            while i < tokens.len() {
                match &tokens[i] {
                    proc_macro2::TokenTree::Group(g) => self.tokens(g.stream()),
                    proc_macro2::TokenTree::Ident(id) if id == "crate" || id == "super" => {
                        let mut segments = vec![id.to_string()];
                        let mut j = i + 1;
                        while let (
                            Some(proc_macro2::TokenTree::Punct(a)),
                            Some(proc_macro2::TokenTree::Punct(b)),
                            Some(proc_macro2::TokenTree::Ident(next)),
                        ) = (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
                        {
                            if a.as_char() != ':' || b.as_char() != ':' {
                                break;
                            }
                            segments.push(next.to_string());
                            j += 3;
                        }
                        self.add(&segments);
                        i = j;
                        continue;
                    }
                    _ => {}
                }
                i += 1;
            }
        }
    }

    fn is_test(attrs: &[syn::Attribute]) -> bool {
        attrs.iter().any(|a| {
            a.path().is_ident("cfg")
                && a.parse_args::<proc_macro2::TokenStream>()
                    .is_ok_and(|t| t.to_string().split_whitespace().any(|w| w == "test"))
        })
    }

    impl VisitMut for Paths {
        fn visit_item_mut(&mut self, item: &mut syn::Item) {
            let attrs = match item {
                syn::Item::Mod(m) => &m.attrs,
                syn::Item::Fn(f) => &f.attrs,
                syn::Item::Impl(i) => &i.attrs,
                syn::Item::Use(u) => &u.attrs,
                syn::Item::Struct(s) => &s.attrs,
                syn::Item::Enum(e) => &e.attrs,
                syn::Item::Const(c) => &c.attrs,
                syn::Item::Static(s) => &s.attrs,
                syn::Item::Trait(t) => &t.attrs,
                syn::Item::Type(t) => &t.attrs,
                syn::Item::Macro(m) => &m.attrs,
                _ => return syn::visit_mut::visit_item_mut(self, item),
            };
            if !is_test(attrs) {
                syn::visit_mut::visit_item_mut(self, item);
            }
        }

        fn visit_impl_item_fn_mut(&mut self, f: &mut syn::ImplItemFn) {
            if !is_test(&f.attrs) {
                syn::visit_mut::visit_impl_item_fn_mut(self, f);
            }
        }

        fn visit_item_use_mut(&mut self, u: &mut syn::ItemUse) {
            self.use_tree(&u.tree, &mut Vec::new());
        }

        fn visit_path_mut(&mut self, path: &mut syn::Path) {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.add(&segments);
            syn::visit_mut::visit_path_mut(self, path);
        }

        fn visit_macro_mut(&mut self, m: &mut syn::Macro) {
            self.tokens(m.tokens.clone());
            syn::visit_mut::visit_macro_mut(self, m);
        }
    }

    // `VisitMut` only because the daemon's build enables that feature of syn (see Cargo.toml).
    let mut parsed = syn::parse_file(text)
        .unwrap_or_else(|e| panic!("{}: not Rust that syn parses: {e}", file.display()));
    let mut paths = Paths::default();
    paths.visit_file_mut(&mut parsed);
    paths.0
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
    write("lib.rs", "//! root\npub mod engine;\npub mod effects;\n");
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
    // What reading text missed: a grouped import, code after a test module, a path in a macro.
    write(
        "effects/grouped.rs",
        "//! grouped\nuse crate::{event::Model, engine::{port::Decision, registry::Registry}};\n",
    );
    write(
        "effects/after_tests.rs",
        "//! after tests\n#[cfg(test)]\nmod tests {}\nfn f() { let _ = crate::engine::compiler::compile(); }\n",
    );
    write(
        "effects/in_macro.rs",
        "//! in a macro\nfn f() { tracing::warn!(\"{}\", crate::engine::series::count()); }\n",
    );
    write("engine/registry.rs", "//! registry\n");
    write("engine/compiler.rs", "//! compiler\n");
    write("engine/series.rs", "//! series\n");
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
    assert!(
        has("`effects::grouped` imports `engine::registry`"),
        "{found:#?}"
    );
    assert!(
        has("`effects::after_tests` imports `engine::compiler`"),
        "{found:#?}"
    );
    assert!(
        has("`effects::in_macro` imports `engine::series`"),
        "{found:#?}"
    );
    // Effects may use the engine's port, and test code may reach anywhere.
    assert!(!has("`effects::executor` imports"), "{found:#?}");
    assert!(
        !has("`effects::grouped` imports `engine::port`"),
        "{found:#?}"
    );
    assert_eq!(found.len(), 6, "{found:#?}");
}
