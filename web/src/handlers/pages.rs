//! The browser side: server-rendered pages that work without JavaScript. maud escapes
//! every value interpolated into them. A failing handler answers with `WebError`'s error
//! page.

use super::directory_keys_guard;
use crate::error::WebError;
use crate::extract::{
    session_cookie, user_enabled, Change, ChangeForm, Peer, SameOriginForm, SignedIn, SESSION_COOKIE,
};
use crate::layout::{self, SignOut};
use crate::state::{App, Db};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar};
use gatehouse::admin::KeyOptions;
use gatehouse::domain::{Scope, UserState};
use gatehouse::log::Level;
use gatehouse::store::Key;
use gatehouse::time::Timestamp;
use maud::{html, Markup};
use serde::Deserialize;
use std::sync::Arc;

fn layout(title: &str, user: Option<&SignedIn>, body: Markup) -> Markup {
    layout::page(title, user.map(|u| SignOut { user: &u.user, csrf: &u.csrf }), body)
}

/// Checks a password for sign-in, on the blocking pool (argon2, or a bind to the directory).
pub trait PasswordCheck {
    fn check(&self, db: &Db<'_>, user: &str, password: &str) -> Result<bool, WebError>;
}

/// Directory users bind to the directory; everyone else has a local password.
pub struct SignInCheck;

impl PasswordCheck for SignInCheck {
    fn check(&self, db: &Db<'_>, user: &str, password: &str) -> Result<bool, WebError> {
        let from_directory = db.store().user(user).map(|u| u.source == "ldap").unwrap_or(false);
        match (&db.config.ldap, from_directory) {
            (Some(ldap), true) => match gatehouse_ldap::password::check(ldap, user, password) {
                Ok(result) => Ok(result.is_ok()),
                Err(e) => {
                    db.log(Level::Error, &[("action", "signin"), ("user", user), ("error", &e.to_string())]);
                    Err(WebError::Unavailable)
                }
            },
            _ => LocalPasswords.check(db, user, password),
        }
    }
}

/// Passwords set through an invitation, argon2id hashes in the secrets file.
pub struct LocalPasswords;

impl PasswordCheck for LocalPasswords {
    fn check(&self, db: &Db<'_>, user: &str, password: &str) -> Result<bool, WebError> {
        db.secrets().check_password(user, password).map_err(|e| db.store_err(e))
    }
}

pub async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css"), (header::CACHE_CONTROL, "max-age=3600")],
        include_str!("../../static/style.css"),
    )
        .into_response()
}

pub async fn home() -> Redirect {
    Redirect::to("/keys")
}

fn signin_page(message: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            @if let Some(m) = message { p.error { (m) } }
            form method="post" action="/signin" {
                label for="user" { "User name" }
                input id="user" name="user" autocomplete="username" required;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                p { button type="submit" { "Sign in" } }
            }
        },
    )
}

pub async fn signin_form() -> Markup {
    signin_page(None)
}

#[derive(Deserialize)]
pub struct SigninForm {
    user: String,
    password: String,
}

/// A new session for `user`, in a cookie added to `jar`.
async fn start_session(app: &Arc<App>, jar: CookieJar, user: &str) -> Result<CookieJar, WebError> {
    let old = jar.get(SESSION_COOKIE).map(|c| c.value().to_string());
    let user = user.to_string();
    let id = app
        .blocking(move |db| {
            let secrets = db.secrets();
            // Never carry a session id over a sign-in: a planted one dies here.
            if let Some(old) = old {
                secrets.end_session(&old).map_err(|e| db.store_err(e))?;
            }
            let (id, _csrf) = secrets.create_session(&user, gatehouse::time::now()).map_err(|e| db.store_err(e))?;
            Ok(id)
        })
        .await?;
    Ok(jar.add(session_cookie(app, id)))
}

