# shellcheck shell=bash disable=SC2034 # variables set here are used by the scripts that source this file
# Shared by the benchmark scripts (benches/*.sh); sourced, never run:
#   # shellcheck source-path=SCRIPTDIR source=lib.sh
#   . "$(dirname "$0")/lib.sh"
#
# Sourcing it sets
#   SCRIPT  the script's name, for messages
#   ROOT    the repository
#   DATA    results and generated data: BENCH_DATA, default <repo>/bench-data (root-owned path)
#   RUN     binaries, client keys and the private sshd: BENCH_RUN, default /run/gatehouse-bench
# and the script then calls bench_prepare, which takes the lock, checks the paths and
# installs the EXIT trap (bench_cleanup). Scripts add their generated data to CLEANUP_DATA
# (removed unless BENCH_KEEP=1), their scratch folders to CLEANUP_ALWAYS, helper processes
# to CLEANUP_PIDS and functions to run last to CLEANUP_HOOKS. What the benchmarks share with
# the tests (the base of sshd_config, the ssh client's options, slapd's config) is read
# from the test fixtures in tests/common/.
SCRIPT=$(basename "$0")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${BENCH_DATA:-$ROOT/bench-data}
RUN=${BENCH_RUN:-/run/gatehouse-bench}
FIXTURES=$ROOT/tests/common

# One test user for every login path, on purpose: sshd pads every publickey query to
# 5 ms + a per-user delay of 0-4.3 ms (a hash of the user name and a secret derived from
# the host key and sshd_config; auth2.c user_specific_delay), so two users would differ by
# up to 4.3 ms before gatehouse does anything. One user, one sshd, several ports instead.
BENCH_USER=ghbench
MARK=gatehouse-bench # GECOS of the test user: cleanup removes only an account that carries it

log() { printf '\n== %s\n' "$*" >&2; }
die() {
    printf '%s: %s\n' "$SCRIPT" "$*" >&2
    exit 2
}

# ---------------------------------------------------------------- results
# One row per figure: name | value | target | PASS/FAIL/info. NOTES collect anomalies.
ROWS=()
NOTES=()
FAILS=0
row() {
    ROWS+=("| $1 | $2 | $3 | $4 |")
    [ "$4" != FAIL ] || FAILS=$((FAILS + 1))
}
# The summary's part every benchmark shares: bench_table, the rows as a markdown table (a
# paragraph: blank lines around it), and bench_notes, a list item per note.
bench_table() {
    printf '\n| measure | value | target | result |\n| --- | --- | --- | --- |\n'
    printf '%s\n' "${ROWS[@]}"
    echo
}
bench_notes() {
    local n
    for n in "${NOTES[@]}"; do echo "- $n"; done
}
# PASS when value <= target (verdict) or value >= target (verdict_ge).
verdict() { if awk -v v="$1" -v t="$2" 'BEGIN { exit !(v <= t) }'; then echo PASS; else echo FAIL; fi; }
verdict_ge() { if awk -v v="$1" -v t="$2" 'BEGIN { exit !(v >= t) }'; then echo PASS; else echo FAIL; fi; }
now_us() { echo "${EPOCHREALTIME/./}"; }
# 1234567 -> 1,234,567 (printf's ' flag depends on the locale).
commas() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
# Prints the median of the numbers on stdin.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ms() { awk -v v="$1" 'BEGIN { printf "%.2f ms", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# sshd runs the key command as AuthorizedKeysCommandUser (nobody here), and a reader that
# cannot write the -shm file takes a different path inside SQLite than root would: time it
# as nobody, the way logins run it.
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
# The forced command runs as the logged-in user.
as_bench() { setpriv --reuid="$BENCH_USER" --regid="$BENCH_USER" --init-groups "$@"; }

# ---------------------------------------------------------------- prerequisites
# bench_need PACKAGE:COMMAND ...: installs the packages whose command is missing.
bench_need() {
    local pair need=()
    for pair in "$@"; do
        command -v "${pair#*:}" >/dev/null || need+=("${pair%%:*}")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        log "installing ${need[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    fi
}

