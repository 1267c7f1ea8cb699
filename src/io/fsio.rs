//! Atomic, no-clobber file and directory writes (temp file or folder + rename), and the clean-up
//! of temp files left by killed runs. Owns every write feedlens makes to a user's disk; nothing
//! else calls `fs::write`.

use crate::{Error, Result};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The temp siblings' tags: `.{name}.tmp-{pid}.{k}` (being written), `.{name}.old-{pid}.{k}`
/// (the replaced version, being removed); `k` counts within the process, so two threads
/// writing one output never share a temp file.
const TAGS: [&str; 2] = ["tmp", "old"];

/// A sibling of `path` named `.{name}.{tag}-{pid}.{k}` (same filesystem, so rename is atomic).
fn sibling(path: &Path, tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(
        ".{}.{tag}-{}.{k}",
        file_name(path),
        std::process::id()
    ))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether process `pid` is still running (so its temp siblings are in use).
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        match i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            Some(p) => !matches!(
                rustix::process::test_kill_process(p),
                Err(rustix::io::Errno::SRCH)
            ),
            None => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Remove the temp siblings of `path` left by feedlens runs that were killed (their process
/// is gone). Best effort: what cannot be removed is left alone.
fn clean_stale(path: &Path) {
    let name = file_name(path);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let pid = TAGS.iter().find_map(|t| {
            n.strip_prefix(&format!(".{name}.{t}-"))
                .and_then(|p| p.split('.').next()?.parse::<u32>().ok())
        });
        if pid.is_some_and(|p| p != std::process::id() && !alive(p)) {
            let p = e.path();
            let _ = match p.is_dir() && !p.is_symlink() {
                true => fs::remove_dir_all(&p),
                false => fs::remove_file(&p),
            };
        }
    }
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

/// The longest output file name: the temp sibling `.{name}.tmp-{pid}.{k}` must still fit the
/// usual 255-byte limit of a name.
pub const MAX_NAME: usize = 200;

/// `p` made absolute with `.` and `..` resolved: the longest existing prefix is canonicalised
/// (links followed), the rest resolved by name.
pub fn resolve(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut base = abs.clone();
    let mut rest = Vec::new();
    let canon = loop {
        if let Ok(c) = fs::canonicalize(&base) {
            break c;
        }
        match (base.file_name().map(|n| n.to_os_string()), base.parent()) {
            (Some(n), Some(parent)) => {
                rest.push(n);
                base = parent.to_path_buf();
            }
            _ => break base,
        }
    };
    let mut out = canon;
    for c in rest.iter().rev() {
        match c.to_str() {
            Some("..") => {
                out.pop();
            }
            Some(".") => {}
            _ => out.push(c),
        }
    }
    out
}

/// Check, before any work, everything a command will write: no existing output without
/// `force`; only regular files and folders replaced; names short enough for their temp
/// siblings; no two outputs at one path; no output that is, contains, or replaces a file inside
/// one of `inputs`, nor the working directory; and each output's folder writable (a file is created there and removed,
/// so a read-only mount fails here even for root). The error names the output and the problem.
pub fn check_outputs(outputs: &[PathBuf], inputs: &[PathBuf], force: bool) -> Result<()> {
    let cwd = std::env::current_dir().map(|d| resolve(&d)).ok();
    let inputs: Vec<(PathBuf, &Path)> = inputs.iter().map(|i| (resolve(i), i.as_path())).collect();
    let mut seen: Vec<(PathBuf, &Path)> = Vec::new();
    for out in outputs {
        check_clobber(out, force)?;
        check_replaceable(out)?;
        let name = file_name(out);
        if name.len() > MAX_NAME {
            return Err(Error::file(
                out,
                format!("file name is {} bytes, longer than {MAX_NAME}", name.len()),
            ));
        }
        if let Some(c) = out.components().find(|c| c.as_os_str().len() > 255) {
            return Err(Error::file(
                out,
                format!(
                    "folder name '{}…' is longer than 255 bytes",
                    &c.as_os_str()
                        .to_string_lossy()
                        .chars()
                        .take(20)
                        .collect::<String>()
                ),
            ));
        }
        let r = resolve(out);
        if let Some((_, first)) = seen.iter().find(|(s, _)| *s == r) {
            return Err(Error::file(
                out,
                format!(
                    "is also another output of this command ({})",
                    first.display()
                ),
            ));
        }
        for (i, input) in &inputs {
            if i.starts_with(&r) {
                let how = if *i == r { "is" } else { "contains" };
                return Err(Error::file(
                    out,
                    format!(
                        "{how} the input {}: refusing to write over it",
                        input.display()
                    ),
                ));
            }
            if r.starts_with(i) && r.exists() {
                return Err(Error::file(
                    out,
                    format!(
                        "is a file of the input {}: refusing to write over it",
                        input.display()
                    ),
                ));
            }
        }
        if cwd.as_ref().is_some_and(|c| c.starts_with(&r)) {
            return Err(Error::file(
                out,
                "is (or contains) the working directory: refusing to replace it",
            ));
        }
        check_writable(&r).map_err(|e| Error::file(out, e))?;
        seen.push((r, out));
    }
    Ok(())
}

/// An existing folder that a command would replace must be one feedlens wrote: empty, or
/// holding one of `markers` (a checkpoint's `config.json`, a report's `data.json`). Anything
/// else is refused, so `--force` never deletes a folder of the user's own files.
pub fn check_own_dir(dir: &Path, markers: &[&str]) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let empty = fs::read_dir(dir)
        .map_err(|e| io_err(dir, format!("cannot list: {e}")))?
        .next()
        .is_none();
    if empty || markers.iter().any(|m| dir.join(m).is_file()) {
        return Ok(());
    }
    Err(Error::file(
        dir,
        format!(
            "exists and holds no {} (not written by feedlens): refusing to replace it",
            markers.join(" or ")
        ),
    ))
}

