//! `gatehouse-ldap follow`: the directory sync as a daemon that sees changes as they are
//! made. Where the directory offers RFC 4533 content sync (OpenLDAP's syncprov, 389) it
//! keeps a refreshAndPersist search open and, at each entry the directory says changed,
//! runs the ordinary sync ([`crate::sync::sync`]): an incremental read of what changed
//! (deletions: a full read), with the same checks, the same merge and the same record.
//! The search names changes; it never carries the data applied, so nothing here parses
//! users or keys. The sync cookie is kept in the store (`sync_state` of
//! [`COOKIE_SOURCE`]), so a restart resumes where it stopped. Elsewhere (Active Directory,
//! a directory without syncprov) it polls: an incremental read every `ldap.poll_interval`,
//! a full one at least hourly. Either way a read every `ldap.poll_interval` records a
//! success, so `ldap.staleness_max` keeps meaning what it says.

use crate::client::{guarded, Directory, DirectoryError};
use crate::sync::{self, SyncError};
use gatehouse::config::{Config, FollowMode, LdapConfig};
use gatehouse::log::{Level, Logger};
use gatehouse::store::{AdminStore, SyncAttempt};
use gatehouse::time::Timestamp;
use ldap3::controls::{Control, ControlType, EntryState, MakeCritical, RefreshMode, SyncInfo, SyncRequest, SyncState};
use ldap3::{LdapError, ResultEntry, Scope, SearchEntry};
use std::time::Duration;

/// The `sync_state` row that keeps the content-sync cookie (hex) in its `high_water`.
pub const COOKIE_SOURCE: &str = "ldap-follow";

/// The longest wait between two tries after a failure.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What one message of a content-sync search says.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The entry was added or changed.
    Changed(String),
    /// The entry was deleted.
    Deleted(String),
    /// The entry is unchanged (a present phase names every entry still there).
    Present,
    /// Only a new cookie.
    Cookie,
    /// A phase of the refresh ended; `present`: it was a present phase, so entries it did
    /// not name are gone; `done`: the refresh is over, changes now come as they are made.
    Refresh { present: bool, done: bool },
    /// Entries named by UUID alone (deleted or present): only a full read tells which users.
    IdSet,
}

/// One message: what it says, and the cookie it carries.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub event: Event,
    pub cookie: Option<Vec<u8>>,
}

/// Reads one message of a content-sync search. The directory is not trusted: a message
/// the LDAP library cannot parse (it panics on some) is an error of one line.
pub fn classify(entry: ResultEntry) -> Result<Message, String> {
    crate::client::caught(|| classify_inner(entry)).unwrap_or_else(|| Err("malformed content sync message".to_string()))
}

fn classify_inner(entry: ResultEntry) -> Result<Message, String> {
    if entry.is_intermediate() {
        return Ok(match ldap3::controls::parse_syncinfo(entry) {
            SyncInfo::NewCookie(c) => Message { event: Event::Cookie, cookie: Some(c) },
            SyncInfo::RefreshDelete { cookie, refresh_done } => {
                Message { event: Event::Refresh { present: false, done: refresh_done }, cookie }
            }
            SyncInfo::RefreshPresent { cookie, refresh_done } => {
                Message { event: Event::Refresh { present: true, done: refresh_done }, cookie }
            }
            SyncInfo::SyncIdSet { cookie, .. } => Message { event: Event::IdSet, cookie },
        });
    }
    if entry.is_ref() {
        return Err("a referral in the content sync (not followed)".to_string());
    }
    let state = entry.1.iter().find_map(|Control(kind, raw)| match kind {
        Some(ControlType::SyncState) => Some(raw.clone()),
        _ => None,
    });
    let dn = gatehouse::keys::shown(&SearchEntry::construct(ResultEntry::new(entry.0)).dn);
    let Some(raw) = state else {
        return Err(format!("{dn}: an entry without a syncState control"));
    };
    let Some(value) = raw.val.as_deref() else {
        return Err(format!("{dn}: a syncState control without a value"));
    };
    let state: SyncState = <SyncState as ldap3::controls::ControlParser>::parse(value);
    let event = match state.state {
        EntryState::Add | EntryState::Modify => Event::Changed(dn),
        EntryState::Delete => Event::Deleted(dn),
        EntryState::Present => Event::Present,
    };
    Ok(Message { event, cookie: state.cookie })
}