# gatehouse refuses a config file (and sshd a key command) if any directory above it is
# writable by someone other than root; say so up front rather than failing half-way.
check_trusted() {
    local p=$1 uid mode
    while :; do
        read -r uid mode < <(stat -c '%u %a' "$p")
        if [ "$uid" -ne 0 ] || [ $((8#$mode & 8#022)) -ne 0 ]; then
            die "$p must be root-owned and not group/world-writable (set BENCH_DATA / BENCH_RUN elsewhere)"
        fi
        [ "$p" != / ] || break
        p=$(dirname "$p")
    done
}

# ---------------------------------------------------------------- setup and cleanup
SSHD_PID=
CLEANUP_DATA=()   # generated data: removed unless BENCH_KEEP=1
CLEANUP_ALWAYS=() # scratch folders: always removed
CLEANUP_PIDS=()   # helper processes started by the script
CLEANUP_HOOKS=()  # functions run last, once the processes are stopped

# bench_cleanup_common [FUNCTION...]: the part of the cleanup every benchmark needs (and
# all of it for one without the shared user and $RUN, ldap.sh): stops CLEANUP_PIDS and the
# private sshd if one runs, removes CLEANUP_ALWAYS, runs the FUNCTIONs, removes CLEANUP_DATA
# unless BENCH_KEEP=1, then runs CLEANUP_HOOKS, once the processes are stopped.
bench_cleanup_common() {
    set +e
    local p
    for p in "${CLEANUP_PIDS[@]}"; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    sshd_stop
    for p in "${CLEANUP_ALWAYS[@]}"; do
        case $p in /?*) rm -rf -- "$p" ;; esac
    done
    for p in "$@"; do
        "$p"
    done
    if [ "${BENCH_KEEP:-0}" != 1 ]; then
        for p in "${CLEANUP_DATA[@]}"; do
            case $p in "$DATA"/?*) rm -rf -- "$p" ;; esac
        done
    fi
    for p in "${CLEANUP_HOOKS[@]}"; do
        "$p"
    done
}

# The shared part: the test user (only an account that carries MARK) and what $RUN holds.
bench_remove_user() {
    if [ "$(getent passwd "$BENCH_USER" | cut -d: -f5)" = "$MARK" ]; then
        userdel "$BENCH_USER" 2>/dev/null
    fi
    rm -rf "${RUN:?}/sshd" "${RUN:?}/client" "${RUN:?}/bin"
    rmdir "$RUN" 2>/dev/null
}

# The EXIT trap bench_prepare installs.
bench_cleanup() { bench_cleanup_common bench_remove_user; }

# Root, absolute root-owned paths, one benchmark at a time (they share the user, RUN and
# the sshd), the EXIT trap, and no leftovers of a run that was killed with SIGKILL.
bench_prepare() {
    [ "$(id -u)" -eq 0 ] || die "run as root (starts sshd on 127.0.0.1, adds user $BENCH_USER)"
    # Both directories get files removed on exit: absolute paths of their own, never /.
    local d
    for d in "$DATA" "$RUN"; do
        case $d in /?*) ;; *) die "BENCH_DATA and BENCH_RUN must be absolute paths other than / (got '$d')" ;; esac
    done
    umask 022
    mkdir -p "$DATA" "$RUN"
    chmod 0755 "$DATA" "$RUN"
    check_trusted "$DATA"
    check_trusted "$RUN"
    exec 9>"$RUN.lock"
    if ! flock -n 9; then
        # BENCH_LOCK_WAIT: seconds to wait for the other benchmark (default 0: give up).
        [ "${BENCH_LOCK_WAIT:-0}" -gt 0 ] || die "another benchmark holds $RUN.lock"
        log "waiting up to ${BENCH_LOCK_WAIT} s for another benchmark (it holds $RUN.lock)"
        flock -w "$BENCH_LOCK_WAIT" 9 || die "another benchmark still holds $RUN.lock after ${BENCH_LOCK_WAIT} s"
    fi
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM # make Ctrl-C go through the EXIT trap too
    # Leftovers of a run that was killed with SIGKILL: remove our own account, refuse others.
    if getent passwd "$BENCH_USER" >/dev/null; then
        [ "$(getent passwd "$BENCH_USER" | cut -d: -f5)" = "$MARK" ] || die "user $BENCH_USER exists and is not a benchmark account"
        userdel "$BENCH_USER"
    fi
    rm -rf "${RUN:?}/sshd" "${RUN:?}/client" "${RUN:?}/bin"
}

