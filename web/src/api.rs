//! The JSON API under `/api/v1/`, for the platform's own web app. Bearer tokens only;
//! request bodies must be `application/json` and may not carry unknown fields.

use crate::app::App;
use crate::auth::ApiCaller;
use crate::error::{ApiError, WebError};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gatehouse::admin::{Admin, KeyOptions};
use gatehouse::policy::{Scope, UserState};
use gatehouse::repo::Access;
use gatehouse::store::{AdminStore, AuditQuery, Key, User};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const OPENAPI: &str = include_str!("../openapi.json");

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{name}", get(show_user).patch(update_user).delete(remove_user))
        .route("/users/{name}/keys", get(list_keys).post(add_key))
        .route("/users/{name}/keys/{fingerprint}", axum::routing::delete(remove_key))
        .route("/grants", get(list_grants).post(add_grant).delete(remove_grant))
        .route("/audit", get(audit))
        .fallback(|| async { ApiError(WebError::NotFound) })
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// A JSON body, with a rejection in our error shape.
fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload.map(|Json(t)| t).map_err(|e| match e {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError(WebError::BadRequest("the body must be application/json".to_string()))
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError(WebError::TooLarge),
        other => ApiError(WebError::BadRequest(format!("bad JSON body: {}", other.body_text()))),
    })
}

/// Query parameters, with a rejection in our error shape.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError(WebError::BadRequest(format!("bad query: {}", e.body_text()))))
}

