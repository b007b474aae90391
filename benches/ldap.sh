#!/usr/bin/env bash
# Gatehouse directory-sync benchmark: gatehouse-ldap against a real OpenLDAP (slapd) on
# loopback holding a large directory, in one reproducible run.
#
#   1. LDIF for BENCH_LDAP_USERS users (default 100,000) with BENCH_LDAP_KEYS ed25519 keys
#      each (default 3), and BENCH_LDAP_GROUPS posixGroups (default 1,000) sharing them out,
#      from examples/gen_ldap.rs (fixed seed: the same bytes every run), loaded offline
#      with slapadd into a fresh slapd (the tests' slapd.conf.in and schema, mdb on disk)
#   2. `gatehouse-ldap sync --full` into an empty store        target: <= 60 s
#      and again into the filled store (steady state)          target: <= 60 s
#   3. two rounds of: ldapmodify of BENCH_LDAP_MODIFIED entries (default 100; each gets
#      its last key replaced), then `gatehouse-ldap sync` (incremental)  target: <= 2 s
#      (round 1 is the first incremental run after the load), and an incremental sync
#      with nothing changed (info)
#   4. a summary table, printed and written to bench-data/ldap-summary.md
#
# usage: sudo benches/ldap.sh       (root: the service password file must be root's)
#
# Environment (all optional):
#   BENCH_DATA           results and generated data (default: <repo>/bench-data, git-ignored);
#                        root-owned all the way up. The LDIF, the slapd database and the
#                        store live here, on disk.
#   BENCH_LDAP_USERS     directory users (default 100000)
#   BENCH_LDAP_KEYS      keys per user (default 3)
#   BENCH_LDAP_GROUPS    groups (default 1000)
#   BENCH_LDAP_MODIFIED  entries changed before the incremental sync (default 100)
#   BENCH_KEEP=1         keep the LDIF, the slapd database and the store afterwards
#
# Exit status: 0 all targets met, 1 some target missed, other values: the run failed.
# Takes about 3 minutes on 2 cores once the release build is done; every long step is
# bounded with timeout(1), and slapd is stopped and the data removed on any exit. It needs
# no test user and no sshd, so it takes only its own lock (BENCH_DATA/.ldap-bench.lock) and
# leaves the other benchmarks' user and folders alone; for clean figures run it alone.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh" # ROOT, DATA (RUN too, unused here), helpers, cleanup
USERS=${BENCH_LDAP_USERS:-100000}
KEYS_PER_USER=${BENCH_LDAP_KEYS:-3}
N_GROUPS=${BENCH_LDAP_GROUPS:-1000} # not GROUPS: bash keeps that one for itself
MODIFIED=${BENCH_LDAP_MODIFIED:-100}
FULL_TARGET=60
INCR_TARGET=2
BASE_DN=dc=gatehouse,dc=test # as in tests/common/slapd.conf.in
SERVICE_DN=cn=gatehouse,ou=services,$BASE_DN
ADMIN_DN=cn=admin,$BASE_DN
ADMIN_PW=admin-secret

