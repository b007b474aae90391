//! The router: every page and API route in one place, and the layers around them (security
//! headers, the body size limit).

use crate::error::{ApiError, WebError};
use crate::handlers::{api, health, pages};
use crate::state::App;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::routing::{delete, get, post};
use axum::Router;
use std::sync::Arc;

pub fn router(app: Arc<App>) -> Router {
    let max_body = app.config.web.max_body;
    Router::new()
        .route("/", get(pages::home))
        .route("/static/style.css", get(pages::style))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/signin", get(pages::signin_form).post(pages::signin))
        .route("/signout", post(pages::signout))
        .route("/invite/{token}", get(pages::invite_form).post(pages::invite_accept))
        .route("/keys", get(pages::keys).post(pages::key_add))
        .route("/keys/remove", get(pages::key_remove_confirm).post(pages::key_remove))
        .route("/{file}", get(pages::public_keys))
        .nest("/api/v1", api_routes())
        .layer(axum::middleware::from_fn(security_headers))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}

/// The JSON API, under `/api/v1`; `web/openapi.json` documents each route (a test compares
/// the two).
pub fn api_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/openapi.json", get(api::openapi))
        .route("/users", get(api::list_users).post(api::create_user))
        .route("/users/{name}", get(api::show_user).patch(api::update_user).delete(api::remove_user))
        .route("/users/{name}/keys", get(api::list_keys).post(api::add_key))
        .route("/users/{name}/keys/{fingerprint}", delete(api::remove_key))
        .route("/grants", get(api::list_grants).post(api::add_grant).delete(api::remove_grant))
        .route("/audit", get(api::audit))
        .fallback(|| async { ApiError(WebError::NotFound) })
}

/// Headers every response carries: no framing, no inline script or style, no sniffing,
/// no referrer, nothing cached.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let mut response = next.run(req).await;
    set_security_headers(response.headers_mut());
    response
}

/// The headers of [`security_headers`], for answers made outside the router too.
pub(crate) fn set_security_headers(h: &mut HeaderMap) {
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
