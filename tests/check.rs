//! `fs-preflight check` on real temp trees, with real owners, as the runtime user sees them.

mod common;

use common::*;

fn seed_manifest(t: &Tree) -> std::path::PathBuf {
    t.write(
        "m.toml",
        &format!(
            "user = \"10001:10001\"\n\n[[dir]]\npath = \"{}\"\nowner = 10001\ngroup = 10001\nmode = \"0755\"\n",
            t.p("app/generated_media")
        ),
    )
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn seed_story_missing_directory_then_fixed() {
    root_only();
    let t = Tree::new();
    t.dir("app", 0, 0, 0o755);
    let m = seed_manifest(&t);
    let m = m.to_str().unwrap();

    let out = run(&["check", "--manifest", m]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("10001 cannot create it in"), "{text}");
    assert!(text.contains(&format!("RUN install -d -o 10001 -g 10001 -m 0755 {}", t.p("app/generated_media"))), "{text}");
    assert!(text.contains("fs-preflight apply"), "{text}");

    t.dir("app/generated_media", 10001, 10001, 0o755);
    let out = run(&["check", "--manifest", m]);
    assert_exit(&out, 0);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn seed_story_as_json() {
    root_only();
    let t = Tree::new();
    t.dir("app", 0, 0, 0o755);
    let m = seed_manifest(&t);
    let out = run(&["check", "--format", "json", "--manifest", m.to_str().unwrap()]);
    assert_exit(&out, 1);
    let r = json(&out);
    let path = t.p("app/generated_media");
    assert_eq!(r["version"], 1);
    assert_eq!(r["identity"]["uid"], 10001);
    assert_eq!(r["identity"]["groups"], serde_json::json!([10001]));
    assert_eq!(check(&r, &path, "exists")["status"], "fail");
    assert_eq!(check(&r, &path, "type")["status"], "skip");
    assert_eq!(check(&r, &path, "owner")["status"], "skip");
    assert_eq!(r["entries"][0]["status"], "fail");
    assert_eq!(r["summary"]["failed"], 1);
    assert_eq!(r["summary"]["passed"], 0);
}
