#!/usr/bin/env bash
# A throwaway one-node Slurm cluster (Debian's Slurm 22.05 + MUNGE) for tests, without systemd.
#
#   tests/slurm/cluster.sh start  [DIR]   start munged, slurmctld and slurmd; print the `export` lines
#   tests/slurm/cluster.sh stop   [DIR]   cancel the cluster's jobs, stop exactly the daemons started here
#   tests/slurm/cluster.sh status [DIR]   what runs (exit 0 when all three daemons run, 3 when none, 1 else)
#
# DIR (or $NNTRANSFER_SLURM_DIR; for `start` a new /tmp/nntransfer-slurm.XXXXXX when neither is given) holds
# everything: slurm.conf, env.sh, the MUNGE key, socket and seed, pid files, logs, spool, state save location
# and the job completion file. Nothing is written or killed outside it. Needs root (SlurmUser=root).
# Optional: NNTRANSFER_SLURM_PORT (slurmctld's port; slurmd gets the next one; default: two free ports),
# NNTRANSFER_SLURM_TIMEOUT (seconds to wait for the node to become idle; default 60).
set -euo pipefail

usage() { echo "usage: $0 start|stop|status [STATE_DIR]" >&2; exit 2; }
[ $# -ge 1 ] || usage
cmd=$1
dir=${2:-${NNTRANSFER_SLURM_DIR:-}}

daemons=(munged slurmctld slurmd)

# The pid recorded for NAME when it is still that daemon of this cluster (its command line names DIR).
pid_of() {
  local name=$1 pid
  [ -f "$dir/pids/$name" ] || return 1
  pid=$(<"$dir/pids/$name")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  # (grep without -q reads all its input: no SIGPIPE for tr under pipefail)
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -F -- "$dir/" >/dev/null || return 1
  # a zombie is no daemon any more
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  echo "$pid"
}

# Listening TCP ports (decimal), from /proc (no ss/netstat needed).
listening_ports() {
  local _sl addr _rem st _rest
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r _sl addr _rem st _rest; do
    [ "$st" = 0A ] && echo $((16#${addr##*:}))
  done | sort -un
}

free_port_pair() {
  local used p _
  used=" $(listening_ports | tr '\n' ' ') "
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 20000))
    if [[ $used != *" $p "* && $used != *" $((p + 1)) "* ]]; then
      echo "$p"
      return 0
    fi
  done
  echo "no free port pair found" >&2
  return 1
}

show_logs() {
  local f
  for f in "$dir"/log/*; do
    [ -f "$f" ] || continue
    echo "----- $f (last 40 lines)" >&2
    tail -n 40 "$f" >&2
  done
}

write_config() {
  local host cpus mem realmem defmem port
  host=$(hostname -s)
  # The hardware as slurmd sees it; only CPUs and memory go into the config (see SelectTypeParameters).
  # all the CPUs this process may use: nproc alone follows OMP_NUM_THREADS (the test suite sets it to 1)
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n 1 || true)
  [ -n "$mem" ] || mem=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
  # leave 10% (at least 512 MiB, never below 256 MiB for Slurm) to the rest of the machine
  realmem=$((mem - (mem / 10 > 512 ? mem / 10 : 512)))
  [ "$realmem" -ge 256 ] || realmem=256
  # without a default, a job without --mem is given the whole node's memory and jobs cannot share the node
  defmem=$((realmem / cpus / 2))
  [ "$defmem" -le 1024 ] || defmem=1024
  port=${NNTRANSFER_SLURM_PORT:-$(free_port_pair)}

  : >"$dir/plugstack.conf"  # empty: no SPANK plugins from /etc/slurm
  cat >"$dir/slurm.conf" <<EOF
# Written by tests/slurm/cluster.sh: a throwaway one-node cluster; everything lives in $dir.
ClusterName=nntransfer-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root

AuthType=auth/munge
CredType=cred/munge
# own munged; cred_expire is also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$dir/munge/munge.sock,cred_expire=10

StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$dir/plugstack.conf

# no cgroups, no systemd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
# the node is what the config says (no INVALID_REG when the hardware reports a different layout)
SlurmdParameters=config_overrides

# no accounting database (sacct does not work); finished jobs are recorded in a text file
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt

# every CPU is a job slot: two 1-CPU jobs run at once on a 2-CPU machine, hyper-threads or not
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$defmem

SchedulerType=sched/backfill
# look at pending jobs every 2 s (default 60 s / 30 s): a requeued job starts soon after its BeginTime
SchedulerParameters=sched_interval=2,bf_interval=2
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
MinJobAge=30
# Slurm's default: SIGTERM (time limit, preemption, requeue, scancel), then SIGKILL 30 s later. A worker needs that
# time to finish the batch in hand, write a checkpoint and release its job.
KillWait=30
InactiveLimit=0
WaitTime=0
SlurmctldTimeout=30
SlurmdTimeout=30

# a job in 'urgent' (higher PriorityTier) requeues jobs of 'debug' when the node is full
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE

NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$realmem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=30:00 DefaultTime=10:00 PriorityTier=1 State=UP
PartitionName=urgent Nodes=$host Default=NO MaxTime=30:00 DefaultTime=10:00 PriorityTier=10 State=UP
EOF

  cat >"$dir/env.sh" <<EOF
# source this file to use the test cluster in $dir
export NNTRANSFER_SLURM_DIR=$dir
export SLURM_CONF=$dir/slurm.conf
case ":\$PATH:" in *:/usr/sbin:*) ;; *) export PATH="\$PATH:/usr/sbin" ;; esac
EOF
}

# Start NAME in the background, in its own session, and record its pid once it runs the daemon
# ($! is first a copy of this shell; pid_of only knows it after the exec).
launch() {
  local name=$1 pid _
  shift
  setsid "$@" </dev/null >>"$dir/log/$name.out" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/pids/$name"
  for _ in $(seq 1 100); do
    pid_of "$name" >/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "$name did not start" >&2
  show_logs
  return 1
}

wait_idle() {
  local timeout=${NNTRANSFER_SLURM_TIMEOUT:-60} start state name
  start=$SECONDS
  while :; do
    for name in "${daemons[@]}"; do
      if ! pid_of "$name" >/dev/null; then
        echo "$name exited during start-up" >&2
        show_logs
        return 1
      fi
    done
    state=$(SLURM_CONF=$dir/slurm.conf sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true)
    [ "$state" = idle ] && return 0
    if [ $((SECONDS - start)) -ge "$timeout" ]; then
      echo "the node is not idle after ${timeout}s (state: '${state:-no answer}')" >&2
      show_logs
      return 1
    fi
    sleep 0.5
  done
}

start() {
  local name running=0
  if [ -z "$dir" ]; then
    dir=$(mktemp -d /tmp/nntransfer-slurm.XXXXXX)
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  for name in "${daemons[@]}"; do
    pid_of "$name" >/dev/null && running=$((running + 1))
  done
  if [ "$running" -eq ${#daemons[@]} ]; then
    echo "already running in $dir" >&2
    echo "export NNTRANSFER_SLURM_DIR=$dir SLURM_CONF=$dir/slurm.conf"
    return 0
  elif [ "$running" -gt 0 ]; then
    echo "part of the cluster in $dir runs; stopping it first" >&2
    stop
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "cluster.sh must run as root (SlurmUser=root; slurmd starts jobs as their users)" >&2
    return 1
  fi
  for name in munged slurmctld slurmd sinfo; do
    command -v "$name" >/dev/null || [ -x "/usr/sbin/$name" ] || {
      echo "$name not found: apt-get install slurmctld slurmd slurm-client munge" >&2
      return 1
    }
  done
  export PATH="$PATH:/usr/sbin"
  if [ ${#dir} -gt 90 ]; then  # a Unix socket path has at most 107 bytes
    echo "state folder path too long for munged's socket ($dir); use a shorter NNTRANSFER_SLURM_DIR" >&2
    return 1
  fi

  # munged checks that every folder above its socket is searchable by all and writable by no one else
  chmod 755 "$dir"
  mkdir -p "$dir/munge"
  chmod 755 "$dir/munge"
  mkdir -p "$dir/pids" "$dir/run" "$dir/log" "$dir/state" "$dir/spool"
  chmod 700 "$dir/state" "$dir/spool"
  if [ ! -s "$dir/munge/munge.key" ]; then
    (umask 077 && dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none)
  fi
  chmod 400 "$dir/munge/munge.key"
  write_config

  # --foreground: it logs to log/munged.out and $! is its pid. --force: run although a folder above the
  # socket is private (pytest's tmp_path is under a 0700 folder); every client here runs as root anyway.
  launch munged munged --foreground --force --key-file="$dir/munge/munge.key" \
    --socket="$dir/munge/munge.sock" --pid-file="$dir/munge/munged.pid" \
    --seed-file="$dir/munge/munged.seed" || { stop; return 1; }
  local t=0
  until [ -S "$dir/munge/munge.sock" ]; do
    if ! pid_of munged >/dev/null || [ "$t" -ge 100 ]; then
      echo "munged did not open its socket" >&2
      show_logs
      stop
      return 1
    fi
    sleep 0.1
    t=$((t + 1))
  done

  export SLURM_CONF=$dir/slurm.conf
  if ! launch slurmctld slurmctld -D -f "$dir/slurm.conf" ||
    ! launch slurmd slurmd -D -f "$dir/slurm.conf" -N "$(hostname -s)" ||
    ! wait_idle; then
    stop
    return 1
  fi
  echo "Slurm runs in $dir ($(sinfo -h -o '%D node, %c CPUs, %m MB' | head -n 1)); to use it:" >&2
  echo "export NNTRANSFER_SLURM_DIR=$dir SLURM_CONF=$dir/slurm.conf"
}

# Stop PID (the daemon NAME) with SIGTERM, SIGKILL after a while; wait until it is gone.
terminate() {
  local name=$1 pid=$2 _
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    pid_of "$name" >/dev/null || return 0
    sleep 0.1
  done
  echo "$name ($pid) ignored SIGTERM for 10 s: SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    pid_of "$name" >/dev/null || return 0
    sleep 0.1
  done
  echo "$name ($pid) is still there" >&2
  return 1
}

# Processes left over from this cluster's jobs: its slurmstepd processes (their environment names this
# cluster's slurm.conf, inherited from slurmd) and everything below them. They may outlive slurmd.
job_pids() {
  local f pid comm steps=()
  for f in /proc/[0-9]*/comm; do
    pid=${f#/proc/}
    pid=${pid%/comm}
    { read -r comm <"$f"; } 2>/dev/null || continue
    [ "$comm" = slurmstepd ] || continue
    tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -xF "SLURM_CONF=$dir/slurm.conf" >/dev/null && steps+=("$pid")
  done
  [ ${#steps[@]} -gt 0 ] || return 0
  # pid and ppid of every process; print the descendants of the slurmstepd processes (and themselves)
  local stat ppid _state
  for f in /proc/[0-9]*/stat; do
    { read -r stat <"$f"; } 2>/dev/null || continue
    read -r _state ppid _ <<<"${stat##*) }"
    pid=${f#/proc/}
    echo "${pid%/stat} $ppid"
  done | awk -v roots="${steps[*]}" '
    { parent[$1] = $2 }
    END {
      n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1
      do { added = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; added = 1 } } while (added)
      for (p in keep) print p
    }'
}

stop() {
  local name pid ok=0 _
  if pid_of slurmctld >/dev/null; then
    # cancel everything still queued or running, give slurmd a few seconds to clean up
    local jobs
    jobs=$(SLURM_CONF=$dir/slurm.conf squeue -h -o %A 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$jobs" ] || SLURM_CONF=$dir/slurm.conf scancel --quiet $jobs 2>/dev/null || true
    for _ in $(seq 1 50); do
      [ -z "$(SLURM_CONF=$dir/slurm.conf squeue -h -t running,completing,suspended -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  for name in slurmd slurmctld; do
    if pid=$(pid_of "$name"); then
      terminate "$name" "$pid" || ok=1
      echo "stopped $name ($pid)" >&2
    fi
  done
  for pid in $(job_pids); do
    echo "killing left-over job process $pid: $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-80)" >&2
    kill -KILL "$pid" 2>/dev/null || true
  done
  if pid=$(pid_of munged); then
    terminate munged "$pid" || ok=1
    echo "stopped munged ($pid)" >&2
  fi
  rm -f "$dir/munge/munge.sock" "$dir/munge/munge.sock.lock"
  return $ok
}

status() {
  local name pid n=0
  for name in "${daemons[@]}"; do
    if pid=$(pid_of "$name"); then
      echo "$name: running (pid $pid)"
      n=$((n + 1))
    else
      echo "$name: not running"
    fi
  done
  if [ "$n" -gt 0 ] && pid_of slurmctld >/dev/null; then
    SLURM_CONF=$dir/slurm.conf sinfo -N -o '%N %P %T %c %m' 2>&1 || true
    SLURM_CONF=$dir/slurm.conf squeue 2>&1 || true
  fi
  [ "$n" -eq ${#daemons[@]} ] && return 0
  [ "$n" -eq 0 ] && return 3
  return 1
}

case $cmd in
  start) start ;;
  stop | status)
    if [ -z "$dir" ]; then
      echo "$cmd: which cluster? set NNTRANSFER_SLURM_DIR or pass the state folder" >&2
      exit 2
    fi
    if [ ! -d "$dir" ]; then
      [ "$cmd" = stop ] && exit 0
      echo "no cluster in $dir"
      exit 3
    fi
    dir=$(cd "$dir" && pwd -P)
    $cmd
    ;;
  *) usage ;;
esac
