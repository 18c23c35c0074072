#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, for the SLURM tests (tests/sweeps/test_slurm.py):
# munged, slurmctld and slurmd on localhost, one node with the CPUs and memory this machine has,
# one partition `debug`. Installs Debian's slurm-wlm and munge packages when they are missing.
#
# Idempotent: a cluster that already answers (`scontrol ping`) with a usable node is left alone,
# and so is a slurm.conf this script did not write. Needs root (apt-get, daemons run as root;
# munged as `munge`). Any failure exits 1 with the reason and the end of the daemon's log.
#
# Plugins chosen to work in a container or VM without systemd or cgroup delegation:
# proctrack/linuxproc, task/none, no accounting database (sacct is then unavailable; squeue works).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by hydralab .ci/slurm-start.sh"
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm

die() {
    echo "slurm-start: $*" >&2
    exit 1
}

log_tail() {  # the last lines of a daemon's log, to say why it did not come up
    [ -f "$1" ] && { echo "--- last lines of $1:" >&2; tail -n 15 "$1" >&2; }
    return 0
}

cluster_ready() {  # slurmctld answers and the node can take jobs
    scontrol ping 2>/dev/null | grep -q "is UP" || return 1
    sinfo -h -N -o "%T" 2>/dev/null | grep -qE "^(idle|mixed|allocated|completing)" || return 1
}

up() { echo "slurm-start: cluster $1 ($(sinfo -h -N -o '%N %c CPUs %m MB %T' | head -n 1))"; }

if command -v scontrol >/dev/null && cluster_ready && ! grep -qsF "$MARK" "$CONF"; then
    up "already up"  # a cluster this script did not make: use it as it is
    exit 0
fi

[ "$(id -u)" = 0 ] || die "SLURM is not running, and starting it needs root (run: sudo $0)"

# -- packages -------------------------------------------------------------------------------------
missing=()
for program in slurmctld slurmd sbatch munged; do
    command -v "$program" >/dev/null || missing+=("$program")
done
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null \
        || die "${missing[*]} missing and no apt-get to install slurm-wlm and munge (not Debian?)"
    echo "slurm-start: installing slurm-wlm and munge (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/tmp/slurm-start-apt.log 2>&1 \
        || { tail -n 5 /tmp/slurm-start-apt.log >&2; die "apt-get update failed"; }
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >>/tmp/slurm-start-apt.log 2>&1 \
        || { tail -n 10 /tmp/slurm-start-apt.log >&2; die "apt-get install slurm-wlm munge failed"; }
fi

# -- munge: the authentication every SLURM message carries -----------------------------------------
id munge >/dev/null 2>&1 || die "no user munge (the munge package creates it; reinstall munge)"
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged || { log_tail /var/log/munge/munged.log; die "munged did not start"; }
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null 2>&1 || { log_tail /var/log/munge/munged.log; die "munge does not answer"; }
fi

# -- slurm.conf: one node, this machine as slurmd sees it ------------------------------------------
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; start that cluster instead"
fi
host=$(hostname -s)
hardware=$(slurmd -C | head -n 1) || die "slurmd -C could not read this machine's hardware"
cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hardware")
memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hardware")
[ -n "$cpus" ] && [ -n "$memory" ] || die "cannot read CPUs and RealMemory from: $hardware"
install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
wanted=$(cat <<EOF
$MARK
ClusterName=hydralab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job (time limit, preemption) may start again after cred_expire: 10 s, not 120
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)
stop() {  # a daemon of an earlier start: stopped, so that it reads the new slurm.conf
    [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null && sleep 1
    rm -f "$1"
    return 0
}
if [ "$wanted" != "$(cat "$CONF" 2>/dev/null)" ]; then
    printf '%s\n' "$wanted" >"$CONF"
    stop /run/slurmd.pid
    stop /run/slurmctld.pid
elif cluster_ready; then
    up "already up"
    exit 0
fi

# -- daemons ----------------------------------------------------------------------------------------
if ! scontrol ping 2>/dev/null | grep -q "is UP"; then
    stop /run/slurmctld.pid  # a stale or stuck controller of an earlier start
    slurmctld || { log_tail "$LOG_DIR/slurmctld.log"; die "slurmctld did not start"; }
fi
if ! { [ -f /run/slurmd.pid ] && kill -0 "$(cat /run/slurmd.pid)" 2>/dev/null; }; then
    slurmd || { log_tail "$LOG_DIR/slurmd.log"; die "slurmd did not start"; }
fi
for _ in $(seq 60); do
    cluster_ready && break
    # a node that was down (an earlier start, a reboot) takes jobs again
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 0.5
done
if ! cluster_ready; then
    sinfo -N -l >&2 || true
    log_tail "$LOG_DIR/slurmctld.log"
    log_tail "$LOG_DIR/slurmd.log"
    die "the node did not become idle within 30 s"
fi
up "up"
