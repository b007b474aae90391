#!/usr/bin/env bash
# Gatehouse several-login-nodes benchmark (issue 14 item 6): a real PostgreSQL as the shared
# source (started as the tests start it, tests/common/postgres.rs: initdb as postgres in a
# scratch folder, a loopback port, a private socket folder, SCRAM), one gatehoused writing
# to it, and BENCH_SOURCE_NODES nodes (default 3), each a real gatehouse-agent mirroring
# into its own local store. Everything is timed on the login path itself: gatehouse-keys
# as sshd runs it (as nobody, with the user and uid), no sshd needed.
#
#   1. propagation: a key removed through gatehoused's API -> refused by gatehouse-keys on
#      every node, p50/p99 over BENCH_SOURCE_REVOCATIONS removals (default 100),
#      from the API's answer                                        target: p99 <= 1 s
#   2. steady load: BENCH_SOURCE_RATE key changes a second (default 100, adds and removals
#      through the API, curl --rate) for BENCH_SOURCE_LOAD_SECS (default 20): the median
#      gatehouse-keys lookup on each node under load against its idle median
#                                                                   target: <= 1.2x
#   3. PostgreSQL stopped for BENCH_SOURCE_DOWN_SECS (default 15): nodes keep serving; then
#      back: time until a key removed through the API as soon as it answers is refused on
#      every node (gatehoused and the agents reconnect on their own)   info
#   4. initial sync: BENCH_SOURCE_USERS users (default 100,000) with BENCH_SOURCE_KEYS keys
#      each (default 3), bulk-loaded in PostgreSQL with generate_series (not through the
#      API), copied into an empty node: from the agent's start to the copy committed
#                                                                   target: <= 30 s
#   5. a summary table, printed and written to bench-data/source-summary.md
#
# usage: sudo benches/source.sh      (root: the postgres account runs the server)
#
# Environment (all optional):
#   BENCH_FULL=1               the issue's full figures: load and outage of 60 s each
#   BENCH_SOURCE_NODES         nodes (default 3)
#   BENCH_SOURCE_REVOCATIONS   keys removed one at a time (default 100)
#   BENCH_SOURCE_RATE          changes a second under load (default 100)
#   BENCH_SOURCE_LOAD_SECS     length of the load (default 20; 60 with BENCH_FULL=1)
#   BENCH_SOURCE_DOWN_SECS     length of the outage (default 15; 60 with BENCH_FULL=1)
#   BENCH_SOURCE_USERS, BENCH_SOURCE_KEYS   the initial sync's size (default 100000, 3)
#   BENCH_DATA, BENCH_RUN      as for the other benchmarks (benches/lib.sh); PostgreSQL's
#                              data and the nodes' stores live in BENCH_RUN (tmpfs: /run)
#   CARGO_TARGET_DIR           where cargo builds (default <repo>/target)
#   BENCH_SOURCE_PROFILE=dev   debug builds: a quick check of the script itself, with small
#                              sizes (the figures are not the release build's)
#
# Exit status: 0 all targets met, 1 some target missed, other values: the run failed.
# About 3 minutes on 2 cores once the release build is done (6 with BENCH_FULL=1). Every
# wait is bounded; PostgreSQL, gatehoused and the agents are stopped and the scratch
# folder removed on any exit.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
NODES=${BENCH_SOURCE_NODES:-3}
REVOCATIONS=${BENCH_SOURCE_REVOCATIONS:-100}
RATE=${BENCH_SOURCE_RATE:-100}
if [ "${BENCH_FULL:-0}" = 1 ]; then LOAD_DEFAULT=60 DOWN_DEFAULT=60; else LOAD_DEFAULT=20 DOWN_DEFAULT=15; fi
LOAD_SECS=${BENCH_SOURCE_LOAD_SECS:-$LOAD_DEFAULT}
DOWN_SECS=${BENCH_SOURCE_DOWN_SECS:-$DOWN_DEFAULT}
USERS=${BENCH_SOURCE_USERS:-100000}
KEYS_PER_USER=${BENCH_SOURCE_KEYS:-3}
for pair in NODES:"$NODES" REVOCATIONS:"$REVOCATIONS" RATE:"$RATE" LOAD_SECS:"$LOAD_SECS" \
    DOWN_SECS:"$DOWN_SECS" USERS:"$USERS" KEYS:"$KEYS_PER_USER"; do
    [[ ${pair#*:} =~ ^[1-9][0-9]*$ ]] || die "BENCH_SOURCE_${pair%%:*} must be a whole number above 0 (got '${pair#*:}')"
done
PROPAGATION_TARGET_MS=1000
LOAD_TARGET=1.2
SYNC_TARGET=30
LOAD_USERS=50 # users whose keys the load adds and removes

bench_prepare
# Everything runs on this one machine: note what else was running.
NOTES+=("load average at the start (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg); the load generator, gatehoused, PostgreSQL and every node share its cores, where a site runs each node on its own host")
PGBIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -1)
if [ -z "$PGBIN" ]; then bench_need postgresql:/usr/bin/pg_config; fi
PGBIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -1)
bench_need sqlite3:sqlite3 curl:curl openssh-client:ssh-keygen

W=$RUN/source
PG_PID=
WEB_PID=
declare -A AGENT_PID=()
stop_all() {
    local p
    for p in "${AGENT_PID[@]}" "$WEB_PID"; do
        [ -z "$p" ] || { kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; }
    done
    pg_stop
    rm -rf "${W:?}"
}
CLEANUP_HOOKS+=(stop_all)

PROFILE=${BENCH_SOURCE_PROFILE:-release}
case $PROFILE in release) OUT=release ;; dev) OUT=debug ;; *) die "BENCH_SOURCE_PROFILE must be release or dev" ;; esac
log "building $PROFILE binaries"
bench_build_id
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo build --profile "$PROFILE" --locked -p gatehouse -p gatehoused --bin gatehouse \
    --bin gatehouse-agent --bin gatehouse-keys --bin gatehoused) >&2
