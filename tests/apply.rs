//! `fs-preflight apply` on real temp trees, as root: what it creates and changes, what it
//! leaves alone, and what it refuses, including each of its safety rules.
//!
//! Changes are proven by re-reading owner and mode; no-ops by an unchanged ctime (chown and
//! chmod update ctime even when they set the value a file already has). Both are read with
//! the harness's `stat`/`snapshot`, independently of the tool. Victims of planted symlinks,
//! hard links and bind mounts live in a second temp dir, outside the tree being applied.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Helpers

/// Writes `m.toml` in the tree: `user`, then one `[[dir]]` table per body.
fn manifest(t: &Tree, user: &str, dirs: &[String]) -> String {
    let mut text = format!("user = \"{user}\"\n");
    for body in dirs {
        text.push_str("\n[[dir]]\n");
        text.push_str(body.trim());
        text.push('\n');
    }
    t.write("m.toml", &text).to_str().unwrap().to_string()
}

/// One `[[dir]]` body: `path = "..."` and more `key = value` lines.
fn dir(path: &str, keys: &str) -> String {
    format!("path = \"{path}\"\n{keys}")
}

/// `fs-preflight apply --format json --manifest M [extra...]`, with the parsed report.
fn apply(m: &str, extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["apply", "--format", "json", "--manifest", m];
    args.extend_from_slice(extra);
    let out = run(&args);
    let r = json(&out);
    (out, r)
}

/// The report of the entry at `path`.
#[track_caller]
fn entry<'a>(r: &'a Value, path: &str) -> &'a Value {
    r["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("no entry {path} in {r:#}"))
}

/// The changes `apply` lists for one entry (an apply report always has the list).
#[track_caller]
fn changes<'a>(r: &'a Value, path: &str) -> &'a Vec<Value> {
    entry(r, path)["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("entry {path} has no changes list: {r:#}"))
}

/// Every change of every entry.
fn all_changes(r: &Value) -> Vec<&Value> {
    r["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .flat_map(|e| e["changes"].as_array().expect("changes list").iter())
        .collect()
}

#[track_caller]
fn changed(r: &Value) -> u64 {
    r["summary"]["changed"].as_u64().unwrap_or_else(|| panic!("no summary.changed: {r:#}"))
}

/// The changes touching `path`.
fn changes_of<'a>(r: &'a Value, path: &str) -> Vec<&'a Value> {
    all_changes(r).into_iter().filter(|c| c["path"] == path).collect()
}

fn message(c: &Value) -> String {
    c["message"].as_str().unwrap_or_default().to_string()
}

fn notes(r: &Value, path: &str) -> Vec<String> {
    entry(r, path)["notes"]
        .as_array()
        .map(|n| n.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// (uid, gid, mode) without the ctime.
fn ids_mode(path: &Path) -> (u32, u32, u32) {
    let (u, g, m, _) = stat(path);
    (u, g, m)
}

/// What `snapshot` returns: (path, (uid, gid, mode, ctime)) for every path below a top.
type Snapshot = Vec<(PathBuf, (u32, u32, u32, i128))>;

/// Snapshots, then waits long enough that any later change gets a later ctime even on a
/// filesystem whose timestamps come from the coarse (jiffy) clock.
fn snapshot_settled(top: &Path) -> Snapshot {
    let s = snapshot(top);
    std::thread::sleep(Duration::from_millis(30));
    s
}

#[track_caller]
fn assert_unchanged(before: &Snapshot, top: &Path) {
    let after = snapshot(top);
    assert_eq!(before.len(), after.len(), "entries appeared or vanished below {}", top.display());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "changed: {} (uid, gid, mode, ctime)", b.0.display());
    }
}

