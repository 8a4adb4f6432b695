//! The layers point one way: each module of the crate may use only the
//! modules below it (docs/architecture.md draws them). A `use` or path that
//! reaches up fails here, naming the file, the line and the rule.
//!
//! ```text
//! diag, gen, error, alloc, files  (no dependencies within the crate but diag, error)
//! ir        <- diag
//! syntax    <- diag
//! sema      <- syntax, ir          (the front end ends in `sema::lower`)
//! opt       <- ir                  (rewrites: passes, legalize)
//! interp    <- ir                  (the oracle)
//! codegen   <- ir                  (plans, Cranelift functions, kernels, cost model)
//! jit       <- codegen, ir         (the runtime: takes IR and parameter values)
//! weights   <- ir                  (named tensors, binding to parameters)
//! onnx      <- weights, ir     (a quantized model names its precision)
//! aot       <- codegen, ir         (objects and headers)
//! stats, dot <- ir                 (dumps)
//! lib.rs, network, run, bench, fuzzing (the facade and what stands on it: anything)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Each module and the modules it may use (besides itself, `diag`, `error`,
/// `alloc`).
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
        ("quant", &["ir"][..]),
        ("codegen", &["ir", "quant"][..]),
        ("jit", &["codegen", "ir", "quant"][..]),
        ("weights", &["ir", "gen", "files"][..]),
        ("onnx", &["weights", "ir", "files"][..]),
        ("aot", &["codegen", "ir"][..]),
        ("stats", &["ir"][..]),
        ("dot", &["ir"][..]),
    ])
}

/// Where the names the crate root re-exports come from.
fn root_item(name: &str) -> &str {
    match name {
        "Error" | "ErrorKind" | "Result" => "error",
        "Diagnostic" | "Source" => "diag",
        "Kernel" | "State" => "jit",
        "Options" | "Variant" => "codegen",
        "Weights" => "weights",
        _ => "lib",
    }
}

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

/// The first path segment of every item a line reaches through `crate::`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // A `use crate::{a, b::c, D}` group: its top-level items.
            let mut depth = 0;
            let mut items = vec![String::new()];
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(String::new()),
                    c if depth == 0 => items.last_mut().unwrap().push(c),
                    _ => {}
                }
            }
            for item in items {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let rules = rules();
    let mut broken = Vec::new();
    let mut checked = 0;
    for path in &all {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        let Some(allowed) = rules.get(module.as_str()) else {
            continue; // lib.rs, bin/, run, bench, fuzzing: the top
        };
        checked += 1;
        let text = std::fs::read_to_string(path).unwrap();
        // A `use crate::{...}` may span lines: join each statement.
        let mut stmt = String::new();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            // Unit tests may build their inputs with the facade.
            if code.starts_with("#[cfg(test)]") {
                break;
            }
            if code.starts_with("//") {
                continue;
            }
            stmt.push_str(code);
            let open = stmt.matches('{').count() > stmt.matches('}').count();
            if stmt.trim_start().starts_with("use ") && open {
                continue;
            }
            for item in crate_paths(&stmt) {
                let target = if item.chars().next().is_some_and(char::is_uppercase) {
                    root_item(&item).to_string()
                } else {
                    item.clone()
                };
                let ok = target == module
                    || target == "diag"
                    || target == "error"
                    || target == "alloc"
                    || allowed.contains(&target.as_str());
                if !ok {
                    broken.push(format!(
                        "{}:{}: `{module}` uses `{target}` (`crate::{item}`), which is not below it",
                        rel.display(),
                        n + 1
                    ));
                }
            }
            stmt.clear();
        }
    }
    assert!(checked > 30, "only {checked} files checked");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_groups_and_paths() {
    assert_eq!(
        crate_paths("use crate::{ir, Error, codegen::plan::{Loc, Plan}};"),
        ["ir", "Error", "codegen"]
    );
    assert_eq!(crate_paths("let x = crate::jit::Kernel::new();"), ["jit"]);
}
