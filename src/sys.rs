//! Small kernel facts and descriptor-based operations that the rest of the tool shares:
//! mounts, user-namespace maps, capabilities, and chown/chmod on a verified descriptor.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::FileStat;
use nix::unistd::{Gid, Uid};

/// Changes owner and group of exactly the inode `fd` refers to (any kind of descriptor,
/// O_PATH included; a symlink opened with O_PATH|O_NOFOLLOW is changed itself).
pub fn chown_fd(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
    nix::unistd::fchownat(
        fd,
        c"",
        uid.map(Uid::from_raw),
        gid.map(Gid::from_raw),
        AtFlags::AT_EMPTY_PATH,
    )
}

/// Sets the permission bits of exactly the inode `fd` refers to. Directories are opened
/// for reading and take fchmod; O_PATH descriptors need fchmodat2 with AT_EMPTY_PATH
/// (Linux 6.6) or, on older kernels, chmod through the descriptor's /proc link, which
/// names the opened inode and nothing else.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> Result<(), Errno> {
    let raw = fd.as_raw_fd();
    // SAFETY: plain syscalls on a descriptor we hold; the path is NUL-terminated.
    let first = unsafe { libc::fchmod(raw, mode) };
    if first == 0 {
        return Ok(());
    }
    if Errno::last() != Errno::EBADF {
        return Err(Errno::last());
    }
    let rc =
        unsafe { libc::syscall(libc::SYS_fchmodat2, raw, c"".as_ptr(), mode, libc::AT_EMPTY_PATH) };
    if rc == 0 {
        return Ok(());
    }
    if !matches!(Errno::last(), Errno::ENOSYS | Errno::EINVAL) {
        return Err(Errno::last());
    }
    let link = CString::new(format!("/proc/self/fd/{raw}")).expect("no NUL in a number");
    Errno::result(unsafe { libc::chmod(link.as_ptr(), mode) }).map(drop)
}

/// The descriptor limit this process was started with, once raised.
static STARTED_WITH: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// Raises the soft descriptor limit to the hard one. Each entry holds a few directories
/// open, and a recursive walk one per level of depth: the usual soft limit of 1024 is
/// too few for a large manifest or a deep tree. [`restore_fd_limit`] puts it back before
/// another program is started.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok()
    {
        let _ = STARTED_WITH.set((soft, hard));
    }
}

/// Puts back the descriptor limit the process was started with.
pub fn restore_fd_limit() {
    if let Some((soft, hard)) = STARTED_WITH.get() {
        let _ = nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_NOFILE,
            *soft,
            *hard,
        );
    }
}

/// One line of /proc/self/mountinfo that matters here.
#[derive(Debug, Clone)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
}

/// The mount table of this process, or empty where /proc is not mounted.
pub fn mounts() -> Vec<Mount> {
    // Bytes, not a String: one mount point that is not UTF-8 must not hide the others.
    let bytes = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    String::from_utf8_lossy(&bytes).lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    Some(Mount {
        point: PathBuf::from(unescape_octal(fields.get(4)?)),
        fstype: fields.get(sep + 1)?.to_string(),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `host_path` (already free of symlinks): the longest mount point
/// that is a prefix of it. The last such line wins, as later mounts cover earlier ones.
pub fn mount_of<'a>(mounts: &'a [Mount], host_path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| host_path.starts_with(&m.point))
        .max_by_key(|(i, m)| (m.point.components().count(), *i))
        .map(|(_, m)| m)
}

/// lstat of `name` in `dir`, and whether it is the root of a mount (bind mounts of files
/// and of directories of the same filesystem included, which keep the device number).
/// The mount answer is None where the kernel cannot give it (before Linux 5.8).
pub fn lstat_at(
    dir: BorrowedFd<'_>,
    name: &std::ffi::CStr,
) -> Result<(FileStat, Option<bool>), Errno> {
    // SAFETY: statx writes into the zeroed struct we own; the name is NUL-terminated.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS,
            &mut stx,
        )
    };
    if rc != 0 {
        let e = Errno::last();
        if e != Errno::ENOSYS {
            return Err(e);
        }
        let st = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        return Ok((st, None));
    }
    // SAFETY: FileStat is plain old data; every field a caller reads is filled below.
    let mut st: FileStat = unsafe { std::mem::zeroed() };
    st.st_dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    st.st_rdev = libc::makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
    st.st_ino = stx.stx_ino;
    st.st_mode = u32::from(stx.stx_mode);
    st.st_nlink = stx.stx_nlink.into();
    st.st_uid = stx.stx_uid;
    st.st_gid = stx.stx_gid;
    st.st_size = stx.stx_size as i64;
    st.st_ctime = stx.stx_ctime.tv_sec;
    st.st_ctime_nsec = stx.stx_ctime.tv_nsec.into();
    st.st_mtime = stx.stx_mtime.tv_sec;
    st.st_mtime_nsec = stx.stx_mtime.tv_nsec.into();
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    let mount_root = (stx.stx_attributes_mask & bit != 0).then_some(stx.stx_attributes & bit != 0);
    Ok((st, mount_root))
}

