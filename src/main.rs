//! fs-preflight: makes sure a container's directories are ready for the user it runs as.
//!
//! `main` parses the command line, runs one command, and turns the outcome into an exit
//! code: 0 when every entry passes, 1 when a check fails, 2 for usage, manifest and
//! environment errors (errors win).

mod access;
mod apply;
mod check;
mod cli;
mod exec;
mod identity;
mod manifest;
mod policy;
mod privs;
mod report;
mod resolve;
mod sys;
mod walk;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::access::Method;
use crate::cli::{Cli, Command, Common, Format};
use crate::report::Report;

const FAILED: u8 = 1;
const ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    sys::raise_fd_limit();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fs-preflight: error: {e:#}");
            ExitCode::from(ERROR)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let common = &cli.common;
    match &cli.command {
        Command::Check => {
            common.apply_color(Common::stdout_is_terminal());
            let report = check_setup(common, &common.setup()?)?;
            emit(common, &report, std::io::stdout().lock())?;
            Ok(verdict(&report))
        }
        Command::Apply { dry_run } => {
            common.apply_color(Common::stdout_is_terminal());
            let setup = common.setup()?;
            let opts = apply::Options { dry_run: *dry_run, log: common.verbose };
            let report = apply::run(&setup, opts)?;
            emit(common, &report, std::io::stdout().lock())?;
            Ok(verdict(&report))
        }
        Command::Exec { apply, warn_only, argv } => {
            common.apply_color(std::io::stderr().is_terminal());
            let setup = common.setup()?;
            exec::ensure_can_become(&setup.identity)?;
            let mut report = if *apply && nix::unistd::geteuid().is_root() {
                let opts = apply::Options { dry_run: false, log: common.verbose };
                apply::run(&setup, opts)?
            } else {
                check_setup(common, &setup)?
            };
            report.command = "exec";
            emit(common, &report, std::io::stderr().lock())?;
            if *apply && !report.passed() && !nix::unistd::geteuid().is_root() {
                eprintln!("fs-preflight: --apply needs root: nothing was fixed, only checked");
            }
            if !report.passed() && !*warn_only {
                eprintln!("fs-preflight: not starting {:?}: the checks failed", argv[0]);
                return Ok(ExitCode::from(FAILED));
            }
            exec::exec(&setup.identity, argv)
        }
    }
}

fn check_setup(common: &Common, setup: &cli::Setup) -> Result<Report> {
    let method = Method::choose(&setup.identity, !common.no_probe);
    let ctx = check::Context::new(setup, method);
    let entries = check::check_all(&ctx, &setup.entries)?;
    Ok(Report::new("check", &setup.root.host, &setup.identity, ctx.writability(), entries))
}

/// Prints the report. A reader that went away (`| head`) is not an error: the exit code
/// still carries the verdict.
fn emit(common: &Common, report: &Report, out: impl Write) -> Result<()> {
    let written = match common.format {
        // exec shares stderr with the program: one line, so a log reader can pick it out.
        Format::Json => report.write_json(out, report.command != "exec"),
        Format::Text => report.write_text(out, common.quiet),
    };
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn verdict(report: &Report) -> ExitCode {
    if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(FAILED) }
}
