#!/usr/bin/env bash
# gatehoused benchmark: the web service under load, and what that load costs logins.
#
#   1. a store of 1,000 users x 5 keys (`gatehouse import tsv --create-users`), an admin API
#      token, and a browser session for u000001 made by completing an invitation with curl
#   2. idle RSS of gatehoused (VmRSS once it listens, before any request)   target <= 30 MiB
#   3. wrk -t2 -c32 --latency, 15 s each:
#        GET /api/v1/users/u000001/keys with the bearer token
#        GET /keys with the session cookie                      targets >= 5,000 req/s, p99 <= 20 ms
#   4. `gatehouse-keys u000001 UID FP` (hyperfine, as nobody) while each load runs, against the
#      same lookup with gatehoused idle                                     target <= 1.5x idle
#   5. a summary table, printed and written to bench-data/web-summary.md
#
# usage: sudo benches/web.sh        (root: it runs lookups as nobody, like sshd's key command)
#
# Environment (all optional):
#   BENCH_DATA          results and the store (default: <repo>/bench-data, git-ignored;
#                       root-owned all the way up, see benches/run.sh)
#   BENCH_RUN           binaries (default: /run/gatehouse-bench; shared lock with run.sh)
#   BENCH_WEB_USERS     users in the store (default 1000; 5 keys each)
#   BENCH_WEB_SECONDS   seconds per wrk run (default 15)
#   BENCH_WEB_LOOKUPS   hyperfine runs per lookup measurement (default 2000, about 2 s)
#   BENCH_KEEP=1        keep the store and the key list afterwards
#
# Exit status: 0 all targets met, 1 some target missed, other values: the run failed.
# wrk, gatehoused and the lookups share this machine's CPUs; see the summary's notes.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh" # ROOT, DATA, RUN, helpers, results table, cleanup
USERS=${BENCH_WEB_USERS:-1000}
KEYS_PER_USER=5
SECONDS_PER_RUN=${BENCH_WEB_SECONDS:-15}
LOOKUPS=${BENCH_WEB_LOOKUPS:-2000}
WRK_ARGS=(-t2 -c32 --latency -d "${SECONDS_PER_RUN}s")
TARGET_USER=u000001
# The uid sshd would pass (%U): u000001 has no account, so the lowest one Gatehouse serves
# (users.uid_min; the lookup does not depend on it).
TARGET_UID=20000

bench_prepare
bench_need wrk:wrk hyperfine:hyperfine jq:jq curl:curl iproute2:ss util-linux:setpriv openssh-client:ssh-keygen
STORE_DIR=$DATA/store-web
TSV=$DATA/keys-web.tsv
CLEANUP_DATA+=("$STORE_DIR" "$TSV")
rm -rf "${STORE_DIR:?}"

# ---------------------------------------------------------------- build
log "building release binaries (scripts/build-release, with gatehoused)"
bench_build_id # the commit built, for the summary (others may commit meanwhile)
(cd "$ROOT" && scripts/build-release && cargo build --release --locked --example gen_keys)
bench_install_binaries # $RUN/bin: GH, KEYS, SHELL_BIN
install -m 0755 "$ROOT/target/dist/gatehoused" "$RUN/bin/gatehoused"
WEBD=$RUN/bin/gatehoused

# ---------------------------------------------------------------- store, token, invitation
log "store of $USERS users x $KEYS_PER_USER keys"
"$ROOT/target/release/examples/gen_keys" "$USERS" "$KEYS_PER_USER" "$TSV"
PORT=$(free_port 18622)
URL=http://127.0.0.1:$PORT
bench_store_config "$STORE_DIR" # CFG
cat >>"$CFG" <<EOF

[web]
listen = "127.0.0.1:$PORT"
public_url = "$URL"
cookie_secure = false
EOF
"$GH" --config "$CFG" init >/dev/null
t0=$(now_us)
out=$("$GH" --config "$CFG" import tsv "$TSV" --create-users 2>"$STORE_DIR/import-errors.txt") ||
    die "import failed: $(head -3 "$STORE_DIR/import-errors.txt")"