/// Whether the filesystem under `fd` is mounted read-only.
pub fn is_read_only(fd: BorrowedFd<'_>) -> bool {
    nix::sys::statvfs::fstatvfs(fd)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Mount types (from the mount table) whose contents are the kernel's.
pub const PSEUDO_TYPES: [&str; 14] = [
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "configfs",
    "nsfs",
    "binfmt_misc",
    "mqueue",
];

/// Names of filesystems whose contents are the kernel's: refused for recursive work.
pub fn pseudo_filesystem(fd: BorrowedFd<'_>) -> Option<&'static str> {
    let magic = nix::sys::statfs::fstatfs(fd).ok()?.filesystem_type().0 as i64;
    const KNOWN: [(i64, &str); 12] = [
        (0x9fa0, "proc"),
        (0x6265_6572, "sysfs"),
        (0x1cd1, "devpts"),
        (0x0027_e0eb, "cgroup"),
        (0x6367_7270, "cgroup2"),
        (0x7363_6673, "securityfs"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0xcafe_4a11, "bpf"),
        (0x6265_6570, "configfs"),
        (0x6e73_6673, "nsfs"),
        (0x4249_4e4d, "binfmt_misc"),
    ];
    KNOWN.iter().find(|(m, _)| *m == magic).map(|(_, name)| *name)
}

/// A user-namespace id map (`/proc/self/uid_map` or `gid_map`).
#[derive(Debug, Clone)]
pub struct IdMap(Vec<(u32, u32)>);

impl IdMap {
    pub fn read(which: &str) -> IdMap {
        let text = std::fs::read_to_string(format!("/proc/self/{which}")).unwrap_or_default();
        let ranges: Vec<(u32, u32)> = text
            .lines()
            .filter_map(|l| {
                let f: Vec<u64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                let (inside, count) = (*f.first()?, *f.get(2)?);
                Some((inside as u32, (inside + count).min(u64::from(u32::MAX)) as u32))
            })
            .collect();
        IdMap(ranges)
    }

    /// True outside any user namespace (the initial map covers every id) or without /proc.
    pub fn is_initial(&self) -> bool {
        self.0.is_empty() || self.0 == [(0, u32::MAX)]
    }

    pub fn contains(&self, id: u32) -> bool {
        self.0.is_empty() || self.0.iter().any(|(lo, hi)| (*lo..*hi).contains(&id))
    }
}

/// The uid and gid the kernel shows for owners not mapped into this user namespace.
pub fn overflow_ids() -> (u32, u32) {
    let read = |which: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{which}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65534)
    };
    (read("overflowuid"), read("overflowgid"))
}

/// Whether this process may chown files (CAP_CHOWN in its effective set).
pub fn can_chown() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match status.lines().find_map(|l| l.strip_prefix("CapEff:")) {
        Some(hex) => u64::from_str_radix(hex.trim(), 16).is_ok_and(|caps| caps & 1 != 0),
        None => nix::unistd::geteuid().is_root(),
    }
}

pub fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn is_symlink(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

pub fn is_regular(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// A word for the type of a file, for reports.
pub fn kind_name(st: &FileStat) -> &'static str {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => "directory",
        libc::S_IFREG => "regular file",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "unknown file type",
    }
}

/// The same inode: what a descriptor opened by name must match the earlier lstat.
pub fn same_inode(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev
        && a.st_ino == b.st_ino
        && a.st_mode & libc::S_IFMT == b.st_mode & libc::S_IFMT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse() {
        let line = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - \
                    ext3 /dev/root ro,errors=continue";
        let m = parse_mountinfo_line(line).unwrap();
        assert_eq!(m.point, PathBuf::from("/mnt/with space"));
        assert_eq!(m.fstype, "ext3");
    }

    #[test]
    fn the_deepest_mount_wins() {
        let mk = |p: &str| Mount { point: p.into(), fstype: "x".into() };
        let table = vec![mk("/"), mk("/data"), mk("/data/x"), mk("/dat")];
        assert_eq!(mount_of(&table, Path::new("/data/x/y")).unwrap().point, Path::new("/data/x"));
        assert_eq!(mount_of(&table, Path::new("/datax")).unwrap().point, Path::new("/"));
    }

    #[test]
    fn id_maps() {
        assert!(IdMap(vec![(0, u32::MAX)]).is_initial());
        let m = IdMap(vec![(0, 1)]);
        assert!(m.contains(0) && !m.contains(999));
    }
}
