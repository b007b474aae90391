#!/usr/bin/env bash
# Gatehouse git benchmark: what serving git (and any session) through gatehouse-shell costs,
# against plain OpenSSH on the same sshd, in one reproducible run.
#
#   1. `git clone` of a bare repository of >= 200 MB (generated, incompressible, the same
#      bytes every run) over ssh, interleaved, median of BENCH_GIT_ROUNDS per path, and
#      the CPU time of each clone's server and client side:
#        port A  authorized_keys file, sshd runs the user's shell -> git-upload-pack
#        port B  gatehouse-keys + forced gatehouse-shell (key scope git) -> Landlock ->
#                git upload-pack                             target: B/A throughput >= 0.98
#   2. per-session start-up: `ssh … true` with a shell-scope key, interleaved, wall time
#      and the server side's CPU time:
#        port A  authorized_keys file: sshd runs `sh -c true`
#        port B  gatehouse-keys + gatehouse-shell -> `sh -c true`
#                (info: the whole login, authentication and key command included)
#        port C  (info) authorized_keys file holding the very line gatehouse-keys prints:
#                the forced gatehouse-shell without the key command, to split B - A
#      then the same sessions as channels of one connection per port (ssh -S: no key
#      exchange, no authentication, so no key command either), which isolates what
#      starting a session costs, and a connection D to port B opened while the account's
#      login shell is gatehouse-shell (as `gatehouse provision` makes accounts): sshd
#      starts gatehouse-shell itself, which starts shell.login_shell (sh)
#                target: median of the per-round D - A <= 2 ms
#                (info: B - A, through the account's own sh first)
#      and the forced command alone, as a process (hyperfine -N, as the test user):
#        gatehouse-shell with SSH_ORIGINAL_COMMAND=true vs `/bin/sh -c true`, and
#        gatehouse-shell with `git-upload-pack 'ghbench/big.git'` vs `git-upload-pack DIR`
#        (protocol v2: the capability advertisement, then EOF)
#   3. a summary table, printed and written to bench-data/git-summary.md
#
# Other work on the machine (builds, tests) is measured during every round, through a
# cpuacct cgroup that holds the benchmark; disturbed rounds are left out and repeated
# (see "other work on the machine" below).
#
# usage: sudo benches/git.sh        (root: it starts sshd and adds a test user)
#
# Environment (all optional):
#   BENCH_DATA        results and generated data (default: <repo>/bench-data, git-ignored);
#                     root-owned all the way up (see run.sh). The repository (~220 MB) and
#                     the store live here, on disk, like a server's.
#   BENCH_RUN         binaries, client keys and the private sshd (default: /run/gatehouse-bench)
#   BENCH_CLONES      where clones are written, a tmpfs (default: a fresh folder in /dev/shm)
#   BENCH_GIT_MIB     repository content in MiB, one 1-MiB file each (default 210: 220 MB)
#   BENCH_GIT_ROUNDS  clone rounds (one clone per path each) that count (default 9, at least 3)
#   BENCH_SESSIONS    session rounds (one `ssh … true` per port each) that count (default 150,
#                     at least 50)
#   BENCH_CHANNELS    rounds of sessions on one connection per port that count (default
#                     600, at least 100)
#   BENCH_HOSTKEYS    sshd starts (each with a new host key) the session rounds are spread
#                     over (default 5; see "2. sessions")
#   BENCH_RUNS        hyperfine runs per command (default 500)
#   BENCH_QUIET_WAIT  seconds to wait, before each part, for other work on the machine to
#                     stop (default 30; 0: do not wait)
#   BENCH_KEEP=1      keep the repository and the store afterwards
#   BENCH_LOCK_WAIT   seconds to wait for another benchmark that holds the lock (default 0)
#
# Exit status: 0 all targets met, 1 some target missed, other values: the run failed.
# Takes about 3 minutes on 2 quiet cores once the release build is done; up to about 7 on
# a busy machine (waits, repeated rounds).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh" # ROOT, DATA, RUN, BENCH_USER (one user for every path: see there), helpers, cleanup
GIT_MIB=${BENCH_GIT_MIB:-210}
FILES_PER_COMMIT=10
ROUNDS=${BENCH_GIT_ROUNDS:-9}
SESSIONS=${BENCH_SESSIONS:-150}
CHANNELS=${BENCH_CHANNELS:-600}
RUNS=${BENCH_RUNS:-500}
HOSTKEYS=${BENCH_HOSTKEYS:-5}
HF_ROUNDS=5 # hyperfine runs in rounds, commands interleaved (see run.sh)
QUIET_WAIT=${BENCH_QUIET_WAIT:-30}
CLONE_DISTURBED=0.5    # CPU-seconds of other work during one clone (~2-3 s) that disturb its round
SESSION_DISTURBED=0.05 # the same for one round of three sessions (~0.4 s)
CHANNEL_DISTURBED=0.01 # the same for three sessions on open connections (~30 ms)
TAB=$'\t'

