//! Request extractors: who is asking (the peer, a browser session or a trusted reverse
//! proxy's header, an API bearer token) and the checks a state-changing request passes
//! before its handler runs. Every state-changing form arrives through [`SameOriginForm`]
//! (no session yet: sign-in, invitations) or [`Change`] (signed in), every API key change
//! through [`ApiChange`], so each check is written once.

use crate::error::{ApiError, WebError};
use crate::state::{App, Db};
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{header, request::Parts, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use gatehouse::store::secrets::{same, SessionLimits, TokenScope};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub const SESSION_COOKIE: &str = "gh_session";

/// The client's address: the TCP peer (None on a unix socket).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Peer, Self::Rejection> {
        Ok(Peer::of(parts))
    }
}

impl Peer {
    fn of(parts: &Parts) -> Peer {
        // IPv4 clients of a dual-stack listener arrive as ::ffff:a.b.c.d; compare as IPv4.
        Peer(parts.extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_canonical()))
    }

    pub fn shown(&self) -> String {
        self.0.map(|ip| ip.to_string()).unwrap_or_else(|| "unix".to_string())
    }

    /// Whether the peer is one of `web.trusted_proxies`.
    pub fn is_trusted(&self, trusted_proxies: &[IpAddr]) -> bool {
        self.0.is_some_and(|ip| trusted_proxies.contains(&ip))
    }

    /// The client behind a proxy of `web.trusted_proxies`: the address that proxy appended
    /// last to `X-Forwarded-For` (the earlier ones are the client's to write). From any
    /// other peer, or without a well-formed header, the peer itself.
    pub fn client(&self, trusted_proxies: &[IpAddr], headers: &HeaderMap) -> Peer {
        if !self.is_trusted(trusted_proxies) {
            return *self;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        match forwarded {
            Some(ip) => Peer(Some(ip.to_canonical())),
            None => *self,
        }
    }
}

/// Rejections of page requests: to the sign-in page, an error page, or the body parser's
/// own answer (a form that does not parse, or is too large).
pub enum PageRejection {
    SignIn,
    Error(WebError),
    Form(FormRejection),
}

impl From<WebError> for PageRejection {
    fn from(e: WebError) -> PageRejection {
        PageRejection::Error(e)
    }
}

