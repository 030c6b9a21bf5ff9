//! Marks test builds made by a non-root user, so that tests which need root (chown to
//! other ids, setuid, mounts) show up as ignored instead of passing without running.

use std::os::unix::fs::MetadataExt;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(not_root)");
    println!("cargo::rerun-if-changed=build.rs");
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    if euid != 0 {
        println!("cargo::rustc-cfg=not_root");
    }
}
