//! Walks a manifest path one component at a time from the root, through descriptors.
//!
//! This is the one place that turns a path into something to look at or change. Each
//! directory is opened with O_PATH|O_DIRECTORY|O_NOFOLLOW relative to its parent and its
//! identity (device, inode) compared with the lstat that chose it, so what later code holds
//! is exactly what was inspected. Symlinks in the middle of a path are read and followed by
//! hand: an absolute target restarts at the tree's root (which makes `--root` behave like
//! the container's `/`), and under [`Links::TrustedOnly`] only links that root placed in a
//! directory nobody else may write are followed. The entry itself is never followed.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};

use crate::sys;

/// How symlinks met on the way to an entry are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow every link (inspection only: nothing is changed through what is found).
    Follow,
    /// Follow a link only when it and the directory holding it belong to root and that
    /// directory is not writable by anyone else (mutation: a user-planted link is refused).
    TrustedOnly,
}

/// The tree that plays the container's `/`.
#[derive(Debug)]
pub struct Root {
    /// Where the tree is on this host; `/` unless `--root`.
    pub host: PathBuf,
    fd: OwnedFd,
}

impl Root {
    pub fn open(host: &Path) -> Result<Root> {
        let host = host
            .canonicalize()
            .with_context(|| format!("cannot use {} as the root", host.display()))?;
        let fd = open(&host, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .with_context(|| format!("cannot open {} as the root", host.display()))?;
        Ok(Root { host, fd })
    }

    /// Where a container path lies on this host.
    pub fn host_path(&self, path: &Path) -> PathBuf {
        self.host.join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// A directory reached on the way, held open.
#[derive(Debug)]
pub struct Dir {
    /// Its path as the container sees it, free of symlinks.
    pub path: PathBuf,
    pub fd: OwnedFd,
    pub st: FileStat,
}

/// A symlink that was followed.
#[derive(Debug, Clone)]
pub struct Link {
    pub at: PathBuf,
    pub target: PathBuf,
    /// Placed by root where only root may write: the only kind `apply` follows.
    pub trusted: bool,
}

/// What was found at the end of the path.
#[derive(Debug)]
pub enum State {
    /// A directory: `Resolution::entry` holds it.
    Directory,
    /// Nothing there: `missing` are the components still to be created below `parent`.
    Missing { missing: Vec<OsString> },
    /// Something that is not a directory, and not a symlink.
    NotDirectory { st: FileStat },
    /// The entry itself is a symlink, never followed.
    Symlink { target: PathBuf },
    /// The walk could not go on at `at`.
    Blocked { at: PathBuf, reason: String },
}

#[derive(Debug)]
pub struct Resolution {
    /// Every directory that was looked into, in order, without repeats: the ancestors,
    /// including those a symlink led through.
    pub searched: Vec<Dir>,
    /// The directory at the end of the path, when it is one.
    pub entry: Option<Dir>,
    pub links: Vec<Link>,
    pub state: State,
}

impl Resolution {
    /// The directory that holds the entry (or where creation would start, when missing).
    pub fn parent(&self) -> &Dir {
        self.searched.last().expect("the root is always searched")
    }

    /// The entry's path with every symlink resolved.
    pub fn resolved_path(&self) -> PathBuf {
        match (&self.entry, &self.state) {
            (Some(d), _) => d.path.clone(),
            (None, State::Missing { missing }) => {
                let mut p = self.parent().path.clone();
                p.extend(missing);
                p
            }
            _ => self.parent().path.clone(),
        }
    }
}

/// How many symlinks one path may pass through, as the kernel allows.
const MAX_LINKS: usize = 40;

/// Resolves an absolute container path below `root`.
pub fn resolve(root: &Root, path: &Path, links: Links) -> Result<Resolution> {
    let root_fd = nix::unistd::dup(root.fd.as_fd()).context("dup of the root descriptor")?;
    let root_st = fstat(&root_fd).context("stat of the root")?;
    let mut stack = vec![Dir { path: PathBuf::from("/"), fd: root_fd, st: root_st }];
    let mut res = Resolution {
        searched: Vec::new(),
        entry: None,
        links: Vec::new(),
        state: State::Directory,
    };
    let mut pending: Vec<OsString> = components(path.as_os_str()).rev().collect();
    let mut followed = 0;

    while let Some(name) = pending.pop() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let top = stack.last().expect("stack holds the root");
        remember(&mut res.searched, top)?;
        let here = top.path.join(&name);
        let last = pending.is_empty();
        let st = match fstatat(&top.fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                let mut missing = vec![name];
                missing.extend(pending.drain(..).rev().filter(|c| c != "."));
                res.state = State::Missing { missing };
                return Ok(res);
            }
            Err(e) => return Ok(blocked(res, here, e.desc())),
        };
        if sys::is_symlink(&st) {
            let target = PathBuf::from(readlinkat(&top.fd, name.as_os_str()).context("readlink")?);
            if last {
                res.state = State::Symlink { target };
                return Ok(res);
            }
            followed += 1;
            if followed > MAX_LINKS {
                return Ok(blocked(res, here, "too many levels of symbolic links"));
            }
            let trusted = trusted_link(&st, &top.st);
            if links == Links::TrustedOnly && !trusted {
                let why = format!(
                    "symlink to {} is not trusted: only links that root owns, in a directory \
                     only root may write, are followed when changing things",
                    target.display()
                );
                return Ok(blocked(res, here, &why));
            }
            res.links.push(Link { at: here, target: target.clone(), trusted });
            if target.is_absolute() {
                stack.truncate(1);
            }
            pending.extend(components(target.as_os_str()).rev());
            continue;
        }
        if !sys::is_dir(&st) {
            if last {
                res.state = State::NotDirectory { st };
                return Ok(res);
            }
            return Ok(blocked(
                res,
                here,
                &format!("is a {}, not a directory", sys::kind_name(&st)),
            ));
        }
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(&top.fd, name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => return Ok(blocked(res, here, e.desc())),
        };
        let opened = fstat(&fd).context("fstat")?;
        if !sys::same_inode(&st, &opened) {
            return Ok(blocked(res, here, "changed while it was being inspected"));
        }
        stack.push(Dir { path: here, fd, st: opened });
    }
    let end = stack.pop().expect("stack holds the root");
    if stack.is_empty() {
        // Only `/` resolves to the root itself, and the manifest refuses `/`; a path of
        // `..` links can still get here.
        return Ok(blocked(res, end.path, "resolves to the root directory itself"));
    }
    res.entry = Some(end);
    Ok(res)
}

fn blocked(mut res: Resolution, at: PathBuf, reason: &str) -> Resolution {
    res.state = State::Blocked { at, reason: reason.to_string() };
    res
}

/// Adds a directory to the searched list unless it is already there.
fn remember(searched: &mut Vec<Dir>, dir: &Dir) -> Result<()> {
    if searched.iter().any(|d| sys::same_inode(&d.st, &dir.st)) {
        return Ok(());
    }
    let fd = nix::unistd::dup(dir.fd.as_fd()).context("dup")?;
    searched.push(Dir { path: dir.path.clone(), fd, st: dir.st });
    Ok(())
}

fn trusted_link(link: &FileStat, holder: &FileStat) -> bool {
    let others_write = holder.st_mode & 0o022 != 0 && holder.st_mode & libc::S_ISVTX as u32 == 0;
    link.st_uid == 0 && holder.st_uid == 0 && !others_write
}

fn components(path: &OsStr) -> impl DoubleEndedIterator<Item = OsString> + '_ {
    path.as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
}

/// Borrow helper for code that holds a `Dir` and wants its descriptor.
impl Dir {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
