//! Converges the tree to the manifest: creates what is missing, chowns and chmods only what
//! differs, then checks.
//!
//! The run has three phases. Planning resolves every entry (following only symlinks root
//! placed, see `resolve::Links::TrustedOnly`) and refuses, before anything changes, what
//! must never be touched: kernel filesystems under a recursive entry (an error, exit 2),
//! symlinked entries, ids the user namespace cannot map, read-only mounts. Acting changes
//! each remaining entry through descriptors verified against what was planned; a change is
//! made only when a fresh stat says the value differs, so a second run makes no chown or
//! chmod call at all. Checking then runs the ordinary checks with writability computed,
//! not probed: a probe writes into every directory, which would defeat "change nothing
//! that is already right" (and copy directories up into a new overlayfs layer).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, mkdirat};

use crate::access::Method;
use crate::check::{self, Context, Wanted};
use crate::cli::Setup;
use crate::manifest::{self, Entry};
use crate::policy::{self, Meta};
use crate::report::{Action, Change, Check, CheckKind, Report, Status, plural, show};
use crate::resolve::{self, Links, Resolution, State};
use crate::sys::{self, IdMap};
use crate::walk::{self, Few, Flow, Item};

/// Options of one apply run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub dry_run: bool,
    /// Print each change to stderr as it is made.
    pub log: bool,
}

/// What happened to one entry.
#[derive(Debug, Default)]
struct Outcome {
    /// The first changes, for the report; the rest are counted in `not_listed`, so that
    /// memory does not grow with the size of the tree.
    changes: Vec<Change>,
    not_listed: usize,
    /// Why something the manifest asks was not done; each makes the entry fail.
    refusals: Vec<String>,
    /// Choices made where the manifest was silent.
    notes: Vec<String>,
}

/// How many changes an entry's report lists; more are counted (with --verbose, each is
/// still logged as it happens).
const LISTED_CHANGES: usize = 1000;

/// Process-wide facts that decide what may be attempted.
struct Powers {
    euid: u32,
    egid: u32,
    chown: bool,
    uid_map: IdMap,
    gid_map: IdMap,
}

/// Applies the manifest and returns the report of the check that follows.
pub fn run(setup: &Setup, opts: Options) -> Result<Report> {
    let ctx = Context::new(setup, Method::Compute);
    let powers = Powers {
        euid: nix::unistd::geteuid().as_raw(),
        egid: nix::unistd::getegid().as_raw(),
        chown: sys::can_chown(),
        uid_map: IdMap::read("uid_map"),
        gid_map: IdMap::read("gid_map"),
    };

    let plans = setup
        .entries
        .iter()
        .map(|e| resolve::resolve(&setup.root, Path::new(&e.path), Links::TrustedOnly))
        .collect::<Result<Vec<_>>>()?;
    ctx.learn_resolved(&setup.entries, &plans)?;
    for (entry, res) in setup.entries.iter().zip(&plans) {
        if let (true, Some(fs)) = (entry.recursive, kernel_filesystem(&ctx, res)) {
            bail!(
                "{} (resolved: {}) is on {fs}, a kernel filesystem: refused for recursive work",
                show(Path::new(&entry.path)),
                show(&res.resolved_path())
            );
        }
    }
    // One directory under two names would be set to each entry's values in turn, forever.
    let mut same: Vec<Option<usize>> = vec![None; plans.len()];
    for (i, res) in plans.iter().enumerate() {
        let missing = |r: &Resolution| matches!(r.state, State::Missing { .. });
        same[i] = plans[..i].iter().position(|other| match (&other.entry, &res.entry) {
            (Some(o), Some(d)) => sys::same_inode(&o.st, &d.st),
            // Neither there yet: where the symlinks lead decides.
            _ if missing(other) && missing(res) => other.resolved_path() == res.resolved_path(),
            _ => false,
        });
    }

    // Parents before children, so that a listed parent is created with its own values.
    let mut order: Vec<usize> = (0..setup.entries.len()).collect();
    order.sort_by_key(|&i| setup.entries[i].path.matches('/').count());
    let mut outcomes: Vec<Outcome> = (0..setup.entries.len()).map(|_| Outcome::default()).collect();
    for i in order {
        let entry = &setup.entries[i];
        // An earlier entry may have created this one's parents: plan again from the disk.
        let res = match plans[i].state {
            State::Missing { .. } => {
                Some(resolve::resolve(&setup.root, Path::new(&entry.path), Links::TrustedOnly)?)
            }
            _ => None,
        };
        let res = res.as_ref().unwrap_or(&plans[i]);
        let mut worker = Worker { ctx: &ctx, entry, powers: &powers, opts, out: &mut outcomes[i] };
        match same[i] {
            Some(first) => worker.refuse(format!(
                "{} is the same directory as {}: list it once",
                worker.shown(),
                show(Path::new(&setup.entries[first].path))
            )),
            None => worker.apply(res),
        }
    }

    // Known gap: a recursive entry is walked twice, once to apply and once by this check
    // to prove the result (about 2 lstat per entry in all, no chown or chmod on a
    // compliant tree). Reusing the apply walk's findings would halve it.
    let mut entries = check::check_all(&ctx, &setup.entries)?;
    for (report, outcome) in entries.iter_mut().zip(outcomes) {
        if !outcome.refusals.is_empty() {
            let message = outcome.refusals.join("; ");
            report.checks.push(Check::new(CheckKind::Apply, Status::Fail, message));
            report.status = Status::Fail;
            // apply has just run: suggesting it again would loop. The refusal says why.
            report.fixes.retain(|f| !f.command.contains("fs-preflight apply"));
        }
        report.notes.extend(outcome.notes);
        report.changes = Some(outcome.changes);
        report.changes_not_listed = outcome.not_listed;
    }
    let mut report =
        Report::new("apply", &setup.root.host, &setup.identity, ctx.writability(), entries);
    report.dry_run = opts.dry_run;
    Ok(report)
}

