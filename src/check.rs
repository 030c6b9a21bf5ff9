//! Inspects every manifest entry and turns what it finds into checks with verdicts, and a
//! fix for each failing entry.
//!
//! All entries are resolved first; then writability is probed in one go (one forked child
//! for all entries when root checks for another identity); then each entry's checks are
//! written. A check that does not apply (mode not asked, entry missing) is a skip, not a
//! pass.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use anyhow::Result;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode};

use crate::access::{self, Acl, Method, Probed, SEARCH, WRITE};
use crate::cli::Setup;
use crate::identity::{Accounts, Identity};
use crate::manifest::{self, Entry};
use crate::policy::{self, Meta};
use crate::report::{
    Check, CheckKind, EntryReport, Fix, FixKind, Status, Value, plural, quote, show,
};
use crate::resolve::{self, Dir, Links, Resolution, Root, State};
use crate::sys::{self, IdMap, Mount};
use crate::walk::{self, Flow};

/// Everything a run knows before it looks at the first entry.
pub struct Context<'a> {
    pub root: &'a Root,
    pub accounts: &'a Accounts,
    pub identity: &'a Identity,
    pub method: Method,
    pub mounts: Vec<Mount>,
    /// Set inside a user namespace: the kernel's overflow ids mean "not mapped".
    pub overflow: Option<(u32, u32)>,
    /// Options to repeat in suggested commands, e.g. ` --manifest app.toml --user 10001`.
    pub repeat_flags: String,
    acls: RefCell<HashMap<(u64, u64), Option<Acl>>>,
    /// Why the probe could not be made, when it could not: writability is computed then.
    probe_failed: RefCell<Option<String>>,
    /// Every entry's path: a recursive walk leaves directories that are entries of their
    /// own to them, or two entries would set one directory to two values in turn.
    pub listed: RefCell<Vec<PathBuf>>,
}

impl<'a> Context<'a> {
    pub fn new(setup: &'a Setup, method: Method) -> Self {
        let in_userns = !IdMap::read("uid_map").is_initial();
        Context {
            root: &setup.root,
            accounts: &setup.accounts,
            identity: &setup.identity,
            method,
            mounts: sys::mounts(),
            overflow: in_userns.then(sys::overflow_ids),
            repeat_flags: setup.repeat_flags.clone(),
            acls: RefCell::default(),
            probe_failed: RefCell::default(),
            listed: RefCell::new(setup.entries.iter().map(|e| PathBuf::from(&e.path)).collect()),
        }
    }

    /// Takes in where the entries' symlinks lead: nesting that only shows once they are
    /// followed is refused like the manifest's own (exit 2), and recursive walks leave
    /// those entries to themselves too.
    pub fn learn_resolved(&self, entries: &[Entry], resolutions: &[Resolution]) -> Result<()> {
        let resolved: Vec<Entry> = entries
            .iter()
            .zip(resolutions)
            .filter(|(_, r)| matches!(r.state, State::Directory | State::Missing { .. }))
            .map(|(e, r)| Entry {
                path: r.resolved_path().to_string_lossy().into_owned(),
                ..e.clone()
            })
            .collect();
        for b in &resolved {
            if let Some(why) = manifest::nesting_conflict(&resolved, b, self.identity) {
                anyhow::bail!("{why} (once symlinks are followed)");
            }
        }
        self.listed.borrow_mut().extend(resolved.into_iter().map(|e| PathBuf::from(e.path)));
        Ok(())
    }

    /// How writability was established, for the report.
    pub fn writability(&self) -> String {
        match (self.method, self.probe_failed.borrow().as_ref()) {
            (Method::Compute, _) => "computed".into(),
            (_, Some(why)) => format!("computed ({why})"),
            _ => "probed".into(),
        }
    }

