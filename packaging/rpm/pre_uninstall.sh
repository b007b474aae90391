# %preun of the gatehouse rpm ($1: 0 on erase, 1 on upgrade; on an upgrade %post of
# the new package has already run and restarted what ran).
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now gatehouse-agent.service gatehoused.service \
        gatehouse-provision.path gatehouse-provision.timer gatehouse-provision.service \
        gatehouse-ldap-sync.timer gatehouse-ldap-sync.service gatehouse-ldap-follow.service >/dev/null 2>&1 || :
fi