for pair in BENCH_LDAP_USERS:"$USERS" BENCH_LDAP_KEYS:"$KEYS_PER_USER" BENCH_LDAP_GROUPS:"$N_GROUPS" \
    BENCH_LDAP_MODIFIED:"$MODIFIED"; do
    [[ ${pair#*:} =~ ^[0-9]+$ ]] || die "${pair%%:*} must be a whole number (got '${pair#*:}')"
done
[ "$USERS" -ge 1 ] || die "BENCH_LDAP_USERS must be at least 1"
if [ "$MODIFIED" -lt 1 ] || [ "$MODIFIED" -gt "$USERS" ]; then
    die "BENCH_LDAP_MODIFIED must be between 1 and BENCH_LDAP_USERS"
fi

# ---------------------------------------------------------------- setup, cleanup on any exit
# Not bench_prepare/bench_cleanup: those manage the shared test user and $RUN, which this
# benchmark does not use, and must not touch while another benchmark runs; its cleanup is
# bench_cleanup_common alone (slapd, then WORK unless BENCH_KEEP=1).
WORK=$DATA/ldap-bench
CLEANUP_DATA+=("$WORK")
[ "$(id -u)" -eq 0 ] || die "run as root (the service password file must be root's)"
case $DATA in /?*) ;; *) die "BENCH_DATA must be an absolute path other than / (got '$DATA')" ;; esac
umask 022
mkdir -p "$DATA"
chmod 0755 "$DATA"
check_trusted "$DATA" # gatehouse trusts its config and password file only there
exec 9>"$DATA/.ldap-bench.lock"
flock -n 9 || die "another ldap benchmark holds $DATA/.ldap-bench.lock"
trap bench_cleanup_common EXIT
trap 'exit 130' INT TERM # make Ctrl-C go through the EXIT trap too
bench_need slapd:/usr/sbin/slapd ldap-utils:ldapmodify sqlite3:sqlite3 iproute2:ss
rm -rf "$WORK"
install -d -m 0755 "$WORK" "$WORK/slapd" "$WORK/slapd/db" "$WORK/store"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

log "building release binaries and the LDIF generator"
(cd "$ROOT" && cargo build --release --locked --bin gatehouse -p gatehouse &&
    cargo build --release --locked --bin gatehouse-ldap -p gatehouse-ldap &&
    cargo build --release --locked --example gen_ldap) >&2
GH=$ROOT/target/release/gatehouse
GHL=$ROOT/target/release/gatehouse-ldap

# ---------------------------------------------------------------- the directory
log "generating $(commas "$USERS") users x $KEYS_PER_USER keys, $N_GROUPS groups"
t0=$(now_us)
"$ROOT/target/release/examples/gen_ldap" "$BASE_DN" "$USERS" "$KEYS_PER_USER" "$N_GROUPS" "$MODIFIED" \
    "$WORK/load.ldif" "$WORK/modify1.ldif" "$WORK/modify2.ldif"
GEN_S=$(awk -v us=$(($(now_us) - t0)) 'BEGIN { printf "%.1f", us / 1e6 }')
LDIF_MB=$(du -m "$WORK/load.ldif" | cut -f1)

cp "$FIXTURES/ldap-test.schema" "$WORK/slapd/"
sed -e "s#@DIR@#$WORK/slapd#g" -e "s#@TLS@##" -e "s#@SYNCPROV_MODULE@##" -e "s#@SYNCPROV_OVERLAY@##" "$FIXTURES/slapd.conf.in" >"$WORK/slapd/slapd.conf"
cat >"$WORK/base.ldif" <<EOF
dn: $BASE_DN
objectClass: dcObject
objectClass: organization
o: Gatehouse benchmark
dc: gatehouse

dn: ou=services,$BASE_DN
objectClass: organizationalUnit
ou: services

dn: $SERVICE_DN
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: gatehouse
userPassword: service-secret
EOF
log "slapadd (offline load)"
t0=$(now_us)
timeout 1800 slapadd -q -f "$WORK/slapd/slapd.conf" -l "$WORK/base.ldif"
timeout 1800 slapadd -q -f "$WORK/slapd/slapd.conf" -l "$WORK/load.ldif"
LOAD_S=$(awk -v us=$(($(now_us) - t0)) 'BEGIN { printf "%.1f", us / 1e6 }')
DB_MB=$(du -m "$WORK/slapd/db" | tail -1 | cut -f1)

PORT=$(free_port 38900)
/usr/sbin/slapd -f "$WORK/slapd/slapd.conf" -h "ldap://127.0.0.1:$PORT/" -d 0 2>"$WORK/slapd.log" &
CLEANUP_PIDS+=($!)
for _ in $(seq 100); do
    [ -z "$(ss -Hltn "sport = :$PORT")" ] || break
    sleep 0.1
done
[ -n "$(ss -Hltn "sport = :$PORT")" ] || die "slapd did not start on port $PORT; see $WORK/slapd.log"

# ---------------------------------------------------------------- gatehouse
printf 'service-secret\n' >"$WORK/store/service.pw"
chmod 0600 "$WORK/store/service.pw"
cat >"$WORK/store/gatehouse.toml" <<EOF
[store]
path = "$WORK/store/store.db"

[ldap]
url = "ldap://127.0.0.1:$PORT/"
starttls = false
base_dn = "$BASE_DN"
bind_dn = "$SERVICE_DN"
bind_password_file = "$WORK/store/service.pw"
timeout = "60s"
EOF
"$GH" --config "$WORK/store/gatehouse.toml" init >/dev/null

# timed_sync NAME ARGS...: runs gatehouse-ldap sync, sets SYNC_S (seconds) and SYNC_OUT.
timed_sync() {
    local name=$1 t0
    shift
    t0=$(now_us)
    SYNC_OUT=$(timeout 600 "$GHL" --config "$WORK/store/gatehouse.toml" sync "$@" 2>"$WORK/sync-$name.err") ||
        die "$name: sync failed: $(head -3 "$WORK/sync-$name.err")"
    SYNC_S=$(awk -v us=$(($(now_us) - t0)) 'BEGIN { printf "%.2f", us / 1e6 }')
    printf '%s: %s s: %s\n' "$name" "$SYNC_S" "$(head -1 <<<"$SYNC_OUT")" >&2
}
count() { sqlite3 -readonly "$WORK/store/store.db" "$1"; }

log "full sync into an empty store"
timed_sync full-empty --full
FULL1_S=$SYNC_S FULL1_OUT=$(head -1 <<<"$SYNC_OUT")
STORE_USERS=$(count "SELECT count(*) FROM users WHERE source = 'ldap' AND state = 'enabled'")
STORE_KEYS=$(count "SELECT count(*) FROM keys WHERE source = 'ldap'")
STORE_MEMBERS=$(count "SELECT count(*) FROM group_members")
[ "$STORE_USERS" -eq "$USERS" ] || die "the store has $STORE_USERS enabled directory users, expected $USERS"
[ "$STORE_KEYS" -eq $((USERS * KEYS_PER_USER)) ] || die "the store has $STORE_KEYS directory keys, expected $((USERS * KEYS_PER_USER))"

log "full sync into the filled store"
timed_sync full-steady --full
FULL2_S=$SYNC_S FULL2_OUT=$(head -1 <<<"$SYNC_OUT")

# sync.rs turns a run into a full one when the number of directory users is a multiple
# of 10 and the clock's seconds end in 0; start the timed runs away from such a second
# so they measure what they say (noted in the summary).
avoid_full_second() {
    while [ $(($(date +%s) % 10)) -eq 9 ] || [ $(($(date +%s) % 10)) -eq 0 ]; do sleep 0.2; done
}
# modify_round N: ldapmodify of modifyN.ldif in a second of its own (modifyTimestamp has
# whole seconds), then the incremental sync it is for; sets MODIFY_S, INCR_S, INCR_OUT.
modify_round() {
    local n=$1 t0 new
    sleep 1.1
    log "round $n: ldapmodify of $MODIFIED entries"
    t0=$(now_us)
    timeout 300 ldapmodify -x -H "ldap://127.0.0.1:$PORT/" -D "$ADMIN_DN" -w "$ADMIN_PW" -f "$WORK/modify$n.ldif" >/dev/null
    MODIFY_S=$(awk -v us=$(($(now_us) - t0)) 'BEGIN { printf "%.2f", us / 1e6 }')
    avoid_full_second
    log "round $n: incremental sync"
    timed_sync "incremental-$n"
    INCR_S=$SYNC_S INCR_OUT=$(head -1 <<<"$SYNC_OUT")
    case $INCR_OUT in incremental*) ;; *) die "round $n: the incremental run was a full one: $INCR_OUT" ;; esac
    grep -q "keys added $MODIFIED, removed $MODIFIED;" <<<"$INCR_OUT" || die "round $n: changes missed: $INCR_OUT"
    new=$(count "SELECT count(*) FROM keys WHERE source = 'ldap' AND comment LIKE 'bench-%-$([ "$n" = 1 ] && echo new || echo newer)'")
    [ "$new" -eq "$MODIFIED" ] || die "round $n: the store has $new of the $MODIFIED new keys"
}
modify_round 1
MODIFY1_S=$MODIFY_S INCR1_S=$INCR_S INCR1_OUT=$INCR_OUT
modify_round 2
MODIFY2_S=$MODIFY_S INCR2_S=$INCR_S INCR2_OUT=$INCR_OUT
avoid_full_second
log "incremental sync, nothing changed"
timed_sync incremental-idle
IDLE_S=$SYNC_S IDLE_OUT=$(head -1 <<<"$SYNC_OUT")
case $IDLE_OUT in incremental*) ;; *) die "the idle incremental run was a full one: $IDLE_OUT" ;; esac