for pair in BENCH_GIT_MIB:"$GIT_MIB" BENCH_GIT_ROUNDS:"$ROUNDS" BENCH_SESSIONS:"$SESSIONS" BENCH_CHANNELS:"$CHANNELS" BENCH_RUNS:"$RUNS" \
    BENCH_QUIET_WAIT:"$QUIET_WAIT" BENCH_HOSTKEYS:"$HOSTKEYS"; do
    [[ ${pair#*:} =~ ^[0-9]+$ ]] || die "${pair%%:*} must be a whole number (got '${pair#*:}')"
done
[ "$GIT_MIB" -ge 1 ] || die "BENCH_GIT_MIB must be at least 1"
[ "$RUNS" -ge "$HF_ROUNDS" ] || die "BENCH_RUNS must be at least $HF_ROUNDS"
[ "$ROUNDS" -ge 3 ] || die "BENCH_GIT_ROUNDS must be at least 3"
[ "$SESSIONS" -ge 50 ] || die "BENCH_SESSIONS must be at least 50"
[ "$CHANNELS" -ge 100 ] || die "BENCH_CHANNELS must be at least 100"
if [ "$HOSTKEYS" -lt 1 ] || [ "$HOSTKEYS" -gt "$SESSIONS" ]; then die "BENCH_HOSTKEYS must be between 1 and BENCH_SESSIONS"; fi

# ---------------------------------------------------------------- setup, cleanup on any exit
bench_prepare # root, trusted paths, lock, EXIT trap, leftovers of a killed run
bench_need git:git hyperfine:hyperfine jq:jq openssl:openssl python3:python3 openssh-server:/usr/sbin/sshd \
    openssh-client:ssh iproute2:ss util-linux:setpriv
STORE=$DATA/git-store        # gatehouse.toml and store.db
GIT_ROOT=$DATA/git-root      # [git] root: repositories are GIT_ROOT/OWNER/NAME.git
REPO=$GIT_ROOT/$BENCH_USER/big.git
CLEANUP_DATA+=("$STORE" "$GIT_ROOT" "$DATA/git-users")
rm -rf "${STORE:?}" "${GIT_ROOT:?}" "${DATA:?}/git-users"
if [ -n "${BENCH_CLONES:-}" ]; then
    case $BENCH_CLONES in /?*) ;; *) die "BENCH_CLONES must be an absolute path" ;; esac
    mkdir -p "$BENCH_CLONES"
    CLONES=$(mktemp -d "$BENCH_CLONES/gatehouse-bench-clones.XXXXXX")
else
    CLONES=$(mktemp -d /dev/shm/gatehouse-bench-clones.XXXXXX)
fi
CLEANUP_ALWAYS+=("$CLONES")

# ---------------------------------------------------------------- other work on the machine
# A clone keeps both CPUs busy, and a few ms per session are the whole difference, so
# anything else running on the machine (a build, a test suite) skews what is measured.
# Every timed unit records the CPU time the machine spent outside this benchmark
# meanwhile: the busy time in /proc/stat (user, nice, system, steal; interrupts are left
# out, as the loopback traffic itself is counted there) minus the benchmark's own, which
# a cpuacct cgroup adds up: this script and everything it starts, with sshd (and so every
# session, key command, gatehouse-shell and git) in a child group of its own.
# Rounds disturbed by more than a threshold stay in the raw tables but are left out of the
# figures and repeated, up to as many extra rounds as were asked for. If fewer than 3
# clone rounds (50 session rounds) stay undisturbed, every round counts and the summary
# says in bold that the figures are disturbed.
bench_cgroup gatehouse-bench # CG, other_mark, other_since, wait_quiet (lib.sh)

# Port A runs git as the user's login shell would: it reads /etc/gitconfig and the user's
# global files ($HOME/.gitconfig, $HOME/.config/git/config; HOME is /). gatehouse-shell
# sets GIT_CONFIG_GLOBAL=/dev/null. With no global files both read the same configuration.
for f in /.gitconfig /.config/git/config; do
    [ ! -e "$f" ] || die "$f exists: port A's git would read it and port B's would not"
done

# ---------------------------------------------------------------- build
log "building release binaries (scripts/build-release)"
bench_build_id # the commit built, for the summary
(cd "$ROOT" && scripts/build-release)
bench_install_binaries # $RUN/bin: GH, KEYS, SHELL_BIN

# ---------------------------------------------------------------- user, keys, store
log "test user, keys and store"
bench_add_user
install -d -m 0700 "$RUN/client"
# Two keys for the one user: scope git for the clones, scope shell for `ssh … true`.
for k in git shell; do
    ssh-keygen -q -t ed25519 -N '' -C "$MARK-$k" -f "$RUN/client/id_$k"
done
# and a third one, in no store, for a refusal
ssh-keygen -q -t ed25519 -N '' -C "$MARK-unknown" -f "$RUN/client/id_unknown"
GIT_KEY=$RUN/client/id_git
SHELL_KEY=$RUN/client/id_shell
fingerprint() { ssh-keygen -lf "$1.pub" | awk '{ print $2 }'; }
FP_GIT=$(fingerprint "$GIT_KEY")
FP_SHELL=$(fingerprint "$SHELL_KEY")
FP_UNKNOWN=$(fingerprint "$RUN/client/id_unknown")

sshd_prepare # $RUN/sshd, before the log socket that lives there
LOG_SOCKET=$RUN/sshd/log.sock
bench_store_config "$STORE" "$DATA/git-users" "$LOG_SOCKET" # CFG, ending in [shell]
install -d -m 0755 "$GIT_ROOT"
cat >>"$CFG" <<EOF
# for connection D below, whose login shell is gatehouse-shell
login_shell = "/bin/sh"

[git]
root = "$GIT_ROOT"
EOF
"$GH" --config "$CFG" init >/dev/null
"$GH" --config "$CFG" user add "$BENCH_USER" --policy shell >/dev/null
added=$("$GH" --config "$CFG" key add "$BENCH_USER" --file "$GIT_KEY.pub" --scope git)
[ "$added" = "$FP_GIT" ] || die "key add (git) printed '$added', expected $FP_GIT"
added=$("$GH" --config "$CFG" key add "$BENCH_USER" --file "$SHELL_KEY.pub" --scope shell)
[ "$added" = "$FP_SHELL" ] || die "key add (shell) printed '$added', expected $FP_SHELL"
bench_store_open "$STORE" # to nobody (the AuthorizedKeysCommandUser) and the user (gatehouse-shell)
# The key lines gatehouse-keys prints, as sshd would get them (and port C's file).
as_nobody "$KEYS" --config "$CFG" -- "$BENCH_USER" "$(bench_uid)" >"$RUN/sshd/authorized/$BENCH_USER.gatehouse"
for fp in "$FP_GIT" "$FP_SHELL"; do
    bench_check_lookup "$STORE" "$BENCH_USER" "$(bench_uid)" "$fp"
done
[ "$(wc -l <"$RUN/sshd/authorized/$BENCH_USER.gatehouse")" -eq 2 ] || die "gatehouse-keys did not print the user's two keys"
grep -q "command=\"exec $SHELL_BIN " "$RUN/sshd/authorized/$BENCH_USER.gatehouse" || die "the key lines do not force $SHELL_BIN"
# Port A: the plain keys, nothing forced.
cat "$GIT_KEY.pub" "$SHELL_KEY.pub" >"$RUN/sshd/authorized/$BENCH_USER.keys"
chmod 0644 "$RUN/sshd/authorized/"*

# The log socket: a small listener stands in for syslog, so every gatehouse-shell
# decision (and its Landlock status) is on record, and each B session is proved to have
# gone through it.
GH_LOG=$DATA/git-gatehouse.log
start_log_listener

# boot_ci TSV COLUMN X Y diff|pdiff|ratio: a 95% bootstrap interval (rounds resampled,
# fixed seed) for median(Y) - median(X), the median of the per-round Y - X, or
# median(X) / median(Y) (times: Y's speed over X's), over the counted rows (last column
# "yes") of a table with "round" and "side" columns.
boot_ci() {
    python3 - "$@" <<'PY'
import csv, random, statistics, sys
path, col, x, y, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
t = {}
with open(path) as f:
    rows = list(csv.reader(f, delimiter="\t"))
head = rows[0]
c, ri, si = head.index(col), head.index("round"), head.index("side")
for r in rows[1:]:
    if r[-1] == "yes":
        t.setdefault(r[si], {})[r[ri]] = float(r[c])
rounds = sorted(set(t[x]) & set(t[y]))
def stat(sample):
    if mode == "pdiff":
        return statistics.median(t[y][i] - t[x][i] for i in sample)
    a = statistics.median(t[x][i] for i in sample)
    b = statistics.median(t[y][i] for i in sample)
    return b - a if mode == "diff" else a / b
random.seed(1)
res = sorted(stat(random.choices(rounds, k=len(rounds))) for _ in range(2000))
fmt = "%.3f" if mode == "ratio" else "%.2f"
print((fmt + ".." + fmt) % (res[49], res[1949]))
PY
}

# ---------------------------------------------------------------- the repository
log "generating the repository ($GIT_MIB files of 1 MiB, $FILES_PER_COMMIT per commit)"
# Each file is AES-128-CTR keystream (a fixed key; the file's number in the high half of
# the IV, so no two streams overlap): incompressible, nothing for deltas, and the same
# bytes every run. Commits have fixed names and dates, so the tip's id is fixed too.
AES_KEY=$(printf 'gatehouse-bench' | sha256sum | cut -c1-32)
fast_import_stream() {
    local c=0 n=0 f
    while [ "$n" -lt "$GIT_MIB" ]; do
        c=$((c + 1))
        printf 'commit refs/heads/main\ncommitter Gatehouse Bench <bench@example.invalid> %d +0000\ndata <<END\nbench data, part %d\nEND\n' \
            $((1700000000 + c * 60)) "$c"
        for ((f = 1; f <= FILES_PER_COMMIT && n < GIT_MIB; f++)); do
            n=$((n + 1))
            printf 'M 100644 inline data/%03d/%02d.bin\ndata 1048576\n' "$c" "$f"
            head -c 1048576 /dev/zero | openssl enc -aes-128-ctr -nosalt -K "$AES_KEY" -iv "$(printf '%016x%016x' "$n" 0)"
            printf '\n'
        done
        printf '\n'
    done
}
t0=$(now_us)
install -d -m 0755 "$GIT_ROOT/$BENCH_USER"
git init --quiet --bare -b main "$REPO"
fast_import_stream | git -C "$REPO" fast-import --quiet
# One pack with its bitmap, as `git gc` leaves a served repository (bitmaps are the
# default for bare repositories): clones then reuse the pack as it is.
git -C "$REPO" repack -a -d -q
GEN_S=$(awk -v us=$(($(now_us) - t0)) 'BEGIN { printf "%.1f", us / 1e6 }')
TIP=$(git -C "$REPO" rev-parse main)
PACK_BYTES=$(find "$REPO/objects/pack" -name '*.pack' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
COMMITS=$(git -C "$REPO" rev-list --count main)
# The user's own repository (from here on root's git would call it of dubious ownership).
chown -R "$BENCH_USER:$BENCH_USER" "$GIT_ROOT/$BENCH_USER"
PACK_MB=$(awk -v b="$PACK_BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')
echo "repository: $PACK_MB MB in packs, $COMMITS commits, $GIT_MIB files, tip $TIP, made in ${GEN_S} s" >&2

# ---------------------------------------------------------------- sshd, three ports
log "private sshd on 127.0.0.1"
PORT_A=$(free_port 22990)
PORT_B=$(free_port $((PORT_A + 1)))
PORT_C=$(free_port $((PORT_B + 1)))
# git clients send GIT_PROTOCOL to ask for protocol v2 (the packaged drop-in accepts it):
# every port does, so both clone paths speak v2.
{
    sshd_config_base no
    cat <<EOF
AcceptEnv GIT_PROTOCOL
Match LocalPort $PORT_B
    AuthorizedKeysFile none
    AuthorizedKeysCommand $KEYS --config $CFG -- %u %U %f %t %k
    AuthorizedKeysCommandUser nobody
Match LocalPort $PORT_C
    AuthorizedKeysFile $RUN/sshd/authorized/%u.gatehouse
EOF
} >"$RUN/sshd/sshd_config"
sshd_effective "$PORT_A" | grep -qx "authorizedkeyscommand none" || die "port A would run a key command"
sshd_effective "$PORT_A" | grep -qx "authorizedkeysfile $RUN/sshd/authorized/%u.keys" || die "port A would not read the plain file"
sshd_effective "$PORT_B" | grep -qx "authorizedkeysfile none" || die "port B would read an authorized_keys file"
sshd_effective "$PORT_B" | grep -q "^authorizedkeyscommand $KEYS " || die "port B would not run gatehouse-keys"
sshd_effective "$PORT_C" | grep -qx "authorizedkeyscommand none" || die "port C would run a key command"
sshd_effective "$PORT_C" | grep -qx "authorizedkeysfile $RUN/sshd/authorized/%u.gatehouse" || die "port C would not read gatehouse's lines"
SSHD_LOG=$DATA/git-sshd.log
sshd_start "$SSHD_LOG" "$PORT_A" "$PORT_B" "$PORT_C"
[ -z "$CG" ] || echo "$SSHD_PID" >"$CG/server/cgroup.procs" # sessions fork from it: the server side

# ---------------------------------------------------------------- 1. clones
log "git clone, $ROUNDS rounds per path"
# The client: no system or global git configuration of this machine, the git key only.
SSH_LINE="ssh ${SSH_OPTS[*]} -i $GIT_KEY"
client_git() {
    env GIT_SSH_COMMAND="$SSH_LINE" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_TERMINAL_PROMPT=0 \
        timeout 600 git "$@" </dev/null
}
url_of() {
    case $1 in
    A) echo "ssh://$BENCH_USER@127.0.0.1:$PORT_A$REPO" ;; # the absolute path, served by the login shell
    B) echo "ssh://$BENCH_USER@127.0.0.1:$PORT_B/$BENCH_USER/big.git" ;; # OWNER/NAME.git under [git] root
    esac
}
# Both paths speak protocol v2, and only B's goes through gatehouse-shell (B's path means
# nothing to a plain git-upload-pack, A's absolute path nothing to gatehouse-shell).
for side in A B; do
    client_git -c protocol.version=2 ls-remote "$(url_of $side)" main >"$CLONES/ls-remote" 2>"$CLONES/trace" ||
        die "git ls-remote on port $side failed: $(tail -3 "$CLONES/trace"); see $SSHD_LOG"
    grep -q "^$TIP" "$CLONES/ls-remote" || die "port $side did not advertise $TIP"
done
for side in A B; do
    GIT_TRACE_PACKET=1 client_git ls-remote "$(url_of $side)" main >/dev/null 2>"$CLONES/trace" || die "ls-remote on $side failed"
    grep -q 'version 2' "$CLONES/trace" || die "port $side did not speak protocol v2"
done
client_git ls-remote "ssh://$BENCH_USER@127.0.0.1:$PORT_B$REPO" >/dev/null 2>&1 && die "port B served an absolute path"
client_git ls-remote "ssh://$BENCH_USER@127.0.0.1:$PORT_A/$BENCH_USER/big.git" >/dev/null 2>&1 && die "port A served gatehouse's path"
rm -f "$CLONES/ls-remote" "$CLONES/trace"

# clone SIDE TAG: one timed clone into the tmpfs, checked, then deleted. Sets CLONE_S
# (wall seconds), CLONE_BYTES (the pack the client received), CLONE_OTHER (CPU seconds
# used outside the benchmark meanwhile) and CLONE_SERVER / CLONE_CLIENT (CPU seconds of
# the server side: sshd's session, the key command, gatehouse-shell, git; and of the
# client side: git clone, ssh, index-pack, checkout; 0 without cgroups). CPU time,
# unlike wall time, hardly depends on what else runs.
clone() {
    local dest=$CLONES/$1-$2 t0 us head files s0 a0
    other_mark
    s0=$(cg_ticks "$CG/server") a0=$(cg_ticks "$CG")
    t0=$(now_us)
    client_git clone --quiet "$(url_of "$1")" "$dest" 2>"$CLONES/err" || die "clone $2 on port $1 failed: $(tail -3 "$CLONES/err")"
    us=$(($(now_us) - t0))
    sleep 0.1 # the server side's last bits of work
    CLONE_OTHER=$(other_since)
    CLONE_SERVER=$(awk -v t=$(($(cg_ticks "$CG/server") - s0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
    CLONE_CLIENT=$(awk -v t=$(($(cg_ticks "$CG") - a0)) -v s="$CLONE_SERVER" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz - s }')
    head=$(git -C "$dest" rev-parse HEAD)
    [ "$head" = "$TIP" ] || die "clone $2 on port $1: HEAD $head, expected $TIP"
    files=$(find "$dest/data" -type f | wc -l)
    [ "$files" -eq "$GIT_MIB" ] || die "clone $2 on port $1: $files files, expected $GIT_MIB"
    CLONE_BYTES=$(find "$dest/.git/objects/pack" -name '*.pack' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    CLONE_S=$(awk -v us="$us" 'BEGIN { printf "%.3f", us / 1e6 }')
    rm -rf "$dest"
}
# Warm-up (untimed): the repository in the page cache, both paths proved end to end.
clone A warm
clone B warm
wait_quiet "clones"
LOAD_CLONES=$(cut -d' ' -f1 /proc/loadavg)
# Interleaved, the order flipped every round (A B, B A, ...): drift and any first-of-a-pair
# effect hit both paths alike. A round in which either clone saw more than
# CLONE_DISTURBED CPU-seconds of other work is left out and repeated.
CLONES_TSV=$DATA/git-clones.tsv
printf 'round\tside\tseconds\tbytes\tMB/s\tother_cpu_s\tserver_cpu_s\tclient_cpu_s\tcounted\n' >"$CLONES_TSV"
kept=0 tried=0
while [ "$kept" -lt "$ROUNDS" ] && [ "$tried" -lt $((ROUNDS * 2)) ]; do
    tried=$((tried + 1))
    if [ $((tried % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
    lines=() disturbed=no
    for side in $order; do
        clone "$side" "$tried"
        mbs=$(awk -v s="$CLONE_S" -v b="$CLONE_BYTES" 'BEGIN { printf "%.1f", b / 1e6 / s }')
        lines+=("$tried$TAB$side$TAB$CLONE_S$TAB$CLONE_BYTES$TAB$mbs$TAB$CLONE_OTHER$TAB$CLONE_SERVER$TAB$CLONE_CLIENT")
        awk -v o="$CLONE_OTHER" -v t="$CLONE_DISTURBED" 'BEGIN { exit !(o > t) }' && disturbed=yes
    done
    if [ "$disturbed" = no ]; then kept=$((kept + 1)) counted=yes; else counted=no; fi
    printf "%s\t$counted\n" "${lines[@]}" | tee -a "$CLONES_TSV" >&2
done
CLONE_ROUNDS=$kept
if [ "$kept" -lt 3 ]; then
    # Too busy a machine for even 3 quiet rounds: every round counts, and the note says so.
    sed -i '2,$s/\tno$/\tyes/' "$CLONES_TSV"
    CLONE_ROUNDS=$tried
    NOTES+=("**clones disturbed**: only $kept of $tried rounds ran with at most $CLONE_DISTURBED CPU-s of other work on the machine per clone; the clone figures use all $tried rounds")
elif [ "$tried" -gt "$kept" ]; then
    NOTES+=("clones: $((tried - kept)) of $tried rounds left out because other work on the machine took more than $CLONE_DISTURBED CPU-s during one of their clones (all rounds in git-clones.tsv)")
fi
SERVED=$(log_count gatehouse-shell verb=git-upload-pack verdict=accept)
# On B: two ls-remote (the v2 checks), the warm-up clone and the timed ones.
[ "$SERVED" -eq $((3 + tried)) ] || die "gatehouse-shell logged $SERVED accepted git-upload-pack sessions, expected $((3 + tried))"
LANDLOCK=$(grep -F gatehouse-shell "$GH_LOG" | grep -F verb=git-upload-pack | grep -o 'landlock=[a-z]*' | sort | uniq -c |
    awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " }' || true)
col() { awk -v s="$1" -v c="$2" -F '\t' 'NR > 1 && $2 == s && $9 == "yes" { print $c }' "$CLONES_TSV"; }
C_A=$(col A 3 | median) C_B=$(col B 3 | median)
T_A=$(col A 5 | median) T_B=$(col B 5 | median)
RX_A=$(col A 4 | sort -u | tr '\n' ' ') RX_B=$(col B 4 | sort -u | tr '\n' ' ')
TPUT=$(awk -v a="$T_A" -v b="$T_B" 'BEGIN { printf "%.3f", b / a }')
# Best of each side: the clone least disturbed by anything else.
MIN_A=$(col A 3 | sort -g | head -1) MIN_B=$(col B 3 | sort -g | head -1)
TPUT_BEST=$(awk -v a="$MIN_A" -v b="$MIN_B" 'BEGIN { printf "%.3f", a / b }')
# Per round, A's time over B's: pairs share the machine's state of the moment.
PAIRED=$(awk -F '\t' 'NR > 1 && $9 == "yes" { t[$1, $2] = $3; r[$1] = 1 } END { for (i in r) print t[i, "A"] / t[i, "B"] }' "$CLONES_TSV" | median)
PAIRED=$(awk -v p="$PAIRED" 'BEGIN { printf "%.3f", p }')
OTHER_A=$(col A 6 | median) OTHER_B=$(col B 6 | median)
SRV_A=$(col A 7 | median) SRV_B=$(col B 7 | median) CLI_A=$(col A 8 | median) CLI_B=$(col B 8 | median)
OTHER_MAX=$(col A 6; col B 6) && OTHER_MAX=$(sort -g <<<"$OTHER_MAX" | tail -1)

row "repository: packed size, $COMMITS commits of $FILES_PER_COMMIT incompressible 1-MiB files, tip ${TIP:0:12}" "$PACK_MB MB" ">= 200 MB" "$(verdict_ge "$PACK_MB" 200)"
row "git clone, plain sshd + git-upload-pack (port A, median of $CLONE_ROUNDS)" "$C_A s, $T_A MB/s" "info" info
row "git clone through gatehouse-keys + gatehouse-shell, Landlock (port B, median of $CLONE_ROUNDS)" "$C_B s, $T_B MB/s" "info" info
row "clone throughput B / A (medians; 95% interval $(boot_ci "$CLONES_TSV" seconds A B ratio))" "$TPUT" ">= 0.98" "$(verdict_ge "$TPUT" 0.98)"
row "clone throughput B / A, median of the per-round ratios" "$PAIRED" "info" info
row "clone throughput B / A, fastest clone of each" "$TPUT_BEST ($MIN_A s / $MIN_B s)" "info" info
row "CPU time per clone, server side: sshd session (+ gatehouse on B) + git (median A / B)" "$SRV_A s / $SRV_B s" "info" info
row "CPU time per clone, client side: git clone, ssh, index-pack, checkout (median A / B)" "$CLI_A s / $CLI_B s" "info" info
row "CPU used outside the benchmark during a counted clone (median A / B, largest)" "$OTHER_A s / $OTHER_B s, $OTHER_MAX s" "info (0 = quiet machine)" info
[ "$RX_A" = "$RX_B" ] || NOTES+=("the packs received differ in size: A $RX_A, B $RX_B bytes")

# ---------------------------------------------------------------- 2. sessions
log "ssh … true, $SESSIONS rounds over $HOSTKEYS host keys"
port_of() { case $1 in A) echo "$PORT_A" ;; B) echo "$PORT_B" ;; C) echo "$PORT_C" ;; esac }
before=$(log_count gatehouse-shell verdict=accept command=true)
# sshd pads every publickey request to 5 ms plus a per-user delay of 0-4.3 ms derived from
# a secret that depends on the host key, so one host key is one draw of that delay, and
# B - A came out between 1.5 and 4.4 ms from one sshd to the next. The sessions therefore
# run in HOSTKEYS blocks, each on a freshly started sshd with a new host key, and the
# target is taken from the per-round differences, which do not mind each block's own
# baseline.
new_sshd() {
    sshd_stop
    [ ! -e "$RUN/sshd/block.log" ] || cat "$RUN/sshd/block.log" >>"$SSHD_LOG"
    rm -f "$RUN/sshd/host_ed25519" "$RUN/sshd/host_ed25519.pub"
    ssh-keygen -q -t ed25519 -N '' -C "$MARK-host" -f "$RUN/sshd/host_ed25519"
    sshd_start "$RUN/sshd/block.log" "$PORT_A" "$PORT_B" "$PORT_C"
    [ -z "$CG" ] || echo "$SSHD_PID" >"$CG/server/cgroup.procs"
    # Every path must work before it is timed; a warm-up of two sessions each.
    local side
    for _ in 1 2; do
        for side in A B C; do
            login "$(port_of $side)" "$SHELL_KEY" || die "ssh … true on port $side failed; see $RUN/sshd/block.log"
        done
    done
}
wait_quiet "sessions"
LOAD_SESSIONS=$(cut -d' ' -f1 /proc/loadavg)
# Interleaved, the order rotated every round (A B C, B C A, C A B). A round (three
# sessions, ~0.4 s) in which other work took more than SESSION_DISTURBED CPU-seconds is
# left out and repeated. Besides its wall time, each session's CPU time on the server
# side (sshd, key command, gatehouse-shell, shell) and on the client side (ssh) is read
# from the cgroups (ns): what gatehouse adds in CPU time hardly depends on other work.
SESSIONS_TSV=$DATA/git-sessions.tsv
printf 'round\tside\thostkey\tms\tserver_cpu_ms\tclient_cpu_ms\tother_cpu_s\tcounted\n' >"$SESSIONS_TSV"
orders=("A B C" "B C A" "C A B")
phase_t0=$(now_us) kept=0 tried=0 all_other=0
srv0=0 srv1=0 all0=0 all1=0
for hk in $(seq "$HOSTKEYS"); do
    new_sshd
    # this block's share of the rounds, and at most as many again for disturbed ones
    want=$((SESSIONS * hk / HOSTKEYS - SESSIONS * (hk - 1) / HOSTKEYS)) hk_kept=0 hk_tried=0
    while [ "$hk_kept" -lt "$want" ] && [ "$hk_tried" -lt $((want * 2)) ]; do
        tried=$((tried + 1)) hk_tried=$((hk_tried + 1))
        lines=()
        other_mark
        for side in ${orders[tried % 3]}; do
            port=$(port_of "$side")
            # read, not a command substitution: nothing forked between the readings but ssh
            [ -z "$CG" ] || { read -r srv0 <"$CG/server/cpuacct.usage" && read -r all0 <"$CG/cpuacct.usage"; }
            t0=$(now_us)
            login "$port" "$SHELL_KEY" || die "session $tried on port $side failed; see $RUN/sshd/block.log"
            us=$(($(now_us) - t0))
            sleep 0.02 # the server side's last bits of work
            [ -z "$CG" ] || { read -r srv1 <"$CG/server/cpuacct.usage" && read -r all1 <"$CG/cpuacct.usage"; }
            lines+=("$tried$TAB$side$TAB$hk$TAB$(awk -v us="$us" -v s=$((srv1 - srv0)) -v a=$((all1 - all0)) \
                'BEGIN { printf "%.2f\t%.2f\t%.2f", us / 1000, s / 1e6, (a - s) / 1e6 }')")
        done
        if end_round "$(other_since)" "$SESSION_DISTURBED" "$SESSIONS_TSV"; then hk_kept=$((hk_kept + 1)); fi
    done
done
sshd_stop
cat "$RUN/sshd/block.log" >>"$SSHD_LOG"
SESSIONS_WALL=$(awk -v us=$(($(now_us) - phase_t0)) 'BEGIN { printf "%.0f", us / 1e6 }')
SESSIONS_OTHER=$(awk -v a="$all_other" 'BEGIN { printf "%.1f", a }')
settle_rounds "$SESSIONS_TSV" 50 "$SESSION_DISTURBED" sessions
SESSION_ROUNDS=$ROUNDS_USED
ran=$(($(log_count gatehouse-shell verdict=accept command=true) - before))
# B and C run gatehouse-shell (rounds and warm-ups); A must not.
[ "$ran" -eq $((2 * (tried + 2 * HOSTKEYS))) ] || die "gatehouse-shell logged $ran accepted sessions, expected $((2 * (tried + 2 * HOSTKEYS)))"
scol() { awk -v s="$1" -v c="${2:-4}" -F '\t' 'NR > 1 && $2 == s && $8 == "yes" { print $c }' "$SESSIONS_TSV"; }
S_A=$(scol A | median) S_B=$(scol B | median) S_C=$(scol C | median)
D_BA=$(awk -v a="$S_A" -v b="$S_B" 'BEGIN { printf "%.2f", b - a }')
SC_A=$(scol A 5 | median) SC_B=$(scol B 5 | median) SC_C=$(scol C 5 | median)
CC_A=$(scol A 6 | median) CC_B=$(scol B 6 | median) CC_C=$(scol C 6 | median)
# paired X Y: the median over the counted rounds of Y's session minus X's, in ms.
paired() {
    awk -F '\t' -v x="$1" -v y="$2" 'NR > 1 && $8 == "yes" { t[$1, $2] = $4; r[$1] = 1 } END { for (i in r) print t[i, y] - t[i, x] }' "$SESSIONS_TSV" |
        median | awk '{ printf "%.2f", $1 }'
}
P_BA=$(paired A B) P_CA=$(paired A C) P_BC=$(paired C B)
# B - A per host key: difference of that block's medians.
PER_HK=$(awk -F '\t' 'NR > 1 && $8 == "yes" { print $3, $2, $4 }' "$SESSIONS_TSV" | sort -k1,1n -k2,2 -k3,3g |
    awk '{ v[$1, $2, ++n[$1, $2]] = $3; k[$1] = 1 }
         function med(h, s, c) { c = n[h, s]; return c % 2 ? v[h, s, (c + 1) / 2] : (v[h, s, c / 2] + v[h, s, c / 2 + 1]) / 2 }
         END { for (h = 1; h in k; h++) printf "%s%.1f", (h > 1 ? ", " : ""), med(h, "B") - med(h, "A") }')
row "ssh … true, authorized_keys file, sshd runs sh -c true (port A, median of $SESSION_ROUNDS)" "$(ms "$S_A")" "info" info
row "ssh … true, gatehouse-keys + gatehouse-shell -> sh -c true (port B, median of $SESSION_ROUNDS)" "$(ms "$S_B")" "info" info
row "ssh … true, file with gatehouse's key line: forced gatehouse-shell only (port C, median of $SESSION_ROUNDS)" "$(ms "$S_C")" "info" info
row "whole login B - A: median of the per-round differences (95% interval $(boot_ci "$SESSIONS_TSV" ms A B pdiff) ms)" "$P_BA ms" "info" info
row "whole login B - A: difference of the medians" "$D_BA ms" "info" info
row "whole login B - A per host key (difference of the medians, $HOSTKEYS sshd starts)" "$PER_HK ms" "info" info
row "of which the forced gatehouse-shell, C - A (per-round; 95% interval $(boot_ci "$SESSIONS_TSV" ms A C pdiff) ms)" "$P_CA ms" "info" info
# Wall time does not add up here: sshd pads every publickey request, and the key command
# runs inside that padding. The server-side CPU time below is the split to go by.
row "B - C, wall time (per-round; not additive: the key command runs inside sshd's 5-9.3 ms publickey padding)" "$P_BC ms" "info" info
if [ -n "$CG" ]; then
    row "server-side CPU per session: sshd (+ key command, gatehouse-shell) + shell (median A / B / C)" "$SC_A / $SC_B / $SC_C ms" "info" info
    row "server-side CPU per session, B - A / C - A (forced gatehouse-shell) / B - C (key command, run twice)" "$(diff_ms "$SC_B" "$SC_A") / $(diff_ms "$SC_C" "$SC_A") / $(diff_ms "$SC_B" "$SC_C") ms" "info (robust to other work)" info
    row "client-side CPU per session: ssh (median A / B / C)" "$CC_A / $CC_B / $CC_C ms" "info" info
fi
row "CPU used outside the benchmark during the sessions" "$SESSIONS_OTHER CPU-s in $SESSIONS_WALL s" "info (0 = quiet machine)" info

# ---------------------------------------------------------------- 2b. sessions on one connection
log "ssh … true as channels of one connection per port, $CHANNELS rounds"
# A login's wall time carries the key exchange, sshd's padding and the authentication:
# tens of milliseconds that vary by more than the few that gatehouse-shell takes. On a
# connection that is already open (ssh -S), a session is only: sshd forks, the login shell
# runs the forced command (B, C) or `true` (A), exit. The key lines' options hold for every
# session of their connection, so B and C run gatehouse-shell each time; the key command
# ran once, at the login.
new_sshd
ctl_of() { echo "$RUN/ctl-$1"; }
# D: port B again, opened while the account's login shell is gatehouse-shell, which sshd
# keeps for the connection: sshd runs gatehouse-shell itself, no sh before it, and
# gatehouse-shell starts shell.login_shell (/bin/sh) for the shell key.
port_of() { case $1 in A) echo "$PORT_A" ;; B | D) echo "$PORT_B" ;; C) echo "$PORT_C" ;; esac }
open_channel() {
    timeout 30 ssh "${SSH_OPTS[@]}" -i "$SHELL_KEY" -p "$(port_of "$1")" -o ControlMaster=yes \
        -o ControlPath="$(ctl_of "$1")" -N -f "$BENCH_USER@127.0.0.1" ||
        die "could not open the connection for $1; see $RUN/sshd/block.log"
}
for side in A B C; do open_channel $side; done
usermod -s "$SHELL_BIN" "$BENCH_USER"
open_channel D
usermod -s /bin/sh "$BENCH_USER"
close_channels() {
    local side
    for side in A B C D; do
        [ ! -S "$(ctl_of $side)" ] || ssh -F /dev/null -o ControlPath="$(ctl_of $side)" -O exit x 2>/dev/null || true
    done
}
CLEANUP_HOOKS+=(close_channels)
# channel SIDE: one session on SIDE's open connection. ControlMaster=no with BatchMode and
# no key: if the connection were gone, the login would fail instead of opening a new one.
channel() {
    timeout 30 ssh -F /dev/null -o BatchMode=yes -o ControlMaster=no -o ControlPath="$(ctl_of "$1")" \
        -o IdentityFile=none -o IdentitiesOnly=yes -o PasswordAuthentication=no \
        -p "$(port_of "$1")" "$BENCH_USER@127.0.0.1" true
}
for side in A B C D; do
    ssh -F /dev/null -o ControlPath="$(ctl_of $side)" -O check x 2>/dev/null || die "connection $side not open"
    for _ in 1 2 3; do channel $side || die "session on the open connection of port $side failed"; done
done
before=$(log_count gatehouse-shell verdict=accept command=true)
wait_quiet "sessions on open connections"
CHANNELS_TSV=$DATA/git-channels.tsv
channel_orders=("A B C D" "B C D A" "C D A B" "D A B C")
printf 'round\tside\tms\tother_cpu_s\tcounted\n' >"$CHANNELS_TSV"
phase_t0=$(now_us) kept=0 tried=0 all_other=0
while [ "$kept" -lt "$CHANNELS" ] && [ "$tried" -lt $((CHANNELS * 2)) ]; do
    tried=$((tried + 1))
    lines=()
    other_mark
    for side in ${channel_orders[tried % 4]}; do
        t0=$(now_us)
        channel "$side" || die "session $tried on the open connection of port $side failed"
        lines+=("$tried$TAB$side$TAB$(awk -v us=$(($(now_us) - t0)) 'BEGIN { printf "%.3f", us / 1000 }')")
    done
    end_round "$(other_since)" "$CHANNEL_DISTURBED" "$CHANNELS_TSV" || true
done
CHANNELS_WALL=$(awk -v us=$(($(now_us) - phase_t0)) 'BEGIN { printf "%.0f", us / 1e6 }')
CHANNELS_OTHER=$(awk -v a="$all_other" 'BEGIN { printf "%.1f", a }')
settle_rounds "$CHANNELS_TSV" 100 "$CHANNEL_DISTURBED" "sessions on open connections"
CHANNEL_ROUNDS=$ROUNDS_USED
ran=$(($(log_count gatehouse-shell verdict=accept command=true) - before))
[ "$ran" -eq $((3 * tried)) ] || die "gatehouse-shell logged $ran accepted sessions on open connections, expected $((3 * tried))"
close_channels
sshd_stop
cat "$RUN/sshd/block.log" >>"$SSHD_LOG"
ccol() { awk -v s="$1" -F '\t' 'NR > 1 && $2 == s && $5 == "yes" { print $3 }' "$CHANNELS_TSV"; }
CH_A=$(ccol A | median) CH_B=$(ccol B | median) CH_C=$(ccol C | median) CH_D=$(ccol D | median)
# cpaired X Y: the median over the counted rounds of Y's session minus X's, in ms.
cpaired() {
    awk -F '\t' -v x="$1" -v y="$2" 'NR > 1 && $5 == "yes" { t[$1, $2] = $3; r[$1] = 1 } END { for (i in r) print t[i, y] - t[i, x] }' "$CHANNELS_TSV" |
        median | awk '{ printf "%.2f", $1 }'
}
CP_BA=$(cpaired A B) CP_CA=$(cpaired A C) CP_DA=$(cpaired A D)
row "session on an open connection, sshd runs sh -c true (port A, median of $CHANNEL_ROUNDS)" "$(ms "$CH_A")" "info" info
row "session on an open connection, forced gatehouse-shell -> sh -c true (port B, median of $CHANNEL_ROUNDS)" "$(ms "$CH_B")" "info" info
row "session on an open connection, the same key line read from a file (port C, median of $CHANNEL_ROUNDS)" "$(ms "$CH_C")" "info" info
row "session start-up B - A on open connections, the account's login shell (sh) first: median of the per-round differences (95% interval $(boot_ci "$CHANNELS_TSV" ms A B pdiff) ms)" "$CP_BA ms" "info" info
row "the same, port C (the key line from a file) - A (95% interval $(boot_ci "$CHANNELS_TSV" ms A C pdiff) ms)" "$CP_CA ms" "info" info
row "session on an open connection, gatehouse-shell as the login shell -> shell.login_shell -c true (D, median of $CHANNEL_ROUNDS)" "$(ms "$CH_D")" "info" info
row "session start-up D - A on open connections, gatehouse-shell as the login shell, as provisioned: median of the per-round differences (95% interval $(boot_ci "$CHANNELS_TSV" ms A D pdiff) ms)" "$CP_DA ms" "<= 2 ms" "$(verdict "$CP_DA" 2)"
row "CPU used outside the benchmark during the sessions on open connections" "$CHANNELS_OTHER CPU-s in $CHANNELS_WALL s" "info (0 = quiet machine)" info

# ---------------------------------------------------------------- the forced command alone
log "hyperfine: gatehouse-shell vs what it runs, as $BENCH_USER"
# As sshd would run it: as the user, with the session's few variables. hyperfine -N: no
# shell of hyperfine's own in between. hyperfine runs as the user and writes its exports
# into a folder the user owns. Rounds as in run.sh, pooled.
HF_DIR=$(mktemp -d)
CLEANUP_ALWAYS+=("$HF_DIR")
chown "$BENCH_USER" "$HF_DIR"
# as_session COMMAND GIT_PROTOCOL PROGRAM ARGS...: with SSH_ORIGINAL_COMMAND=COMMAND, and
# GIT_PROTOCOL unless empty.
as_session() {
    local command=$1 protocol=$2
    shift 2
    (cd "$HF_DIR" && env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/ USER="$BENCH_USER" LOGNAME="$BENCH_USER" \
        LANG=C.UTF-8 SSH_ORIGINAL_COMMAND="$command" ${protocol:+GIT_PROTOCOL="$protocol"} \
        setpriv --reuid="$BENCH_USER" --regid="$BENCH_USER" --init-groups "$@")
}
# The git pair speaks protocol v2, as the clones do: upload-pack sends its capabilities,
# finds stdin at EOF (hyperfine's) and ends with status 0 (v0 would end with 128).
as_session "git-upload-pack '$BENCH_USER/big.git'" version=2 "$SHELL_BIN" --config "$CFG" --key "$FP_GIT" </dev/null >/dev/null ||
    die "gatehouse-shell (git key) failed as a plain process"
# gatehouse-shell's own cost, split: starting and exiting (a usage error, status 2), and
# everything up to its decision (config, account, groups, store; an unknown key, status
# 1). These end with those statuses, hence hyperfine -i for them alone.
rc=0
as_session true "" "$SHELL_BIN" --config "$CFG" --key none 2>/dev/null || rc=$?
[ "$rc" -eq 2 ] || die "gatehouse-shell with a malformed --key ended with $rc, expected 2 (usage)"
rc=0
as_session true "" "$SHELL_BIN" --config "$CFG" --key "$FP_UNKNOWN" 2>/dev/null || rc=$?
[ "$rc" -eq 1 ] || die "gatehouse-shell with an unknown key ended with $rc, expected 1 (refused)"
wait_quiet "hyperfine"
LOAD_HF=$(cut -d' ' -f1 /proc/loadavg)
# A round in which other work used more than a tenth of a CPU on average is left out and
# repeated, as the clone and session rounds are.
phase_t0=$(now_us) kept=0 tried=0 all_other=0
: >"$DATA/git-shell.txt"
while [ "$kept" -lt "$HF_ROUNDS" ] && [ "$tried" -lt $((HF_ROUNDS * 2)) ]; do
    tried=$((tried + 1))
    other_mark
    r_t0=$(now_us)
    as_session true "" hyperfine -N --style basic --warmup 20 --runs $((RUNS / HF_ROUNDS)) \
        --export-json "$HF_DIR/shell-$tried.json" \
        -n "sh -c true" "/bin/sh -c true" \
        -n "gatehouse-shell (shell key) -> sh -c true" "$SHELL_BIN --config $CFG --key $FP_SHELL" |
        tee -a "$DATA/git-shell.txt"
    as_session "git-upload-pack '$BENCH_USER/big.git'" version=2 hyperfine -N --style basic --warmup 20 --runs $((RUNS / HF_ROUNDS)) \
        --export-json "$HF_DIR/git-$tried.json" \
        -n "git-upload-pack DIR" "git-upload-pack $REPO" \
        -n "gatehouse-shell (git key) -> Landlock -> git upload-pack" "$SHELL_BIN --config $CFG --key $FP_GIT" |
        tee -a "$DATA/git-shell.txt"
    as_session true "" hyperfine -N -i --style basic --warmup 20 --runs $((RUNS / HF_ROUNDS)) \
        --export-json "$HF_DIR/split-$tried.json" \
        -n "gatehouse-shell: start, usage error, exit" "$SHELL_BIN --config $CFG --key none" \
        -n "gatehouse-shell: start, config, account, store, refusal" "$SHELL_BIN --config $CFG --key $FP_UNKNOWN" 2>&1 |
        tee -a "$DATA/git-shell.txt"
    other=$(other_since)
    all_other=$(awk -v a="$all_other" -v o="$other" 'BEGIN { print a + o }')
    if awk -v o="$other" -v us=$(($(now_us) - r_t0)) 'BEGIN { exit !(o <= 0.1 * us / 1e6) }'; then
        kept=$((kept + 1))
    else
        echo "hyperfine round $tried disturbed by $other CPU-s of other work: repeated" | tee -a "$DATA/git-shell.txt" >&2
        mv "$HF_DIR/shell-$tried.json" "$HF_DIR/disturbed-shell-$tried.json"
        mv "$HF_DIR/git-$tried.json" "$HF_DIR/disturbed-git-$tried.json"
        mv "$HF_DIR/split-$tried.json" "$HF_DIR/disturbed-split-$tried.json"
    fi
done
HF_OTHER=$(awk -v a="$all_other" 'BEGIN { printf "%.1f", a }') HF_WALL=$(awk -v us=$(($(now_us) - phase_t0)) 'BEGIN { printf "%.0f", us / 1e6 }')
HF_COUNTED=$((kept * RUNS / HF_ROUNDS))
if [ "$kept" -lt 2 ]; then
    for f in "$HF_DIR"/disturbed-*.json; do mv "$f" "$HF_DIR/${f##*/disturbed-}"; done
    HF_COUNTED=$((tried * RUNS / HF_ROUNDS))
    NOTES+=("**hyperfine disturbed**: only $kept of $tried rounds ran without other work on the machine; the figures use all $tried")
elif [ "$tried" -gt "$kept" ]; then
    NOTES+=("hyperfine: $((tried - kept)) of $tried rounds left out because other work on the machine used more than a tenth of a CPU during them")
fi
hf_pool "$DATA/git-shell.json" "$HF_DIR"/shell-*.json "$HF_DIR"/git-*.json "$HF_DIR"/split-*.json
hf_table "$DATA/git-shell.json" >"$DATA/git-shell.md"
cat "$DATA/git-shell.md"
med() { hf_median "$DATA/git-shell.json" "$1"; }
H_SH=$(med "sh -c true") H_GS=$(med "gatehouse-shell (shell key) -> sh -c true")
H_UP=$(med "git-upload-pack DIR") H_GG=$(med "gatehouse-shell (git key) -> Landlock -> git upload-pack")
row "/bin/sh -c true as a process (median of $HF_COUNTED)" "$(ms "$H_SH")" "baseline" info
row "gatehouse-shell, shell key, SSH_ORIGINAL_COMMAND=true -> sh -c true (median)" "$(ms "$H_GS")" "info" info
row "gatehouse-shell's own cost before sh (difference)" "$(diff_ms "$H_GS" "$H_SH") ms" "info (part of B - A)" info
H_START=$(med "gatehouse-shell: start, usage error, exit") H_DECIDE=$(med "gatehouse-shell: start, config, account, store, refusal")
row "of which: start and exit (usage error; /bin/sh -c true as a process: $(ms "$H_SH"))" "$(ms "$H_START")" "info" info
row "of which: config, account and groups, store lookup, decision (refusal minus usage error)" "$(diff_ms "$H_DECIDE" "$H_START") ms" "info" info
row "git-upload-pack DIR, protocol v2 capabilities then EOF (median)" "$(ms "$H_UP")" "baseline" info
row "gatehouse-shell, git key -> Landlock -> git upload-pack (median)" "$(ms "$H_GG")" "info" info
row "gatehouse-shell's own cost before git (difference)" "$(diff_ms "$H_GG" "$H_UP") ms" "info" info
row "CPU used outside the benchmark during hyperfine" "$HF_OTHER CPU-s in $HF_WALL s" "info (0 = quiet machine)" info

# ---------------------------------------------------------------- summary
{
    echo "# Gatehouse git benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr), $(nproc) CPUs, commit $BUILD_ID, $(/usr/sbin/sshd -V 2>&1 | head -1 | cut -d, -f1), $(git --version)"
    echo
    echo "One sshd on 127.0.0.1, one user ($BENCH_USER), three ports: A authorized_keys file; B \`gatehouse-keys\` + forced \`gatehouse-shell\`; C a file holding the line gatehouse-keys prints (forced \`gatehouse-shell\`, no key command)."
    echo "Clones: \`git clone\` (protocol v2, checkout included) of $REPO, read from disk (page cache warm), written to $(df --output=fstype "$CLONES" | tail -1) at $(dirname "$CLONES"), deleted after each; one untimed clone per path first, then $ROUNDS rounds (A B, B A, …) that count; throughput = received pack bytes / wall time."
    echo "Both clone paths read the same git configuration: /etc/gitconfig$([ -e /etc/gitconfig ] || echo ' (absent)') and the repository's; no global file (A: HOME=/ has none; B: GIT_CONFIG_GLOBAL=/dev/null). B adds \`-c safe.directory=<repo> upload-pack --strict\`. Landlock on B's clones (gatehouse-shell's log): $LANDLOCK."
    echo "Sessions: \`ssh … true\` with a shell-scope key, $SESSIONS rounds that count, one session per port each, order rotated every round, spread over $HOSTKEYS sshd starts with a new host key each (sshd's per-user publickey padding of 5-9.3 ms is drawn anew with each host key); then $CHANNELS rounds of the same sessions as channels of one open connection per port (\`ssh -S\`: no key exchange, no authentication; the key line's forced command still runs for each session), on one more sshd start, plus D: port B's path on a connection opened while the account's login shell was gatehouse-shell (\`shell.login_shell = \"/bin/sh\"\`), so no sh runs before gatehouse-shell; the forced command alone timed with hyperfine -N as $BENCH_USER, $RUNS runs per command in $HF_ROUNDS rounds."
    echo "Other work on the machine: rounds during which processes outside the benchmark used more than $CLONE_DISTURBED CPU-s (a clone) or $SESSION_DISTURBED CPU-s (three logins) or $CHANNEL_DISTURBED CPU-s (three sessions on open connections) are left out and repeated (see the notes). 1-minute load average $LOAD_CLONES before the clones, $LOAD_SESSIONS before the sessions, $LOAD_HF before hyperfine ($(nproc) CPUs)."
    bench_table
    bench_notes
    echo "Repository generated in ${GEN_S} s (fast-import of AES-CTR keystream, then repack -a -d)."
    echo
    echo "Raw data in $DATA: git-clones.tsv, git-sessions.tsv and git-channels.tsv (every round, with the CPU time of other work and whether it counted), git-shell.json/md/txt (hyperfine, pooled), git-gatehouse.log (gatehouse's log lines), git-sshd.log."
} | tee "$DATA/git-summary.md"

[ "$FAILS" -eq 0 ] || exit 1