rm -rf "${W:?}"
install -d -m 0755 "$W" "$W/bin"
for b in gatehouse gatehouse-agent gatehouse-keys gatehoused; do
    install -m 0755 "$TARGET/$OUT/$b" "$W/bin/$b"
done
GH=$W/bin/gatehouse

# ---------------------------------------------------------------- PostgreSQL, as the tests run it
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
install -d -m 0700 -o postgres -g postgres "$W/pg" "$W/pgsock"
printf 'superuser-secret\n' >"$W/initdb-pw"
chown postgres:postgres "$W/initdb-pw"
as_pg "$PGBIN/initdb" -D "$W/pg" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    --pwfile "$W/initdb-pw" -E UTF8 --no-instructions >/dev/null
touch "$W/pg.log"
chown postgres:postgres "$W/pg.log"
PGPORT=$(free_port 25432)
pg_start() {
    # Not through the as_pg function: $! must be postgres itself (setpriv and env exec it),
    # and a background job of a script starts with SIGINT ignored, postgres's fast shutdown.
    setpriv --reuid=postgres --regid=postgres --init-groups -- env --default-signal=INT,QUIT \
        "$PGBIN/postgres" -D "$W/pg" -p "$PGPORT" -c listen_addresses=127.0.0.1 \
        -c unix_socket_directories="$W/pgsock" -c max_connections=200 >>"$W/pg.log" 2>&1 &
    PG_PID=$!
    local i
    for i in $(seq 300); do
        as_pg "$PGBIN/pg_isready" -q -h "$W/pgsock" -p "$PGPORT" && return 0
        sleep 0.1
    done
    die "PostgreSQL did not start: $(tail -5 "$W/pg.log")"
}
pg_stop() {
    [ -n "$PG_PID" ] || return 0
    kill -INT "$PG_PID" 2>/dev/null # fast shutdown: clients are disconnected
    wait "$PG_PID" 2>/dev/null || true
    PG_PID=
}
psql_su() { as_pg "$PGBIN/psql" -h "$W/pgsock" -p "$PGPORT" -d "${2:-gatehouse}" -v ON_ERROR_STOP=1 -Atqc "$1"; }
pg_start
PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
psql_su "CREATE ROLE gatehouse LOGIN PASSWORD '$PASSWORD'" postgres
psql_su "CREATE DATABASE gatehouse OWNER gatehouse" postgres
install -m 0600 /dev/null "$W/pg-password"
echo "$PASSWORD" >"$W/pg-password"

