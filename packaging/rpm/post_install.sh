# %post of the gatehouse rpm ($1: 1 on install, 2 on upgrade). The same steps as the
# Debian postinst, the Fedora way: accounts from sysusers.d, /data from tmpfiles.d,
# units left to presets (Fedora enables nothing by default: `systemctl enable --now
# gatehouse-agent` after installing).
systemd-sysusers /usr/lib/sysusers.d/gatehouse.conf || :
systemd-tmpfiles --create /usr/lib/tmpfiles.d/gatehouse.conf || :
[ -d /data ] || install -d -m 0755 -o root -g root /data
# The store: made on install, migrated on upgrade, with nothing holding it open (on an
# upgrade this runs before the old package's %preun, so the stop is here).
running=
for unit in gatehouse-agent.service gatehoused.service; do
    if systemctl --quiet is-active "$unit" 2>/dev/null; then
        running="$running $unit"
        systemctl stop "$unit" || :
    fi
done
/usr/bin/gatehouse init --owner gatehouse --group gatehouse-users
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset gatehouse-agent.service gatehoused.service \
        gatehouse-provision.path gatehouse-provision.timer gatehouse-ldap-sync.timer >/dev/null 2>&1 || :
fi
systemctl daemon-reload >/dev/null 2>&1 || :
# shellcheck disable=SC2086
[ -z "$running" ] || systemctl start $running || :
# sshd reads the drop-in when reloaded: only when `sshd -t` accepts the result.
if /usr/sbin/sshd -t; then
    systemctl try-reload-or-restart sshd.service >/dev/null 2>&1 || :
else
    echo "gatehouse: WARNING: sshd -t fails; sshd was not reloaded" >&2
fi
