//! The `/_emulator/*` control endpoints that scripts driving `ingestd
//! emulator` use (listed in the parent module's doc). They only read and set
//! the shared state; serving and routing live in `serve`. Imports nothing from
//! the product.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::catalogue::{self as cat, Problem};
use super::faults::{Fault, FaultState, RandomFaults};
use super::store::lock;
use super::{App, Stats, VideoReport};

pub(crate) async fn control_videos(State(app): State<Arc<App>>) -> Json<Vec<VideoReport>> {
    Json(app.store.reports())
}

pub(crate) async fn control_stats(State(app): State<Arc<App>>) -> Json<Stats> {
    Json(app.stats())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsRequest {
    #[serde(default)]
    clear: bool,
    #[serde(default)]
    script: Vec<Option<Fault>>,
    random: Option<RandomFaults>,
}

pub(crate) async fn control_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let request: FaultsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return Problem::new(cat::INVALID_PAYLOAD)
                .detail(e.to_string())
                .into_response()
        }
    };
    let mut faults = lock(&app.faults);
    if request.clear {
        *faults = FaultState::default();
    }
    faults.script.extend(request.script);
    if let Some(random) = request.random {
        faults.set_random(random);
    }
    let queued = faults.script.len();
    drop(faults);
    Json(serde_json::json!({ "queued": queued })).into_response()
}

pub(crate) async fn control_tokens(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<String>>(&body) {
        Ok(tokens) => {
            app.tokens.set_presets(tokens);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => Problem::new(cat::INVALID_PAYLOAD)
            .detail(e.to_string())
            .into_response(),
    }
}
