//! `fs-preflight exec`: check (and with --apply fix), drop to the runtime user the way
//! container runtimes do, and exec the program in the same process.
//!
//! Identities come from a fake container root (`--root`) with its own etc/passwd and
//! etc/group; the host's account files are never read or touched.

mod common;

use common::*;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest any single run of the binary may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
appuser:x:10001:10001:The app:/home/app:/bin/sh
other:x:10002:10002::/home/other:/bin/sh
";

/// appuser: primary 10001, member of media (44) and webdata (2000), not of unrelated.
const GROUP: &str = "\
root:x:0:
appuser:x:10001:
media:x:44:other,appuser
webdata:x:2000:appuser
unrelated:x:3000:other
";

/// A fake container root with accounts, a directory `/data` anyone may write (1777), and
/// a manifest `m.toml` that asks only that `/data` be writable, so every identity passes.
struct Fixture {
    t: Tree,
    manifest: String,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_manifest("[[dir]]\npath = \"/data\"\nwritable = true\n")
    }

    fn with_manifest(text: &str) -> Fixture {
        let t = Tree::new();
        t.accounts(PASSWD, GROUP);
        let data = t.path("data");
        fs::create_dir(&data).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o1777)).unwrap();
        let manifest = t.write("m.toml", text).to_str().unwrap().to_string();
        Fixture { t, manifest }
    }

    /// `exec --root <tree> --manifest <m.toml>` followed by `rest`.
    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["exec", "--root", self.t.root().to_str().unwrap(), "--manifest"];
        v.push(&self.manifest);
        v.extend_from_slice(rest);
        v
    }

    fn exec(&self, rest: &[&str]) -> Output {
        fsp(&self.args(rest), &[])
    }
}