# ---------------------------------------------------------------- configs: the web host, the nodes
WEBPORT=$(free_port 28022)
WEB=http://127.0.0.1:$WEBPORT
source_section() {
    printf '[source]\nurl = "postgresql://gatehouse@127.0.0.1:%s/gatehouse"\npassword_file = "%s"\n' \
        "$PGPORT" "$W/pg-password"
    printf 'staleness_max = "1h"\npoll_interval_ms = 1000\ntimeout_ms = 2000\n'
}
# host_config NAME [extra]: a config with its own store, log socket (nobody listens: the
# lines are dropped), uid range and data folders under $W/NAME.
host_config() {
    local d=$W/$1
    install -d -m 0755 "$d" "$d/state" "$d/data" "$d/userdb"
    {
        printf '[store]\npath = "%s/state/store.db"\n\n[log]\nsocket = "%s/log.sock"\nstderr = true\n\n' "$d" "$d"
        printf '[users]\nuid_min = 200000\nuid_max = 899999\ndata_dir = "%s/data/%%u"\n\n' "$d"
        printf '[agent]\naccounts = "userdb"\nuserdb_dir = "%s/userdb"\nend_sessions = false\n\n' "$d"
        printf '%s\n' "${2:-}"
        source_section
    } >"$d/gatehouse.toml"
    # The key command runs as nobody (as_nobody), in group nogroup: the store is readable by it.
    "$GH" --config "$d/gatehouse.toml" init --group nogroup >/dev/null
}
host_config web "$(printf '[web]\nlisten = "127.0.0.1:%s"\npublic_url = "%s"\ncookie_secure = false\nchanges_per_minute = 100000\n' \
    "$WEBPORT" "$WEB")"
for n in $(seq "$NODES"); do host_config "node$n"; done

start_agent() {
    "$W/bin/gatehouse-agent" --config "$W/$1/gatehouse.toml" >/dev/null 2>>"$W/$1/agent.err" &
    AGENT_PID[$1]=$!
}
for n in $(seq "$NODES"); do start_agent "node$n"; done
: >"$W/gatehoused.err"
"$W/bin/gatehoused" --config "$W/web/gatehouse.toml" >/dev/null 2>"$W/gatehoused.err" &
WEB_PID=$!
for _ in $(seq 100); do grep -q listening "$W/gatehoused.err" && break; sleep 0.1; done
grep -q listening "$W/gatehoused.err" || die "gatehoused did not start: $(cat "$W/gatehoused.err")"
TOKEN=$("$GH" --config "$W/web/gatehouse.toml" token create --scope admin --label bench 2>/dev/null)

# ---------------------------------------------------------------- users and keys
log "making $REVOCATIONS + $LOAD_USERS users with a key each"
install -d -m 0700 "$W/keys"
: >"$W/users.tsv"
for i in $(seq "$REVOCATIONS"); do
    ssh-keygen -q -t ed25519 -N '' -C "ghsrc$i" -f "$W/keys/r$i"
    printf 'ghsrc%s\t%s\n' "$i" "$(cat "$W/keys/r$i.pub")" >>"$W/users.tsv"
done
for i in $(seq "$LOAD_USERS"); do
    ssh-keygen -q -t ed25519 -N '' -C "ghload$i" -f "$W/keys/l$i"     # added and removed by the load
    ssh-keygen -q -t ed25519 -N '' -C "ghload$i-kept" -f "$W/keys/k$i" # stays
    printf 'ghload%s\t%s\n' "$i" "$(cat "$W/keys/k$i.pub")" >>"$W/users.tsv"