/// The nearest existing ancestor of `path` is a folder a file can be created in.
fn check_writable(path: &Path) -> std::result::Result<(), String> {
    let mut anc = path.parent();
    while let Some(a) = anc {
        match fs::metadata(a) {
            Ok(m) if !m.is_dir() => {
                return Err(format!("cannot create: {} is not a directory", a.display()))
            }
            Ok(_) => {
                let probe = sibling(&a.join("feedlens-write-test"), "tmp");
                return match fs::File::create(&probe) {
                    Ok(_) => {
                        let _ = fs::remove_file(&probe);
                        Ok(())
                    }
                    Err(e) => Err(format!("cannot create files in {}: {e}", a.display())),
                };
            }
            Err(_) => anc = a.parent(),
        }
    }
    Ok(())
}

/// Refuse to replace `path` when it exists and is not a regular file (a device node, a FIFO, a
/// socket): feedlens only ever replaces regular files and folders, so `--json /dev/null
/// --force` cannot swap the system's /dev/null for a file.
fn check_replaceable(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if !(m.is_file() || m.is_dir() || m.file_type().is_symlink()) => Err(Error::file(
            path,
            "exists and is not a regular file (feedlens only replaces regular files and folders)",
        )),
        Ok(m) if m.file_type().is_symlink() => match fs::metadata(path) {
            Ok(t) if !(t.is_file() || t.is_dir()) => Err(Error::file(
                path,
                "is a link to something that is not a regular file (feedlens only replaces regular files and folders)",
            )),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Move the finished temp file `tmp` to `path`. Without `force` the move is exclusive (a hard
/// link, which fails if `path` exists, then the temp name is removed), so of two runs racing
/// for one new output exactly one wins and the other gets "already exists"; with `force` it is
/// an atomic rename over the old file.
fn publish_file(tmp: &Path, path: &Path, force: bool) -> std::io::Result<()> {
    if force {
        return fs::rename(tmp, path);
    }
    match fs::hard_link(tmp, path) {
        Ok(()) => {
            let _ = fs::remove_file(tmp);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        // A filesystem without hard links: an exclusive rename where the OS has one.
        Err(_) => {
            #[cfg(target_os = "linux")]
            {
                use rustix::fs::{renameat_with, RenameFlags, CWD};
                match renameat_with(CWD, tmp, CWD, path, RenameFlags::NOREPLACE) {
                    Ok(()) => return Ok(()),
                    Err(e) if e == rustix::io::Errno::EXIST => {
                        return Err(std::io::ErrorKind::AlreadyExists.into())
                    }
                    Err(_) => {}
                }
            }
            if path.exists() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(tmp, path)
        }
    }
}

/// Write `bytes` to `path` atomically: a temp file in the same folder, fsync, then an exclusive
/// publish (or, with `force`, a rename over the old file, which stays whole until then).
/// Refuses to overwrite an existing file unless `force`, and never replaces anything but a
/// regular file. Creates missing parent folders.
pub fn write_file(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    write_files(&[(path, bytes)], force)
}

/// Write several files as one result, the last being its completion marker. Every file is
/// checked first (no clobber without `force`, only regular files replaced), then written to a
/// temp sibling and synced; a failure there (a full disk) removes the temps and leaves every
/// old file as it was. Only once all are whole is the old marker removed and the files
/// published in order, so a kill at any point never pairs an old marker with new files.
pub fn write_files(files: &[(&Path, &[u8])], force: bool) -> Result<()> {
    for (path, _) in files {
        check_clobber(path, force)?;
        check_replaceable(path)?;
        if path.is_dir() {
            return Err(Error::file(path, "is a directory, expected a file"));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        }
        clean_stale(path);
    }
    let mut temps: Vec<PathBuf> = Vec::with_capacity(files.len());
    let discard = |temps: &[PathBuf]| {
        for t in temps {
            let _ = fs::remove_file(t);
        }
    };
    for (path, bytes) in files {
        let tmp = sibling(path, "tmp");
        let res = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        temps.push(tmp);
        if let Err(e) = res {
            discard(&temps);
            return Err(io_err(path, format!("cannot write: {e}")));
        }
    }
    if let (true, [_, .., (marker, _)]) = (force, files) {
        if let Err(e) = remove_file(marker) {
            discard(&temps);
            return Err(e);
        }
    }
    for (i, ((path, _), tmp)) in files.iter().zip(&temps).enumerate() {
        if let Err(e) = publish_file(tmp, path, force) {
            discard(&temps[i..]);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                return Err(Error::file(
                    path,
                    "already exists (use --force to overwrite)",
                ));
            }
            return Err(io_err(path, format!("cannot write: {e}")));
        }
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
    clean_stale(dir);
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
    if !force {
        return publish_dir_new(&tmp, dir);
    }
    replace_dir(&tmp, dir)
}

/// Move the finished folder `tmp` to a `dir` that must not exist: exclusive where the OS can
/// (`RENAME_NOREPLACE`), so a racing run gets "already exists" instead of replacing it.
fn publish_dir_new(tmp: &Path, dir: &Path) -> Result<()> {
    let exists = || {
        let _ = fs::remove_dir_all(tmp);
        Error::file(dir, "already exists (use --force to overwrite)")
    };
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, tmp, CWD, dir, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::EXIST => return Err(exists()),
            Err(_) => {}
        }
    }
    if dir.exists() {
        return Err(exists());
    }
    fs::rename(tmp, dir).map_err(|e| {
        let _ = fs::remove_dir_all(tmp);
        io_err(dir, format!("cannot write: {e}"))
    })
}

/// Move the finished folder `tmp` to `dir`, replacing an existing `dir`. On Linux an existing
/// `dir` is swapped with `tmp` in one atomic exchange, so `dir` names a whole folder at every
/// moment; elsewhere (or on a filesystem without exchange) the old folder is first moved aside,
/// so a kill between the two renames leaves it as `.NAME.old-PID`, never mixed with the new one.
pub fn replace_dir(tmp: &Path, dir: &Path) -> Result<()> {
    if !dir.exists() {
        return fs::rename(tmp, dir).map_err(|e| {
            let _ = fs::remove_dir_all(tmp);
            io_err(dir, format!("cannot write: {e}"))
        });
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        if renameat_with(CWD, tmp, CWD, dir, RenameFlags::EXCHANGE).is_ok() {
            // `tmp` now holds the old folder.
            let _ = fs::remove_dir_all(tmp);
            return Ok(());
        }
    }
    let old = sibling(dir, "old");
    let _ = fs::remove_dir_all(&old);
    if let Err(e) = fs::rename(dir, &old) {
        // `dir` is busy (the working directory, a mount point): nothing is replaced and
        // nothing is left behind.
        let _ = fs::remove_dir_all(tmp);
        return Err(io_err(dir, format!("cannot replace: {e}")));
    }
    if let Err(e) = fs::rename(tmp, dir) {
        let _ = fs::rename(&old, dir);
        let _ = fs::remove_dir_all(tmp);
        return Err(io_err(dir, format!("cannot write: {e}")));
    }
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// Remove the file `path` if it exists (an output about to be replaced).
pub fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_err(path, format!("cannot replace: {e}")))
        }
        _ => Ok(()),
    }
}