/// Which kernel filesystem recursive work on this entry would reach, if any: by where its
/// path leads (under /proc, /sys or /dev, whether it exists yet or not), by statfs type,
/// or by the mount's type (devtmpfs says it is tmpfs to statfs).
fn kernel_filesystem<'c>(ctx: &'c Context<'_>, res: &Resolution) -> Option<&'c str> {
    let resolved = res.resolved_path().to_string_lossy().into_owned();
    let by_path = manifest::PSEUDO_TREES.into_iter().find(|t| manifest::is_within(&resolved, t));
    let dir = res.entry.as_ref();
    by_path.or_else(|| dir.and_then(|d| sys::pseudo_filesystem(d.fd()))).or_else(|| {
        let mount = dir.and_then(|d| ctx.mount_of(&d.path))?;
        sys::PSEUDO_TYPES.contains(&mount.fstype.as_str()).then_some(mount.fstype.as_str())
    })
}

struct Worker<'a, 'c> {
    ctx: &'a Context<'c>,
    entry: &'a Entry,
    powers: &'a Powers,
    opts: Options,
    out: &'a mut Outcome,
}

impl Worker<'_, '_> {
    fn apply(&mut self, res: &Resolution) {
        let entry = self.entry;
        let current = res.entry.as_ref().map(|d| Meta::of(&d.st));
        let target = policy::target(entry, self.ctx.identity, current);
        match &res.state {
            State::Symlink { target, .. } => {
                return self.refuse(format!(
                    "{} is a symlink to {}: refused, a symlink entry is never followed or changed",
                    self.shown(),
                    show(target)
                ));
            }
            State::NotDirectory { st } => {
                return self.refuse(format!(
                    "{} is a {}: refused, it is not removed",
                    self.shown(),
                    sys::kind_name(st)
                ));
            }
            State::Blocked { at, reason } => {
                return self.refuse(format!(
                    "cannot reach {}: {} {reason}",
                    self.shown(),
                    show(at)
                ));
            }
            State::Missing { .. } if !entry.create => {
                return self.refuse(format!("{} is missing and create = false", self.shown()));
            }
            _ => {}
        }
        let wanted = Wanted::of(entry);
        // Only ids that are to be set: an unchanged owner may be the overflow id of a
        // user namespace, which is fine to leave as it is.
        let mut ids = Vec::new();
        if current.is_none_or(|c| c.uid != target.meta.uid) {
            ids.push((target.meta.uid, true));
        }
        if current.is_none_or(|c| c.gid != target.meta.gid) {
            ids.push((target.meta.gid, false));
        }
        if entry.recursive {
            ids.extend(wanted.owner.map(|u| (u, true)));
            ids.extend(wanted.group.map(|g| (g, false)));
        }
        for (id, is_uid) in ids {
            let (map, what) =
                if is_uid { (&self.powers.uid_map, "uid") } else { (&self.powers.gid_map, "gid") };
            if !map.contains(id) {
                return self.refuse(format!(
                    "{what} {id} is not mapped in this user namespace: nothing was changed for {}",
                    self.shown()
                ));
            }
        }
        let dir = match (&res.entry, &res.state) {
            (Some(dir), _) => {
                if current != Some(target.meta) && sys::is_read_only(dir.fd()) {
                    return self.refuse_read_only(&dir.path);
                }
                self.converge(dir.fd(), &dir.path, &dir.st)
            }
            (None, State::Missing { missing }) => {
                let parent = res.parent();
                if sys::is_read_only(parent.fd()) {
                    return self.refuse_read_only(&parent.path);
                }
                self.out.notes.extend(target.chosen.iter().cloned());
                self.create(parent.fd(), &parent.path, missing, target.meta)
            }
            _ => None,
        };
        if let (true, false, Some(dir)) = (entry.recursive, wanted.is_empty(), dir) {
            self.recurse(dir, &res.resolved_path(), &wanted);
        }
    }

