#!/usr/bin/env python3
"""Start-up cost of fs-preflight, as ratios against a baseline measured in the same run.

  check:  exit-to-exit time of `fs-preflight check` on a 20-entry manifest, against
          /bin/true (the cost of starting any process on this machine).
  exec:   time until CMD runs (CMD is /bin/true, so exit-to-exit) for
          `fs-preflight exec --user 10001:10001` with a 10-entry manifest, against a shell
          entrypoint that does the same checks with `test -d`/`test -w` and drops to the
          user with setpriv.

Run as root (the probes and the privilege drop need it):  python3 bench/startup.py [N]
Builds the release binary first. Prints medians of N runs (default 300) and ratios.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 300


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "fs-preflight")


def tree(top, count, owner):
    os.chmod(top, 0o755)
    dirs = []
    for i in range(count):
        d = os.path.join(top, "app", f"dir{i:02}")
        os.makedirs(d)
        os.chown(d, owner, owner)
        os.chmod(d, 0o755)
        dirs.append(d)
    return dirs


def manifest(top, dirs, owner):
    path = os.path.join(top, f"m{len(dirs)}.toml")
    with open(path, "w") as f:
        for d in dirs:
            f.write(f'[[dir]]\npath = "{d}"\nowner = {owner}\ngroup = {owner}\nmode = "0755"\n\n')
    return path


def median_ms(argv, expect=0):
    times = []
    for _ in range(N):
        t0 = time.perf_counter_ns()
        rc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        times.append(time.perf_counter_ns() - t0)
        if rc != expect:
            sys.exit(f"{argv} exited {rc}")
    return statistics.median(times) / 1e6


def main():
    if os.geteuid() != 0:
        sys.exit("run as root: the probes and the privilege drop need it")
    binary = build()
    top = tempfile.mkdtemp(prefix="fsp-bench.")
    try:
        dirs20 = tree(top, 20, 10001)
        m20 = manifest(top, dirs20, 10001)
        m10 = manifest(top, dirs20[:10], 10001)
        shell = (
            "for d in " + " ".join(dirs20[:10]) + "; do "
            'test -d "$d" || exit 1; setpriv --reuid=10001 --regid=10001 --clear-groups '
            'test -w "$d" || exit 1; done; '
            "exec setpriv --reuid=10001 --regid=10001 --clear-groups /bin/true"
        )
        rows = [
            ("/bin/true", ["/bin/true"]),
            ("check, 20 entries, probe as 10001 (fork)",
             [binary, "check", "--manifest", m20, "--user", "10001:10001"]),
            ("check, 20 entries, computed",
             [binary, "check", "--manifest", m20, "--user", "10001:10001", "--no-probe"]),
            ("exec, 10 entries, as 10001 -> /bin/true",
             [binary, "exec", "--manifest", m10, "--user", "10001:10001", "--", "/bin/true"]),
            ("shell entrypoint, 10 x test -w + setpriv",
             ["/bin/sh", "-c", shell]),
        ]
        results = {name: median_ms(argv) for name, argv in rows}
        base = results["/bin/true"]
        shell_ms = results["shell entrypoint, 10 x test -w + setpriv"]
        print(f"median of {N} runs, exit to exit")
        for name, ms in results.items():
            print(f"  {name:<44} {ms:8.3f} ms  {ms / base:6.2f}x /bin/true")
        exec_ms = results["exec, 10 entries, as 10001 -> /bin/true"]
        print(f"  exec vs shell entrypoint: {exec_ms / shell_ms:.2f}x")
    finally:
        shutil.rmtree(top)


if __name__ == "__main__":
    main()
