//! The JSON API under `/api/v1/`, for the platform's own web app. Bearer tokens only;
//! request bodies must be `application/json` and may not carry unknown fields. The routes
//! are in `crate::routes::api_routes`, and `web/openapi.json` documents each.

use super::directory_keys_guard;
use crate::error::{ApiError, WebError};
use crate::extract::{ApiCaller, ApiChange};
use crate::state::App;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gatehouse::admin::{Admin, AdminError, KeyOptions};
use gatehouse::domain::repo::Access;
use gatehouse::domain::{PolicyChange, Scope, UserState};
use gatehouse::store::{AuditQuery, Key, User};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const OPENAPI: &str = include_str!("../../openapi.json");

pub async fn openapi() -> Response {
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

/// Runs a store change as `caller`, on the blocking pool.
async fn with_admin<T: Send + 'static>(
    app: &Arc<App>,
    caller: &ApiCaller,
    f: impl FnOnce(&mut Admin<'_>) -> Result<T, AdminError> + Send + 'static,
) -> Result<T, ApiError> {
    let actor = caller.actor();
    Ok(app.blocking(move |db| db.with_admin(actor, f)).await?)
}

#[derive(Serialize)]
pub struct UserJson {
    #[serde(flatten)]
    user: User,
    created_at: String,
}

fn user_json(user: User) -> UserJson {
    let created_at = user.created.to_string();
    UserJson { user, created_at }
}

#[derive(Serialize)]
pub struct KeyJson {
    #[serde(flatten)]
    key: Key,
    created_at: String,
    expires_at: Option<String>,
}

fn key_json(key: Key) -> KeyJson {
    let created_at = key.created.to_string();
    let expires_at = key.expires.map(|t| t.to_string());
    KeyJson { key, created_at, expires_at }
}

pub async fn list_users(State(app): State<Arc<App>>, caller: ApiCaller) -> Result<Json<Vec<UserJson>>, ApiError> {
    caller.require_admin()?;
    let users = app.blocking(|db| db.store().users().map_err(|e| db.store_err(e))).await?;
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

pub async fn create_user(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    payload: Result<Json<NewUser>, JsonRejection>,
) -> Result<(StatusCode, Json<UserJson>), ApiError> {
    caller.require_admin()?;
    let new = body(payload)?;
    let actor = caller.actor();
    let user = app
        .blocking(move |db| {
            db.with_admin(actor, |a| a.user_add(&new.name, new.policy, new.port_forwarding, false, "api"))?;
            db.store().user(&new.name).map_err(|e| db.store_err(e))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(user_json(user))))
}

#[derive(Serialize)]
pub struct UserWithKeys {
    #[serde(flatten)]
    user: UserJson,
    keys: Vec<KeyJson>,
}

pub async fn show_user(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<Json<UserWithKeys>, ApiError> {
    caller.may_touch(&name)?;
    let (user, keys) = app
        .blocking(move |db| {
            let store = db.store();
            let user = store.user(&name).map_err(|e| db.store_err(e))?;
            let keys = store.keys(&name).map_err(|e| db.store_err(e))?;
            Ok((user, keys))
        })
        .await?;
    Ok(Json(UserWithKeys { user: user_json(user), keys: keys.into_iter().map(key_json).collect() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    state: Option<UserState>,
    policy: Option<Scope>,
    port_forwarding: Option<bool>,
}

pub async fn update_user(
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
    let actor = caller.actor();
    let user = app
        .blocking(move |db| {
            db.with_admin(actor, |a| {
                if let Some(state) = change.state {
                    a.user_set_state(&name, state)?;
                }
                if change.policy.is_some() || change.port_forwarding.is_some() {
                    a.user_set(&name, PolicyChange { policy: change.policy, port_forwarding: change.port_forwarding })?;
                }
                Ok(())
            })?;
            db.store().user(&name).map_err(|e| db.store_err(e))
        })
        .await?;
    Ok(Json(user_json(user)))
}

pub async fn remove_user(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    with_admin(&app, &caller, move |a| a.user_remove(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_keys(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<Json<Vec<KeyJson>>, ApiError> {
    caller.may_touch(&name)?;
    let keys = app.blocking(move |db| db.store().keys(&name).map_err(|e| db.store_err(e))).await?;
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
pub struct Added {
    fingerprint: String,
}

pub async fn add_key(
    State(app): State<Arc<App>>,
    change: ApiChange,
    payload: Result<Json<NewKeyBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Added>), ApiError> {
    let new = body(payload)?;
    let (name, actor) = (change.user, change.caller.actor());
    let fingerprint = app
        .blocking(move |db| {
            directory_keys_guard(db, &name)?;
            let options = KeyOptions { scope: new.scope, expires: new.expires, from: new.from, comment: new.comment };
            db.with_admin(actor, |a| a.key_add_from(&name, &new.key, &options, "api"))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(Added { fingerprint })))
}

pub async fn remove_key(
    State(app): State<Arc<App>>,
    change: ApiChange,
    Path((_, fingerprint)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let name = change.user.clone();
    with_admin(&app, &change.caller, move |a| a.key_remove(&name, &fingerprint)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_grants(State(app): State<Arc<App>>, caller: ApiCaller) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let grants = app.blocking(|db| db.store().grants().map_err(|e| db.store_err(e))).await?;
    Ok(Json(grants).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    subject: String,
    pattern: String,
    access: Access,
}

pub async fn add_grant(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    payload: Result<Json<GrantBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let g = body(payload)?;
    let created = with_admin(&app, &caller, move |a| a.grant_add(&g.subject, &g.pattern, g.access)).await?;
    Ok(if created { StatusCode::CREATED } else { StatusCode::OK })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRef {
    subject: String,
    pattern: String,
}

pub async fn remove_grant(
    State(app): State<Arc<App>>,
    caller: ApiCaller,
    g: Result<Query<GrantRef>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let g = query(g)?;
    with_admin(&app, &caller, move |a| a.grant_remove(&g.subject, &g.pattern)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    user: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
}

pub async fn audit(
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
    let events = app.blocking(move |db| db.store().audit(&query).map_err(|e| db.store_err(e))).await?;
    Ok(Json(events).into_response())
}
