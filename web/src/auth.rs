//! Who is asking: a browser session (cookie), a trusted reverse proxy's header, or an API
//! bearer token; and the cross-site checks every state-changing form passes.

use crate::app::{App, Peer};
use crate::error::WebError;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use gatehouse::secrets::{same, SessionLimits, TokenScope};
use std::sync::Arc;

pub const SESSION_COOKIE: &str = "gh_session";

/// Checks a password for sign-in. Local web passwords now; the LDAP bind joins later
/// behind the same interface.
pub trait PasswordCheck {
    fn check(&self, app: &App, user: &str, password: &str) -> Result<bool, WebError>;
}

/// Directory users bind to the directory; everyone else has a local password.
pub struct SignInCheck;

impl PasswordCheck for SignInCheck {
    fn check(&self, app: &App, user: &str, password: &str) -> Result<bool, WebError> {
        let from_directory =
            gatehouse::store::AdminStore::user(&*app.stores.get(), user).map(|u| u.source == "ldap").unwrap_or(false);
        match (&app.config.ldap, from_directory) {
            (Some(ldap), true) => match gatehouse_ldap::password::check(ldap, user, password) {
                Ok(result) => Ok(result.is_ok()),
                Err(e) => {
                    app.log(
                        gatehouse::log::Level::Error,
                        &[("action", "signin"), ("user", user), ("error", &e.to_string())],
                    );
                    Err(WebError::Unavailable)
                }
            },
            _ => LocalPasswords.check(app, user, password),
        }
    }
}

/// Passwords set through an invitation, argon2id hashes in the secrets file.
pub struct LocalPasswords;

impl PasswordCheck for LocalPasswords {
    fn check(&self, app: &App, user: &str, password: &str) -> Result<bool, WebError> {
        app.secrets.get().check_password(user, password).map_err(|e| app.store_err(e))
    }
}

/// A signed-in browser user.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: String,
    pub csrf: String,
    /// How: `web` (own password) or `proxy`.
    pub via: &'static str,
}

impl SignedIn {
    pub fn actor(&self, peer: &Peer) -> String {
        format!("{}:{}@{}", self.via, self.user, peer.shown())
    }
}

/// Rejections of page requests: to the sign-in page, or an error page.
pub enum PageRejection {
    SignIn,
    Error(WebError),
}

impl axum::response::IntoResponse for PageRejection {
    fn into_response(self) -> axum::response::Response {
        match self {
            PageRejection::SignIn => axum::response::Redirect::to("/signin").into_response(),
            PageRejection::Error(e) => crate::pages::error_page(&e),
        }
    }
}

fn proxy_user(app: &App, parts: &Parts, peer: Peer) -> Option<String> {
    let header_name = app.config.web.proxy_user_header.as_deref()?;
    let secret = app.proxy_secret.as_deref()?;
    // Only from the configured proxy addresses, and only with the shared secret.
    let from_proxy = peer.is_trusted(&app.config.web.trusted_proxies);
    let sent = parts.headers.get("x-gatehouse-proxy-secret").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !from_proxy || !same(sent, secret) {
        return None;
    }
    let user = parts.headers.get(header_name)?.to_str().ok()?;
    app.config.valid_user_name(user).then(|| user.to_string())
}

impl FromRequestParts<Arc<App>> for SignedIn {
    type Rejection = PageRejection;
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<SignedIn, PageRejection> {
        let peer = Peer::from_request_parts(parts, app).await.unwrap_or(Peer(None));
        let now = gatehouse::time::now();
        if let Some(user) = proxy_user(app, parts, peer) {
            // The proxy authenticated the person, not their account's state here.
            if !user_enabled(app, &user) {
                return Err(PageRejection::Error(WebError::Forbidden("this account is disabled".to_string())));
            }
            // The CSRF token is bound to the user and the proxy secret, so a cross-site
            // form cannot forge it.
            let csrf = proxy_csrf(app, &user);
            return Ok(SignedIn { user, csrf, via: "proxy" });
        }
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(id) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) else {
            return Err(PageRejection::SignIn);
        };
        let limits = SessionLimits { idle: app.config.web.session_idle, absolute: app.config.web.session_max };
        let session =
            app.secrets.get().session(&id, now, limits).map_err(|e| PageRejection::Error(app.store_err(e)))?;
        let Some(session) = session else {
            return Err(PageRejection::SignIn);
        };
        // A disabled or removed user's session ends here.
        if !user_enabled(app, &session.user) {
            let _ = app.secrets.get().end_session(&id);
            return Err(PageRejection::SignIn);
        }
        Ok(SignedIn { user: session.user, csrf: session.csrf, via: "web" })
    }
}