/// The largest file [`read`] loads (a checkpoint's weights included): 4 GiB.
pub const MAX_READ: u64 = 4 << 30;

/// The largest small text input (`config.json`, `feedlens.json`, `pairs.toml`, probe specs)
/// [`read_small`] loads: 1 MiB (GPT-2's `config.json` is under 1 KB; a bigger one would be
/// parsed into memory many times its size).
pub const MAX_SMALL: u64 = 1 << 20;

/// The largest `tokenizer.json` read: 64 MiB (GPT-2's is 1.4 MB, large vocabularies ~20 MB).
pub const MAX_TOKENIZER: u64 = 64 << 20;

/// Read a whole file, with an error naming it: only a regular file (a FIFO would hang, a device
/// never end) of at most [`MAX_READ`] bytes.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    read_at_most(path, MAX_READ)
}

/// [`read`] for small text inputs, capped at [`MAX_SMALL`].
pub fn read_small(path: &Path) -> Result<Vec<u8>> {
    read_at_most(path, MAX_SMALL)
}

/// The length of `path`, a regular file of at most `cap` bytes, or the error naming it (a
/// directory, missing, not a regular file, too large): the checks of every whole-file read.
fn regular_len(path: &Path, cap: u64) -> Result<u64> {
    if path.is_dir() {
        return Err(Error::file(path, "is a directory, expected a file"));
    }
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::file(path, "no such file"),
        _ => Error::file(path, format!("cannot read: {e}")),
    })?;
    if !meta.is_file() {
        return Err(Error::file(
            path,
            "is not a regular file (a device, FIFO or socket): refused",
        ));
    }
    if meta.len() > cap {
        return Err(Error::file(
            path,
            format!(
                "is {} bytes, more than the {cap} this input may have",
                meta.len()
            ),
        ));
    }
    Ok(meta.len())
}

