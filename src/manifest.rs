//! The manifest: which directories must exist, who owns them, their mode, and who must be
//! able to write there.
//!
//! Parsing keeps the byte span of every value so that each rejection names the file, line
//! and column of what is wrong. Loading happens in two steps: [`load`] reads the TOML and
//! checks what can be checked without knowing any user (paths, modes, types), and
//! [`Manifest::resolve`] turns names into numeric ids once the account files and the
//! runtime identity are known. Nothing here touches the filesystem beyond reading the file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::identity::{Accounts, Identity};
use crate::report::escape;

/// An error in the manifest, with the place it was found.
#[derive(Debug)]
pub struct ManifestError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}

impl std::error::Error for ManifestError {}

/// A manifest as written, checked for shape but with names not yet resolved.
#[derive(Debug)]
pub struct Manifest {
    pub file: PathBuf,
    text: String,
    pub user: Option<Spanned<String>>,
    entries: Vec<RawEntry>,
}

/// One `[[dir]]` entry after validation, with ids resolved to numbers.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Absolute, normalised, variables expanded: the path as the container sees it.
    pub path: String,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub mode: Option<u32>,
    pub create: bool,
    pub writable: bool,
    pub recursive: bool,
    pub dir_mode: Option<u32>,
    pub file_mode: Option<u32>,
    pub allow_hardlinks: bool,
}

/// A `[[dir]]` table as written, with its path expanded and normalised.
#[derive(Debug)]
struct RawEntry {
    path: String,
    dir: RawDir,
    /// Span of the whole table, for errors about the entry as a whole.
    span: std::ops::Range<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    user: Option<Spanned<toml::Value>>,
    #[serde(default)]
    dir: Vec<Spanned<RawDir>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    path: Spanned<String>,
    owner: Option<Spanned<toml::Value>>,
    group: Option<Spanned<toml::Value>>,
    mode: Option<Spanned<String>>,
    dir_mode: Option<Spanned<String>>,
    file_mode: Option<Spanned<String>>,
    create: Option<bool>,
    writable: Option<bool>,
    recursive: Option<bool>,
    allow_hardlinks: Option<bool>,
}

/// Paths whose contents belong to the kernel, never to an image: refused for recursive work.
pub const PSEUDO_TREES: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Reads and validates a manifest file. `env` looks up variables for `${VAR}` expansion.
pub fn load(file: &Path, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Manifest> {
    use anyhow::Context;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so that a FIFO given as the manifest fails instead of hanging.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file)
        .with_context(|| format!("cannot read manifest {}", file.display()))?;
    if !opened.metadata()?.is_file() {
        anyhow::bail!("manifest {} is not a regular file", file.display());
    }
    let bytes = crate::resolve::read_capped(opened, MANIFEST_CAP, file)?;
    from_bytes(file, bytes, env)
}

/// Parses a manifest already read; `file` names it in errors.
pub fn from_bytes(
    file: &Path,
    bytes: Vec<u8>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Manifest> {
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("manifest {} is not UTF-8", file.display()))?;
    Ok(parse(file, text, env)?)
}

/// A manifest lists directories; one over this size is a mistake or an attack.
pub const MANIFEST_CAP: u64 = 4 << 20;

