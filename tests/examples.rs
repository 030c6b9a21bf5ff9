//! The shipped examples (Dockerfile.example, examples/*.toml, examples/kubernetes/*.yaml)
//! are valid for the built binary: every fs-preflight command in them is accepted, every
//! manifest in them parses, the manifest paths they pass are the ones they ship, and, as
//! root on temp trees, the flows they describe work.

mod common;

use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Where fs-preflight looks for a manifest when none is named.
const DEFAULT_MANIFEST: &str = "/etc/fs-preflight.toml";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---- running the binary --------------------------------------------------------------------

fn fsp(args: &[&str]) -> Output {
    cmd().args(args).timeout(TIMEOUT).output().unwrap()
}

/// Checks that the binary accepts these arguments (everything after `fs-preflight`):
/// the options before `--`, followed by `--help`, must give the subcommand's help and exit
/// 0 (clap rejects an unknown subcommand, an unknown flag or a bad value with exit 2 even
/// when --help follows). Returns the subcommand.
#[track_caller]
fn accepted(origin: &str, args: &[String]) -> String {
    let (opts, program) = split_dashdash(args);
    let mut probe: Vec<&str> = opts.iter().map(String::as_str).collect();
    probe.push("--help");
    let out = fsp(&probe);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{origin}: `fs-preflight {}` is not accepted by the binary:\n{}",
        args.join(" "),
        stderr(&out)
    );
    let usage = stdout(&out);
    let sub = usage
        .lines()
        .find_map(|l| l.strip_prefix("Usage: fs-preflight "))
        .and_then(|rest| rest.split_whitespace().next())
        .filter(|s| ["check", "apply", "exec"].contains(s))
        .unwrap_or_else(|| panic!("{origin}: `fs-preflight {}` names no command", args.join(" ")))
        .to_string();
    if sub == "exec" {
        assert!(
            program.is_some_and(|p| !p.is_empty()),
            "{origin}: exec without `-- CMD`: {args:?}"
        );
    } else {
        assert!(program.is_none(), "{origin}: `--` after {sub}: {args:?}");
    }
    sub
}

/// Splits at the first `--`: options, and the program if there is a `--`.
fn split_dashdash(args: &[String]) -> (&[String], Option<&[String]>) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], Some(&args[i + 1..])),
        None => (args, None),
    }
}

/// The value of `--manifest` among the options, if any.
fn manifest_option(args: &[String]) -> Option<String> {
    let (opts, _) = split_dashdash(args);
    let mut it = opts.iter();
    while let Some(a) = it.next() {
        if a == "--manifest" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--manifest=") {
            return Some(v.to_string());
        }
    }
    None
}

/// Replaces the `--manifest` value and adds `--root`, keeping every other argument; for
/// exec, the program after `--` is replaced by `program`.
fn retarget(args: &[String], manifest: &Path, root: &Path, program: &[&str]) -> Vec<String> {
    let (opts, rest) = split_dashdash(args);
    let mut out = Vec::new();
    let mut it = opts.iter();
    while let Some(a) = it.next() {
        if a == "--manifest" {
            it.next();
        } else if !a.starts_with("--manifest=") {
            out.push(a.clone());
        }
    }
    out.extend(["--manifest".into(), manifest.display().to_string()]);
    out.extend(["--root".into(), root.display().to_string()]);
    if rest.is_some() {
        out.push("--".into());
        out.extend(program.iter().map(|s| s.to_string()));
    }
    out
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Accounts of the fake root the manifests are checked against: the Dockerfile's user.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nappuser:x:10001:10001::/app:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nappuser:x:10001:\n";

/// Checks a manifest against an empty root that has only account files: the manifest must
/// load (exit 0 or 1, never 2). Returns the JSON report.
#[track_caller]
fn manifest_loads(origin: &str, text: &str) -> serde_json::Value {
    let t = Tree::new();
    t.accounts(PASSWD, GROUP);
    let m = t.write("manifest.toml", text);
    let out = fsp(&[
        "check",
        "--format",
        "json",
        "--manifest",
        m.to_str().unwrap(),
        "--root",
        t.root().to_str().unwrap(),
    ]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{origin}: the manifest does not load (exit {:?}):\n{}\n--- manifest\n{text}",
        out.status.code(),
        stderr(&out)
    );
    json(&out)
}

// ---- Dockerfile.example --------------------------------------------------------------------

struct Instruction {
    line: usize,
    keyword: String,
    rest: String,
}

/// Instructions with continuation lines joined and comments dropped.
fn dockerfile(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_none()) {
            continue;
        }
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (line, false),
        };
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        if !acc.is_empty() {
            acc.push(' ');
        }
        acc.push_str(body);
        if continues {
            current = Some((start, acc));
        } else if !acc.trim().is_empty() {
            let acc = acc.trim().to_string();
            let (kw, rest) = acc.split_once(char::is_whitespace).unwrap_or((&acc, ""));
            out.push(Instruction {
                line: start,
                keyword: kw.to_ascii_uppercase(),
                rest: rest.trim().to_string(),
            });
        }
    }
    out
}

