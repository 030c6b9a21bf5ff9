//! Can the identity write here? Answered by trying, where the tool can act as the identity,
//! and by the kernel's permission rules otherwise.
//!
//! A probe creates a uniquely named file with O_CREAT|O_EXCL|O_NOFOLLOW in the directory
//! and removes it again. It exercises everything the kernel checks (mode bits, ACLs, LSMs,
//! read-only mounts, quotas of inodes) and so is the only answer that cannot be wrong. When
//! the tool runs as root for another identity, one forked child takes that identity
//! (setgroups, setgid, setuid) and probes every directory through descriptors the parent
//! opened, then reports one errno per directory over a pipe.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::identity::Identity;

pub const WRITE: u32 = 0o2;
pub const SEARCH: u32 = 0o1;

/// How writability is established for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// This process is the identity: probe in place.
    ProbeHere,
    /// Root, for another identity: probe in one forked child.
    ProbeAsChild,
    /// Neither, or probing was turned off: computed from mode bits, groups and ACLs.
    Compute,
}

impl Method {
    pub fn choose(identity: &Identity, allow_probe: bool) -> Method {
        if !allow_probe {
            Method::Compute
        } else if identity.is_current_process() {
            Method::ProbeHere
        } else if nix::unistd::geteuid().is_root() {
            Method::ProbeAsChild
        } else {
            Method::Compute
        }
    }
}

/// What the write probe found in one directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    /// A file was created and removed.
    Written,
    /// A file was created but could not be removed (an append-only directory): the
    /// identity can write, and a probe file is left behind.
    LeftBehind(Errno),
    /// No file could be created: the errno the kernel gave.
    Refused(Errno),
}

/// How long the forked probe may take before it is killed and writability is computed
/// instead: the child runs as the identity, which may stop it with a signal.
const PROBE_DEADLINE_MS: u16 = 10_000;

