//! Diagnostics snapshots: one minimal broken file per error kind in `tests/ui/`,
//! rendered without colour as the user would read them.

use std::path::Path;

use cellc::Cell;

/// Checks a file the way `cellc compile` does (parse, check, bind default sizes)
/// and renders every diagnostic, warnings included.
fn render(path: &Path) -> String {
    let rel = format!("tests/ui/{}", path.file_name().unwrap().to_string_lossy());
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return format!("cannot read: {e}"),
    };
    let _ = text;
    let result = cellc::read_source(path).and_then(|mut src| {
        src.name = rel.clone();
        Cell::from_source(&src.name, &src.text)
    });
    let result = result.and_then(|cell| {
        let warnings = cellc::diag::render_plain(cell.source(), cell.warnings());
        cell.ir().map(|_| warnings)
    });
    match result {
        Ok(warnings) if warnings.is_empty() => "(no diagnostics)\n".to_string(),
        Ok(warnings) => warnings,
        Err(cellc::Error::Source {
            mut source,
            diagnostics,
        }) => {
            source.name = rel;
            cellc::Error::Source {
                source,
                diagnostics,
            }
            .render()
        }
        Err(e) => e.render(),
    }
}

#[test]
fn ui_diagnostics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rnn"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the ui corpus went missing");
    for path in files {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let rendered = render(&path);
        insta::with_settings!({ snapshot_path => "ui/snapshots", prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(stem, rendered);
        });
    }
}

/// Every file in the corpus except the warning-only one is rejected.
#[test]
fn ui_files_are_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rnn") {
            continue;
        }
        let result = Cell::from_file(&path).and_then(|c| c.ir());
        let stem = path.file_stem().unwrap().to_string_lossy();
        if stem == "unused_parameter" {
            let cell = Cell::from_file(&path).unwrap();
            assert_eq!(cell.warnings().len(), 1, "{stem}");
            assert!(result.is_ok(), "{stem}");
        } else {
            assert!(result.is_err(), "{stem} should be rejected");
        }
    }
}
