#!/usr/bin/env bash
# Syscalls of a second `fs-preflight apply` on a compliant 10,000-entry tree, next to
# `chown -R` on the same tree (strace -f -c). Run as root: bash bench/syscalls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v strace >/dev/null || { apt-get update -qq && apt-get install -y -qq strace; }
cargo build --release --quiet
bin=$PWD/target/release/fs-preflight
top=$(mktemp -d /tmp/fsp-syscalls.XXXXXX)
trap 'rm -rf "$top"' EXIT
chmod 755 "$top"
# 100 directories of 99 files each, plus the directories: 10,000 entries below data/.
for d in $(seq -w 0 99); do
  mkdir -p "$top/data/d$d"
  (cd "$top/data/d$d" && touch $(seq -f 'f%02g' 1 99))
done
find "$top/data" | wc -l | xargs echo "entries (incl. top):"
cat > "$top/m.toml" <<TOML
[[dir]]
path = "$top/data"
owner = 10001
group = 10001
mode = "0755"
recursive = true
dir_mode = "0755"
file_mode = "0644"
TOML
"$bin" apply --quiet --manifest "$top/m.toml" >/dev/null
strace -f -c -o "$top/apply.txt" "$bin" apply --quiet --manifest "$top/m.toml" >/dev/null
strace -f -c -o "$top/chown.txt" chown -R 10001:10001 "$top/data"
for f in apply chown; do
  total=$(tail -1 "$top/$f.txt" | awk '{print $(NF-2)}')
  changes=$(awk '$NF ~ /^(fchownat|fchown|chown|lchown|fchmodat|fchmodat2|fchmod|chmod)$/ {s+=$4} END {print s+0}' "$top/$f.txt")
  printf '%-24s total syscalls %8s   chown/chmod calls %6s\n' "$f" "$total" "$changes"
done
echo "--- second apply"; cat "$top/apply.txt"
echo "--- chown -R"; cat "$top/chown.txt"
