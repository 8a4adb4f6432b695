//! The layers point one way: each module of the crate may use only the
//! modules below it (docs/architecture.md draws them). The check parses every
//! source file with `syn` and resolves every path that names the crate
//! (`crate::`, `super::` at any depth, `self::`, and `use crate as ...`
//! aliases, in `use` trees of any shape and in expressions, types and
//! patterns), through the root's re-exports, to the top-level module it
//! reaches. A path that reaches up fails, naming the file, the line and the
//! rule; so does a module the table does not place, and a path the check
//! cannot resolve. Unit tests (`#[cfg(test)]` items) are exempt: they may
//! build inputs with the facade.
//!
//! ```text
//! diag, gen, error, alloc, files   the base (no dependencies within the crate but diag, error, alloc)
//! ir        <- diag
//! syntax    <- diag
//! sema      <- syntax, ir          (the front end ends in `sema::lower`)
//! opt       <- ir                  (rewrites: passes, legalize)
//! interp    <- ir                  (the oracle)
//! grad      <- ir, interp          (backward cells, gradients through time in f64)
//! quant     <- ir
//! kernels   <- ir, quant           (SIMD kernels: products, wide regions, probes)
//! codegen   <- kernels, ir, quant  (plans, Cranelift functions, cost model)
//! jit       <- codegen, kernels, ir, quant  (the runtime: takes IR and parameter values)
//! weights   <- ir, gen, files      (named tensors, binding to parameters)
//! onnx      <- weights, ir, files
//! aot       <- codegen, ir         (objects and headers)
//! the top, in order: sizes <- cell <- train <- torch <- network <- run <- bench <- fuzzing <- lib.rs
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

/// Each module below the top and the modules it may use (besides itself and
/// the modules every module may use).
fn rules() -> HashMap<&'static str, &'static [&'static str]> {
    HashMap::from([
        ("diag", &[][..]),
        ("gen", &[][..]),
        ("error", &[][..]),
        ("alloc", &[][..]),
        ("files", &[][..]),
        ("ir", &[][..]),
        ("syntax", &[][..]),
        ("sema", &["syntax", "ir"][..]),
        ("opt", &["ir"][..]),
        ("interp", &["ir"][..]),
        ("grad", &["ir", "interp"][..]),
        ("quant", &["ir"][..]),
        ("kernels", &["ir", "quant"][..]),
        ("codegen", &["kernels", "ir", "quant"][..]),
        ("jit", &["codegen", "kernels", "ir", "quant"][..]),
        ("weights", &["ir", "gen", "files"][..]),
        ("onnx", &["weights", "ir", "files"][..]),
        ("aot", &["codegen", "ir"][..]),
    ])
}

/// Every module may use these.
const EVERYWHERE: &[&str] = &["diag", "error", "alloc"];

/// The top layer, lowest first: each may use anything below the top and the
/// ones before it here (`lib` is the crate root, the facade).
const TOP: &[&str] = &[
    "sizes", "cell", "train", "torch", "network", "run", "bench", "fuzzing", "lib",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file (`src/codegen/plan/build.rs` ->
/// `codegen::plan::build`; `src/lib.rs` -> the root, `[]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// The paths of one file that name the crate, resolved to the crate's module
/// they start at (the first segment after `crate`), with their lines.
struct Collector<'a> {
    /// The file's module path.
    here: &'a [String],
    /// Local names for the crate (`use crate as c`).
    aliases: Vec<String>,
    found: Vec<(usize, String)>,
    unplaced: Vec<(usize, String)>,
}

impl Collector<'_> {
    /// Resolves a path's segments (as written) to the crate module path it
    /// names, if it names the crate.
    fn resolve(&self, segments: &[String]) -> Option<Result<Vec<String>, String>> {
        let first = segments.first()?;
        let rest = &segments[1..];
        if first == "crate" || self.aliases.iter().any(|a| a == first) {
            return Some(Ok(rest.to_vec()));
        }
        if first == "self" {
            let mut p = self.here.to_vec();
            p.extend_from_slice(rest);
            return Some(Ok(p));
        }
        if first == "super" {
            let mut p = self.here.to_vec();
            let mut i = 0;
            while segments.get(i).is_some_and(|s| s == "super") {
                if p.pop().is_none() {
                    return Some(Err(format!(
                        "`{}` goes above the crate",
                        segments.join("::")
                    )));
                }
                i += 1;
            }
            p.extend_from_slice(&segments[i..]);
            return Some(Ok(p));
        }
        None
    }

    fn record(&mut self, line: usize, segments: Vec<String>) {
        match self.resolve(&segments) {
            None => {}
            Some(Ok(p)) => {
                if let Some(first) = p.first() {
                    self.found.push((line, first.clone()));
                }
            }
            Some(Err(why)) => self.unplaced.push((line, why)),
        }
    }

    /// Every path of a `use` tree, with the prefix above it.
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                full.push(n.ident.to_string());
                self.record(n.span().start().line, full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                full.push(r.ident.to_string());
                if full == ["crate"] {
                    self.aliases.push(r.rename.to_string());
                }
                self.record(r.span().start().line, full);
            }
            syn::UseTree::Glob(g) => {
                // `use super::*` reaches the module itself.
                self.record(g.span().start().line, prefix.clone());
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if is_cfg_test(attrs) {
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(p.span().start().line, segments);
        syn::visit::visit_path(self, p);
    }
}

/// The module each name the crate root re-exports comes from (`pub use
/// error::{Error, ErrorKind}` -> `Error`: `error`), read off `src/lib.rs`.
fn root_exports(lib: &syn::File) -> HashMap<String, String> {
    fn walk(prefix: &mut Vec<String>, tree: &syn::UseTree, out: &mut HashMap<String, String>) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                walk(prefix, &p.tree, out);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                if let Some(m) = prefix.first() {
                    out.insert(n.ident.to_string(), m.clone());
                }
            }
            syn::UseTree::Rename(r) => {
                if let Some(m) = prefix.first() {
                    out.insert(r.rename.to_string(), m.clone());
                }
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    walk(prefix, t, out);
                }
            }
            syn::UseTree::Glob(_) => {}
        }
    }
    let mut out = HashMap::new();
    for item in &lib.items {
        if let syn::Item::Use(u) = item {
            walk(&mut Vec::new(), &u.tree, &mut out);
        }
    }
    out
}