pub(crate) fn user_enabled(app: &App, user: &str) -> bool {
    let found = gatehouse::store::AdminStore::user(&*app.stores.get(), user);
    matches!(found, Ok(u) if u.state == gatehouse::policy::UserState::Enabled)
}

fn proxy_csrf(app: &App, user: &str) -> String {
    use base64ct::Encoding as _;
    let secret = app.proxy_secret.as_deref().unwrap_or("");
    let digest = sha2_digest(&format!("csrf\0{secret}\0{user}"));
    base64ct::Base64UrlUnpadded::encode_string(&digest)
}

fn sha2_digest(text: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

/// The cookie that carries a new session id.
pub fn session_cookie(app: &App, id: String) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, id))
        .path("/")
        .http_only(true)
        .secure(app.config.web.cookie_secure)
        .same_site(SameSite::Strict)
        .build()
}

/// Refuses a state-changing request that another site could have sent: its `Origin` must
/// be ours and `Sec-Fetch-Site` (when the browser sends it) same-origin.
pub fn same_origin(app: &App, headers: &HeaderMap) -> Result<(), WebError> {
    let ours = app.config.web.public_url.as_str();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if origin != ours && !origin_matches_host(app, origin, headers) {
            return Err(WebError::Forbidden("cross-site request refused".to_string()));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.to_str().unwrap_or(""), "same-origin" | "none") {
            return Err(WebError::Forbidden("cross-site request refused".to_string()));
        }
    }
    Ok(())
}

/// Direct access on the listening address (no proxy): `Origin` equals `http://` + `Host`.
fn origin_matches_host(app: &App, origin: &str, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    // Only our own listening address counts, not whatever Host a request names.
    let ours = match &app.config.web.listen {
        gatehouse::config::Listen::Tcp(addr) => addr.to_string(),
        gatehouse::config::Listen::Unix(_) => return false,
    };
    host == ours && origin.strip_prefix("http://") == Some(host)
}

/// Checks a form's CSRF token against the session's.
pub fn check_csrf(signed_in: &SignedIn, sent: &str) -> Result<(), WebError> {
    if same(sent, &signed_in.csrf) {
        Ok(())
    } else {
        Err(WebError::Forbidden("the form expired; reload the page and try again".to_string()))
    }
}

/// An API caller, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct ApiCaller {
    pub token_id: i64,
    pub scope: TokenScope,
    pub peer: Peer,
}

impl ApiCaller {
    pub fn actor(&self) -> String {
        format!("api:token{}@{}", self.token_id, self.peer.shown())
    }

    /// Whether this caller may act on `user`'s account. Callers who may not get the same
    /// answer as for a user that does not exist.
    pub fn may_touch(&self, user: &str) -> Result<(), WebError> {
        match &self.scope {
            TokenScope::Admin => Ok(()),
            TokenScope::User(u) if u == user => Ok(()),
            TokenScope::User(_) => Err(WebError::NotFound),
        }
    }

    pub fn require_admin(&self) -> Result<(), WebError> {
        match self.scope {
            TokenScope::Admin => Ok(()),
            TokenScope::User(_) => Err(WebError::Forbidden("this token is limited to one user's keys".to_string())),
        }
    }
}

impl FromRequestParts<Arc<App>> for ApiCaller {
    type Rejection = crate::error::ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<ApiCaller, Self::Rejection> {
        let peer = Peer::from_request_parts(parts, app).await.unwrap_or(Peer(None));
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(crate::error::ApiError(WebError::Unauthorized))?;
        let found = app.secrets.get().use_token(token.trim(), gatehouse::time::now()).map_err(|e| app.store_err(e))?;
        let (token_id, scope) = found.ok_or(crate::error::ApiError(WebError::Unauthorized))?;
        // A user's own token stops working with their account.
        if let TokenScope::User(u) = &scope {
            if !user_enabled(app, u) {
                return Err(crate::error::ApiError(WebError::Unauthorized));
            }
        }
        Ok(ApiCaller { token_id, scope, peer })
    }
}