impl IntoResponse for PageRejection {
    fn into_response(self) -> Response {
        match self {
            PageRejection::SignIn => Redirect::to("/signin").into_response(),
            PageRejection::Error(e) => e.into_response(),
            PageRejection::Form(e) => e.into_response(),
        }
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
        let peer = Peer::of(parts);
        let now = gatehouse::time::now();
        if let Some(user) = proxy_user(app, parts, peer) {
            // The proxy authenticated the person, not their account's state here.
            let checked = user.clone();
            if !app.blocking(move |db| Ok(user_enabled(db, &checked))).await? {
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
        let session = app
            .blocking(move |db| {
                let session = db.secrets().session(&id, now, limits).map_err(|e| db.store_err(e))?;
                Ok(match session {
                    // A disabled or removed user's session ends here.
                    Some(s) if !user_enabled(db, &s.user) => {
                        let _ = db.secrets().end_session(&id);
                        None
                    }
                    other => other,
                })
            })
            .await?;
        let Some(session) = session else {
            return Err(PageRejection::SignIn);
        };
        Ok(SignedIn { user: session.user, csrf: session.csrf, via: "web" })
    }
}

/// Whether `user` is in the store and enabled.
pub fn user_enabled(db: &Db<'_>, user: &str) -> bool {
    let found = gatehouse::store::AdminStore::user(&**db.store(), user);
    matches!(found, Ok(u) if u.state == gatehouse::domain::UserState::Enabled)
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
fn same_origin(app: &App, headers: &HeaderMap) -> Result<(), WebError> {
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

/// A form posted from one of our own pages: parsed, then refused (403) if another site
/// could have sent it. For the forms of visitors without a session (sign-in, invitations).
pub struct SameOriginForm<F>(pub F);

impl<F: DeserializeOwned + Send> FromRequest<Arc<App>> for SameOriginForm<F> {
    type Rejection = PageRejection;
    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, PageRejection> {
        let headers = req.headers().clone();
        let Form(form) = Form::<F>::from_request(req, app).await.map_err(PageRejection::Form)?;
        same_origin(app, &headers)?;
        Ok(SameOriginForm(form))
    }
}

/// A form that changes something for the signed-in user; it carries the session's CSRF
/// token.
pub trait ChangeForm: DeserializeOwned + Send {
    /// Whether it counts against the user's `web.changes_per_minute` (signing out does not).
    const RATE_LIMITED: bool = true;
    fn csrf(&self) -> &str;
}

/// A state-changing form from a signed-in user, checked in this order: the session (else to
/// the sign-in page), the form (else the parser's own 4xx), same origin, the CSRF token,
/// then the user's change rate limit (else an error page).
pub struct Change<F> {
    pub signed_in: SignedIn,
    pub peer: Peer,
    pub form: F,
}

impl<F> Change<F> {
    /// Who is recorded in the audit trail: `web:alice@192.0.2.1`.
    pub fn actor(&self) -> String {
        self.signed_in.actor(&self.peer)
    }
}

impl<F: ChangeForm> FromRequest<Arc<App>> for Change<F> {
    type Rejection = PageRejection;
    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, PageRejection> {
        let (mut parts, body) = req.into_parts();
        let signed_in = SignedIn::from_request_parts(&mut parts, app).await?;
        let peer = Peer::of(&parts);
        let SameOriginForm(form) = SameOriginForm::<F>::from_request(Request::from_parts(parts, body), app).await?;
        if !same(form.csrf(), &signed_in.csrf) {
            return Err(WebError::Forbidden("the form expired; reload the page and try again".to_string()).into());
        }
        if F::RATE_LIMITED && !app.change_limit.allow(&format!("change:{}", signed_in.user), gatehouse::time::now()) {
            return Err(WebError::TooMany.into());
        }
        Ok(Change { signed_in, peer, form })
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
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<ApiCaller, ApiError> {
        let peer = Peer::of(parts);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError(WebError::Unauthorized))?
            .trim()
            .to_string();
        let found = app
            .blocking(move |db| {
                let found = db.secrets().use_token(&token, gatehouse::time::now()).map_err(|e| db.store_err(e))?;
                Ok(found.filter(|(_, scope)| match scope {
                    // A user's own token stops working with their account.
                    TokenScope::User(u) => user_enabled(db, u),
                    TokenScope::Admin => true,
                }))
            })
            .await?;
        let (token_id, scope) = found.ok_or(ApiError(WebError::Unauthorized))?;
        Ok(ApiCaller { token_id, scope, peer })
    }
}

/// A change to the keys of the account `{name}` of the path, by an API caller who may
/// touch that account (else 404, as for no such user), within the token's change rate
/// limit (`web.changes_per_minute`; admin tokens are not limited).
pub struct ApiChange {
    pub caller: ApiCaller,
    /// The account, from the path.
    pub user: String,
}

impl FromRequestParts<Arc<App>> for ApiChange {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<ApiChange, Response> {
        let caller = ApiCaller::from_request_parts(parts, app).await.map_err(IntoResponse::into_response)?;
        let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let user = params.remove("name").ok_or_else(|| ApiError(WebError::NotFound).into_response())?;
        caller.may_touch(&user).map_err(|e| ApiError(e).into_response())?;
        let allowed = app.change_limit.allow(&format!("token:{}", caller.token_id), gatehouse::time::now())
            || caller.scope == TokenScope::Admin;
        if !allowed {
            return Err(ApiError(WebError::TooMany).into_response());
        }
        Ok(ApiChange { caller, user })
    }
}