    /// The access ACL of a directory, read once per inode: every entry passes the same
    /// ancestors.
    fn acl(&self, dir: &Dir) -> Option<Acl> {
        let key = (dir.st.st_dev, dir.st.st_ino);
        let mut cache = self.acls.borrow_mut();
        cache.entry(key).or_insert_with(|| Acl::read(dir.fd())).clone()
    }

    fn searchable(&self, dir: &Dir) -> bool {
        // Root searches everything; no need to read an ACL to know it.
        self.identity.uid == 0
            || access::permits(self.identity, &dir.st, self.acl(dir).as_ref(), SEARCH)
    }

    fn uid_value(&self, uid: u32) -> Value {
        let label = match self.overflow {
            Some((o, _)) if o == uid => format!("unmapped ({uid})"),
            _ => self.accounts.user_label(uid),
        };
        Value::Id { id: uid, label }
    }

    fn gid_value(&self, gid: u32) -> Value {
        let label = match self.overflow {
            Some((_, o)) if o == gid => format!("unmapped ({gid})"),
            _ => self.accounts.group_label(gid),
        };
        Value::Id { id: gid, label }
    }

    fn who(&self) -> String {
        self.accounts.user_label(self.identity.uid)
    }

    /// `owner root(0), group root(0), mode 0755`, for messages.
    fn describe(&self, st: &FileStat) -> String {
        format!(
            "owner {}, group {}, mode {:04o}",
            self.uid_value(st.st_uid),
            self.gid_value(st.st_gid),
            st.st_mode & 0o7777
        )
    }

    pub fn mount_of(&self, path: &Path) -> Option<&Mount> {
        sys::mount_of(&self.mounts, &self.root.host_path(path))
    }

    /// The mount point holding a container path, for messages: as the container sees it
    /// when it lies inside the root, as the host sees it otherwise.
    pub fn mount_label(&self, path: &Path) -> String {
        let Some(m) = self.mount_of(path) else { return "?".to_string() };
        match m.point.strip_prefix(&self.root.host) {
            Ok(inside) => show(&Path::new("/").join(inside)),
            Err(_) => format!("{} (on the host)", show(&m.point)),
        }
    }
}

/// Result of the write probe for one directory, when probing.
type Probe = Option<Probed>;

/// Checks every entry. Errors are environment failures (exit 2), not findings.
pub fn check_all(ctx: &Context<'_>, entries: &[Entry]) -> Result<Vec<EntryReport>> {
    let resolutions: Vec<Resolution> = entries
        .iter()
        .map(|e| resolve::resolve(ctx.root, Path::new(&e.path), Links::Follow))
        .collect::<Result<_>>()?;
    ctx.learn_resolved(entries, &resolutions)?;
    let probes = probe_all(ctx, entries, &resolutions);
    Ok(entries
        .iter()
        .zip(&resolutions)
        .zip(probes)
        .map(|((entry, res), probe)| check_entry(ctx, entry, res, probe))
        .collect())
}

/// Probes, in one go, each existing entry that must be writable and the parent of each
/// such entry that is missing. Where no probe can be made, writability is computed and
/// the report says why.
fn probe_all(ctx: &Context<'_>, entries: &[Entry], resolutions: &[Resolution]) -> Vec<Probe> {
    let none = || resolutions.iter().map(|_| None).collect();
    if ctx.method == Method::Compute {
        return none();
    }
    fn target<'r>(entry: &Entry, r: &'r Resolution) -> Option<BorrowedFd<'r>> {
        // A probe writes a file: only where writing is the point, and never through a
        // link a user may have planted.
        if !entry.writable || r.links.iter().any(|l| !l.trusted) {
            return None;
        }
        match (&r.entry, &r.state) {
            (Some(dir), _) => Some(dir.fd()),
            (None, State::Missing { .. }) => Some(r.parent().fd()),
            _ => None,
        }
    }
    let pairs = || entries.iter().zip(resolutions);
    let fds: Vec<BorrowedFd<'_>> = pairs().filter_map(|(e, r)| target(e, r)).collect();
    match access::probe(ctx.method, ctx.identity, &fds) {
        Ok(answers) => {
            let mut answers = answers.into_iter();
            pairs().map(|(e, r)| target(e, r).and_then(|_| answers.next())).collect()
        }
        Err(why) => {
            *ctx.probe_failed.borrow_mut() = Some(why);
            none()
        }
    }
}