pub async fn signin(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    jar: CookieJar,
    SameOriginForm(form): SameOriginForm<SigninForm>,
) -> Result<Response, WebError> {
    let now = gatehouse::time::now();
    let peer = peer.client(&app.config.web.trusted_proxies, &headers);
    let user_ok = app.config.valid_user_name(&form.user) && form.password.len() <= 1024;
    // Per client address, and per account: guessing one account's password from many
    // addresses is held to the same pace as guessing from one.
    let by_address = app.signin_limit.allow(&format!("signin:{}", peer.shown()), now);
    let by_account = !user_ok || app.signin_limit.allow(&format!("signin-user:{}", form.user), now);
    if !by_address || !by_account {
        let reason = if by_address { "rate-limit-account" } else { "rate-limit" };
        app.log(
            Level::Notice,
            &[
                ("action", "signin"),
                ("user", &form.user),
                ("source", &peer.shown()),
                ("verdict", "refuse"),
                ("reason", reason),
            ],
        );
        return Err(WebError::TooMany);
    }
    let (user, password) = (form.user.clone(), form.password);
    let enabled = app
        .blocking(move |db| {
            Ok(user_ok && SignInCheck.check(db, &user, &password).unwrap_or(false) && user_enabled(db, &user))
        })
        .await
        .unwrap_or(false);
    if !enabled {
        app.log(
            Level::Notice,
            &[("action", "signin"), ("user", &form.user), ("source", &peer.shown()), ("verdict", "refuse")],
        );
        return Ok((StatusCode::UNAUTHORIZED, signin_page(Some("Wrong user name or password."))).into_response());
    }
    app.log(
        Level::Info,
        &[("action", "signin"), ("user", &form.user), ("source", &peer.shown()), ("verdict", "accept")],
    );
    let jar = start_session(&app, jar, &form.user).await?;
    Ok((jar, Redirect::to("/keys")).into_response())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    // Missing reads as empty, so it fails the CSRF check (403) rather than the form parser.
    #[serde(default)]
    csrf: String,
}

impl ChangeForm for CsrfForm {
    const RATE_LIMITED: bool = false;
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn signout(State(app): State<Arc<App>>, jar: CookieJar, _: Change<CsrfForm>) -> Result<Response, WebError> {
    if let Some(id) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) {
        app.blocking(move |db| db.secrets().end_session(&id).map_err(|e| db.store_err(e))).await?;
    }
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
    Ok((jar, Redirect::to("/signin")).into_response())
}

fn invite_page(user: &str, message: Option<&str>) -> Markup {
    layout(
        "Welcome",
        None,
        html! {
            h2 { "Welcome, " (user) }
            p { "Choose a password for this key page, and add your first SSH public key if you have one at hand." }
            @if let Some(m) = message { p.error { (m) } }
            form method="post" {
                label for="password" { "New password (at least 12 characters)" }
                input id="password" name="password" type="password" autocomplete="new-password" minlength="12" required;
                label for="password2" { "The same again" }
                input id="password2" name="password2" type="password" autocomplete="new-password" minlength="12" required;
                label for="key" { "SSH public key (optional: the contents of ~/.ssh/id_ed25519.pub)" }
                textarea id="key" name="key" {}
                p { button type="submit" { "Save" } }
            }
        },
    )
}

/// The user an invitation is for, while it is valid.
async fn invited(app: &Arc<App>, token: &str, now: Timestamp) -> Result<String, WebError> {
    let token = token.to_string();
    let user = app.blocking(move |db| db.secrets().invite_user(&token, now).map_err(|e| db.store_err(e))).await?;
    user.ok_or_else(|| WebError::BadRequest("This invitation link is not valid, or has expired.".into()))
}

pub async fn invite_form(State(app): State<Arc<App>>, Path(token): Path<String>) -> Result<Response, WebError> {
    let user = invited(&app, &token, gatehouse::time::now()).await?;
    Ok(invite_page(&user, None).into_response())
}

#[derive(Deserialize)]
pub struct InviteForm {
    password: String,
    password2: String,
    #[serde(default)]
    key: String,
}

pub async fn invite_accept(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    peer: Peer,
    jar: CookieJar,
    SameOriginForm(form): SameOriginForm<InviteForm>,
) -> Result<Response, WebError> {
    let now = gatehouse::time::now();
    let user = invited(&app, &token, now).await?;
    let problem = if form.password != form.password2 {
        Some("The two passwords differ.")
    } else if form.password.chars().count() < 12 || form.password.len() > 1024 {
        Some("The password must be 12 to 1024 characters long.")
    } else {
        None
    };
    if let Some(p) = problem {
        return Ok((StatusCode::BAD_REQUEST, invite_page(&user, Some(p))).into_response());
    }
    let (u, password) = (user.clone(), form.password);
    app.blocking(move |db| {
        let secrets = db.secrets();
        // The invitation is used up only once the form is right.
        match secrets.take_invite(&token, now) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(WebError::BadRequest("This invitation link was just used.".into())),
            Err(e) => return Err(db.store_err(e)),
        }
        secrets
            .set_password(&u, &password, now)
            .and_then(|_| secrets.end_sessions_of(&u))
            .map_err(|_| WebError::Unavailable)
    })
    .await?;
    app.log(Level::Info, &[("action", "user.password"), ("user", &user), ("source", &peer.shown()), ("via", "invite")]);
    let mut notice = "welcome";
    if !form.key.trim().is_empty() {
        let signed_in = SignedIn { user: user.clone(), csrf: String::new(), via: "web" };
        notice = match add_key(&app, &signed_in, &peer, &form.key, None, None).await {
            Ok(_) => "added",
            Err(_) => "key-refused",
        };
    }
    let jar = start_session(&app, jar, &user).await?;
    Ok((jar, Redirect::to(&format!("/keys?notice={notice}"))).into_response())
}