/// The argument lists of RUN/CMD/ENTRYPOINT: the exec form as is, the shell form split
/// into simple commands (at `&&`, `||`, `;`, `|`) and words.
fn commands_of(rest: &str) -> Vec<Vec<String>> {
    if rest.starts_with('[') {
        let argv: Vec<String> =
            serde_json::from_str(rest).unwrap_or_else(|e| panic!("bad exec form {rest:?}: {e}"));
        return vec![argv];
    }
    shell_commands(rest)
}

fn shell_commands(script: &str) -> Vec<Vec<String>> {
    let mut s = script.to_string();
    for sep in ["&&", "||", ";", "|"] {
        s = s.replace(sep, "\n");
    }
    s.lines()
        .map(|c| c.split_whitespace().map(|w| w.trim_matches(['"', '\'']).to_string()).collect())
        .filter(|c: &Vec<String>| !c.is_empty())
        .collect()
}

fn is_fs_preflight(word: &str) -> bool {
    word == "fs-preflight" || word.ends_with("/fs-preflight")
}

/// fs-preflight invocations in a command list: what follows the program name.
fn fs_preflight_args(argv: &[String]) -> Option<Vec<String>> {
    match argv.first() {
        Some(p) if is_fs_preflight(p) => Some(argv[1..].to_vec()),
        // `sh -c 'script'`
        Some(p) if (p == "sh" || p.ends_with("/sh")) && argv.get(1).is_some_and(|a| a == "-c") => {
            argv.get(2).and_then(|s| shell_commands(s).iter().find_map(|c| fs_preflight_args(c)))
        }
        _ => None,
    }
}

/// The instructions of the last stage (the runtime image).
fn final_stage(all: &[Instruction]) -> &[Instruction] {
    let start = all.iter().rposition(|i| i.keyword == "FROM").expect("no FROM");
    &all[start..]
}

fn position(stage: &[Instruction], what: &str, pred: impl Fn(&Instruction) -> bool) -> usize {
    stage.iter().position(pred).unwrap_or_else(|| panic!("Dockerfile.example: no {what}"))
}

#[test]
fn dockerfile_is_a_multi_stage_static_build() {
    let all = dockerfile(&read("Dockerfile.example"));
    let froms: Vec<&Instruction> = all.iter().filter(|i| i.keyword == "FROM").collect();
    assert!(froms.len() >= 2, "not multi-stage: {} FROM", froms.len());
    let build = froms[0].rest.to_ascii_lowercase();
    let text = read("Dockerfile.example");
    assert!(
        (build.starts_with("rust:") && build.contains("alpine")) || text.contains("-linux-musl"),
        "the build stage does not build for musl (static): FROM {build}"
    );
    let stage = final_stage(&all);
    let copy = stage
        .iter()
        .find(|i| {
            i.keyword == "COPY" && i.rest.starts_with("--from=") && i.rest.contains("fs-preflight")
        })
        .expect("the runtime stage does not copy fs-preflight from the build stage");
    let dest = copy.rest.split_whitespace().last().unwrap();
    assert!(
        dest.ends_with("/bin/fs-preflight") || dest.ends_with("/bin/") || dest.ends_with("/bin"),
        "fs-preflight is not copied onto PATH: {}",
        copy.rest
    );
}

