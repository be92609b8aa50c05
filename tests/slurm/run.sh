#!/usr/bin/env bash
# Prove `--profile` with the Slurm executor on a real single-node Slurm (Debian slurm-wlm + munge):
# start the daemons, run config/smoke.yaml through sbatch, check the Slurm job log and that the
# outputs equal a local run's, stop the daemons we started. Recipe: ../shared/slurm-local.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SMK="$REPO/.venv/bin/snakemake"
# rules run in their conda envs: a stand-in `conda` builds each env file's pip dependency closure
# (tests/env_closure.py) and activation puts that env's python first, so a rule whose env lacks an
# import fails here as it would on a cluster
export PATH="$REPO/tests/slurm/fake_conda/bin:$REPO/.venv/bin:$PATH"
WORK=$(mktemp -d /tmp/realfake-slurm.XXXXXX)
export REALFAKE_ACTIVATIONS="$WORK/activations.txt"
HOST=$(hostname -s)
STARTED=()

log() { echo "[slurm-test] $*"; }
cleanup() {
  for pidfile in "${STARTED[@]}"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
}
trap cleanup EXIT

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge from Debian"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

mkdir -p /etc/slurm /run/munge /run/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
chown munge:munge /run/munge
[ -f /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null;
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2000 ))
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=realfaketest
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
MailProg=/bin/true
DefMemPerCPU=1000
MinJobAge=600
NodeName=$HOST CPUs=$(nproc) RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
: > /var/log/slurm/jobcomp.log

if ! pgrep -x munged >/dev/null; then
  su -s /bin/sh munge -c /usr/sbin/munged; STARTED+=(/run/munge/munged.pid)
fi
if ! pgrep -x slurmctld >/dev/null; then /usr/sbin/slurmctld; STARTED+=(/run/slurm/slurmctld.pid); fi
if ! pgrep -x slurmd >/dev/null; then /usr/sbin/slurmd; STARTED+=(/run/slurm/slurmd.pid); fi
for _ in $(seq 1 60); do
  sinfo -h -o %T 2>/dev/null | grep -q -E '^(idle|mixed)' && break
  scontrol update nodename="$HOST" state=resume 2>/dev/null || true
  sleep 1
done
sinfo
log "running config/smoke.yaml locally, then through --profile (Slurm executor)"
"$SMK" all_ablation -s "$REPO/Snakefile" -d "$WORK/local" --cores 2 --configfile "$REPO/config/smoke.yaml" > "$WORK/local.log" 2>&1 || { tail -30 "$WORK/local.log"; exit 1; }
cp -r "$REPO/tests/slurm/profile" "$WORK/slurmtest"
mkdir -p "$WORK/slurm"
(cd "$WORK/slurm" && "$SMK" all_ablation -s "$REPO/Snakefile" --profile "$WORK/slurmtest" \
   --configfile "$REPO/config/smoke.yaml") 2>&1 | tee "$WORK/slurm.log"

jobs=$(grep -c "JobId=" /var/log/slurm/jobcomp.log || true)
log "Slurm job log lists $jobs completed jobs"
[ "$jobs" -ge 10 ] || { log "FAIL: expected the workflow's jobs in the Slurm log"; exit 1; }
grep -q "JobState=FAILED" /var/log/slurm/jobcomp.log && { log "FAIL: a Slurm job failed"; exit 1; }
# grouping: the generate_shard jobs (2 shards per set: 3 sets and the 2 LiRA pipeline shadows' sets,
# 10 in all) went in as sbatch submissions of 2, run in series inside each (one core per
# submission), so each asked for twice one shard's runtime
shards=$(awk '$1 == "generate_shard" && $2 ~ /^[0-9]+$/ {print $2; exit}' "$WORK/local.log")
groups=$(grep -c "submitted with SLURM jobid .*slurm_logs/group_generate_generate_shard/" "$WORK/slurm.log" || true)
log "$shards generate_shard jobs were submitted as $groups group jobs"
[ -n "$shards" ] && [ "$groups" -eq $(( (shards + 1) / 2 )) ] || { log "FAIL: expected $shards shard jobs in submissions of 2"; exit 1; }

envs=$(sort -u "$REALFAKE_ACTIVATIONS" | wc -l)
acts=$(wc -l < "$REALFAKE_ACTIVATIONS")
log "rule commands ran in $envs distinct env closures ($acts activations)"
[ "$envs" -eq "$(ls "$REPO"/envs/*.yaml | wc -l)" ] || { log "FAIL: expected every env file to be used"; exit 1; }

status=0
for f in results/tables/table1.csv results/tables/table2.csv results/tables/quality.csv \
         results/smoke/class_means.pt results/smoke/lora/full/s0/lora.safetensors; do
  if cmp -s "$WORK/local/$f" "$WORK/slurm/$f"; then log "same bytes: $f"; else log "FAIL: differs: $f"; status=1; fi
done
for d in results/synthetic/smoke/ours/s0/1x/shards results/synthetic/smoke/base/s0/1x/shards; do
  if diff -rq "$WORK/local/$d" "$WORK/slurm/$d" >/dev/null; then log "same images: $d"; else log "FAIL: differs: $d"; status=1; fi
done

# data parallelism through the profile: classify_real again with classify.gpus 2 for the smoke data;
# the rule launches torchrun with 2 processes (gloo on this CPU node) inside one Slurm job
log "one 2-process classifier job (classify.gpus 2) through the profile"
printf 'datasets:\n  smoke:\n    classify_overrides: {gpus: 2}\n' > "$WORK/ddp.yaml"
(cd "$WORK/slurm" && "$SMK" results/smoke/classify/real/s0/metrics.json -s "$REPO/Snakefile" --profile "$WORK/slurmtest" \
   --configfile "$REPO/config/smoke.yaml" "$WORK/ddp.yaml" --forcerun classify_real) 2>&1 | tee "$WORK/ddp.log"
ddp_log="$WORK/slurm/results/logs/smoke/classify/real_s0.log"
if grep -q "data-parallel: 2 processes (gloo)" "$ddp_log" && grep -q '"top1"' "$WORK/slurm/results/smoke/classify/real/s0/metrics.json" \
   && grep -q "nproc_per_node 2 -m realfake.classify" "$WORK/ddp.log" && ! grep -q "JobState=FAILED" /var/log/slurm/jobcomp.log; then
  log "2-process job ran through Slurm: $(grep -o '"top1": [0-9.]*' "$WORK/slurm/results/smoke/classify/real/s0/metrics.json")"
else
  log "FAIL: the 2-process classifier job did not run through the profile"; tail -20 "$ddp_log" || true; status=1
fi
[ $status -eq 0 ] && log "PASS: Slurm run equals local run; data-parallel job ran" && rm -rf "$WORK"
exit $status
