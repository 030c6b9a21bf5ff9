//! Command-line arguments, and the one place that turns them into what a run needs: the
//! root, the account files, the manifest and the identity. The rest of the tool never sees
//! clap types.

use std::ffi::{OsStr, OsString};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::stat::FileStat;

use crate::identity::{Accounts, Identity};
use crate::manifest::{self, Entry, Manifest};
use crate::report::{escape, quote};
use crate::resolve::{self, Root};

/// Make sure a container's directories are ready for the user it runs as.
#[derive(Debug, Parser)]
#[command(name = "fs-preflight", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Common {
    /// Manifest file [default: $FS_PREFLIGHT_MANIFEST, ./fs-preflight.toml, /etc/fs-preflight.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// Runtime identity: name, uid, uid:gid or name:group (overrides the manifest's `user`)
    #[arg(long, global = true, value_name = "SPEC")]
    pub user: Option<String>,

    /// Treat DIR as the container's `/`: paths, symlinks and /etc/passwd resolve inside it
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Report format
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// When to colour the text report (NO_COLOR in the environment always turns it off)
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Print nothing when every entry passes, and only failing entries otherwise
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Compute writability from mode bits, groups and ACLs instead of probing
    #[arg(long, global = true)]
    pub no_probe: bool,

    /// Log each change apply makes to stderr as it happens
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every entry; exit 0 if all pass, 1 if any check fails, 2 on errors
    Check,
    /// Create, chown and chmod what differs from the manifest (as root), then check
    Apply {
        /// Print the plan against the real state and change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Check (and with --apply fix), then drop to the runtime user and exec CMD
    Exec {
        /// Apply the manifest first (needs root)
        #[arg(long)]
        apply: bool,
        /// Start CMD even when a check fails
        #[arg(long)]
        warn_only: bool,
        /// The program and its arguments
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        argv: Vec<OsString>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Everything a command needs, checked.
pub struct Setup {
    pub root: Root,
    pub accounts: Accounts,
    pub identity: Identity,
    pub entries: Vec<Entry>,
    /// The options that chose the manifest, root and user, to repeat in suggested commands.
    pub repeat_flags: String,
}

impl Common {
    /// Decides colour once, for the stream the report goes to.
    pub fn apply_color(&self, report_is_terminal: bool) {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let on = !no_color
            && match self.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => report_is_terminal,
            };
        colored::control::set_override(on);
    }

    pub fn stdout_is_terminal() -> bool {
        std::io::stdout().is_terminal()
    }

    /// Loads the root, accounts, manifest and identity, in that order.
    pub fn setup(&self) -> Result<Setup> {
        let root = Root::open(self.root.as_deref().unwrap_or(Path::new("/")))?;
        let accounts = Accounts::load(&root)?;
        let manifest = self.load_manifest(&root)?;
        let identity = match (&self.user, &manifest.user) {
            (Some(spec), _) => accounts.resolve(spec).context("--user")?,
            (None, Some(spec)) => accounts
                .resolve(spec.get_ref())
                .map_err(|e| manifest.error_at(spec.span(), format!("user: {e:#}")))?,
            (None, None) => accounts.current(),
        }
        .as_held_here(&accounts);
        let entries = manifest.resolve(&accounts, &identity)?;
        Ok(Setup { root, accounts, identity, entries, repeat_flags: self.repeat_flags() })
    }

    /// Finds and reads the manifest: named by --manifest or FS_PREFLIGHT_MANIFEST, else
    /// ./fs-preflight.toml, else /etc/fs-preflight.toml inside the root.
    fn load_manifest(&self, root: &Root) -> Result<Manifest> {
        let env = |name: &str| std::env::var(name).ok();
        let named = self.manifest.clone().or_else(|| {
            std::env::var_os("FS_PREFLIGHT_MANIFEST").filter(|v| !v.is_empty()).map(PathBuf::from)
        });
        if let Some(file) = named {
            return manifest::load(&file, &env);
        }
        let here = Path::new("fs-preflight.toml");
        if let Ok(st) = nix::sys::stat::lstat(here) {
            let dir = nix::sys::stat::stat(".").ok();
            match untrusted(&st).or_else(|| dir.as_ref().and_then(untrusted_dir)) {
                None => return manifest::load(here, &env),
                Some(why) => eprintln!("fs-preflight: ignoring ./fs-preflight.toml: {why}"),
            }
        }
        let etc = Path::new("/etc/fs-preflight.toml");
        let shown = root.host_path(etc);
        match resolve::read_file(root, etc, manifest::MANIFEST_CAP)? {
            Some(read) => {
                if let Some(why) = untrusted(&read.st).or_else(|| untrusted_dir(&read.dir_st)) {
                    bail!("refusing the manifest {}: {why}", shown.display());
                }
                manifest::from_bytes(&shown, read.bytes, &env)
            }
            None => bail!(
                "no manifest: pass --manifest FILE, set FS_PREFLIGHT_MANIFEST, or create \
                 ./fs-preflight.toml or {}",
                shown.display()
            ),
        }
    }

    /// ` --manifest FILE --root DIR --user SPEC`, as far as they were given.
    fn repeat_flags(&self) -> String {
        let mut out = String::new();
        let mut add = |flag: &str, value: &OsStr| {
            out.push_str(&format!(" {flag} {}", quote(&escape(value.as_encoded_bytes()))));
        };
        if let Some(m) = &self.manifest {
            add("--manifest", m.as_os_str());
        }
        if let Some(r) = &self.root {
            add("--root", r.as_os_str());
        }
        if let Some(u) = &self.user {
            add("--user", OsStr::new(u));
        }
        out
    }
}

/// A manifest found without being named is refused when root runs and someone else could
/// have written it: as an entrypoint, root may start in a directory the app user owns, and
/// must not apply that user's manifest. Each of these says why, or None when it may be used.
fn untrusted(st: &FileStat) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG {
        return Some("running as root, it must be a regular file, not a symlink".into());
    }
    if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Some(format!(
            "running as root, it must be root's and writable by nobody else (owner uid {}, \
             mode {:04o}); name it with --manifest to use it anyway",
            st.st_uid,
            st.st_mode & 0o7777
        ));
    }
    None
}

/// The directory holding an unnamed manifest: root's, and nobody else may add or replace
/// files in it (a sticky directory keeps others from replacing root's file).
fn untrusted_dir(st: &FileStat) -> Option<String> {
    let others_write = st.st_mode & 0o022 != 0 && st.st_mode & libc::S_ISVTX == 0;
    (nix::unistd::geteuid().is_root() && (st.st_uid != 0 || others_write)).then(|| {
        format!(
            "running as root, its directory must be root's and writable by nobody else \
             (owner uid {}, mode {:04o})",
            st.st_uid,
            st.st_mode & 0o7777
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_before_and_after_the_command() {
        let cli =
            Cli::try_parse_from(["fs-preflight", "--format", "json", "check", "--user", "1:2"])
                .unwrap();
        assert_eq!(cli.common.format, Format::Json);
        assert_eq!(cli.common.user.as_deref(), Some("1:2"));
    }

    #[test]
    fn exec_takes_the_rest_as_the_command() {
        let cli =
            Cli::try_parse_from(["fs-preflight", "exec", "--apply", "--", "app", "--port", "80"])
                .unwrap();
        match cli.command {
            Command::Exec { apply, argv, .. } => {
                assert!(apply);
                assert_eq!(argv, ["app", "--port", "80"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["fs-preflight", "exec"]).is_err());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let e = Cli::try_parse_from(["fs-preflight", "--format", "xml", "check"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = Cli::try_parse_from(["fs-preflight", "--color", "sometimes", "check"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