#[test]
fn dockerfile_applies_before_user_checks_after_it_and_execs_at_start() {
    let all = dockerfile(&read("Dockerfile.example"));
    let stage = final_stage(&all);
    let sub_of = |i: &Instruction| {
        if i.keyword != "RUN" {
            return None;
        }
        commands_of(&i.rest).iter().find_map(|c| fs_preflight_args(c)).map(|a| accepted("RUN", &a))
    };
    let apply =
        position(stage, "RUN fs-preflight apply", |i| sub_of(i).as_deref() == Some("apply"));
    let user = position(stage, "USER", |i| i.keyword == "USER");
    let check =
        position(stage, "RUN fs-preflight check", |i| sub_of(i).as_deref() == Some("check"));
    assert!(apply < user, "apply (line {}) must run as root, before USER", stage[apply].line);
    assert!(user < check, "check (line {}) must run as the user, after USER", stage[check].line);
    let who = stage[user].rest.split(':').next().unwrap();
    assert!(who != "root" && who != "0", "USER {who} is root");

    let entrypoint = stage.iter().rfind(|i| i.keyword == "ENTRYPOINT").expect("no ENTRYPOINT");
    assert_eq!(commands_of(&entrypoint.rest), [["fs-preflight", "exec", "--apply", "--"]]);
    let cmd = stage.iter().rfind(|i| i.keyword == "CMD").expect("no CMD: exec has no program");
    assert!(cmd.rest.starts_with('['), "CMD must be in exec form to follow `--`: {}", cmd.rest);
    let program = &commands_of(&cmd.rest)[0];
    assert!(!program.is_empty(), "empty CMD");
    let mut full: Vec<String> = ["exec", "--apply", "--"].map(String::from).to_vec();
    full.extend(program.iter().cloned());
    assert_eq!(accepted("ENTRYPOINT + CMD", &full), "exec");
}

/// Every fs-preflight command of the Dockerfile, with the instruction index in the final
/// stage where it runs. An exec-form ENTRYPOINT gets the exec-form CMD appended, as the
/// container runtime does.
fn dockerfile_invocations(stage: &[Instruction]) -> Vec<(usize, Vec<String>)> {
    let cmd: Vec<String> = stage
        .iter()
        .rfind(|i| i.keyword == "CMD" && i.rest.starts_with('['))
        .map(|i| commands_of(&i.rest).remove(0))
        .unwrap_or_default();
    let mut out = Vec::new();
    for (n, i) in stage.iter().enumerate() {
        if ["RUN", "ENTRYPOINT"].contains(&i.keyword.as_str()) {
            for c in commands_of(&i.rest) {
                if let Some(mut args) = fs_preflight_args(&c) {
                    if i.keyword == "ENTRYPOINT" && i.rest.starts_with('[') {
                        args.extend(cmd.iter().cloned());
                    }
                    out.push((n, args));
                }
            }
        }
    }
    out
}

/// The manifest an invocation reads, as a repository file copied by the Dockerfile before
/// the command runs.
fn dockerfile_manifest_source(stage: &[Instruction], at: usize, args: &[String]) -> String {
    let wanted = manifest_option(args).unwrap_or_else(|| {
        match stage[..at]
            .iter()
            .rfind(|i| i.keyword == "ENV" && i.rest.contains("FS_PREFLIGHT_MANIFEST"))
        {
            Some(env) => env.rest.split(['=', ' ']).nth(1).unwrap().trim_matches('"').to_string(),
            None => DEFAULT_MANIFEST.to_string(),
        }
    });
    let copy = stage[..at]
        .iter()
        .filter(|i| i.keyword == "COPY" && !i.rest.contains("--from="))
        .rfind(|i| i.rest.split_whitespace().last() == Some(wanted.as_str()))
        .unwrap_or_else(|| {
            panic!(
                "Dockerfile.example: `fs-preflight {}` reads {wanted}, never copied before it",
                args.join(" ")
            )
        });
    let words: Vec<&str> = copy.rest.split_whitespace().filter(|w| !w.starts_with("--")).collect();
    assert_eq!(words.len(), 2, "COPY of the manifest copies one file: {}", copy.rest);
    words[0].to_string()
}