fn check_entry(ctx: &Context<'_>, entry: &Entry, res: &Resolution, probe: Probe) -> EntryReport {
    let st = res.entry.as_ref().map(|d| d.st);
    // Owner, group and mode: compared where the manifest asks and the directory is there.
    let asked = |kind, wanted: Option<Value>, found: Option<Value>| match (wanted, found) {
        (Some(wanted), Some(found)) => compare(kind, wanted, found),
        (Some(_), None) => Check::new(kind, Status::Skip, absent(res)),
        (None, _) => Check::new(kind, Status::Skip, "not asked"),
    };
    let blocked_by = res.searched.iter().find(|d| !ctx.searchable(d));
    let mut checks = vec![
        exists(ctx, res, &probe),
        kind(res),
        asked(
            CheckKind::Owner,
            entry.owner.map(|u| ctx.uid_value(u)),
            st.map(|s| ctx.uid_value(s.st_uid)),
        ),
        asked(
            CheckKind::Group,
            entry.group.map(|g| ctx.gid_value(g)),
            st.map(|s| ctx.gid_value(s.st_gid)),
        ),
        asked(
            CheckKind::Mode,
            entry.mode.map(Value::Mode),
            st.map(|s| Value::Mode(s.st_mode & 0o7777)),
        ),
        ancestors(ctx, res, blocked_by),
    ];
    let read_only = read_only(ctx, res);
    let ro = read_only.status == Status::Fail;
    checks.push(writable(ctx, entry, res, &probe, ro, blocked_by));
    checks.push(read_only);
    if entry.recursive {
        checks.push(contents(ctx, entry, res));
    }

    let mut report = EntryReport::new(show(Path::new(&entry.path)), checks);
    if let Some(Probed::LeftBehind(e)) = probe {
        report.notes.push(format!(
            "the write probe could not remove its file ({}): a .fs-preflight-probe.* file is \
             left here (an append-only directory?)",
            e.desc()
        ));
    }
    report.found = st.map(|st| {
        format!(
            "{}:{} {:04o}",
            ctx.uid_value(st.st_uid),
            ctx.gid_value(st.st_gid),
            st.st_mode & 0o7777
        )
    });
    let resolved = res.resolved_path();
    if !res.links.is_empty() && matches!(res.state, State::Directory | State::Missing { .. }) {
        report.resolved = Some(show(&resolved));
    }
    for link in &res.links {
        let mut note = format!("followed symlink {} -> {}", show(&link.at), show(&link.target));
        if !link.trusted {
            note.push_str(
                "; it is not root's, or sits where others may write, so apply will not follow it",
            );
        }
        report.notes.push(note);
    }
    let mount_point = res.entry.as_ref().and_then(|dir| {
        ctx.mount_of(&dir.path).filter(|m| m.point == ctx.root.host_path(&dir.path))
    });
    if let (Some(m), Some(dir)) = (mount_point, &res.entry) {
        report.notes.push(format!(
            "{} is a mount point ({}): what is mounted here at run time decides its owner \
             and mode, not the image",
            show(&dir.path),
            m.fstype
        ));
    }
    if report.failed() {
        report.fixes = fixes(ctx, entry, res, &report.checks, blocked_by, mount_point.is_some());
    }
    report
}

/// Why checks of an entry's own values do not apply.
fn absent(res: &Resolution) -> &'static str {
    match res.state {
        State::Missing { .. } => "entry missing",
        State::Blocked { .. } => "entry unreachable",
        _ => "entry is not a directory",
    }
}