/// Runs the binary under `sh` with this umask.
fn run_with_umask(umask: &str, args: &[&str]) -> Output {
    StdCommand::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("FS_PREFLIGHT_MANIFEST")
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// The seed story

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn seed_story_apply_creates_the_directory_and_check_then_passes_as_the_user() {
    root_only();
    let t = Tree::new();
    t.dir("app", 0, 0, 0o755);
    let target = t.p("app/generated_media");
    let m = manifest(
        &t,
        "10001:10001",
        &[dir(&target, "owner = 10001\ngroup = 10001\nmode = \"0770\"")],
    );
    let parent_before = ids_mode(&t.path("app"));

    let (out, r) = apply(&m, &[]);
    assert_exit(&out, 0);
    assert_eq!(ids_mode(&t.path("app/generated_media")), (10001, 10001, 0o770));
    assert_eq!(ids_mode(&t.path("app")), parent_before, "the parent must be left as it was");

    let ch = changes(&r, &target);
    assert_eq!(ch.len(), 1, "{r:#}");
    assert_eq!(ch[0]["action"], "create");
    assert_eq!(ch[0]["path"], target.as_str());
    assert_eq!(ch[0]["after"], "10001:10001 0770", "created paths carry owner and mode");
    assert_eq!(changed(&r), 1);
    assert_eq!(entry(&r, &target)["status"], "pass");

    // The runtime user itself now finds it right, and can really write (probed).
    let out = run_as(10001, 10001, &["check", "--format", "json", "--manifest", &m]);
    assert_exit(&out, 0);
    let c = json(&out);
    assert_eq!(c["writability"], "probed");
    assert_eq!(check(&c, &target, "writable")["status"], "pass");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn missing_parents_are_created_root_owned_0755_and_each_is_reported() {
    root_only();
    let t = Tree::new();
    let target = t.p("srv/app/cache");
    let m = manifest(&t, "10001:10001", &[dir(&target, "owner = 10001\nmode = \"0700\"")]);

    let (out, r) = apply(&m, &[]);
    assert_exit(&out, 0);
    assert_eq!(ids_mode(&t.path("srv")), (0, 0, 0o755));
    assert_eq!(ids_mode(&t.path("srv/app")), (0, 0, 0o755));
    let (uid, _, mode) = ids_mode(&t.path("srv/app/cache"));
    assert_eq!((uid, mode), (10001, 0o700));

    let created: Vec<(&str, &str)> = changes(&r, &target)
        .iter()
        .filter(|c| c["action"] == "create")
        .map(|c| (c["path"].as_str().unwrap(), c["after"].as_str().unwrap()))
        .collect();
    let srv = t.p("srv");
    let app = t.p("srv/app");
    assert!(created.contains(&(srv.as_str(), "0:0 0755")), "{r:#}");
    assert!(created.contains(&(app.as_str(), "0:0 0755")), "{r:#}");
    assert!(created.iter().any(|(p, _)| *p == target), "{r:#}");
    assert_eq!(created.len(), 3, "{r:#}");
}

// ---------------------------------------------------------------------------------------
// Idempotence

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn second_apply_changes_nothing() {
    root_only();
    let t = Tree::new();
    t.dir("app", 0, 0, 0o755);
    t.dir("data", 0, 0, 0o700);
    t.dir("data/sub", 0, 0, 0o777);
    t.file("data/a", 0, 0, 0o600);
    t.file("data/sub/b", 10001, 10001, 0o666);
    let media = t.p("app/generated_media");
    let uploads = t.p("shared/uploads");
    let cache = t.p("cache");
    let data = t.p("data");
    let m = manifest(
        &t,
        "10001:10001",
        &[
            dir(&media, "owner = 10001\ngroup = 10001\nmode = \"0770\""),
            dir(&uploads, "group = 10001\nmode = \"2775\""),
            dir(&cache, ""),
            dir(
                &data,
                "owner = 10001\ngroup = 10001\nmode = \"0750\"\nrecursive = true\n\
                 dir_mode = \"0750\"\nfile_mode = \"0640\"",
            ),
        ],
    );

    let (out, r) = apply(&m, &[]);
    assert_exit(&out, 0);
    assert!(changed(&r) > 0, "the first apply has work to do: {r:#}");

    let before = snapshot_settled(t.root());
    let (out, r) = apply(&m, &[]);
    assert_exit(&out, 0);
    assert_eq!(changed(&r), 0, "{r:#}");
    for path in [&media, &uploads, &cache, &data] {
        assert!(changes(&r, path).is_empty(), "{path}: {r:#}");
    }
    assert_unchanged(&before, t.root());
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn second_apply_on_1000_correct_files_changes_nothing_and_calls_no_chown_or_chmod() {
    root_only();
    let t = Tree::new();
    t.dir("data", 10001, 10001, 0o750);
    for d in 0..10 {
        t.dir(&format!("data/d{d}"), 10001, 10001, 0o750);
        for f in 0..100 {
            t.file(&format!("data/d{d}/f{f}"), 10001, 10001, 0o640);
        }
    }
    let data = t.p("data");
    let m = manifest(
        &t,
        "10001:10001",
        &[dir(
            &data,
            "owner = 10001\ngroup = 10001\nmode = \"0750\"\nrecursive = true\n\
             dir_mode = \"0750\"\nfile_mode = \"0640\"",
        )],
    );

    let before = snapshot_settled(&t.path("data"));
    assert_eq!(before.len(), 1 + 10 + 1000);
    let (out, r) = apply(&m, &[]);
    assert_exit(&out, 0);
    assert_eq!(changed(&r), 0, "{r:#}");
    assert!(changes(&r, &data).is_empty());
    assert_eq!(check(&r, &data, "contents")["status"], "pass");
    assert_unchanged(&before, &t.path("data"));

    // "No chown/chmod call is made": seen from outside with strace, where it is installed.
    // fchmodat2 is syscall 452, which strace 6.1 prints by number.
    if StdCommand::new("strace").arg("-V").output().is_ok_and(|o| o.status.success()) {
        let trace = t.path("strace.out");
        let out = StdCommand::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&trace)
            .args([BIN, "apply", "--quiet", "--manifest", &m])
            .env_remove("NO_COLOR")
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let text = fs::read_to_string(&trace).unwrap();
        let calls: Vec<&str> = text
            .lines()
            .filter(|l| {
                let call = l.split_once(' ').map_or(*l, |(_, rest)| rest.trim_start());
                ["chown", "fchown", "lchown", "fchownat", "chmod", "fchmod", "fchmodat"]
                    .iter()
                    .any(|name| call.starts_with(&format!("{name}(")))
                    || call.starts_with("syscall_0x1c4(")
                    || call.starts_with("fchmodat2(")
            })
            .collect();
        assert!(calls.is_empty(), "chown/chmod calls on a compliant tree: {calls:#?}");
    } else {
        eprintln!("strace not installed: syscall part of the test skipped (ctime proved it)");
    }
}

// ---------------------------------------------------------------------------------------
// COPY --chown leftovers

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn copy_chown_leftovers_only_the_wrong_entries_are_reowned() {
    root_only();
    let t = Tree::new();
    t.dir("a", 0, 0, 0o755);
    t.dir("a/b", 0, 0, 0o755);
    t.file("a/b/c", 1000, 1000, 0o644);
    let a = t.p("a");
    let m = manifest(&t, "1000:1000", &[dir(&a, "owner = 1000\ngroup = 1000\nrecursive = true")]);
    let c_before = stat(&t.path("a/b/c"));
    std::thread::sleep(Duration::from_millis(30));

    let (out, r) = apply(&m, &[]);
    assert_exit(&out, 0);
    assert_eq!(ids_mode(&t.path("a")), (1000, 1000, 0o755));
    assert_eq!(ids_mode(&t.path("a/b")), (1000, 1000, 0o755));
    assert_eq!(stat(&t.path("a/b/c")), c_before, "c was already right: not touched");

    for p in [t.p("a"), t.p("a/b")] {
        let ch = changes_of(&r, &p);
        assert_eq!(ch.len(), 1, "{p}: {r:#}");
        assert_eq!(ch[0]["action"], "chown");
        assert_eq!(ch[0]["before"], "0:0");
        assert_eq!(ch[0]["after"], "1000:1000");
    }
    assert!(changes_of(&r, &t.p("a/b/c")).is_empty(), "{r:#}");
    assert_eq!(changed(&r), 2, "{r:#}");
}

// ---------------------------------------------------------------------------------------
// umask

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn created_modes_are_exact_whatever_the_umask() {
    root_only();
    for umask in ["077", "022"] {
        let t = Tree::new();
        // The wrapper really sets the umask: a plain mkdir under it ends masked.
        let probe = t.path("probe");
        let out = StdCommand::new("sh")
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
            .arg("mkdir")
            .arg(&probe)
            .output()
            .unwrap();
        assert!(out.status.success());
        let masked = 0o777 & !u32::from_str_radix(umask, 8).unwrap();
        assert_eq!(ids_mode(&probe).2, masked, "umask wrapper");

        let open = t.p("new/open");
        let shared = t.p("new/shared");
        let m = manifest(
            &t,
            "10001:10001",
            &[
                dir(&open, "owner = 10001\ngroup = 10001\nmode = \"0777\""),
                dir(&shared, "owner = 0\ngroup = 10001\nmode = \"2775\""),
            ],
        );
        let out = run_with_umask(umask, &["apply", "--format", "json", "--manifest", &m]);
        assert_exit(&out, 0);
        assert_eq!(ids_mode(&t.path("new/open")), (10001, 10001, 0o777), "umask {umask}");
        assert_eq!(ids_mode(&t.path("new/shared")), (0, 10001, 0o2775), "umask {umask}");
        assert_eq!(ids_mode(&t.path("new")), (0, 0, 0o755), "created parent, umask {umask}");
        let r = json(&out);
        let shared_create: Vec<&Value> =
            changes_of(&r, &shared).into_iter().filter(|c| c["action"] == "create").collect();
        assert_eq!(shared_create.len(), 1, "{r:#}");
        assert_eq!(shared_create[0]["after"], "0:10001 2775");
    }
}

// ---------------------------------------------------------------------------------------
// Planted symlinks

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn planted_symlinks_in_a_recursive_tree_never_redirect_a_change() {
    root_only();
    let t = Tree::new();
    let v = Tree::new();
    let victim_file = v.file("shadow", 0, 0, 0o600);
    let victim_dir = v.dir("etc", 0, 0, 0o700);
    v.file("etc/passwd", 0, 0, 0o600);

    t.dir("data", 0, 0, 0o755);
    t.file("data/real", 0, 0, 0o600);
    symlink(&victim_file, t.path("data/shadow")).unwrap();
    symlink(&victim_dir, t.path("data/etc")).unwrap();
    let data = t.p("data");
    let m = manifest(
        &t,
        "10001:10001",
        &[dir(
            &data,
            "owner = 10001\ngroup = 10001\nrecursive = true\ndir_mode = \"0750\"\n\
             file_mode = \"0640\"",
        )],
    );
    let victims = snapshot_settled(v.root());

    let (_out, r) = apply(&m, &[]);
    // The real work was done...
    assert_eq!(ids_mode(&t.path("data")), (10001, 10001, 0o755));
    assert_eq!(ids_mode(&t.path("data/real")), (10001, 10001, 0o640));
    // ...and nothing outside the tree was touched through the links.
    assert_unchanged(&victims, v.root());
    assert_eq!(fs::read_link(t.path("data/shadow")).unwrap(), victim_file);
    assert_eq!(fs::read_link(t.path("data/etc")).unwrap(), victim_dir);
    for link in [t.p("data/shadow"), t.p("data/etc")] {
        for c in changes_of(&r, &link) {
            assert_eq!(c["action"], "chown", "a symlink is at most lchown'ed: {c:#}");
        }
    }
    for c in all_changes(&r) {
        let p = c["path"].as_str().unwrap();
        assert!(!p.starts_with(v.root().to_str().unwrap()), "change outside the tree: {c:#}");
    }
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn symlink_swapped_in_during_a_recursive_apply_never_redirects_a_change() {
    root_only();
    let t = Tree::new();
    let v = Tree::new();
    let victim_dir = v.dir("etc", 0, 0, 0o700);
    v.file("etc/shadow", 0, 0, 0o600);
    t.dir("data", 0, 0, 0o755);
    t.dir("data/sub", 0, 0, 0o700);
    for i in 0..50 {
        t.file(&format!("data/sub/f{i}"), 0, 0, 0o600);
    }
    symlink(&victim_dir, t.path("data/swap")).unwrap();
    let victims = snapshot_settled(v.root());

    // Swap `sub` (a directory) and `swap` (a symlink to the victim) as fast as possible.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let a = std::ffi::CString::new(t.p("data/sub")).unwrap();
        let b = std::ffi::CString::new(t.p("data/swap")).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: two NUL-terminated paths in our own temp dir.
                let rc = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
            }
        })
    };
    let data = t.p("data");
    for round in 0..25u32 {
        // A new owner each round, so that every round has work to do everywhere.
        let id = 20000 + round;
        let m = manifest(
            &t,
            "0:0",
            &[dir(
                &data,
                &format!(
                    "owner = {id}\ngroup = {id}\nrecursive = true\ndir_mode = \"0750\"\n\
                     file_mode = \"0640\""
                ),
            )],
        );
        let out = run(&["apply", "--quiet", "--manifest", &m]);
        assert!(matches!(out.status.code(), Some(0 | 1)), "round {round}: {}", stderr(&out));
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert_unchanged(&victims, v.root());
}

