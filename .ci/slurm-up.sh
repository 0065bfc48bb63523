#!/usr/bin/env bash
# Bring up a single-node Slurm cluster on this Debian machine, for the SLURM
# integration test (tests/test_slurm.py): slurmctld + slurmd, and slurmdbd on
# MariaDB so that `sacct` works (the executor plugin's status queries need it).
# Loopback only, no systemd: every daemon is started by hand and its pid is
# recorded in $STATE, so that .ci/slurm-down.sh stops only what this started.
# Idempotent: running it again leaves a working cluster alone.
#
#   QDESIGN_SLURM_STATE=/run/qdesign-slurm   pid files of the daemons started here
#   QDESIGN_SLURM_PARTITION=debug            the single partition
#   QDESIGN_SLURM_ACCOUNT=ci                 account created for root
set -euo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

STATE=${QDESIGN_SLURM_STATE:-/run/qdesign-slurm}
PARTITION=${QDESIGN_SLURM_PARTITION:-debug}
ACCOUNT=${QDESIGN_SLURM_ACCOUNT:-ci}
SOCK=/run/mysqld/mysqld.sock
DB_PASS=qdesign-ci   # unix-socket-only database of a throwaway CI cluster

say() { echo "[slurm-up] $*"; }
fail() { say "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (installs packages, starts daemons)"
t0=$(date +%s)
mkdir -p "$STATE"

# is PID alive, not a zombie, and named NAME? (pid files outlive daemons here)
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  [[ $stat == *"($2) "[!Z]* ]]
}
started_by_us() { [ -s "$STATE/$1.pid" ] && running "$(cat "$STATE/$1.pid")" "$1"; }
remember() {  # remember NAME PIDFILE: copy the daemon's own pid file to $STATE
  for _ in $(seq 80); do [ -s "$2" ] && break; sleep 0.25; done
  [ -s "$2" ] || fail "$1 wrote no pid file $2"
  cp "$2" "$STATE/$1.pid"
}
wait_until() {  # wait_until WHAT COMMAND...: up to 60 s
  for _ in $(seq 240); do "${@:2}" >/dev/null 2>&1 && return 0; sleep 0.25; done
  fail "$1 did not come up"
}

# 1. packages (apt must not start daemons: there is no init system)
pkgs=(munge slurm-wlm slurmctld slurmd slurm-client slurmdbd mariadb-server mariadb-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  cleanup_policy=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    cleanup_policy=true
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
  $cleanup_policy && rm -f /usr/sbin/policy-rc.d
fi

# 2. munge (authentication between the daemons)
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge /etc/munge/munge.key && chmod 0700 /etc/munge && chmod 0600 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  remember munged /run/munge/munged.pid
  wait_until munged sh -c 'munge -n | unmunge'
fi

# 3. MariaDB for accounting (unix socket only)
install -d -o mysql -g mysql /run/mysqld
[ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql > /dev/null
install -d -o slurm -g slurm /run/slurm /var/log/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
if ! mariadb-admin --socket=$SOCK ping >/dev/null 2>&1; then
  rm -f /run/mysqld/mysqld.pid
  setsid nohup /usr/sbin/mariadbd --user=mysql --skip-networking --socket=$SOCK \
    --pid-file=/run/mysqld/mysqld.pid >> /var/log/slurm/mariadbd.log 2>&1 < /dev/null &
  remember mariadbd /run/mysqld/mysqld.pid
  wait_until mariadb mariadb-admin --socket=$SOCK ping
fi
mariadb --socket=$SOCK -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# 4. configuration: one node named localhost with this machine's CPUs and
#    memory less 2 GiB (slurmd drains a node that claims more than it has)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024) - 2048}' /proc/meminfo)
conf=$(cat <<EOF
# written by qdesign .ci/slurm-up.sh: single node, loopback, no cgroups; memory enforced by polling
ClusterName=qdesign-ci
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
MinJobAge=600
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
# sample every 2 s: jobs of seconds still get a MaxRSS (tests compare it with ReqMem)
JobAcctGatherFrequency=task=2
# enforce --mem without cgroups (no systemd here): at each sample, a step whose
# processes hold more than its request is killed and the job ends OUT_OF_MEMORY,
# as on a real cluster, so the rules' memory retry is tested (tests/test_slurm.py)
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
if [ "$conf" != "$(cat /etc/slurm/slurm.conf 2>/dev/null)" ]; then
  printf '%s\n' "$conf" > /etc/slurm/slurm.conf
  # a changed configuration needs a restart of the daemons started here
  for name in slurmd slurmctld; do
    if started_by_us "$name"; then
      pid=$(cat "$STATE/$name.pid"); kill "$pid"
      for _ in $(seq 60); do running "$pid" "$name" || break; sleep 0.25; done
      rm -f "$STATE/$name.pid"
    fi
  done
fi
cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF
chown slurm:slurm /etc/slurm/slurmdbd.conf && chmod 0600 /etc/slurm/slurmdbd.conf

# 5. daemons
if ! sacctmgr -n list cluster >/dev/null 2>&1; then
  rm -f /run/slurm/slurmdbd.pid
  /usr/sbin/slurmdbd
  remember slurmdbd /run/slurm/slurmdbd.pid
  wait_until slurmdbd sacctmgr -n list cluster
fi
if ! scontrol ping 2>/dev/null | grep -q "is UP"; then
  rm -f /run/slurm/slurmctld.pid
  /usr/sbin/slurmctld
  remember slurmctld /run/slurm/slurmctld.pid
  wait_until slurmctld sh -c "scontrol ping | grep -q 'is UP'"
fi
if ! started_by_us slurmd && ! pgrep -x slurmd >/dev/null; then
  rm -f /run/slurm/slurmd.pid
  /usr/sbin/slurmd -N localhost   # the node is 'localhost', whatever the hostname
  remember slurmd /run/slurm/slurmd.pid
fi
idle() { sinfo -h -n localhost -o %T | grep -Eqx "idle|mixed|allocated"; }
if ! (wait_until "node" idle) 2>/dev/null; then
  scontrol update NodeName=localhost State=RESUME || true   # left down by an earlier unclean stop
  wait_until "node localhost" idle
fi

# 6. an account for root, so that jobs are accounted and sacct lists them
wait_until "cluster registration" sh -c "sacctmgr -n -P list cluster format=cluster | grep -qx qdesign-ci"
sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" \
  || sacctmgr -i add account "$ACCOUNT" Description=ci Organization=ci > /dev/null
sacctmgr -n -P list assoc user=root account="$ACCOUNT" format=user | grep -qx root \
  || sacctmgr -i add user root Account="$ACCOUNT" > /dev/null
say "cluster up in $(( $(date +%s) - t0 )) s: partition $PARTITION, account $ACCOUNT, $cpus CPUs, ${mem} MB"
sinfo
