#!/usr/bin/env bash
# The unit and slow tests (`pytest -m "not book"`, what `python3 tasks.py test` runs before the book) one after
# the other and on every core (pytest-xdist as tasks.py runs them: -n auto --dist loadfile), in one run:
#   bash bench/tests_parallel.sh            (uses .venv: run `python3 tasks.py setup` first)
# prints each wall time, the number of tests and the ratio. About 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; commit $(git rev-parse --short HEAD)"
declare -A secs
for mode in serial parallel; do
  args=(-m "not book" -q -p no:cacheprovider)
  [ "$mode" = parallel ] && args+=(-n auto --dist loadfile)
  start=$(date +%s.%N)
  "$py" -m pytest "${args[@]}" > "/tmp/tests_$mode.log" 2>&1 || { tail -30 "/tmp/tests_$mode.log"; exit 1; }
  end=$(date +%s.%N)
  secs[$mode]=$(echo "$end - $start" | bc)
  printf '%-9s %7.0f s   %s\n' "$mode" "${secs[$mode]}" "$(tail -1 "/tmp/tests_$mode.log")"
done
printf 'parallel is %.2fx the serial speed\n' "$(echo "${secs[serial]} / ${secs[parallel]}" | bc -l)"