#[derive(Deserialize)]
pub struct Notice {
    notice: Option<String>,
}

fn notice_text(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "added" => Some("Key added. It works on the next SSH login."),
        "removed" => Some("Key removed. It no longer logs in."),
        "welcome" => Some("Password saved. Add your SSH public key below."),
        "key-refused" => Some("Password saved, but the key was refused: add it again below to see why."),
        _ => None,
    }
}

async fn keys_page(
    app: &Arc<App>,
    signed_in: &SignedIn,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<Markup, WebError> {
    let name = signed_in.user.clone();
    let (user, keys, used) = app
        .blocking(move |db| {
            let store = db.store();
            let user = store.user(&name).map_err(|e| db.store_err(e))?;
            let keys = store.keys(&name).map_err(|e| db.store_err(e))?;
            drop(store);
            Ok((user, keys, gatehouse::admin::key_use(&db.config, &name)))
        })
        .await?;
    let now = gatehouse::time::now();
    let scopes: Vec<Scope> = Scope::ALL.into_iter().filter(|s| user.policy.includes(*s)).collect();
    Ok(layout(
        "Your keys",
        Some(signed_in),
        html! {
            @if let Some(n) = notice { p.notice { (n) } }
            @if let Some(e) = error { p.error { (e) } }
            h2 { "Your SSH keys" }
            @if keys.is_empty() { p { "No keys yet." } } @else {
                table {
                    thead { tr { th { "Type" } th { "Fingerprint" } th { "Comment" } th { "Scope" } th { "Added" } th { "Expires" } th { "Last used" } th {} } }
                    tbody {
                        @for k in &keys { (key_row(k, now, used.as_ref().map(|u| u.get(&k.fingerprint)))) }
                    }
                }
            }
            h2 { "Add a key" }
            form method="post" action="/keys" {
                input type="hidden" name="csrf" value=(signed_in.csrf);
                label for="key" { "Public key (one line, e.g. the contents of ~/.ssh/id_ed25519.pub)" }
                textarea id="key" name="key" required {}
                label for="scope" { "Allowed use" }
                select id="scope" name="scope" {
                    @for s in &scopes { option value=(s.as_str()) selected[*s == user.policy] { (scope_label(*s)) } }
                }
                label for="expires" { "Expires (optional)" }
                input id="expires" name="expires" type="date";
                p { button type="submit" { "Add key" } }
            }
        },
    ))
}

fn scope_label(s: Scope) -> &'static str {
    match s {
        Scope::Shell => "shell: log in, run commands, git, sftp, rsync",
        Scope::Files => "files: sftp and rsync in your data folder",
        Scope::Git => "git: clone and push",
        Scope::GitRead => "git-read: clone only",
    }
}

/// `used`: `None` when the service may not read the login state.
fn key_row(k: &Key, now: Timestamp, used: Option<Option<&gatehouse::store::state::KeyUse>>) -> Markup {
    let last_used = match used {
        Some(Some(u)) => u.last_used.to_string(),
        Some(None) => "never".to_string(),
        None => "unknown".to_string(),
    };
    let expires = match k.expires {
        Some(t) if t <= now => format!("expired {t}"),
        Some(t) => t.to_string(),
        None => "never".to_string(),
    };
    html! {
        tr {
            td { (k.algorithm) " " (k.bits) }
            td { code { (k.fingerprint) } }
            td { (k.comment) }
            td { (k.scope.as_str()) }
            td { (k.created) }
            td { (expires) }
            td { (last_used) }
            td { a href={ "/keys/remove?fp=" (urlencode(&k.fingerprint)) } { "Remove" } }
        }
    }
}

/// Percent-encodes a fingerprint for a query string (`+`, `/` and `:` are special there).
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn keys(
    State(app): State<Arc<App>>,
    signed_in: SignedIn,
    Query(q): Query<Notice>,
) -> Result<Markup, WebError> {
    keys_page(&app, &signed_in, notice_text(q.notice.as_deref()), None).await
}

