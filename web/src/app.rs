//! Shared state, connection pools and the router.

use crate::limits::RateLimit;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::{header, request::Parts, HeaderValue};
use axum::routing::{get, post};
use axum::Router;
use gatehouse::config::Config;
use gatehouse::log::{Level, Logger};
use gatehouse::secrets::Secrets;
use gatehouse::store::sqlite::SqliteStore;
use gatehouse::store::StoreError;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A few SQLite connections shared by the request handlers: SQLite serialises writers
/// itself, and readers never wait for them (WAL).
pub struct Pool<T> {
    items: Vec<Mutex<T>>,
    next: AtomicUsize,
}

impl<T> Pool<T> {
    fn new(items: Vec<T>) -> Pool<T> {
        Pool { items: items.into_iter().map(Mutex::new).collect(), next: AtomicUsize::new(0) }
    }

    /// A free connection if there is one, else the next in turn.
    pub fn get(&self) -> MutexGuard<'_, T> {
        for item in &self.items {
            if let Ok(guard) = item.try_lock() {
                return guard;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.items.len();
        self.items[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct App {
    pub config: Config,
    pub stores: Pool<SqliteStore>,
    pub secrets: Pool<Secrets>,
    pub log: Mutex<Logger>,
    pub signin_limit: RateLimit,
    pub change_limit: RateLimit,
    /// The shared secret a trusted reverse proxy sends, when proxy sign-in is on.
    pub proxy_secret: Option<String>,
}

const CONNECTIONS: usize = 4;

impl App {
    pub fn open(config: Config) -> Result<App, String> {
        let mut stores = Vec::new();
        let mut secrets = Vec::new();
        for _ in 0..CONNECTIONS {
            stores
                .push(SqliteStore::open_writer(&config.store_path, config.busy_timeout_ms).map_err(|e| e.to_string())?);
            secrets.push(Secrets::open(&config.web.secrets, config.busy_timeout_ms, false).map_err(|e| e.to_string())?);
        }
        let proxy_secret = match &config.web.proxy_secret_file {
            Some(path) => {
                gatehouse::trust::check_owned_path(path, &[nix_euid()])
                    .map_err(|e| format!("web.proxy_secret_file: {e}"))?;
                use std::os::unix::fs::MetadataExt;
                let mode = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.mode();
                if mode & 0o077 != 0 {
                    return Err(format!(
                        "{}: the proxy secret must be readable by its owner alone (mode 0600)",
                        path.display()
                    ));
                }
                let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let secret = text.trim().to_string();
                if secret.len() < 16 {
                    return Err(format!("{}: the proxy secret must be at least 16 characters", path.display()));
                }
                Some(secret)
            }
            None => None,
        };
        let log = Mutex::new(Logger::open("gatehoused", &config));
        Ok(App {
            signin_limit: RateLimit::new(config.web.signin_per_minute),
            change_limit: RateLimit::new(config.web.changes_per_minute),
            config,
            stores: Pool::new(stores),
            secrets: Pool::new(secrets),
            log,
            proxy_secret,
        })
    }

    pub fn log(&self, level: Level, pairs: &[(&str, &str)]) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).log(level, pairs);
    }

    /// Runs a store change as `actor` (recorded in the audit trail with the change).
    pub fn with_admin<T>(
        &self,
        actor: String,
        f: impl FnOnce(&mut gatehouse::admin::Admin<'_>) -> Result<T, gatehouse::admin::AdminError>,
    ) -> Result<T, crate::error::WebError> {
        let mut store = self.stores.get();
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let actor = gatehouse::store::Actor { name: actor, now: gatehouse::time::now() };
        let mut admin = gatehouse::admin::Admin { config: &self.config, store: &mut *store, actor, log: &mut log };
        f(&mut admin).map_err(Into::into)
    }

    pub fn store_err(&self, e: StoreError) -> crate::error::WebError {
        if matches!(
            e,
            StoreError::Busy { .. }
                | StoreError::Unavailable { .. }
                | StoreError::IndexRace { .. }
                | StoreError::Corrupt { .. }
        ) {
            self.log(Level::Error, &[("error", &e.to_string())]);
        }
        e.into()
    }
}

fn nix_euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The client's address: the TCP peer (None on a unix socket).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Peer, Self::Rejection> {
        // IPv4 clients of a dual-stack listener arrive as ::ffff:a.b.c.d; compare as IPv4.
        Ok(Peer(parts.extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_canonical())))
    }
}

impl Peer {
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
    pub fn client(&self, trusted_proxies: &[IpAddr], headers: &axum::http::HeaderMap) -> Peer {
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

/// Headers every response carries: no framing, no inline script or style, no sniffing,
/// no referrer, nothing cached.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let mut response = next.run(req).await;
    set_security_headers(response.headers_mut());
    response
}

/// The headers of [`security_headers`], for answers made outside the router too.
pub(crate) fn set_security_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not no-referrer: with it, browsers send `Origin: null` on same-origin form posts,
    // which the cross-site check must refuse.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
}

pub fn router(app: Arc<App>) -> Router {
    let max_body = app.config.web.max_body;
    Router::new()
        .route("/", get(crate::pages::home))
        .route("/static/style.css", get(crate::pages::style))
        .route("/signin", get(crate::pages::signin_form).post(crate::pages::signin))
        .route("/signout", post(crate::pages::signout))
        .route("/invite/{token}", get(crate::pages::invite_form).post(crate::pages::invite_accept))
        .route("/keys", get(crate::pages::keys).post(crate::pages::key_add))
        .route("/keys/remove", get(crate::pages::key_remove_confirm).post(crate::pages::key_remove))
        .route("/{file}", get(crate::pages::public_keys))
        .nest("/api/v1", crate::api::routes())
        .layer(axum::middleware::from_fn(security_headers))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}