    /// The entry's path, escaped for messages.
    fn shown(&self) -> String {
        show(Path::new(&self.entry.path))
    }

    fn refuse(&mut self, why: String) {
        self.out.refusals.push(why);
    }

    fn refuse_read_only(&mut self, at: &Path) {
        let point = self.ctx.mount_label(at);
        self.refuse(format!(
            "{} is on a read-only mount at {point}: nothing can be changed",
            self.shown()
        ));
    }

    fn log(&self, change: &Change) {
        if self.opts.log {
            let verb = if self.opts.dry_run { "would" } else { "did" };
            let before = change.before.as_ref().map(|b| format!("{b} -> ")).unwrap_or_default();
            eprintln!(
                "fs-preflight: {verb} {} {}: {before}{}",
                change.action.name(),
                change.path,
                change.after
            );
        }
    }

    fn record(&mut self, action: Action, path: &Path, before: Option<String>, after: String) {
        let listed = self.out.changes.len() < LISTED_CHANGES;
        if !listed {
            self.out.not_listed += 1;
        }
        if listed || self.opts.log {
            let change = Change { action, path: show(path), before, after };
            self.log(&change);
            if listed {
                self.out.changes.push(change);
            }
        }
    }

    /// Creates the missing components below `parent`; intermediate ones get root:root 0755
    /// (or this process's ids when it is not root). Returns the last one, opened; None
    /// when it was refused, or only planned (a dry run: there is nothing below it yet).
    fn create(
        &mut self,
        parent: BorrowedFd<'_>,
        parent_path: &Path,
        missing: &[std::ffi::OsString],
        target: Meta,
    ) -> Option<OwnedFd> {
        let mut path = parent_path.to_path_buf();
        let mut holder: Option<OwnedFd> = None;
        let intermediate = Meta { uid: 0, gid: 0, mode: 0o755 };
        for (i, name) in missing.iter().enumerate() {
            path.push(name);
            let last = i + 1 == missing.len();
            let mut meta = if last { target } else { intermediate };
            if !self.powers.chown {
                // Without CAP_CHOWN, what this process creates is its own.
                meta.uid = self.powers.euid;
                meta.gid = self.powers.egid;
            }
            if self.opts.dry_run {
                self.record(Action::Create, &path, None, ids_mode(meta));
                continue;
            }
            let at = holder.as_ref().map_or(parent, |h| h.as_fd());
            let made_at = now_seconds();
            // Created private, then given owner and mode: never briefly open to others.
            if let Err(e) = mkdirat(at, name.as_os_str(), Mode::from_bits_truncate(0o700)) {
                self.refuse(format!("cannot create {}: {}", show(&path), e.desc()));
                return None;
            }
            self.record(Action::Create, &path, None, ids_mode(meta));
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = match openat(at, name.as_os_str(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) => {
                    self.refuse(format!(
                        "cannot open {} after creating it: {}",
                        show(&path),
                        e.desc()
                    ));
                    return None;
                }
            };
            if let Err(e) = self.set(fd.as_fd(), meta, made_at) {
                self.refuse(format!(
                    "cannot set {} on new {}: {}",
                    ids_mode(meta),
                    show(&path),
                    e.desc()
                ));
                return None;
            }
            holder = Some(fd);
        }
        if !self.powers.chown && (target.uid, target.gid) != (self.powers.euid, self.powers.egid) {
            self.refuse(format!(
                "chown {}:{} {} needs root (CAP_CHOWN)",
                target.uid,
                target.gid,
                self.shown()
            ));
        }
        holder
    }