IMPORT_S=$(awk -v us=$(($(now_us) - t0)) 'BEGIN { printf "%.2f", us / 1e6 }')
echo "import: $out; wall $IMPORT_S s" >&2
bench_store_open "$STORE_DIR" # nobody, the key-command user here, reads its files

# The lookup every measurement repeats: u000001's second key (line 7 of the key list).
FP=$(sed -n 7p "$TSV" | cut -f2 | ssh-keygen -lf - | awk '{ print $2 }')
[ "$(sed -n 7p "$TSV" | cut -f1)" = "$TARGET_USER" ] || die "line 7 of $TSV is not $TARGET_USER's"
LOOKUP="$KEYS --config $CFG -- $TARGET_USER $TARGET_UID $FP"
bench_check_lookup "$STORE_DIR" "$TARGET_USER" "$TARGET_UID" "$FP"

TOKEN=$("$GH" --config "$CFG" token create --scope admin --label web-bench 2>/dev/null)
INVITE=$("$GH" --config "$CFG" user invite "$TARGET_USER")

# ---------------------------------------------------------------- lookups as a process
HF_DIR=$(mktemp -d)
CLEANUP_ALWAYS+=("$HF_DIR")
chown nobody "$HF_DIR"
# Figures by measurement name.
declare -A T TCPU RPS P50 P99 NON2XX ERR CPU BUSY SECS
# lookups NAME: LOOKUPS runs of the lookup (hyperfine as nobody, no shell in between);
# T[NAME] is the median in ms; the export is kept as $DATA/web-lookup-NAME.json.
lookups() {
    (cd "$HF_DIR" && as_nobody hyperfine -N --style none --warmup 20 --runs "$LOOKUPS" \
        --export-json "$HF_DIR/web-lookup-$1.json" -n "$1" "$LOOKUP") >/dev/null
    mv "$HF_DIR/web-lookup-$1.json" "$DATA/"
    T[$1]=$(jq -r '.results[0].median * 1000' "$DATA/web-lookup-$1.json")
    TCPU[$1]=$(jq -r '.results[0] | (.user + .system) * 1000 | . * 100 | round / 100' "$DATA/web-lookup-$1.json")
}

log "lookups, gatehoused not running"
lookups no-service

# ---------------------------------------------------------------- gatehoused
log "starting gatehoused on $URL"
"$WEBD" --config "$CFG" </dev/null 2>"$DATA/web-gatehoused.log" &
WEB_PID=$!
CLEANUP_PIDS+=("$WEB_PID")
for _ in $(seq 100); do
    [ -z "$(ss -Hltn "sport = :$PORT")" ] || break
    kill -0 "$WEB_PID" 2>/dev/null || die "gatehoused exited; see $DATA/web-gatehoused.log"
    sleep 0.05
done
[ -n "$(ss -Hltn "sport = :$PORT")" ] || die "gatehoused is not listening on $PORT; see $DATA/web-gatehoused.log"
sleep 1
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$WEB_PID/status"; }
RSS_IDLE=$(rss_kib) # before any request
THREADS=$(awk '/^Threads:/ { print $2 }' "/proc/$WEB_PID/status")

# The session: complete the invitation as a browser would (no Origin header: same as a
# direct form post from curl), take the cookie from Set-Cookie.
COOKIE=$(curl -sS -o /dev/null -D - --data-urlencode "password=bench-password-$$" \
    --data-urlencode "password2=bench-password-$$" "$INVITE" |
    sed -n 's/^[Ss]et-[Cc]ookie: \(gh_session=[^;]*\).*/\1/p' | tr -d '\r')
[ -n "$COOKIE" ] || die "completing the invitation gave no session cookie"

