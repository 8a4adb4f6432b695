//! The file system's edge: reading input files with a bound on what a file
//! may cost (`read_bounded`), and writing output files so that a failure
//! loses nothing and a reader never finds a file missing or half written.
//!
//! Reading: a regular file larger than the bound is refused by its size,
//! before any byte is read; anything else (a FIFO, `/dev/stdin`, a
//! character device) is read until the bound (at most 1 GiB), and what goes
//! beyond it is refused, so that `/dev/zero` given as a model ends in an error, not with
//! the memory full. Memory grows fallibly, in steps.
//!
//! Each regular file is written to a temporary file in its own folder (with
//! the mode, and as root the owner, of the file it replaces), flushed to
//! disk, and renamed over the target once: a reader sees the old file or the
//! new one, never a part and never nothing. Several files are replaced
//! together: before the first rename, each old file gets a second name (a
//! hard link, or a copy where the file system has none), so that if any new
//! file cannot take its place the old ones are renamed back (files that belong
//! together, an object and its header, never disagree).
//!
//! What a target path is decides how it is written:
//! - a symbolic link is followed: the file it names is replaced and the link
//!   stays (a dangling link gets its file created);
//! - a character device or a FIFO (`-o /dev/null`, `-o /dev/stdout`, a named
//!   pipe) is written in place, never replaced by a regular file;
//! - a folder, a block device or a socket is refused;
//! - two outputs that are one file (one path, a link to the other, or two
//!   names of one inode) are refused before anything is written.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The bytes of the file at `path`, at most `max` of them; `what` names the
/// file in errors.
pub fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let fail = |e: std::io::Error| Error::read(path.display(), e);
    let too_large = |n: String| {
        Error::too_large(format!(
            "`{}` is {n}; cellc reads {what} of at most {}",
            path.display(),
            byte_size(max)
        ))
    };
    let too_long = || {
        Error::too_large(format!(
            "`{}` is not a regular file and runs past {}, the most cellc reads from a pipe or \
             a device",
            path.display(),
            byte_size(MAX_STREAM_BYTES)
        ))
    };
    let mut file = fs::File::open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if meta.is_dir() {
        return Err(fail(std::io::Error::other("it is a folder")));
    }
    if meta.is_file() && meta.len() > max {
        return Err(too_large(format!("{} bytes", meta.len())));
    }
    // What is not a regular file tells no size: a pipe or a device is read
    // up to a smaller bound (`/dev/zero` would fill the memory first).
    let max = if meta.is_file() {
        max
    } else {
        max.min(MAX_STREAM_BYTES)
    };
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk).map_err(fail)?;
        if n == 0 {
            return Ok(out);
        }
        if (out.len() + n) as u64 > max {
            return Err(if meta.is_file() {
                too_large(format!("more than {} long", byte_size(max)))
            } else {
                too_long()
            });
        }
        out.try_reserve(n).map_err(|_| {
            Error::too_large(format!("`{}` does not fit in memory", path.display()))
        })?;
        out.extend_from_slice(&chunk[..n]);
    }
}

/// The most [`read_bounded`] reads from what is not a regular file.
pub const MAX_STREAM_BYTES: u64 = 1 << 30;

/// `bytes` as a person reads it.
fn byte_size(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// A name beside `path`, hidden, unlikely to exist.
fn beside(path: &Path, what: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = path
        .file_name()
        .map_or("out".into(), |n| n.to_string_lossy().into_owned());
    let unique = format!(
        ".{name}.{what}-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    path.with_file_name(unique)
}

/// Most symbolic links followed from one output path (as the kernel's
/// `ELOOP` limit).
const MAX_LINKS: usize = 40;

/// How one output is written.
enum Target {
    /// A regular file, existing (with its metadata) or not: replaced by rename.
    Replace(PathBuf, Option<fs::Metadata>),
    /// A character device or a FIFO: written in place.
    InPlace(PathBuf),
}

fn write_error(path: &Path, why: impl Into<String>) -> Error {
    Error::write(path.display(), std::io::Error::other(why.into()))
}

/// The file `path` stands for, links followed, and how to write it.
fn target(path: &Path) -> Result<Target> {
    let mut at = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let meta = match fs::symlink_metadata(&at) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Target::Replace(at, None));
            }
            Err(e) => return Err(Error::write(path.display(), e)),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let to = fs::read_link(&at).map_err(|e| Error::write(path.display(), e))?;
            at = match at.parent() {
                Some(dir) => dir.join(to),
                None => to,
            };
            continue;
        }
        if kind.is_file() {
            return Ok(Target::Replace(at, Some(meta)));
        }
        if kind.is_dir() {
            return Err(write_error(path, "it is a folder"));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if kind.is_char_device() || kind.is_fifo() {
                return Ok(Target::InPlace(at));
            }
        }
        return Err(write_error(
            path,
            "it is a special file (a block device or a socket); cellc writes regular files, \
             character devices and FIFOs",
        ));
    }
    Err(write_error(
        path,
        format!("more than {MAX_LINKS} symbolic links to follow"),
    ))
}