    /// Sets owner, group and mode on a directory this run just made, and confirms them.
    fn set(&self, fd: BorrowedFd<'_>, meta: Meta, made_at: i64) -> Result<(), Errno> {
        if !just_made(fd, self.powers.euid, made_at)? {
            return Err(Errno::ESTALE);
        }
        if self.powers.chown {
            sys::chown_fd(fd, Some(meta.uid), Some(meta.gid))?;
        }
        sys::chmod_fd(fd, meta.mode)?;
        let now = fstat(fd)?;
        if now.st_mode & 0o7777 != meta.mode {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// Brings an existing directory to `target`, changing only what differs. Returns the
    /// directory opened for reading (for a recursive walk), or None when refused.
    fn converge(
        &mut self,
        held: BorrowedFd<'_>,
        path: &Path,
        planned: &FileStat,
    ) -> Option<OwnedFd> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = match openat(held, ".", flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                self.refuse(format!("cannot open {}: {}", show(path), e.desc()));
                return None;
            }
        };
        match fstat(&fd) {
            Ok(st) if sys::same_inode(&st, planned) => {}
            _ => {
                self.refuse(format!("{} changed while being applied", show(path)));
                return None;
            }
        }
        let Ok(now) = fstat(&fd) else { return Some(fd) };
        let target = policy::target(self.entry, self.ctx.identity, Some(Meta::of(&now)));
        self.out.notes.extend(target.chosen);
        let t = target.meta;
        self.change_one(fd.as_fd(), path, t.uid, t.gid, Some(t.mode), false);
        Some(fd)
    }

    /// chown (if owner or group differ) then chmod (if the mode differs) on one verified
    /// descriptor. A regular file that changes owner keeps no setuid/setgid bit unless
    /// `mode` asks for it. Returns false when the entry must stop (read-only filesystem).
    fn change_one(
        &mut self,
        fd: BorrowedFd<'_>,
        path: &Path,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
        regular: bool,
    ) -> bool {
        let Ok(st) = fstat(fd) else { return true };
        let before = Meta::of(&st);
        let reown = (before.uid, before.gid) != (uid, gid);
        if reown && !self.powers.chown {
            self.refuse(format!("chown {uid}:{gid} {} needs root (CAP_CHOWN)", show(path)));
        } else if reown {
            if !self.opts.dry_run {
                // Only what differs: an unchanged id may be the overflow id of a user
                // namespace, which chown cannot set.
                let new_uid = (uid != before.uid).then_some(uid);
                let new_gid = (gid != before.gid).then_some(gid);
                if let Err(e) = sys::chown_fd(fd, new_uid, new_gid) {
                    return self.failed(path, "chown", e);
                }
            }
            self.record(Action::Chown, path, Some(ids(before)), format!("{uid}:{gid}"));
        }
        // The kernel clears setuid (and setgid with group-exec) on chown; a fresh stat
        // says what is left. A dry run predicts nothing and strips what it sees.
        let now = match (reown, self.opts.dry_run) {
            (true, false) => fstat(fd).map_or(before.mode, |s| s.st_mode & 0o7777),
            _ => before.mode,
        };
        let want = match mode {
            Some(m) => m,
            None if regular && reown && self.powers.chown && now & 0o6000 != 0 => now & !0o6000,
            None => return true,
        };
        if want == now {
            return true;
        }
        let owner_after = if reown && self.powers.chown { uid } else { before.uid };
        if self.powers.euid != 0 && self.powers.euid != owner_after {
            self.refuse(format!("chmod {want:04o} {} needs its owner or root", show(path)));
            return true;
        }
        if !self.opts.dry_run
            && let Err(e) = sys::chmod_fd(fd, want)
        {
            return self.failed(path, "chmod", e);
        }
        self.record(Action::Chmod, path, Some(format!("{now:04o}")), format!("{want:04o}"));
        true
    }

    /// Records a failed call; a read-only filesystem stops the entry with one verdict.
    fn failed(&mut self, path: &Path, call: &str, e: Errno) -> bool {
        if e == Errno::EROFS {
            self.refuse_read_only(path);
            return false;
        }
        self.refuse(format!("{call} {}: {}", show(path), e.desc()));
        true
    }