fn with_admin<T>(
    app: &App,
    caller: &ApiCaller,
    f: impl FnOnce(&mut Admin<'_>) -> Result<T, gatehouse::admin::AdminError>,
) -> Result<T, ApiError> {
    app.with_admin(caller.actor(), f).map_err(ApiError)
}

fn rate_limited(app: &App, caller: &ApiCaller) -> Result<(), ApiError> {
    if app.change_limit.allow(&format!("token:{}", caller.token_id), gatehouse::time::now())
        || caller.scope == gatehouse::secrets::TokenScope::Admin
    {
        Ok(())
    } else {
        Err(ApiError(WebError::TooMany))
    }
}

#[derive(Serialize)]
struct UserJson {
    #[serde(flatten)]
    user: User,
    created_at: String,
}

fn user_json(user: User) -> UserJson {
    let created_at = gatehouse::time::rfc3339(user.created);
    UserJson { user, created_at }
}

#[derive(Serialize)]
struct KeyJson {
    #[serde(flatten)]
    key: Key,
    created_at: String,
    expires_at: Option<String>,
}

fn key_json(key: Key) -> KeyJson {
    let created_at = gatehouse::time::rfc3339(key.created);
    let expires_at = key.expires.map(gatehouse::time::rfc3339);
    KeyJson { key, created_at, expires_at }
}

async fn list_users(State(app): State<Arc<App>>, caller: ApiCaller) -> Result<Json<Vec<UserJson>>, ApiError> {
    caller.require_admin()?;
    let users = app.stores.get().users().map_err(|e| app.store_err(e))?;
    Ok(Json(users.into_iter().map(user_json).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    policy: Option<Scope>,
    #[serde(default)]
    port_forwarding: bool,
}

async fn create_user(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    payload: Result<Json<NewUser>, JsonRejection>,
) -> Result<(StatusCode, Json<UserJson>), ApiError> {
    caller.require_admin()?;
    let new = body(payload)?;
    with_admin(&app, &caller, |a| a.user_add(&new.name, new.policy, new.port_forwarding, false, "api"))?;
    let user = app.stores.get().user(&new.name).map_err(|e| app.store_err(e))?;
    Ok((StatusCode::CREATED, Json(user_json(user))))
}

#[derive(Serialize)]
struct UserWithKeys {
    #[serde(flatten)]
    user: UserJson,
    keys: Vec<KeyJson>,
}

async fn show_user(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<Json<UserWithKeys>, ApiError> {
    caller.may_touch(&name)?;
    let store = app.stores.get();
    let user = store.user(&name).map_err(|e| app.store_err(e))?;
    let keys = store.keys(&name).map_err(|e| app.store_err(e))?;
    Ok(Json(UserWithKeys { user: user_json(user), keys: keys.into_iter().map(key_json).collect() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    state: Option<UserState>,
    policy: Option<Scope>,
    port_forwarding: Option<bool>,
}

async fn update_user(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    Path(name): Path<String>,
    payload: Result<Json<UserChange>, JsonRejection>,
) -> Result<Json<UserJson>, ApiError> {
    caller.require_admin()?;
    let change = body(payload)?;
    if change.state.is_none() && change.policy.is_none() && change.port_forwarding.is_none() {
        return Err(ApiError(WebError::BadRequest("nothing to change".into())));
    }
    with_admin(&app, &caller, |a| {
        if let Some(state) = change.state {
            a.user_set_state(&name, state)?;
        }
        if change.policy.is_some() || change.port_forwarding.is_some() {
            a.user_set(&name, change.policy, change.port_forwarding)?;
        }
        Ok(())
    })?;
    let user = app.stores.get().user(&name).map_err(|e| app.store_err(e))?;
    Ok(Json(user_json(user)))
}

async fn remove_user(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    with_admin(&app, &caller, |a| a.user_remove(&name))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_keys(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<Json<Vec<KeyJson>>, ApiError> {
    caller.may_touch(&name)?;
    let keys = app.stores.get().keys(&name).map_err(|e| app.store_err(e))?;
    Ok(Json(keys.into_iter().map(key_json).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    key: String,
    scope: Option<Scope>,
    expires: Option<String>,
    from: Option<String>,
    comment: Option<String>,
}

#[derive(Serialize)]
struct Added {
    fingerprint: String,
}

async fn add_key(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    Path(name): Path<String>,
    payload: Result<Json<NewKeyBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Added>), ApiError> {
    caller.may_touch(&name)?;
    rate_limited(&app, &caller)?;
    let new = body(payload)?;
    crate::pages::directory_keys_guard(&app, &*app.stores.get(), &name)?;
    let options = KeyOptions { scope: new.scope, expires: new.expires, from: new.from, comment: new.comment };
    let fingerprint = with_admin(&app, &caller, |a| a.key_add_from(&name, &new.key, &options, "api"))?;
    Ok((StatusCode::CREATED, Json(Added { fingerprint })))
}

async fn remove_key(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    Path((name, fingerprint)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.may_touch(&name)?;
    rate_limited(&app, &caller)?;
    with_admin(&app, &caller, |a| a.key_remove(&name, &fingerprint))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_grants(State(app): State<Arc<App>>, caller: ApiCaller) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let grants = app.stores.get().grants().map_err(|e| app.store_err(e))?;
    Ok(Json(grants).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    subject: String,
    pattern: String,
    access: Access,
}

async fn add_grant(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    payload: Result<Json<GrantBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let g = body(payload)?;
    let created = with_admin(&app, &caller, |a| a.grant_add(&g.subject, &g.pattern, g.access))?;
    Ok(if created { StatusCode::CREATED } else { StatusCode::OK })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRef {
    subject: String,
    pattern: String,
}

async fn remove_grant(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    g: Result<Query<GrantRef>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let g = query(g)?;
    with_admin(&app, &caller, |a| a.grant_remove(&g.subject, &g.pattern))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    user: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
}

async fn audit(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    p: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let p = query(p)?;
    let now = gatehouse::time::now();
    let since = match p.since {
        Some(s) => Some(gatehouse::time::parse_since(&s, now).map_err(|e| ApiError(WebError::BadRequest(e)))?),
        None => None,
    };
    let query = AuditQuery { subject: p.user, since, limit: Some(p.limit.unwrap_or(1000).min(10_000)) };
    let events = app.stores.get().audit(&query).map_err(|e| app.store_err(e))?;
    Ok(Json(events).into_response())
}
