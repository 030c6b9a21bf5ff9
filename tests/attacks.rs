//! Attacks on a root run over a tree an unprivileged user controls: each test sets up what
//! a hostile uid 10001 could, runs the tool as root, and proves that nothing outside the
//! tree changed (owner, mode and ctime of the victim, read independently of the tool).

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(20);

fn run_bounded(args: &[&str]) -> Output {
    cmd().args(args).timeout(TIMEOUT).output().unwrap()
}

/// A symlink made by uid 10001 (lchown, as if the user had made it).
fn planted(target: &Path, link: &Path) {
    symlink(target, link).unwrap();
    std::os::unix::fs::lchown(link, Some(10001), Some(10001)).unwrap();
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_planted_symlink_is_never_laundered_into_a_trusted_one() {
    root_only();
    let t = Tree::new();
    let victim = t.dir("victim/tmp", 0, 0, 0o700);
    let key = t.file("victim/tmp/key", 0, 0, 0o600);
    t.dir("app", 10001, 10001, 0o755);
    planted(&t.path("victim"), &t.path("app/cache"));
    let m = t.write(
        "m.toml",
        &format!(
            "[[dir]]\npath = \"{app}\"\nowner = 0\ngroup = 0\nmode = \"0755\"\nwritable = false\n\
             recursive = true\n\n[[dir]]\npath = \"{app}/cache/tmp\"\nowner = 10001\n\
             mode = \"0700\"\nrecursive = true\n",
            app = t.p("app")
        ),
    );
    let before = (stat(&victim), stat(&key));
    // Run twice: the first run must not make the link look placed by root for the second.
    for _ in 0..2 {
        let out = run_bounded(&["apply", "--manifest", m.to_str().unwrap()]);
        assert_exit(&out, 1);
        assert!(stdout(&out).contains("is not trusted"), "{}", stdout(&out));
    }
    assert_eq!((stat(&victim), stat(&key)), before, "the victim changed");
    assert_eq!(stat(&t.path("app/cache")).0, 10001, "the planted link was re-owned");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn as_root_a_manifest_the_user_could_write_is_skipped_for_the_images_own() {
    root_only();
    let t = Tree::new();
    let victim = t.dir("victim", 0, 0, 0o700);
    let work = t.dir("work", 10001, 10001, 0o755);
    let planted = t.write(
        "work/fs-preflight.toml",
        &format!("[[dir]]\npath = \"{}\"\nowner = 10001\nmode = \"0777\"\n", victim.display()),
    );
    std::os::unix::fs::chown(&planted, Some(10001), Some(10001)).unwrap();
    // The image's own manifest, where the container's /etc is.
    t.dir("data", 0, 0, 0o1777);
    t.write("etc/fs-preflight.toml", "[[dir]]\npath = \"/data\"\n");
    let before = stat(&victim);
    let marker = t.path("data/started");
    let out = cmd()
        .current_dir(&work)
        .args(["exec", "--apply", "--root", &t.p(""), "--user", "10001", "--"])
        .args(["touch", marker.to_str().unwrap()])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("ignoring ./fs-preflight.toml"), "{}", stderr(&out));
    assert_eq!(stat(&victim), before);
    assert!(marker.exists(), "the program did not start with the image's manifest");

    // A symlink in its place is no better, whoever owns what it points at.
    std::fs::remove_file(&planted).unwrap();
    symlink(t.path("etc/fs-preflight.toml"), &planted).unwrap();
    let out = cmd()
        .current_dir(&work)
        .args(["check", "--root", &t.p(""), "--user", "10001"])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert!(stderr(&out).contains("not a symlink"), "{}", stderr(&out));
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn account_files_resolve_inside_the_root_and_must_be_small_regular_files() {
    root_only();
    let t = Tree::new();
    t.dir("etc", 0, 0, 0o755);
    t.dir("data", 0, 0, 0o755);
    let m = t.write("m.toml", "[[dir]]\npath = \"/data\"\nwritable = false\n");
    let (m, root) = (m.to_str().unwrap(), t.p(""));

    // An absolute link resolves inside the root, as the container would see it.
    t.write("real/passwd", "appuser:x:4321:4321::/home/app:/bin/sh\n");
    symlink("/real/passwd", t.path("etc/passwd")).unwrap();
    let out = run_bounded(&[
        "check",
        "--format",
        "json",
        "--root",
        &root,
        "--manifest",
        m,
        "--user",
        "appuser",
    ]);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["identity"]["uid"], 4321);

    // A FIFO would block a reader forever; /dev/zero never ends.
    std::fs::remove_file(t.path("etc/passwd")).unwrap();
    let fifo = std::process::Command::new("mkfifo").arg(t.path("etc/passwd")).status().unwrap();
    assert!(fifo.success());
    let out = run_bounded(&["check", "--root", &root, "--manifest", m]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("not a regular file"), "{}", stderr(&out));
    std::fs::remove_file(t.path("etc/passwd")).unwrap();
    t.dir("dev", 0, 0, 0o755);
    let zero = std::process::Command::new("mknod")
        .args([t.p("dev/zero").as_str(), "c", "1", "5"])
        .status()
        .unwrap();
    assert!(zero.success());
    symlink("/dev/zero", t.path("etc/passwd")).unwrap();
    let out = run_bounded(&["check", "--root", &root, "--manifest", m]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("not a regular file"), "{}", stderr(&out));
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_link_leading_back_up_creates_where_it_points() {
    root_only();
    let t = Tree::new();
    t.dir("a", 0, 0, 0o755);
    symlink("../missing", t.path("a/l")).unwrap();
    symlink("..", t.path("a/up")).unwrap();
    let m = t.write(
        "m.toml",
        &format!(
            "[[dir]]\npath = \"{a}/l/sub\"\nowner = 10001\n\n[[dir]]\npath = \"{a}/up/new\"\n",
            a = t.p("a")
        ),
    );
    let out = run_bounded(&["apply", "--manifest", m.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(t.path("missing/sub").is_dir() && t.path("new").is_dir());
    assert!(!t.path("a/missing").exists() && !t.path("a/new").exists());
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn check_never_probes_through_a_planted_link() {
    root_only();
    let t = Tree::new();
    let victim = t.dir("victim/sub", 0, 0, 0o755);
    t.dir("u", 10001, 10001, 0o755);
    planted(&t.path("victim"), &t.path("u/anc"));
    let path = t.p("u/anc/sub");
    let m = t.write("m.toml", &format!("[[dir]]\npath = \"{path}\"\n"));
    let before = stat(&victim);
    std::thread::sleep(Duration::from_millis(20));
    let out = run_bounded(&["check", "--format", "json", "--manifest", m.to_str().unwrap()]);
    assert_eq!(stat(&victim), before, "a probe wrote into the victim");
    assert_eq!(json(&out)["writability"], "probed");
    assert!(
        check(&json(&out), &path, "writable")["message"].as_str().unwrap().contains("computed")
    );
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn recursive_work_reaching_dev_through_a_link_is_refused() {
    root_only();
    let t = Tree::new();
    symlink("/", t.path("host")).unwrap();
    let m = t.write(
        "m.toml",
        &format!("[[dir]]\npath = \"{}/host/dev\"\nowner = 10001\nrecursive = true\n", t.p("")),
    );
    // --dry-run: were the refusal to regress, a dry run still changes nothing.
    let out = run_bounded(&["apply", "--dry-run", "--manifest", m.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("kernel filesystem"), "{}", stderr(&out));
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn one_directory_under_two_names_is_refused_not_flipped() {
    root_only();
    let t = Tree::new();
    t.dir("x/d", 0, 0, 0o755);
    symlink("x", t.path("xl")).unwrap();
    let m = t.write(
        "m.toml",
        &format!(
            "[[dir]]\npath = \"{r}/x/d\"\nmode = \"0750\"\nwritable = false\n\n\
             [[dir]]\npath = \"{r}/xl/d\"\nmode = \"0700\"\nwritable = false\n",
            r = t.p("")
        ),
    );
    let m = m.to_str().unwrap();
    let out = run_bounded(&["apply", "--manifest", m]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("is the same directory as"), "{}", stdout(&out));
    let after_first = stat(&t.path("x/d"));
    assert_eq!(after_first.2, 0o750);
    let out = run_bounded(&["apply", "--format", "json", "--manifest", m]);
    assert_eq!(json(&out)["summary"]["changed"], 0);
    assert_eq!(stat(&t.path("x/d")), after_first);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn names_from_a_hostile_root_are_escaped() {
    root_only();
    let t = Tree::new();
    t.accounts("\x1b]0;owned\x07evil\x1b[2J:x:10001:10001::/:/bin/sh\n", "g\x1b[31m:x:10001:\n");
    t.dir("data", 10001, 10001, 0o700);
    let m = t.write("m.toml", "[[dir]]\npath = \"/data\"\nmode = \"0755\"\n");
    let out = run_bounded(&[
        "check",
        "--root",
        &t.p(""),
        "--manifest",
        m.to_str().unwrap(),
        "--user",
        "10001",
    ]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "raw escape in {text:?}");
    assert!(text.contains("\\u{1b}"), "{text}");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_large_manifest_does_not_run_out_of_descriptors() {
    root_only();
    let t = Tree::new();
    let mut text = String::new();
    for i in 0..1500 {
        t.dir(&format!("a/b/c/d{i}"), 10001, 10001, 0o755);
        text.push_str(&format!("[[dir]]\npath = \"{}/a/b/c/d{i}\"\nowner = 10001\n", t.p("")));
    }
    let m = t.write("m.toml", &text);
    // Started with the soft limit containers usually get.
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -Sn 1024 && exec \"$0\" \"$@\"", BIN, "check", "--no-probe"])
        .args(["--user", "10001:10001", "--manifest", m.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit(&out, 0);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_file_bind_mounted_into_the_tree_is_left_alone() {
    root_only();
    let t = Tree::new();
    let key = t.file("host/server.key", 0, 0, 0o600);
    t.dir("app/certs", 0, 0, 0o755);
    t.file("app/certs/server.key", 0, 0, 0o600);
    t.file("app/plain", 0, 0, 0o600);
    let m = t.write(
        "m.toml",
        &format!(
            "[[dir]]\npath = \"{}\"\nowner = 10001\nrecursive = true\nfile_mode = \"0644\"\n",
            t.p("app")
        ),
    );
    let before = stat(&key);
    let _bind = Mounted::new(&["--bind", key.to_str().unwrap()], &t.path("app/certs/server.key"));
    let out = run_bounded(&["apply", "--format", "json", "--manifest", m.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert_eq!(stat(&key), before, "the host's file changed through its bind mount");
    assert_eq!(stat(&t.path("app/plain")).0, 10001, "the rest of the tree was applied");
    let notes = json(&out)["entries"][0]["notes"].to_string();
    assert!(notes.contains("certs/server.key"), "the mount is reported: {notes}");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn an_entry_below_a_recursive_entry_is_left_to_its_own_values() {
    root_only();
    let t = Tree::new();
    t.dir("data/sub", 0, 0, 0o755);
    let m = t.write(
        "m.toml",
        &format!(
            "[[dir]]\npath = \"{r}/data\"\nowner = 0\nrecursive = true\ndir_mode = \"0755\"\n\
             writable = false\n\n[[dir]]\npath = \"{r}/data/sub\"\nowner = 10001\nmode = \"0700\"\n\
             writable = false\n",
            r = t.p("")
        ),
    );
    let m = m.to_str().unwrap();
    assert_exit(&run_bounded(&["apply", "--manifest", m]), 0);
    let settled = stat(&t.path("data/sub"));
    assert_eq!((settled.0, settled.2), (10001, 0o700));
    let out = run_bounded(&["apply", "--format", "json", "--manifest", m]);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["summary"]["changed"], 0, "the two entries fight over data/sub");
    assert_eq!(stat(&t.path("data/sub")), settled);
}

#[test]
fn an_entry_the_recursive_owner_could_rename_away_is_a_manifest_error() {
    let t = Tree::new();
    let m = t.write(
        "m.toml",
        &format!(
            "[[dir]]\npath = \"{r}/app/data\"\nowner = 10001\nrecursive = true\n\n\
             [[dir]]\npath = \"{r}/app/data/secrets\"\nowner = 0\nmode = \"0700\"\n\
             writable = false\n",
            r = t.p("")
        ),
    );
    let out = run_bounded(&["apply", "--user", "10001:10001", "--manifest", m.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("m.toml:7:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("rename"), "{}", stderr(&out));
    assert!(!t.path("app").exists(), "nothing may be created on a manifest error");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_root_reached_through_a_directory_a_user_owns_is_refused() {
    root_only();
    let t = Tree::new();
    t.dir("victim/etc/app", 0, 0, 0o700);
    t.dir("images", 10001, 10001, 0o755);
    planted(&t.path("victim"), &t.path("images/rootfs"));
    let m = t.write("m.toml", "[[dir]]\npath = \"/etc/app\"\nowner = 10001\nmode = \"0777\"\n");
    let before = stat(&t.path("victim/etc/app"));
    let root = t.p("images/rootfs");
    let out = run_bounded(&["apply", "--root", &root, "--manifest", m.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("refusing --root"), "{}", stderr(&out));
    assert_eq!(stat(&t.path("victim/etc/app")), before);
}

#[test]
fn nesting_is_judged_by_who_can_write_the_tree_not_only_by_its_owner() {
    let t = Tree::new();
    let r = t.p("");
    // Root's tree, but group-writable: group members could rename the private entry away.
    let m = t.write(
        "group.toml",
        &format!(
            "[[dir]]\npath = \"{r}/app\"\nowner = 0\ngroup = 1000\nmode = \"0775\"\n\
             writable = false\nrecursive = true\ndir_mode = \"0775\"\n\n\
             [[dir]]\npath = \"{r}/app/private\"\nowner = 0\ngroup = 0\nmode = \"0700\"\n\
             writable = false\n"
        ),
    );
    let out = run_bounded(&["check", "--user", "1000:1000", "--manifest", m.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("rename"), "{}", stderr(&out));

    // Its own owner may chmod it anyway: a private cache of the tree's owner is fine.
    let m = t.write(
        "same-owner.toml",
        &format!(
            "[[dir]]\npath = \"{r}/app2\"\nowner = 10001\nrecursive = true\ndir_mode = \"0755\"\n\n\
             [[dir]]\npath = \"{r}/app2/cache\"\nowner = 10001\nmode = \"0700\"\n"
        ),
    );
    let out = run_bounded(&["check", "--user", "10001:10001", "--manifest", m.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn nesting_written_through_a_symlink_is_judged_where_it_leads() {
    root_only();
    let t = Tree::new();
    let key = t.file("srv/private/key", 0, 0, 0o600);
    set(&t.path("srv/private"), 0, 0, 0o700);
    symlink("srv", t.path("data")).unwrap();
    let m = t.write(
        "m.toml",
        &format!(
            "[[dir]]\npath = \"{r}/srv\"\nowner = 10001\nrecursive = true\n\n\
             [[dir]]\npath = \"{r}/data/private\"\nowner = 0\ngroup = 0\nmode = \"0700\"\n\
             writable = false\n",
            r = t.p("")
        ),
    );
    let before = stat(&key);
    let out = run_bounded(&["apply", "--user", "10001:10001", "--manifest", m.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("once symlinks are followed"), "{}", stderr(&out));
    assert_eq!(stat(&key), before);
}