fn compare(kind: CheckKind, expected: Value, actual: Value) -> Check {
    let (status, message) = if expected == actual {
        (Status::Pass, format!("is {actual}"))
    } else {
        (Status::Fail, format!("expected {expected}, found {actual}"))
    };
    Check::new(kind, status, message).values(Some(expected), Some(actual))
}

/// A check with a verdict and its expected and actual values in words.
fn verdict(kind: CheckKind, pass: bool, expected: &str, actual: &str, message: String) -> Check {
    let status = if pass { Status::Pass } else { Status::Fail };
    Check::new(kind, status, message)
        .values(Some(Value::Text(expected.into())), Some(Value::Text(actual.into())))
}

fn exists(ctx: &Context<'_>, res: &Resolution, probe: &Probe) -> Check {
    let k = CheckKind::Exists;
    match &res.state {
        State::Missing { missing } => {
            let parent = res.parent();
            let what = match missing.len() {
                1 => "missing".to_string(),
                2 => "missing, and so is its parent".to_string(),
                n => format!("missing, and so are {} of its parents", n - 1),
            };
            let can = match probe {
                Some(probed) => !matches!(probed, Probed::Refused(_)),
                None => {
                    !sys::is_read_only(parent.fd())
                        && access::permits(
                            ctx.identity,
                            &parent.st,
                            ctx.acl(parent).as_ref(),
                            WRITE | SEARCH,
                        )
                }
            };
            let verb = if can { "can" } else { "cannot" };
            let message = format!(
                "{what}; {} {verb} create it in {} ({})",
                ctx.who(),
                show(&parent.path),
                ctx.describe(&parent.st)
            );
            verdict(k, false, "exists", "missing", message)
        }
        State::Blocked { at, reason } => {
            let message = format!("cannot be reached: {}: {reason}", show(at));
            verdict(k, false, "exists", "unreachable", message)
        }
        _ => verdict(k, true, "exists", "exists", "exists".into()),
    }
}

fn kind(res: &Resolution) -> Check {
    let k = CheckKind::Type;
    match &res.state {
        State::Directory => verdict(k, true, "directory", "directory", "is a directory".into()),
        State::NotDirectory { st } => {
            let kind = sys::kind_name(st);
            verdict(k, false, "directory", kind, format!("is a {kind}"))
        }
        State::Symlink { target, .. } => {
            let message = format!(
                "is a symlink to {}; the entry itself must be a real directory",
                show(target)
            );
            verdict(k, false, "directory", "symlink", message)
        }
        State::Missing { .. } | State::Blocked { .. } => Check::new(k, Status::Skip, absent(res)),
    }
}

/// Ancestors of the entry, `blocked_by` the first the identity cannot search.
fn ancestors(ctx: &Context<'_>, res: &Resolution, blocked_by: Option<&Dir>) -> Check {
    let k = CheckKind::Ancestors;
    match blocked_by {
        Some(d) => {
            let message =
                format!("{} cannot search {} ({})", ctx.who(), show(&d.path), ctx.describe(&d.st));
            verdict(k, false, "searchable", "not searchable", message)
        }
        None => {
            let message =
                format!("{} searchable", plural(res.searched.len(), "ancestor", "ancestors"));
            verdict(k, true, "searchable", "searchable", message)
        }
    }
}