/// Why a content-sync session ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Nothing came for `ldap.poll_interval`: time for a read that records a success.
    Quiet,
    /// The directory does not offer content sync (why).
    NotOffered(String),
    /// The directory asks for a fresh start without the cookie (e-syncRefreshRequired).
    RefreshRequired,
}

/// RFC 4533's e-syncRefreshRequired.
const SYNC_REFRESH_REQUIRED: u32 = 4096;
/// unavailableCriticalExtension: the directory does not know the sync request control.
const UNAVAILABLE_CRITICAL_EXTENSION: u32 = 12;

/// Runs a sync: full or not, and the cookie it brings the store to.
pub type Apply<'a> = dyn FnMut(bool, Option<&[u8]>) -> Result<(), SyncError> + 'a;

/// One content-sync session: a refreshAndPersist search from `cookie`, calling `apply`
/// (full read or not, the cookie it brings the store to) once at the end of the refresh
/// and then at each change.
pub fn session(
    cfg: &LdapConfig,
    cookie: Option<Vec<u8>>,
    quiet: Duration,
    apply: &mut Apply<'_>,
) -> Result<End, SyncError> {
    let mut dir = Directory::connect(cfg)?;
    let filter = format!("(|{}{})", cfg.user_filter, cfg.group_filter);
    let base = cfg.base_dn.clone();
    let request = SyncRequest { mode: RefreshMode::RefreshAndPersist, cookie: cookie.clone(), reload_hint: false };
    let conn = dir.conn();
    let mut stream = guarded("content sync", || {
        conn.with_controls(request.critical())
            .with_timeout(quiet)
            .streaming_search(&base, Scope::Subtree, &filter, vec!["1.1"])
            .map_err(|e| DirectoryError::Search(format!("content sync search under {base}: {e}")))
    })?;
    let (mut refreshing, mut pending, mut full) = (true, false, false);
    let mut latest = cookie;
    loop {
        let next = crate::client::caught(|| stream.next()).ok_or(());
        let entry = match next {
            Err(()) => return Err(DirectoryError::Unreachable("content sync: malformed answer".into()).into()),
            Ok(Err(LdapError::Timeout { .. })) => return Ok(End::Quiet),
            Ok(Err(e)) => return Err(DirectoryError::Unreachable(format!("content sync: {e}")).into()),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(entry))) => entry,
        };
        let message = classify(entry).map_err(|e| DirectoryError::Search(format!("content sync: {e}")))?;
        let moved = message.cookie.is_some() && message.cookie != latest;
        if message.cookie.is_some() {
            latest = message.cookie;
        }
        match message.event {
            Event::Changed(_) => pending = true,
            Event::Deleted(_) | Event::IdSet => (pending, full) = (true, true),
            Event::Present | Event::Cookie => {}
            Event::Refresh { present, done } => {
                // A present phase names what is still there: what it did not name is gone.
                if present {
                    (pending, full) = (true, true);
                }
                if done {
                    refreshing = false;
                    pending = true;
                }
            }
        }
        if !refreshing && (pending || moved) {
            apply(full, latest.as_deref())?;
            (pending, full) = (false, false);
        }
    }
    let result = guarded("content sync result", || Ok(stream.result()))?;
    match result.rc {
        SYNC_REFRESH_REQUIRED => Ok(End::RefreshRequired),
        UNAVAILABLE_CRITICAL_EXTENSION => Ok(End::NotOffered(format!("the directory answered: {}", result.text))),
        0 => Ok(End::NotOffered("the directory ended the search instead of persisting".into())),
        rc => {
            Err(DirectoryError::Search(format!("content sync search under {base}: result {rc}: {}", result.text))
                .into())
        }
    }
}

