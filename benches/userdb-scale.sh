#!/usr/bin/env bash
# What N systemd user records (agent.accounts = "userdb") cost a lookup through
# nss-systemd: the records the agent writes, for N users, in an empty tmpfs over
# /run/userdb inside a mount namespace of this script's own (the host's accounts are not
# touched), then each lookup timed once. Root; needs libnss-systemd in nsswitch.conf.
#   sudo benches/userdb-scale.sh 10000
#   sudo benches/userdb-scale.sh 100000 memberships   # with a membership file per user
set -euo pipefail
n=${1:-10000}
memberships=${2:-}
if [ -z "${GATEHOUSE_USERDB_SCALE_INSIDE:-}" ]; then
    made=
    [ -e /run/userdb ] || { mkdir /run/userdb; made=1; }
    status=0
    GATEHOUSE_USERDB_SCALE_INSIDE=1 unshare --mount --propagation private "$0" "$n" "$memberships" || status=$?
    [ -n "$made" ] && rmdir /run/userdb
    exit "$status"
fi
mount -t tmpfs -o mode=0755 tmpfs /run/userdb
cd /run/userdb
python3 - "$n" "$memberships" <<'PY'
import json, os, sys
n, memberships = int(sys.argv[1]), sys.argv[2] == "memberships"
for i in range(n):
    name, uid = f"big{i}", 100000 + i
    with open(f"{name}.user", "w") as f:
        json.dump({"userName": name, "uid": uid, "gid": uid, "homeDirectory": f"/data/{name}",
                   "shell": "/bin/sh", "disposition": "regular", "locked": False, "service": "gatehouse"}, f)
    os.symlink(f"{name}.user", f"{uid}.user")
    with open(f"{name}.user-privileged", "w") as f:
        json.dump({"privileged": {"hashedPassword": ["*"]}, "service": "gatehouse"}, f)
    os.chmod(f"{name}.user-privileged", 0o600)
    with open(f"{name}.group", "w") as f:
        json.dump({"groupName": name, "gid": uid, "disposition": "regular", "service": "gatehouse"}, f)
    os.symlink(f"{name}.group", f"{uid}.group")
    if memberships:
        with open(f"{name}:gatehouse-users.membership", "w") as f:
            json.dump({"service": "gatehouse"}, f)
PY
mid=$((n / 2))
echo "| lookup, $n records${memberships:+, with membership files} | ms |"
echo "| --- | --- |"
for c in "getent passwd big$mid" "getent passwd $((100000 + mid))" "getent group big$mid" \
         "getent initgroups big$mid" "id big$mid" "getent -s files passwd"; do
    start=$(date +%s%N)
    timeout 120 $c > /dev/null || echo "($c failed or timed out)"
    end=$(date +%s%N)
    echo "| \`$c\` | $(( (end - start) / 1000000 )) |"
done