#[derive(Deserialize)]
pub struct AddKeyForm {
    #[serde(default)]
    csrf: String,
    key: String,
    scope: Option<String>,
    expires: Option<String>,
}

impl ChangeForm for AddKeyForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Adds a key of the signed-in user's (the invitation page adds one too); its fingerprint.
async fn add_key(
    app: &Arc<App>,
    signed_in: &SignedIn,
    peer: &Peer,
    text: &str,
    scope: Option<Scope>,
    expires: Option<String>,
) -> Result<String, WebError> {
    let (user, actor, text) = (signed_in.user.clone(), signed_in.actor(peer), text.trim().to_string());
    app.blocking(move |db| {
        directory_keys_guard(db, &user)?;
        let options = KeyOptions { scope, expires, from: None, comment: None };
        db.with_admin(actor, |admin| admin.key_add_from(&user, &text, &options, "web"))
    })
    .await
}

pub async fn key_add(State(app): State<Arc<App>>, change: Change<AddKeyForm>) -> Result<Response, WebError> {
    let Change { signed_in, peer, form } = change;
    let scope = match form.scope.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => s.parse::<Scope>().map(Some).map_err(WebError::BadRequest),
        None => Ok(None),
    };
    let added = match scope {
        Ok(scope) => {
            let expires = form.expires.filter(|e| !e.is_empty());
            add_key(&app, &signed_in, &peer, &form.key, scope, expires).await
        }
        Err(e) => Err(e),
    };
    match added {
        Ok(_) => Ok(Redirect::to("/keys?notice=added").into_response()),
        Err(e @ (WebError::BadRequest(_) | WebError::Conflict(_))) => {
            let message = format!("Key not added: {}", e.message());
            let page = keys_page(&app, &signed_in, None, Some(&message)).await?;
            Ok((e.status(), page).into_response())
        }
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
pub struct RemoveQuery {
    fp: String,
}

pub async fn key_remove_confirm(
    State(app): State<Arc<App>>,
    signed_in: SignedIn,
    Query(q): Query<RemoveQuery>,
) -> Result<Markup, WebError> {
    let user = signed_in.user.clone();
    let keys = app.blocking(move |db| db.store().keys(&user).map_err(|e| db.store_err(e))).await?;
    let k = keys.into_iter().find(|k| k.fingerprint == q.fp).ok_or(WebError::NotFound)?;
    Ok(layout(
        "Remove key",
        Some(&signed_in),
        html! {
            h2 { "Remove this key?" }
            p { code { (k.fingerprint) } " " (k.algorithm) " " (k.comment) }
            p { "It will no longer log in, from the next SSH login on." }
            form method="post" action="/keys/remove" {
                input type="hidden" name="csrf" value=(signed_in.csrf);
                input type="hidden" name="fp" value=(k.fingerprint);
                button type="submit" id="confirm-remove" { "Remove key" }
                " " a href="/keys" { "Cancel" }
            }
        },
    ))
}

#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    fp: String,
}

impl ChangeForm for RemoveForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn key_remove(State(app): State<Arc<App>>, change: Change<RemoveForm>) -> Result<Response, WebError> {
    let actor = change.actor();
    let (user, fingerprint) = (change.signed_in.user, change.form.fp);
    app.blocking(move |db| db.with_admin(actor, |admin| admin.key_remove(&user, &fingerprint))).await?;
    Ok(Redirect::to("/keys?notice=removed").into_response())
}

/// `/<user>.keys`: the user's usable keys, one per line, like GitHub's.
pub async fn public_keys(State(app): State<Arc<App>>, Path(file): Path<String>) -> Result<Response, WebError> {
    let name = file.strip_suffix(".keys").ok_or(WebError::NotFound)?.to_string();
    if !app.config.web.public_keys || !app.config.valid_user_name(&name) {
        return Err(WebError::NotFound);
    }
    let keys = app
        .blocking(move |db| {
            let store = db.store();
            let user = store.user(&name).map_err(|e| db.store_err(e))?;
            if user.state != UserState::Enabled {
                return Err(WebError::NotFound);
            }
            store.keys(&name).map_err(|e| db.store_err(e))
        })
        .await?;
    let now = gatehouse::time::now();
    let body: String = keys
        .iter()
        .filter(|k| k.expires.is_none_or(|t| t > now))
        .map(|k| format!("{} {}\n", k.algorithm, k.blob))
        .collect();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}
