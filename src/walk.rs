//! A recursive walk through descriptors that never follows a symlink and never leaves the
//! filesystem it starts on.
//!
//! Every entry is found by `fstatat(AT_SYMLINK_NOFOLLOW)` relative to its parent's
//! descriptor. A subdirectory is opened with O_NOFOLLOW relative to the same descriptor and
//! compared (device, inode, type) with that lstat before anyone sees it, so a directory
//! swapped for a symlink between the two calls is never entered. Non-directories are handed
//! to the visitor as (parent descriptor, name, lstat); a visitor that changes one must open
//! it itself with O_PATH|O_NOFOLLOW and compare again (see `apply`).
//!
//! Memory is one directory listing per level of depth, and one descriptor per level.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, fstat};

use crate::report::{plural, show};
use crate::sys;

/// One entry below the top, as the visitor sees it.
pub struct Item<'a> {
    pub parent: BorrowedFd<'a>,
    pub name: &'a CStr,
    /// Container path, for reports.
    pub path: &'a Path,
    pub st: &'a FileStat,
    /// For a directory: a descriptor opened for reading and verified against `st`.
    pub dir: Option<BorrowedFd<'a>>,
}

/// What the visitor wants after seeing a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Descend,
    /// Stop the whole walk (a verdict for the entry has been reached).
    Stop,
}

/// What a walk saw but did not visit.
#[derive(Debug, Default)]
pub struct Outcome {
    pub visited: u64,
    /// Other mounts below the top (directories or single files): not entered.
    pub mounts: Few<PathBuf>,
    /// Directories below the top that are manifest entries of their own: not entered.
    pub listed: Few<PathBuf>,
    /// Places that could not be read, with the reason.
    pub errors: Few<(PathBuf, Errno)>,
    pub stopped: bool,
}

/// The first few of something, and how many there were: a hostile tree can hold
/// millions of what a report lists, and memory must not grow with them.
#[derive(Debug)]
pub struct Few<T> {
    pub first: Vec<T>,
    pub total: usize,
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Few { first: Vec::new(), total: 0 }
    }
}

impl<T> Few<T> {
    const KEPT: usize = 20;

    pub fn push(&mut self, item: T) {
        self.total += 1;
        if self.first.len() < Self::KEPT {
            self.first.push(item);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl Few<PathBuf> {
    /// `a, b and 3 more`.
    pub fn list(&self) -> String {
        let shown: Vec<String> = self.first.iter().map(|p| show(p)).collect();
        match self.total - self.first.len() {
            0 => shown.join(", "),
            more => format!("{} and {more} more", shown.join(", ")),
        }
    }
}

impl Outcome {
    /// What the walk left out on purpose, in words, for a report.
    pub fn left_out(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.mounts.is_empty() {
            out.push(format!("other mounts not entered: {}", self.mounts.list()));
        }
        if !self.listed.is_empty() {
            out.push(format!("left to their own entries: {}", self.listed.list()));
        }
        out
    }

    /// What it could not read, in words, if anything.
    pub fn unreadable(&self) -> Option<String> {
        let (p, e) = self.errors.first.first()?;
        let what = plural(self.errors.total, "entry", "entries");
        Some(format!("{what} unreadable (first: {}: {})", show(p), e.desc()))
    }
}

/// One directory being read. Only its remaining names are kept: the path is built as the
/// walk goes, so memory grows with the depth, not with depth times path length.
struct Frame {
    /// The directory, for *at calls; its listing stream is closed once read, since a
    /// stream holds a 32 KiB buffer and a deep tree holds one frame per level.
    fd: OwnedFd,
    names: Vec<CString>,
}

/// Walks everything below `top` (a directory descriptor opened for reading). `path` is the
/// top's container path; `mount_points` are container paths of mounts, asked only where
/// the kernel cannot say whether an entry is a mount root; directories at `listed` paths
/// are entries of their own, counted and left to them.
pub fn walk(
    top: Dir,
    path: &Path,
    mount_points: &[PathBuf],
    listed: &[PathBuf],
    visit: &mut dyn FnMut(Item<'_>) -> Flow,
) -> Outcome {
    let mut out = Outcome::default();
    let top_dev = match fstat(top.as_fd()) {
        Ok(st) => st.st_dev,
        Err(e) => {
            out.errors.push((path.to_path_buf(), e));
            return out;
        }
    };
    let mut stack = Vec::new();
    match listing(top) {
        Ok(frame) => stack.push(frame),
        Err(e) => out.errors.push((path.to_path_buf(), e)),
    }
    // The path of the directory on top of the stack.
    let mut here = path.to_path_buf();
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.pop() else {
            stack.pop();
            if !stack.is_empty() {
                here.pop();
            }
            continue;
        };
        let child_path = here.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        let parent = frame.fd.as_fd();
        let (st, mount_root) = match sys::lstat_at(parent, name.as_c_str()) {
            Ok(found) => found,
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                out.errors.push((child_path, e));
                continue;
            }
        };
        // Another mount, of a directory or of a single file (a bind-mounted key or
        // ConfigMap item): its contents are not the tree's. The kernel's word decides; the
        // mount table is the fallback for kernels that cannot say.
        let mount = st.st_dev != top_dev
            || mount_root.unwrap_or_else(|| mount_points.contains(&child_path));
        if mount {
            out.mounts.push(child_path);
            continue;
        }
        // `listed` holds entries' paths as written and where their symlinks lead.
        if sys::is_dir(&st) && listed.contains(&child_path) {
            out.listed.push(child_path);
            continue;
        }
        if !sys::is_dir(&st) {
            out.visited += 1;
            let item = Item { parent, name: &name, path: &child_path, st: &st, dir: None };
            if visit(item) == Flow::Stop {
                out.stopped = true;
                return out;
            }
            continue;
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let child = match Dir::openat(parent, name.as_c_str(), flags, Mode::empty()) {
            Ok(d) => d,
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                out.errors.push((child_path, e));
                continue;
            }
        };
        match fstat(child.as_fd()) {
            Ok(now) if sys::same_inode(&st, &now) => {}
            _ => {
                out.errors.push((child_path, Errno::ESTALE));
                continue;
            }
        }
        out.visited += 1;
        let item =
            Item { parent, name: &name, path: &child_path, st: &st, dir: Some(child.as_fd()) };
        match visit(item) {
            Flow::Descend => {}
            Flow::Stop => {
                out.stopped = true;
                return out;
            }
        }
        match listing(child) {
            Ok(frame) => {
                stack.push(frame);
                here = child_path;
            }
            Err(e) => out.errors.push((child_path, e)),
        }
    }
    out
}

/// Reads a directory's names (without `.` and `..`), last name first.
fn listing(mut dir: Dir) -> Result<Frame, Errno> {
    let fd = nix::unistd::dup(dir.as_fd())?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    Ok(Frame { fd, names })
}
