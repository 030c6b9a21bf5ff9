//! The entrypoint: check (and with `--apply`, fix) the manifest, then become the runtime
//! identity and replace this process with the program.
//!
//! Privileges are dropped the way container runtimes drop them: setgroups with the
//! identity's groups, then setgid, then setuid, so that no capability survives; HOME comes
//! from passwd (or `/`). Then execve in the same process: the PID, the environment (HOME
//! aside), the standard streams and signal dispositions reach the program unchanged, and
//! under `docker run` it is PID 1 and receives SIGTERM itself.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::signal::{SigHandler, Signal, signal};

use crate::identity::Identity;

/// Exit code when the program exists but cannot be executed, as shells use it.
pub const NOT_EXECUTABLE: u8 = 126;
/// Exit code when the program is not found.
pub const NOT_FOUND: u8 = 127;

/// Refuses, before anything else happens, an identity this process cannot become: only
/// root can become someone else.
pub fn ensure_can_become(identity: &Identity) -> Result<()> {
    if nix::unistd::geteuid().is_root() || identity.is_current_process() {
        return Ok(());
    }
    bail!(
        "cannot run as uid {} gid {}: this process is uid {} gid {} and not root; start it \
         as root, or give --user the identity it already has",
        identity.uid,
        identity.gid,
        nix::unistd::geteuid(),
        nix::unistd::getegid()
    )
}

/// Becomes `identity` if needed and execs `argv`. Returns only on failure, with the exit
/// code to use.
pub fn exec(identity: &Identity, argv: &[OsString]) -> Result<ExitCode> {
    if !identity.is_current_process() {
        crate::privs::become_identity(identity)?;
    }
    // SAFETY: the tool is single-threaded; nothing reads the environment concurrently.
    unsafe { std::env::set_var("HOME", &identity.home) };
    crate::sys::restore_fd_limit();
    // Known gap: CMD keeps the caller's controlling terminal, so where the kernel still
    // allows TIOCSTI a program run as the user could push input to a root shell that
    // started it interactively (gosu and su-exec share this). setsid() would close that,
    // but would also take job control from an interactive `docker run -it`.
    // The Rust runtime ignores SIGPIPE for itself; the program gets the default back.
    // Known gap: a parent that started us with SIGPIPE ignored on purpose gets it reset to
    // the default in CMD, because std changes the disposition before main and stable Rust
    // offers no way to read the inherited one. Container runtimes start with the default.
    // SAFETY: restoring a default disposition installs no handler.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.context("resetting SIGPIPE")?;

    let args: Vec<CString> = argv.iter().map(|a| cstring(a)).collect::<Result<_>>()?;
    let program = &argv[0];
    let shown = crate::report::escape(program.as_bytes());
    let (err, tried) = if program.is_empty() {
        (Errno::ENOENT, None)
    } else if program.as_bytes().contains(&b'/') {
        (nix::unistd::execv(&args[0], &args).unwrap_err(), Some(args[0].clone()))
    } else {
        search_and_exec(program, &args)
    };
    let code = match (err, tried) {
        // ENOENT for a file that is there: its #! interpreter is missing.
        (Errno::ENOENT, Some(path)) if nix::sys::stat::stat(path.as_c_str()).is_ok() => {
            eprintln!("fs-preflight: {shown}: cannot execute: bad interpreter");
            NOT_EXECUTABLE
        }
        (Errno::ENOENT | Errno::ENOTDIR, _) => {
            eprintln!("fs-preflight: {shown}: command not found");
            NOT_FOUND
        }
        (e, _) => {
            eprintln!("fs-preflight: {shown}: cannot execute: {}", e.desc());
            NOT_EXECUTABLE
        }
    };
    Ok(ExitCode::from(code))
}

/// Tries each directory of PATH in turn, as execvp does, but reports EACCES (a file found
/// but not executable) over ENOENT so that the exit code tells the two apart.
/// Returns the error to report and the file it concerns, if one was found.
fn search_and_exec(program: &OsStr, args: &[CString]) -> (Errno, Option<CString>) {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut seen = (Errno::ENOENT, None);
    for dir in path.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let mut candidate = dir.to_vec();
        candidate.push(b'/');
        candidate.extend_from_slice(program.as_bytes());
        let Ok(candidate) = CString::new(candidate) else { continue };
        let found = || nix::sys::stat::stat(candidate.as_c_str()).is_ok();
        match nix::unistd::execv(&candidate, args).unwrap_err() {
            // EACCES also comes from a PATH directory this user cannot search (root's
            // /root/.cargo/bin after dropping privileges): that is "not found" unless the
            // file itself can be seen.
            Errno::ENOENT | Errno::ENOTDIR | Errno::EACCES if !found() => {}
            Errno::EACCES => seen = (Errno::EACCES, Some(candidate)),
            Errno::ENOENT if seen.1.is_none() => seen = (Errno::ENOENT, Some(candidate)),
            Errno::ENOENT | Errno::ENOTDIR => {}
            other => return (other, Some(candidate)),
        }
    }
    seen
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).context("an argument contains a NUL byte")
}