/// Whether the identity can write in the entry, by path, as the application will: the
/// directory must take a new file (probed or computed) and every ancestor must let the
/// identity through (the probe works through a descriptor and does not see them).
fn writable(
    ctx: &Context<'_>,
    entry: &Entry,
    res: &Resolution,
    probe: &Probe,
    ro: bool,
    blocked_by: Option<&Dir>,
) -> Check {
    let k = CheckKind::Writable;
    if !entry.writable {
        return Check::new(k, Status::Skip, "not required");
    }
    let Some(dir) = &res.entry else {
        return Check::new(k, Status::Skip, absent(res));
    };
    let who = ctx.who();
    let here = match probe {
        Some(Probed::Written) => Ok(format!("{who} created and removed a file here")),
        Some(Probed::LeftBehind(e)) => Ok(format!(
            "{who} created a file here but could not remove it ({}): a .fs-preflight-probe.* \
             file is left behind",
            e.desc()
        )),
        Some(Probed::Refused(Errno::EROFS)) => Err("cannot write: read-only filesystem".into()),
        Some(Probed::Refused(e)) => Err(format!(
            "{who} cannot create a file here: {} ({})",
            e.desc(),
            ctx.describe(&dir.st)
        )),
        None if ro => Err("cannot write: read-only filesystem".to_string()),
        None => {
            let acl = ctx.acl(dir);
            if access::permits(ctx.identity, &dir.st, acl.as_ref(), WRITE | SEARCH) {
                let how = if acl.is_some() { "mode bits and ACL" } else { "mode bits" };
                Ok(format!("{who} may write here (computed from {how})"))
            } else {
                Err(format!("{who} cannot write here ({}; computed)", ctx.describe(&dir.st)))
            }
        }
    };
    let here = match (here, blocked_by) {
        (Ok(_), Some(d)) => Err(format!(
            "{who} could write here, but cannot get here: {} is not searchable",
            show(&d.path)
        )),
        (other, _) => other,
    };
    match here {
        Ok(message) => verdict(k, true, "writable", "writable", message),
        Err(message) => verdict(k, false, "writable", "not writable", message),
    }
}

fn read_only(ctx: &Context<'_>, res: &Resolution) -> Check {
    let k = CheckKind::ReadOnly;
    let dir = res.entry.as_ref().unwrap_or_else(|| res.parent());
    if !sys::is_read_only(dir.fd()) {
        return verdict(k, true, "read-write", "read-write", "on a writable mount".into());
    }
    let point = ctx.mount_label(&dir.path);
    let fstype = ctx.mount_of(&dir.path).map_or("", |m| m.fstype.as_str());
    let message = format!("on a read-only mount at {point} ({fstype})");
    verdict(k, false, "read-write", "read-only", message)
}

/// What a recursive entry asks of everything below it.
pub struct Wanted {
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub dir_mode: Option<u32>,
    pub file_mode: Option<u32>,
}