# Both targets must answer with the real thing (a redirect to /signin would be cheap).
check_targets() {
    local page api
    page=$(curl -sS -H "Cookie: $COOKIE" -w '\n%{http_code}' "$URL/keys")
    if [ "$(tail -1 <<<"$page")" != 200 ] || ! grep -q "Your SSH keys" <<<"$page"; then
        die "GET /keys with the session: not the keys page ($1)"
    fi
    [ "$(grep -o '<code>SHA256:' <<<"$page" | wc -l)" -eq "$KEYS_PER_USER" ] || die "GET /keys: expected $KEYS_PER_USER keys ($1)"
    api=$(curl -sS -H "Authorization: Bearer $TOKEN" -w '\n%{http_code}' "$URL/api/v1/users/$TARGET_USER/keys")
    [ "$(tail -1 <<<"$api")" = 200 ] || die "GET /api/v1/users/$TARGET_USER/keys: status $(tail -1 <<<"$api") ($1)"
    [ "$(sed '$d' <<<"$api" | jq length)" -eq "$KEYS_PER_USER" ] || die "API: expected $KEYS_PER_USER keys ($1)"
}
check_targets "before the load"
PAGE_BYTES=$(curl -sS -H "Cookie: $COOKIE" "$URL/keys" | wc -c)
API_BYTES=$(curl -sS -H "Authorization: Bearer $TOKEN" "$URL/api/v1/users/$TARGET_USER/keys" | wc -c)

log "lookups, gatehoused idle"
lookups idle
# A control: the same lookups while one busy loop per CPU competes for them, without any
# HTTP traffic, to tell plain CPU contention from what the web load adds.
log "lookups beside $(nproc) busy loops"
BURNERS=()
for _ in $(seq "$(nproc)"); do
    yes >/dev/null &
    BURNERS+=($!)
done
CLEANUP_PIDS+=("${BURNERS[@]}")
sleep 1
lookups busy-loops
kill "${BURNERS[@]}"
wait "${BURNERS[@]}" 2>/dev/null || true

# ---------------------------------------------------------------- load
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }     # utime + stime of a process
busy_idle() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; } # all CPUs
TICK=$(getconf CLK_TCK)
# to_ms 850.00us | 3.45ms | 1.02s
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) ; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'; }

