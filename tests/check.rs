//! `fs-preflight check` on real temp trees, with real owners, as the runtime user sees them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::Value as Json;

fn seed_manifest(t: &Tree) -> PathBuf {
    t.write(
        "m.toml",
        &format!(
            "user = \"10001:10001\"\n\n[[dir]]\npath = \"{}\"\nowner = 10001\ngroup = 10001\nmode = \"0755\"\n",
            t.p("app/generated_media")
        ),
    )
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn seed_story_missing_directory_then_fixed() {
    root_only();
    let t = Tree::new();
    t.dir("app", 0, 0, 0o755);
    let m = seed_manifest(&t);
    let m = m.to_str().unwrap();

    let out = run(&["check", "--manifest", m]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("10001 cannot create it in"), "{text}");
    assert!(
        text.contains(&format!(
            "RUN install -d -o 10001 -g 10001 -m 00755 {}",
            t.p("app/generated_media")
        )),
        "{text}"
    );
    assert!(text.contains("fs-preflight apply"), "{text}");

    t.dir("app/generated_media", 10001, 10001, 0o755);
    let out = run(&["check", "--manifest", m]);
    assert_exit(&out, 0);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn seed_story_as_json() {
    root_only();
    let t = Tree::new();
    t.dir("app", 0, 0, 0o755);
    let m = seed_manifest(&t);
    let out = run(&["check", "--format", "json", "--manifest", m.to_str().unwrap()]);
    assert_exit(&out, 1);
    let r = json(&out);
    let path = t.p("app/generated_media");
    assert_eq!(r["version"], 1);
    assert_eq!(r["identity"]["uid"], 10001);
    assert_eq!(r["identity"]["groups"], serde_json::json!([10001]));
    assert_eq!(check(&r, &path, "exists")["status"], "fail");
    assert_eq!(check(&r, &path, "type")["status"], "skip");
    assert_eq!(check(&r, &path, "owner")["status"], "skip");
    assert_eq!(r["entries"][0]["status"], "fail");
    assert_eq!(r["summary"]["failed"], 1);
    assert_eq!(r["summary"]["passed"], 0);
}

// ---------------------------------------------------------------------------------------
// Helpers local to this file.

/// Account files of a small container image: `appuser` (10001) is also in `media` (44).
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      appuser:x:10001:10001::/home/app:/bin/sh\n\
                      other:x:1001:1001::/home/other:/bin/sh\n";
const GROUP: &str = "root:x:0:\nmedia:x:44:appuser\nappuser:x:10001:\nother:x:1001:\n";

/// A tree that is a container root (`etc/passwd`, `etc/group`), with a manifest in it.
fn container(manifest: &str) -> (Tree, String) {
    let t = Tree::new();
    t.accounts(PASSWD, GROUP);
    let m = t.write("m.toml", manifest).to_str().unwrap().to_string();
    (t, m)
}

/// `check --format json --root <tree> --manifest <m>` plus `extra`, as root.
fn check_json(t: &Tree, m: &str, extra: &[&str]) -> Output {
    let root = t.p("");
    let mut args = vec!["check", "--format", "json", "--root", &root, "--manifest", m];
    args.extend_from_slice(extra);
    run(&args)
}

/// The entry at `path` of a JSON report.
#[track_caller]
fn entry<'a>(r: &'a Json, path: &str) -> &'a Json {
    r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("no entry {path} in {r:#}"))
}