#[test]
fn dockerfile_commands_are_accepted_and_their_manifest_is_shipped_and_loads() {
    let all = dockerfile(&read("Dockerfile.example"));
    let stage = final_stage(&all);
    let invocations = dockerfile_invocations(stage);
    assert!(invocations.len() >= 3, "expected apply, check and exec: {}", invocations.len());
    for (at, args) in &invocations {
        let origin = format!("Dockerfile.example:{}", stage[*at].line);
        accepted(&origin, args);
        let source = dockerfile_manifest_source(stage, *at, args);
        assert!(
            repo(&source).is_file(),
            "{origin}: the manifest {source} is not in the repository"
        );
        manifest_loads(&format!("{origin} ({source})"), &read(&source));
    }
}

#[test]
fn every_shipped_manifest_file_loads() {
    let mut found = 0;
    for entry in walkdir::WalkDir::new(repo("examples")).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.path().extension().is_some_and(|e| e == "toml") {
            found += 1;
            let text = fs::read_to_string(entry.path()).unwrap();
            manifest_loads(&entry.path().display().to_string(), &text);
        }
    }
    assert!(found >= 1, "no examples/**/*.toml");
}

/// The Dockerfile's user: (name, uid, gid) from its USER, adduser -u and addgroup -g.
fn dockerfile_user() -> (String, u32, u32) {
    let all = dockerfile(&read("Dockerfile.example"));
    let stage = final_stage(&all);
    let name = stage.iter().rfind(|i| i.keyword == "USER").unwrap().rest.clone();
    let after = |cmd: &str, flag: &str| -> u32 {
        stage
            .iter()
            .filter(|i| i.keyword == "RUN")
            .flat_map(|i| commands_of(&i.rest))
            .filter(|c| c.first().is_some_and(|p| p == cmd) && c.last() == Some(&name))
            .find_map(|c| c.iter().position(|w| w == flag).map(|p| c[p + 1].parse().unwrap()))
            .unwrap_or_else(|| panic!("Dockerfile.example: no `{cmd} {flag} ID ... {name}`"))
    };
    (name.clone(), after("adduser", "-u"), after("addgroup", "-g"))
}

/// The Dockerfile's story on a temp root: `apply` as root, then `check` as the user, then
/// the entrypoint started as the user and as root.
#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn dockerfile_flow_apply_as_root_then_check_and_exec_as_the_user() {
    root_only();
    let (name, uid, gid) = dockerfile_user();
    let all = dockerfile(&read("Dockerfile.example"));
    let stage = final_stage(&all);
    let t = Tree::new();
    t.accounts(
        &format!("root:x:0:0:root:/root:/bin/sh\n{name}:x:{uid}:{gid}::/app:/sbin/nologin\n"),
        &format!("root:x:0:\n{name}:x:{gid}:\n"),
    );
    let invocations = dockerfile_invocations(stage);
    let by_sub = |sub: &str| {
        invocations.iter().find(|(_, a)| accepted("Dockerfile.example", a) == sub).unwrap()
    };
    let (at, apply) = by_sub("apply");
    let m = t.write("manifest.toml", &read(&dockerfile_manifest_source(stage, *at, apply)));
    let root = t.root();

    let out = fsp(&strs(&retarget(apply, &m, root, &[])));
    assert_exit(&out, 0);

    let (_, check) = by_sub("check");
    let out = run_as(uid, gid, &strs(&retarget(check, &m, root, &[])));
    assert_exit(&out, 0);

    // The entrypoint, as the image's user (checks only) and as root (fixes, then drops).
    let (_, exec) = by_sub("exec");
    let args = retarget(exec, &m, root, &["id", "-u"]);
    let out = run_as(uid, gid, &strs(&args));
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), format!("{uid}\n"));
    let out = fsp(&strs(&args));
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), format!("{uid}\n"));
}

// ---- Kubernetes ----------------------------------------------------------------------------

fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo("examples/kubernetes"))
        .expect("examples/kubernetes/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "expected a Kubernetes and an OpenShift example: {files:?}");
    files
}

fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            Value::deserialize(d).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|seq| seq.iter().map(|x| x.as_str().expect("a string").to_string()).collect())
        .unwrap_or_default()
}

