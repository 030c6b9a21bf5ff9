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
use std::rc::Rc;

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
        let shown = crate::report::show(host);
        let given = std::path::absolute(host)?;
        let host =
            host.canonicalize().with_context(|| format!("cannot use {shown} as the root"))?;
        if nix::unistd::geteuid().is_root() {
            // Both the way as written (its symlinks) and where it leads.
            refuse_unsafe_route(&given)?;
            refuse_unsafe_route(&host)?;
        }
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = open(&host, flags, Mode::empty())
            .with_context(|| format!("cannot open {shown} as the root"))?;
        Ok(Root { host, fd })
    }

    /// Where a container path lies on this host.
    pub fn host_path(&self, path: &Path) -> PathBuf {
        self.host.join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// Root reaches the tree by its host path once, when it opens it. Every directory above it
/// must be root's alone (or sticky), or its owner could swap a component for a symlink,
/// before or while it is opened, and point the whole run at another tree.
fn refuse_unsafe_route(host: &Path) -> Result<()> {
    for (i, step) in host.ancestors().enumerate() {
        let st = nix::sys::stat::lstat(step)
            .with_context(|| format!("cannot stat {}", crate::report::show(step)))?;
        // A symlink's own mode means nothing; its owner and its directory's do.
        let others_write =
            !sys::is_symlink(&st) && st.st_mode & 0o022 != 0 && st.st_mode & libc::S_ISVTX == 0;
        // The root itself may be anyone's directory, but not anyone's symlink.
        let judged = i > 0 || sys::is_symlink(&st);
        if judged && (st.st_uid != 0 || others_write) {
            anyhow::bail!(
                "refusing --root {}: {} on its way belongs to uid {} (mode {:04o}), who could \
                 swap it for a symlink and point this root run at another tree",
                crate::report::show(host),
                crate::report::show(step),
                st.st_uid,
                st.st_mode & 0o7777
            );
        }
    }
    Ok(())
}

/// A directory reached on the way, held open.
#[derive(Debug)]
pub struct Dir {
    /// Its path as the container sees it, free of symlinks.
    pub path: PathBuf,
    /// Shared: the same directory is both on the walk's stack and in `searched`.
    pub fd: Rc<OwnedFd>,
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
    let root_fd = Rc::new(nix::unistd::dup(root.fd.as_fd()).context("dup of the root")?);
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
        let st = match fstatat(top.fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
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
            // Replaced since the lstat (a race someone else runs): a verdict, not an error.
            let target = match readlinkat(top.fd(), name.as_os_str()) {
                Ok(target) => PathBuf::from(target),
                Err(_) => return Ok(blocked(res, here, "changed while it was being inspected")),
            };
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
                    crate::report::show(&target)
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
        let fd = match openat(top.fd(), name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => return Ok(blocked(res, here, e.desc())),
        };
        let opened = fstat(&fd).context("fstat")?;
        if !sys::same_inode(&st, &opened) {
            return Ok(blocked(res, here, "changed while it was being inspected"));
        }
        stack.push(Dir { path: here, fd: Rc::new(fd), st: opened });
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

/// Adds a directory to the end of the searched list, or moves it there when a symlink
/// led back to it: the last one is always where the walk looked last, the entry's parent.
fn remember(searched: &mut Vec<Dir>, dir: &Dir) -> Result<()> {
    if let Some(i) = searched.iter().position(|d| sys::same_inode(&d.st, &dir.st)) {
        let again = searched.remove(i);
        searched.push(again);
        return Ok(());
    }
    searched.push(Dir { path: dir.path.clone(), fd: Rc::clone(&dir.fd), st: dir.st });
    Ok(())
}

fn trusted_link(link: &FileStat, holder: &FileStat) -> bool {
    let others_write = holder.st_mode & 0o022 != 0 && holder.st_mode & libc::S_ISVTX == 0;
    link.st_uid == 0 && holder.st_uid == 0 && !others_write
}

fn components(path: &OsStr) -> impl DoubleEndedIterator<Item = OsString> + '_ {
    path.as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
}

/// Reads a small regular file at a container path, as the container would see it: the
/// path and any symlink on the way resolve inside the root. Anything but a regular file
/// (a FIFO that would block, a device that never ends) is refused, and so is a file over
/// `cap` bytes. None when the file does not exist.
pub fn read_file(root: &Root, path: &Path, cap: u64) -> Result<Option<FileRead>> {
    let mut path = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            anyhow::bail!("{} is not a file", crate::report::show(&path));
        };
        let res = resolve(root, parent, Links::Follow)?;
        let Some(dir) = res.entry else { return Ok(None) };
        let st = match fstatat(dir.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot stat {}", crate::report::show(&path)));
            }
        };
        if sys::is_symlink(&st) {
            let target = PathBuf::from(readlinkat(dir.fd(), name).context("readlink")?);
            path = if target.is_absolute() { target } else { dir.path.join(target) };
            continue;
        }
        if !sys::is_regular(&st) {
            anyhow::bail!(
                "{} is a {}, not a regular file",
                crate::report::show(&path),
                sys::kind_name(&st)
            );
        }
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = openat(dir.fd(), name, flags, Mode::empty())
            .with_context(|| format!("cannot open {}", crate::report::show(&path)))?;
        if !sys::same_inode(&st, &fstat(&fd)?) {
            anyhow::bail!("{} changed while being read", crate::report::show(&path));
        }
        let bytes = read_capped(std::fs::File::from(fd), cap, &path)?;
        return Ok(Some(FileRead { bytes, st, dir_st: dir.st }));
    }
    anyhow::bail!("{}: too many levels of symbolic links", crate::report::show(&path))
}

/// A file read by [`read_file`], with the stat of it and of its directory.
pub struct FileRead {
    pub bytes: Vec<u8>,
    pub st: FileStat,
    pub dir_st: FileStat,
}

/// Reads at most `cap` bytes; more is an error, not a truncation.
pub fn read_capped(file: std::fs::File, cap: u64, path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", crate::report::show(path)))?;
    if bytes.len() as u64 > cap {
        anyhow::bail!("{} is larger than {} MiB", crate::report::show(path), cap >> 20);
    }
    Ok(bytes)
}

/// Borrow helper for code that holds a `Dir` and wants its descriptor.
impl Dir {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