/// Parses manifest text; `file` only names it in errors.
pub fn parse(
    file: &Path,
    text: String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestError> {
    let at = |span: std::ops::Range<usize>, message: String| {
        let (line, column) = line_column(&text, span.start);
        ManifestError { file: file.to_path_buf(), line, column, message }
    };
    let raw: RawManifest = match toml::from_str(&text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            return Err(at(span, escape(e.message().trim().as_bytes())));
        }
    };
    if raw.dir.is_empty() {
        return Err(at(0..0, "the manifest lists no [[dir]] entries".into()));
    }
    let mut entries: Vec<RawEntry> = Vec::new();
    for table in raw.dir {
        let span = table.span();
        let d = table.into_inner();
        let expanded = expand(d.path.get_ref(), env)
            .map_err(|m| at(d.path.span(), format!("path {:?}: {m}", d.path.get_ref())))?;
        let path = normalize(&expanded)
            .map_err(|m| at(d.path.span(), format!("path {expanded:?}: {m}")))?;
        for mode in [&d.mode, &d.dir_mode, &d.file_mode].into_iter().flatten() {
            parse_mode(mode.get_ref()).map_err(|m| at(mode.span(), m))?;
        }
        if d.recursive == Some(true) {
            if let Some(tree) = PSEUDO_TREES.iter().find(|t| is_within(&path, t)) {
                return Err(at(
                    d.path.span(),
                    format!(
                        "{} is under {tree}, a kernel filesystem: refused for recursive",
                        escape(path.as_bytes())
                    ),
                ));
            }
        } else if let Some(key) = d.dir_mode.as_ref().or(d.file_mode.as_ref()) {
            return Err(at(key.span(), "dir_mode and file_mode need recursive = true".into()));
        }
        if let Some(first) = entries.iter().find(|e| e.path == path) {
            let (line, _) = line_column(&text, first.dir.path.span().start);
            let shown = escape(path.as_bytes());
            return Err(at(
                d.path.span(),
                format!("duplicate path {shown} (first at line {line})"),
            ));
        }
        entries.push(RawEntry { path, dir: d, span });
    }
    // `user = 10001` reads as well as `user = "10001"`, like owner and group.
    let user = match raw.user {
        None => None,
        Some(v) => {
            let span = v.span();
            let spec = match v.into_inner() {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                other => {
                    let found = other.type_str();
                    return Err(at(
                        span,
                        format!("user: expected a name, uid or uid:gid string, found {found}"),
                    ));
                }
            };
            Some(Spanned::new(span, spec))
        }
    };
    Ok(Manifest { file: file.to_path_buf(), text, user, entries })
}

impl Manifest {
    /// Where in the file a span starts, as an error.
    pub fn error_at(&self, span: std::ops::Range<usize>, message: String) -> ManifestError {
        let (line, column) = line_column(&self.text, span.start);
        ManifestError { file: self.file.clone(), line, column, message }
    }

    /// Resolves owner and group names through `accounts` and rejects entries that the
    /// runtime identity could never write to, whatever `apply` did.
    pub fn resolve(
        &self,
        accounts: &Accounts,
        identity: &Identity,
    ) -> Result<Vec<Entry>, ManifestError> {
        let mut out = Vec::with_capacity(self.entries.len());
        for raw in &self.entries {
            let d = &raw.dir;
            let id = |v: &Spanned<toml::Value>, what, lookup: &dyn Fn(&str) -> Option<u32>| {
                id_value(v.get_ref(), lookup, what).map_err(|m| self.error_at(v.span(), m))
            };
            let owner = d
                .owner
                .as_ref()
                .map(|v| id(v, "user", &|n| accounts.user_by_name(n).map(|u| u.uid)))
                .transpose()?;
            let group = d
                .group
                .as_ref()
                .map(|v| id(v, "group", &|n| accounts.group_by_name(n).map(|g| g.gid)))
                .transpose()?;
            let mode_of = |m: &Option<Spanned<String>>| {
                m.as_ref().map(|m| parse_mode(m.get_ref()).expect("validated when loaded"))
            };
            let entry = Entry {
                path: raw.path.clone(),
                owner,
                group,
                mode: mode_of(&d.mode),
                create: d.create.unwrap_or(true),
                writable: d.writable.unwrap_or(true),
                recursive: d.recursive.unwrap_or(false),
                dir_mode: mode_of(&d.dir_mode),
                file_mode: mode_of(&d.file_mode),
                allow_hardlinks: d.allow_hardlinks.unwrap_or(false),
            };
            if entry.writable
                && let Some(why) = crate::policy::unwritable_by_design(&entry, identity)
            {
                let span = d.mode.as_ref().map(|m| m.span()).unwrap_or(raw.span.clone());
                return Err(self.error_at(
                    span,
                    format!("{} is writable = true, but {why}", escape(entry.path.as_bytes())),
                ));
            }
            out.push(entry);
        }
        for (b, raw) in out.iter().zip(&self.entries) {
            if let Some(why) = nesting_conflict(&out, b, identity) {
                return Err(self.error_at(raw.dir.path.span(), why));
            }
        }
        Ok(out)
    }
}

