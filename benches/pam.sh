#!/usr/bin/env bash
# Gatehouse PAM benchmark: what pam_gatehouse.so adds to an ssh login, and whether it holds
# up under a burst of logins, in one reproducible run.
#
#   1. `ssh … true` logins, UsePAM yes, interleaved, median of BENCH_LOGINS per side:
#        plain   PAM service without the module: auth/account/session pam_permit.so
#        module  PAM service with pam_gatehouse.so for account and session (auth pam_permit)
#                                                        target: module - plain <= 5 ms
#      Both sides get the key from gatehouse-keys (the same key command, the same store)
#      and run the forced gatehouse-shell, so the PAM stack is the only difference.
#   2. BENCH_CONCURRENT (200) logins at once through the module (MaxStartups 300):
#                                                        target: 0 failures; wall time (info)
#   3. (info) the PAM stages alone: pamtester acct_mgmt open_session close_session, with and
#      without the module (hyperfine), to split what the module costs from sshd's share
#   4. state.db as a server has it after a while: BENCH_AGE (1000) more sessions through
#      the module, then part 1 (target module - plain <= 2 ms) and part 3 once more, with
#      the size of state.db-wal after each part
#   5. state.db with a server's history: BENCH_STATE_ROWS (1,000,000) stored logins, the
#      test user's own 10,000 (the most the module keeps per user) and the rest spread over
#      1,000 users, all within the year kept; then part 1 (target <= 2 ms) and part 3 again
#   6. a summary table, printed and written to bench-data/pam-summary.md
#
# Two sshd instances, not one sshd whose PAM file is rewritten between rounds. sshd takes its
# PAM service name from its program name, so one sshd can have one service only. Both
# instances run the same binary through two links named like the two services, with the
# very same sshd_config file and host key; only the port differs, and it is given with -p
# on the command line. That matters: sshd pads each publickey query by a per-user delay of
# 0-4.3 ms derived from a hash of the host keys and the sshd_config file's bytes
# (sshd.c accumulate_host_timing_secret), so two configs that differed in a Port line
# could differ by up to 4.3 ms before PAM runs; the same file gives both the same delay.
# The alternative, one sshd and a PAM file rewritten between logins, labels each login by
# the moment its sshd read the file (pam_start), which the script does not see: the ssh
# client returns before the server side has closed the session, and a rewrite must be a
# rename to never be read half-written. With two services, each login's stack is fixed by
# the port it dials, both files stay unchanged while anything is timed, and each is checked
# before timing (plain: a pam_deny.so version of it must refuse a login; module: every
# login shows up in state.db under the module's service name). The listeners themselves are
# idle: sshd re-executes itself for every connection, so neither side keeps warm state.
#
# usage: sudo benches/pam.sh        (root: starts sshd, adds a test user, writes two files
#                                    /etc/pam.d/gatehouse-bench-{plain,module}, removed on exit)
#
# Environment (all optional):
#   BENCH_DATA        results, the store and state.db (default: <repo>/bench-data, git-ignored);
#                     root-owned all the way up (see run.sh)
#   BENCH_RUN         binaries, client key and the private sshd (default: /run/gatehouse-bench)
#   BENCH_LOGINS      timed logins per side (default 60, at least 50)
#   BENCH_CONCURRENT  logins started at once in part 2 (default 200)
#   BENCH_PAM_RUNS    pamtester runs per service in parts 3 and 4 (default 100)
#   BENCH_AGE         sessions through the module that age state.db in part 4 (default 1000;
#                     0: no part 4)
#   BENCH_AGED_LOGINS timed logins per side in parts 4 and 5 (default 50, at least 50)
#   BENCH_STATE_ROWS  stored logins in part 5 (default 1000000; 0: no part 5)
#   BENCH_QUIET_WAIT  seconds to wait before each part for other work on the machine to
#                     stop (default 30; 0: do not wait); login rounds disturbed anyway are
#                     left out and repeated (see git.sh, "other work on the machine")
#   BENCH_KEEP=1      keep the store and state.db afterwards
#   BENCH_LOCK_WAIT   seconds to wait for another benchmark that holds the lock (default 0)
#
# Exit status: 0 all targets met, 1 some target missed, other values: the run failed.
# Takes about a minute on 2 cores once the release build is done (more while other work runs:
# up to BENCH_QUIET_WAIT s per part, disturbed rounds repeated); every step is bounded
# (ssh 30 s per sequential login, 120 s per burst login, quiet waits, at most 2x the rounds).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh" # ROOT, DATA, RUN, BENCH_USER (one user for both services: see there), helpers, cleanup
LOGINS=${BENCH_LOGINS:-60}
CONCURRENT=${BENCH_CONCURRENT:-200}
PAM_RUNS=${BENCH_PAM_RUNS:-100}
AGE=${BENCH_AGE:-1000}
AGED_LOGINS=${BENCH_AGED_LOGINS:-50}
STATE_ROWS=${BENCH_STATE_ROWS:-1000000}
QUIET_WAIT=${BENCH_QUIET_WAIT:-30}
TARGET_MS=2
ROUND_DISTURBED=0.05 # CPU-seconds of other work during one round (two logins, ~0.3 s) that disturb it
TAB=$'\t'
SVC_PLAIN=gatehouse-bench-plain   # PAM service names: files in /etc/pam.d and sshd's program names
SVC_MODULE=gatehouse-bench-module
PAM_MARK="# $MARK: benches/pam.sh, removed when it ends"

