#!/usr/bin/env bash
# Stop the daemons that .ci/slurm-up.sh started (and only those: pids recorded
# in $QDESIGN_SLURM_STATE, checked against the process name). Jobs are
# cancelled first. Packages, configuration and the accounting database stay,
# so the next slurm-up.sh takes seconds.
set -uo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
STATE=${QDESIGN_SLURM_STATE:-/run/qdesign-slurm}

running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  [[ $stat == *"($2) "[!Z]* ]]
}

[ -s "$STATE/slurmctld.pid" ] && timeout 10 scancel --user="$(id -un)" 2>/dev/null
for name in slurmd slurmctld slurmdbd mariadbd munged; do   # reverse start order
  f="$STATE/$name.pid"
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  if running "$pid" "$name"; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 60); do running "$pid" "$name" || break; sleep 0.25; done
    running "$pid" "$name" && kill -9 "$pid" 2>/dev/null
    echo "[slurm-down] stopped $name ($pid)"
  fi
  rm -f "$f"
done
exit 0
