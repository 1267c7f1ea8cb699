//! Atomic, no-clobber file and directory writes (temp file or folder + rename).
//! Owns every write feedlens makes to a user's disk; nothing else calls `fs::write`.

use crate::{Error, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A sibling of `path` named `.{name}.{tag}-{pid}` (same filesystem, so rename is atomic).
fn sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{tag}-{}", std::process::id()))
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::file(path, e)
}

/// Refuse to replace an existing `path` unless `force`.
pub fn check_clobber(path: &Path, force: bool) -> Result<()> {
    if !force && (path.exists() || path.is_symlink()) {
        return Err(Error::file(
            path,
            "already exists (use --force to overwrite)",
        ));
    }
    Ok(())
}

/// Write `bytes` to `path` atomically: a temp file in the same folder, fsync, rename.
/// Refuses to overwrite an existing file unless `force`. Creates missing parent folders.
pub fn write_file(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    check_clobber(path, force)?;
    if path.is_dir() {
        return Err(Error::file(path, "is a directory, expected a file"));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    let tmp = sibling(path, "tmp");
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, format!("cannot write: {e}")));
    }
    Ok(())
}

/// Write a folder of files atomically: they are written into a temp folder beside `dir`, which
/// is then renamed into place. An existing `dir` is replaced only with `force` (moved aside
/// first, removed after the new one is in place), so a crash leaves either the old or the new
/// folder whole, never a mix.
pub fn write_dir(dir: &Path, files: &[(&str, &[u8])], force: bool) -> Result<()> {
    check_clobber(dir, force)?;
    if dir.exists() && !dir.is_dir() {
        return Err(Error::file(dir, "exists and is not a directory"));
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    let tmp = sibling(dir, "tmp");
    let res = (|| -> std::io::Result<()> {
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir(&tmp)?;
        for (name, bytes) in files {
            let mut f = fs::File::create(tmp.join(name))?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = res {
        let _ = fs::remove_dir_all(&tmp);
        return Err(io_err(dir, format!("cannot write: {e}")));
    }
    replace_dir(&tmp, dir)
}

/// Move the finished folder `tmp` to `dir`, replacing an existing `dir`.
pub fn replace_dir(tmp: &Path, dir: &Path) -> Result<()> {
    let old = sibling(dir, "old");
    let had_old = dir.exists();
    if had_old {
        let _ = fs::remove_dir_all(&old);
        fs::rename(dir, &old).map_err(|e| io_err(dir, format!("cannot move aside: {e}")))?;
    }
    if let Err(e) = fs::rename(tmp, dir) {
        if had_old {
            let _ = fs::rename(&old, dir);
        }
        let _ = fs::remove_dir_all(tmp);
        return Err(io_err(dir, format!("cannot write: {e}")));
    }
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Read a whole file, with an error naming it.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    if path.is_dir() {
        return Err(Error::file(path, "is a directory, expected a file"));
    }
    fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::file(path, "no such file"),
        _ => Error::file(path, format!("cannot read: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_clobber_without_force() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        write_file(&p, b"1", false).unwrap();
        let e = write_file(&p, b"2", false).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"1");
        write_file(&p, b"2", true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"2");
    }

    #[test]
    fn dir_replaced_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ck");
        write_dir(&p, &[("a", b"1"), ("b", b"2")], false).unwrap();
        assert!(write_dir(&p, &[("a", b"3")], false).is_err());
        write_dir(&p, &[("a", b"3")], true).unwrap();
        assert_eq!(fs::read(p.join("a")).unwrap(), b"3");
        assert!(!p.join("b").exists());
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp folders left behind: {names:?}");
    }
}
