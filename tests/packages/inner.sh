# Sourced by tests/packages/run inside its private mount and PID namespace: every mount
# made here goes with the namespace, and so does every process started in the tree
# (PID 1 of the namespace is this script's shell).
# shellcheck shell=bash

inner() {
    work=$1 port=$2 mirror=$3
    root=$work/root
    keys=$work/keys
    mkdir -p "$keys"

    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --make-rslave "$root/dev"
    mount -t sysfs -o ro sysfs "$root/sys"
    mount -t tmpfs -o mode=0755 tmpfs "$root/run"
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    # No service starts by itself in the tree (openssh-server's postinst would start an
    # sshd on port 22 of the host's network); the test starts sshd on its own port.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    # No `apt-get update`: the package lists debootstrap left and the dependencies' .debs
    # in the apt cache are one snapshot of the archive, so apt installs from the cache
    # and the test needs no network once the tarball exists ($mirror is the tree's
    # source should a dependency be missing from the cache).
    : "$mirror"

    for user in alice bob carol dave; do
        ssh-keygen -q -t ed25519 -N '' -C "$user@packages-test" -f "$keys/$user"
    done

    # --- 1. install ----------------------------------------------------------------
    step "apt install ./gatehouse ./gatehoused ./gatehouse-ldap"
    apt_install gatehouse gatehoused gatehouse-ldap
    start_sshd
    # bob: a local account with an authorized_keys file, as on any server.
    in_tree useradd -m -s /bin/bash bob
    install -d -m 0700 "$root/home/bob/.ssh"
    cp "$keys/bob.pub" "$root/home/bob/.ssh/authorized_keys"
    in_tree chown -R bob:bob /home/bob/.ssh
    check_files_installed
    # Before any user: what doctor says (not checked: with no store user that has an
    # account, it evaluates sshd's Match blocks for nobody).
    in_tree gatehouse doctor 2>&1 | grep -viE '^ok' | sed 's/^/packages:   doctor, no users yet: /' || true
    add_user alice
    logs_in alice
    logs_in bob
    refused alice bob "bob's key for alice"
    check_doctor
    check_units_enabled

    # --- 2. upgrade ----------------------------------------------------------------
    step "upgrade to -2 (the same packages, rebuilt with a new revision), from a schema-5 store"
    # The store as a release before store-allocated uids (schema 5) left it: the upgrade's
    # postinst must migrate it and give alice the uid her account already has.
    downgrade_store_to_5
    bump_revision
    packages_dir=tmp/packages-2 apt_install gatehouse gatehoused gatehouse-ldap
    expect_version gatehouse 2
    expect_store_migrated alice
    restart_sshd
    logs_in alice
    logs_in bob

    # --- 3. remove -----------------------------------------------------------------
    step "apt remove"
    in_tree apt-get remove -y -qq gatehouse gatehoused gatehouse-ldap >/dev/null
    restart_sshd
    logs_in bob
    refused alice alice "alice after remove"
    [ -f "$root/etc/gatehouse/gatehouse.toml" ] || fail "remove took the configuration"
    [ -f "$root/var/lib/gatehouse/store.db" ] || fail "remove took the store"

    # --- 4. purge ------------------------------------------------------------------
    step "apt purge"
    in_tree apt-get purge -y -qq gatehouse gatehoused gatehouse-ldap >/dev/null
    restart_sshd
    logs_in bob
    check_purged
    [ -d "$root/data/alice" ] || fail "purge took alice's data folder"

    # --- 5. install again ----------------------------------------------------------
    step "install again"
    apt_install gatehouse gatehoused gatehouse-ldap
    restart_sshd
    add_user carol
    logs_in carol
    logs_in bob

    # --- 6. with libpam-gatehouse --------------------------------------------------
    step "libpam-gatehouse: installed, offered, not enabled"
    apt_install libpam-gatehouse
    if grep -q pam_gatehouse "$root"/etc/pam.d/common-*; then
        fail "installing libpam-gatehouse enabled the profile"
    fi
    step "pam-auth-update --enable gatehouse"
    in_tree pam-auth-update --enable gatehouse
    grep -q pam_gatehouse "$root/etc/pam.d/common-account" || fail "the profile is not in common-account"
    restart_sshd
    logs_in carol
    logs_in bob
    in_tree apt-get install -y -qq --no-install-recommends pamtester >/dev/null 2>&1 ||
        fail "apt-get install pamtester"
    in_tree pamtester sshd carol acct_mgmt >/dev/null 2>&1 ||
        fail "pamtester sshd carol acct_mgmt"
    # A lockout is in the login state, which only the module reads: gatehouse-keys still
    # serves carol's key, and pam_gatehouse's account stage refuses her.
    in_tree gatehouse user lock carol --for 1h >/dev/null || fail "gatehouse user lock carol"
    refused carol carol "carol locked out (pam_gatehouse's account stage)"
    in_tree gatehouse user unlock carol >/dev/null || fail "gatehouse user unlock carol"
    logs_in carol

    step "removal refused while /etc/pam.d/sshd names the module"
    echo "account required pam_gatehouse.so" >>"$root/etc/pam.d/sshd"
    local out
    if out=$(in_tree apt-get remove -y -qq libpam-gatehouse 2>&1); then
        fail "libpam-gatehouse was removed under a hand-written PAM line"
    fi
    grep -q '/etc/pam.d/sshd' <<<"$out" || fail "the refusal does not name /etc/pam.d/sshd: $out"
    [ -f "$root/usr/share/pam-configs/gatehouse" ] || fail "the refused removal removed the profile"
    printf 'packages:   removal refused\n'
    sed -i '/pam_gatehouse.so/d' "$root/etc/pam.d/sshd"
    in_tree dpkg --configure -a >/dev/null

    step "apt remove (with the profile enabled)"
    in_tree apt-get remove -y -qq libpam-gatehouse gatehouse gatehoused gatehouse-ldap >/dev/null
    if grep -q pam_gatehouse "$root"/etc/pam.d/*; then
        fail "pam_gatehouse is still in /etc/pam.d after remove"
    fi
    restart_sshd
    logs_in bob
    in_tree pamtester sshd bob acct_mgmt open_session close_session >/dev/null 2>&1 ||
        fail "pamtester sshd bob after remove"

    step "apt purge (with libpam-gatehouse)"
    in_tree apt-get purge -y -qq libpam-gatehouse gatehouse gatehoused gatehouse-ldap >/dev/null
    restart_sshd
    logs_in bob
    check_purged

    step "install again, PAM enabled at once"
    apt_install gatehouse libpam-gatehouse
    in_tree pam-auth-update --enable gatehouse
    restart_sshd
    add_user dave
    logs_in dave
    logs_in bob
    [ -d "$root/data/dave" ] || fail "no data folder for dave"

    stop_sshd
}

# --- helpers ------------------------------------------------------------------------

step() { printf 'packages: --- %s\n' "$*"; }
fail() {
    printf 'packages: FAIL: %s\n' "$*" >&2
    [ -f "$work/sshd.log" ] && tail -20 "$work/sshd.log" | sed 's/^/packages:   sshd: /' >&2
    # The store's files, their owners and modes: the first thing to look at when
    # gatehouse-keys refuses (status 4).
    ls -ln "$root/var/lib/gatehouse" 2>&1 | sed 's/^/packages:   store: /' >&2
    exit 1
}
in_tree() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

apt_install() {
    local files=()
    for p in "$@"; do
        files+=("$(cd "$root" && ls "${packages_dir:-tmp/packages}/${p}"_*.deb)")
    done
    apt_install_files "${files[@]/#//}"
}

apt_install_files() {
    local out
    out=$(in_tree apt-get install -y -q --no-install-recommends "$@" 2>&1) ||
        { echo "$out" | tail -30 >&2; fail "apt-get install $*"; }
    # What the maintainer scripts said (warnings included), for the log.
    echo "$out" | grep -E '^(gatehouse|libpam-gatehouse):' | sed 's/^/packages:   /' || true
}

start_sshd() {
    mkdir -p "$root/run/sshd"
    in_tree /usr/sbin/sshd -t || fail "sshd -t"
    in_tree /usr/sbin/sshd -D -e -p "$port" -o ListenAddress=127.0.0.1 2>>"$work/sshd.log" &
    sshd_pid=$!
    for _ in $(seq 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$sshd_pid" 2>/dev/null || fail "the tree's sshd did not start"
        sleep 0.1
    done
    fail "the tree's sshd is not listening on 127.0.0.1:$port"
}
stop_sshd() {
    if [ -n "${sshd_pid:-}" ]; then
        kill "$sshd_pid" 2>/dev/null || true
        wait "$sshd_pid" 2>/dev/null || true
        sshd_pid=
    fi
}
restart_sshd() { stop_sshd; start_sshd; }

ssh_as() {
    local user=$1 key=$2
    shift 2
    timeout 30 ssh -F /dev/null -T -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o LogLevel=ERROR -o ConnectTimeout=10 -o IdentitiesOnly=yes -o IdentityAgent=none \
        -i "$keys/$key" -p "$port" "$user@127.0.0.1" "$@"
}
logs_in() {
    local user=$1 got
    got=$(ssh_as "$user" "$user" echo "hello-$user" 2>&1) || true
    [ "$got" = "hello-$user" ] || fail "$user cannot log in: $got"
    printf 'packages:   %s logs in\n' "$user"
}
refused() {
    local user=$1 key=$2 what=$3
    if ssh_as "$user" "$key" true >/dev/null 2>&1; then
        fail "$what: let in"
    fi
    printf 'packages:   %s: refused\n' "$what"
}

add_user() {
    local user=$1
    cp "$keys/$user.pub" "$root/tmp/$user.pub"
    in_tree gatehouse user add "$user" >/dev/null || fail "gatehouse user add $user"
    in_tree gatehouse key add "$user" --file "/tmp/$user.pub" >/dev/null || fail "gatehouse key add $user"
    # gatehouse-agent makes the account and data folder at the commit; no systemd runs
    # in the tree, so one pass by hand.
    in_tree gatehouse agent --once >/dev/null || fail "gatehouse agent --once"
    in_tree id "$user" >/dev/null || fail "no account for $user after the agent's pass"
}

check_files_installed() {
    local f
    for f in usr/bin/gatehouse usr/bin/gatehouse-keys usr/bin/gatehouse-shell usr/bin/gatehouse-session \
        usr/bin/gatehouse-agent usr/bin/gatehoused usr/bin/gatehouse-ldap \
        etc/gatehouse/gatehouse.toml etc/ssh/sshd_config.d/gatehouse.conf \
        usr/share/man/man8/gatehouse.8.gz usr/share/man/man5/gatehouse.toml.5.gz \
        lib/systemd/system/gatehouse-agent.service lib/systemd/system/gatehoused.service \
        lib/systemd/system/gatehouse-ldap-sync.timer lib/systemd/system/gatehouse-ldap-follow.service \
        var/lib/gatehouse/store.db \
        usr/share/bash-completion/completions/gatehouse usr/share/zsh/vendor-completions/_gatehouse \
        usr/share/fish/vendor_completions.d/gatehouse.fish; do
        [ -e "$root/$f" ] || fail "/$f is missing after install"
    done
    grep -q 'user' "$root/usr/share/bash-completion/completions/gatehouse" ||
        fail "the bash completion does not complete gatehouse's commands"
    in_tree getent group gatehouse-users >/dev/null || fail "no group gatehouse-users"
    in_tree id -nG gatehouse-keys | grep -qw gatehouse-users || fail "gatehouse-keys is not in gatehouse-users"
    local mode
    mode=$(in_tree stat -c '%U:%G %a' /var/lib/gatehouse /var/lib/gatehouse/store.db | tr '\n' ' ')
    [ "$mode" = "gatehouse:gatehouse-users 750 gatehouse:gatehouse-users 640 " ] ||
        fail "the store's folder and file: $mode"
    # sshd unchanged for bob: his settings are sshd_config's.
    local settings
    settings=$(in_tree /usr/sbin/sshd -T -C user=bob,host=localhost,addr=127.0.0.1,laddr=127.0.0.1,lport=22)
    grep -q '^authorizedkeyscommand none' <<<"$settings" || fail "the drop-in sets a key command for bob"
}

check_doctor() {
    local out
    local status=0
    out=$(in_tree gatehouse doctor 2>&1) || status=$?
    # Everything doctor said that is not "ok", for the log.
    echo "$out" | grep -viE '^ok' | sed 's/^/packages:   doctor: /' || true
    [ "$status" -eq 0 ] || fail "gatehouse doctor: exit status $status"
}

check_units_enabled() {
    [ -L "$root/etc/systemd/system/multi-user.target.wants/gatehouse-agent.service" ] ||
        fail "gatehouse-agent.service is not enabled"
    [ -L "$root/etc/systemd/system/multi-user.target.wants/gatehoused.service" ] ||
        fail "gatehoused.service is not enabled"
    [ ! -e "$root/etc/systemd/system/timers.target.wants/gatehouse-ldap-sync.timer" ] ||
        fail "gatehouse-ldap-sync.timer was enabled"
    [ ! -e "$root/etc/systemd/system/multi-user.target.wants/gatehouse-ldap-follow.service" ] ||
        fail "gatehouse-ldap-follow.service was enabled"
}

# Nothing of the packages' left but users' data: the files dpkg knew, the configuration,
# the store, the system accounts, the units' enablement.
check_purged() {
    local left p status
    left=$(cd "$root" || exit 1
        find etc/gatehouse etc/ssh/sshd_config.d/gatehouse.conf var/lib/gatehouse usr/share/pam-configs/gatehouse \
            -maxdepth 0 2>/dev/null
        find usr/bin usr/share/doc usr/share/man lib/systemd usr/lib/systemd usr/lib/sysusers.d usr/lib/tmpfiles.d \
            etc/systemd var/lib/systemd -name '*gatehouse*' 2>/dev/null
        find usr/lib -name 'pam_gatehouse.so' 2>/dev/null
        true)
    [ -z "$left" ] || fail "left after purge: $left"
    for account in gatehouse gatehouse-keys; do
        if in_tree getent passwd "$account" >/dev/null; then fail "account $account left after purge"; fi
    done
    for p in gatehouse gatehoused gatehouse-ldap libpam-gatehouse; do
        status=$(in_tree dpkg-query -W -f "\${db:Status-Abbrev}" "$p" 2>/dev/null || true)
        case "$status" in "" | un*) ;; *) fail "dpkg still knows $p: $status" ;; esac
    done
    printf 'packages:   nothing left but users'"'"' data\n'
}

# The same packages as revision 2: dpkg runs the upgrade path (prerm upgrade, postinst
# configure with the old version).
bump_revision() {
    local deb dir new
    mkdir -p "$root/tmp/packages-2"
    for deb in "$root"/tmp/packages/*.deb; do
        dir=$(mktemp -d "$work/deb.XXXXXX")
        dpkg-deb -R "$deb" "$dir"
        sed -i -e 's/^\(Version: .*\)-1$/\1-2/' -e 's/(= \([^)]*\)-1)/(= \1-2)/' "$dir/DEBIAN/control"
        new=$(basename "$deb" | sed 's/-1_/-2_/')
        dpkg-deb -b -Zgzip "$dir" "$root/tmp/packages-2/$new" >/dev/null
        rm -rf "$dir"
    done
}
# Undoes migration 6 of src/store/schema.rs (the uid column, retired_uids), as SQLite
# allows since 3.35, so the store is what a schema-5 build wrote.
downgrade_store_to_5() {
    local db=$root/var/lib/gatehouse/store.db
    # A later migration must be undone here too, before this one.
    [ "$(sqlite3 "$db" 'PRAGMA user_version')" = 6 ] || fail "the store is not at schema 6: undo the newer migrations here"
    sqlite3 "$db" 'PRAGMA foreign_keys = OFF; BEGIN; DROP INDEX users_by_uid;
        ALTER TABLE users DROP COLUMN uid; DROP TABLE retired_uids; PRAGMA user_version = 5; COMMIT;' ||
        fail "could not take the store back to schema 5"
    # sqlite3 closed it last and took the -wal and -shm files with it, as a release that
    # left them missing would: the upgrade's `gatehouse init` must make them again.
    printf 'packages:   store taken back to schema 5\n'
}

# The upgraded store is past schema 5, and $1 got the uid of their account; asked through
# the installed gatehouse, as an admin would (sqlite3 closing the store last would delete
# its -wal and -shm files, which readers of another uid need: see docs/DESIGN.md).
expect_store_migrated() {
    local want got
    in_tree gatehouse doctor 2>/dev/null | grep -q 'schema version [6-9]' ||
        fail "the upgrade did not migrate the store: $(in_tree gatehouse doctor 2>&1 | grep -i schema)"
    want=$(in_tree id -u "$1")
    got=$(in_tree gatehouse user show "$1" | sed -n 's/^uid: //p')
    [ "$got" = "$want" ] || fail "after the upgrade the store gives $1 uid '$got', the account has $want"
    printf 'packages:   store migrated from schema 5, %s keeps uid %s\n' "$1" "$want"
}

expect_version() {
    local got
    got=$(in_tree dpkg-query -W -f "\${Version}" "$1")
    case "$got" in *-"$2") ;; *) fail "$1 is at $got, not revision $2" ;; esac
}