    fn recurse(&mut self, dir: OwnedFd, path: &Path, wanted: &Wanted) {
        let top = match check::open_for_walk(dir.as_fd()) {
            Ok(top) => top,
            Err(e) => return self.refuse(format!("cannot read {}: {}", show(path), e.desc())),
        };
        let mounts = check::mount_points(self.ctx, path);
        let mut seen = Unchanged::default();
        let listed = self.ctx.listed.borrow().clone();
        let outcome = walk::walk(top, path, &mounts, &listed, &mut |item| {
            if self.visit(&item, wanted, &mut seen) { Flow::Descend } else { Flow::Stop }
        });
        if seen.unmanaged > 0 {
            self.out.notes.push(format!(
                "{} below left as they are (never followed, re-owned or chmod'ed)",
                plural(seen.unmanaged, "symlink or device node", "symlinks and device nodes")
            ));
        }
        if !seen.hardlinks.is_empty() {
            self.refuse(format!(
                "{} left unchanged (another link may lead outside the tree; set \
                 allow_hardlinks = true to change them): {}",
                plural(seen.hardlinks.total, "hard-linked file", "hard-linked files"),
                seen.hardlinks.list()
            ));
        }
        self.out.notes.extend(outcome.left_out());
        if let Some(why) = outcome.unreadable() {
            self.refuse(why);
        }
    }

    /// Converges one item below a recursive entry. False stops the walk.
    fn visit(&mut self, item: &Item<'_>, wanted: &Wanted, seen: &mut Unchanged) -> bool {
        let st = item.st;
        if !Wanted::manages(st) {
            seen.unmanaged += 1;
            return true;
        }
        if !wanted.differs(st) {
            return true;
        }
        let uid = wanted.owner.unwrap_or(st.st_uid);
        let gid = wanted.group.unwrap_or(st.st_gid);
        let mode = wanted.mode_for(st);
        if let Some(dir) = item.dir {
            return self.change_one(dir, item.path, uid, gid, mode, false);
        }
        // Another name for this inode may live outside the tree (a link to /etc/shadow):
        // neither its owner nor its mode is changed unless the manifest allows it.
        if st.st_nlink > 1 && !self.entry.allow_hardlinks {
            seen.hardlinks.push(item.path.to_path_buf());
            return true;
        }
        let Some(fd) = open_verified(item.parent, item.name, st) else {
            self.refuse(format!("{} changed while being applied", show(item.path)));
            return true;
        };
        self.change_one(fd.as_fd(), item.path, uid, gid, mode, sys::is_regular(st))
    }
}

/// Whether `fd` is the directory this run just made, not one swapped in under its name
/// between mkdirat and openat by someone who can write the parent: owned by this process,
/// private (mode within 0700), empty, and changed no earlier than the mkdirat.
/// Known gap: an empty, private, root-owned directory made in the same second (another
/// entry of this very run whose target is root 0700) could still be swapped in by whoever
/// can write the parent; that user controls the names in it anyway.
fn just_made(fd: BorrowedFd<'_>, euid: u32, made_at: i64) -> Result<bool, Errno> {
    let st = fstat(fd)?;
    // A setgid parent passes its setgid bit on; anything else beyond 0700 is not ours.
    let private = st.st_mode & 0o5077 == 0;
    if !sys::is_dir(&st) || st.st_uid != euid || !private {
        return Ok(false);
    }
    if st.st_ctime < made_at - 1 {
        return Ok(false);
    }
    let mut dir = check::open_for_walk(fd)?;
    let empty = dir.iter().filter_map(Result::ok).all(|e| {
        let name = e.file_name().to_bytes();
        name == b"." || name == b".."
    });
    Ok(empty)
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What a recursive walk deliberately left unchanged.
#[derive(Default)]
struct Unchanged {
    unmanaged: usize,
    hardlinks: Few<PathBuf>,
}

/// Opens a non-directory by name without following it, and only if it is still what the
/// walk saw (same device, inode and type).
fn open_verified(parent: BorrowedFd<'_>, name: &CStr, seen: &FileStat) -> Option<OwnedFd> {
    let fd =
        openat(parent, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .ok()?;
    let now = fstat(&fd).ok()?;
    sys::same_inode(seen, &now).then_some(fd)
}

fn ids(m: Meta) -> String {
    format!("{}:{}", m.uid, m.gid)
}

fn ids_mode(m: Meta) -> String {
    format!("{}:{} {:04o}", m.uid, m.gid, m.mode)
}