done
"$GH" --config "$W/web/gatehouse.toml" import tsv "$W/users.tsv" --create-users >/dev/null

blob() { cut -d' ' -f2 "$1"; }
fp_of() { ssh-keygen -lf "$1" -E sha256 | cut -d' ' -f2; }
urlenc() { printf '%s' "$1" | sed 's/%/%25/g; s/:/%3A/g; s/+/%2B/g; s/\//%2F/g; s/=/%3D/g'; }
# uid USER: from node 1's copy (the source's uid, the same on every node).
uid_of() { sqlite3 "file:$W/node1/state/store.db?mode=ro" "SELECT uid FROM users WHERE name = '$1'"; }
# lookup NODE USER UID: gatehouse-keys as sshd runs it.
lookup() { as_nobody "$W/bin/gatehouse-keys" --config "$W/$1/gatehouse.toml" -- "$2" "$3"; }
serves() { lookup "$1" "$2" "$3" 2>/dev/null | grep -qF "$4"; }

# wait_all MODE USER UID BLOB LIMIT_S: until every node serves (MODE=in) or refuses
# (MODE=out) the key; prints the microsecond it was so on the last node, or fails.
wait_all() {
    local mode=$1 user=$2 uid=$3 b=$4 limit=$(($5 * 1000000)) start n ok
    start=$(now_us)
    local -A done_at=()
    while [ $(($(now_us) - start)) -lt "$limit" ]; do
        for n in $(seq "$NODES"); do
            [ -z "${done_at[$n]:-}" ] || continue
            if serves "node$n" "$user" "$uid" "$b"; then ok=in; else ok=out; fi
            [ "$ok" != "$mode" ] || done_at[$n]=$(now_us)
        done
        if [ "${#done_at[@]}" -eq "$NODES" ]; then
            printf '%s\n' "${done_at[@]}" | sort -n | tail -1
            return 0
        fi
    done
    return 1
}
LAST=ghload$LOAD_USERS
LAST_UID=
for _ in $(seq 150); do
    LAST_UID=$(uid_of "$LAST" 2>/dev/null || true)
    [ -z "$LAST_UID" ] || break
    sleep 0.2
done
[ -n "$LAST_UID" ] || die "node 1 never received the imported users: $(tail -3 "$W/node1/agent.err")"
wait_all in "$LAST" "$LAST_UID" "$(blob "$W/keys/k$LOAD_USERS.pub")" 30 >/dev/null ||
    die "the nodes never served the imported keys: $(lookup node1 "$LAST" "$LAST_UID" 2>&1 | tail -3)"

api() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$@"; }

# ---------------------------------------------------------------- 1. propagation
log "1. $REVOCATIONS keys removed through the API, each timed to refusal on $NODES nodes"
: >"$W/propagation"
for i in $(seq "$REVOCATIONS"); do
    user=ghsrc$i
    uid=$(uid_of "$user")
    b=$(blob "$W/keys/r$i.pub")
    fp=$(fp_of "$W/keys/r$i.pub")
    t0=$(now_us)
    code=$(api -X DELETE "$WEB/api/v1/users/$user/keys/$(urlenc "$fp")")
    t1=$(now_us)
    [ "$code" = 204 ] || [ "$code" = 200 ] || die "DELETE key of $user: HTTP $code"
    last=$(wait_all out "$user" "$uid" "$b" 10) || die "key of $user still served on some node after 10 s"
    echo "$(((last - t1) / 1000)) $(((last - t0) / 1000)) $(((t1 - t0) / 1000))" >>"$W/propagation"
