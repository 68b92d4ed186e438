#!/usr/bin/env bash
# A one-node SLURM cluster on this host, with accounting, for tests and local use:
#   scripts/slurm_cluster.sh start|stop|status
# Debian's slurm-wlm, munge, slurmdbd and mariadb-server are installed if missing (root, apt).
# Every config, pid file, log, socket and spool lives under $AESWEEP_SLURM_DIR
# (default /tmp/aesweep-slurm); nothing under /etc is written. Client commands find the
# cluster through SLURM_CONF, which `start` prints as an export line.
# The daemons run as root and trust that folder's munge key: `start` creates it itself (mode
# 0700, a marker file, a fresh munge key and database password) and refuses a folder it did
# not create or that others can write.
set -euo pipefail
umask 077

DIR=${AESWEEP_SLURM_DIR:-/tmp/aesweep-slurm}
CONF=$DIR/slurm.conf
DB_PORT=${AESWEEP_SLURM_DB_PORT:-3307}  # not 3306: leave any MariaDB of the host alone
CTLD_PORT=${AESWEEP_SLURM_PORT:-6817}   # slurmctld; slurmd and slurmdbd use the next two
CRED_EXPIRE=${AESWEEP_SLURM_CRED_EXPIRE:-10}  # s a requeued job is held (SLURM's default: 120)
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)  # start order; stop runs it backwards

fail() {
    echo "slurm_cluster: error: $*" >&2
    exit 1
}

pid_of() {  # the pid of a daemon this script started, if it still runs
    local file=$DIR/run/$1.pid pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    # the same program, not another process that got the pid of a daemon that died
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] && echo "$pid"
}

wait_until() {  # wait_until SECONDS WHAT COMMAND...: poll every 0.2 s
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "$what (log: $(last_log))"
        sleep 0.2
    done
}

LAST_LOG=
last_log() { echo "${LAST_LOG:-$DIR/log}"; }

MARKER=.aesweep-slurm  # written by `start` into the state folder it created

