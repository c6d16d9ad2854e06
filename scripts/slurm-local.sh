#!/usr/bin/env bash
# A real one-node SLURM cluster on loopback, for testing the workflow's cluster path (tests/test_slurm.py).
#
#   scripts/slurm-local.sh start DIR   # install munge + SLURM if missing, start munged, slurmctld, slurmd
#   scripts/slurm-local.sh stop DIR    # stop the daemons started for DIR (idempotent)
#   export SLURM_CONF=DIR/slurm.conf   # then sinfo, sbatch, squeue, snakemake --executor slurm ...
#
# Needs root (it installs Debian packages and writes /etc/slurm/slurm.conf). Everything else lives under
# DIR: munge key and socket, slurm.conf, state, spool, logs and the daemons' pid files. The config is also
# put at /etc/slurm/slurm.conf, because the Snakemake SLURM plugin's job step clears SLURM_CONF before its
# inner srun; that file is written only when absent or written by this script (first-line marker), and
# `stop` removes it only when it names this DIR. `stop` ends only the daemons whose pid files are in DIR.
# Ports: SLURM_LOCAL_CTLD_PORT (default 6817), SLURM_LOCAL_SLURMD_PORT (default 6818).
set -euo pipefail

die() { echo "slurm-local: error: $*" >&2; exit 1; }
usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }

[ $# -eq 2 ] || usage
action=$1
dir=$(realpath -m -- "$2")
ETC_CONF=/etc/slurm/slurm.conf
MARKER="# written by groupdetr scripts/slurm-local.sh; cluster dir:"
PACKAGES=(munge slurmctld slurmd slurm-client)
DAEMONS=(slurmd slurmctld munged)  # stop order: node daemon, controller, then munge

pid_of() {  # the pid recorded in DIR/<name>.pid, if that process is alive and still that daemon
  local f="$1/$2.pid" pid
  [ -s "$f" ] || return 1
  pid=$(tr -dc '0-9' <"$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # a stale pid file may name a recycled pid: never signal a process that is not this daemon
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
  echo "$pid"
}

etc_conf_dir() {  # the cluster dir named by /etc/slurm/slurm.conf's marker; fails when the file is not ours
  [ -f "$ETC_CONF" ] || return 1
  local first
  first=$(head -n 1 "$ETC_CONF")
  case "$first" in "$MARKER "*) echo "${first#"$MARKER "}" ;; *) return 1 ;; esac
}

tail_logs() {
  local f
  for f in "$dir"/log/munged.log "$dir"/log/slurmctld.log "$dir"/log/slurmd.log; do
    [ -f "$f" ] && { echo "---- tail $f" >&2; tail -n 20 "$f" >&2; }
  done
  return 0
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "packages missing (${missing[*]}) and apt-get is not available"
  echo "slurm-local: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$dir/apt.log" 2>&1; then
    # a fresh machine may have no package lists yet
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >>"$dir/apt.log" 2>&1 \
      || die "apt-get install ${missing[*]} failed (see $dir/apt.log)"
  fi
}

