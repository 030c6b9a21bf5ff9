//! What state an entry should end in: the manifest's values, completed the way a careful
//! image author would where the manifest leaves a choice. `apply` converges to this state
//! and the report's fix lines print it, so both always agree.

use nix::sys::stat::FileStat;

use crate::identity::Identity;
use crate::manifest::Entry;

/// Owner, group and permission bits of an existing directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Meta {
    pub fn of(st: &FileStat) -> Meta {
        Meta { uid: st.st_uid, gid: st.st_gid, mode: st.st_mode & 0o7777 }
    }
}

/// The state an entry is brought to, and the choices made on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub meta: Meta,
    /// Sentences for the report: what was chosen where the manifest was silent.
    pub chosen: Vec<String>,
}

const WX: u32 = 0o3;

/// Can `identity` write and search a directory with these values, by mode bits alone?
pub fn can_write(identity: &Identity, m: Meta) -> bool {
    if identity.uid == 0 {
        return true;
    }
    let bits = if identity.uid == m.uid {
        m.mode >> 6
    } else if identity.in_group(m.gid) {
        m.mode >> 3
    } else {
        m.mode
    };
    bits & WX == WX
}

/// Why no owner, group and mode that the manifest allows would let the identity write,
/// or None when some would.
pub fn unwritable_by_design(entry: &Entry, identity: &Identity) -> Option<String> {
    let mode = entry.mode?;
    if identity.uid == 0 {
        return None;
    }
    let owner_is_us = entry.owner == Some(identity.uid);
    let others_own = entry.owner.is_some_and(|o| o != identity.uid);
    let user_class = !others_own && mode >> 6 & WX == WX;
    let group_class =
        !owner_is_us && entry.group.is_none_or(|g| identity.in_group(g)) && mode >> 3 & WX == WX;
    let other_class =
        !owner_is_us && entry.group.is_none_or(|g| !identity.in_group(g)) && mode & WX == WX;
    if user_class || group_class || other_class {
        return None;
    }
    // Name what is missing from the class that would apply to the identity.
    let bits = if owner_is_us || !others_own && entry.group.is_none() {
        mode >> 6
    } else if entry.group.is_some_and(|g| identity.in_group(g)) {
        mode >> 3
    } else {
        mode
    };
    let lacks = match (bits & 0o2 == 0, bits & 0o1 == 0) {
        (true, true) => "neither write nor search it",
        (true, false) => "search it but not write there",
        _ => "write there but not search it",
    };
    Some(format!(
        "mode {mode:04o} with {} lets uid {} {lacks}",
        match (entry.owner, entry.group) {
            (Some(o), Some(g)) => format!("owner {o} and group {g}"),
            (Some(o), None) => format!("owner {o}"),
            (None, Some(g)) => format!("group {g}"),
            (None, None) => "any owner".to_string(),
        },
        identity.uid
    ))
}

/// The state `entry` should end in, given its current state (None when it is missing).
pub fn target(entry: &Entry, identity: &Identity, current: Option<Meta>) -> Target {
    // A new directory owned by the runtime user gets its group too, like `install -o -g`.
    let new_gid = if entry.owner == Some(identity.uid) { identity.gid } else { 0 };
    let base = current.unwrap_or(Meta { uid: 0, gid: new_gid, mode: 0o755 });
    let mut meta = Meta {
        uid: entry.owner.unwrap_or(base.uid),
        gid: entry.group.unwrap_or(base.gid),
        mode: entry.mode.unwrap_or(base.mode),
    };
    let mut chosen = Vec::new();
    if !entry.writable || can_write(identity, meta) {
        return Target { meta, chosen };
    }
    let mode_allows = |shift: u32| entry.mode.is_none_or(|m| m >> shift & WX == WX);
    if entry.owner.is_none() && mode_allows(6) {
        meta.uid = identity.uid;
        if entry.group.is_none() {
            meta.gid = identity.gid;
        }
        chosen.push(format!(
            "owner not set: chose the runtime user {} so it can write",
            identity.uid
        ));
        if entry.mode.is_none() {
            meta.mode |= 0o700;
        }
    } else if entry.group.is_none() && entry.owner != Some(identity.uid) && mode_allows(3) {
        meta.gid = identity.gid;
        chosen.push(format!(
            "group not set: chose the runtime group {} so it can write",
            identity.gid
        ));
        if entry.mode.is_none() {
            meta.mode |= 0o070;
        }
    } else if entry.mode.is_none() {
        let shift = if meta.uid == identity.uid {
            6
        } else if identity.in_group(meta.gid) {
            3
        } else {
            0
        };
        meta.mode |= WX << shift;
        if shift == 0 {
            // Writable by everyone: at least nobody may delete or rename another's files.
            meta.mode |= 0o1000;
            chosen.push(format!(
                "mode not set: uid {} is neither the owner nor in the group, so only others' \
                 bits could let it write; added write and search for others, with the sticky bit",
                identity.uid
            ));
        } else {
            chosen.push(format!("mode not set: added write and search for uid {}", identity.uid));
        }
    }
    Target { meta, chosen }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(owner: Option<u32>, group: Option<u32>, mode: Option<u32>) -> Entry {
        Entry {
            path: "/x".into(),
            owner,
            group,
            mode,
            create: true,
            writable: true,
            recursive: false,
            dir_mode: None,
            file_mode: None,
            allow_hardlinks: false,
        }
    }

    fn user() -> Identity {
        Identity { uid: 10001, gid: 10001, groups: vec![10001, 44], name: None, home: "/".into() }
    }

    #[test]
    fn impossible_writability_is_detected() {
        assert!(unwritable_by_design(&entry(None, None, Some(0o555)), &user()).is_some());
        assert!(unwritable_by_design(&entry(Some(0), Some(0), Some(0o755)), &user()).is_some());
        assert!(unwritable_by_design(&entry(Some(10001), None, Some(0o575)), &user()).is_some());
        assert!(unwritable_by_design(&entry(Some(0), Some(44), Some(0o770)), &user()).is_none());
        assert!(unwritable_by_design(&entry(Some(0), None, Some(0o770)), &user()).is_none());
        assert!(unwritable_by_design(&entry(None, None, None), &user()).is_none());
    }

    #[test]
    fn a_missing_writable_dir_goes_to_the_runtime_user() {
        let t = target(&entry(None, None, None), &user(), None);
        assert_eq!(t.meta, Meta { uid: 10001, gid: 10001, mode: 0o755 });
        assert_eq!(t.chosen.len(), 1);
    }

    #[test]
    fn a_fixed_owner_gets_the_runtime_group() {
        let t = target(
            &entry(Some(0), None, None),
            &user(),
            Some(Meta { uid: 0, gid: 0, mode: 0o755 }),
        );
        assert_eq!(t.meta, Meta { uid: 0, gid: 10001, mode: 0o775 });
    }

    #[test]
    fn a_writable_dir_is_left_alone() {
        let now = Meta { uid: 0, gid: 44, mode: 0o770 };
        let t = target(&entry(None, None, None), &user(), Some(now));
        assert_eq!((t.meta, t.chosen.len()), (now, 0));
    }
}