done
pct() { sort -n | awk -v p="$1" '{ v[NR] = $1 } END { i = int((NR * p + 99) / 100); if (i < 1) i = 1; print v[i] }'; }
P50=$(cut -d' ' -f1 "$W/propagation" | pct 50)
P99=$(cut -d' ' -f1 "$W/propagation" | pct 99)
P99_REQ=$(cut -d' ' -f2 "$W/propagation" | pct 99)
API_P50=$(cut -d' ' -f3 "$W/propagation" | pct 50)
row "key removed via API -> refused on all $NODES nodes, p50 (from the answer)" "$P50 ms" "" info
row "same, p99 (from the answer)" "$P99 ms" "<= $PROPAGATION_TARGET_MS ms" "$(verdict "$P99" "$PROPAGATION_TARGET_MS")"
row "same, p99 from the request (the API call itself: p50 $API_P50 ms)" "$P99_REQ ms" "" info

# ---------------------------------------------------------------- 2. steady load
LOOKUP_USER=ghload1
LOOKUP_UID=$(uid_of "$LOOKUP_USER")
# lookups SECONDS|-COUNT FILE: gatehouse-keys on every node in turn, each timed in µs, into
# FILE as "node µs".
lookups() {
    local until=$(($(now_us) + ${1#-} * 1000000)) count=0 n t0 t1
    : >"$2"
    while :; do
        if [ "${1:0:1}" = - ]; then [ "$count" -lt "${1#-}" ] || break; else [ "$(now_us)" -lt "$until" ] || break; fi
        for n in $(seq "$NODES"); do
            t0=$(now_us)
            lookup "node$n" "$LOOKUP_USER" "$LOOKUP_UID" >/dev/null 2>&1
            t1=$(now_us)
            echo "$n $((t1 - t0))" >>"$2"
        done
        count=$((count + 1))
    done
}
log "2. idle lookups, then $RATE changes/s for $LOAD_SECS s with lookups on every node"
lookups -200 "$W/idle"
TOTAL=$((RATE * LOAD_SECS))
# PAR curl processes, each with its own users (a user's add and removal stay in order) at
# RATE / PAR: one request at a time would let a slow answer lower the rate.
PAR=4
declare -A PUB_L=() FP_L=()
for j in $(seq "$LOAD_USERS"); do
    PUB_L[$j]=$(cut -d' ' -f1-2 "$W/keys/l$j.pub")
    FP_L[$j]=$(urlenc "$(fp_of "$W/keys/l$j.pub")")
done
declare -A STARTED=()
for ((p = 0; p < PAR; p++)); do : >"$W/load$p.curl"; done
for ((r = 0; r < TOTAL; r++)); do
    j=$(((r / 2) % LOAD_USERS + 1))
    f=$W/load$((j % PAR)).curl
    [ -z "${STARTED[$f]:-}" ] || printf 'next\n' >>"$f"
    STARTED[$f]=1
    {
        printf 'header = "Authorization: Bearer %s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' "$TOKEN"
        if [ $((r % 2)) = 0 ]; then
            printf 'url = "%s/api/v1/users/ghload%s/keys"\nheader = "Content-Type: application/json"\n' "$WEB" "$j"
            printf 'data = "{\\"key\\": \\"%s\\"}"\n' "${PUB_L[$j]}"
        else
            printf 'url = "%s/api/v1/users/ghload%s/keys/%s"\nrequest = "DELETE"\n' "$WEB" "$j" "${FP_L[$j]}"
        fi
    } >>"$f"
done
# cpu_s PID...: CPU seconds (user + system) the processes have used so far.
cpu_s() {
    local p t=0
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }'
}
# Our server's processes now, the postmaster and its children (backends come and go:
# those that ended are not counted).
pg_cpu() {
    local pids
    read -ra pids <<<"$PG_PID $(pgrep -P "$PG_PID" -d ' ' || true)"
    cpu_s "${pids[@]}"
}
AGENTS_CPU0=$(cpu_s "${AGENT_PID[@]}")
WEB_CPU0=$(cpu_s "$WEB_PID")
PG_CPU0=$(pg_cpu)
LOAD_START=$(now_us)
LOAD_PIDS=()
for ((p = 0; p < PAR; p++)); do
    timeout $((LOAD_SECS * 3 + 30)) curl -s --rate "$((RATE * 60 / PAR))/m" -K "$W/load$p.curl" >"$W/load$p.codes" &
    LOAD_PIDS+=("$!")
    CLEANUP_PIDS+=("$!")
done
lookups "$LOAD_SECS" "$W/busy"
for p in "${LOAD_PIDS[@]}"; do wait "$p" || true; done
AGENTS_CPU=$(awk -v a="$(cpu_s "${AGENT_PID[@]}")" -v b="$AGENTS_CPU0" 'BEGIN { printf "%.1f", a - b }')
WEB_CPU=$(awk -v a="$(cpu_s "$WEB_PID")" -v b="$WEB_CPU0" 'BEGIN { printf "%.1f", a - b }')
PG_CPU=$(awk -v a="$(pg_cpu)" -v b="$PG_CPU0" 'BEGIN { printf "%.1f", a - b }')
LOAD_TOOK=$((($(now_us) - LOAD_START) / 1000))
OK_CHANGES=$(cat "$W"/load*.codes | grep -c '^20[0-9]$' || true)
ACHIEVED=$(awk -v n="$OK_CHANGES" -v ms="$LOAD_TOOK" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
row "changes through the API under load (of $TOTAL sent, $LOAD_TOOK ms)" "$OK_CHANGES ok, $ACHIEVED/s" "$RATE/s" \
    "$(verdict_ge "$ACHIEVED" "$((RATE * 95 / 100))")"
row "CPU seconds used during the load: $NODES agents / gatehoused / PostgreSQL (live backends)" \
    "$AGENTS_CPU / $WEB_CPU / $PG_CPU s" "" info
for n in $(seq "$NODES"); do
    idle=$(awk -v n="$n" '$1 == n { print $2 / 1000 }' "$W/idle" | median)
    busy=$(awk -v n="$n" '$1 == n { print $2 / 1000 }' "$W/busy" | median)
    r=$(ratio "$busy" "$idle")
    row "node $n: gatehouse-keys median under load / idle ($(ms "$busy") / $(ms "$idle"))" "${r}x" \
        "<= ${LOAD_TARGET}x" "$(verdict "$r" "$LOAD_TARGET")"
done

# ---------------------------------------------------------------- 3. PostgreSQL down, back
log "3. PostgreSQL stopped for $DOWN_SECS s"
sleep 2 # the load's last changes reach the nodes
user=ghload2
uid=$(uid_of "$user")
b=$(blob "$W/keys/k2.pub")
pg_stop
sleep "$DOWN_SECS"
SERVING=0
for n in $(seq "$NODES"); do serves "node$n" "$user" "$uid" "$b" && SERVING=$((SERVING + 1)); done
row "nodes serving their copy after $DOWN_SECS s without PostgreSQL" "$SERVING of $NODES" "$NODES" \
    "$(verdict_ge "$SERVING" "$NODES")"
pg_start
UP=$(now_us)
for _ in $(seq 300); do
    code=$(api -X DELETE "$WEB/api/v1/users/$user/keys/$(urlenc "$(fp_of "$W/keys/k2.pub")")")
    [ "$code" = 204 ] || [ "$code" = 200 ] && break
    sleep 0.1
done
API_BACK=$((($(now_us) - UP) / 1000))
last=$(wait_all out "$user" "$uid" "$b" 60) || die "nodes did not catch up within 60 s of PostgreSQL's return"
CAUGHT_UP=$(((last - UP) / 1000))
row "PostgreSQL back -> the API's first change accepted" "$API_BACK ms" "" info
row "PostgreSQL back -> that change refused on all $NODES nodes" "$CAUGHT_UP ms" "" info

# ---------------------------------------------------------------- 4. initial sync
log "4. bulk load: $USERS users x $KEYS_PER_USER keys (generate_series), then an empty node"
for n in $(seq "$NODES"); do
    kill "${AGENT_PID[node$n]}" 2>/dev/null
    wait "${AGENT_PID[node$n]}" 2>/dev/null || true
    unset "AGENT_PID[node$n]"
done
BULK_START=$(now_us)
psql_su "
BEGIN;
INSERT INTO users (name, state, policy, port_forwarding, created, source, uid)
    SELECT 'ghbulk' || g, 'enabled', 'shell', false, 0, 'cli', 300000 + g FROM generate_series(1, $USERS) g;
-- ssh-ed25519 wire format: the name (11 bytes), then 32 bytes of key; the fingerprint is its SHA-256.
INSERT INTO keys (user_id, algorithm, blob, fingerprint, bits, comment, scope, created, source)
    SELECT id, 'ssh-ed25519', encode(b, 'base64'), 'SHA256:' || rtrim(encode(sha256(b), 'base64'), '='), 256,
           'bulk', 'shell', 0, 'cli'
    FROM (SELECT u.id, decode('0000000b7373682d6564323535313900000020' || md5(u.id || '-' || k) || md5(k || '-' || u.id), 'hex') AS b
          FROM users u, generate_series(1, $KEYS_PER_USER) k WHERE u.name LIKE 'ghbulk%') s;
UPDATE change_seq SET seq = seq + 1;
COMMIT;
ANALYZE;"
BULK_MS=$((($(now_us) - BULK_START) / 1000))
IN_PG=$(psql_su "SELECT (SELECT count(*) FROM users) || ' users, ' || (SELECT count(*) FROM keys) || ' keys'")
row "bulk load into PostgreSQL ($IN_PG)" "$BULK_MS ms" "" info
host_config fresh
SYNC_START=$(now_us)
start_agent fresh
SYNCED=
for _ in $(seq 1200); do
    SYNCED=$(sqlite3 "file:$W/fresh/state/store.db?mode=ro" \
        "SELECT high_water FROM sync_state WHERE source = 'postgres' AND last_success IS NOT NULL" 2>/dev/null || true)
    [ -z "$SYNCED" ] || break
    sleep 0.1
done
SYNC_S=$(awk -v us="$(($(now_us) - SYNC_START))" 'BEGIN { printf "%.1f", us / 1000000 }')
[ -n "$SYNCED" ] || die "the empty node did not finish its first copy in 120 s: $(tail -3 "$W/fresh/agent.err")"
COPIED=$(sqlite3 "file:$W/fresh/state/store.db?mode=ro" \
    "SELECT (SELECT count(*) FROM users) || ' users, ' || (SELECT count(*) FROM keys) || ' keys'")
row "initial sync into an empty node ($COPIED)" "$SYNC_S s" "<= $SYNC_TARGET s" "$(verdict "$SYNC_S" "$SYNC_TARGET")"
bulk_uid=$(sqlite3 "file:$W/fresh/state/store.db?mode=ro" "SELECT uid FROM users WHERE name = 'ghbulk$USERS'")
[ "$(lookup fresh "ghbulk$USERS" "$bulk_uid" | grep -c .)" = "$KEYS_PER_USER" ] ||
    NOTES+=("the fresh node did not serve ghbulk$USERS's $KEYS_PER_USER keys")

# ---------------------------------------------------------------- summary
SUMMARY=$DATA/source-summary.md
{
    echo "# Several login nodes: PostgreSQL source, $NODES nodes"
    echo
    echo "Build $BUILD_ID ($PROFILE), PostgreSQL $("$PGBIN/postgres" --version | awk '{ print $3 }') on 127.0.0.1 (data on tmpfs, $RUN); $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)."
    echo "Revocations $REVOCATIONS; load $RATE changes/s for $LOAD_SECS s; outage $DOWN_SECS s; initial sync $USERS users x $KEYS_PER_USER keys."
    bench_table
    bench_notes
} | tee "$SUMMARY"
[ "$FAILS" -eq 0 ] || exit 1
