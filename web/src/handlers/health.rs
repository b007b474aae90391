//! `/healthz` (the process answers) and `/readyz` (the key store answers and takes
//! writes), for load balancers and monitoring: no session or token needed, and nothing in
//! the answer but the verdict (the reason goes to the log).

use crate::state::App;
use axum::extract::State;
use axum::http::StatusCode;
use std::sync::Arc;

pub async fn healthz() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok\n")
}

pub async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    let ready = app
        .blocking(|db| {
            let mut store = db.store();
            store.ready().map_err(|e| db.store_err(e))
        })
        .await;
    match ready {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
    }
}