/// Runs the write probe on each directory, as `identity` per `method` (a probing one).
/// Err says why no probe could be made; the caller computes instead.
pub fn probe(
    method: Method,
    identity: &Identity,
    dirs: &[BorrowedFd<'_>],
) -> Result<Vec<Probed>, String> {
    match method {
        Method::ProbeHere => Ok(dirs.iter().map(|d| probe_one(*d)).collect()),
        Method::ProbeAsChild => probe_in_child(identity, dirs),
        Method::Compute => Err("probing is off".into()),
    }
}

fn probe_one(dir: BorrowedFd<'_>) -> Probed {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(".fs-preflight-probe.{}.{nanos:x}", std::process::id());
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(dir, name.as_str(), flags, Mode::from_bits_truncate(0o600)) {
        Err(e) => Probed::Refused(e),
        Ok(file) => {
            // One byte, not just a name: a filesystem out of data blocks (or over quota)
            // still takes an empty file, but not what the application will write.
            let wrote = nix::unistd::write(&file, b"x").map(drop);
            drop(file);
            match (unlinkat(dir, name.as_str(), UnlinkatFlags::NoRemoveDir), wrote) {
                (Ok(()), Ok(())) => Probed::Written,
                (Ok(()), Err(e)) => Probed::Refused(e),
                (Err(e), _) => Probed::LeftBehind(e),
            }
        }
    }
}

/// One i32 per directory on the pipe: 0 written, errno refused, -errno left behind.
fn encode(p: Probed) -> i32 {
    match p {
        Probed::Written => 0,
        Probed::Refused(e) => e as i32,
        Probed::LeftBehind(e) => -(e as i32),
    }
}

fn decode(code: i32) -> Probed {
    match code {
        0 => Probed::Written,
        c if c > 0 => Probed::Refused(Errno::from_raw(c)),
        c => Probed::LeftBehind(Errno::from_raw(-c)),
    }
}

fn probe_in_child(identity: &Identity, dirs: &[BorrowedFd<'_>]) -> Result<Vec<Probed>, String> {
    use nix::unistd::{ForkResult, fork, pipe};
    let (rx, tx) = pipe().map_err(|e| format!("pipe: {}", e.desc()))?;
    // SAFETY: the tool is single-threaded, so the child may allocate and use std freely;
    // it leaves through _exit and never returns into the parent's code.
    match unsafe { fork() }.map_err(|e| format!("fork: {}", e.desc()))? {
        ForkResult::Child => {
            drop(rx);
            let mut out = Vec::with_capacity(4 * (dirs.len() + 1));
            // Fully the identity, verified, before touching anything.
            match crate::privs::become_identity(identity) {
                Ok(()) => {
                    out.extend(0i32.to_le_bytes());
                    for dir in dirs {
                        out.extend(encode(probe_one(*dir)).to_le_bytes());
                    }
                }
                Err(e) => {
                    let errno = e.downcast_ref::<Errno>().copied().unwrap_or(Errno::EPERM);
                    out.extend((errno as i32).to_le_bytes());
                }
            }
            write_all(&tx, &out);
            // SAFETY: _exit skips the parent's atexit handlers and buffered output.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(tx);
            let answers = read_answers(&rx, 4 * (dirs.len() + 1));
            if answers.is_err() {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            }
            // ECHILD: started with SIGCHLD ignored, the child was reaped by the kernel.
            match nix::sys::wait::waitpid(child, None) {
                Ok(_) | Err(Errno::ECHILD) => {}
                Err(e) => return Err(format!("waiting for the probe: {}", e.desc())),
            }
            let bytes = answers?;
            let codes: Vec<i32> =
                bytes.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
            match codes.split_first() {
                Some((0, rest)) if rest.len() == dirs.len() => {
                    Ok(rest.iter().map(|&c| decode(c)).collect())
                }
                Some((&c, _)) if c != 0 => Err(format!(
                    "cannot take uid {} for the probe: {}",
                    identity.uid,
                    Errno::from_raw(c).desc()
                )),
                _ => Err("the probe ended without answering".into()),
            }
        }
    }
}

fn write_all(fd: &impl std::os::fd::AsFd, mut rest: &[u8]) {
    while !rest.is_empty() {
        match nix::unistd::write(fd, rest) {
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
}

/// Reads the child's answers until it closes the pipe, or until the deadline.
fn read_answers(rx: &std::os::fd::OwnedFd, expected: usize) -> Result<Vec<u8>, String> {
    use nix::poll::{PollFd, PollFlags, poll};
    use std::os::fd::AsFd;
    let started = std::time::Instant::now();
    let mut bytes = Vec::with_capacity(expected);
    let mut buf = [0u8; 4096];
    loop {
        let spent = started.elapsed().as_millis().min(u128::from(PROBE_DEADLINE_MS)) as u16;
        let left = PROBE_DEADLINE_MS - spent;
        let mut fds = [PollFd::new(rx.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, left) {
            Ok(0) => {
                return Err(format!(
                    "the probe did not answer within {} s",
                    PROBE_DEADLINE_MS / 1000
                ));
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("waiting for the probe: {}", e.desc())),
        }
        match nix::unistd::read(rx, &mut buf) {
            Ok(0) => return Ok(bytes),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Err(format!("reading the probe's answers: {}", e.desc())),
        }
    }
}

/// A POSIX access ACL, as stored in `system.posix_acl_access`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Acl {
    users: Vec<(u32, u32)>,
    groups: Vec<(u32, u32)>,
    mask: Option<u32>,
}

const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;

impl Acl {
    /// Reads the access ACL of an open file, if it has one beyond its mode bits.
    /// Known gap: it is read through /proc; without /proc mounted, ACLs are not seen and
    /// computed writability follows the mode bits alone (a probe is not affected).
    pub fn read(fd: BorrowedFd<'_>) -> Option<Acl> {
        // getxattr through the descriptor's /proc link reaches exactly the opened inode,
        // and works for O_PATH descriptors, which fgetxattr refuses.
        let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let name = c"system.posix_acl_access";
        // Ask the size first: an ACL with many entries is larger than any fixed buffer,
        // and one that did not fit would read as no ACL at all.
        // SAFETY: both strings are NUL-terminated; a null buffer of size 0 asks the size.
        let size = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 4 {
            return None;
        }
        let mut buf = vec![0u8; size as usize + 64];
        // SAFETY: buf is writable for its length.
        let n = unsafe {
            libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        if n < 4 {
            return None;
        }
        Acl::parse(&buf[..n as usize])
    }

    fn parse(bytes: &[u8]) -> Option<Acl> {
        let (header, body) = bytes.split_at(4);
        if u32::from_le_bytes(header.try_into().ok()?) != 2 {
            return None;
        }
        let mut acl = Acl::default();
        for e in body.chunks_exact(8) {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u32::from(u16::from_le_bytes([e[2], e[3]]));
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            match tag {
                ACL_USER => acl.users.push((id, perm)),
                ACL_GROUP => acl.groups.push((id, perm)),
                ACL_MASK => acl.mask = Some(perm),
                _ => {}
            }
        }
        Some(acl)
    }
}

/// Whether `identity` holds every permission in `want` (a mask of WRITE and SEARCH) on a
/// file of this owner, group and mode, following the kernel's order: owner class, then
/// named users, then groups, then others. Root passes, as with CAP_DAC_OVERRIDE.
pub fn permits(identity: &Identity, st: &FileStat, acl: Option<&Acl>, want: u32) -> bool {
    if identity.uid == 0 {
        return true;
    }
    let mode = st.st_mode;
    let has = |bits: u32| bits & want == want;
    if identity.uid == st.st_uid {
        return has(mode >> 6);
    }
    let Some(acl) = acl else {
        return if identity.in_group(st.st_gid) { has(mode >> 3) } else { has(mode) };
    };
    // With an ACL, the group bits of the mode are the mask.
    let mask = acl.mask.unwrap_or(mode >> 3);
    if let Some((_, perm)) = acl.users.iter().find(|(uid, _)| *uid == identity.uid) {
        return has(perm & mask);
    }
    let mut matched = false;
    let owning = identity.in_group(st.st_gid).then_some(mode >> 3);
    let named = acl.groups.iter().filter(|(g, _)| identity.in_group(*g)).map(|(_, p)| *p);
    for perm in owning.into_iter().chain(named) {
        matched = true;
        if has(perm & mask) {
            return true;
        }
    }
    !matched && has(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(uid: u32, gid: u32, mode: u32) -> FileStat {
        // SAFETY: FileStat is plain old data; all-zero is a valid value.
        let mut st: FileStat = unsafe { std::mem::zeroed() };
        st.st_uid = uid;
        st.st_gid = gid;
        st.st_mode = libc::S_IFDIR | mode;
        st
    }

    fn who(uid: u32, groups: &[u32]) -> Identity {
        Identity { uid, gid: groups[0], groups: groups.to_vec(), name: None, home: "/".into() }
    }

    const WX: u32 = WRITE | SEARCH;

    #[test]
    fn classes_are_exclusive() {
        // The owner class applies even when the group class would allow more.
        assert!(!permits(&who(5, &[5]), &stat(5, 5, 0o070), None, WX));
        assert!(permits(&who(6, &[5]), &stat(5, 5, 0o070), None, WX));
        assert!(!permits(&who(6, &[6]), &stat(5, 5, 0o070), None, WX));
        assert!(permits(&who(6, &[6]), &stat(5, 5, 0o703), None, WX));
        assert!(permits(&who(0, &[0]), &stat(5, 5, 0o000), None, WX));
    }

    #[test]
    fn acl_named_entries_are_masked() {
        let acl = Acl { users: vec![(7, 7)], groups: vec![(9, 3)], mask: Some(0o5) };
        assert!(!permits(&who(7, &[7]), &stat(1, 1, 0o750), Some(&acl), WX));
        let acl = Acl { mask: Some(0o7), ..acl };
        assert!(permits(&who(7, &[7]), &stat(1, 1, 0o750), Some(&acl), WX));
        assert!(permits(&who(8, &[9]), &stat(1, 1, 0o750), Some(&acl), WX));
        // A matching group entry that denies stops the search: others are not consulted.
        assert!(!permits(&who(8, &[1]), &stat(1, 1, 0o757), Some(&acl), WX));
    }

    #[test]
    fn acl_bytes_parse() {
        let mut bytes = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [(1u16, 7u16, u32::MAX), (2, 6, 1000), (0x10, 7, u32::MAX)] {
            bytes.extend(tag.to_le_bytes());
            bytes.extend(perm.to_le_bytes());
            bytes.extend(id.to_le_bytes());
        }
        let acl = Acl::parse(&bytes).unwrap();
        assert_eq!(acl.users, vec![(1000, 6)]);
        assert_eq!(acl.mask, Some(7));
    }
}