/// Every fix command of an entry, in one string.
fn fixes(r: &Json, path: &str) -> String {
    entry(r, path)["fixes"]
        .as_array()
        .map(|f| {
            f.iter().map(|f| f["command"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .join("\n")
}

#[track_caller]
fn status_of(r: &Json, path: &str, name: &str) -> String {
    check(r, path, name)["status"].as_str().unwrap().to_string()
}

#[track_caller]
fn message_of(r: &Json, path: &str, name: &str) -> String {
    check(r, path, name)["message"].as_str().unwrap().to_string()
}

/// Names of the entries in a directory (to see that a probe left nothing behind).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// A directory created root-owned by WORKDIR after USER.

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn workdir_after_user_is_root_owned_owner_and_writable_fail() {
    root_only();
    let t = Tree::new();
    // USER 10001 / WORKDIR /app/data: the parent belongs to the user, the new dir to root.
    t.dir("app", 10001, 10001, 0o755);
    t.dir("app/data", 0, 0, 0o755);
    let path = t.p("app/data");
    let m = t.write(
        "m.toml",
        &format!("user = \"10001:10001\"\n\n[[dir]]\npath = \"{path}\"\nowner = 10001\n"),
    );
    let m = m.to_str().unwrap();

    let out = run(&["check", "--format", "json", "--manifest", m]);
    assert_exit(&out, 1);
    let r = json(&out);
    assert_eq!(status_of(&r, &path, "exists"), "pass");
    assert_eq!(status_of(&r, &path, "type"), "pass");
    let owner = check(&r, &path, "owner");
    assert_eq!(owner["status"], "fail", "{owner:#}");
    assert_eq!(owner["expected"], 10001);
    assert_eq!(owner["actual"], 0);
    let writable = check(&r, &path, "writable");
    assert_eq!(writable["status"], "fail", "{writable:#}");
    assert!(writable["message"].as_str().unwrap().contains("10001"), "{writable:#}");
    assert_eq!(r["writability"], "probed");
    assert_eq!(entry(&r, &path)["status"], "fail");
    assert_eq!(r["summary"]["failed"], 1);
    // The fix hands the directory to the user.
    let fix = fixes(&r, &path);
    assert!(fix.contains("RUN chown 10001:") && fix.contains(&format!(" {path}")), "{fix}");
    assert!(fix.contains("fs-preflight apply"), "{fix}");
    // The probe as 10001 failed and left nothing; the tree is untouched.
    assert_eq!(stat(&t.path("app/data")).0, 0);
    assert!(listing(&t.path("app/data")).is_empty());

    // The text report names both failures and the Dockerfile line.
    let out = run(&["check", "--manifest", m]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("owner:") && text.contains("root(0)"), "{text}");
    assert!(text.contains("writable:"), "{text}");
    assert!(text.contains("RUN chown 10001:"), "{text}");

    // After the fix the same manifest passes.
    common::set(&t.path("app/data"), 10001, 10001, 0o755);
    assert_exit(&run(&["check", "--manifest", m]), 0);
}

// ---------------------------------------------------------------------------------------
// docker run --user 1004:1004, no passwd entry for 1004.

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn docker_user_without_passwd_entry_probes_with_exactly_its_gid() {
    root_only();
    // `/` of the tree is root:root 0755; 1004 is in neither account file.
    let (t, m) = container(
        "user = \"1004:1004\"\n\n[[dir]]\npath = \"/.local\"\n\n\
         [[dir]]\npath = \"/g1004\"\n\n[[dir]]\npath = \"/g0\"\n\n[[dir]]\npath = \"/g44\"\n",
    );
    assert_eq!(stat(t.root()).0, 0);
    assert_eq!(stat(t.root()).2, 0o755);
    // Writable only through group 1004; through group 0 (what a bare uid gets); through 44.
    t.dir("g1004", 0, 1004, 0o770);
    t.dir("g0", 0, 0, 0o770);
    t.dir("g44", 0, 44, 0o770);

    let out = check_json(&t, &m, &[]);
    assert_exit(&out, 1);
    let r = json(&out);
    assert_eq!(r["identity"]["uid"], 1004);
    assert_eq!(r["identity"]["gid"], 1004);
    assert_eq!(r["identity"]["groups"], serde_json::json!([1004]));
    assert!(r["identity"].get("name").is_none_or(|n| n.is_null()), "{:#}", r["identity"]);
    assert_eq!(r["writability"], "probed");

    // The missing directory: 1004 cannot create it in the container's `/`.
    assert_eq!(status_of(&r, "/.local", "exists"), "fail");
    let msg = message_of(&r, "/.local", "exists");
    assert!(msg.contains("1004 cannot create it in /"), "{msg}");
    assert!(!msg.contains(&t.p("")), "host path leaked into a container report: {msg}");
    let fix = fixes(&r, "/.local");
    assert!(fix.contains("RUN install -d -o 1004 -g 1004"), "{fix}");
    assert!(fix.contains(" /.local"), "{fix}");
    assert!(!t.path(".local").exists());

    // What the probe could do proves its credentials: gid 1004 and nothing else.
    assert_eq!(status_of(&r, "/g1004", "writable"), "pass", "{:#}", entry(&r, "/g1004"));
    assert_eq!(status_of(&r, "/g0", "writable"), "fail", "probe held gid 0");
    assert_eq!(status_of(&r, "/g44", "writable"), "fail", "probe held gid 44");
    assert!(listing(&t.path("g1004")).is_empty(), "the probe left a file behind");
}

// ---------------------------------------------------------------------------------------
// OpenShift: an arbitrary uid with no passwd entry runs with gid 0.

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn openshift_arbitrary_uid_gets_gid_zero() {
    root_only();
    let (t, m) = container(
        "user = \"1000000\"\n\n[[dir]]\npath = \"/data\"\n\n[[dir]]\npath = \"/shared\"\n",
    );
    t.dir("data", 1001, 1001, 0o755);
    t.dir("shared", 1001, 0, 0o775);

    let out = check_json(&t, &m, &[]);
    assert_exit(&out, 1);
    let r = json(&out);
    assert_eq!(r["identity"]["uid"], 1000000);
    assert_eq!(r["identity"]["gid"], 0);
    assert_eq!(r["identity"]["groups"], serde_json::json!([0]));
    assert_eq!(status_of(&r, "/data", "writable"), "fail");
    assert_eq!(entry(&r, "/data")["status"], "fail");
    assert_eq!(status_of(&r, "/shared", "writable"), "pass");
    assert_eq!(entry(&r, "/shared")["status"], "pass");
    assert_eq!(r["summary"]["failed"], 1);
    assert_eq!(r["summary"]["passed"], 1);

    // The OpenShift way (group 0, g+w) alone passes.
    let m = t.write("m.toml", "user = \"1000000\"\n\n[[dir]]\npath = \"/shared\"\n");
    assert_exit(&check_json(&t, m.to_str().unwrap(), &[]), 0);
}

// ---------------------------------------------------------------------------------------
// Supplementary groups from the image's /etc/group.

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn supplementary_groups_come_with_a_name_but_not_with_name_group() {
    root_only();
    // The manifest's own user (root) is overridden by --user in both runs.
    let (t, m) = container("user = \"0\"\n\n[[dir]]\npath = \"/media\"\n");
    t.dir("media", 0, 44, 0o770);

    let out = check_json(&t, &m, &["--user", "appuser"]);
    assert_exit(&out, 0);
    let r = json(&out);
    assert_eq!(r["identity"]["uid"], 10001);
    assert_eq!(r["identity"]["gid"], 10001);
    assert_eq!(r["identity"]["name"], "appuser");
    assert_eq!(r["identity"]["groups"], serde_json::json!([10001, 44]));
    assert_eq!(status_of(&r, "/media", "writable"), "pass");

    let out = check_json(&t, &m, &["--user", "appuser:appuser"]);
    assert_exit(&out, 1);
    let r = json(&out);
    assert_eq!(r["identity"]["uid"], 10001);
    assert_eq!(r["identity"]["groups"], serde_json::json!([10001]));
    assert_eq!(status_of(&r, "/media", "writable"), "fail");
    assert_eq!(status_of(&r, "/media", "exists"), "pass");
    assert!(listing(&t.path("media")).is_empty(), "the probe left a file behind");
}

// ---------------------------------------------------------------------------------------
// A read-only mount.

/// A mount that is always undone, even when the test panics.
#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn read_only_mount_fails_and_names_the_mount_point() {
    root_only();
    let t = Tree::new();
    let dir = t.dir("ro", 0, 0, 0o755);
    let _mounted = Mounted::new(&["-t", "tmpfs", "-o", "ro,mode=1777", "tmpfs"], &dir); // dropped (unmounted) before `t`
    let point = dir.canonicalize().unwrap().to_str().unwrap().to_string();
    let ro = t.p("ro");
    let sub = t.p("ro/cache");
    let m = t.write(
        "m.toml",
        &format!(
            "user = \"10001:10001\"\n\n[[dir]]\npath = \"{ro}\"\n\n[[dir]]\npath = \"{sub}\"\n"
        ),
    );
    let m = m.to_str().unwrap();

    for extra in [&[][..], &["--no-probe"][..]] {
        let mut args = vec!["check", "--format", "json", "--manifest", m];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert_exit(&out, 1);
        let r = json(&out);
        // The mount point itself (tmpfs is 1777: only the mount stops the user).
        let c = check(&r, &ro, "read_only");
        assert_eq!(c["status"], "fail", "{extra:?}: {c:#}");
        assert!(c["message"].as_str().unwrap().contains(&point), "{extra:?}: {c:#}");
        assert_ne!(status_of(&r, &ro, "writable"), "pass", "{extra:?}");
        assert_eq!(entry(&r, &ro)["status"], "fail");
        // A missing directory below it: read-only too, and it cannot be created.
        let c = check(&r, &sub, "read_only");
        assert_eq!(c["status"], "fail", "{extra:?}: {c:#}");
        assert!(c["message"].as_str().unwrap().contains(&point), "{extra:?}: {c:#}");
        assert_ne!(status_of(&r, &sub, "writable"), "pass", "{extra:?}");
        let msg = message_of(&r, &sub, "exists");
        assert!(msg.contains("cannot create"), "{extra:?}: {msg}");
    }

    // The text report says it too.
    let out = run(&["check", "--manifest", m]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("read_only:") && text.contains(&point), "{text}");
}

// ---------------------------------------------------------------------------------------
// Run as a non-root user: no --user means this process.

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn non_root_run_checks_for_the_current_process() {
    root_only();
    let t = Tree::new();
    t.accounts(PASSWD, GROUP);
    t.dir("mine", 10001, 10001, 0o755);
    t.dir("rootowned", 0, 0, 0o755);
    // /etc/group lists appuser in media(44), but this process does not hold 44.
    t.dir("media", 0, 44, 0o770);
    let root = t.p("");
    let manifest = |name: &str, body: &str| t.write(name, body).to_str().unwrap().to_string();
    let mine = manifest("mine.toml", "[[dir]]\npath = \"/mine\"\n");
    let theirs = manifest("theirs.toml", "[[dir]]\npath = \"/rootowned\"\n");
    let media = manifest("media.toml", "[[dir]]\npath = \"/media\"\n");

    let out =
        run_as(10001, 10001, &["check", "--format", "json", "--root", &root, "--manifest", &mine]);
    assert_exit(&out, 0);
    let r = json(&out);
    assert_eq!(r["identity"]["uid"], 10001);
    assert_eq!(r["identity"]["gid"], 10001);
    assert_eq!(r["identity"]["groups"], serde_json::json!([10001]));
    assert_eq!(r["writability"], "probed");
    assert_eq!(status_of(&r, "/mine", "writable"), "pass");
    assert!(listing(&t.path("mine")).is_empty(), "the probe left a file behind");

    let out = run_as(
        10001,
        10001,
        &["check", "--format", "json", "--root", &root, "--manifest", &theirs],
    );
    assert_exit(&out, 1);
    let r = json(&out);
    assert_eq!(status_of(&r, "/rootowned", "writable"), "fail");
    assert_eq!(status_of(&r, "/rootowned", "exists"), "pass");

    // The text report, as the user sees it.
    let out = run_as(10001, 10001, &["check", "--root", &root, "--manifest", &theirs]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("writable:"), "{}", stdout(&out));

    // Groups are the process's own getgroups(), never inferred from /etc/group.
    let out =
        run_as(10001, 10001, &["check", "--format", "json", "--root", &root, "--manifest", &media]);
    assert_exit(&out, 1);
    let r = json(&out);
    assert_eq!(r["identity"]["groups"], serde_json::json!([10001]));
    assert_eq!(status_of(&r, "/media", "writable"), "fail");
}

// ---------------------------------------------------------------------------------------
// Every manifest error: exit 2, file:line:col, nothing written.

/// The (line, column) that stderr gives for `file`, if it names it as `file:line:col`.
fn location(stderr: &str, file: &str) -> Option<(usize, usize)> {
    let at = stderr.find(&format!("{file}:"))? + file.len() + 1;
    let mut parts = stderr[at..].splitn(3, ':');
    let line = parts.next()?.parse().ok()?;
    let col = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((line, col))
}

/// The runtime user (line 1, so that "writable but impossible" is decidable) and a valid
/// entry (lines 2-3) that `apply` would create if it ever acted on a rejected manifest.
const HEAD: &str = "user = \"10001:10001\"\n[[dir]]\npath = \"/ok\"\n";
const OK_ENTRY: &str = "[[dir]]\npath = \"/ok\"\n";

/// (what, whole manifest, lines where the error may be reported, a word the message holds).
/// Cases built from HEAD + "\n" + a bad entry have the bad entry's `[[dir]]` on line 5,
/// its `path` on line 6 and its next key on line 7.
fn manifest_errors() -> Vec<(&'static str, String, (usize, usize), &'static str)> {
    let bad = |entry: &str| format!("{HEAD}\n{entry}");
    vec![
        ("unknown top-level key", format!("colour = 1\n{OK_ENTRY}"), (1, 1), "colour"),
        (
            "unknown key in [[dir]]",
            bad("[[dir]]\npath = \"/bad\"\nwriteable = true\n"),
            (7, 7),
            "writeable",
        ),
        ("mode as an integer", bad("[[dir]]\npath = \"/bad\"\nmode = 755\n"), (7, 7), "755"),
        ("create as a string", bad("[[dir]]\npath = \"/bad\"\ncreate = \"yes\"\n"), (7, 7), "yes"),
        ("writable as an integer", bad("[[dir]]\npath = \"/bad\"\nwritable = 1\n"), (7, 7), ""),
        (
            "recursive as a string",
            bad("[[dir]]\npath = \"/bad\"\nrecursive = \"no\"\n"),
            (7, 7),
            "",
        ),
        ("path as an integer", bad("[[dir]]\npath = 5\n"), (6, 6), ""),
        ("owner as a boolean", bad("[[dir]]\npath = \"/bad\"\nowner = true\n"), (7, 7), ""),
        ("dir as a string", "user = \"10001:10001\"\ndir = \"/bad\"\n".to_string(), (2, 2), ""),
        ("user as a boolean", format!("user = true\n{OK_ENTRY}"), (1, 1), "user"),
        ("relative path", bad("[[dir]]\npath = \"bad/rel\"\n"), (6, 6), "absolute"),
        ("empty path", bad("[[dir]]\npath = \"\"\n"), (6, 6), ""),
        ("`..` component", bad("[[dir]]\npath = \"/bad/../escaped\"\n"), (6, 6), ".."),
        ("`/` itself", bad("[[dir]]\npath = \"/\"\n"), (6, 6), ""),
        ("`/` written as //.", bad("[[dir]]\npath = \"//.\"\n"), (6, 6), ""),
        (
            "unset variable",
            bad("[[dir]]\npath = \"${FSP_TEST_UNSET}/bad\"\n"),
            (6, 6),
            "FSP_TEST_UNSET",
        ),
        ("mode not octal (8)", bad("[[dir]]\npath = \"/bad\"\nmode = \"0855\"\n"), (7, 7), "0855"),
        (
            "mode not octal (letters)",
            bad("[[dir]]\npath = \"/bad\"\nmode = \"rwx\"\n"),
            (7, 7),
            "rwx",
        ),
        ("mode above 07777", bad("[[dir]]\npath = \"/bad\"\nmode = \"17777\"\n"), (7, 7), "17777"),
        (
            "writable but mode 0555",
            bad("[[dir]]\npath = \"/bad\"\nmode = \"0555\"\n"),
            (7, 7),
            "writable",
        ),
        (
            "writable but root:root 0755",
            bad("[[dir]]\npath = \"/bad\"\nowner = 0\ngroup = 0\nmode = \"0755\"\n"),
            (5, 9),
            "writable",
        ),
        (
            "writable but 0700 and owned by someone else",
            bad("[[dir]]\npath = \"/bad\"\nowner = \"other\"\nmode = \"0700\"\n"),
            (5, 8),
            "writable",
        ),
        ("duplicate path", bad("[[dir]]\npath = \"/ok/\"\n"), (6, 6), "duplicate"),
        (
            "unknown owner name",
            bad("[[dir]]\npath = \"/bad\"\nowner = \"ghost\"\n"),
            (7, 7),
            "ghost",
        ),
        (
            "unknown group name",
            bad("[[dir]]\npath = \"/bad\"\ngroup = \"ghosts\"\n"),
            (7, 7),
            "ghosts",
        ),
        (
            "owner 4294967295",
            bad("[[dir]]\npath = \"/bad\"\nowner = 4294967295\n"),
            (7, 7),
            "4294967295",
        ),
        (
            "owner \"4294967295\"",
            bad("[[dir]]\npath = \"/bad\"\nowner = \"4294967295\"\n"),
            (7, 7),
            "4294967295",
        ),
        (
            "group 4294967295",
            bad("[[dir]]\npath = \"/bad\"\ngroup = 4294967295\n"),
            (7, 7),
            "4294967295",
        ),
        (
            "group \"4294967295\"",
            bad("[[dir]]\npath = \"/bad\"\ngroup = \"4294967295\"\n"),
            (7, 7),
            "4294967295",
        ),
        ("unknown user name in user", format!("user = \"ghost\"\n{OK_ENTRY}"), (1, 1), "ghost"),
        (
            "unknown group name in user",
            format!("user = \"appuser:ghosts\"\n{OK_ENTRY}"),
            (1, 1),
            "ghosts",
        ),
        (
            "uid 4294967295 in user",
            format!("user = \"4294967295\"\n{OK_ENTRY}"),
            (1, 1),
            "4294967295",
        ),
        (
            "gid 4294967295 in user",
            format!("user = \"10001:4294967295\"\n{OK_ENTRY}"),
            (1, 1),
            "4294967295",
        ),
        ("empty user", format!("user = \"\"\n{OK_ENTRY}"), (1, 1), ""),
    ]
}

/// Bad --user values: rejected before anything is looked at.
const BAD_USER_FLAGS: &[&str] =
    &["ghost", "appuser:ghosts", "4294967295", "10001:4294967295", ":1", "1:", ""];

/// Runs check and apply on a manifest that must be rejected; asserts exit 2, the place in
/// the file (when `line` is given), and that nothing was created.
#[track_caller]
fn assert_rejected(
    what: &str,
    text: &str,
    lines: Option<(usize, usize)>,
    word: &str,
    extra: &[&str],
) {
    let (t, m) = container(text);
    let root = t.p("");
    for command in ["check", "apply"] {
        let mut args = vec![command, "--root", &root, "--manifest", &m];
        args.extend_from_slice(extra);
        let out = cmd()
            .args(&args)
            .current_dir(t.root())
            .env_remove("FSP_TEST_UNSET")
            .env("FSP_TEST_SET", "/set")
            .output()
            .unwrap();
        let err = stderr(&out);
        let ctx = format!("{what} ({command}):\n--- manifest\n{text}--- stderr\n{err}");
        assert_eq!(out.status.code(), Some(2), "exit code of {ctx}");
        assert!(stdout(&out).trim().is_empty(), "a report was printed for {ctx}\n{}", stdout(&out));
        if let Some((lo, hi)) = lines {
            let (l, c) = location(&err, &m).unwrap_or_else(|| panic!("no {m}:LINE:COL in {ctx}"));
            assert!((lo..=hi).contains(&l), "line {l} (expected {lo}..={hi}) of {ctx}");
            assert!(c >= 1, "column of {ctx}");
        }
        if !word.is_empty() {
            assert!(err.contains(word), "{word:?} not named in {ctx}");
        }
        // Nothing was created: not the valid entry, not the bad one, not relative to cwd.
        for left in ["ok", "bad", "escaped", "set", "rel"] {
            assert!(!t.path(left).exists(), "{left} was created for {ctx}");
        }
        assert_eq!(
            listing(t.root()),
            ["etc", "m.toml"],
            "something was written into the tree for {ctx}"
        );
    }
}

#[test]
fn every_manifest_error_exits_2_with_file_line_col_and_creates_nothing() {
    for (what, text, lines, word) in manifest_errors() {
        assert_rejected(what, &text, Some(lines), word, &[]);
    }
    for &spec in BAD_USER_FLAGS {
        let what = format!("--user {spec:?}");
        assert_rejected(&what, HEAD, None, "--user", &["--user", spec]);
    }
}

/// The control for the test above: the same head, valid, is applied, so "nothing was
/// created" there is a real observation.
#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn manifest_error_control_valid_head_is_created_by_apply() {
    root_only();
    let (t, m) = container(HEAD);
    let root = t.p("");
    let out = run(&["apply", "--root", &root, "--manifest", &m]);
    assert_exit(&out, 0);
    assert!(t.path("ok").is_dir());
    // A variable with a default is not an error.
    let (t, m) = container(&format!("{HEAD}\n[[dir]]\npath = \"${{FSP_TEST_UNSET:-/set}}\"\n"));
    let root = t.p("");
    let out = cmd()
        .args(["check", "--format", "json", "--root", &root, "--manifest", &m])
        .env_remove("FSP_TEST_UNSET")
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert_eq!(check(&json(&out), "/set", "exists")["status"], "fail");
}

// ---- the fixes a failing entry suggests ---------------------------------------------------

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn suggested_commands_repeat_the_options_used_and_are_quoted() {
    root_only();
    let (t, m) = container("[[dir]]\npath = \"/app/my media\"\n");
    t.dir("app", 0, 0, 0o755);
    let root = t.p("");
    let out = check_json(&t, &m, &["--user", "appuser"]);
    assert_exit(&out, 1);
    let fix = fixes(&json(&out), "/app/my media");
    assert!(fix.contains("RUN install -d -o 10001 -g 10001 -m 00755 '/app/my media'"), "{fix}");
    assert!(
        fix.contains(&format!("fs-preflight apply --manifest {m} --root {root} --user appuser")),
        "{fix}"
    );
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_symlink_planted_by_the_user_is_named_and_no_fix_goes_through_it() {
    root_only();
    let (t, m) = container("[[dir]]\npath = \"/home/u/logs/sub\"\n");
    t.dir("home/u", 10001, 10001, 0o755);
    t.dir("etc", 0, 0, 0o755);
    std::os::unix::fs::symlink("/etc", t.path("home/u/logs")).unwrap();
    std::os::unix::fs::lchown(t.path("home/u/logs"), Some(10001), Some(10001)).unwrap();
    let out = check_json(&t, &m, &["--user", "appuser"]);
    assert_exit(&out, 1);
    let r = json(&out);
    let e = entry(&r, "/home/u/logs/sub");
    assert_eq!(e["resolved"], "/etc/sub");
    assert!(e["notes"][0].as_str().unwrap().contains("apply will not follow it"), "{e:#}");
    let fix = fixes(&r, "/home/u/logs/sub");
    assert!(fix.contains("replace the symlink /home/u/logs"), "{fix}");
    assert!(!fix.contains("install -d") && !fix.contains("fs-preflight apply"), "{fix}");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn apply_is_not_suggested_for_what_it_refuses() {
    root_only();
    let (t, m) = container("[[dir]]\npath = \"/data\"\n[[dir]]\npath = \"/link\"\n");
    t.file("data", 0, 0, 0o644);
    t.dir("real", 10001, 10001, 0o755);
    std::os::unix::fs::symlink("real", t.path("link")).unwrap();
    let out = check_json(&t, &m, &["--user", "appuser"]);
    assert_exit(&out, 1);
    let r = json(&out);
    for path in ["/data", "/link"] {
        let fix = fixes(&r, path);
        assert!(fix.contains(&format!("RUN rm {path} && install -d")), "{fix}");
        assert!(!fix.contains("fs-preflight apply"), "{path}: {fix}");
        assert_eq!(entry(&r, path).get("resolved"), None, "{path}: no symlink was followed");
    }
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn the_printed_dockerfile_fix_run_as_is_makes_the_check_pass() {
    root_only();
    let t = Tree::new();
    // Left over from an OpenShift build: the setgid bit that GNU chmod keeps for "0755".
    let dir = t.dir("app/generated_media", 10001, 0, 0o2775);
    let m = t.write(
        "m.toml",
        &format!(
            "user = \"10001:10001\"\n[[dir]]\npath = \"{}\"\nowner = 10001\ngroup = 10001\n\
             mode = \"0755\"\n",
            dir.display()
        ),
    );
    let m = m.to_str().unwrap();
    let out = run(&["check", "--format", "json", "--manifest", m]);
    assert_exit(&out, 1);
    let r = json(&out);
    let fix = r["entries"][0]["fixes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "dockerfile")
        .unwrap_or_else(|| panic!("no Dockerfile fix in {r:#}"))["command"]
        .as_str()
        .unwrap()
        .to_string();
    let shell = fix.strip_prefix("RUN ").unwrap();
    let ran = std::process::Command::new("sh").args(["-c", shell]).status().unwrap();
    assert!(ran.success(), "{shell}");
    assert_eq!(stat(&dir).2, 0o755, "after {shell}");
    assert_exit(&run(&["check", "--manifest", m]), 0);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn writable_fails_when_an_ancestor_blocks_the_way() {
    root_only();
    let t = Tree::new();
    t.dir("srv/private", 0, 0, 0o700);
    let data = t.dir("srv/private/data", 10001, 10001, 0o755);
    let m = t.write("m.toml", &format!("[[dir]]\npath = \"{}\"\n", data.display()));
    let path = data.to_str().unwrap();
    for extra in [&[][..], &["--no-probe"][..]] {
        let mut args = vec!["check", "--format", "json", "--user", "10001:10001"];
        args.extend_from_slice(&["--manifest", m.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let out = run(&args);
        assert_exit(&out, 1);
        let r = json(&out);
        assert_eq!(check(&r, path, "ancestors")["status"], "fail");
        let writable = check(&r, path, "writable");
        assert_eq!(writable["status"], "fail", "{extra:?}: {writable:#}");
        assert!(writable["message"].as_str().unwrap().contains("cannot get here"));
        let fixes = r["entries"][0]["fixes"].to_string();
        assert!(fixes.contains("chmod o+x") && !fixes.contains("fs-preflight apply"), "{fixes}");
    }
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_full_filesystem_fails_writable_even_though_empty_files_still_fit() {
    root_only();
    let t = Tree::new();
    let dir = t.dir("full", 0, 0, 0o755);
    let _full = Mounted::new(&["-t", "tmpfs", "-o", "size=64k,mode=1777", "tmpfs"], &dir);
    // Fill the data blocks; inodes are left, so an empty file can still be created.
    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
    drop(filler);
    let m = t.write("m.toml", &format!("[[dir]]\npath = \"{}\"\n", dir.display()));
    let out = run(&[
        "check",
        "--format",
        "json",
        "--user",
        "10001:10001",
        "--manifest",
        m.to_str().unwrap(),
    ]);
    assert_exit(&out, 1);
    let writable = check(&json(&out), dir.to_str().unwrap(), "writable").clone();
    assert_eq!(writable["status"], "fail", "{writable:#}");
    assert!(writable["message"].as_str().unwrap().contains("No space left"), "{writable:#}");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_numeric_user_may_be_written_as_a_toml_integer() {
    root_only();
    let (t, m) = container("user = 10001\n\n[[dir]]\npath = \"/data\"\nwritable = false\n");
    t.dir("data", 0, 0, 0o755);
    let out = check_json(&t, &m, &[]);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["identity"]["uid"], 10001);
}