# BUILD_ID: the commit being built, " (+ local changes)" if the tree differs from it. Taken
# at build time: others may commit while a benchmark runs.
bench_build_id() {
    BUILD_ID="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (+ local changes)')"
}

# sshd runs the key command only from a root-owned path nobody else can write, so the
# binaries are copied out of the build tree (target/dist, scripts/build-release) into
# $RUN/bin (0755, root).
bench_install_binaries() {
    local b
    install -d -m 0755 "$RUN/bin"
    for b in gatehouse gatehouse-keys gatehouse-shell; do
        install -m 0755 "$ROOT/target/dist/$b" "$RUN/bin/$b"
    done
    GH=$RUN/bin/gatehouse
    KEYS=$RUN/bin/gatehouse-keys
    SHELL_BIN=$RUN/bin/gatehouse-shell
}

# A throw-away account: '*' (not '!') as the password, because with UsePAM no sshd treats
# '!' as locked and refuses even a valid key. Home '/' avoids a chdir warning.
# In users.uid_min..uid_max (the default 20000..29999): Gatehouse serves no account below it.
bench_add_user() { useradd -K UID_MIN=20000 -K UID_MAX=29999 -M -d / -p '*' -s /bin/sh -c "$MARK" "$BENCH_USER"; }
# The bench user's uid, as sshd passes it to gatehouse-keys (%U); before the account exists,
# any uid in the served range (the store lookups do not depend on it).
bench_uid() { id -u "$BENCH_USER" 2>/dev/null || echo 20000; }

# ---------------------------------------------------------------- the store
# bench_store_config DIR [USERS_DIR LOG_SOCKET]: the store folder DIR (0755, not init's
# 0750: the key command runs as nobody) and CFG=DIR/gatehouse.toml with the part the
# benchmarks share: [store] in DIR; with USERS_DIR (made too) and LOG_SOCKET, [users]
# data_dir = USERS_DIR/%u and [log] socket; last [shell], the installed gatehouse-shell
# (bench_install_binaries first). Scripts append their own sections to CFG, and any lines
# before their first section header still belong to [shell].
bench_store_config() {
    install -d -m 0755 "$1"
    CFG=$1/gatehouse.toml
    printf '[store]\npath = "%s"\n\n' "$1/store.db" >"$CFG"
    if [ "$#" -ge 3 ]; then
        install -d -m 0755 "$2"
        printf '[users]\ndata_dir = "%s"\n\n[log]\nsocket = "%s"\n\n' "$2/%u" "$3" >>"$CFG"
    fi
    printf '[shell]\npath = "%s"\n' "$SHELL_BIN" >>"$CFG"
}

# bench_store_open DIR: `init` on the store in DIR (it keeps the -wal/-shm files writers
# leave, and recreates them if a sqlite3 CLI writer removed them), then the three files
# opened to nobody (the AuthorizedKeysCommandUser) and the user (gatehouse-shell).
bench_store_open() {
    "$GH" --config "$1/gatehouse.toml" init >/dev/null
    chmod 0644 "$1/store.db" "$1/store.db-wal" "$1/store.db-shm"
}

