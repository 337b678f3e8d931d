#!/usr/bin/env bash
# Fresh-install time and size, before and after, in one run on one machine:
#   bash bench/install.sh [BEFORE_REF]      (default BEFORE_REF: HEAD~1; "after" is the working tree)
# For each tree, in a new temporary folder with pip's cache off:
#   library  `pip install <tree>` into a new venv (what a library user gets)
#   book     `python3 tasks.py setup` (the book's environment: .venv, as the two commands install it)
# prints seconds and the venv's size in MB. Needs the internet or the machine's wheel mirror; about 2 minutes
# an install on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:-HEAD~1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$work/before" "$work/after"
git archive "$before" | tar -x -C "$work/before"
git ls-files -co --exclude-standard | tar -c -T - | tar -x -C "$work/after"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; before = $(git rev-parse --short "$before"), after = working tree of $(git rev-parse --short HEAD)"
printf '%-8s %-8s %8s %8s\n' tree install seconds MB
for tree in before after; do
  src="$work/$tree"
  start=$(date +%s.%N)
  python3 -m venv "$work/lib-$tree"
  "$work/lib-$tree/bin/pip" install -q "$src" > "$work/lib-$tree.log" 2>&1 || { cat "$work/lib-$tree.log"; exit 1; }
  end=$(date +%s.%N)
  printf '%-8s %-8s %8.0f %8s\n' "$tree" library "$(echo "$end - $start" | bc)" "$(du -sm "$work/lib-$tree" | cut -f1)"
  rm -rf "$work/lib-$tree"
  start=$(date +%s.%N)
  (cd "$src" && python3 tasks.py setup > "$work/book-$tree.log" 2>&1) || { cat "$work/book-$tree.log"; exit 1; }
  end=$(date +%s.%N)
  printf '%-8s %-8s %8.0f %8s\n' "$tree" book "$(echo "$end - $start" | bc)" "$(du -sm "$src/.venv" | cut -f1)"
  rm -rf "$src/.venv"
done