/// Why `b` cannot be protected inside a recursive entry of `entries`, or None. Whoever
/// besides root can write in that tree can rename `b` to another name and make a new one;
/// the walk would then give what `b` protected the tree's owner, group and modes. That
/// matters when `b` asks for another owner or group, or for another mode while someone
/// other than `b`'s own owner (who may chmod it anyway) can write the tree. Also used with
/// entries' resolved paths, once symlinks have been followed.
pub fn nesting_conflict(entries: &[Entry], b: &Entry, identity: &Identity) -> Option<String> {
    let differs = |x: Option<u32>, y: Option<u32>| x.is_some() && y.is_some() && x != y;
    let a = entries.iter().find(|a| {
        if !(a.recursive && a.path != b.path && is_within(&b.path, &a.path)) {
            return false;
        }
        let group_or_others = (a.mode.unwrap_or(0) | a.dir_mode.unwrap_or(0)) & 0o022 != 0;
        let writers: Vec<u32> = [a.owner, a.writable.then_some(identity.uid)]
            .into_iter()
            .flatten()
            .filter(|w| *w != 0)
            .collect();
        if writers.is_empty() && !group_or_others {
            return false;
        }
        let only_b_owner = !group_or_others && writers.iter().all(|w| Some(*w) == b.owner);
        differs(a.owner, b.owner)
            || differs(a.group, b.group)
            || (differs(a.dir_mode, b.mode) && !only_b_owner)
    })?;
    Some(format!(
        "{b} is inside {a}, a recursive entry that others than root can write: they could \
         rename {b} away, and apply would then give its contents {a}'s owner, group and modes; \
         list it outside that tree, or let only its owner write there",
        a = escape(a.path.as_bytes()),
        b = escape(b.path.as_bytes()),
    ))
}

/// Reads an owner or group value: a name looked up by `lookup`, or a number.
fn id_value(
    value: &toml::Value,
    lookup: &dyn Fn(&str) -> Option<u32>,
    what: &str,
) -> Result<u32, String> {
    match value {
        toml::Value::Integer(n) => check_id(*n, what),
        toml::Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            let n: i64 = s.parse().map_err(|_| format!("{what} id {s} is out of range"))?;
            check_id(n, what)
        }
        toml::Value::String(name) => {
            lookup(name).ok_or_else(|| format!("unknown {what} {name:?}: not in the account files"))
        }
        other => Err(format!("expected a {what} name or a numeric id, found {}", other.type_str())),
    }
}

/// Ids are 32-bit; the all-ones value means "no change" to chown and is never an id.
pub fn check_id(n: i64, what: &str) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(u32::MAX) => Err(format!("{what} id 4294967295 is reserved (it means -1)")),
        Ok(id) => Ok(id),
        Err(_) => Err(format!("{what} id {n} is out of range (0 to 4294967294)")),
    }
}

/// Parses an octal permission string such as "0755" or "2775".
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(format!("mode {text:?} is not an octal number like \"0755\""));
    }
    let mode = u32::from_str_radix(digits, 8).expect("octal digits");
    if mode > 0o7777 {
        return Err(format!("mode {text:?} is above 07777"));
    }
    Ok(mode)
}