# bench_check_lookup DIR USER UID FP: gatehouse-keys as nobody, over the store in DIR, must
# print exactly one line for the key FP of USER.
bench_check_lookup() {
    local lines
    lines=$(as_nobody "$KEYS" --config "$1/gatehouse.toml" -- "$2" "$3" "$4" | wc -l)
    [ "$lines" -eq 1 ] || die "$1: gatehouse-keys as nobody printed $lines lines for $2 $4 (expected 1)"
}

# ---------------------------------------------------------------- the private sshd
# Free ports above the usual ones: free_port FROM.
free_port() {
    local p=$1
    while [ -n "$(ss -Hltn "sport = :$p")" ]; do p=$((p + 1)); done
    echo "$p"
}

# $RUN/sshd: the config, a host key, and authorized_keys files (root-owned, outside any
# home) in $RUN/sshd/authorized.
sshd_prepare() {
    install -d -m 0755 "$RUN/sshd" "$RUN/sshd/authorized"
    ssh-keygen -q -t ed25519 -N '' -C "$MARK-host" -f "$RUN/sshd/host_ed25519"
}

# sshd_config_base yes|no: the part of sshd_config every benchmark shares: the tests' base
# (tests/common/sshd_config.in: loopback, the host key $RUN/sshd/host_ed25519, UsePAM yes or
# no, the same KEX on every port), then the test user only, its authorized_keys file
# $RUN/sshd/authorized/USER.keys. Scripts append their own lines and Match LocalPort blocks.
sshd_config_base() {
    sed -e '/^#/d' -e "s#@HOST_KEY@#$RUN/sshd/host_ed25519#" -e "s#@USE_PAM@#$1#" "$FIXTURES/sshd_config.in"
    cat <<EOF
PubkeyAuthentication yes
AllowUsers $BENCH_USER
AuthorizedKeysFile $RUN/sshd/authorized/%u.keys
ExposeAuthInfo yes
EOF
}

# The authorized_keys settings sshd would apply on a port, for checks.
sshd_effective() {
    /usr/sbin/sshd -T -f "$RUN/sshd/sshd_config" -C "user=$BENCH_USER,host=localhost,addr=127.0.0.1,lport=$1" | grep -i '^authorizedkeys'
}

# sshd_start LOGFILE PORT...: starts sshd with $RUN/sshd/sshd_config on the ports, waits
# until all listen.
sshd_start() {
    local logfile=$1 p args=()
    shift
    for p in "$@"; do args+=(-p "$p"); done
    mkdir -p /run/sshd # privilege-separation directory sshd insists on
    /usr/sbin/sshd -t -f "$RUN/sshd/sshd_config" "${args[@]}"
    /usr/sbin/sshd -D -e -f "$RUN/sshd/sshd_config" "${args[@]}" 2>"$logfile" &
    SSHD_PID=$!
    for p in "$@"; do
        for _ in $(seq 50); do
            [ -z "$(ss -Hltn "sport = :$p")" ] || break
            sleep 0.1
        done
        [ -n "$(ss -Hltn "sport = :$p")" ] || die "sshd did not start on port $p; see $logfile"
    done
}

sshd_stop() {
    if [ -n "$SSHD_PID" ]; then
        kill "$SSHD_PID" 2>/dev/null || true
        wait "$SSHD_PID" 2>/dev/null || true
        SSHD_PID=
    fi
}

# Client options: the tests' (tests/common/ssh_options: no user config, no known_hosts,
# only the key given with -i), and a connect timeout.
SSH_OPTS=(-F /dev/null)
while read -r opt; do
    case $opt in '' | '#'*) ;; *) SSH_OPTS+=(-o "$opt") ;; esac
done <"$FIXTURES/ssh_options"
SSH_OPTS+=(-o ConnectTimeout=10)

# login PORT KEY: one `ssh … true` session.
login() {
    timeout 30 ssh "${SSH_OPTS[@]}" -i "$2" -p "$1" "$BENCH_USER@127.0.0.1" true
}

