//! Issue 14, class 2: on a full disk, `--force` fails with the disk's error and loses nothing —
//! the old output is byte-identical and no temp file is left. The disk is a 1 MiB tmpfs mounted
//! for the test; where the test cannot mount one (not root, no CAP_SYS_ADMIN, not Linux) it is
//! skipped with a message, as documented in the README's Hardening section.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A 1 MiB tmpfs mounted on a fresh temp folder, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(Tmpfs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Fill the disk to the last few KiB.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Names in `dir` that are feedlens temp files (`.NAME.tmp-PID.K`).
fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

fn read(p: &PathBuf) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn force_on_a_full_disk_keeps_the_old_output() {
    let Some(disk) = Tmpfs::mount() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root on Linux)");
        return;
    };
    let d = disk.path();
    // `run --json`: one file.
    let tiny = fixture("gpt2-tiny");
    let json = d.join("run.json");
    let run = |force: bool| {
        let mut args = vec![
            "run".to_string(),
            tiny.display().to_string(),
            "--ids".into(),
            "1,2,3".into(),
            "--json".into(),
            json.display().to_string(),
        ];
        if force {
            args.push("--force".into());
        }
        feedlens(&args)
    };
    assert!(run(false).status.success());
    // A probe spec: a result pair (weights, then the JSON marker), on the same disk.
    let ck = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/seed-0/base");
    let spec = d.join("flag.toml");
    std::fs::write(
        &spec,
        format!(
            "checkpoints = [\"{}\"]\nlabel = \"optout\"\nhook = \"resid_post\"\nposition = 10\nn = 40\nfolds = 2\nnull_directions = 4\n",
            ck.display()
        ),
    )
    .unwrap();
    let s = spec.to_str().unwrap();
    let o = feedlens(&["probe", s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (rj, rw) = (d.join("flag.result.json"), d.join("flag.safetensors"));
    let before = [read(&json), read(&rj), read(&rw)];

    disk.fill();
    let o = run(true);
    assert_clean_error(&o, "No space left on device");
    let o = feedlens(&["probe", s, "--force"]);
    assert_clean_error(&o, "No space left on device");
    assert_eq!(
        [read(&json), read(&rj), read(&rw)],
        before,
        "the old outputs are byte-identical"
    );
    assert!(temps(d).is_empty(), "temp files left: {:?}", temps(d));
}