/// One container that runs fs-preflight.
struct Container {
    origin: String,
    init: bool,
    /// Arguments after `fs-preflight`.
    args: Vec<String>,
    run_as_user: Option<u64>,
    run_as_group: Option<u64>,
    run_as_non_root: Option<bool>,
    /// (volume, mountPath, subPath)
    mounts: Vec<(String, String, Option<String>)>,
}

struct Example {
    file: PathBuf,
    docs: Vec<Value>,
    containers: Vec<Container>,
    /// Pod volumes: name -> ConfigMap name (None for other volume types).
    volumes: Vec<(String, Option<String>)>,
}

fn pod_spec(doc: &Value) -> Option<&Value> {
    let spec = doc.get("spec")?;
    match s(doc, "kind")? {
        "Pod" => Some(spec),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            spec.get("template")?.get("spec")
        }
        "CronJob" => spec.get("jobTemplate")?.get("spec")?.get("template")?.get("spec"),
        _ => None,
    }
}

fn load_example(file: &Path) -> Example {
    let docs = documents(file);
    let mut containers = Vec::new();
    let mut volumes = Vec::new();
    for doc in &docs {
        let Some(spec) = pod_spec(doc) else { continue };
        let pod_sc = spec.get("securityContext");
        for v in spec.get("volumes").and_then(Value::as_sequence).into_iter().flatten() {
            let cm = v.get("configMap").and_then(|c| s(c, "name")).map(str::to_string);
            volumes.push((s(v, "name").unwrap().to_string(), cm));
        }
        for (list, init) in [("initContainers", true), ("containers", false)] {
            for c in spec.get(list).and_then(Value::as_sequence).into_iter().flatten() {
                let mut argv = strings(c.get("command"));
                argv.extend(strings(c.get("args")));
                let Some(args) = fs_preflight_args(&argv) else { continue };
                let sc = |key: &str| {
                    c.get("securityContext")
                        .and_then(|x| x.get(key))
                        .or_else(|| pod_sc.and_then(|x| x.get(key)))
                };
                let mounts = c
                    .get("volumeMounts")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        (
                            s(m, "name").unwrap().to_string(),
                            s(m, "mountPath").unwrap().trim_end_matches('/').to_string(),
                            s(m, "subPath").map(str::to_string),
                        )
                    })
                    .collect();
                containers.push(Container {
                    origin: format!("{} {list}/{}", file.display(), s(c, "name").unwrap_or("?")),
                    init,
                    args,
                    run_as_user: sc("runAsUser").and_then(Value::as_u64),
                    run_as_group: sc("runAsGroup").and_then(Value::as_u64),
                    run_as_non_root: sc("runAsNonRoot").and_then(Value::as_bool),
                    mounts,
                });
            }
        }
    }
    Example { file: file.to_path_buf(), docs, containers, volumes }
}