# load NAME PATH [wrk -H args]: wrk for SECONDS_PER_RUN, the lookups 2 s into it.
load() {
    local name=$1 path=$2 w0 c0 b0 i0 b1 i1 h0 h1 wrk_end
    shift 2
    log "wrk ${WRK_ARGS[*]} $URL$path, lookups meanwhile"
    c0=$(cpu_ticks "$WEB_PID")
    read -r b0 i0 < <(busy_idle)
    w0=$(now_us)
    wrk "${WRK_ARGS[@]}" "$@" "$URL$path" >"$DATA/web-wrk-$name.txt" 2>&1 &
    local wrk_pid=$!
    sleep 2
    h0=$(now_us)
    lookups "load-$name"
    h1=$(now_us)
    wait "$wrk_pid" || die "wrk failed: $(cat "$DATA/web-wrk-$name.txt")"
    wrk_end=$(now_us)
    read -r b1 i1 < <(busy_idle)
    local out=$DATA/web-wrk-$name.txt
    cat "$out" >&2
    RPS[$name]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    P50[$name]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    P99[$name]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    NON2XX[$name]=$(awk '/Non-2xx or 3xx responses:/ { n = $NF } END { print n + 0 }' "$out")
    ERR[$name]=$(awk '/Socket errors:/ { gsub(/,/, ""); n = $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
    CPU[$name]=$(awk -v a="$c0" -v b="$(cpu_ticks "$WEB_PID")" -v t="$TICK" 'BEGIN { printf "%.1f", (b - a) / t }')
    BUSY[$name]=$(awk -v b="$((b1 - b0))" -v i="$((i1 - i0))" 'BEGIN { printf "%.0f", 100 * b / (b + i) }')
    SECS[$name]=$(awk -v us=$((wrk_end - w0)) 'BEGIN { printf "%.1f", us / 1e6 }')
    if [ "$h1" -lt "$wrk_end" ]; then
        NOTES+=("$name load: the lookups ran from $(((h0 - w0) / 1000)) to $(((h1 - w0) / 1000)) ms of the $(((wrk_end - w0) / 1000)) ms run")
    else
        NOTES+=("$name load: the lookups ran $(((h1 - wrk_end) / 1000)) ms past the end of the load; the ratio understates its cost")
    fi
}

LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
load api "/api/v1/users/$TARGET_USER/keys" -H "Authorization: Bearer $TOKEN"
load page /keys -H "Cookie: $COOKIE"
check_targets "after the load"
RSS_AFTER=$(rss_kib)

# ---------------------------------------------------------------- results
row "import tsv --create-users, $(commas $((USERS * KEYS_PER_USER))) keys / $(commas "$USERS") users" "$IMPORT_S s" info info
RSS_IDLE_MIB=$(awk -v k="$RSS_IDLE" 'BEGIN { printf "%.1f", k / 1024 }')
row "gatehoused idle RSS (VmRSS after start, before any request; $THREADS threads)" "$RSS_IDLE_MIB MiB" "<= 30 MiB" "$(verdict "$RSS_IDLE_MIB" 30)"
row "gatehoused RSS after both loads" "$(awk -v k="$RSS_AFTER" 'BEGIN { printf "%.1f", k / 1024 }') MiB" info info
for name in api page; do
    if [ "$name" = api ]; then
        what="GET /api/v1/users/$TARGET_USER/keys, bearer token ($API_BYTES-byte JSON)"
    else
        what="GET /keys, session cookie ($PAGE_BYTES-byte page)"
    fi
    row "$what: requests/s" "$(commas "${RPS[$name]}")" ">= 5,000" "$(verdict_ge "${RPS[$name]}" 5000)"
    row "$what: p50 latency" "${P50[$name]} ms" info info
    row "$what: p99 latency" "${P99[$name]} ms" "<= 20 ms" "$(verdict "${P99[$name]}" 20)"
    if [ "${NON2XX[$name]}" -ne 0 ] || [ "${ERR[$name]}" -ne 0 ]; then
        row "$what: failed requests" "${NON2XX[$name]} non-2xx/3xx, ${ERR[$name]} socket errors" "0" FAIL
    fi
    row "$what: gatehoused CPU; all CPUs busy" "${CPU[$name]} s CPU in ${SECS[$name]} s; ${BUSY[$name]}% busy" info info
done
row "gatehouse-keys $TARGET_USER FP, gatehoused not running (median; mean CPU)" "$(ms "${T[no-service]}") (CPU ${TCPU[no-service]} ms)" info info
row "gatehouse-keys $TARGET_USER FP, gatehoused idle (median; mean CPU)" "$(ms "${T[idle]}") (CPU ${TCPU[idle]} ms)" "baseline" info
row "gatehouse-keys beside $(nproc) busy loops, no HTTP load (control)" "$(ms "${T[busy-loops]}") (CPU ${TCPU[busy-loops]} ms), $(ratio "${T[busy-loops]}" "${T[idle]}")x idle" info info
for name in api page; do
    r=$(ratio "${T[load-$name]}" "${T[idle]}")
    row "gatehouse-keys during the $name load" "$(ms "${T[load-$name]}") (CPU ${TCPU[load-$name]} ms), ${r}x idle" "<= 1.5x" "$(verdict "$r" 1.5)"
done

{
    echo "# gatehoused benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr), $(nproc) CPUs, commit $BUILD_ID, $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo
    echo "Store: $(commas "$USERS") users x $KEYS_PER_USER keys; gatehoused (release build, 2 worker threads) on $URL, as root."
    echo "Load: \`wrk ${WRK_ARGS[*]}\` on the same machine, one run per target."
    echo "Lookups: \`$LOOKUP\` as nobody, hyperfine -N, $LOOKUPS runs after 20 warm-ups, started 2 s into each load; ratios are of medians."
    echo "Other load: 1-minute load average $LOAD_BEFORE before the first wrk run ($(nproc) CPUs: wrk, gatehoused and the lookups share them)."
    bench_table
    bench_notes
    echo "- hyperfine's user and system times per lookup (web-lookup-*.json) against its wall time tell the work from the wait for a CPU."
    echo "Raw data in $DATA: web-wrk-api.txt, web-wrk-page.txt, web-lookup-*.json, web-gatehoused.log."
} | tee "$DATA/web-summary.md"

[ "$FAILS" -eq 0 ] || exit 1
