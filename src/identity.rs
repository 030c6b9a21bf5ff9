//! Who the container runs as, resolved the way container runtimes resolve it.
//!
//! Names come from `<root>/etc/passwd` and `<root>/etc/group`, read directly: no NSS, so a
//! static binary behaves the same in a distroless or scratch image as on a full host. The
//! rules are runc's (shared by Docker, gosu and OpenShift):
//!
//! * `name` or a `uid` that has a passwd entry: the passwd gid, plus every group in
//!   /etc/group that lists the name as a member;
//! * `user:group` (either side a name or a number): exactly that gid, no other groups;
//! * a `uid` with no passwd entry: gid 0, HOME `/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::report::escape;
use crate::resolve::{self, Root};

/// Account files are a few KiB; a larger one is not an account file.
const ACCOUNT_FILE_CAP: u64 = 16 << 20;

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The account files of one root, parsed once.
#[derive(Debug, Default)]
pub struct Accounts {
    pub passwd_file: PathBuf,
    pub group_file: PathBuf,
    users: Vec<User>,
    groups: Vec<Group>,
}

/// The identity every check is made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Every group the identity holds, the primary one first, without repeats.
    pub groups: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip)]
    pub home: String,
}

impl Accounts {
    /// Reads `<root>/etc/passwd` and `<root>/etc/group`. A missing file is an empty one:
    /// scratch images often have neither, and numeric ids still work there.
    pub fn load(root: &Root) -> Result<Accounts> {
        let read = |path: &str| -> Result<Option<String>> {
            let read = resolve::read_file(root, Path::new(path), ACCOUNT_FILE_CAP)?;
            Ok(read.map(|r| String::from_utf8_lossy(&r.bytes).into_owned()))
        };
        let users = read("/etc/passwd")?.map(|t| parse_passwd(&t)).unwrap_or_default();
        let groups = read("/etc/group")?.map(|t| parse_group(&t)).unwrap_or_default();
        Ok(Accounts {
            passwd_file: root.host_path(Path::new("/etc/passwd")),
            group_file: root.host_path(Path::new("/etc/group")),
            users,
            groups,
        })
    }

    pub fn user_by_name(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn user_by_uid(&self, uid: u32) -> Option<&User> {
        self.users.iter().find(|u| u.uid == uid)
    }

    pub fn group_by_name(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn group_by_gid(&self, gid: u32) -> Option<&Group> {
        self.groups.iter().find(|g| g.gid == gid)
    }

    /// Resolves a user spec: `name`, `uid`, `user:group`.
    pub fn resolve(&self, spec: &str) -> Result<Identity> {
        let (user_part, group_part) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if user_part.is_empty() || group_part.is_some_and(|g| g.is_empty() || g.contains(':')) {
            bail!("user {spec:?} is not of the form name, uid, uid:gid or name:group");
        }
        let entry = match numeric(user_part, "user")? {
            Some(uid) => self.user_by_uid(uid).cloned().ok_or(uid),
            None => Ok(self.user_by_name(user_part).cloned().with_context(|| {
                format!("unknown user {user_part:?}: not in {}", self.passwd_file.display())
            })?),
        };
        let explicit_gid = match group_part {
            None => None,
            Some(g) => Some(match numeric(g, "group")? {
                Some(gid) => gid,
                None => self.group_by_name(g).map(|g| g.gid).with_context(|| {
                    format!("unknown group {g:?}: not in {}", self.group_file.display())
                })?,
            }),
        };
        let identity = match (entry, explicit_gid) {
            (Ok(user), Some(gid)) => Identity {
                uid: user.uid,
                gid,
                groups: vec![gid],
                name: Some(user.name),
                home: user.home,
            },
            (Ok(user), None) => {
                let mut groups = vec![user.gid];
                for g in self.groups.iter().filter(|g| g.members.contains(&user.name)) {
                    if !groups.contains(&g.gid) {
                        groups.push(g.gid);
                    }
                }
                Identity {
                    uid: user.uid,
                    gid: user.gid,
                    groups,
                    name: Some(user.name),
                    home: user.home,
                }
            }
            (Err(uid), gid) => {
                let gid = gid.unwrap_or(0);
                Identity { uid, gid, groups: vec![gid], name: None, home: "/".into() }
            }
        };
        Ok(identity)
    }

    /// The identity of this process: real ids and its actual supplementary groups.
    pub fn current(&self) -> Identity {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let mut groups = vec![gid];
        for g in nix::unistd::getgroups().unwrap_or_default() {
            if !groups.contains(&g.as_raw()) {
                groups.push(g.as_raw());
            }
        }
        let user = self.user_by_uid(uid);
        Identity {
            uid,
            gid,
            groups,
            name: user.map(|u| u.name.clone()),
            home: user.map_or_else(|| "/".to_string(), |u| u.home.clone()),
        }
    }

    /// `name(uid)` where a name exists, the bare number otherwise.
    pub fn user_label(&self, uid: u32) -> String {
        match self.user_by_uid(uid) {
            Some(u) => format!("{}({uid})", escape(u.name.as_bytes())),
            None => uid.to_string(),
        }
    }

    pub fn group_label(&self, gid: u32) -> String {
        match self.group_by_gid(gid) {
            Some(g) => format!("{}({gid})", escape(g.name.as_bytes())),
            None => gid.to_string(),
        }
    }
}

impl Identity {
    /// True when this process holds exactly this identity, so it can probe by itself.
    pub fn is_current_process(&self) -> bool {
        use nix::unistd::{getegid, geteuid, getgroups};
        if geteuid().as_raw() != self.uid || getegid().as_raw() != self.gid {
            return false;
        }
        let mut ours: Vec<u32> =
            getgroups().unwrap_or_default().iter().map(|g| g.as_raw()).collect();
        ours.push(self.gid);
        ours.sort_unstable();
        ours.dedup();
        let mut theirs = self.groups.clone();
        theirs.sort_unstable();
        ours == theirs
    }

    /// This identity as the process will really hold it. Root can take any identity. A
    /// process that is not root keeps what it is: when its uid and gid are this identity's,
    /// that includes the extra groups its runtime gave it (Kubernetes fsGroup and
    /// supplementalGroups add some, and only root could drop them), so checks are made
    /// for the groups it really has. Any other identity is returned unchanged, for checks
    /// computed on its behalf.
    pub fn as_held_here(&self, accounts: &Accounts) -> Identity {
        use nix::unistd::{getegid, geteuid};
        if geteuid().is_root() || self.is_current_process() {
            return self.clone();
        }
        let me = accounts.current();
        let effective = (geteuid().as_raw(), getegid().as_raw());
        if (me.uid, me.gid) == (self.uid, self.gid) && effective == (me.uid, me.gid) {
            return Identity { name: self.name.clone(), home: self.home.clone(), ..me };
        }
        self.clone()
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.groups.contains(&gid)
    }

    /// A short description for reports: `appuser(10001) gid 10001 groups 10001,44`.
    pub fn describe(&self) -> String {
        let who = match &self.name {
            Some(n) => format!("{}({})", escape(n.as_bytes()), self.uid),
            None => self.uid.to_string(),
        };
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        format!("{who}, gid {}, groups {}", self.gid, groups.join(","))
    }
}

fn numeric(text: &str, what: &str) -> Result<Option<u32>> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let n: i64 = text.parse().map_err(|_| anyhow::anyhow!("{what} id {text} is out of range"))?;
    crate::manifest::check_id(n, what).map(Some).map_err(anyhow::Error::msg)
}

/// Fields of the non-comment lines of a colon-separated account file. NIS compat lines
/// (`+`/`-`) name no local account and are skipped, like malformed ones.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(['+', '-']))
        .map(|l| l.split(':').collect())
}

