//! The report: one set of types, printed as text for people and serialized as JSON for
//! machines. Printers take `impl Write` and never decide colour themselves.

use std::io::{self, Write};
use std::path::Path;

use colored::Colorize;
use serde::{Serialize, Serializer};

use crate::identity::Identity;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Exists,
    Type,
    Owner,
    Group,
    Mode,
    Ancestors,
    Writable,
    ReadOnly,
    /// Everything below a `recursive` entry.
    Contents,
    /// What `apply` was asked to do but refused or could not.
    Apply,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Exists => "exists",
            CheckKind::Type => "type",
            CheckKind::Owner => "owner",
            CheckKind::Group => "group",
            CheckKind::Mode => "mode",
            CheckKind::Ancestors => "ancestors",
            CheckKind::Writable => "writable",
            CheckKind::ReadOnly => "read_only",
            CheckKind::Contents => "contents",
            CheckKind::Apply => "apply",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// An expected or actual value. Ids serialize as numbers and print as `name(id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Id { id: u32, label: String },
    Mode(u32),
    Count(u64),
    Text(String),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Id { id, .. } => s.serialize_u32(*id),
            Value::Mode(m) => s.serialize_str(&format!("{m:04o}")),
            Value::Count(n) => s.serialize_u64(*n),
            Value::Text(t) => s.serialize_str(t),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Id { label, .. } => f.write_str(label),
            Value::Mode(m) => write!(f, "{m:04o}"),
            Value::Count(n) => write!(f, "{n}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: CheckKind,
    pub status: Status,
    pub expected: Option<Value>,
    pub actual: Option<Value>,
    pub message: String,
    /// The first few items that differ, for checks over many (`contents`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<String>,
}

impl Check {
    pub fn new(check: CheckKind, status: Status, message: impl Into<String>) -> Check {
        let message = message.into();
        Check { check, status, expected: None, actual: None, message, samples: Vec::new() }
    }

    pub fn values(mut self, expected: Option<Value>, actual: Option<Value>) -> Check {
        self.expected = expected;
        self.actual = actual;
        self
    }
}

/// A way to fix an entry, for one place the user may be.
#[derive(Debug, Clone, Serialize)]
pub struct Fix {
    /// What `command` is, so that a script knows what to do with it.
    pub kind: FixKind,
    /// Where it applies, in words.
    #[serde(rename = "where")]
    pub place: String,
    pub command: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FixKind {
    /// A Dockerfile instruction (`RUN ...`).
    Dockerfile,
    /// A shell command line.
    Command,
    /// A fragment of a Kubernetes pod spec.
    Kubernetes,
    /// Advice in words: no single command does it.
    Advice,
}

impl Fix {
    pub fn command(place: impl Into<String>, command: String) -> Fix {
        Fix { kind: FixKind::Command, place: place.into(), command }
    }

    pub fn advice(place: impl Into<String>, text: String) -> Fix {
        Fix { kind: FixKind::Advice, place: place.into(), command: text }
    }
}

/// A change `apply` made (or would make, with `--dry-run`).
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub action: Action,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    pub after: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Chown,
    Chmod,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Chown => "chown",
            Action::Chmod => "chmod",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EntryReport {
    /// The manifest's path, escaped like every path in the report.
    pub path: String,
    pub status: Status,
    /// The path with symlinked ancestors resolved, when it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    pub checks: Vec<Check>,
    /// Owner, group and mode as found, for the text report's entry line.
    #[serde(skip)]
    pub found: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fixes: Vec<Fix>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<Change>>,
    /// Changes made beyond those listed in `changes`.
    #[serde(skip_serializing_if = "is_zero")]
    pub changes_not_listed: usize,
}

impl EntryReport {
    pub fn new(path: String, checks: Vec<Check>) -> EntryReport {
        let status = if checks.iter().any(|c| c.status == Status::Fail) {
            Status::Fail
        } else {
            Status::Pass
        };
        EntryReport {
            path,
            status,
            resolved: None,
            checks,
            found: None,
            notes: Vec::new(),
            fixes: Vec::new(),
            changes: None,
            changes_not_listed: 0,
        }
    }

    pub fn failed(&self) -> bool {
        self.status == Status::Fail
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub entries: usize,
    pub passed: usize,
    pub failed: usize,
    pub checks_failed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub version: u32,
    pub command: &'static str,
    pub root: String,
    pub identity: Identity,
    /// `probed` or `computed` (with the reason when a probe failed).
    pub writability: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    pub entries: Vec<EntryReport>,
    pub summary: Summary,
}

impl Report {
    pub fn new(
        command: &'static str,
        root: &Path,
        identity: &Identity,
        writability: String,
        entries: Vec<EntryReport>,
    ) -> Report {
        let summary = Summary {
            entries: entries.len(),
            passed: entries.iter().filter(|e| !e.failed()).count(),
            failed: entries.iter().filter(|e| e.failed()).count(),
            checks_failed: entries
                .iter()
                .flat_map(|e| &e.checks)
                .filter(|c| c.status == Status::Fail)
                .count(),
            changed: entries
                .iter()
                .map(|e| e.changes.as_ref().map(|c| c.len() + e.changes_not_listed))
                .sum::<Option<usize>>(),
        };
        Report {
            version: SCHEMA_VERSION,
            command,
            root: escape(root.as_os_str().as_encoded_bytes()),
            identity: identity.clone(),
            writability,
            dry_run: false,
            entries,
            summary,
        }
    }

    pub fn passed(&self) -> bool {
        self.summary.failed == 0
    }

    pub fn write_json(&self, mut out: impl Write, pretty: bool) -> io::Result<()> {
        if pretty {
            serde_json::to_writer_pretty(&mut out, self)?;
        } else {
            serde_json::to_writer(&mut out, self)?;
        }
        writeln!(out)
    }