# ---------------------------------------------------------------- summary
row "LDIF generation ($(commas "$USERS") users, $(commas $((USERS * KEYS_PER_USER))) keys, $N_GROUPS groups; $LDIF_MB MB)" "$GEN_S s" "-" info
row "slapadd -q (offline load; mdb $DB_MB MB)" "$LOAD_S s" "-" info
row "gatehouse-ldap sync --full, empty store" "$FULL1_S s" "<= $FULL_TARGET s" "$(verdict "$FULL1_S" "$FULL_TARGET")"
row "gatehouse-ldap sync --full, filled store (nothing changed)" "$FULL2_S s" "<= $FULL_TARGET s" "$(verdict "$FULL2_S" "$FULL_TARGET")"
row "ldapmodify of $MODIFIED entries (a key replaced in each), round 1" "$MODIFY1_S s" "-" info
row "gatehouse-ldap sync (incremental) after round 1 (first after the load)" "$INCR1_S s" "<= $INCR_TARGET s" "$(verdict "$INCR1_S" "$INCR_TARGET")"
row "ldapmodify of the same $MODIFIED entries, round 2" "$MODIFY2_S s" "-" info
row "gatehouse-ldap sync (incremental) after round 2" "$INCR2_S s" "<= $INCR_TARGET s" "$(verdict "$INCR2_S" "$INCR_TARGET")"
row "gatehouse-ldap sync (incremental), nothing changed" "$IDLE_S s" "-" info

