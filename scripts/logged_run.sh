#!/usr/bin/env bash
# Run one of the project's commands for the committed results, with provenance.
#
#   scripts/logged_run.sh NAME python -m study.search --size 10000 --search-space baseline
#
# Appends the command's output to results/logs/NAME.log. When the command ends,
# it appends one JSON line to results/runs.jsonl with the command, the commit
# it ran from, the machine, the start time, the wall time in seconds and the
# exit status. The commit gets "+uncommitted" when files outside results/ had
# changes. Rerunning a search resumes it; each
# attempt gets its own line. Start long runs with nohup so they outlive the shell.
set -u
name="$1"; shift
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$root/results/logs"
log="$root/results/logs/$name.log"
commit="$(git -C "$root" rev-parse --short HEAD)"
# Files under results/ change with every run, so only the code counts.
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no -- . ':!results')" ]; then
  commit="$commit+uncommitted"
fi
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
start_s="$(date +%s)"
echo "=== $started $commit: $*" >> "$log"
"$@" >> "$log" 2>&1
status=$?
wall=$(( $(date +%s) - start_s ))
gpu="no GPU"; command -v nvidia-smi >/dev/null && gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
machine="$(hostname) $(uname -m), $(nproc) CPU cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $gpu"
python3 - "$root/results/runs.jsonl" "$name" "$commit" "$machine" "$started" "$wall" "$status" "$*" <<'PY'
import json, os, sys
path, name, commit, machine, started, wall, status, command = sys.argv[1:]
data = os.environ.get("STUDY_DATA")
if data:
    command = f"STUDY_DATA={data} {command}"
line = {"run": name, "command": command, "commit": commit, "machine": machine,
        "started": started, "wall_s": int(wall), "exit": int(status)}
with open(path, "a") as f:
    f.write(json.dumps(line) + "\n")
PY
exit $status
