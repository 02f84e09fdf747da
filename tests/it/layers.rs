//! The one-way rule between top-level modules, checked by a tool rather than
//! by eye (issue #11): every `crate::…` path in the non-test code of `src/`
//! is read with `syn`, and each top-level module may import only the modules
//! its row in [`ALLOWED`] names. The table is the architecture of
//! `src/lib.rs` in data; the test also fails on a cycle, and on a top-level
//! module the table does not know (a new module must take its place in the
//! layering on purpose).
//!
//! What it reads: `use` trees, paths in types and expressions, and the
//! tokens of macro invocations (`tracing::warn!(… crate::x …)`). Items under
//! `#[cfg(test)]` are skipped: a test may reach anywhere. Doc links are
//! comments and never count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// For each top-level module, the top-level modules it may import. Reading
/// down the table is reading down the pipeline: `cores` composes everything;
/// `net` drives `handlers`; handlers call the services through the per-core
/// `state`; services use the stores; everything may count into `metrics`
/// and read `config` and `clock`.
const ALLOWED: &[(&str, &[&str])] = &[
    // The composition root: boots the cores and runs the control jobs.
    (
        "cores",
        &[
            "net",
            "handlers",
            "access",
            "state",
            "tokens",
            "revocation",
            "refresh",
            "ratelimit",
            "codes",
            "signin",
            "sessions",
            "identity",
            "redis",
            "store",
            "metrics",
            "router",
            "http",
            "config",
            "clock",
        ],
    ),
    // Sockets: accept, read, parse, dispatch, write.
    (
        "net",
        &[
            "handlers", "state", "metrics", "router", "http", "config", "clock",
        ],
    ),
    // Endpoints: parse a request, call a service, write the answer.
    (
        "handlers",
        &[
            "access",
            "state",
            "tokens",
            "revocation",
            "refresh",
            "ratelimit",
            "codes",
            "signin",
            "sessions",
            "identity",
            "redis",
            "store",
            "metrics",
            "router",
            "http",
            "config",
            "clock",
        ],
    ),
    // The token check shared by /validate and introspection.
    (
        "access",
        &[
            "state",
            "tokens",
            "revocation",
            "metrics",
            "config",
            "clock",
        ],
    ),
    // Per-core context and shared state: what a core owns.
    (
        "state",
        &[
            "tokens",
            "revocation",
            "refresh",
            "ratelimit",
            "codes",
            "signin",
            "sessions",
            "identity",
            "redis",
            "store",
            "metrics",
            "http",
            "config",
            "clock",
        ],
    ),
    // Services. Durable revocations re-seed refresh families, so
    // `revocation` knows `refresh`'s keys; `refresh` knows nothing of it.
    (
        "revocation",
        &[
            "refresh", "tokens", "redis", "store", "metrics", "config", "clock",
        ],
    ),
    (
        "refresh",
        &["tokens", "redis", "metrics", "config", "clock"],
    ),
    ("ratelimit", &["redis", "metrics", "config", "clock"]),
    // Authorization codes: Redis only (the refresh family they revoke is a
    // key name, not an import of `refresh`).
    ("codes", &["redis", "metrics", "config", "clock"]),
    // The sealed authorization requests of the sign-in page: a leaf.
    ("signin", &[]),
    // Browser sessions: Redis only (the not-before mark is a key name).
    ("sessions", &["redis", "metrics", "config", "clock"]),
    ("tokens", &["store", "metrics", "config", "clock"]),
    ("identity", &["store", "metrics", "config", "clock"]),
    // Stores.
    ("redis", &["metrics", "config", "clock"]),
    ("store", &["metrics", "config", "clock"]),
    // Leaves.
    ("metrics", &["router", "config", "clock"]),
    ("router", &["http"]),
    ("http", &["config", "clock"]),
    ("config", &["clock"]),
    ("clock", &[]),
    // Test support (compiled for tests only).
    ("testing", &["store", "config"]),
];

/// Collects the top-level module named by every `crate::` path.
struct Imports<'a> {
    found: &'a mut BTreeSet<String>,
}

impl Imports<'_> {
    fn note_tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let mut prev: Vec<String> = Vec::new();
        for tt in tokens {
            match tt {
                proc_macro2::TokenTree::Group(g) => {
                    self.note_tokens(g.stream());
                    prev.clear();
                }
                proc_macro2::TokenTree::Ident(i) => {
                    let s = i.to_string();
                    if prev.len() >= 3
                        && prev[prev.len() - 3] == "crate"
                        && prev[prev.len() - 2] == ":"
                        && prev[prev.len() - 1] == ":"
                    {
                        self.found.insert(s.clone());
                    }
                    prev.push(s);
                }
                proc_macro2::TokenTree::Punct(p) => prev.push(p.as_char().to_string()),
                proc_macro2::TokenTree::Literal(_) => prev.clear(),
            }
        }
    }

    fn note_use(&mut self, tree: &syn::UseTree, at_crate: bool) {
        match tree {
            syn::UseTree::Path(p) if !at_crate && p.ident == "crate" => {
                self.note_use(&p.tree, true)
            }
            syn::UseTree::Path(p) if at_crate => {
                self.found.insert(p.ident.to_string());
            }
            syn::UseTree::Name(n) if at_crate => {
                self.found.insert(n.ident.to_string());
            }
            syn::UseTree::Rename(r) if at_crate => {
                self.found.insert(r.ident.to_string());
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.note_use(t, at_crate);
                }
            }
            _ => {}
        }
    }
}