fn parse_passwd(text: &str) -> Vec<User> {
    records(text)
        .filter(|f| f.len() >= 7)
        .filter_map(|f| {
            Some(User {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                // An empty home is `/`, as runtimes and login(1) take it.
                home: if f[5].is_empty() { "/".to_string() } else { f[5].to_string() },
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<Group> {
    records(text)
        .filter(|f| f.len() >= 4)
        .filter_map(|f| {
            Some(Group {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3].split(',').filter(|m| !m.is_empty()).map(str::to_string).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Accounts {
        Accounts {
            users: parse_passwd(
                "root:x:0:0:root:/root:/bin/sh\n# comment\n\
                 appuser:x:10001:10001::/home/app:/bin/sh\nbroken:line\n+nis::::::\n",
            ),
            groups: parse_group("root:x:0:\nmedia:x:44:appuser,other\nappuser:x:10001:\n"),
            ..Accounts::default()
        }
    }

    #[test]
    fn a_name_gets_its_supplementary_groups() {
        let id = accounts().resolve("appuser").unwrap();
        assert_eq!((id.uid, id.gid, id.groups.clone()), (10001, 10001, vec![10001, 44]));
        assert_eq!(id.home, "/home/app");
        let by_uid = accounts().resolve("10001").unwrap();
        assert_eq!(by_uid.groups, vec![10001, 44]);
    }

    #[test]
    fn an_explicit_group_is_the_only_group() {
        let id = accounts().resolve("appuser:appuser").unwrap();
        assert_eq!(id.groups, vec![10001]);
        let id = accounts().resolve("1004:1004").unwrap();
        assert_eq!((id.uid, id.gid, id.groups.clone(), id.name), (1004, 1004, vec![1004], None));
    }

    #[test]
    fn an_unknown_uid_gets_gid_zero_and_root_home() {
        let id = accounts().resolve("1000000").unwrap();
        assert_eq!((id.gid, id.groups.clone(), id.home.as_str()), (0, vec![0], "/"));
    }

    #[test]
    fn unknown_names_and_reserved_ids_are_errors() {
        assert!(accounts().resolve("nobody").is_err());
        assert!(accounts().resolve("appuser:nogroup").is_err());
        assert!(accounts().resolve("4294967295").is_err());
        assert!(accounts().resolve("1:4294967295").is_err());
        assert!(accounts().resolve(":1").is_err());
        assert!(accounts().resolve("1:").is_err());
        let e = accounts().resolve("a:b:c").unwrap_err().to_string();
        assert!(e.contains("not of the form"), "{e}");
    }
}