    /// The human report. `quiet` prints failures only, and nothing when all pass.
    pub fn write_text(&self, mut out: impl Write, quiet: bool) -> io::Result<()> {
        if quiet && self.passed() {
            return Ok(());
        }
        let mut heading = format!(
            "fs-preflight {}{}: {} for {}",
            self.command,
            if self.dry_run { " --dry-run" } else { "" },
            plural(self.summary.entries, "entry", "entries"),
            self.identity.describe()
        );
        if self.root != "/" {
            heading.push_str(&format!(" (paths inside root {})", self.root));
        }
        writeln!(out, "{}", heading.bold())?;
        for entry in self.entries.iter().filter(|e| !quiet || e.failed()) {
            write_entry(&mut out, entry, self.dry_run)?;
        }
        let mut tail = format!(
            "{} of {} pass, {} fail ({}); writability {}",
            self.summary.passed,
            plural(self.summary.entries, "entry", "entries"),
            self.summary.failed,
            plural(self.summary.checks_failed, "failed check", "failed checks"),
            self.writability
        );
        if let Some(changed) = self.summary.changed {
            let verb = if self.dry_run { "to make" } else { "made" };
            tail.push_str(&format!("; {} {verb}", plural(changed, "change", "changes")));
        }
        let tail = if self.passed() { tail.green() } else { tail.red() };
        writeln!(out, "{tail}")
    }
}

/// Changes shown per entry in the text report; JSON lists more.
const TEXT_CHANGES: usize = 20;

fn write_entry(out: &mut impl Write, entry: &EntryReport, dry_run: bool) -> io::Result<()> {
    let verdict = match entry.status {
        Status::Fail => "FAIL".red().bold(),
        _ => "ok  ".green(),
    };
    let via = entry.resolved.as_ref().map(|r| format!(" (resolved: {r})")).unwrap_or_default();
    let found = entry.found.as_ref().map(|f| format!("  {}", f.dimmed())).unwrap_or_default();
    writeln!(out, "{verdict}  {}{via}{found}", entry.path)?;
    let changes = entry.changes.as_deref().unwrap_or_default();
    for change in changes.iter().take(TEXT_CHANGES) {
        let before = change.before.as_ref().map(|b| format!("{b} -> ")).unwrap_or_default();
        let action = match dry_run {
            true => format!("would {}", change.action.name()),
            false => change.action.name().to_string(),
        };
        writeln!(out, "      {} {}: {before}{}", action.cyan(), change.path, change.after)?;
    }
    let more = changes.len().saturating_sub(TEXT_CHANGES) + entry.changes_not_listed;
    if more > 0 {
        writeln!(
            out,
            "      ... and {} (--format json lists more)",
            plural(more, "more change", "more changes")
        )?;
    }
    for check in entry.checks.iter().filter(|c| c.status == Status::Fail) {
        writeln!(out, "      {}: {}", check.check.name().bold(), check.message)?;
    }
    for note in &entry.notes {
        writeln!(out, "      {} {note}", "note:".yellow())?;
    }
    if !entry.fixes.is_empty() {
        writeln!(out, "      {}", "fix:".bold())?;
        for fix in &entry.fixes {
            writeln!(out, "        {}:", fix.place)?;
            writeln!(out, "          {}", fix.command)?;
        }
    }
    Ok(())
}

/// Makes a path safe to print: printable UTF-8 passes, anything else is escaped, so that
/// a hostile file name cannot move the cursor or forge a report line.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() || invisible(c) => {
                    out.push_str(&format!("\\u{{{:x}}}", c as u32))
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `1 entry`, `2 entries`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Quotes a word for a POSIX shell (a Dockerfile `RUN` line) when it needs quoting.
pub fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Characters that change how the text around them is shown without showing themselves:
/// bidirectional overrides and isolates (which can make a path read backwards), zero-width
/// characters, and the byte-order mark.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}'
        | '\u{feff}' | '\u{061c}' | '\u{180e}')
}

/// [`escape`] for a path. A path longer than any system call takes (a hostile tree can nest
/// thousands of long names) is shown by its two ends, so a report stays readable and its
/// size does not grow with the square of the depth.
pub fn show(path: &Path) -> String {
    const END: usize = 1024;
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.len() <= 4 * END {
        return escape(bytes);
    }
    let cut = bytes.len() - 2 * END;
    let (head, tail) = (&bytes[..END], &bytes[bytes.len() - END..]);
    format!("{}...({cut} bytes)...{}", escape(head), escape(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn very_long_paths_are_shown_by_their_ends() {
        let long = format!("/{}", "a/".repeat(5000));
        let shown = show(Path::new(&long));
        assert!(shown.len() < 2100 + 40, "{}", shown.len());
        assert!(shown.contains("bytes)...") && shown.starts_with("/a/a/"));
        assert_eq!(show(Path::new("/short")), "/short");
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(quote("/app/data"), "/app/data");
        assert_eq!(quote("/app/my media"), "'/app/my media'");
        assert_eq!(quote("/a$b"), "'/a$b'");
        assert_eq!(quote("/it's"), "'/it'\\''s'");
    }

    #[test]
    fn hostile_names_are_escaped() {
        assert_eq!(escape(b"/a/b c"), "/a/b c");
        assert_eq!(escape(b"/a\n\x1b[2J"), "/a\\n\\u{1b}[2J");
        assert_eq!(escape(b"/\xff/\\"), "/\\xff/\\\\");
        assert_eq!(escape("/a\u{202e}b".as_bytes()), "/a\\u{202e}b");
    }
}