/// True for `#[cfg(test)]` and `#[cfg(all(test, …))]`; not for
/// `#[cfg(any(test, feature = …))]`, which is also compiled outside tests.
fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| match &a.meta {
        syn::Meta::List(l) if l.path.is_ident("cfg") => {
            let t = l.tokens.to_string();
            t == "test" || (t.starts_with("all") && t.contains("test"))
        }
        _ => false,
    })
}

impl<'ast> Visit<'ast> for Imports<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Trait(t) => &t.attrs,
            _ => &[],
        };
        if is_cfg_test(attrs) {
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.note_use(&u.tree, false);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let mut segs = p.segments.iter();
        if let (Some(first), Some(second)) = (segs.next(), segs.next()) {
            if first.ident == "crate" {
                self.found.insert(second.ident.to_string());
            }
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.note_tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

/// The files of the crate's non-test modules, found the way rustc finds
/// them: from `lib.rs`, following every `mod name;` that is not under
/// `#[cfg(test)]` (to `name.rs` or `name/mod.rs`, or a `#[path]`).
fn module_files(file: &Path, dir: &Path, out: &mut Vec<(PathBuf, syn::File)>) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut children = Vec::new();
    collect_mods(&ast.items, dir, &mut children);
    out.push((file.to_path_buf(), ast));
    for (child, child_dir) in children {
        module_files(&child, &child_dir, out);
    }
}

/// The out-of-line `mod` declarations among `items` (and in inline modules),
/// with the directory their own children live in.
fn collect_mods(items: &[syn::Item], dir: &Path, out: &mut Vec<(PathBuf, PathBuf)>) {
    for item in items {
        let syn::Item::Mod(m) = item else { continue };
        if is_cfg_test(&m.attrs) {
            continue;
        }
        let name = m.ident.to_string();
        if let Some((_, inline)) = &m.content {
            collect_mods(inline, &dir.join(&name), out);
            continue;
        }
        let flat = dir.join(format!("{name}.rs"));
        let nested = dir.join(&name).join("mod.rs");
        let file = if flat.exists() { flat } else { nested };
        assert!(file.exists(), "mod {name} in {}: no file", dir.display());
        out.push((file, dir.join(&name)));
    }
}

/// module → (imported module → files that import it)
fn import_graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    module_files(&src.join("lib.rs"), &src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (file, ast) in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let top = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" {
            continue; // the crate root names every module
        }
        let mut found = BTreeSet::new();
        Imports { found: &mut found }.visit_file(&ast);
        let edges = graph.entry(top.clone()).or_default();
        for target in found {
            if target != top {
                edges.entry(target).or_default().insert(rel.clone());
            }
        }
    }
    graph
}

#[test]
fn top_level_modules_import_only_down_the_layers() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let graph = import_graph();
    let mut problems = Vec::new();
    for (module, edges) in &graph {
        let Some(may) = allowed.get(module.as_str()) else {
            problems.push(format!(
                "src/{module}: a top-level module tests/it/layers.rs does not know; give it a row in ALLOWED"
            ));
            continue;
        };
        for (target, files) in edges {
            if !may.contains(target.as_str()) {
                problems.push(format!(
                    "{module} -> {target} is not allowed (in {})",
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_allowed_table_has_no_cycle() {
    // With the table acyclic and every import inside the table, the import
    // graph is acyclic too.
    fn visit<'a>(
        m: &'a str,
        table: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(i) = path.iter().position(|p| *p == m) {
            panic!("cycle in ALLOWED: {}", path[i..].join(" -> ") + " -> " + m);
        }
        if done.contains(m) {
            return;
        }
        path.push(m);
        for d in table.get(m).into_iter().flatten() {
            visit(d, table, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let table: BTreeMap<&str, Vec<&str>> = ALLOWED.iter().map(|(m, d)| (*m, d.to_vec())).collect();
    for (m, deps) in &table {
        for d in deps {
            assert!(
                table.contains_key(d),
                "{m} names {d}, which has no row in ALLOWED"
            );
        }
    }
    let mut done = BTreeSet::new();
    for m in table.keys() {
        visit(m, &table, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_reader_sees_imports_in_every_form() {
    let text = r#"
        use crate::a::X;
        use crate::{b, c::Y};
        fn f() { let _ = crate::d::z(); tracing::warn!("{}", crate::e::w()); }
        #[cfg(test)]
        mod tests { use crate::hidden::T; }
        /// [`crate::doc_only`]
        fn g() {}
    "#;
    let ast = syn::parse_file(text).unwrap();
    let mut found = BTreeSet::new();
    Imports { found: &mut found }.visit_file(&ast);
    let found: Vec<_> = found.into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "d", "e"]);
}
