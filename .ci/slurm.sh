#!/usr/bin/env bash
# Single-node Slurm for CI and local tests: `bash .ci/slurm.sh start` / `bash .ci/slurm.sh stop`.
# Facts of this kind of machine: the job-step plugin drops SLURM_CONF, so the config must live at
# /etc/slurm/slurm.conf; there is no slurmdbd, so Snakemake must query job status with squeue
# (profiles/slurm sets slurm-status-command: squeue), and MinJobAge must be >= 120 s for squeue to still
# see finished jobs. Two `gpu` GRES on /dev/null and /dev/zero let GPU requests (one per data-parallel training
# process) be scheduled on a machine without GPUs.
set -euo pipefail
PIDS=/run/pertpipe-slurm.pids
cmd=${1:-start}

stop() {
  if [ -f "$PIDS" ]; then
    while read -r name pid; do
      if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
    done < "$PIDS"
    sleep 1
    while read -r name pid; do kill -9 "$pid" 2>/dev/null || true; done < "$PIDS"
    rm -f "$PIDS"
  fi
}

if [ "$cmd" = stop ]; then stop; exit 0; fi

command -v slurmctld >/dev/null || { echo "slurm-wlm is not installed (apt-get install -y --no-install-recommends slurm-wlm munge)"; exit 1; }
stop
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
node=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+/NodeName=localhost/; s/ UpTime=.*//')
mem=$(echo "$node" | sed -E 's/.*RealMemory=([0-9]+).*/\1/')
node=$(echo "$node" | sed -E "s/RealMemory=[0-9]+/RealMemory=$((mem - 1024))/")
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=pertpipe
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=900
GresTypes=gpu
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
$node Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
printf "NodeName=localhost Name=gpu File=/dev/null\nNodeName=localhost Name=gpu File=/dev/zero\n" > /etc/slurm/gres.conf
[ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
: > "$PIDS"
runuser -u munge -- /usr/sbin/munged
sleep 1
echo "munged $(cat /run/munge/munged.pid)" >> "$PIDS"
/usr/sbin/slurmctld
for _ in $(seq 30); do [ -s /run/slurmctld.pid ] && break; sleep 0.5; done
echo "slurmctld $(cat /run/slurmctld.pid)" >> "$PIDS"
/usr/sbin/slurmd -N localhost
for _ in $(seq 30); do [ -s /run/slurmd.pid ] && break; sleep 0.5; done
echo "slurmd $(cat /run/slurmd.pid)" >> "$PIDS"
for _ in $(seq 60); do
  state=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
  if [ "$state" = idle ]; then echo "slurm: node localhost idle"; exit 0; fi
  sleep 1
done
echo "slurm did not become idle (state: ${state:-none}); see /var/log/slurm/"; sinfo -N -l || true
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log || true
exit 1