for pair in BENCH_LOGINS:"$LOGINS" BENCH_CONCURRENT:"$CONCURRENT" BENCH_PAM_RUNS:"$PAM_RUNS" BENCH_QUIET_WAIT:"$QUIET_WAIT" \
    BENCH_AGE:"$AGE" BENCH_AGED_LOGINS:"$AGED_LOGINS" BENCH_STATE_ROWS:"$STATE_ROWS"; do
    [[ ${pair#*:} =~ ^[0-9]+$ ]] || die "${pair%%:*} must be a whole number (got '${pair#*:}')"
done
[ "$LOGINS" -ge 50 ] || die "BENCH_LOGINS must be at least 50"
[ "$AGED_LOGINS" -ge 50 ] || die "BENCH_AGED_LOGINS must be at least 50"
if [ "$CONCURRENT" -lt 1 ] || [ "$CONCURRENT" -gt 290 ]; then
    die "BENCH_CONCURRENT must be between 1 and 290 (MaxStartups 300)"
fi
[ "$PAM_RUNS" -ge 10 ] || die "BENCH_PAM_RUNS must be at least 10"

# ---------------------------------------------------------------- setup, cleanup on any exit
bench_prepare # root, trusted paths, lock, EXIT trap, leftovers of a killed run
RUN_T0=$(now_us)
bench_need openssh-server:/usr/sbin/sshd openssh-client:ssh iproute2:ss util-linux:setpriv python3:python3 \
    sqlite3:sqlite3 pamtester:pamtester hyperfine:hyperfine jq:jq procps:pgrep
PAM_DIR=$(dirname "$(find /lib /usr/lib -name pam_permit.so -path '*security*' -print -quit 2>/dev/null)")
[ -e "$PAM_DIR/pam_deny.so" ] || die "pam_permit.so / pam_deny.so not found (package libpam-modules)"

STORE=$DATA/pam-store      # gatehouse.toml, store.db and the module's state.db (on disk, as on a server)
USERS_DIR=$DATA/pam-users  # [users] data_dir: the module makes the user's data folder there
CLEANUP_DATA+=("$STORE")
CLEANUP_ALWAYS+=("$USERS_DIR") # the folder belongs to the test user, who goes too
rm -rf "${STORE:?}" "${USERS_DIR:?}"

# The two PAM service files. A file of that name without our mark is someone else's: refuse.
pam_files_remove() {
    local svc f
    for svc in "$SVC_PLAIN" "$SVC_MODULE"; do
        f=/etc/pam.d/$svc
        [ ! -e "$f" ] || [ "$(head -1 "$f")" != "$PAM_MARK" ] || rm -f "$f"
        rm -f "/etc/pam.d/.$svc.new" # pam_write's, if it was interrupted
    done
}
for svc in "$SVC_PLAIN" "$SVC_MODULE"; do
    f=/etc/pam.d/$svc
    [ ! -e "$f" ] || [ "$(head -1 "$f")" = "$PAM_MARK" ] || die "$f exists and is not this benchmark's"
done
pam_files_remove # leftovers of a run that was killed with SIGKILL
CLEANUP_HOOKS+=(pam_files_remove)
# pam_write SERVICE ACCOUNT-LINE SESSION-LINE: written in full, then renamed into place.
pam_write() {
    printf '%s\nauth     required %s\naccount  required %s\nsession  required %s\n' "$PAM_MARK" pam_permit.so "$2" "$3" \
        >"/etc/pam.d/.$1.new"
    chmod 0644 "/etc/pam.d/.$1.new"
    mv -f "/etc/pam.d/.$1.new" "/etc/pam.d/$1"
}

# ---------------------------------------------------------------- other work on the machine
# As in git.sh: a few ms per login are the whole difference, so anything else running on
# the machine skews it. Each round records the CPU time the machine spent outside this
# benchmark (busy time in /proc/stat minus the benchmark's own, from a cpuacct cgroup that
# holds this script and all it starts; the two sshd instances and so every session, key
# command and PAM stage in a child group "server"). Disturbed rounds are left out and
# repeated, up to as many extra rounds as were asked for.
bench_cgroup gatehouse-bench-pam # CG, other_mark, other_since, wait_quiet (lib.sh)

# ---------------------------------------------------------------- build
log "building release binaries (scripts/build-release: target/dist, pam_gatehouse.so included)"
bench_build_id # the commit built, for the summary (others may commit meanwhile)
(cd "$ROOT" && scripts/build-release)
bench_install_binaries # $RUN/bin: GH, KEYS, SHELL_BIN
SO=$RUN/bin/pam_gatehouse.so # root's, in a root-owned folder, like /lib/.../security
install -m 0644 "$ROOT/target/dist/pam_gatehouse.so" "$SO"

# ---------------------------------------------------------------- user, key, store
log "test user, key, store and PAM services"
bench_add_user
install -d -m 0700 "$RUN/client"
ssh-keygen -q -t ed25519 -N '' -C "$MARK" -f "$RUN/client/id_ed25519"
CLIENT_KEY=$RUN/client/id_ed25519
FP=$(ssh-keygen -lf "$CLIENT_KEY.pub" | awk '{ print $2 }')

sshd_prepare # $RUN/sshd, before the log socket that lives there
LOG_SOCKET=$RUN/sshd/log.sock
bench_store_config "$STORE" "$USERS_DIR" "$LOG_SOCKET" # CFG
cat >>"$CFG" <<EOF

[lockout]
sessions_per_minute = 1000000
EOF
# The rate limit (600 sessions a minute per user by default) would refuse this one user's
# burst and the state.db aging below; its check, one indexed count, runs all the same.
"$GH" --config "$CFG" init >/dev/null
"$GH" --config "$CFG" user add "$BENCH_USER" >/dev/null
added=$("$GH" --config "$CFG" key add "$BENCH_USER" --file "$CLIENT_KEY.pub")
[ "$added" = "$FP" ] || die "key add printed '$added', expected $FP"
bench_store_open "$STORE" # to nobody, the AuthorizedKeysCommandUser
bench_check_lookup "$STORE" "$BENCH_USER" "$(bench_uid)" "$FP"
STATE=$STORE/state.db # the module's: beside a store placed elsewhere (config.rs), made at the first login

pam_write "$SVC_PLAIN" pam_permit.so pam_permit.so
pam_write "$SVC_MODULE" "$SO config=$CFG unknown=deny" "$SO config=$CFG"

# The log socket: a small listener stands in for syslog (this machine may have no
# /dev/log), so the module's decisions and errors are on record.
GH_LOG=$DATA/pam-gatehouse.log
start_log_listener
# state_sql QUERY: read-only, so no checkpoint and no change to the module's files.
state_sql() { sqlite3 -readonly "$STATE" "$1"; }

# ---------------------------------------------------------------- two sshd instances
log "two sshd instances, one sshd_config: $SVC_PLAIN and $SVC_MODULE"
PORT_A=$(free_port 22990)
PORT_B=$(free_port $((PORT_A + 1)))
# sshd keeps the first value of a keyword, so UsePAM is sshd_config_base's argument and the
# key settings go in a `Match all` block.
{
    sshd_config_base yes
    cat <<EOF
MaxStartups 300
Match all
    AuthorizedKeysFile none
    AuthorizedKeysCommand $KEYS --config $CFG -- %u %U %f %t %k
    AuthorizedKeysCommandUser nobody
EOF
} >"$RUN/sshd/sshd_config"
effective() { /usr/sbin/sshd -T -f "$RUN/sshd/sshd_config" -C "user=$BENCH_USER,host=localhost,addr=127.0.0.1,lport=$1"; }
for p in "$PORT_A" "$PORT_B"; do
    eff=$(effective "$p")
    grep -qx "usepam yes" <<<"$eff" || die "sshd would not use PAM"
    grep -q "^maxstartups 300:[0-9]*:300$" <<<"$eff" || die "MaxStartups is not 300"
    grep -qx "authorizedkeysfile none" <<<"$eff" || die "sshd would read an authorized_keys file"
    grep -qx "authorizedkeyscommand $KEYS --config $CFG -- %u %U %f %t %k" <<<"$eff" || die "sshd would not run gatehouse-keys"
done
SSHD_PIDS=()
# sshd_as SERVICE PORT LOG: sshd through a link named SERVICE (its PAM service), port by -p.
sshd_as() {
    local link=$RUN/sshd/$1
    ln -sfn /usr/sbin/sshd "$link"
    mkdir -p /run/sshd
    "$link" -t -f "$RUN/sshd/sshd_config" -p "$2"
    "$link" -D -e -f "$RUN/sshd/sshd_config" -p "$2" 2>"$3" &
    SSHD_PIDS+=($!)
    CLEANUP_PIDS+=($!)
    [ -z "$CG" ] || echo $! >"$CG/server/cgroup.procs"
    for _ in $(seq 50); do
        [ -z "$(ss -Hltn "sport = :$2")" ] || return 0
        sleep 0.1
    done
    die "sshd ($1) did not start on port $2; see $3"
}
LOG_A=$DATA/pam-sshd-plain.log LOG_B=$DATA/pam-sshd-module.log
sshd_as "$SVC_PLAIN" "$PORT_A" "$LOG_A"
sshd_as "$SVC_MODULE" "$PORT_B" "$LOG_B"
port_of() { case $1 in A) echo "$PORT_A" ;; B) echo "$PORT_B" ;; esac }
# settle: waits (at most 2 s) until neither listener has a connection left, so that each
# timed login starts on an idle server (the ssh client returns before the server side has
# closed the session: sshd's teardown and the module's close_session run after it).
settle() {
    local _ p busy
    for _ in $(seq 200); do
        busy=0
        for p in "${SSHD_PIDS[@]}"; do
            ! pgrep -P "$p" >/dev/null || busy=1
        done
        [ "$busy" -eq 1 ] || return 0
        sleep 0.01
    done
}

# ---------------------------------------------------------------- the split, proved
# The plain side reads its own file: with pam_deny.so in it, a login must fail.
pam_write "$SVC_PLAIN" pam_deny.so pam_permit.so
! login "$PORT_A" "$CLIENT_KEY" 2>/dev/null || die "$SVC_PLAIN with pam_deny.so let a login through: sshd does not use /etc/pam.d/$SVC_PLAIN"
pam_write "$SVC_PLAIN" pam_permit.so pam_permit.so
for _ in 1 2 3; do
    login "$PORT_A" "$CLIENT_KEY" || die "login on $SVC_PLAIN (port $PORT_A) failed; see $LOG_A"
    login "$PORT_B" "$CLIENT_KEY" || die "login on $SVC_MODULE (port $PORT_B) failed; see $LOG_B and $GH_LOG"
done
settle
# The module side: each login recorded under its service, with the key that logged in;
# nothing under the plain one.
[ -e "$STATE" ] || die "no $STATE after three logins through the module"
n=$(state_sql "SELECT count(*) FROM logins WHERE service = '$SVC_MODULE' AND fingerprint = '$FP' AND rhost = '127.0.0.1'")
[ "$n" -eq 3 ] || die "state.db holds $n logins of $SVC_MODULE with the key, expected 3"
n=$(state_sql "SELECT count(*) FROM logins WHERE service != '$SVC_MODULE'")
[ "$n" -eq 0 ] || die "state.db holds $n logins of another service"
[ -d "$USERS_DIR/$BENCH_USER" ] || die "the module made no data folder $USERS_DIR/$BENCH_USER"
[ "$(log_count pam_gatehouse stage=account verdict=accept)" -eq 3 ] || die "the module did not log three accepted account stages; see $GH_LOG"

# ---------------------------------------------------------------- 1. sequential logins
# sequential TAG WANT TSV: rounds of one login per side, the order flipped every round
# (A B, B A, ...), until WANT rounds count. A round in which other work took more than
# ROUND_DISTURBED CPU-seconds is left out and repeated (at most WANT extra rounds). Each
# login's CPU time on the server side (sshd, key command, gatehouse-shell, PAM) is read
# from the cgroup (ns): what the module adds in CPU time hardly depends on other work.
# Adds its rows.
q() { sort -g | awk -v q="$1" '{ v[NR] = $1 } END { i = int(q * NR + 0.999999); if (i < 1) i = 1; print v[i] }'; }
sequential() {
    local tag=$1 want=$2 tsv=$3 kept=0 tried=0 all_other=0 srv0=0 srv1=0 t0 us side order lines other counted
    local phase_t0 wall rounds l_a l_b c_a c_b paired before n d
    before=$(state_sql "SELECT count(*) FROM logins WHERE service = '$SVC_MODULE' AND rhost = '127.0.0.1'")
    wait_quiet "$tag"
    printf 'round\tside\tms\tserver_cpu_ms\tother_cpu_s\tcounted\n' >"$tsv"
    phase_t0=$(now_us)
    while [ "$kept" -lt "$want" ] && [ "$tried" -lt $((want * 2)) ]; do
        tried=$((tried + 1))
        if [ $((tried % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
        lines=()
        other_mark
        for side in $order; do
            [ -z "$CG" ] || read -r srv0 <"$CG/server/cpuacct.usage"
            t0=$(now_us)
            login "$(port_of "$side")" "$CLIENT_KEY" || die "$tag: login $tried on side $side failed; see $LOG_A, $LOG_B, $GH_LOG"
            us=$(($(now_us) - t0))
            settle
            [ -z "$CG" ] || read -r srv1 <"$CG/server/cpuacct.usage"
            lines+=("$tried$TAB$side$TAB$(awk -v us="$us" -v s=$((srv1 - srv0)) 'BEGIN { printf "%.2f\t%.2f", us / 1000, s / 1e6 }')")
        done
        end_round "$(other_since)" "$ROUND_DISTURBED" "$tsv" || true
    done
    wall=$(awk -v us=$(($(now_us) - phase_t0)) 'BEGIN { printf "%.0f", us / 1e6 }')
    settle_rounds "$tsv" "$want" "$ROUND_DISTURBED" "$tag"
    rounds=$ROUNDS_USED
    # Every B login went through the module (and so no A login did: see the split above).
    n=$(state_sql "SELECT count(*) FROM logins WHERE service = '$SVC_MODULE' AND rhost = '127.0.0.1'")
    [ "$n" -eq $((before + tried)) ] || die "$tag: state.db holds $((n - before)) new logins through the module, expected $tried"
    col() { awk -v s="$1" -v c="${2:-3}" -F '\t' 'NR > 1 && $2 == s && $6 == "yes" { print $c }' "$tsv"; }
    l_a=$(col A | median) l_b=$(col B | median)
    c_a=$(col A 4 | median) c_b=$(col B 4 | median)
    d=$(diff_ms "$l_b" "$l_a")
    paired=$(awk -F '\t' 'NR > 1 && $6 == "yes" { t[$1, $2] = $3; r[$1] = 1 } END { for (i in r) print t[i, "B"] - t[i, "A"] }' "$tsv" | median)
    row "$tag: ssh … true, PAM without the module, $SVC_PLAIN (median of $rounds)" "$(ms "$l_a")" "info" info
    row "$tag: ssh … true, PAM with pam_gatehouse.so account + session, $SVC_MODULE (median of $rounds)" "$(ms "$l_b")" "info" info
    row "$tag: login time added by the module, module - plain (medians)" "$d ms" "<= $TARGET_MS ms" "$(verdict "$d" "$TARGET_MS")"
    row "$tag: login time added, median of the per-round differences" "$(awk -v p="$paired" 'BEGIN { printf "%.2f", p }') ms" "info" info
    row "$tag: login time, 90th percentile plain / module" "$(col A | q 0.9) / $(col B | q 0.9) ms" "info" info
    if [ -n "$CG" ]; then
        row "$tag: server-side CPU per login, sshd + key command + gatehouse-shell + PAM (median plain / module)" "$c_a / $c_b ms" "info" info
        row "$tag: server-side CPU added by the module per login (medians)" "$(diff_ms "$c_b" "$c_a") ms" "info (robust to other work)" info
    fi
    row "$tag: CPU used outside the benchmark meanwhile" "$(awk -v a="$all_other" 'BEGIN { printf "%.1f", a }') CPU-s in $wall s" "info (0 = quiet machine)" info
}
# The module's state.db, in WAL frames (4096-byte pages + a 24-byte header, after a 32-byte
# file header): every PAM stage opens it anew, and SQLite reads every frame of the -wal file
# when it is the first to open the database (wal-index recovery).
wal_frames() { if [ -e "$STATE-wal" ]; then echo $((($(stat -c %s "$STATE-wal") - 32) / 4120)); else echo 0; fi; }
wal_row() { row "state.db-wal file $1" "$(wal_frames) frames ($(awk -v b="$(stat -c %s "$STATE-wal" 2>/dev/null || echo 0)" 'BEGIN { printf "%.1f", b / 1048576 }') MiB), $(state_sql 'SELECT count(*) FROM logins') logins in state.db" "info" info; }

log "ssh … true, $LOGINS logins per service, interleaved, fresh state.db"
LOAD_SEQ=$(cut -d' ' -f1 /proc/loadavg)
sequential "fresh state.db" "$LOGINS" "$DATA/pam-logins.tsv"
wal_row "after the sequential logins"

# ---------------------------------------------------------------- 2. a burst through the module
log "$CONCURRENT logins at once through $SVC_MODULE"
wait_quiet "the burst"
LOAD_BURST=$(cut -d' ' -f1 /proc/loadavg)
BURST_DIR=$(mktemp -d)
CLEANUP_ALWAYS+=("$BURST_DIR")
# Client timeouts generous enough that a failure is the server's doing: 60 s to connect and
# exchange banners (200 handshakes share 2 CPUs), 120 s in all.
BURST_OPTS=("${SSH_OPTS[@]/ConnectTimeout=10/ConnectTimeout=60}")
overflows() { awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 } else print $n["ListenOverflows"] }' /proc/net/netstat; }
# burst_one I START_US: sleeps until START_US, then one login; appends I, status, start, end.
burst_one() {
    local d rc=0 t0
    d=$(($2 - $(now_us)))
    [ "$d" -le 0 ] || sleep "$(printf '%d.%06d' $((d / 1000000)) $((d % 1000000)))"
    t0=$(now_us)
    timeout 120 ssh "${BURST_OPTS[@]}" -i "$CLIENT_KEY" -p "$PORT_B" "$BENCH_USER@127.0.0.1" true \
        </dev/null >/dev/null 2>"$BURST_DIR/$1.err" || rc=$?
    printf '%s\t%s\t%s\t%s\n' "$1" "$rc" "$t0" "$(now_us)" >>"$BURST_DIR/results.tsv"
}
before_logins=$(state_sql "SELECT count(*) FROM logins")
before_errors=$(grep -c 'error=' "$GH_LOG" || true)
overflow0=$(overflows)
other_mark
START=$(($(now_us) + 3000000)) # every login starts at this moment, 3 s from now
pids=()
for i in $(seq "$CONCURRENT"); do
    burst_one "$i" "$START" &
    pids+=($!)
done
LAUNCHED=$(now_us)
[ "$LAUNCHED" -lt "$START" ] || NOTES+=("burst: starting the $CONCURRENT clients took until $(((LAUNCHED - START) / 1000)) ms after the common start")
for p in "${pids[@]}"; do wait "$p" || true; done
BURST_OTHER=$(other_since)
overflow1=$(overflows)
settle
BURST=$DATA/pam-burst.tsv
{
    printf 'login\tstatus\tstart_ms\tend_ms\tms\n'
    sort -n "$BURST_DIR/results.tsv" | awk -F '\t' -v s="$START" -v OFS='\t' \
        '{ print $1, $2, sprintf("%.1f", ($3 - s) / 1000), sprintf("%.1f", ($4 - s) / 1000), sprintf("%.1f", ($4 - $3) / 1000) }'
} >"$BURST"
DONE=$(($(wc -l <"$BURST") - 1))
[ "$DONE" -eq "$CONCURRENT" ] || die "burst: $DONE of $CONCURRENT logins reported back"
FAILED=$(awk -F '\t' 'NR > 1 && $2 != 0' "$BURST" | wc -l)
WALL=$(awk -F '\t' 'NR > 1 { if ($4 > m) m = $4 } END { printf "%.2f", m / 1000 }' "$BURST")
B_MED=$(awk -F '\t' 'NR > 1 { print $5 }' "$BURST" | median)
B_MAX=$(awk -F '\t' 'NR > 1 { print $5 }' "$BURST" | sort -g | tail -1)
B_P90=$(awk -F '\t' 'NR > 1 { print $5 }' "$BURST" | q 0.9)
RECORDED=$(($(state_sql "SELECT count(*) FROM logins") - before_logins))
# Sessions still open in state.db a few seconds on: close_session failed for them.
for _ in $(seq 50); do
    OPEN=$(state_sql "SELECT count(*) FROM logins WHERE closed IS NULL AND rhost = '127.0.0.1'")
    [ "$OPEN" -gt 0 ] || break
    sleep 0.1
done
MODULE_ERRORS=$(($(grep -c 'error=' "$GH_LOG" || true) - before_errors))
row "$CONCURRENT logins at once through the module: failed" "$FAILED of $CONCURRENT" "0" "$([ "$FAILED" -eq 0 ] && echo PASS || echo FAIL)"
row "$CONCURRENT logins at once: wall time, common start to last login done" "$WALL s" "info" info
row "$CONCURRENT logins at once: time per login, median / 90th percentile / max" "$(ms "$B_MED") / $(ms "$B_P90") / $(ms "$B_MAX")" "info" info
row "$CONCURRENT logins at once: sessions recorded in state.db / left open after close" "$RECORDED / $OPEN" "info ($((CONCURRENT - FAILED)) / 0 expected)" info
row "$CONCURRENT logins at once: error lines logged by gatehouse" "$MODULE_ERRORS" "info" info
row "$CONCURRENT logins at once: listen queue overflows (TcpExtListenOverflows)" "$((overflow1 - overflow0))" "info" info
row "$CONCURRENT logins at once: CPU used outside the benchmark meanwhile" "$BURST_OTHER CPU-s" "info (0 = quiet machine)" info
wal_row "after the burst"
if [ "$FAILED" -gt 0 ]; then
    # The clients' reasons, most frequent first, and the server's.
    reasons=$(cat "$BURST_DIR"/*.err | sed 's/[0-9]\{4,\}/N/g' | sort | uniq -c | sort -rn | head -5 | awk '{ $1 = $1 "x"; print }' | tr '\n' ';')
    NOTES+=("burst: the failed clients said: ${reasons:-nothing}")
    errs=$(grep 'error=' "$GH_LOG" | tail -n "$MODULE_ERRORS" | sed 's/.*\(stage=[a-z]*\).*\(error=.*\)/\1 \2/' | sort | uniq -c | sort -rn | head -5 | tr '\n' ';' || true)
    [ -z "$errs" ] || NOTES+=("burst: gatehouse logged: $errs")
fi

# ---------------------------------------------------------------- 3. the PAM stages alone
# stages TAG: acct_mgmt, open_session and close_session of the two services, as root,
# without sshd: the module's own cost (it sees no SSH_AUTH_INFO_0 here, so no key_use
# update). PAM_RUNS runs per service (hyperfine -N), which add PAM_RUNS + 5 sessions.
HF_DIR=$(mktemp -d)
CLEANUP_ALWAYS+=("$HF_DIR")
stages() {
    local tag=$1 file=$2 p_a p_b
    log "pamtester: the PAM stages alone, $PAM_RUNS runs per service, $tag"
    wait_quiet "pamtester, $tag"
    hyperfine -N --style basic --warmup 5 --runs "$PAM_RUNS" --export-json "$HF_DIR/$file.json" \
        -n "$SVC_PLAIN" "pamtester $SVC_PLAIN $BENCH_USER acct_mgmt open_session close_session" \
        -n "$SVC_MODULE" "pamtester $SVC_MODULE $BENCH_USER acct_mgmt open_session close_session" | tee "$DATA/$file.txt"
    hf_pool "$DATA/$file.json" "$HF_DIR/$file.json"
    p_a=$(hf_median "$DATA/$file.json" "$SVC_PLAIN") p_b=$(hf_median "$DATA/$file.json" "$SVC_MODULE")
    row "$tag: pamtester acct_mgmt open_session close_session, plain / module (median of $PAM_RUNS)" "$(ms "$p_a") / $(ms "$p_b")" "info" info
    row "$tag: the module's account + session open + session close without sshd (difference of medians)" "$(diff_ms "$p_b" "$p_a") ms" "info" info
}
stages "after the burst" pam-stages

# ---------------------------------------------------------------- 4. an older state.db
# A server's state.db has seen more than a few hundred logins. Each module session adds a
# few frames to state.db-wal, and each PAM stage, a process of its own that opens state.db
# anew, has SQLite read every frame in it (wal-index recovery) and, past 1,000 frames,
# copy them all into the database again (the automatic checkpoint after its commit). So
# the same comparison once more, after AGE sessions more (pamtester open_session
# close_session: two commits, as a login's session makes).
if [ "$AGE" -gt 0 ]; then
    log "state.db aged by $AGE more sessions through the module, then $AGED_LOGINS logins per service again"
    before=$(state_sql "SELECT count(*) FROM logins")
    t0=$(now_us)
    for i in $(seq "$AGE"); do
        pamtester "$SVC_MODULE" "$BENCH_USER" open_session close_session >/dev/null 2>&1 ||
            die "aging: session $i through the module failed; see $GH_LOG"
    done
    AGE_S=$(awk -v us=$(($(now_us) - t0)) 'BEGIN { printf "%.1f", us / 1e6 }')
    n=$(($(state_sql "SELECT count(*) FROM logins") - before))
    [ "$n" -eq "$AGE" ] || die "aging: state.db holds $n new sessions, expected $AGE"
    row "aging: $AGE sessions through the module one after the other (pamtester open_session close_session)" "$AGE_S s" "info" info
    wal_row "after aging"
    sequential "aged state.db" "$AGED_LOGINS" "$DATA/pam-logins-aged.tsv"
    stages "aged state.db" pam-stages-aged
    wal_row "at the end"
fi

# ---------------------------------------------------------------- 5. a server's history
# A year of logins on a busy server: BENCH_STATE_ROWS rows in state.db, written straight
# into it (a login at a time would take hours). The test user holds 10,000 of them, the
# most the module keeps per user (a CI account pulling every minute reaches that in a
# week); 1,000 other users share the rest. Every statement of the login path is indexed,
# so a login should cost what it cost on a fresh file.
if [ "$STATE_ROWS" -gt 0 ]; then
    log "state.db with $STATE_ROWS stored logins, then $AGED_LOGINS logins per service again"
    now=$(date +%s)
    own=$((STATE_ROWS < 10000 ? STATE_ROWS : 10000))
    t0=$(now_us)
    sqlite3 "$STATE" <<SQL >/dev/null || die "filling state.db with $STATE_ROWS logins failed"
PRAGMA journal_mode = WAL;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $STATE_ROWS)
INSERT INTO logins (user, fingerprint, rhost, service, opened, closed)
    SELECT CASE WHEN i <= $own THEN '$BENCH_USER' ELSE 'hist' || (i % 1000) END, NULL,
           '192.0.2.' || (i % 250), 'sshd', $now - 3600 - (i * 7 % 31000000), $now - (i * 7 % 31000000)
    FROM n;
SQL
    FILL_S=$(awk -v us=$(($(now_us) - t0)) 'BEGIN { printf "%.1f", us / 1e6 }')
    row "history: $STATE_ROWS logins written into state.db ($own of them $BENCH_USER's)" "$FILL_S s, $(awk -v b="$(stat -c %s "$STATE")" 'BEGIN { printf "%.0f", b / 1048576 }') MiB" "info" info
    sequential "$STATE_ROWS-row state.db" "$AGED_LOGINS" "$DATA/pam-logins-history.tsv"
    stages "$STATE_ROWS-row state.db" pam-stages-history
    wal_row "after the history rounds"
fi

# ---------------------------------------------------------------- summary
SO_SIZE=$(stat -c %s "$SO")
{
    echo "# Gatehouse PAM benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr), $(nproc) CPUs, commit $BUILD_ID, $(/usr/sbin/sshd -V 2>&1 | head -1 | cut -d, -f1), pam_gatehouse.so $((SO_SIZE / 1024)) KiB"
    echo
    echo "Two sshd instances from the same binary, the same sshd_config file and host key (so the same per-user publickey padding), UsePAM yes, started through links named $SVC_PLAIN and $SVC_MODULE (their PAM services); only the port differs, given with -p."
    echo "Both sides: key from gatehouse-keys (AuthorizedKeysCommand, one store), forced gatehouse-shell, \`ssh … true\`, one user ($BENCH_USER), \`KexAlgorithms curve25519-sha256\`."
    echo "PAM: $SVC_PLAIN = auth/account/session pam_permit.so; $SVC_MODULE = auth pam_permit.so, \`account required pam_gatehouse.so config=… unknown=deny\`, \`session required pam_gatehouse.so config=…\`; state.db on disk beside the store ($STATE)."
    echo "Sequential logins: rounds of one per side, order flipped every round, each login started on an idle server; rounds with more than $ROUND_DISTURBED CPU-s of other work left out and repeated."
    echo "Other load: 1-minute load average $LOAD_SEQ before the sequential logins, $LOAD_BURST before the burst ($(nproc) CPUs)."
    echo "Run time $((($(now_us) - RUN_T0) / 1000000)) s from taking the benchmark lock (release build included)."
    bench_table
    bench_notes
    echo
    echo "Raw data in $DATA: pam-logins.tsv and pam-logins-aged.tsv (sequential, per login), pam-burst.tsv (the burst, ms from the common start), pam-stages*.txt/json (pamtester), pam-gatehouse.log (gatehouse's log lines), pam-sshd-plain.log, pam-sshd-module.log."
} | tee "$DATA/pam-summary.md"

[ "$FAILS" -eq 0 ] || exit 1