// ---------------------------------------------------------------------------------------
// Hard links

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn hard_link_to_a_file_outside_the_tree_is_not_reowned_and_is_reported() {
    root_only();
    let t = Tree::new();
    let v = Tree::new();
    let secret = v.file("secret", 0, 0, 0o600);
    t.dir("data", 10001, 10001, 0o755);
    t.file("data/plain", 0, 0, 0o644);
    let link = t.path("data/link");
    fs::hard_link(&secret, &link).unwrap();
    let data = t.p("data");
    let m = manifest(
        &t,
        "10001:10001",
        &[dir(&data, "owner = 10001\ngroup = 10001\nrecursive = true")],
    );
    let victims = snapshot_settled(v.root());

    let (out, r) = apply(&m, &[]);
    assert_exit(&out, 1);
    assert_unchanged(&victims, v.root());
    assert_eq!(ids_mode(&t.path("data/plain")), (10001, 10001, 0o644), "the rest is done");
    assert!(changes_of(&r, &t.p("data/link")).is_empty(), "{r:#}");
    let verdict = check(&r, &data, "apply");
    assert_eq!(verdict["status"], "fail");
    assert!(message(verdict).contains(&t.p("data/link")), "the link is named: {verdict:#}");
    assert_eq!(entry(&r, &data)["status"], "fail");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn hard_links_are_reowned_when_the_entry_allows_it() {
    root_only();
    let t = Tree::new();
    t.dir("data", 10001, 10001, 0o755);
    t.file("data/one", 0, 0, 0o644);
    fs::hard_link(t.path("data/one"), t.path("data/two")).unwrap();
    let data = t.p("data");
    let m = manifest(
        &t,
        "10001:10001",
        &[dir(&data, "owner = 10001\ngroup = 10001\nrecursive = true\nallow_hardlinks = true")],
    );
    let (out, _r) = apply(&m, &[]);
    assert_exit(&out, 0);
    assert_eq!(ids_mode(&t.path("data/one")), (10001, 10001, 0o644));
}

// ---------------------------------------------------------------------------------------
// The entry itself is a symlink

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn entry_that_is_a_symlink_is_refused_and_its_target_untouched() {
    root_only();
    let t = Tree::new();
    t.dir("real", 0, 0, 0o755);
    t.file("real/f", 0, 0, 0o644);
    symlink(t.path("real"), t.path("link")).unwrap();
    let link = t.p("link");
    let m = manifest(
        &t,
        "10001:10001",
        &[dir(
            &link,
            "owner = 10001\ngroup = 10001\nmode = \"0700\"\nrecursive = true\n\
             file_mode = \"0600\"",
        )],
    );
    let before = snapshot_settled(t.root());

    let (out, r) = apply(&m, &[]);
    assert_exit(&out, 1);
    assert_unchanged(&before, t.root());
    assert!(changes(&r, &link).is_empty(), "{r:#}");
    assert_eq!(check(&r, &link, "type")["status"], "fail");
    assert_eq!(check(&r, &link, "type")["actual"], "symlink");
    let verdict = check(&r, &link, "apply");
    assert_eq!(verdict["status"], "fail");
    assert!(message(verdict).contains("symlink"), "{verdict:#}");
}

// ---------------------------------------------------------------------------------------
// Safety: symlinked ancestors of a manifest path

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn user_planted_symlinked_ancestor_is_refused() {
    root_only();
    for (link_owner, holder_owner) in [(10001, 10001), (0, 10001)] {
        let t = Tree::new();
        let v = Tree::new();
        let victim = v.dir("etc", 0, 0, 0o755);
        t.dir("data", holder_owner, holder_owner, 0o755);
        let link = t.path("data/logs");
        symlink(&victim, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(link_owner), Some(link_owner)).unwrap();
        let target = t.p("data/logs/app");
        let m = manifest(&t, "10001:10001", &[dir(&target, "owner = 10001\nmode = \"0777\"")]);
        let victims = snapshot_settled(v.root());

        let (out, r) = apply(&m, &[]);
        assert_exit(&out, 1);
        assert!(!victim.join("app").exists(), "created through a user's symlink");
        assert_unchanged(&victims, v.root());
        assert!(changes(&r, &target).is_empty(), "{r:#}");
        let verdict = check(&r, &target, "apply");
        assert!(message(verdict).contains("not trusted"), "{verdict:#}");
    }
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn root_owned_symlinked_ancestor_is_followed_inside_the_root() {
    root_only();
    let t = Tree::new();
    t.accounts(
        "root:x:0:0:root:/root:/bin/sh\napp:x:10001:10001::/home/app:/bin/sh\n",
        "root:x:0:\napp:x:10001:\n",
    );
    t.dir("var", 0, 0, 0o755);
    t.dir("run", 0, 0, 0o755);
    symlink("/run", t.path("var/run")).unwrap();
    let m = manifest(
        &t,
        "app",
        &[dir("/var/run/app", "owner = \"app\"\ngroup = \"app\"\nmode = \"0750\"")],
    );
    let root = t.p("");
    let (out, r) = apply(&m, &["--root", &root]);
    assert_exit(&out, 0);
    assert_eq!(ids_mode(&t.path("run/app")), (10001, 10001, 0o750));
    assert_eq!(entry(&r, "/var/run/app")["resolved"], "/run/app");
}

// ---------------------------------------------------------------------------------------
// Other mounts inside a recursive tree

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn tmpfs_mounted_inside_a_recursive_tree_is_not_entered_and_is_reported() {
    root_only();
    let t = Tree::new();
    t.dir("data", 0, 0, 0o755);
    t.file("data/f", 0, 0, 0o644);
    t.dir("data/mnt", 0, 0, 0o755);
    let mnt = Mounted::new(&["-t", "tmpfs", "-o", "mode=0755", "tmpfs"], &t.path("data/mnt"));
    t.file("data/mnt/inner", 0, 0, 0o644);
    let data = t.p("data");
    let m = manifest(
        &t,
        "10001:10001",
        &[dir(&data, "owner = 10001\ngroup = 10001\nrecursive = true\nfile_mode = \"0640\"")],
    );
    let mounted = snapshot_settled(&mnt.0);

    let (_out, r) = apply(&m, &[]);
    assert_eq!(ids_mode(&t.path("data/f")), (10001, 10001, 0o640), "the tree itself is done");
    assert_unchanged(&mounted, &mnt.0);
    let mnt_path = t.p("data/mnt");
    for c in all_changes(&r) {
        assert!(!c["path"].as_str().unwrap().starts_with(&mnt_path), "entered the mount: {c:#}");
    }
    assert!(
        notes(&r, &data).iter().any(|n| n.contains(&mnt_path)),
        "the mount is reported: {:#}",
        entry(&r, &data)
    );
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn bind_mount_inside_a_recursive_tree_is_not_entered_and_is_reported() {
    root_only();
    let t = Tree::new();
    let v = Tree::new();
    v.dir("d", 0, 0, 0o700);
    v.file("d/secret", 0, 0, 0o600);
    t.dir("data", 0, 0, 0o755);
    t.dir("data/bind", 0, 0, 0o755);
    let _bind = Mounted::new(&["--bind", v.path("d").to_str().unwrap()], &t.path("data/bind"));
    let data = t.p("data");
    let m = manifest(
        &t,
        "10001:10001",
        &[dir(
            &data,
            "owner = 10001\ngroup = 10001\nrecursive = true\ndir_mode = \"0750\"\n\
             file_mode = \"0640\"",
        )],
    );
    let victims = snapshot_settled(v.root());

    let (_out, r) = apply(&m, &[]);
    assert_eq!(ids_mode(&t.path("data")), (10001, 10001, 0o755));
    assert_unchanged(&victims, v.root());
    let bind_path = t.p("data/bind");
    assert!(
        notes(&r, &data).iter().any(|n| n.contains(&bind_path)),
        "the bind mount is reported: {:#}",
        entry(&r, &data)
    );
}

// ---------------------------------------------------------------------------------------
// Kernel trees

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn recursive_root_proc_sys_dev_are_refused_before_anything_changes() {
    root_only();
    for bad in ["/", "/proc", "/sys", "/dev", "/proc/self"] {
        let t = Tree::new();
        t.dir("existing", 0, 0, 0o755);
        let valid = [
            dir(&t.p("new"), "owner = 10001\ngroup = 10001\nmode = \"0755\""),
            dir(&t.p("existing"), "owner = 10001\ngroup = 10001\nmode = \"0700\""),
        ];
        let bad_entry = dir(bad, "owner = 10001\ngroup = 10001\nrecursive = true");
        // The kernel tree both after and before the valid entries.
        for order in [0, 1] {
            let entries = if order == 0 {
                vec![valid[0].clone(), valid[1].clone(), bad_entry.clone()]
            } else {
                vec![bad_entry.clone(), valid[0].clone(), valid[1].clone()]
            };
            let m = manifest(&t, "10001:10001", &entries);
            let before = snapshot_settled(t.root());
            let out = run(&["apply", "--manifest", &m]);
            assert_exit(&out, 2);
            assert!(!t.path("new").exists(), "{bad}: the valid entry was created");
            assert_unchanged(&before, t.root());
            assert!(
                stderr(&out).contains(&m),
                "{bad}: the error names the manifest: {}",
                stderr(&out)
            );
        }
    }
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn recursive_entry_on_a_pseudo_filesystem_elsewhere_is_refused_by_type() {
    root_only();
    let t = Tree::new();
    t.dir("kfs", 0, 0, 0o755);
    // bpffs: a kernel filesystem, and each mount is a fresh, empty instance of our own.
    let kfs = Mounted::new(&["-t", "bpf", "bpf"], &t.path("kfs"));
    let m = manifest(
        &t,
        "10001:10001",
        &[
            dir(&t.p("new"), "owner = 10001\ngroup = 10001"),
            dir(&t.p("kfs"), "owner = 10001\ngroup = 10001\nrecursive = true"),
        ],
    );
    let before = snapshot_settled(&kfs.0);
    let out = run(&["apply", "--manifest", &m]);
    assert_exit(&out, 2);
    assert!(!t.path("new").exists(), "the valid entry was created");
    assert_unchanged(&before, &kfs.0);
}

// ---------------------------------------------------------------------------------------
// User namespace

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn unmapped_owner_in_a_user_namespace_is_named_and_nothing_changes() {
    root_only();
    let t = Tree::new();
    t.dir("data", 0, 0, 0o755);
    t.file("data/f", 0, 0, 0o644);
    t.dir("plain", 0, 0, 0o755);
    let data = t.p("data");
    let plain = t.p("plain");
    let fresh = t.p("fresh");
    let m = manifest(
        &t,
        "999:999",
        &[
            dir(
                &data,
                "owner = 999\ngroup = 999\nmode = \"0750\"\nrecursive = true\nfile_mode = \"0640\"",
            ),
            dir(&plain, "owner = 999\nmode = \"0770\""),
            dir(&fresh, "owner = 999\ngroup = 999"),
        ],
    );
    let before = snapshot_settled(t.root());

    let out = StdCommand::new("unshare")
        .args(["--user", "--map-root-user", BIN, "apply", "--format", "json", "--manifest", &m])
        .env_remove("NO_COLOR")
        .env_remove("FS_PREFLIGHT_MANIFEST")
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert_unchanged(&before, t.root());
    assert!(!t.path("fresh").exists());
    let r = json(&out);
    assert_eq!(changed(&r), 0, "{r:#}");
    for path in [&data, &plain, &fresh] {
        let verdict = check(&r, path, "apply");
        assert_eq!(verdict["status"], "fail");
        assert!(
            message(verdict).contains("uid 999 is not mapped in this user namespace"),
            "{path}: {verdict:#}"
        );
        assert!(!message(verdict).contains("Invalid argument"), "{verdict:#}");
    }
}

// ---------------------------------------------------------------------------------------
// Read-only mount

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn read_only_mount_gives_one_verdict_per_entry_and_no_per_file_errors() {
    root_only();
    let t = Tree::new();
    t.dir("ro", 0, 0, 0o755);
    let ro = Mounted::new(&["-t", "tmpfs", "-o", "mode=0755", "tmpfs"], &t.path("ro"));
    // a: wrong at the top; b: right at the top, wrong below (found only by the walk).
    t.dir("ro/a", 0, 0, 0o755);
    t.dir("ro/b", 10001, 10001, 0o755);
    for i in 0..20 {
        t.file(&format!("ro/a/f{i}"), 0, 0, 0o644);
        t.file(&format!("ro/b/f{i}"), 0, 0, 0o644);
    }
    ro.remount_read_only();
    let top = t.p("ro");
    let a = t.p("ro/a");
    let b = t.p("ro/b");
    let new = t.p("ro/new");
    let recursive = "owner = 10001\ngroup = 10001\nrecursive = true";
    let m = manifest(
        &t,
        "10001:10001",
        &[
            dir(&top, "owner = 10001\ngroup = 10001"),
            dir(&a, recursive),
            dir(&b, recursive),
            dir(&new, "owner = 10001\ngroup = 10001"),
        ],
    );
    let before = snapshot_settled(&ro.0);

    let (out, r) = apply(&m, &[]);
    assert_exit(&out, 1);
    assert_unchanged(&before, &ro.0);
    for path in [&top, &a, &b, &new] {
        let verdict = check(&r, path, "apply");
        assert_eq!(verdict["status"], "fail", "{path}");
        let text = message(verdict);
        assert_eq!(text.matches("read-only").count(), 1, "one verdict for {path}: {text}");
        for file in ["ro/a/f", "ro/b/f"] {
            assert!(!text.contains(file), "no per-file errors for {path}: {text}");
        }
    }
    // Safety rule: a mount point is said to be one.
    assert!(notes(&r, &top).iter().any(|n| n.contains("mount point")), "{:#}", entry(&r, &top));
    // Nothing was changed, so nothing is reported or logged as changed, file by file.
    let listed: Vec<&Value> = all_changes(&r);
    assert!(listed.is_empty(), "changes listed on a read-only mount: {listed:#?}");
    assert_eq!(changed(&r), 0);
    let log = stderr(&out);
    for file in ["ro/a/f", "ro/b/f"] {
        assert!(!log.contains(file), "no per-file lines on stderr: {log}");
    }
}

// ---------------------------------------------------------------------------------------
// setuid / setgid across a change of owner

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn reowned_files_keep_no_setuid_or_setgid_bit() {
    root_only();
    let t = Tree::new();
    t.dir("data", 10001, 10001, 0o755);
    t.file("data/suid", 0, 0, 0o4755);
    t.file("data/sgid", 0, 0, 0o2755);
    t.file("data/sgid_noexec", 0, 0, 0o2644);
    t.file("data/both", 0, 0, 0o6755);
    t.file("data/group_only", 10001, 0, 0o4755);
    t.file("data/own_suid", 10001, 10001, 0o4755);
    let data = t.p("data");
    let m = manifest(
        &t,
        "10001:10001",
        &[dir(&data, "owner = 10001\ngroup = 10001\nrecursive = true")],
    );
    let own = stat(&t.path("data/own_suid"));
    std::thread::sleep(Duration::from_millis(30));

    let (out, _r) = apply(&m, &[]);
    assert_exit(&out, 0);
    for (name, rest) in [
        ("suid", 0o755),
        ("sgid", 0o755),
        ("sgid_noexec", 0o644),
        ("both", 0o755),
        ("group_only", 0o755),
    ] {
        let (uid, gid, mode) = ids_mode(&t.path(&format!("data/{name}")));
        assert_eq!((uid, gid), (10001, 10001), "{name}");
        assert_eq!(mode, rest, "{name}: mode {mode:04o} after re-owning");
    }
    assert_eq!(stat(&t.path("data/own_suid")), own, "not re-owned: left alone, bit kept");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn setgid_asked_by_the_manifest_survives_the_change_of_owner() {
    root_only();
    let t = Tree::new();
    t.dir("shared", 0, 0, 0o755);
    t.file("shared/tool", 0, 0, 0o755);
    let shared = t.p("shared");
    let m = manifest(
        &t,
        "10001:10001",
        &[dir(
            &shared,
            "owner = 10001\ngroup = 10001\nmode = \"2775\"\nrecursive = true\n\
             file_mode = \"2755\"",
        )],
    );
    let (out, _r) = apply(&m, &[]);
    assert_exit(&out, 0);
    assert_eq!(ids_mode(&t.path("shared")), (10001, 10001, 0o2775));
    // chown clears setgid on a group-executable file: chmod must come after it.
    assert_eq!(ids_mode(&t.path("shared/tool")), (10001, 10001, 0o2755));
}

// ---------------------------------------------------------------------------------------
// --dry-run

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn dry_run_lists_exactly_the_one_wrong_entry_and_changes_nothing() {
    root_only();
    let t = Tree::new();
    t.dir("data", 10001, 10001, 0o750);
    t.dir("data/sub", 10001, 10001, 0o750);
    for i in 0..10 {
        t.file(&format!("data/sub/f{i}"), 10001, 10001, 0o640);
    }
    t.file("data/sub/wrong", 0, 0, 0o640);
    t.dir("ok", 10001, 10001, 0o755);
    let data = t.p("data");
    let ok = t.p("ok");
    let m = manifest(
        &t,
        "10001:10001",
        &[
            dir(
                &data,
                "owner = 10001\ngroup = 10001\nmode = \"0750\"\nrecursive = true\n\
                 dir_mode = \"0750\"\nfile_mode = \"0640\"",
            ),
            dir(&ok, "owner = 10001\ngroup = 10001\nmode = \"0755\""),
        ],
    );
    let before = snapshot_settled(t.root());

    let (out, r) = apply(&m, &["--dry-run"]);
    assert_exit(&out, 1);
    assert_unchanged(&before, t.root());
    assert_eq!(r["dry_run"], true);
    let all = all_changes(&r);
    assert_eq!(all.len(), 1, "{r:#}");
    assert_eq!(all[0]["action"], "chown");
    assert_eq!(all[0]["path"], t.p("data/sub/wrong").as_str());
    assert_eq!(all[0]["before"], "0:0");
    assert_eq!(all[0]["after"], "10001:10001");
    assert_eq!(changed(&r), 1);
    assert!(changes(&r, &ok).is_empty());
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn dry_run_of_a_missing_directory_lists_the_creations_and_creates_nothing() {
    root_only();
    let t = Tree::new();
    let target = t.p("srv/media");
    let m = manifest(
        &t,
        "10001:10001",
        &[dir(&target, "owner = 10001\ngroup = 10001\nmode = \"0750\"")],
    );
    let before = snapshot_settled(t.root());
    let (out, r) = apply(&m, &["--dry-run"]);
    assert_exit(&out, 1);
    assert_unchanged(&before, t.root());
    let created: Vec<(&str, &str)> = changes(&r, &target)
        .iter()
        .map(|c| {
            assert_eq!(c["action"], "create");
            (c["path"].as_str().unwrap(), c["after"].as_str().unwrap())
        })
        .collect();
    let srv = t.p("srv");
    assert_eq!(
        created,
        vec![(srv.as_str(), "0:0 0755"), (target.as_str(), "10001:10001 0750")],
        "{r:#}"
    );
}

// ---------------------------------------------------------------------------------------
// Policy and privileges

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn writable_entry_without_owner_goes_to_the_runtime_user_and_says_so() {
    root_only();
    let t = Tree::new();
    let cache = t.p("cache");
    let m = manifest(&t, "10001:10001", &[dir(&cache, "")]);
    let (out, r) = apply(&m, &[]);
    assert_exit(&out, 0);
    let (uid, gid, mode) = ids_mode(&t.path("cache"));
    assert_eq!((uid, gid), (10001, 10001));
    assert_eq!(mode & 0o700, 0o700, "mode {mode:04o}");
    assert!(!notes(&r, &cache).is_empty(), "the choice is said: {:#}", entry(&r, &cache));
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn manifest_that_makes_writability_impossible_is_an_error_before_anything_changes() {
    root_only();
    let t = Tree::new();
    let m = manifest(
        &t,
        "10001:10001",
        &[
            dir(&t.p("first"), "owner = 10001"),
            dir(&t.p("ro"), "owner = 0\ngroup = 0\nmode = \"0755\"\nwritable = true"),
        ],
    );
    let out = run(&["apply", "--manifest", &m]);
    assert_exit(&out, 2);
    assert!(!t.path("first").exists());
    assert!(!t.path("ro").exists());
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn without_root_apply_chmods_its_own_directory_and_reports_what_needs_root() {
    root_only();
    let t = Tree::new();
    t.dir("own", 10001, 10001, 0o700);
    t.dir("theirs", 0, 0, 0o755);
    let own = t.p("own");
    let theirs = t.p("theirs");
    let m = manifest(
        &t,
        "10001:10001",
        &[
            dir(&own, "owner = 10001\ngroup = 10001\nmode = \"0750\""),
            dir(&theirs, "owner = 10001\ngroup = 10001\nwritable = false"),
        ],
    );
    let theirs_before = stat(&t.path("theirs"));
    std::thread::sleep(Duration::from_millis(30));

    let out = run_as(10001, 10001, &["apply", "--format", "json", "--manifest", &m]);
    assert_exit(&out, 1);
    assert_eq!(ids_mode(&t.path("own")), (10001, 10001, 0o750), "chmod of its own directory");
    assert_eq!(stat(&t.path("theirs")), theirs_before, "no chown tried without root");
    let r = json(&out);
    let verdict = check(&r, &theirs, "apply");
    assert_eq!(verdict["status"], "fail");
    assert!(message(verdict).contains("needs root"), "{verdict:#}");
    assert!(changes(&r, &theirs).is_empty(), "{r:#}");
    assert_eq!(entry(&r, &own)["status"], "pass");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_directory_only_others_could_write_gets_the_sticky_bit_and_a_note() {
    root_only();
    let t = Tree::new();
    let path = t.p("shared");
    let m = t.write(
        "m.toml",
        &format!("user = \"10001:10001\"\n[[dir]]\npath = \"{path}\"\nowner = 0\ngroup = 0\n"),
    );
    let out = run(&["apply", "--format", "json", "--manifest", m.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert_eq!(stat(&t.path("shared")).2, 0o1757);
    let notes = json(&out)["entries"][0]["notes"].to_string();
    assert!(notes.contains("sticky"), "{notes}");
}