/// What identifies a file: its folder's real path and its name, and, for a
/// file that exists, its device and inode.
type Identity = (Option<PathBuf>, Option<(u64, u64)>);

fn identity(path: &Path) -> Identity {
    let real = path.parent().and_then(|dir| {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        Some(fs::canonicalize(dir).ok()?.join(path.file_name()?))
    });
    #[cfg(unix)]
    let inode = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    };
    #[cfg(not(unix))]
    let inode = None;
    (real, inode)
}

/// Writes a new file beside `path` with `bytes`, with the mode (and, when
/// allowed, the owner) of `old`, flushed to disk. Returns its path.
fn write_temp(path: &Path, bytes: &[u8], old: Option<&fs::Metadata>) -> std::io::Result<PathBuf> {
    let tmp = beside(path, "tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    let written = (|| {
        if let Some(old) = old {
            f.set_permissions(old.permissions())?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                // Only root may give a file away; others keep their own.
                let _ = std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid()));
            }
        }
        f.write_all(bytes)?;
        f.sync_all()
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Flushes a folder's entries (the renames into it) to disk, where the
/// platform can.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Writes every `(path, bytes)`: all of them, or none (the old files stay).
pub fn write_all(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut targets = Vec::with_capacity(files.len());
    let mut seen: Vec<(&Path, Identity)> = Vec::new();
    for (path, _) in files {
        let t = target(path)?;
        let real = match &t {
            Target::Replace(p, _) | Target::InPlace(p) => p,
        };
        let id = identity(real);
        if let Some((other, _)) = seen
            .iter()
            .find(|(_, o)| (o.0.is_some() && o.0 == id.0) || (o.1.is_some() && o.1 == id.1))
        {
            return Err(write_error(
                path,
                format!(
                    "`{}` is also another output of this command (`{}`): two outputs \
                     may not be one file",
                    path.display(),
                    other.display()
                ),
            ));
        }
        seen.push((path, id));
        targets.push(t);
    }
    // Every regular file's new content, beside it.
    let mut temps: Vec<Option<PathBuf>> = Vec::with_capacity(files.len());
    let cleanup = |temps: &[Option<PathBuf>]| {
        for t in temps.iter().flatten() {
            let _ = fs::remove_file(t);
        }
    };
    for (t, (path, bytes)) in targets.iter().zip(files) {
        let tmp = match t {
            Target::Replace(real, old) => match write_temp(real, bytes, old.as_ref()) {
                Ok(tmp) => Some(tmp),
                Err(e) => {
                    cleanup(&temps);
                    return Err(Error::write(path.display(), e));
                }
            },
            Target::InPlace(_) => None,
        };
        temps.push(tmp);
    }
    // Special files, in place (nothing to roll back: a device or a pipe
    // keeps no old content).
    for (t, (path, bytes)) in targets.iter().zip(files) {
        if let Target::InPlace(real) = t {
            let written = fs::OpenOptions::new()
                .write(true)
                .open(real)
                .and_then(|mut f| f.write_all(bytes));
            if let Err(e) = written {
                cleanup(&temps);
                return Err(Error::write(path.display(), e));
            }
        }
    }
    // A second name for each old file when more than one file is replaced,
    // so that a failed rename can put every one back.
    let replaced: Vec<(&PathBuf, &PathBuf, bool)> = targets
        .iter()
        .zip(&temps)
        .filter_map(|(t, tmp)| match (t, tmp) {
            (Target::Replace(real, old), Some(tmp)) => Some((real, tmp, old.is_some())),
            _ => None,
        })
        .collect();
    let mut backups: Vec<Option<PathBuf>> = Vec::with_capacity(replaced.len());
    let drop_backups = |backups: &[Option<PathBuf>]| {
        for b in backups.iter().flatten() {
            let _ = fs::remove_file(b);
        }
    };
    if replaced.len() > 1 {
        for &(real, _, existed) in &replaced {
            if !existed {
                backups.push(None);
                continue;
            }
            let b = beside(real, "old");
            let kept = fs::hard_link(real, &b).or_else(|_| fs::copy(real, &b).map(|_| ()));
            if let Err(e) = kept {
                drop_backups(&backups);
                cleanup(&temps);
                return Err(Error::write(real.display(), e));
            }
            backups.push(Some(b));
        }
    }
    for (i, &(real, tmp, _)) in replaced.iter().enumerate() {
        if let Err(e) = fs::rename(tmp, real) {
            // Put back what was replaced: the old file where there was one,
            // nothing where there was none.
            for (k, &(done, _, _)) in replaced[..i].iter().enumerate() {
                match &backups[k] {
                    Some(b) => {
                        let _ = fs::rename(b, done);
                    }
                    None => {
                        let _ = fs::remove_file(done);
                    }
                }
            }
            drop_backups(&backups);
            cleanup(&temps);
            return Err(Error::write(real.display(), e));
        }
        sync_dir(real);
    }
    drop_backups(&backups);
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

    /// Two outputs that are one file (the same path, or a link to it) are
    /// refused before anything is written: `-o same.h` once wrote the
    /// object and then the header over it.
    #[test]
    fn two_outputs_may_not_be_one_file() {
        let d = dir("same");
        let a = d.join("same.h");
        let e = write_all(&[(&a, b"object"), (&a, b"header")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("two outputs may not be one file"), "{e}");
        assert!(!a.exists());
        // Through another spelling of the path.
        let b = d.join(".").join("same.h");
        assert!(write_all(&[(&a, b"1"), (&b, b"2")]).is_err());
        #[cfg(unix)]
        {
            fs::write(&a, b"old").unwrap();
            let link = d.join("link.h");
            std::os::unix::fs::symlink(&a, &link).unwrap();
            assert!(write_all(&[(&a, b"1"), (&link, b"2")]).is_err());
            assert_eq!(fs::read(&a).unwrap(), b"old");
        }
        let _ = fs::remove_dir_all(&d);
    }

    /// A replaced file keeps its mode, and a symbolic link stays a link to
    /// the file it names, which gets the new content.
    #[cfg(unix)]
    #[test]
    fn modes_are_kept_and_links_followed() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("modes");
        let a = d.join("private.safetensors");
        fs::write(&a, b"old").unwrap();
        fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).unwrap();
        write_all(&[(&a, b"new")]).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let link = d.join("link");
        std::os::unix::fs::symlink("private.safetensors", &link).unwrap();
        write_all(&[(&link, b"through the link")]).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&a).unwrap(), b"through the link");
        // A dangling link gets its file.
        let dangling = d.join("dangling");
        std::os::unix::fs::symlink("made.bin", &dangling).unwrap();
        write_all(&[(&dangling, b"made")]).unwrap();
        assert_eq!(fs::read(d.join("made.bin")).unwrap(), b"made");
        let _ = fs::remove_dir_all(&d);
    }

    /// A character device and a FIFO are written in place, not replaced by
    /// a regular file (`-o /dev/null` must leave `/dev/null` a device).
    #[cfg(unix)]
    #[test]
    #[allow(clippy::print_stderr)] // says what it could not run
    fn special_files_are_written_in_place() {
        use std::os::unix::fs::FileTypeExt;
        let d = dir("special");
        // A character device of our own (a second /dev/null, made where
        // the test may make one: as root), never the system's.
        let null = d.join("null");
        let c = std::ffi::CString::new(null.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
        let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        if made == 0 {
            write_all(&[(&null, b"discarded")]).unwrap();
            assert!(fs::metadata(&null).unwrap().file_type().is_char_device());
        } else {
            eprintln!("note: not root: the character-device case was not run");
        }
        let fifo = d.join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0 {
            let reader = {
                let fifo = fifo.clone();
                std::thread::spawn(move || fs::read(fifo).unwrap())
            };
            write_all(&[(&fifo, b"through the pipe")]).unwrap();
            assert_eq!(reader.join().unwrap(), b"through the pipe");
            assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
        }
        let _ = fs::remove_dir_all(&d);
    }

    /// A reader that opens the file while it is replaced, again and again,
    /// always finds it, whole (the old file was once renamed aside first).
    #[test]
    fn a_concurrent_reader_never_finds_the_file_missing() {
        let d = dir("concurrent");
        let a = d.join("out.bin");
        write_all(&[(&a, &[1u8; 4096])]).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (a, stop) = (a.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let bytes = fs::read(&a).expect("the file is always there");
                    assert!(bytes == [1u8; 4096] || bytes == [2u8; 4096]);
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..200 {
            let fill = if i % 2 == 0 { 2u8 } else { 1u8 };
            let h = d.join("out.h");
            write_all(&[(&a, &[fill; 4096]), (&h, b"header")]).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        let _ = fs::remove_dir_all(&d);
    }
}
