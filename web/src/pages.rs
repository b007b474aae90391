//! The browser side: server-rendered pages that work without JavaScript. maud escapes
//! every value interpolated into them.

use crate::app::{App, Peer};
use crate::auth::{check_csrf, same_origin, session_cookie, PasswordCheck, SignInCheck, SignedIn, SESSION_COOKIE};
use crate::error::WebError;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use axum_extra::extract::cookie::{Cookie, CookieJar};
use gatehouse::admin::KeyOptions;
use gatehouse::log::Level;
use gatehouse::policy::{Scope, UserState};
use gatehouse::store::{AdminStore, Key};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use std::sync::Arc;

fn layout(title: &str, user: Option<&SignedIn>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Gatehouse" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header {
                    h1 { "Gatehouse" }
                    @if let Some(u) = user {
                        form.inline method="post" action="/signout" {
                            "Signed in as " strong { (u.user) } " "
                            input type="hidden" name="csrf" value=(u.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn error_page(e: &WebError) -> Response {
    let page = layout("Error", None, html! { p.error { (e.message()) } p { a href="/keys" { "Back to your keys" } } });
    (e.status(), page).into_response()
}

fn page_result(result: Result<Response, WebError>) -> Response {
    result.unwrap_or_else(|e| error_page(&e))
}

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css"), (header::CACHE_CONTROL, "max-age=3600")], include_str!("../static/style.css"))
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

fn start_session(app: &App, jar: CookieJar, user: &str) -> Result<CookieJar, WebError> {
    let secrets = app.secrets.get();
    // Never carry a session id over a sign-in: a planted one dies here.
    if let Some(old) = jar.get(SESSION_COOKIE) {
        secrets.end_session(old.value()).map_err(|e| app.store_err(e))?;
    }
    let (id, _csrf) = secrets.create_session(user, gatehouse::time::now()).map_err(|e| app.store_err(e))?;
    Ok(jar.add(session_cookie(app, id)))
}

pub async fn signin(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<SigninForm>,
) -> Response {
    if let Err(e) = same_origin(&app, &headers) {
        return error_page(&e);
    }
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
        return error_page(&WebError::TooMany);
    }
    let checking = app.clone();
    let (user, password) = (form.user.clone(), form.password);
    // The password (argon2, or a bind to the directory) and the store: off the async workers.
    let enabled = tokio::task::spawn_blocking(move || {
        user_ok
            && SignInCheck.check(&checking, &user, &password).unwrap_or(false)
            && crate::auth::user_enabled(&checking, &user)
    })
    .await
    .unwrap_or(false);
    if !enabled {
        app.log(
            Level::Notice,
            &[("action", "signin"), ("user", &form.user), ("source", &peer.shown()), ("verdict", "refuse")],
        );
        return (StatusCode::UNAUTHORIZED, signin_page(Some("Wrong user name or password."))).into_response();
    }
    app.log(
        Level::Info,
        &[("action", "signin"), ("user", &form.user), ("source", &peer.shown()), ("verdict", "accept")],
    );
    match start_session(&app, jar, &form.user) {
        Ok(jar) => (jar, Redirect::to("/keys")).into_response(),
        Err(e) => error_page(&e),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    // Missing reads as empty, so it fails the CSRF check (403) rather than the form parser.
    #[serde(default)]
    csrf: String,
}

pub async fn signout(
    State(app): State<Arc<App>>,
    signed_in: SignedIn,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> Response {
    page_result((|| {
        same_origin(&app, &headers)?;
        check_csrf(&signed_in, &form.csrf)?;
        if let Some(id) = jar.get(SESSION_COOKIE) {
            app.secrets.get().end_session(id.value()).map_err(|e| app.store_err(e))?;
        }
        let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
        Ok((jar, Redirect::to("/signin")).into_response())
    })())
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

pub async fn invite_form(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    match app.secrets.get().invite_user(&token, gatehouse::time::now()) {
        Ok(Some(user)) => invite_page(&user, None).into_response(),
        Ok(None) => error_page(&WebError::BadRequest("This invitation link is not valid, or has expired.".into())),
        Err(e) => error_page(&app.store_err(e)),
    }
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
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<InviteForm>,
) -> Response {
    if let Err(e) = same_origin(&app, &headers) {
        return error_page(&e);
    }
    let now = gatehouse::time::now();
    let user = match app.secrets.get().invite_user(&token, now) {
        Ok(Some(user)) => user,
        Ok(None) => {
            return error_page(&WebError::BadRequest("This invitation link is not valid, or has expired.".into()))
        }
        Err(e) => return error_page(&app.store_err(e)),
    };
    let problem = if form.password != form.password2 {
        Some("The two passwords differ.")
    } else if form.password.chars().count() < 12 || form.password.len() > 1024 {
        Some("The password must be 12 to 1024 characters long.")
    } else {
        None
    };
    if let Some(p) = problem {
        return (StatusCode::BAD_REQUEST, invite_page(&user, Some(p))).into_response();
    }
    // The invitation is used up only once the form is right.
    match app.secrets.get().take_invite(&token, now) {
        Ok(Some(_)) => {}
        Ok(None) => return error_page(&WebError::BadRequest("This invitation link was just used.".into())),
        Err(e) => return error_page(&app.store_err(e)),
    }
    let setter = app.clone();
    let (u, pw) = (user.clone(), form.password);
    let set = tokio::task::spawn_blocking(move || {
        let secrets = setter.secrets.get();
        secrets.set_password(&u, &pw, now).and_then(|_| secrets.end_sessions_of(&u))
    })
    .await;
    if !matches!(set, Ok(Ok(()))) {
        return error_page(&WebError::Unavailable);
    }
    app.log(Level::Info, &[("action", "user.password"), ("user", &user), ("source", &peer.shown()), ("via", "invite")]);
    let mut notice = "welcome";
    if !form.key.trim().is_empty() {
        let signed_in = SignedIn { user: user.clone(), csrf: String::new(), via: "web" };
        notice = match add_key(&app, &signed_in, &peer, &form.key, None, None) {
            Ok(_) => "added",
            Err(_) => "key-refused",
        };
    }
    match start_session(&app, jar, &user) {
        Ok(jar) => (jar, Redirect::to(&format!("/keys?notice={notice}"))).into_response(),
        Err(e) => error_page(&e),
    }
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

fn keys_page(app: &App, signed_in: &SignedIn, notice: Option<&str>, error: Option<&str>) -> Result<Markup, WebError> {
    let store = app.stores.get();
    let user = store.user(&signed_in.user).map_err(|e| app.store_err(e))?;
    let keys = store.keys(&signed_in.user).map_err(|e| app.store_err(e))?;
    drop(store);
    let now = gatehouse::time::now();
    let scopes: Vec<Scope> = Scope::ALL.into_iter().filter(|s| user.policy.includes(*s)).collect();
    let used = gatehouse::admin::key_use(&app.config, &signed_in.user);
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
fn key_row(k: &Key, now: i64, used: Option<Option<&gatehouse::state::KeyUse>>) -> Markup {
    let last_used = match used {
        Some(Some(u)) => gatehouse::time::rfc3339(u.last_used),
        Some(None) => "never".to_string(),
        None => "unknown".to_string(),
    };
    let expires = match k.expires {
        Some(t) if t <= now => format!("expired {}", gatehouse::time::rfc3339(t)),
        Some(t) => gatehouse::time::rfc3339(t),
        None => "never".to_string(),
    };
    html! {
        tr {
            td { (k.algorithm) " " (k.bits) }
            td { code { (k.fingerprint) } }
            td { (k.comment) }
            td { (k.scope.as_str()) }
            td { (gatehouse::time::rfc3339(k.created)) }
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

pub async fn keys(State(app): State<Arc<App>>, signed_in: SignedIn, Query(q): Query<Notice>) -> Response {
    page_result(keys_page(&app, &signed_in, notice_text(q.notice.as_deref()), None).map(IntoResponse::into_response))
}

#[derive(Deserialize)]
pub struct AddKeyForm {
    #[serde(default)]
    csrf: String,
    key: String,
    scope: Option<String>,
    expires: Option<String>,
}

fn add_key(
    app: &App,
    signed_in: &SignedIn,
    peer: &Peer,
    text: &str,
    scope: Option<Scope>,
    expires: Option<String>,
) -> Result<String, WebError> {
    let text = text.trim();
    directory_keys_guard(app, &*app.stores.get(), &signed_in.user)?;
    let options = KeyOptions { scope, expires, from: None, comment: None };
    app.with_admin(signed_in.actor(peer), |admin| admin.key_add_from(&signed_in.user, text, &options, "web"))
}

/// Keys of directory accounts live in the directory, unless `ldap.allow_web_keys`.
pub fn directory_keys_guard(app: &App, store: &dyn AdminStore, user: &str) -> Result<(), WebError> {
    let allowed = app.config.ldap.as_ref().is_none_or(|l| l.allow_web_keys);
    if !allowed && store.user(user).is_ok_and(|u| u.source == "ldap") {
        return Err(WebError::Forbidden("this account's keys are managed in the directory".to_string()));
    }
    Ok(())
}

pub async fn key_add(
    State(app): State<Arc<App>>,
    signed_in: SignedIn,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<AddKeyForm>,
) -> Response {
    let result = (|| -> Result<String, WebError> {
        same_origin(&app, &headers)?;
        check_csrf(&signed_in, &form.csrf)?;
        if !app.change_limit.allow(&format!("change:{}", signed_in.user), gatehouse::time::now()) {
            return Err(WebError::TooMany);
        }
        let scope = match form.scope.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(s.parse::<Scope>().map_err(WebError::BadRequest)?),
            None => None,
        };
        let expires = form.expires.filter(|e| !e.is_empty());
        add_key(&app, &signed_in, &peer, &form.key, scope, expires)
    })();
    match result {
        Ok(_) => Redirect::to("/keys?notice=added").into_response(),
        Err(e @ (WebError::BadRequest(_) | WebError::Conflict(_))) => {
            let message = format!("Key not added: {}", e.message());
            match keys_page(&app, &signed_in, None, Some(&message)) {
                Ok(page) => (e.status(), page).into_response(),
                Err(e) => error_page(&e),
            }
        }
        Err(e) => error_page(&e),
    }
}

#[derive(Deserialize)]
pub struct RemoveQuery {
    fp: String,
}

fn own_key(app: &App, user: &str, fingerprint: &str) -> Result<Key, WebError> {
    let keys = app.stores.get().keys(user).map_err(|e| app.store_err(e))?;
    keys.into_iter().find(|k| k.fingerprint == fingerprint).ok_or(WebError::NotFound)
}

pub async fn key_remove_confirm(
    State(app): State<Arc<App>>,
    signed_in: SignedIn,
    Query(q): Query<RemoveQuery>,
) -> Response {
    page_result(own_key(&app, &signed_in.user, &q.fp).map(|k| {
        layout(
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
        )
        .into_response()
    }))
}

#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    fp: String,
}

pub async fn key_remove(
    State(app): State<Arc<App>>,
    signed_in: SignedIn,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<RemoveForm>,
) -> Response {
    page_result((|| {
        same_origin(&app, &headers)?;
        check_csrf(&signed_in, &form.csrf)?;
        if !app.change_limit.allow(&format!("change:{}", signed_in.user), gatehouse::time::now()) {
            return Err(WebError::TooMany);
        }
        app.with_admin(signed_in.actor(&peer), |admin| admin.key_remove(&signed_in.user, &form.fp))?;
        Ok(Redirect::to("/keys?notice=removed").into_response())
    })())
}

/// `/<user>.keys`: the user's usable keys, one per line, like GitHub's.
pub async fn public_keys(State(app): State<Arc<App>>, Path(file): Path<String>) -> Response {
    page_result((|| {
        let name = file.strip_suffix(".keys").ok_or(WebError::NotFound)?;
        if !app.config.web.public_keys || !app.config.valid_user_name(name) {
            return Err(WebError::NotFound);
        }
        let store = app.stores.get();
        let user = store.user(name).map_err(|e| app.store_err(e))?;
        if user.state != UserState::Enabled {
            return Err(WebError::NotFound);
        }
        let now = gatehouse::time::now();
        let keys = store.keys(name).map_err(|e| app.store_err(e))?;
        let body: String = keys
            .iter()
            .filter(|k| k.expires.is_none_or(|t| t > now))
            .map(|k| format!("{} {}\n", k.algorithm, k.blob))
            .collect();
        Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
    })())
}
