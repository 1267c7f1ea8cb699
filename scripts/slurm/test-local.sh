#!/usr/bin/env bash
# A real Slurm on this machine: installs slurm-wlm and munge from the distribution's packages
# when missing, writes a one-node slurm.conf for localhost in a temp folder, starts munged,
# slurmctld and slurmd there (nothing system-wide is configured or started), submits the quick
# zoo (two seeds) and a small report over it as job arrays with submit-zoo.sh and
# submit-report.sh, waits for them, checks the checkpoints and the report equal a
# single-process run byte for byte, and stops the daemons it started, by their PIDs.
# Exit 0: passed; 77: skipped (one line on why: no packages and no way to install them);
# anything else: failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
t0=$(date +%s)
skip() {
    echo "slurm test skipped: $*"
    exit 77
}
need=(munged slurmctld slurmd sbatch squeue sinfo)
missing() {
    for b in "${need[@]}"; do
        command -v "$b" >/dev/null 2>&1 || [[ -x /usr/sbin/$b ]] || return 0
    done
    return 1
}
export PATH=$PATH:/usr/sbin
if missing; then
    [[ $(id -u) -eq 0 ]] || skip "slurm-wlm/munge are not installed and installing them needs root"
    command -v apt-get >/dev/null 2>&1 || skip "slurm-wlm/munge are not installed and there is no apt-get"
    echo "installing slurm-wlm and munge ..."
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } \
        >/tmp/feedlens-slurm-apt.log 2>&1; then
        skip "apt-get could not install slurm-wlm and munge (see /tmp/feedlens-slurm-apt.log)"
    fi
    missing && skip "slurm-wlm installed but its daemons are not on PATH"
fi
[[ $(id -u) -eq 0 ]] || skip "slurmd must run as root to start jobs, and this is not root"

tmp=$(mktemp -d /tmp/feedlens-slurm.XXXXXX)
pids=()
stop() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap stop EXIT

# munge: its own key, socket and files in $tmp.
mkdir -p "$tmp/munge" && chmod 700 "$tmp/munge"
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$tmp/munge/munge.key"
munged --foreground --force --socket="$tmp/munge/socket" --key-file="$tmp/munge/munge.key" \
    --pid-file="$tmp/munge/pid" --log-file="$tmp/munge/log" --seed-file="$tmp/munge/seed" \
    >"$tmp/munge/out" 2>&1 &
pids+=($!)

# One node, this host, every core; state, spool, logs and PID files in $tmp.
host=$(hostname -s)
cpus=$(nproc)
mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10))
port=$((20000 + RANDOM % 20000))
mkdir -p "$tmp/state" "$tmp/spool"
cat >"$tmp/slurm.conf" <<CONF
ClusterName=feedlens-test
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/socket
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
# Schedule every second: the units take about a second each, so the default minute-long
# passes would be most of the wall time.
SchedulerParameters=sched_interval=1,sched_min_interval=100000
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=600
MaxArraySize=10000
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$tmp/slurm.conf
slurmctld -D -f "$SLURM_CONF" >"$tmp/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" -N "$host" >"$tmp/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 60); do
    state=$(sinfo -h -o %t 2>/dev/null || true)
    [[ $state == idle* || $state == mix* ]] && break
    sleep 1
done
if [[ ! ${state:-} =~ ^(idle|mix) ]]; then
    echo "slurm test: the node did not come up (state '${state:-none}')" >&2
    tail -n 20 "$tmp/slurmctld.log" "$tmp/slurmd.log" "$tmp"/*.out >&2 || true
    exit 1
fi

# The test profile's binary: already built by `cargo test` in CI (dependencies optimised).
cargo build --locked --quiet
export FEEDLENS=$root/target/debug/feedlens
export LOGS=$tmp/logs
# Jobs share the node's cores: one core per unit.
export SBATCH_OPTS="--cpus-per-task=1 --mem=2G"

wait_jobs() {
    local t=0
    while [[ -n $(squeue -h -o %i 2>/dev/null) ]]; do
        sleep 2
        t=$((t + 2))
        if [[ $t -gt 1800 ]]; then
            echo "slurm test: jobs still queued after 30 minutes" >&2
            squeue >&2
            return 1
        fi
    done
}
fail() {
    echo "slurm test failed: $*" >&2
    for f in "$LOGS"/*; do
        if grep -q error "$f"; then
            echo "--- $f" >&2
            tail -n 5 "$f" >&2
        fi
    done
    exit 1
}

# The quick zoo, two seeds, one array per stage; then the report, planned once it is done.
zoo=$tmp/zoo
mkdir -p "$zoo"
sed 's/^seeds = \[0, 1, 2\]$/seeds = [0, 1]/' checkpoints/pairs.toml >"$zoo/pairs.toml"
last=$(scripts/slurm/submit-zoo.sh --quick --seeds 0,1 --out "$zoo")
report_args=(--pairs "$zoo/pairs.toml" --n 48 --out "$tmp/report")
scripts/slurm/submit-report.sh --after "$last" "${report_args[@]}" >/dev/null
# Give the planning job time to submit the arrays before the queue can look empty.
wait_jobs || fail "timeout"
sleep 1
wait_jobs || fail "timeout"
[[ -f $tmp/report/index.html ]] || fail "no report at $tmp/report/index.html"

# The same in one process.
"$FEEDLENS" zoo --quick --seeds 0,1 --out "$tmp/one" >/dev/null
diff -r "$tmp/one" "$zoo" --exclude=pairs.toml >/dev/null ||
    fail "the zoo built by Slurm differs from the single-process zoo"
# data.json names the pairs file and the checkpoint folders: the same ones, in one process.
"$FEEDLENS" report --pairs "$zoo/pairs.toml" --n 48 --out "$tmp/report-same" >/dev/null
diff -r "$tmp/report" "$tmp/report-same" >/dev/null ||
    fail "the merged report differs from the single-process report"
units=$(ls "$tmp/report-units" | wc -l)
jobs=$(ls "$LOGS" | wc -l)
echo "slurm test passed: quick zoo (2 seeds, 30 units) and a report of $units units built by $jobs Slurm jobs equal the single-process bytes ($(($(date +%s) - t0)) s)"
