//! Becoming another identity, the way container runtimes do it, and proving it happened.
//!
//! Used by `exec` before it starts the program, and by the write probe's child before it
//! touches anything. Inheritable and ambient capabilities are cleared first: setuid to a
//! non-root uid clears the permitted and effective sets, but not the inheritable one, and
//! a program with file capabilities could take those back. Then setgroups, setgid,
//! setuid, in that order (each later step gives up the right to the earlier ones). Then
//! the result is checked: no way back to root, and every capability set empty.

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

use crate::identity::Identity;

/// Known gap: the bounding set is left as the runtime set it, as gosu and su-exec leave
/// it; a setuid-root or file-capability program inside the image can still raise what the
/// bounding set allows. Runtimes restrict the bounding set; no_new_privs is theirs to set.
pub fn become_identity(identity: &Identity) -> Result<()> {
    if identity.uid != 0 {
        clear_inheritable_and_ambient()?;
    }
    let groups: Vec<Gid> = identity.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).context("setgroups")?;
    nix::unistd::setgid(Gid::from_raw(identity.gid)).context("setgid")?;
    nix::unistd::setuid(Uid::from_raw(identity.uid)).context("setuid")?;
    if identity.uid != 0 {
        verify_no_privilege(identity.uid)?;
    }
    Ok(())
}

/// A kernel or securebits setting that kept capabilities across setuid would make the
/// drop a lie: refuse to go on.
fn verify_no_privilege(uid: u32) -> Result<()> {
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        bail!("still able to become root after dropping to uid {uid}");
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let sets = ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"];
    for line in status.lines().filter(|l| sets.iter().any(|s| l.starts_with(s))) {
        let hex = line.split_whitespace().nth(1).unwrap_or("0");
        if u64::from_str_radix(hex, 16).unwrap_or(0) != 0 {
            bail!("capabilities survived the drop to uid {uid}: {line}");
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn clear_inheritable_and_ambient() -> Result<()> {
    // SAFETY: prctl with integer arguments only. EINVAL: a kernel without ambient sets.
    let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    if rc != 0 && Errno::last() != Errno::EINVAL {
        return Err(Errno::last()).context("clearing ambient capabilities");
    }
    let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 takes a header and two data structs, which we own.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    Errno::result(rc).context("capget")?;
    for d in &mut data {
        d.inheritable = 0;
    }
    // SAFETY: as above; lowering the inheritable set needs no privilege.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    Errno::result(rc).context("clearing inheritable capabilities")?;
    Ok(())
}
