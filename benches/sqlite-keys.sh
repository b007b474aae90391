#!/bin/sh
# The baseline from the issue: an AuthorizedKeysCommand written as a shell script over the
# sqlite3 CLI, doing the same lookup as `gatehouse-keys USER FINGERPRINT` (one user's key
# with that fingerprint, printed as a restricted authorized_keys line). benches/run.sh
# times it next to gatehouse-keys; it is not meant for production use.
#
# usage: sqlite-keys.sh STORE_DB USER FINGERPRINT
set -eu
db=$1 user=$2 fp=$3

# The values go into SQL text, so allow only the characters user names and SHA256
# fingerprints use (no quotes); anything else gets no key, as gatehouse-keys would answer.
case $user in '' | *[!a-z0-9_-]*) exit 0 ;; esac
case $fp in SHA256:*) ;; *) exit 0 ;; esac
case ${fp#SHA256:} in '' | *[!A-Za-z0-9+/=]*) exit 0 ;; esac

# -readonly: never checkpoint or remove the -wal/-shm files the other readers rely on.
exec sqlite3 -readonly -batch -noheader -separator ' ' "$db" \
    "SELECT 'restrict,command=\"exec /usr/bin/gatehouse-shell --key ' || k.fingerprint || '\"', k.algorithm, k.blob, k.comment
       FROM keys k JOIN users u ON u.id = k.user_id
      WHERE u.name = '$user' AND k.fingerprint = '$fp' AND u.state = 'enabled'
        AND (k.expires IS NULL OR k.expires > CAST(strftime('%s', 'now') AS INTEGER));"