/// The error of a file that grew past `cap` while it was read.
fn grew(path: &Path, cap: u64) -> Error {
    Error::file(
        path,
        format!("grew past the {cap} bytes this input may have"),
    )
}

/// Read a whole regular file of at most `cap` bytes (see [`read`]).
pub fn read_at_most(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let len = regular_len(path, cap)?;
    let f = fs::File::open(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    // Read at most cap + 1 bytes: a file that grows while read is still refused.
    let mut buf = Vec::with_capacity(len as usize);
    f.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    if buf.len() as u64 > cap {
        return Err(grew(path, cap));
    }
    Ok(buf)
}

/// A file's bytes: read into memory, or mapped read-only (large weight files: no copy, no
/// freshly zeroed pages, and pages handed back once used).
pub enum Bytes {
    /// Read into an owned buffer.
    Owned(Vec<u8>),
    /// Mapped read-only.
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m,
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes::Owned(v)
    }
}

impl Bytes {
    /// Done with `part` (a sub-slice of these bytes) for now: a mapped file's pages there leave
    /// this process's memory (they stay readable, re-read from the file if touched again), so
    /// reading a large file piece by piece never holds all of it resident. No-op when owned.
    pub fn release(&self, part: &[u8]) {
        let Bytes::Mapped(m) = self else { return };
        let start = (part.as_ptr() as usize).wrapping_sub(m.as_ptr() as usize);
        if part.is_empty() || start >= m.len() || start + part.len() > m.len() {
            return;
        }
        // SAFETY: a read-only shared file mapping: MADV_DONTNEED only drops the pages from
        // this process; the next read of them faults them back in from the file unchanged.
        // Nothing here holds a reference that expects the old physical pages.
        let _ = unsafe {
            m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, part.len())
        };
    }
}