/// Expands `${VAR}` and `${VAR:-default}`; `$$` is a literal dollar sign.
fn expand(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let Some(body) = rest.strip_prefix('{') else {
            return Err("a '$' must start ${VAR} or ${VAR:-default} (write $$ for a '$')".into());
        };
        let end = body.find('}').ok_or("unclosed ${")?;
        let (name, default) = match body[..end].split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (&body[..end], None),
        };
        let valid = name
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
        if name.is_empty() || !valid {
            return Err(format!("{name:?} is not a variable name"));
        }
        // As in the shell, `:-` also takes the default for a variable set but empty.
        let value = env(name).filter(|v| !(v.is_empty() && default.is_some()));
        match value.or_else(|| default.map(str::to_string)) {
            Some(value) => out.push_str(&value),
            None => return Err(format!("${{{name}}} is not set and has no default")),
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks that a path is absolute and free of `..`, and writes it in one canonical form.
fn normalize(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("must be absolute".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let mut out = String::with_capacity(path.len());
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err("must not contain '..'".into());
        }
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        return Err("is the root directory itself, which is never managed".into());
    }
    Ok(out)
}

/// True when `path` is `tree` or lies below it.
pub fn is_within(path: &str, tree: &str) -> bool {
    path.strip_prefix(tree).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "DATA").then(|| "/srv/data".to_string())
    }

    fn err(text: &str) -> ManifestError {
        parse(Path::new("m.toml"), text.to_string(), &env).unwrap_err()
    }

    #[test]
    fn expands_variables_and_defaults() {
        assert_eq!(expand("${DATA}/x", &env).unwrap(), "/srv/data/x");
        assert_eq!(expand("${NOPE:-/tmp}/x", &env).unwrap(), "/tmp/x");
        let empty = |_: &str| Some(String::new());
        assert_eq!(expand("${EMPTY:-/tmp}/x", &empty).unwrap(), "/tmp/x");
        assert_eq!(expand("/a${EMPTY}/x", &empty).unwrap(), "/a/x");
        assert_eq!(expand("/a/$$b", &env).unwrap(), "/a/$b");
        assert!(expand("${NOPE}/x", &env).unwrap_err().contains("not set"));
        assert!(expand("$DATA", &env).is_err());
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("//app/./data/").unwrap(), "/app/data");
        assert!(normalize("app").is_err());
        assert!(normalize("/app/../etc").is_err());
        assert!(normalize("/").is_err());
        assert!(normalize("/./").is_err());
    }

    #[test]
    fn modes_are_octal_and_bounded() {
        assert_eq!(parse_mode("0755").unwrap(), 0o755);
        assert_eq!(parse_mode("2775").unwrap(), 0o2775);
        assert_eq!(parse_mode("07777").unwrap(), 0o7777);
        assert!(parse_mode("0855").is_err());
        assert!(parse_mode("17777").is_err());
        assert!(parse_mode("rwx").is_err());
    }

    #[test]
    fn errors_carry_line_and_column() {
        let e = err("[[dir]]\npath = \"/a\"\nowner = 1\ncolour = 3\n");
        assert_eq!((e.line, e.column), (4, 1), "{e}");
        let e = err("[[dir]]\npath = \"relative\"\n");
        assert_eq!((e.line, e.column), (2, 8), "{e}");
        let e = err("[[dir]]\npath = \"/a\"\nmode = 755\n");
        assert_eq!(e.line, 3, "{e}");
        let e = err("[[dir]]\npath = \"/a\"\n[[dir]]\npath = \"/a/\"\n");
        assert!(e.message.contains("duplicate"), "{e}");
        assert_eq!(e.line, 4);
    }

    #[test]
    fn recursive_pseudo_filesystems_are_refused() {
        let e = err("[[dir]]\npath = \"/proc\"\nrecursive = true\n");
        assert!(e.message.contains("kernel filesystem"), "{e}");
        assert!(is_within("/dev/shm", "/dev"));
        assert!(!is_within("/device", "/dev"));
    }
}