claim_state_dir() {  # create $DIR (0700) or accept it only if this script made it for us
    if mkdir -m 0700 "$DIR" 2>/dev/null; then
        : >"$DIR/$MARKER"
        dd if=/dev/urandom of="$DIR/munge.key" bs=1024 count=1 status=none  # fresh per folder
        chmod 400 "$DIR/munge.key"
        head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$DIR/db.password"
        return 0
    fi
    [[ -d $DIR && ! -L $DIR ]] || fail "$DIR exists and is not a folder (set AESWEEP_SLURM_DIR)"
    local owner mode
    read -r owner mode < <(stat -c '%u %a' "$DIR")
    ((owner == EUID)) || fail "$DIR belongs to uid $owner, not to us: refusing it" \
        "(remove it, or set AESWEEP_SLURM_DIR)"
    (((8#$mode & 8#022) == 0)) || fail "$DIR is writable by others (mode $mode): refusing it"
    [[ -f $DIR/$MARKER && ! -L $DIR/$MARKER && -s $DIR/munge.key && -s $DIR/db.password ]] ||
        fail "$DIR was not created by this script: refusing it (remove it, or set AESWEEP_SLURM_DIR)"
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' ||
            missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    ((EUID == 0)) || fail "${missing[*]} not installed and not root: run as root (apt-get)"
    echo "installing ${missing[*]} (apt-get)"
    # Packages must not start their own daemons (no systemd here; we start ours below).
    local policy=/usr/sbin/policy-rc.d added=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
    fi
    local log=$DIR/log/apt.log rc=0
    {
        apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                "${missing[@]}"
    } >"$log" 2>&1 || rc=$?
    [[ -n $added ]] && rm -f "$policy"
    ((rc == 0)) || fail "apt-get install ${missing[*]} failed (log: $log: $(tail -1 "$log"))"
}

write_configs() {
    local host cpus mem_mb gpus i gres=
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)  # 10% for the OS
    mkdir -p "$DIR"/{run,log,spool/ctld,spool/d,mysql}
    # GPUs as gres: the real /dev/nvidia* where there are some, else $AESWEEP_SLURM_GPUS
    # placeholder files, so that SLURM's per-job binding (CUDA_VISIBLE_DEVICES) can be tested.
    echo "AutoDetect=off" >"$DIR/gres.conf"
    local devices=(/dev/nvidia[0-9]*)
    if [[ -e ${devices[0]} ]]; then
        printf 'Name=gpu File=%s\n' "${devices[@]}" >>"$DIR/gres.conf"
    else
        mkdir -p "$DIR/dev"
        for ((i = 0; i < ${AESWEEP_SLURM_GPUS:-2}; i++)); do
            # slurmd wants character devices; these are /dev/null's (1,3), never opened.
            [[ -c $DIR/dev/gpu$i ]] || mknod "$DIR/dev/gpu$i" c 1 3 ||
                fail "mknod $DIR/dev/gpu$i failed (set AESWEEP_SLURM_GPUS=0 for no GPUs)"
            echo "Name=gpu File=$DIR/dev/gpu$i" >>"$DIR/gres.conf"
        done
    fi
    gpus=$(grep -c '^Name=gpu' "$DIR/gres.conf" || true)
    ((gpus > 0)) && gres=" Gres=gpu:$gpus"
    cat >"$CONF" <<EOF
# Written by scripts/slurm_cluster.sh: one node (this host), one partition, accounting.
ClusterName=aesweep
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$DIR/run/munge.socket,cred_expire=$CRED_EXPIRE
CredType=cred/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups (none to delegate here): track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((CTLD_PORT + 2))
# For slurmdbd connections this names the munge socket (slurm.conf(5)).
AccountingStoragePass=$DIR/run/munge.socket
SchedulerType=sched/backfill
# Jobs turned around fast (the tests wait on them): a batch job is scheduled as it is submitted
# (batch_sched_delay, default 3 s) and pending jobs are looked at every second (sched_interval,
# default 60 s): a requeued job, pending until its cred_expire hold ends, starts then.
SchedulerParameters=batch_sched_delay=0,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
AccountingStorageTRES=gres/gpu
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=10
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb$gres State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((CTLD_PORT + 2))
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(<"$DIR/db.password")
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"  # slurmdbd refuses a readable one (it holds a password)
    cat >"$DIR/my.cnf" <<EOF
[mysqld]
datadir=$DIR/mysql
socket=$DIR/run/mysqld.sock
pid-file=$DIR/run/mariadbd.pid
log-error=$DIR/log/mariadb.log
bind-address=127.0.0.1
port=$DB_PORT
user=root
# slurmdbd logs that it recommends a bigger pool; this one is plenty for a test cluster
innodb_buffer_pool_size=128M
innodb_lock_wait_timeout=900
EOF
}

mysql_ready() { mariadb --socket="$DIR/run/mysqld.sock" -e 'SELECT 1'; }

start_mariadb() {
    pid_of mariadbd >/dev/null && return 0
    LAST_LOG=$DIR/log/mariadb.log
    if [[ ! -d $DIR/mysql/mysql ]]; then
        mariadb-install-db --defaults-file="$DIR/my.cnf" --auth-root-authentication-method=socket \
            >"$DIR/log/mariadb-install.log" 2>&1 ||
            fail "mariadb-install-db failed (log: $DIR/log/mariadb-install.log)"
    fi
    setsid mariadbd --defaults-file="$DIR/my.cnf" </dev/null >>"$DIR/log/mariadb.log" 2>&1 &
    wait_until 60 "MariaDB did not start" mysql_ready
    local password
    password=$(<"$DIR/db.password")
    mariadb --socket="$DIR/run/mysqld.sock" -e "
        CREATE OR REPLACE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
        CREATE OR REPLACE USER 'slurm'@'localhost' IDENTIFIED BY '$password';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" ||
        fail "could not create MariaDB user slurm (log: $LAST_LOG)"
}

node_idle() { sinfo -h -N -o %T | grep -qx idle; }

start() {
    claim_state_dir
    mkdir -p "$DIR/log" 2>/dev/null || fail "cannot create $DIR/log (set AESWEEP_SLURM_DIR)"
    install_packages
    write_configs
    export SLURM_CONF=$CONF
    if ! pid_of munged >/dev/null; then
        LAST_LOG=$DIR/log/munged.log
        munged --force --key-file="$DIR/munge.key" --socket="$DIR/run/munge.socket" \
            --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
            --seed-file="$DIR/run/munged.seed" 2>>"$LAST_LOG" ||
            fail "munged did not start (log: $LAST_LOG)"
    fi
    start_mariadb
    if ! pid_of slurmdbd >/dev/null; then
        LAST_LOG=$DIR/log/slurmdbd.log
        slurmdbd 2>>"$LAST_LOG" ||  # reads slurmdbd.conf next to $SLURM_CONF
            fail "slurmdbd did not start (log: $LAST_LOG)"
        wait_until 60 "slurmdbd does not answer" sacctmgr -n list cluster
    fi
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx aesweep; then
        sacctmgr -i add cluster aesweep >/dev/null 2>&1 || fail "sacctmgr add cluster failed"
    fi
    if ! sacctmgr -n -P list account format=account | grep -qx aesweep; then
        sacctmgr -i add account aesweep cluster=aesweep >/dev/null 2>&1 ||
            fail "sacctmgr add account failed"
    fi
    if ! sacctmgr -n -P list user "$(id -un)" format=user | grep -q .; then
        sacctmgr -i add user "$(id -un)" account=aesweep cluster=aesweep >/dev/null 2>&1 ||
            fail "sacctmgr add user $(id -un) failed"
    fi
    if ! pid_of slurmctld >/dev/null; then
        LAST_LOG=$DIR/log/slurmctld.log
        slurmctld -f "$CONF" 2>>"$LAST_LOG" || fail "slurmctld did not start (log: $LAST_LOG)"
    fi
    if ! pid_of slurmd >/dev/null; then
        LAST_LOG=$DIR/log/slurmd.log
        slurmd -f "$CONF" -N "$(hostname -s)" 2>>"$LAST_LOG" ||
            fail "slurmd did not start (log: $LAST_LOG)"
    fi
    local deadline=$((SECONDS + 60)) name
    until node_idle 2>/dev/null; do
        sleep 0.2
        for name in slurmctld slurmd; do  # a daemon that forked, then died (e.g. port in use)
            if ((SECONDS > deadline - 57)) && ! pid_of "$name" >/dev/null; then
                fail "$name exited: $(grep fatal "$DIR/log/$name.log" | tail -1 | cut -c27-)" \
                    "(log: $DIR/log/$name.log)"
            fi
        done
        ((SECONDS < deadline)) ||
            fail "the node did not become idle in 60 s (log: $DIR/log/slurmctld.log)"
    done
    echo "slurm cluster up: $(sinfo -h -o '%P %D %c CPUs %T')"
    echo "export SLURM_CONF=$CONF"
}

stop() {  # cancel the jobs, then TERM every daemon at once (SIGKILL after 10 s) and wait
    local name pid i stopped=()
    [[ -d $DIR ]] || return 0
    if pid_of slurmctld >/dev/null; then  # jobs end first: no slurmstepd or job outlives us
        SLURM_CONF=$CONF scancel --full "--user=$(id -un)" 2>/dev/null || true
        for _ in $(seq 100); do
            [[ -z $(SLURM_CONF=$CONF squeue -h -t running,completing -o %i 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[i]}
        pid=$(pid_of "$name") || continue
        kill -TERM "$pid" 2>/dev/null && stopped+=("$name:$pid")
    done
    for name in "${stopped[@]}"; do
        pid=${name#*:}
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        rm -f "$DIR/run/${name%%:*}.pid"
        echo "stopped ${name%%:*} ($pid)"
    done
    for pid in $(pgrep -x slurmstepd || true); do  # a step of ours that outlived its job
        if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "SLURM_CONF=$CONF"; then
            kill -KILL "$pid" 2>/dev/null && echo "stopped slurmstepd ($pid)"
        fi
    done
}

status() {
    local name pid down=0
    for name in "${DAEMONS[@]}"; do
        if pid=$(pid_of "$name"); then
            echo "$name: running ($pid)"
        else
            echo "$name: stopped"
            down=1
        fi
    done
    if ((down == 0)); then
        SLURM_CONF=$CONF sinfo -h -o 'partition %P: %D node(s), %c CPUs, %T'
        echo "export SLURM_CONF=$CONF"
    fi
    return $down
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
*) fail "usage: $0 start|stop|status" ;;
esac