/// Runs the binary with a time limit, and extra environment variables.
fn fsp(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = cmd();
    c.args(args).timeout(TIMEOUT);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Runs `exec --user SPEC -- CMD...` in a fresh fixture and returns CMD's stdout, after
/// checking that exec succeeded. The binary starts as root holding the supplementary
/// groups 3000 and 3001 (setpriv --groups), so that groups a sloppy drop leaves behind
/// show in `id -G`.
#[track_caller]
fn exec_as(user: &str, cmd: &[&str]) -> String {
    let fx = Fixture::new();
    let mut rest = vec!["--user", user, "--"];
    rest.extend_from_slice(cmd);
    let mut c = assert_cmd::Command::new("setpriv");
    c.args(["--groups=3000,3001", "--", BIN]).args(fx.args(&rest)).timeout(TIMEOUT);
    c.env_remove("NO_COLOR").env_remove("FS_PREFLIGHT_MANIFEST");
    let out = c.output().unwrap();
    assert_exit(&out, 0);
    stdout(&out)
}

/// A child killed when the test ends, whatever happens, so no loop outlives a test.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the child to exit, at most `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_all(r: Option<impl Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

// ---- identity: uid and groups ---------------------------------------------------------

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn uid_colon_gid_runs_the_program_as_that_uid_and_only_that_group() {
    root_only();
    assert_eq!(exec_as("10001:10001", &["id", "-u"]), "10001\n");
    assert_eq!(exec_as("10001:10001", &["id", "-g"]), "10001\n");
    assert_eq!(exec_as("10001:10001", &["id", "-G"]), "10001\n");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_name_gets_its_passwd_gid_and_its_memberships_from_the_roots_group_file() {
    root_only();
    // Primary group first, then the supplementary ones (kernel order, ascending);
    // `unrelated` (3000) does not list appuser and must not appear.
    assert_eq!(exec_as("appuser", &["id", "-u"]), "10001\n");
    assert_eq!(exec_as("appuser", &["id", "-G"]), "10001 44 2000\n");
    // A uid that has a passwd entry is the same as its name.
    assert_eq!(exec_as("10001", &["id", "-G"]), "10001 44 2000\n");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn name_colon_group_gets_exactly_that_one_group() {
    root_only();
    assert_eq!(exec_as("appuser:media", &["id", "-u"]), "10001\n");
    assert_eq!(exec_as("appuser:media", &["id", "-G"]), "44\n");
    assert_eq!(exec_as("appuser:webdata", &["id", "-G"]), "2000\n");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_uid_without_passwd_entry_gets_gid_0_and_no_other_group() {
    root_only();
    assert_eq!(exec_as("4242", &["id", "-u"]), "4242\n");
    assert_eq!(exec_as("4242", &["id", "-G"]), "0\n");
}

/// After the drop, no capability survives in any set.
#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn no_capability_survives_the_drop() {
    root_only();
    let status = exec_as("appuser", &["cat", "/proc/self/status"]);
    for field in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| {
            panic!("no {field} in /proc/self/status:\n{status}");
        });
        let hex = line.split_whitespace().nth(1).unwrap();
        assert_eq!(u64::from_str_radix(hex, 16).unwrap(), 0, "{line}");
    }
}

// ---- the PID is kept ------------------------------------------------------------------

#[test]
fn the_program_keeps_the_pid_of_the_process_that_was_started() {
    let fx = Fixture::new();
    let child = std::process::Command::new(BIN)
        .args(fx.args(&["--", "sh", "-c", "echo $$"]))
        .env_remove("FS_PREFLIGHT_MANIFEST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut child = Guard(child);
    let status = wait_bounded(&mut child.0, TIMEOUT).expect("exec did not finish in time");
    let out = read_all(child.0.stdout.take());
    let err = read_all(child.0.stderr.take());
    assert!(status.success(), "{status}\n--- stdout\n{out}\n--- stderr\n{err}");
    assert_eq!(out, format!("{pid}\n"), "stderr:\n{err}");
}

// ---- a failing check does not start the program ---------------------------------------

#[test]
fn a_failing_check_does_not_start_the_program_unless_warn_only() {
    let fx = Fixture::with_manifest("[[dir]]\npath = \"/missing\"\nwritable = true\n");
    let marker = fx.t.path("program-ran");
    let script = format!("echo ran > '{}'; echo from-program", marker.display());

    let out = fx.exec(&["--", "sh", "-c", &script]);
    assert_exit(&out, 1);
    assert!(!marker.exists(), "the program ran although the check failed");
    // stdout belongs to the program; the report and the refusal go to stderr.
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(err.contains("/missing"), "the report names the failing entry:\n{err}");

    let out = fx.exec(&["--warn-only", "--", "sh", "-c", &script]);
    assert_exit(&out, 0);
    assert!(marker.exists(), "--warn-only did not start the program");
    assert_eq!(stdout(&out), "from-program\n");
    assert!(stderr(&out).contains("/missing"), "the failure is still reported:\n{}", stderr(&out));
}

#[test]
fn quiet_prints_nothing_when_everything_passes() {
    let fx = Fixture::new();
    let out = fx.exec(&["--quiet", "--", "echo", "hello"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "hello\n");
    assert_eq!(stderr(&out), "");
}

// ---- --apply as root on the seed story -------------------------------------------------

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn apply_creates_and_owns_the_directory_then_the_program_writes_there_as_10001() {
    root_only();
    let t = Tree::new();
    t.accounts(PASSWD, GROUP);
    t.dir("app", 0, 0, 0o755);
    let m = t.write(
        "m.toml",
        "user = \"10001:10001\"\n\n[[dir]]\npath = \"/app/generated_media\"\nowner = 10001\n\
         group = 10001\nmode = \"0755\"\ncreate = true\nwritable = true\n",
    );
    let media = t.path("app/generated_media");
    let written = media.join("by-the-app");
    let script = format!("id -u; echo hi > '{}' && echo wrote", written.display());
    let out = fsp(
        &[
            "exec",
            "--apply",
            "--root",
            t.root().to_str().unwrap(),
            "--manifest",
            m.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "10001\nwrote\n", "stderr:\n{}", stderr(&out));
    let (uid, gid, mode, _) = stat(&media);
    assert_eq!((uid, gid, mode), (10001, 10001, 0o755));
    let (uid, gid, _, _) = stat(&written);
    assert_eq!((uid, gid), (10001, 10001), "the file was not written by 10001:10001");
    let (uid, gid, mode, _) = stat(&t.path("app"));
    assert_eq!((uid, gid, mode), (0, 0, 0o755), "the parent was changed");
}

// ---- SIGTERM reaches the program --------------------------------------------------------

#[test]
fn sigterm_sent_to_the_started_process_reaches_the_program() {
    let fx = Fixture::new();
    let marker = fx.t.path("got-term");
    // The loop ends by itself after ~20 s, so nothing outlives the test.
    let script = format!(
        "trap 'echo got > \"{}\"; exit 0' TERM; echo ready; \
         i=0; while [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; exit 3",
        marker.display()
    );
    let child = std::process::Command::new(BIN)
        .args(fx.args(&["--", "sh", "-c", &script]))
        .env_remove("FS_PREFLIGHT_MANIFEST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut child = Guard(child);

    let (tx, rx) = mpsc::channel();
    let reader = BufReader::new(child.0.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == "ready" => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.0.kill();
                let _ = child.0.wait();
                panic!(
                    "the program never said ready; stderr:\n{}",
                    read_all(child.0.stderr.take())
                );
            }
        }
    }

    let kill =
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(kill.success(), "kill -TERM {pid} failed");

    let status = wait_bounded(&mut child.0, Duration::from_secs(10))
        .expect("the process did not exit within 10 s of SIGTERM");
    let err = read_all(child.0.stderr.take());
    assert_eq!(
        fs::read_to_string(&marker).ok().as_deref(),
        Some("got\n"),
        "the program's TERM trap did not run (status {status}); stderr:\n{err}"
    );
    assert_eq!(status.code(), Some(0), "the exit code is the trap's; stderr:\n{err}");
}

// ---- exit codes 126 and 127 -------------------------------------------------------------

#[test]
fn a_program_that_is_not_found_exits_127_and_is_named() {
    let fx = Fixture::new();
    let bin = fx.t.path("bin");
    fs::create_dir(&bin).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());

    let out = fsp(&fx.args(&["--", "no-such-program-fsp"]), &[("PATH", &path)]);
    assert_exit(&out, 127);
    assert!(stderr(&out).contains("no-such-program-fsp"), "{}", stderr(&out));

    let absent = bin.join("absent");
    let out = fx.exec(&["--", absent.to_str().unwrap()]);
    assert_exit(&out, 127);
    assert!(stderr(&out).contains(absent.to_str().unwrap()), "{}", stderr(&out));
}

#[test]
fn a_program_that_is_found_but_not_executable_exits_126_and_is_named() {
    let fx = Fixture::new();
    let bin = fx.t.path("bin");
    fs::create_dir(&bin).unwrap();
    let tool = bin.join("not-executable-fsp");
    fs::write(&tool, "#!/bin/sh\necho should not run\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o644)).unwrap();

    // By path.
    let out = fx.exec(&["--", tool.to_str().unwrap()]);
    assert_exit(&out, 126);
    assert!(stderr(&out).contains(tool.to_str().unwrap()), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");

    // Through PATH: found (so not 127) but not executable.
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let out = fsp(&fx.args(&["--", "not-executable-fsp"]), &[("PATH", &path)]);
    assert_exit(&out, 126);
    assert!(stderr(&out).contains("not-executable-fsp"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

// ---- HOME ---------------------------------------------------------------------------------

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn home_comes_from_passwd_and_is_slash_for_a_uid_without_entry() {
    root_only();
    let show = ["sh", "-c", "echo \"$HOME|$FSP_TEST_VAR\""];
    for (user, home) in [("appuser", "/home/app"), ("10001:10001", "/home/app"), ("4242", "/")] {
        let fx = Fixture::new();
        let mut rest = vec!["--user", user, "--"];
        rest.extend_from_slice(&show);
        let out = fsp(&fx.args(&rest), &[("HOME", "/root"), ("FSP_TEST_VAR", "kept as is")]);
        assert_exit(&out, 0);
        // HOME is the identity's; the rest of the environment reaches the program unchanged.
        assert_eq!(stdout(&out), format!("{home}|kept as is\n"), "user {user}");
    }
}

// ---- becoming another user needs root ----------------------------------------------------

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_non_root_process_cannot_become_another_user_but_may_be_itself() {
    root_only();
    let fx = Fixture::new();
    // In /data (1777), so that any uid could create it: its absence means "not run".
    let marker = fx.t.path("data/ran");
    let script = format!("echo ran > '{}'", marker.display());
    let mut args = fx.args(&["--user", "10001:10001", "--", "sh", "-c", &script]);

    // As 10002, asked to run as 10001: refused with exit 2, the program not started.
    let out = run_as(10002, 10002, &args);
    assert_exit(&out, 2);
    assert!(!marker.exists(), "the program ran as the wrong user");
    assert!(stderr(&out).contains("10001"), "the message names the identity:\n{}", stderr(&out));

    // As 10001 itself (no supplementary groups, like --user 10001:10001): runs.
    args.truncate(args.len() - 3);
    args.extend_from_slice(&["id", "-u"]);
    let out = run_as(10001, 10001, &args);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "10001\n");
}

// ---- what a non-root runtime hands over ----------------------------------------------------

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_non_root_process_with_extra_runtime_groups_runs_with_them() {
    root_only();
    let fx = Fixture::new();
    // As Kubernetes runs a pod with runAsUser 10001, runAsGroup 10001 and fsGroup 2000.
    let args = fx.args(&["--user", "10001:10001", "--", "id", "-G"]);
    let bin = any_user_bin();
    let mut c = assert_cmd::Command::new("setpriv");
    c.args(["--reuid=10001", "--regid=10001", "--groups=2000"]).arg(&bin.path).args(&args);
    c.env_remove("NO_COLOR").env_remove("FS_PREFLIGHT_MANIFEST").timeout(TIMEOUT);
    let out = c.output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "10001 2000\n", "the groups the process has are kept");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn a_path_directory_the_user_cannot_search_means_not_found() {
    root_only();
    let fx = Fixture::new();
    // root's own bin directory, unreadable once the program runs as 10001.
    let private = fx.t.dir("private", 0, 0, 0o700);
    let path = format!("{}:/usr/bin:/bin", private.display());
    let args = fx.args(&["--user", "10001:10001", "--", "no-such-program-here"]);
    let out = fsp(&args, &[("PATH", &path)]);
    assert_exit(&out, 127);
    assert!(stderr(&out).contains("no-such-program-here: command not found"), "{}", stderr(&out));
}

#[test]
fn exec_writes_its_json_report_as_one_line_beside_the_program_output() {
    let fx = Fixture::new();
    let args = fx.args(&["--format", "json", "--", "sh", "-c", "echo from-the-program >&2"]);
    let out = fsp(&args, &[]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    let report: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(report["command"], "exec");
    assert_eq!(report["summary"]["failed"], 0);
    assert_eq!(lines[1], "from-the-program");
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn inheritable_capabilities_do_not_survive_the_drop() {
    root_only();
    let fx = Fixture::new();
    let args = fx.args(&["--user", "10001:10001", "--", "grep", "^Cap", "/proc/self/status"]);
    let mut c = assert_cmd::Command::new("setpriv");
    c.args(["--inh-caps", "+sys_admin,+dac_read_search", BIN]).args(&args).timeout(TIMEOUT);
    let out = c.env_remove("NO_COLOR").output().unwrap();
    assert_exit(&out, 0);
    for line in stdout(&out).lines().filter(|l| !l.starts_with("CapBnd")) {
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn started_with_sigchld_ignored_the_probe_still_answers() {
    root_only();
    let fx = Fixture::new();
    let args = fx.args(&["--user", "10001:10001", "--", "true"]);
    let script = "import os, signal, sys\nsignal.signal(signal.SIGCHLD, signal.SIG_IGN)\n\
                  os.execv(sys.argv[1], sys.argv[1:])";
    let out = std::process::Command::new("python3")
        .args(["-c", script, BIN])
        .args(&args)
        .output()
        .unwrap();
    assert_exit(&out, 0);
}

#[test]
fn an_empty_program_is_not_found_and_a_missing_interpreter_cannot_execute() {
    let fx = Fixture::new();
    let out = fx.exec(&["--", ""]);
    assert_exit(&out, 127);
    let script = fx.t.write("script", "#!/no/such/interpreter\necho hi\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = fx.exec(&["--", script.to_str().unwrap()]);
    assert_exit(&out, 126);
    assert!(stderr(&out).contains("bad interpreter"), "{}", stderr(&out));
}
