//! Writing output files so that a failure loses nothing.
//!
//! Each file is written to a temporary file in its own folder, flushed to disk,
//! and renamed over the target: a reader sees the old file or the new one,
//! never a part (a reader that memory-mapped the old file keeps its data, since
//! the old file is unlinked, not rewritten). Several files are replaced
//! together: the old ones are set aside first and put back if any new one
//! cannot take its place, so that files that belong together (an object and
//! its header) never disagree.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A name beside `path`, hidden, unlikely to exist.
fn beside(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or("out".into(), |n| n.to_string_lossy().into_owned());
    let unique = format!(
        ".{name}.{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    path.with_file_name(unique)
}

/// Writes every `(path, bytes)`: all of them, or none (the old files stay).
pub fn write_all(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut temps: Vec<PathBuf> = Vec::new();
    let cleanup = |temps: &[PathBuf]| {
        for t in temps {
            let _ = fs::remove_file(t);
        }
    };
    for (path, _) in files {
        if path.is_dir() {
            return Err(Error::write(
                path.display(),
                std::io::Error::other("it is a folder"),
            ));
        }
    }
    for (path, bytes) in files {
        let tmp = beside(path, "tmp");
        let written = (|| -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            temps.push(tmp.clone());
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            cleanup(&temps);
            return Err(Error::write(path.display(), e));
        }
    }
    // Set the old files aside, then move the new ones in.
    let mut aside: Vec<(PathBuf, PathBuf)> = Vec::new();
    let restore = |aside: &[(PathBuf, PathBuf)]| {
        for (old, path) in aside {
            let _ = fs::rename(old, path);
        }
    };
    for (path, _) in files {
        if path.exists() {
            let old = beside(path, "old");
            if let Err(e) = fs::rename(path, &old) {
                restore(&aside);
                cleanup(&temps);
                return Err(Error::write(path.display(), e));
            }
            aside.push((old, path.to_path_buf()));
        }
    }
    for (i, (path, _)) in files.iter().enumerate() {
        if let Err(e) = fs::rename(&temps[i], path) {
            for (done, _) in &files[..i] {
                let _ = fs::remove_file(done);
            }
            restore(&aside);
            cleanup(&temps);
            return Err(Error::write(path.display(), e));
        }
    }
    for (old, _) in &aside {
        let _ = fs::remove_file(old);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cellc-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replaces_files_together() {
        let d = dir("together");
        let (a, b) = (d.join("cell.o"), d.join("cell.h"));
        fs::write(&a, b"old a").unwrap();
        write_all(&[(&a, b"new a"), (&b, b"new b")]).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"new a");
        assert_eq!(fs::read(&b).unwrap(), b"new b");
        // Nothing else is left in the folder.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 2);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failure_keeps_the_old_files() {
        let d = dir("failure");
        let a = d.join("cell.o");
        fs::write(&a, b"old a").unwrap();
        // The second file cannot be written: the first keeps its old content.
        let b = d.join("missing/cell.h");
        assert!(write_all(&[(&a, b"new a"), (&b, b"new b")]).is_err());
        assert_eq!(fs::read(&a).unwrap(), b"old a");
        // A folder where a file should go is refused, and kept.
        let c = d.join("sub");
        fs::create_dir_all(c.join("x")).unwrap();
        let e = write_all(&[(&a, b"new a"), (&c, b"new c")]).unwrap_err();
        assert!(e.to_string().contains("folder"), "{e}");
        assert_eq!(fs::read(&a).unwrap(), b"old a");
        assert!(c.join("x").is_dir());
        // No temporary or set-aside file is left.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 2);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_folder_is_a_write_error() {
        let d = dir("missing");
        let p = d.join("no/such/folder/out.safetensors");
        let e = write_all(&[(&p, b"x")]).unwrap_err().to_string();
        assert!(e.contains("cannot write"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }
}