# ---------------------------------------------------------------- hyperfine
# hf_pool OUT.json IN.json...: one result per command over several hyperfine exports,
# every run time pooled, with median/mean/min/max over all of them.
hf_pool() {
    local out=$1
    shift
    jq -s '{results: ([.[].results[]] | group_by(.command) | map({command: .[0].command, times: (map(.times) | add)})
            | map(.times |= sort | . + {runs: (.times | length), min: .times[0], max: .times[-1],
                  mean: ((.times | add) / (.times | length)),
                  median: (.times | if length % 2 == 1 then .[(length - 1) / 2] else (.[length / 2 - 1] + .[length / 2]) / 2 end)}))}' \
        "$@" >"$out"
}

# hf_table POOLED.json: the pooled results as a markdown table (times in ms).
hf_table() {
    echo "| command | runs | median ms | mean ms | min ms | max ms |"
    echo "| --- | --- | --- | --- | --- | --- |"
    jq -r '.results[] | "| \(.command) | \(.runs) | \(.median * 1000 * 1000 | round / 1000) | \(.mean * 1000 * 1000 | round / 1000) | \(.min * 1000 * 1000 | round / 1000) | \(.max * 1000 * 1000 | round / 1000) |"' "$1"
}

# hf_median POOLED.json NAME: the median of one command, in ms.
hf_median() { jq -r --arg n "$2" '.results[] | select(.command == $n) | .median * 1000' "$1"; }

# start_log_listener: a small listener on $LOG_SOCKET stands in for syslog (this machine
# may have no /dev/log), so gatehouse's decisions land in $GH_LOG; stopped by the cleanup.
start_log_listener() {
    : >"$GH_LOG"
    python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
with open(sys.argv[2], "ab", buffering=0) as f:
    while True:
        f.write(s.recv(65536).rstrip(b"\n") + b"\n")
' "$LOG_SOCKET" "$GH_LOG" &
    CLEANUP_PIDS+=($!)
    for _ in $(seq 50); do
        [ ! -S "$LOG_SOCKET" ] || break
        sleep 0.1
    done
    [ -S "$LOG_SOCKET" ] || die "the log listener did not start"
}

# log_count WORD...: lines of the log holding every word.
log_count() {
    sleep 0.2 # the listener writes asynchronously
    awk -v pats="$*" 'BEGIN { n = split(pats, p, " ") } { for (i = 1; i <= n; i++) if (index($0, p[i]) == 0) next; c++ } END { print c + 0 }' "$GH_LOG"
}

# ---------------------------------------------------------------- rounds and other work
# end_round OTHER THRESHOLD TSV: closes a round of interleaved measurements: adds OTHER
# (CPU-seconds of work outside the benchmark during the round) to all_other, counts the
# round in kept when OTHER is at most THRESHOLD, and appends the round's rows (the array
# `lines`) to TSV with OTHER and whether the round counted. Returns 1 when it did not.
# shellcheck disable=SC2154 # lines: the caller's rows of this round
end_round() {
    local counted=no
    all_other=$(awk -v a="$all_other" -v o="$1" 'BEGIN { print a + o }')
    if awk -v o="$1" -v t="$2" 'BEGIN { exit !(o <= t) }'; then
        kept=$((kept + 1)) counted=yes
    fi
    printf "%s\t$1\t$counted\n" "${lines[@]}" >>"$3"
    [ "$counted" = yes ]
}

# settle_rounds TSV MIN THRESHOLD LABEL: after the rounds (kept of tried counted), sets
# ROUNDS_USED to the rounds the figures use: kept, or every round, with a bold note,
# when fewer than MIN stayed undisturbed; notes how many were left out.
# shellcheck disable=SC2154 # tried: the caller's round count
settle_rounds() {
    ROUNDS_USED=$kept
    if [ "$kept" -lt "$2" ]; then
        # Too busy a machine for enough quiet rounds: every round counts, and the note says so.
        sed -i '2,$s/\tno$/\tyes/' "$1"
        ROUNDS_USED=$tried
        NOTES+=("**$4 disturbed**: only $kept of $tried rounds ran with at most $3 CPU-s of other work on the machine; its figures use all $tried rounds")
    elif [ "$tried" -gt "$kept" ]; then
        NOTES+=("$4: $((tried - kept)) of $tried rounds left out because other work on the machine took more than $3 CPU-s during the round (all rounds in $(basename "$1"))")
    fi
}