impl Wanted {
    pub fn of(entry: &Entry) -> Wanted {
        Wanted {
            owner: entry.owner,
            group: entry.group,
            dir_mode: entry.dir_mode,
            file_mode: entry.file_mode,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.owner.is_none()
            && self.group.is_none()
            && self.dir_mode.is_none()
            && self.file_mode.is_none()
    }

    /// The mode an item should have, if any: symlinks have none that matters.
    pub fn mode_for(&self, st: &FileStat) -> Option<u32> {
        if sys::is_dir(st) {
            self.dir_mode
        } else if sys::is_regular(st) {
            self.file_mode
        } else {
            None
        }
    }

    /// Whether a recursive entry manages this item. Symlinks are never changed: re-owning
    /// a link a user planted would make it look placed by root, and so trusted, to the
    /// next run. Device nodes are never changed: handing one to the app user would hand
    /// over the device. Both are left as they are and counted.
    pub fn manages(st: &FileStat) -> bool {
        !matches!(st.st_mode & libc::S_IFMT, libc::S_IFLNK | libc::S_IFCHR | libc::S_IFBLK)
    }

    /// Whether a managed item's owner, group or mode differs from what is asked.
    pub fn differs(&self, st: &FileStat) -> bool {
        let owner_off = self.owner.is_some_and(|u| u != st.st_uid);
        let group_off = self.group.is_some_and(|g| g != st.st_gid);
        let mode_off = self.mode_for(st).is_some_and(|m| m != st.st_mode & 0o7777);
        Wanted::manages(st) && (owner_off || group_off || mode_off)
    }
}

/// Audits everything below a recursive entry, the same way `apply` walks it.
fn contents(ctx: &Context<'_>, entry: &Entry, res: &Resolution) -> Check {
    let c = |status, message: String| Check::new(CheckKind::Contents, status, message);
    let wanted = Wanted::of(entry);
    if wanted.is_empty() {
        return c(Status::Skip, "nothing asked of the contents".into());
    }
    let Some(dir) = &res.entry else {
        return c(Status::Skip, absent(res).into());
    };
    let top = match open_for_walk(dir.fd()) {
        Ok(top) => top,
        Err(e) => return c(Status::Fail, format!("cannot read {}: {}", show(&dir.path), e.desc())),
    };
    let mut wrong = 0u64;
    let mut unmanaged = 0u64;
    let mut samples = Vec::new();
    let mounts = mount_points(ctx, &dir.path);
    let listed = ctx.listed.borrow();
    let outcome = walk::walk(top, &dir.path, &mounts, &listed, &mut |item| {
        if !Wanted::manages(item.st) {
            unmanaged += 1;
        }
        if wanted.differs(item.st) {
            wrong += 1;
            if samples.len() < 5 {
                samples.push(format!("{} ({})", show(item.path), ctx.describe(item.st)));
            }
        }
        Flow::Descend
    });
    let mut message = format!(
        "{wrong} of {} below differ{}",
        plural(outcome.visited as usize, "entry", "entries"),
        if wrong == 1 { "s" } else { "" }
    );
    if !samples.is_empty() {
        message.push_str(&format!("; first: {}", samples.join("; ")));
    }
    if unmanaged > 0 {
        message.push_str(&format!(
            "; {} left as they are",
            plural(unmanaged as usize, "symlink or device node", "symlinks and device nodes")
        ));
    }
    for part in outcome.left_out().into_iter().chain(outcome.unreadable()) {
        message.push_str(&format!("; {part}"));
    }
    let status = if wrong == 0 && outcome.errors.is_empty() { Status::Pass } else { Status::Fail };
    let mut check = c(status, message).values(Some(Value::Count(0)), Some(Value::Count(wrong)));
    check.samples = samples;
    check
}

/// Opens a held directory for reading its entries, through its own descriptor.
pub fn open_for_walk(dir: BorrowedFd<'_>) -> Result<nix::dir::Dir, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::dir::Dir::openat(dir, ".", flags, Mode::empty())
}

/// Container paths of every mount strictly below `path`.
pub fn mount_points(ctx: &Context<'_>, path: &Path) -> Vec<PathBuf> {
    let host = ctx.root.host_path(path);
    ctx.mounts
        .iter()
        .filter(|m| m.point.starts_with(&host) && m.point != host)
        .filter_map(|m| m.point.strip_prefix(&ctx.root.host).ok().map(|p| Path::new("/").join(p)))
        .collect()
}

/// Fixes for a failing entry, for where the user is: a Dockerfile line for the image (or a
/// run-time step when a volume is mounted there), and `fs-preflight apply` when it can
/// finish the job alone.
fn fixes(
    ctx: &Context<'_>,
    entry: &Entry,
    res: &Resolution,
    checks: &[Check],
    blocked_by: Option<&Dir>,
    mount_point: bool,
) -> Vec<Fix> {
    let failed = |k: CheckKind| checks.iter().any(|c| c.check == k && c.status == Status::Fail);
    let path = quote(&show(Path::new(&entry.path)));
    if failed(CheckKind::ReadOnly) {
        let dir = res.entry.as_ref().unwrap_or_else(|| res.parent());
        return vec![Fix::advice(
            "at run time",
            format!(
                "mount a writable volume at {path} (docker run --mount type=volume,dst={path}; \
                 Kubernetes: an emptyDir volume), or make the mount at {} writable",
                ctx.mount_label(&dir.path)
            ),
        )];
    }
    if let Some(link) = res.links.iter().find(|l| !l.trusted) {
        return vec![Fix::advice(
            "first",
            format!(
                "replace the symlink {} with a real directory, or list {} in the manifest",
                quote(&show(&link.at)),
                quote(&show(&res.resolved_path()))
            ),
        )];
    }
    let current = res.entry.as_ref().map(|d| Meta::of(&d.st));
    let mut target = policy::target(entry, ctx.identity, current).meta;
    // Inside a user namespace the overflow ids are not real owners: never suggest them.
    if let Some((ou, og)) = ctx.overflow {
        if target.uid == ou {
            target.uid = ctx.identity.uid;
        }
        if target.gid == og {
            target.gid = ctx.identity.gid;
        }
    }
    let install =
        format!("install -d -o {} -g {} -m {} {path}", target.uid, target.gid, octal(target.mode));
    let mut run = Vec::new();
    if let Some(d) = blocked_by {
        let class = if d.st.st_uid == ctx.identity.uid {
            "u"
        } else if ctx.identity.in_group(d.st.st_gid) {
            "g"
        } else {
            "o"
        };
        run.push(format!("chmod {class}+x {}", quote(&show(&d.path))));
    }
    match (&res.state, current) {
        (State::Missing { .. }, _) => run.push(install),
        (State::Symlink { .. } | State::NotDirectory { .. }, _) => {
            run.push(format!("rm {path} && {install}"))
        }
        // What is below a recursive entry needs apply's care (symlinks, device nodes,
        // hard links, mounts and nested entries left alone); chown -R would take none.
        (State::Directory, Some(_)) if failed(CheckKind::Contents) => {
            run.push(format!("fs-preflight apply{}", ctx.repeat_flags));
        }
        (State::Directory, Some(now)) => {
            if (now.uid, now.gid) != (target.uid, target.gid) {
                run.push(format!("chown {}:{} {path}", target.uid, target.gid));
            }
            if now.mode != target.mode {
                run.push(format!("chmod {} {path}", octal(target.mode)));
            }
        }
        _ => {}
    }
    let flags = &ctx.repeat_flags;
    let mut out = Vec::new();
    if !run.is_empty() {
        if mount_point {
            out.push(Fix::command(
                "at run time, as root, before the app starts (a volume is mounted here, so \
                 the image's values do not count)",
                format!("fs-preflight exec --apply{flags} -- CMD..."),
            ));
            out.push(Fix {
                kind: FixKind::Kubernetes,
                place: "or in Kubernetes, for a volume it can re-own (not hostPath)".into(),
                command: format!("securityContext: {{fsGroup: {}}}", ctx.identity.gid),
            });
            return out;
        }
        out.push(Fix {
            kind: FixKind::Dockerfile,
            place: "in the Dockerfile, before USER".into(),
            command: format!("RUN {}", run.join(" && ")),
        });
    }
    // apply neither makes ancestors searchable nor replaces what is in the way; offered
    // alone for those, it would run and fail again.
    let apply_fixes = [CheckKind::Owner, CheckKind::Group, CheckKind::Mode, CheckKind::Writable]
        .into_iter()
        .chain([CheckKind::Contents])
        .any(failed)
        || matches!(res.state, State::Missing { .. }) && entry.create;
    let apply_cannot = failed(CheckKind::Ancestors) || failed(CheckKind::Type);
    if apply_fixes && !apply_cannot {
        let or = if out.is_empty() { "" } else { "or, " };
        out.push(Fix::command(
            format!("{or}as root, at image build or in the entrypoint"),
            format!("fs-preflight apply{flags}"),
        ));
    }
    out
}

/// A mode for chmod and install: five digits, so that GNU chmod also clears the setgid
/// bit of a directory (it keeps it for a four-digit mode).
fn octal(mode: u32) -> String {
    format!("{mode:05o}")
}
