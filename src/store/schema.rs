//! Versioned schema. Each entry upgrades the store by one version (`PRAGMA user_version`);
//! entries are append-only: a released migration is never edited.

pub const MIGRATIONS: &[&str] = &[
    // 1: users, keys, audit.
    "
    CREATE TABLE users (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        state           TEXT NOT NULL CHECK (state IN ('enabled', 'disabled')),
        policy          TEXT NOT NULL CHECK (policy IN ('shell', 'files', 'git', 'git-read')),
        port_forwarding INTEGER NOT NULL DEFAULT 0 CHECK (port_forwarding IN (0, 1)),
        created         INTEGER NOT NULL,
        source          TEXT NOT NULL
    ) STRICT;

    CREATE TABLE keys (
        id            INTEGER PRIMARY KEY,
        user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        algorithm     TEXT NOT NULL,
        blob          TEXT NOT NULL,
        fingerprint   TEXT NOT NULL UNIQUE,
        bits          INTEGER NOT NULL,
        comment       TEXT NOT NULL,
        scope         TEXT NOT NULL CHECK (scope IN ('shell', 'files', 'git', 'git-read')),
        from_patterns TEXT,
        expires       INTEGER,
        created       INTEGER NOT NULL,
        source        TEXT NOT NULL
    ) STRICT;
    CREATE INDEX keys_by_user ON keys (user_id);

    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY,
        time    INTEGER NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail  TEXT NOT NULL
    ) STRICT;
    CREATE INDEX audit_by_time ON audit (time);
    CREATE INDEX audit_by_subject ON audit (subject, time);
    ",
    // 2: repository grants.
    "
    CREATE TABLE grants (
        id      INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        pattern TEXT NOT NULL,
        access  TEXT NOT NULL CHECK (access IN ('read', 'write')),
        created INTEGER NOT NULL,
        UNIQUE (subject, pattern)
    ) STRICT;
    ",
    // 3: directory sync: who came from where, group memberships, the last sync.
    "
    ALTER TABLE users ADD COLUMN uid_number INTEGER;
    CREATE TABLE group_members (
        grp    TEXT NOT NULL,
        user   TEXT NOT NULL,
        source TEXT NOT NULL,
        PRIMARY KEY (grp, user)
    ) STRICT;
    CREATE INDEX group_members_by_user ON group_members (user);
    CREATE TABLE sync_state (
        source        TEXT PRIMARY KEY,
        last_success  INTEGER,
        last_attempt  INTEGER NOT NULL,
        last_error    TEXT,
        high_water    TEXT,
        users         INTEGER NOT NULL DEFAULT 0,
        keys          INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    ",
    // 4: where in the directory each user lives; when the last full sync ran.
    "
    ALTER TABLE users ADD COLUMN directory_dn TEXT;
    ALTER TABLE sync_state ADD COLUMN last_full INTEGER;
    ",
    // 5: the audit trail moves to its own file (attached as `trail`, see AUDIT_MIGRATIONS):
    // the store is readable by every managed user, and the trail says who did what from
    // where. secure_delete is on for this step, so the freed pages are zeroed.
    "
    INSERT INTO trail.audit (time, actor, action, subject, detail)
        SELECT time, actor, action, subject, detail FROM main.audit ORDER BY id;
    DROP TABLE main.audit;
    ",
    // 6: every user's uid, allocated by the store in users.uid_min..uid_max (or the
    // directory's uidNumber), unique, and retired with the user: never handed out again.
    // Users from before get theirs from `gatehouse init` (store::uids::backfill).
    "
    ALTER TABLE users ADD COLUMN uid INTEGER;
    CREATE UNIQUE INDEX users_by_uid ON users (uid);
    CREATE TABLE retired_uids (
        uid     INTEGER PRIMARY KEY,
        name    TEXT NOT NULL,
        retired INTEGER NOT NULL
    ) STRICT;
    ",
];

/// The audit trail's own file, readable by the store's owner alone.
pub const AUDIT_MIGRATIONS: &[&str] = &[
    // 1: the events.
    "
    CREATE TABLE trail.audit (
        id      INTEGER PRIMARY KEY,
        time    INTEGER NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail  TEXT NOT NULL
    ) STRICT;
    CREATE INDEX trail.audit_by_time ON audit (time);
    CREATE INDEX trail.audit_by_subject ON audit (subject, time);
    ",
];

/// The schema version this build reads and writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}