/// The crate's top-level modules, as `src/lib.rs` declares them.
fn top_modules(lib: &syn::File) -> Vec<String> {
    lib.items
        .iter()
        .filter_map(|i| match i {
            syn::Item::Mod(m) => Some(m.ident.to_string()),
            _ => None,
        })
        .collect()
}

/// Whether `module` may use `target` (both top-level module names, `lib` for
/// the root).
fn allowed(module: &str, target: &str) -> Result<bool, String> {
    let rules = rules();
    if target == module || EVERYWHERE.contains(&target) {
        return Ok(true);
    }
    let place = |m: &str| -> Result<(), String> {
        if rules.contains_key(m) || TOP.contains(&m) {
            Ok(())
        } else {
            Err(format!(
                "module `{m}` has no place in tests/layers.rs's table"
            ))
        }
    };
    place(module)?;
    place(target)?;
    Ok(match rules.get(module) {
        Some(below) => below.contains(&target),
        // The top: anything below it, and the top modules before it.
        None => {
            let rank = |m: &str| TOP.iter().position(|t| *t == m);
            match (rank(module), rank(target)) {
                (Some(a), Some(b)) => b < a,
                (_, None) => true,
                _ => false,
            }
        }
    })
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = syn::parse_file(&std::fs::read_to_string(src.join("lib.rs")).unwrap()).unwrap();
    let exports = root_exports(&lib);
    let tops = top_modules(&lib);
    let mut all = Vec::new();
    files(&src, &mut all);
    all.sort();
    let mut broken = Vec::new();
    let mut checked = 0;
    for path in &all {
        let rel = path.strip_prefix(&src).unwrap();
        if rel.starts_with("bin") {
            continue; // The command line is its own crate, on the public API.
        }
        let here = module_path(rel);
        let module = here.first().cloned().unwrap_or_else(|| "lib".to_string());
        if module != "lib" && !tops.contains(&module) {
            broken.push(format!("{}: not a module of the crate", rel.display()));
            continue;
        }
        checked += 1;
        let text = std::fs::read_to_string(path).unwrap();
        let file = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("{}: does not parse: {e}", rel.display()));
        let mut c = Collector {
            here: &here,
            aliases: Vec::new(),
            found: Vec::new(),
            unplaced: Vec::new(),
        };
        // `use crate as c` anywhere in the file names the crate everywhere.
        c.visit_file(&file);
        if !c.aliases.is_empty() {
            c.found.clear();
            c.unplaced.clear();
            c.visit_file(&file);
        }
        for (line, why) in &c.unplaced {
            broken.push(format!("{}:{line}: {why}", rel.display()));
        }
        for (line, first) in &c.found {
            // A name at the root: a re-export (its module), a top-level
            // module, or an item of the root itself (the facade).
            let target = if tops.contains(first) {
                first.clone()
            } else {
                exports
                    .get(first)
                    .cloned()
                    .unwrap_or_else(|| "lib".to_string())
            };
            match allowed(&module, &target) {
                Ok(true) => {}
                Ok(false) => broken.push(format!(
                    "{}:{line}: `{module}` uses `{target}` (`crate::{first}`), which is not below it",
                    rel.display()
                )),
                Err(why) => broken.push(format!("{}:{line}: {why}", rel.display())),
            }
        }
    }
    assert!(checked > 60, "only {checked} files checked");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The checker sees what the old text scanner missed: multi-line `use`
/// groups, `super::super`, `use crate as ...`, code after a `#[cfg(test)]`
/// item, and a module the table does not place.
#[test]
fn the_checker_sees_every_path() {
    let check = |here: &[&str], text: &str| -> Vec<String> {
        let here: Vec<String> = here.iter().map(|s| s.to_string()).collect();
        let file = syn::parse_file(text).unwrap();
        let mut c = Collector {
            here: &here,
            aliases: Vec::new(),
            found: Vec::new(),
            unplaced: Vec::new(),
        };
        c.visit_file(&file);
        c.visit_file(&file);
        let mut v: Vec<String> = c.found.into_iter().map(|(_, f)| f).collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(
        check(
            &["ir"],
            "pub use crate::{\n    jit::Kernel,\n    codegen::{plan::Plan},\n};"
        ),
        ["codegen", "jit"]
    );
    assert_eq!(
        check(
            &["codegen", "plan", "build"],
            "use super::super::super::network::Layout;"
        ),
        ["network"]
    );
    assert_eq!(
        check(&["ir"], "use crate as c;\nfn f() { c::jit::go(); }"),
        ["jit"]
    );
    assert_eq!(
        check(
            &["ir"],
            "#[cfg(test)]\nmod tests { use crate::jit::X; }\nfn g() { crate::run::go(); }"
        ),
        ["run"]
    );
    assert_eq!(allowed("ir", "jit"), Ok(false));
    assert_eq!(allowed("jit", "codegen"), Ok(true));
    assert_eq!(allowed("run", "network"), Ok(true));
    assert_eq!(allowed("network", "run"), Ok(false));
    assert!(allowed("newmodule", "ir").is_err());
}