impl Example {
    /// The manifest text a container reads: its --manifest path resolved through its
    /// volume mounts to a key of a ConfigMap in the same file.
    fn manifest_of(&self, c: &Container) -> String {
        let path = manifest_option(&c.args)
            .unwrap_or_else(|| panic!("{}: no --manifest (say which file it reads)", c.origin));
        let (volume, key) = c
            .mounts
            .iter()
            .find_map(|(vol, at, sub)| match sub {
                Some(sub) if path == *at => Some((vol, sub.clone())),
                None => path
                    .strip_prefix(at.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    .map(|k| (vol, k.to_string())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{}: --manifest {path} is on no volume mount", c.origin));
        let cm = self
            .volumes
            .iter()
            .find(|(name, _)| name == volume)
            .and_then(|(_, cm)| cm.as_deref())
            .unwrap_or_else(|| panic!("{}: volume {volume} is not a ConfigMap", c.origin));
        let doc = self
            .docs
            .iter()
            .find(|d| {
                s(d, "kind") == Some("ConfigMap")
                    && d.get("metadata").and_then(|m| s(m, "name")) == Some(cm)
            })
            .unwrap_or_else(|| panic!("{}: ConfigMap {cm} is not in the file", c.origin));
        doc.get("data")
            .and_then(|d| s(d, &key))
            .unwrap_or_else(|| panic!("{}: ConfigMap {cm} has no key {key}", c.origin))
            .to_string()
    }

    fn find(&self, sub: &str, init: bool) -> &Container {
        self.containers
            .iter()
            .find(|c| c.init == init && accepted(&c.origin, &c.args) == sub)
            .unwrap_or_else(|| {
                panic!(
                    "{}: no {} running fs-preflight {sub}",
                    self.file.display(),
                    if init { "initContainer" } else { "container" }
                )
            })
    }
}

fn examples() -> Vec<Example> {
    yaml_files().iter().map(|f| load_example(f)).collect()
}

fn openshift() -> Example {
    examples()
        .into_iter()
        .find(|e| e.file.file_name().unwrap().to_str().unwrap().contains("openshift"))
        .expect("no examples/kubernetes/*openshift*.yaml")
}

fn kubernetes() -> Example {
    examples()
        .into_iter()
        .find(|e| !e.file.file_name().unwrap().to_str().unwrap().contains("openshift"))
        .expect("no Kubernetes example besides the OpenShift one")
}

#[test]
fn kubernetes_commands_are_accepted_and_their_configmap_manifests_load() {
    for example in examples() {
        assert!(
            !example.containers.is_empty(),
            "{}: no container runs fs-preflight",
            example.file.display()
        );
        for c in &example.containers {
            let sub = accepted(&c.origin, &c.args);
            let manifest = example.manifest_of(c);
            let report = manifest_loads(&c.origin, &manifest);
            // exec as a non-root user cannot change identity: the manifest's user must be
            // exactly the one the container runs as, or the pod never starts.
            if sub == "exec"
                && let Some(uid) = c.run_as_user
            {
                assert_eq!(
                    report["identity"]["uid"], uid,
                    "{}: manifest user vs runAsUser",
                    c.origin
                );
                if let Some(gid) = c.run_as_group {
                    assert_eq!(
                        report["identity"]["gid"], gid,
                        "{}: manifest group vs runAsGroup",
                        c.origin
                    );
                    assert_eq!(
                        report["identity"]["groups"],
                        serde_json::json!([gid]),
                        "{}",
                        c.origin
                    );
                }
            }
        }
    }
}

#[test]
fn kubernetes_applies_as_root_in_an_init_container_and_execs_the_app_as_non_root() {
    let k = kubernetes();
    let init = k.find("apply", true);
    assert_eq!(init.run_as_user, Some(0), "{}: apply must run as root", init.origin);
    let app = k.find("exec", false);
    let uid = app.run_as_user.expect("the app container sets runAsUser");
    assert_ne!(uid, 0, "{}: the app runs as root", app.origin);
    assert_eq!(app.run_as_non_root, Some(true), "{}", app.origin);
    assert_eq!(k.manifest_of(init), k.manifest_of(app), "init and app read different manifests");

    // Every directory of the manifest lies on a volume both containers mount at the same
    // place, so what apply fixes is what the app uses.
    let manifest: toml::Table = k.manifest_of(app).parse().unwrap();
    for dir in manifest["dir"].as_array().unwrap() {
        let path = dir["path"].as_str().unwrap();
        let on = |c: &Container| {
            c.mounts
                .iter()
                .filter(|(_, at, sub)| {
                    sub.is_none() && (path == at || path.starts_with(&format!("{at}/")))
                })
                .max_by_key(|(_, at, _)| at.len())
                .map(|(v, at, _)| (v.clone(), at.clone()))
        };
        let (volume, at) =
            on(init).unwrap_or_else(|| panic!("{path} is not on a volume of the initContainer"));
        assert_eq!(on(app), Some((volume.clone(), at)), "{path}: not the same volume in the app");
        assert!(
            k.volumes.iter().any(|(v, cm)| *v == volume && cm.is_none()),
            "{path}: on volume {volume}, which is not a data volume"
        );
    }
}

#[test]
fn openshift_runs_as_an_arbitrary_uid_and_checks_group_0_group_writable_directories() {
    let o = openshift();
    assert!(
        o.containers.iter().all(|c| c.run_as_user.is_none() && c.run_as_group.is_none()),
        "OpenShift assigns the uid: no runAsUser/runAsGroup"
    );
    assert!(o.containers.iter().all(|c| !c.init), "restricted SCC: no root initContainer");
    let app = o.find("exec", false);
    let manifest: toml::Table = o.manifest_of(app).parse().unwrap();
    assert!(
        !manifest.contains_key("user"),
        "the manifest must check the uid the pod gets, not a fixed user"
    );
    let dirs = manifest["dir"].as_array().unwrap();
    assert!(!dirs.is_empty());
    for dir in dirs {
        let path = dir["path"].as_str().unwrap();
        assert_eq!(dir.get("group").and_then(|g| g.as_integer()), Some(0), "{path}: group 0");
        let mode = u32::from_str_radix(dir["mode"].as_str().unwrap(), 8).unwrap();
        assert_eq!(mode & 0o070, 0o070, "{path}: mode {mode:o} is not group rwx");
        assert_eq!(dir.get("writable").and_then(|w| w.as_bool()), Some(true), "{path}");
        assert!(dir.get("owner").is_none(), "{path}: an arbitrary uid cannot be an owner");
    }
}

/// The Kubernetes story on a temp root: the initContainer's exact command as root on an
/// empty volume, then the app container's exact command as its runAsUser:runAsGroup.
#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn kubernetes_flow_init_container_then_app_writes_as_its_run_as_user() {
    root_only();
    let k = kubernetes();
    let init = k.find("apply", true);
    let app = k.find("exec", false);
    let t = Tree::new();
    let m = t.write("manifest.toml", &k.manifest_of(app));
    let vol = Tree::new(); // plays the container's / (a fresh, root-owned volume)
    let root = vol.root();

    let out = fsp(&strs(&retarget(&init.args, &m, root, &[])));
    assert_exit(&out, 0);

    let manifest: toml::Table = k.manifest_of(app).parse().unwrap();
    let dir = manifest["dir"][0]["path"].as_str().unwrap();
    let file = vol.path(dir).join("written-by-app");
    let script = format!("id -u; echo x > '{}'", file.display());
    let (uid, gid) = (app.run_as_user.unwrap() as u32, app.run_as_group.unwrap() as u32);
    let out = run_as(uid, gid, &strs(&retarget(&app.args, &m, root, &["sh", "-c", &script])));
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), format!("{uid}\n"));
    assert_eq!(stat(&file).0, uid);
}

/// The OpenShift story on a temp root: the image build step from the example's comment
/// (`apply --user 1000680000` as root), then the app container's exact command as another
/// arbitrary uid with gid 0; and a directory that is not group-writable stops the app.
#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn openshift_flow_any_uid_in_group_0_can_write_and_a_0755_dir_stops_the_app() {
    root_only();
    let o = openshift();
    let app = o.find("exec", false);
    let text = o.manifest_of(app);
    let t = Tree::new();
    let m = t.write("manifest.toml", &text);
    let manifest: toml::Table = text.parse().unwrap();
    let dir = manifest["dir"][0]["path"].as_str().unwrap().to_string();

    let image = Tree::new();
    let build = [
        "apply",
        "--user",
        "1000680000",
        "--manifest",
        m.to_str().unwrap(),
        "--root",
        image.root().to_str().unwrap(),
    ];
    let out = fsp(&build);
    assert_exit(&out, 0);

    let file = image.path(&dir).join("written");
    let script = format!("echo x > '{}'", file.display());
    let args = retarget(&app.args, &m, image.root(), &["sh", "-c", &script]);
    let out = run_as(1000790123, 0, &strs(&args));
    assert_exit(&out, 0);
    let (uid, gid, _, _) = stat(&file);
    assert_eq!((uid, gid), (1000790123, 0));

    // Same image, but the directory was made the usual non-OpenShift way.
    let bad = Tree::new();
    bad.dir(&dir, 0, 0, 0o755);
    let file = bad.path(&dir).join("written");
    let script = format!("echo x > '{}'", file.display());
    let args = retarget(&app.args, &m, bad.root(), &["sh", "-c", &script]);
    let out = run_as(1000790123, 0, &strs(&args));
    assert_exit(&out, 1);
    assert!(!file.exists(), "the app was started although it cannot write");
}