NOTES+=("Load average (1, 5, 15 min) before the run: $LOAD_BEFORE; after it: $(cut -d' ' -f1-3 /proc/loadavg).")
NOTES+=("Store after the first full sync: $(commas "$STORE_USERS") enabled directory users, $(commas "$STORE_KEYS") keys, $(commas "$STORE_MEMBERS") group memberships.")
NOTES+=("Printed by the runs: full/empty \`$FULL1_OUT\`; full/filled \`$FULL2_OUT\`; round 1 \`$INCR1_OUT\`; round 2 \`$INCR2_OUT\`; nothing changed \`$IDLE_OUT\`.")
NOTES+=("An incremental sync asks for modifyTimestamp >= the stored high-water mark, so the entries of the mark's own second are read again: in round 1 those of slapadd's last second besides the $MODIFIED changed ones; in round 2 and the idle run the $MODIFIED entries of the round before. Every sync, incremental too, also reads every group and rewrites all memberships.")
NOTES+=("The incremental runs were started in a second whose last digit is neither 9 nor 0: sync.rs makes a run full when the number of directory users is a multiple of 10 and the clock's seconds end in 0 (reported as a bug).")
{
    echo "# Directory sync benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "gatehouse-ldap (release build) against Debian's slapd $(slapd -VV 2>&1 | sed -n 's/.*slapd \([0-9.]*\).*/\1/p' | head -1) (mdb, on disk in $DATA) on 127.0.0.1; $(nproc) cores."
    echo "Command: \`sudo benches/ldap.sh\` (BENCH_LDAP_USERS=$USERS BENCH_LDAP_KEYS=$KEYS_PER_USER BENCH_LDAP_GROUPS=$N_GROUPS BENCH_LDAP_MODIFIED=$MODIFIED)."
    echo
    echo "| what | value | target | verdict |"
    echo "| --- | --- | --- | --- |"
    printf '%s\n' "${ROWS[@]}"
    echo
    printf -- '- %s\n' "${NOTES[@]}"
} | tee "$DATA/ldap-summary.md"
[ "$FAILS" -eq 0 ] || exit 1