/// The cookie as the store keeps it.
pub fn cookie_text(cookie: &[u8]) -> String {
    cookie.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cookie the store kept; `Err`: not one `cookie_text` wrote.
pub fn cookie_from_text(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) || text.len() > 8192 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("stored sync cookie is not hex ({} characters)", text.len()));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| format!("stored sync cookie: {e}")))
        .collect()
}

/// Opens the store the sync writes (again, after it failed).
pub type OpenStore<'a> = dyn Fn() -> Result<Box<dyn AdminStore>, gatehouse::store::StoreError> + 'a;

/// The daemon: runs until killed. Each failure is logged (one line, then again when it
/// recovers) and retried after a wait that doubles up to 30 s; after a failure of the
/// store, the store is opened again (a PostgreSQL restarted, say). `Err` only when the
/// store cannot be opened at the start.
pub fn run(config: &Config, open: &OpenStore<'_>, log: &mut Logger) -> Result<(), SyncError> {
    let Some(cfg) = config.ldap.clone() else {
        return Err(SyncError::NotConfigured);
    };
    let mut held: Option<Box<dyn AdminStore>> = Some(open()?);
    let mut cookie = None;
    if let Some(store) = held.as_mut() {
        cookie = match store.sync_state(COOKIE_SOURCE)?.and_then(|s| s.high_water).filter(|t| !t.is_empty()) {
            None => None,
            Some(text) => match cookie_from_text(&text) {
                Ok(c) => Some(c),
                Err(e) => {
                    log.log(Level::Warning, &[("action", "ldap.follow"), ("cookie", "dropped"), ("error", &e)]);
                    None
                }
            },
        };
    }
    let mut mode = cfg.follow;
    let mode_name = |m: FollowMode| if m == FollowMode::Poll { "poll" } else { "content-sync" };
    log.log(Level::Info, &[("action", "ldap.follow"), ("mode", mode_name(mode)), ("verdict", "start")]);
    let mut backoff = Duration::from_secs(1);
    let mut failing = false;
    loop {
        let store = match held.as_mut() {
            Some(s) => s,
            None => match open() {
                Ok(s) => held.insert(s),
                Err(e) => {
                    failed(log, &mut failing, &e.to_string());
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        let store = store.as_mut();
        // A read by the usual rules (incremental, full at least hourly): it records a
        // success each `ldap.poll_interval` however quiet the directory is.
        let mut result = apply(config, store, log, false, None, "timer").map(|()| End::Quiet);
        if result.is_ok() && mode != FollowMode::Poll {
            let mut on_change = |full: bool, c: Option<&[u8]>| apply(config, store, log, full, c, "change");
            result = session(&cfg, cookie.clone(), cfg.poll_interval, &mut on_change);
            // What the session applied is in the store, its cookie with it.
            if let Ok(Some(text)) = store.sync_state(COOKIE_SOURCE).map(|s| s.and_then(|s| s.high_water)) {
                cookie = cookie_from_text(&text).ok().filter(|c| !c.is_empty());
            }
        }
        if matches!(result, Err(SyncError::Store(_))) {
            held = None;
        }
        match result {
            Ok(End::Quiet) => {
                if failing {
                    log.log(Level::Info, &[("action", "ldap.follow"), ("verdict", "recovered")]);
                }
                (failing, backoff) = (false, Duration::from_secs(1));
                if mode == FollowMode::Poll {
                    std::thread::sleep(cfg.poll_interval);
                }
            }
            Ok(End::RefreshRequired) => {
                log.log(
                    Level::Notice,
                    &[("action", "ldap.follow"), ("cookie", "dropped"), ("reason", "refresh-required")],
                );
                cookie = None;
                forget_cookie(held.as_deref_mut(), "the directory asked for a refresh");
            }
            Ok(End::NotOffered(why)) if mode == FollowMode::Auto => {
                let every = format!("{}s", cfg.poll_interval.as_secs());
                log.log(
                    Level::Notice,
                    &[("action", "ldap.follow"), ("mode", "poll"), ("every", &every), ("reason", &why)],
                );
                eprintln!("gatehouse-ldap: content sync not offered ({}); polling every {every}", one_line(&why));
                mode = FollowMode::Poll;
            }
            Ok(End::NotOffered(why)) => {
                let text = format!("ldap.follow is content-sync, but {why}");
                failed(log, &mut failing, &text);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(e) => {
                let text = e.to_string();
                failed(log, &mut failing, &text);
                // A directory that refused the session (not one we could not reach) may
                // not like the cookie: the next one starts afresh.
                if matches!(&e, SyncError::Directory(DirectoryError::Search(_))) && cookie.is_some() {
                    cookie = None;
                    forget_cookie(held.as_deref_mut(), "the directory refused the session");
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Drops the kept cookie (an empty one in the store), so that neither the next session nor
/// a restart uses it.
fn forget_cookie(store: Option<&mut (dyn AdminStore + 'static)>, why: &str) {
    if let Some(store) = store {
        let attempt = SyncAttempt {
            source: COOKIE_SOURCE,
            at: gatehouse::time::now(),
            error: Some(why),
            high_water: Some(""),
            full: false,
        };
        let _ = store.record_sync(&attempt);
    }
}

fn one_line(text: &str) -> String {
    gatehouse::keys::shown(text)
}

fn failed(log: &mut Logger, failing: &mut bool, text: &str) {
    if !*failing {
        eprintln!("gatehouse-ldap: follow: {}", one_line(text));
        log.log(Level::Error, &[("action", "ldap.follow"), ("verdict", "failed"), ("error", text)]);
    }
    *failing = true;
}

/// One sync by the usual code, logged; with a cookie, the cookie recorded after it.
fn apply(
    config: &Config,
    store: &mut dyn AdminStore,
    log: &mut Logger,
    full: bool,
    cookie: Option<&[u8]>,
    why: &str,
) -> Result<(), SyncError> {
    let now: Timestamp = gatehouse::time::now();
    let o = sync::sync(config, store, full, false, now)?;
    let r = &o.report;
    for c in &r.conflicts {
        log.log(Level::Warning, &[("action", "ldap.sync"), ("skipped", c)]);
    }
    let changed = r.users_added + r.users_disabled + r.users_enabled + r.keys_added + r.keys_removed;
    if changed > 0 || why == "change" {
        let pairs = [
            ("action", "ldap.sync"),
            ("trigger", why),
            ("kind", if o.full { "full" } else { "incremental" }),
            ("entries", &o.entries.to_string()),
            ("changes", &changed.to_string()),
            ("verdict", "ok"),
        ];
        log.log(Level::Info, &pairs);
    }
    if let Some(c) = cookie {
        let text = cookie_text(c);
        store.record_sync(&SyncAttempt {
            source: COOKIE_SOURCE,
            at: now,
            error: None,
            high_water: Some(&text),
            full,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::{ASNTag, Enumerated, OctetString, Sequence, StructureTag, Tag};
    use ldap3::controls::RawControl;

    const STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";

    fn ber(tag: Tag) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        lber::write::encode_into(&mut buf, tag.into_structure()).unwrap();
        buf.to_vec()
    }

    /// A SearchResultEntry for `dn` with no attributes.
    fn entry(dn: &str, controls: Vec<Control>) -> ResultEntry {
        let tag = Tag::Sequence(Sequence {
            id: 4,
            class: ldap3::asn1::TagClass::Application,
            inner: vec![
                Tag::OctetString(OctetString { inner: dn.as_bytes().to_vec(), ..Default::default() }),
                Tag::Sequence(Sequence { inner: vec![], ..Default::default() }),
            ],
        });
        with_controls(tag.into_structure(), controls)
    }

    fn with_controls(tag: StructureTag, controls: Vec<Control>) -> ResultEntry {
        let mut e = ResultEntry::new(tag);
        e.1 = controls;
        e
    }

    fn state_control(value: Option<Vec<u8>>) -> Control {
        Control(Some(ControlType::SyncState), RawControl { ctype: STATE_OID.into(), crit: false, val: value })
    }

    fn state_value(state: i64, cookie: Option<&[u8]>) -> Vec<u8> {
        let mut inner = vec![
            Tag::Enumerated(Enumerated { inner: state, ..Default::default() }),
            Tag::OctetString(OctetString { inner: vec![7; 16], ..Default::default() }),
        ];
        if let Some(c) = cookie {
            inner.push(Tag::OctetString(OctetString { inner: c.to_vec(), ..Default::default() }));
        }
        ber(Tag::Sequence(Sequence { inner, ..Default::default() }))
    }

    #[test]
    fn changes_are_named() {
        let m = classify(entry("uid=dora,dc=org", vec![state_control(Some(state_value(2, Some(b"rid=1"))))])).unwrap();
        assert_eq!(m, Message { event: Event::Changed("uid=dora,dc=org".into()), cookie: Some(b"rid=1".to_vec()) });
        let m = classify(entry("uid=dora,dc=org", vec![state_control(Some(state_value(3, None)))])).unwrap();
        assert_eq!(m.event, Event::Deleted("uid=dora,dc=org".into()));
        assert_eq!(
            classify(entry("uid=x", vec![state_control(Some(state_value(0, None)))])).unwrap().event,
            Event::Present
        );
    }

    /// Untrusted input: whatever the directory sends, one line of error, never a panic.
    #[test]
    fn malformed_messages_are_one_line_errors() {
        let cases = [
            // An unknown syncState.
            entry("uid=a\nforged: line,dc=org", vec![state_control(Some(state_value(9, None)))]),
            // A value that is not BER.
            entry("uid=a,dc=org", vec![state_control(Some(vec![0xff, 0x00, 0x13]))]),
            // No value, no control.
            entry("uid=a,dc=org", vec![state_control(None)]),
            entry("uid=a\r\nb,dc=org", vec![]),
            // A cookie of the wrong type (a sequence where an octet string goes).
            entry(
                "uid=a,dc=org",
                vec![state_control(Some(ber(Tag::Sequence(Sequence {
                    inner: vec![
                        Tag::Enumerated(Enumerated { inner: 1, ..Default::default() }),
                        Tag::OctetString(OctetString { inner: vec![1; 16], ..Default::default() }),
                        Tag::Sequence(Sequence { inner: vec![], ..Default::default() }),
                    ],
                    ..Default::default()
                }))))],
            ),
            // An intermediate message that is not a sync info.
            with_controls(
                Tag::Sequence(Sequence {
                    id: 25,
                    class: ldap3::asn1::TagClass::Application,
                    inner: vec![Tag::OctetString(OctetString { inner: b"1.2.3".to_vec(), ..Default::default() })],
                })
                .into_structure(),
                vec![],
            ),
            // Not even an entry.
            with_controls(
                StructureTag { class: ldap3::asn1::TagClass::Universal, id: 4, payload: ldap3::asn1::PL::P(vec![]) },
                vec![],
            ),
        ];
        for (i, case) in cases.into_iter().enumerate() {
            let e = classify(case).expect_err(&format!("case {i}"));
            assert!(!e.is_empty() && !e.chars().any(char::is_control), "case {i}: {e:?}");
        }
    }

    /// A directory that answers a content-sync search with `reply` (built for the
    /// request's message id), then keeps the connection open and says nothing more.
    fn fake_directory(reply: fn(i64) -> Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let request = loop {
                let mut chunk = [0u8; 4096];
                let n = conn.read(&mut chunk).unwrap();
                assert!(n > 0, "the client went away before asking");
                buf.extend_from_slice(&chunk[..n]);
                if let Ok((_, tag)) = lber::parse::parse_tag(&buf) {
                    break tag;
                }
            };
            let mut parts = request.expect_constructed().unwrap().into_iter();
            let id = parts.next().unwrap().expect_primitive().unwrap();
            let id = id.iter().fold(0i64, |n, b| n << 8 | i64::from(*b));
            conn.write_all(&reply(id)).unwrap();
            // Silent from now on; the client must not wait for ever.
            let _ = conn.read(&mut [0u8; 4096]);
        });
        (port, server)
    }

    fn message(id: i64, op: Tag, controls: Option<Vec<u8>>) -> Vec<u8> {
        use ldap3::asn1::{Integer, TagClass};
        let mut inner = vec![Tag::Integer(Integer { inner: id, ..Default::default() }), op];
        if let Some(value) = controls {
            let control = Tag::Sequence(Sequence {
                inner: vec![
                    Tag::OctetString(OctetString { inner: STATE_OID.as_bytes().to_vec(), ..Default::default() }),
                    Tag::OctetString(OctetString { inner: value, ..Default::default() }),
                ],
                ..Default::default()
            });
            inner.push(Tag::Sequence(Sequence { id: 0, class: TagClass::Context, inner: vec![control] }));
        }
        ber(Tag::Sequence(Sequence { inner, ..Default::default() }))
    }

    fn entry_op(dn: &str) -> Tag {
        Tag::Sequence(Sequence {
            id: 4,
            class: ldap3::asn1::TagClass::Application,
            inner: vec![
                Tag::OctetString(OctetString { inner: dn.as_bytes().to_vec(), ..Default::default() }),
                Tag::Sequence(Sequence { inner: vec![], ..Default::default() }),
            ],
        })
    }

    fn run_session(port: u16) -> (Result<End, SyncError>, usize) {
        let config = gatehouse::config::Config::parse(
            "t.toml",
            &format!("[ldap]\nurl = \"ldap://127.0.0.1:{port}\"\nstarttls = false\nbase_dn = \"dc=org\"\n"),
        )
        .unwrap();
        let cfg = config.ldap.unwrap();
        let mut applied = 0;
        let result = session(&cfg, None, Duration::from_secs(2), &mut |_, _| {
            applied += 1;
            Ok(())
        });
        (result, applied)
    }

    /// Through the real client: an unknown syncState, and a directory that goes silent,
    /// end the session with one line of error (or a quiet end), no panic, no hang.
    #[test]
    fn a_session_with_a_malformed_or_silent_directory_ends() {
        let (port, server) = fake_directory(|id| message(id, entry_op("uid=a,dc=org"), Some(state_value(9, None))));
        let started = std::time::Instant::now();
        let (result, applied) = run_session(port);
        let e = result.expect_err("an unknown syncState was accepted").to_string();
        assert!(e.starts_with("directory search: content sync: ") && !e.contains('\n'), "{e}");
        assert_eq!(applied, 0);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        drop(server);

        // An entry before the refresh ends, then nothing: the session ends at the quiet
        // limit, having applied nothing half-read.
        let (port, _server) = fake_directory(|id| message(id, entry_op("uid=b,dc=org"), Some(state_value(1, None))));
        let started = std::time::Instant::now();
        let (result, applied) = run_session(port);
        assert_eq!(result.unwrap(), End::Quiet);
        assert_eq!(applied, 0);
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn cookies_round_trip_and_bad_ones_are_refused() {
        let c = b"rid=000,csn=20261203182800.000000Z#000000#000#000000\xff".to_vec();
        assert_eq!(cookie_from_text(&cookie_text(&c)).unwrap(), c);
        for bad in ["abc", "zz", "0g", "é1"] {
            assert!(cookie_from_text(bad).is_err(), "{bad}");
        }
        assert!(cookie_from_text(&"0".repeat(9000)).is_err());
    }
}