write_conf() {
  local hw cpus mem topo="" key val ctld_port slurmd_port
  # slurmd -C prints this machine's node line: NodeName=... CPUs=2 Boards=1 SocketsPerBoard=1 ... RealMemory=24105
  hw=$(slurmd -C | head -n 1)
  field() { echo "$hw" | tr ' ' '\n' | sed -n "s/^$1=\\([0-9]*\\)$/\\1/p"; }
  cpus=$(field CPUs)
  mem=$(field RealMemory)
  if [ -z "$cpus" ] || [ -z "$mem" ]; then die "could not read CPUs/RealMemory from 'slurmd -C': $hw"; fi
  for key in SocketsPerBoard CoresPerSocket ThreadsPerCore; do  # the topology too, so slurmd agrees with it
    val=$(field $key)
    if [ -n "$val" ]; then topo="$topo $key=$val"; fi
  done
  ctld_port=${SLURM_LOCAL_CTLD_PORT:-6817}
  slurmd_port=${SLURM_LOCAL_SLURMD_PORT:-6818}
  cat >"$dir/slurm.conf" <<EOF
$MARKER $dir
ClusterName=groupdetr-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket.2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
ReturnToService=2
DefMemPerCPU=1000
# The Snakemake plugin trusts 'squeue' for job states only when MinJobAge >= 3x its first status-check
# delay (--slurm-init-seconds-before-status-checks, 40 s by default): finished jobs must stay visible.
MinJobAge=300
InactiveLimit=0
KillWait=5
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus$topo RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, writes $ETC_CONF)"
  mkdir -p "$dir"/{munge,state,spool,log}
  chmod 755 "$dir/munge"  # socket dir: searchable by all (munged warns otherwise); the key itself is 0600
  for d in "${DAEMONS[@]}"; do
    if pid_of "$dir" "$d" >/dev/null; then die "$d is already running for $dir (run '$0 stop $dir' first)"; fi
  done

  # Never clobber a slurm.conf that is not ours, nor one of ours whose cluster is still running.
  if [ -e "$ETC_CONF" ]; then
    local owner
    owner=$(etc_conf_dir) || die "$ETC_CONF exists and was not written by this script; not replacing it"
    if [ "$owner" != "$dir" ] && pid_of "$owner" slurmctld >/dev/null; then
      die "$ETC_CONF belongs to a local cluster still running in $owner"
    fi
  fi

  install_packages
  write_conf
  mkdir -p /etc/slurm
  cp "$dir/slurm.conf" "$ETC_CONF.tmp.$$" && mv -f "$ETC_CONF.tmp.$$" "$ETC_CONF"
  export SLURM_CONF="$dir/slurm.conf"

  # munged with its own key and socket
  if [ ! -s "$dir/munge/munge.key" ]; then
    if command -v mungekey >/dev/null 2>&1; then
      mungekey --create --keyfile="$dir/munge/munge.key" --bits=1024 >/dev/null
    else
      dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    fi
  fi
  chmod 600 "$dir/munge/munge.key"
  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket.2" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" \
    || { tail_logs; die "munged failed to start"; }

  # slurmctld and slurmd daemonize and write their pid files (SlurmctldPidFile/SlurmdPidFile) under DIR
  slurmctld -f "$dir/slurm.conf" || { tail_logs; die "slurmctld failed to start"; }
  slurmd -f "$dir/slurm.conf" -N localhost || { tail_logs; die "slurmd failed to start"; }

  local timeout=${SLURM_LOCAL_TIMEOUT:-30} t0=$SECONDS state=""
  while [ $((SECONDS - t0)) -lt "$timeout" ]; do
    state=$(sinfo -h -N -n localhost -o '%t' 2>/dev/null | head -n 1 || true)
    if [ "$state" = "idle" ]; then
      echo "slurm-local: node localhost idle; export SLURM_CONF=$dir/slurm.conf" >&2
      return 0
    fi
    # a daemon that died (port in use, bad config) will not come back: fail now, not at the timeout
    if [ $((SECONDS - t0)) -ge 3 ] && ! { pid_of "$dir" slurmctld && pid_of "$dir" slurmd; } >/dev/null; then
      state="${state:-none}; slurmctld or slurmd exited"
      break
    fi
    sleep 0.5
  done
  echo "slurm-local: node not idle after $((SECONDS - t0)) s (state: ${state:-none})" >&2
  tail_logs
  die "cluster did not come up (run '$0 stop $dir' to clean up)"
}

stop() {
  local d pid jobs
  # Jobs left in this cluster (an interrupted run) are cancelled first, so that no job step outlives slurmd.
  if pid_of "$dir" slurmctld >/dev/null && [ -f "$dir/slurm.conf" ]; then
    jobs=$(SLURM_CONF="$dir/slurm.conf" squeue -h -o '%i' 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      SLURM_CONF="$dir/slurm.conf" scancel $jobs 2>/dev/null || true
      for _ in $(seq 1 50); do
        [ -z "$(SLURM_CONF="$dir/slurm.conf" squeue -h -t active -o '%i' 2>/dev/null)" ] && break
        sleep 0.2
      done
    fi
  fi
  # TERM all three at once (slurmd, slurmctld, munged), wait for each; KILL what is still there after 10 s
  local pids=()
  for d in "${DAEMONS[@]}"; do
    if pid=$(pid_of "$dir" "$d"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  for d in "${DAEMONS[@]}"; do
    if [ -f "$dir/$d.pid" ] && ! pid_of "$dir" "$d" >/dev/null; then rm -f "$dir/$d.pid"; fi
  done
  if [ "$(etc_conf_dir 2>/dev/null || true)" = "$dir" ]; then
    rm -f "$ETC_CONF"
  fi
  return 0
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