/// Map a regular file of at most `cap` bytes read-only, with the checks and errors of
/// [`read_at_most`] (an empty file is read, not mapped). The file must not be truncated while
/// mapped (reading a page past a new end would fault), as with every mmap-based loader.
pub fn map_at_most(path: &Path, cap: u64) -> Result<Bytes> {
    if regular_len(path, cap)? == 0 {
        return read_at_most(path, cap).map(Bytes::Owned);
    }
    let f = fs::File::open(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    // SAFETY: mapped read-only and never written through; feedlens does not modify the file
    // while it is mapped (a truncation by another process is the documented exception above).
    let m = unsafe { memmap2::Mmap::map(&f) }
        .map_err(|e| Error::file(path, format!("cannot map: {e}")))?;
    if m.len() as u64 > cap {
        return Err(grew(path, cap));
    }
    Ok(Bytes::Mapped(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_file_reads_as_read_and_stays_whole_after_release() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.bin");
        let data: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        let m = map_at_most(&p, 1 << 20).unwrap();
        assert!(matches!(m, Bytes::Mapped(_)));
        assert_eq!(&m[..], &data[..]);
        // Released pages (unaligned, spanning pages) read back unchanged.
        m.release(&m[100..2 * 4096 + 5]);
        m.release(&m[..]);
        assert_eq!(&m[..], &data[..]);
        // The same checks as a read: too large, a directory, missing, empty (read, not mapped).
        let e = map_at_most(&p, 10).err().unwrap().to_string();
        assert!(e.contains("more than the 10"), "{e}");
        assert!(map_at_most(d.path(), 1 << 20).is_err());
        assert!(map_at_most(&d.path().join("none"), 1 << 20)
            .err()
            .unwrap()
            .to_string()
            .contains("no such file"));
        let empty = d.path().join("empty");
        fs::write(&empty, b"").unwrap();
        assert!(matches!(map_at_most(&empty, 10).unwrap(), Bytes::Owned(v) if v.is_empty()));
    }

    #[test]
    fn publishing_a_new_file_is_exclusive_under_concurrency() {
        let d = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let p = d.path().join(format!("out{round}.json"));
            let wins: Vec<bool> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4)
                    .map(|k| {
                        let p = p.clone();
                        s.spawn(move || write_file(&p, format!("{k}").as_bytes(), false).is_ok())
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(
                wins.iter().filter(|w| **w).count(),
                1,
                "round {round}: {wins:?}"
            );
        }
        let dirs: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let p = d.path().join("rep");
                    s.spawn(move || write_dir(&p, &[("a", b"1")], false).is_ok())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(dirs.iter().filter(|w| **w).count(), 1, "{dirs:?}");
    }

    #[test]
    fn non_regular_files_are_neither_read_nor_replaced_and_reads_are_capped() {
        let dev = Path::new("/dev/null");
        if dev.exists() {
            let e = read(dev).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
            let e = write_file(dev, b"x", true).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        let d = tempfile::tempdir().unwrap();
        let big = d.path().join("big.toml");
        fs::write(&big, vec![b'#'; 100]).unwrap();
        assert_eq!(read_at_most(&big, 100).unwrap().len(), 100);
        let e = read_at_most(&big, 99).unwrap_err().to_string();
        assert!(e.contains("more than the 99"), "{e}");
    }

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

    #[test]
    fn leftovers_of_dead_runs_are_cleaned_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ck");
        // PIDs above the kernel's pid_max (4194304) belong to no process.
        let dead = ["tmp", "old"].map(|t| d.path().join(format!(".ck.{t}-4194305")));
        fs::create_dir(&dead[0]).unwrap();
        fs::write(dead[0].join("half"), b"x").unwrap();
        fs::write(&dead[1], b"x").unwrap();
        // A live process's (PID 1), another file's, and a look-alike name.
        let keep = [
            ".ck.tmp-1".to_string(),
            ".other.tmp-4194305".to_string(),
            ".ck.tmp-notapid".to_string(),
        ]
        .map(|n| d.path().join(n));
        for k in &keep {
            fs::write(k, b"x").unwrap();
        }
        write_dir(&p, &[("a", b"1")], false).unwrap();
        assert!(
            dead.iter().all(|x| !x.exists()),
            "dead runs' leftovers removed"
        );
        assert!(
            keep.iter().all(|x| x.exists()),
            "live or unrelated files kept"
        );
        assert_eq!(fs::read(p.join("a")).unwrap(), b"1");
    }
}