# ---------------------------------------------------------------- other work on the machine
# bench_cgroup NAME: puts this script, and all it starts, into the cpuacct cgroup NAME
# (a child group "server" takes the sshd instances: echo their PID to $CG/server/cgroup.procs),
# removed by the cleanup, and sets CG; without cgroup v1 cpuacct CG stays empty, a note says
# so, and every round counts. Then other_mark and other_since tell the CPU seconds the
# machine spent outside the benchmark in between (busy time in /proc/stat minus the
# benchmark's own), and wait_quiet waits for a quiet second.
bench_cgroup() {
    CLK_TCK=$(getconf CLK_TCK)
    CG=
    if awk '$2 == "/sys/fs/cgroup/cpuacct" && $3 == "cgroup" { f = 1 } END { exit !f }' /proc/mounts; then
        CG=/sys/fs/cgroup/cpuacct/$1
        rmdir "$CG/server" "$CG" 2>/dev/null || true # left by a run that was killed
        if mkdir -p "$CG/server" && echo $$ >"$CG/cgroup.procs"; then
            CLEANUP_HOOKS+=(cg_remove)
        else
            CG=
        fi
    fi
    [ -n "$CG" ] || NOTES+=("no cgroup v1 cpuacct hierarchy at /sys/fs/cgroup/cpuacct: other work on the machine was not measured, and every round counts")
}
cg_remove() {
    echo $$ >/sys/fs/cgroup/cpuacct/cgroup.procs
    local _
    for _ in 1 2 3 4 5; do # the last sessions may take a moment to go
        rmdir "$CG/server" "$CG" 2>/dev/null && break
        sleep 0.2
    done
}
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $9 }' /proc/stat; } # user nice system steal
# cg_ticks GROUP: user + system ticks of a cgroup (0 without cgroups).
cg_ticks() { if [ -n "$CG" ]; then awk '{ s += $2 } END { print s }' "$1/cpuacct.stat"; else echo 0; fi; }
other_mark() { OTHER_B0=$(busy_ticks) OTHER_O0=$(cg_ticks "$CG"); }
other_since() {
    if [ -z "$CG" ]; then
        echo 0 # nothing to tell the benchmark's own time apart with: nothing counts as other
        return
    fi
    awk -v b=$(($(busy_ticks) - OTHER_B0)) -v o=$(($(cg_ticks "$CG") - OTHER_O0)) -v hz="$CLK_TCK" \
        'BEGIN { d = (b - o) / hz; printf "%.2f", d < 0 ? 0 : d }'
}
# wait_quiet PHASE: waits (at most QUIET_WAIT seconds, default 30) for a second in which
# the machine spends less than a tenth of a CPU outside the benchmark.
wait_quiet() {
    local waited=0 other limit=${QUIET_WAIT:-30}
    while :; do
        other_mark
        sleep 1
        other=$(other_since)
        if awk -v o="$other" 'BEGIN { exit !(o < 0.1) }'; then
            [ "$waited" -eq 0 ] || echo "quiet after ${waited} s" >&2
            [ "$waited" -eq 0 ] || NOTES+=("$1: waited $waited s for other work on the machine to stop")
            return 0
        fi
        waited=$((waited + 1))
        [ "$waited" -ne 1 ] || echo "waiting up to $limit s for a quiet machine before $1 (other work: $other CPU-s/s)" >&2
        if [ "$waited" -ge "$limit" ]; then
            NOTES+=("$1: the machine was still busy after $limit s ($other CPU-seconds per second used by other processes); measured anyway")
            return 0
        fi
    done
}
# diff_ms A B: A - B, in ms with two decimals.
diff_ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
