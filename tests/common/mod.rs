//! A small harness for integration tests: temp trees with real owners and modes, a fake
//! container root with its own account files, and the built binary run on them.
//!
//! Tests that need root are marked `#[cfg_attr(not_root, ignore = "needs root")]`, so a
//! non-root `cargo test` lists them as ignored; [`root_only`] catches a build made as
//! root and run as someone else.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_fs-preflight");

/// Fails loudly when a root-only test runs without root.
pub fn root_only() {
    let euid = fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(euid, 0, "this test needs root; it was built by root but runs as uid {euid}");
}

/// A temporary tree. Its top is made 0755 so that other uids can reach inside it.
pub struct Tree {
    dir: TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        let dir = tempfile::Builder::new().prefix("fsp-test.").tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Tree { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Absolute path of `rel` inside the tree.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel.trim_start_matches('/'))
    }

    /// Absolute path as a string, for manifests.
    pub fn p(&self, rel: &str) -> String {
        self.path(rel).to_str().unwrap().to_string()
    }

    /// Creates a directory (and parents, 0755) with exactly this owner and mode.
    pub fn dir(&self, rel: &str, uid: u32, gid: u32, mode: u32) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(&path).unwrap();
        set(&path, uid, gid, mode);
        path
    }

    /// Creates a file with this content, owner and mode.
    pub fn file(&self, rel: &str, uid: u32, gid: u32, mode: u32) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"data\n").unwrap();
        set(&path, uid, gid, mode);
        path
    }

    /// Writes a file inside the tree (a manifest, /etc/passwd of a fake root).
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    /// Makes the tree a container root: `etc/passwd` and `etc/group`, root:root 0755.
    pub fn accounts(&self, passwd: &str, group: &str) {
        self.write("etc/passwd", passwd);
        self.write("etc/group", group);
    }
}

pub fn set(path: &Path, uid: u32, gid: u32, mode: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The built binary, with a clean environment for colour.
pub fn cmd() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("NO_COLOR").env_remove("FS_PREFLIGHT_MANIFEST");
    c
}

/// Runs the binary with these arguments.
pub fn run(args: &[&str]) -> Output {
    cmd().args(args).output().unwrap()
}

/// The built binary where any uid can run it. Cargo's target directory may sit below a
/// directory only root can search (a checkout in /root): then the binary is linked (or
/// copied) into a temp dir that lives as long as the returned value.
pub struct AnyUserBin {
    _dir: Option<TempDir>,
    pub path: PathBuf,
}

pub fn any_user_bin() -> AnyUserBin {
    let others_can_run = |p: &Path| fs::metadata(p).is_ok_and(|m| m.mode() & 0o001 != 0);
    let bin = Path::new(BIN);
    if bin.ancestors().all(others_can_run) {
        return AnyUserBin { _dir: None, path: bin.to_path_buf() };
    }
    let dir = tempfile::Builder::new().prefix("fsp-bin.").tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("fs-preflight");
    if fs::hard_link(bin, &path).is_err() {
        fs::copy(bin, &path).unwrap();
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    AnyUserBin { _dir: Some(dir), path }
}

/// Runs the binary as another uid/gid with no supplementary groups (needs root), with a
/// time limit.
pub fn run_as(uid: u32, gid: u32, args: &[&str]) -> Output {
    let bin = any_user_bin();
    let mut c = Command::new("setpriv");
    c.args([&format!("--reuid={uid}"), &format!("--regid={gid}"), "--clear-groups"]);
    c.arg(&bin.path);
    c.args(args).env_remove("NO_COLOR").env_remove("FS_PREFLIGHT_MANIFEST");
    c.timeout(std::time::Duration::from_secs(60)).output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code, with both streams in the message when it is not the one expected.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Parses the JSON report on stdout.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\n{}", stdout(o), stderr(o)))
}

/// The check named `name` of the entry at `path` in a JSON report.
#[track_caller]
pub fn check<'a>(report: &'a serde_json::Value, path: &str, name: &str) -> &'a serde_json::Value {
    let entry = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("no entry {path} in {report:#}"));
    entry["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} for {path} in {entry:#}"))
}

/// (uid, gid, mode bits, ctime in ns) of a path, not following a symlink.
pub fn stat(path: &Path) -> (u32, u32, u32, i128) {
    let m = fs::symlink_metadata(path).unwrap();
    (
        m.uid(),
        m.gid(),
        m.mode() & 0o7777,
        m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
    )
}

/// stat() of every path below `top` (itself included), independently of the tool.
pub fn snapshot(top: &Path) -> Vec<(PathBuf, (u32, u32, u32, i128))> {
    walkdir::WalkDir::new(top)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            (e.path().to_path_buf(), stat(e.path()))
        })
        .collect()
}

/// A mount in one of our temp dirs, always unmounted on drop (also when a test panics).
/// Declare it after the `Tree`s it lives in, so that it is dropped before them.
pub struct Mounted(pub PathBuf);

impl Mounted {
    pub fn new(args: &[&str], at: &Path) -> Mounted {
        let out = std::process::Command::new("mount").args(args).arg(at).output().unwrap();
        assert!(out.status.success(), "mount {args:?} {}: {}", at.display(), stderr(&out));
        Mounted(at.to_path_buf())
    }

    pub fn remount_read_only(&self) {
        let out = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount ro {}: {}", self.0.display(), stderr(&out));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok =
            std::process::Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}
