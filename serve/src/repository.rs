//! The served models: several zoo models in one server, each with its own queue,
//! batcher and metrics, sharing one CPU budget, and the KServe v2 model repository
//! extension that lists, loads and unloads them.
//!
//! A [`Repository`] maps model names to their state: `READY` (loaded: a
//! [`LoadedModel`] answers requests) or `UNAVAILABLE` (known, from the models folder or
//! a file given at start, but not loaded). Every model's [`Batcher`] takes a permit of
//! one shared semaphore before it runs a batch, so however many models are busy, no
//! more batches run at once than the budget allows (see [`CpuBudget`]).
//!
//! Unloading a model refuses new requests at once (they are answered `503`, gRPC
//! `UNAVAILABLE`), answers every request already queued, then drops the model's
//! sessions. Loading looks the name up in the models folder, or reloads the file the
//! model was first loaded from.
//!
//! [`routes`] serves the extension's REST endpoints: `POST /v2/repository/index`,
//! `POST /v2/repository/models/{model_name}/load` and `.../unload`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tpsnet_runtime::registry::Registry;
use tpsnet_runtime::{Classifier, SessionOptions};

use crate::batcher::{Batcher, Workers};
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::kserve::ModelInfo;
use crate::metrics::Metrics;
use crate::routes::Shared;

/// How the CPU is shared between models: each batch runs with `threads` ONNX Runtime
/// intra-op threads, and at most `permits` batches run at once across every model.
/// With `permits × threads` within the cores, several busy models take turns instead
/// of oversubscribing the cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuBudget {
    /// Batches that may run at the same time, across all models (at least 1).
    pub permits: usize,
    /// Intra-op threads of each session (0: ONNX Runtime's default, one per physical
    /// core).
    pub threads: usize,
}

impl CpuBudget {
    /// The budget for `cpu_threads` threads in all: batches of `threads` threads each
    /// (0: ONNX Runtime's default, which uses every core, so only `workers` batches run
    /// at once, as many as one model may run), as many at once as fit.
    pub fn new(cpu_threads: usize, threads: usize, workers: usize) -> CpuBudget {
        let permits = cpu_threads.checked_div(threads).unwrap_or(workers).max(1);
        CpuBudget { permits, threads }
    }
}

/// A model that answers requests: its facts, sessions, batcher and metrics.
#[derive(Debug)]
pub struct LoadedModel {
    /// The model as the protocol describes it.
    pub info: ModelInfo,
    /// Its ONNX Runtime sessions.
    pub classifier: Arc<Classifier>,
    /// Its queue; requests for this model are submitted here.
    pub batcher: Batcher,
    /// Its batching metrics (labelled with its name).
    pub metrics: Arc<Metrics>,
    workers: Mutex<Option<Workers>>,
}

impl LoadedModel {
    /// Refuses new requests, answers those queued and waits for the workers to stop.
    async fn drain(&self) {
        self.batcher.close();
        let workers = lock(&self.workers).take();
        if let Some(workers) = workers {
            workers.join().await;
        }
    }
}

/// A model the repository knows: where it comes from and whether it is loaded.
#[derive(Debug)]
struct Slot {
    /// The manifest it was loaded from (reloaded from here).
    manifest: PathBuf,
    version: String,
    /// Kept across unload and load, so its counters never go backwards.
    metrics: Arc<Metrics>,
    state: SlotState,
}

#[derive(Debug)]
enum SlotState {
    Ready(Arc<LoadedModel>),
    Unavailable(String),
}

/// One model in the answer of `POST /v2/repository/index`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct IndexEntry {
    /// The model's name.
    pub name: String,
    /// Its version (the first 8 hex digits of its sha256), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why it is not ready (empty when it is).
    pub reason: String,
}

/// The served models and the models folder they can be loaded from.
#[derive(Debug)]
pub struct Repository {
    models_dir: Option<PathBuf>,
    options: SessionOptions,
    config: ServerConfig,
    permits: Arc<Semaphore>,
    budget: CpuBudget,
    slots: Mutex<BTreeMap<String, Slot>>,
    /// Loads and unloads happen one at a time.
    changes: tokio::sync::Mutex<()>,
}

impl Repository {
    /// An empty repository. Models are loaded from `models_dir` (if any) with
    /// `options` (its threads are replaced by the budget's, its sessions and batch
    /// size by `config`'s workers and max batch), and batch as `config` says.
    pub fn new(
        models_dir: Option<PathBuf>,
        options: SessionOptions,
        config: &ServerConfig,
        budget: CpuBudget,
    ) -> Repository {
        let mut options = options;
        options.threads = budget.threads;
        options.sessions = config.workers;
        options.batch_size = config.max_batch;
        Repository {
            models_dir,
            options,
            config: config.clone(),
            permits: Arc::new(Semaphore::new(budget.permits)),
            budget,
            slots: Mutex::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// The CPU budget the models share.
    pub fn budget(&self) -> CpuBudget {
        self.budget
    }

    /// The folder `load` looks names up in, if any.
    pub fn models_dir(&self) -> Option<&Path> {
        self.models_dir.as_deref()
    }

    /// Serves `classifier` (opened by the caller) under its manifest's name; starts its
    /// batching workers on the current tokio runtime. Fails if a model of that name is
    /// already loaded.
    pub fn insert(&self, classifier: Arc<Classifier>) -> Result<Arc<LoadedModel>, String> {
        let info = ModelInfo::of(&classifier);
        let mut slots = lock(&self.slots);
        if let Some(Slot {
            state: SlotState::Ready(_),
            ..
        }) = slots.get(&info.name)
        {
            return Err(format!(
                "model `{}` is given twice; each model is served once",
                info.name
            ));
        }
        let metrics = slots.get(&info.name).map_or_else(
            || Arc::new(Metrics::new(&info.name, &info.version, &info.provider)),
            |slot| Arc::clone(&slot.metrics),
        );
        let (batcher, workers) = Batcher::start_with_permits(
            Arc::clone(&classifier),
            Arc::clone(&metrics),
            &self.config,
            Arc::clone(&self.permits),
        );
        let model = Arc::new(LoadedModel {
            info: info.clone(),
            classifier: Arc::clone(&classifier),
            batcher,
            metrics: Arc::clone(&metrics),
            workers: Mutex::new(Some(workers)),
        });
        slots.insert(
            info.name.clone(),
            Slot {
                manifest: classifier.manifest_path().to_path_buf(),
                version: info.version,
                metrics,
                state: SlotState::Ready(Arc::clone(&model)),
            },
        );
        Ok(model)
    }

    /// The loaded model `name` (and `version`, if given). Unknown: `404`; known but
    /// not loaded: `503`.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<LoadedModel>, ApiError> {
        let slots = lock(&self.slots);
        match slots.get(name).map(|s| &s.state) {
            Some(SlotState::Ready(model)) => {
                model.info.check(name, version)?;
                Ok(Arc::clone(model))
            }
            Some(SlotState::Unavailable(reason)) => {
                Err(not_ready(name, reason, self.config.retry_after_s))
            }
            None => Err(ApiError::not_found(format!(
                "unknown model `{name}`; this server serves {} (POST /v2/repository/index lists every model, POST /v2/repository/models/NAME/load loads one)",
                names(&slots)
            ))),
        }
    }

    /// Whether `name` is a model this server knows: loaded now, or loaded before and
    /// unloaded. Only such names label the request metrics; the set grows only by
    /// successful loads, never by what clients send.
    pub fn knows(&self, name: &str) -> bool {
        lock(&self.slots).contains_key(name)
    }

    /// Every loaded model, by name.
    pub fn loaded(&self) -> Vec<Arc<LoadedModel>> {
        lock(&self.slots)
            .values()
            .filter_map(|s| match &s.state {
                SlotState::Ready(m) => Some(Arc::clone(m)),
                SlotState::Unavailable(_) => None,
            })
            .collect()
    }

    /// The metrics of every model ever loaded, by name.
    pub fn metrics(&self) -> Vec<Arc<Metrics>> {
        lock(&self.slots)
            .values()
            .map(|s| Arc::clone(&s.metrics))
            .collect()
    }

    /// Every model loaded or in the models folder, with its state, by name.
    pub fn index(&self) -> Vec<IndexEntry> {
        let mut entries: BTreeMap<String, IndexEntry> = BTreeMap::new();
        if let Some(registry) = self
            .models_dir
            .as_deref()
            .and_then(|d| Registry::scan(d).ok())
        {
            for m in &registry.models {
                entries.insert(
                    m.manifest.name.clone(),
                    IndexEntry {
                        name: m.manifest.name.clone(),
                        version: Some(m.manifest.sha256.chars().take(8).collect()),
                        state: "UNAVAILABLE",
                        reason: "not loaded".to_string(),
                    },
                );
            }
        }
        for (name, slot) in lock(&self.slots).iter() {
            let (state, reason) = match &slot.state {
                SlotState::Ready(_) => ("READY", String::new()),
                SlotState::Unavailable(reason) => ("UNAVAILABLE", reason.clone()),
            };
            entries.insert(
                name.clone(),
                IndexEntry {
                    name: name.clone(),
                    version: Some(slot.version.clone()),
                    state,
                    reason,
                },
            );
        }
        entries.into_values().collect()
    }

    /// Loads `name` (a no-op if it is loaded): the file it was loaded from before, else
    /// the model of that name in the models folder. An unknown name is `404`, naming
    /// the folder.
    pub async fn load(&self, name: &str) -> Result<Arc<LoadedModel>, ApiError> {
        let _one_at_a_time = self.changes.lock().await;
        let known = {
            let slots = lock(&self.slots);
            match slots.get(name) {
                Some(Slot {
                    state: SlotState::Ready(model),
                    ..
                }) => return Ok(Arc::clone(model)),
                Some(slot) => Some(slot.manifest.clone()),
                None => None,
            }
        };
        let manifest = match known {
            Some(path) => path,
            None => self.find(name)?,
        };
        let options = self.options.clone();
        let warm = self.config.warm_up;
        let opened = tokio::task::spawn_blocking(move || {
            let classifier = Classifier::open(&manifest, &options)?;
            if warm {
                classifier.warm_up()?;
            }
            Ok::<_, tpsnet_runtime::Error>(classifier)
        })
        .await
        .map_err(|e| ApiError::internal(format!("loading `{name}` failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("cannot load model `{name}`: {e}")))?;
        self.insert(Arc::new(opened)).map_err(ApiError::bad_request)
    }

    /// The manifest of `name` in the models folder.
    fn find(&self, name: &str) -> Result<PathBuf, ApiError> {
        let Some(dir) = self.models_dir.as_deref() else {
            return Err(ApiError::not_found(format!(
                "unknown model `{name}`: this server has no models folder to load it from (start it with --models-dir DIR)"
            )));
        };
        let registry = Registry::scan(dir).map_err(|e| ApiError::internal(e.to_string()))?;
        match registry.find(name) {
            Ok(entry) => Ok(entry.manifest_path.clone()),
            Err(e) => Err(ApiError::not_found(format!(
                "cannot load `{name}`: {e} (models folder {})",
                dir.display()
            ))),
        }
    }

    /// Unloads `name`: new requests are refused from now on (`503`), those already
    /// queued are answered, then its sessions are dropped. Unknown: `404`; a model not
    /// loaded: a no-op.
    pub async fn unload(&self, name: &str) -> Result<(), ApiError> {
        let _one_at_a_time = self.changes.lock().await;
        let model = {
            let mut slots = lock(&self.slots);
            let listed = names(&slots);
            let Some(slot) = slots.get_mut(name) else {
                return Err(ApiError::not_found(format!(
                    "unknown model `{name}`; the models loaded or unloaded here are {listed}"
                )));
            };
            let unloaded = SlotState::Unavailable("unloaded".to_string());
            match std::mem::replace(&mut slot.state, unloaded) {
                SlotState::Ready(model) => model,
                previous @ SlotState::Unavailable(_) => {
                    slot.state = previous;
                    return Ok(());
                }
            }
        };
        model.drain().await;
        Ok(())
    }

    /// From now on every model's batches run as soon as a worker is free (shutdown).
    pub fn flush(&self) {
        for model in self.loaded() {
            model.batcher.flush();
        }
    }

    /// Every model refuses new requests; their workers answer what is queued.
    pub fn close(&self) {
        for model in self.loaded() {
            model.batcher.close();
        }
    }

    /// Waits until every model's workers have stopped (after [`close`](Self::close)).
    pub async fn join(&self) {
        for model in self.loaded() {
            model.drain().await;
        }
    }
}

fn not_ready(name: &str, reason: &str, retry_after_s: u32) -> ApiError {
    ApiError::unavailable(
        format!(
            "model `{name}` is not loaded ({reason}); load it with POST /v2/repository/models/{name}/load"
        ),
        retry_after_s,
    )
}

fn names(slots: &BTreeMap<String, Slot>) -> String {
    if slots.is_empty() {
        return "no model".to_string();
    }
    slots
        .keys()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A map of names to states, consistent between statements.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The repository extension's routes, merged into the server's router (`routes::router`).
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v2/repository/index", post(index))
        .route("/v2/repository/models/{model_name}/load", post(load))
        .route("/v2/repository/models/{model_name}/unload", post(unload))
}

/// The `ready` filter of a `POST /v2/repository/index` body: none (empty body, `{}`),
/// or `{"ready": true|false}`. Anything else is `400`.
fn ready_filter(body: &[u8]) -> Result<Option<bool>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let bad = |why: String| {
        ApiError::bad_request(format!(
            "bad repository index request: {why}; send nothing, {{}} or {{\"ready\": true}}"
        ))
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON ({e})")))?;
    let Some(object) = value.as_object() else {
        return Err(bad("the body is not a JSON object".into()));
    };
    let mut ready = None;
    for (key, v) in object {
        match (key.as_str(), v) {
            ("ready", serde_json::Value::Bool(b)) => ready = Some(*b),
            ("ready", _) => return Err(bad("`ready` must be true or false".into())),
            (other, _) => return Err(bad(format!("unknown field `{other}`"))),
        }
    }
    Ok(ready)
}

async fn index(State(s): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    let ready = ready_filter(&body)?;
    let entries: Vec<IndexEntry> = s
        .repository
        .index()
        .into_iter()
        .filter(|e| ready.is_none_or(|r| r == (e.state == "READY")))
        .collect();
    Ok(axum::Json(entries).into_response())
}

fn model_name(path: Result<UrlPath<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|UrlPath(name)| name)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

async fn load(
    State(s): State<Arc<Shared>>,
    path: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = model_name(path)?;
    if s.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::unavailable(
            "the server is shutting down; load the model on another replica",
            s.config.retry_after_s,
        ));
    }
    let model = s.repository.load(&name).await?;
    Ok((
        StatusCode::OK,
        axum::Json(
            json!({ "name": model.info.name, "version": model.info.version, "state": "READY" }),
        ),
    )
        .into_response())
}

async fn unload(
    State(s): State<Arc<Shared>>,
    path: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = model_name(path)?;
    s.repository.unload(&name).await?;
    Ok(axum::Json(json!({ "name": name, "state": "UNAVAILABLE" })).into_response())
}

/// Runs [`Classifier::warm_up`] off the async threads; the error is the runtime's message.
pub(crate) async fn warm_up(classifier: Arc<Classifier>) -> Result<(), String> {
    tokio::task::spawn_blocking(move || classifier.warm_up().map_err(|e| e.to_string()))
        .await
        .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_never_runs_more_threads_than_it_has() {
        // ONNX Runtime's default threads use every core: as many batches as workers.
        assert_eq!(CpuBudget::new(8, 0, 1).permits, 1);
        assert_eq!(CpuBudget::new(8, 0, 2).permits, 2);
        for (cpu, threads) in [(8, 1), (8, 2), (8, 3), (2, 1), (2, 4), (16, 5)] {
            let b = CpuBudget::new(cpu, threads, 1);
            assert!(b.permits >= 1 && b.threads == threads);
            // Within the budget, unless one batch alone needs more than it.
            assert!(
                b.permits * threads <= cpu.max(threads),
                "{cpu} {threads}: {b:?}"
            );
            assert!(
                (b.permits + 1) * threads > cpu,
                "{cpu} {threads}: {b:?} leaves cores idle"
            );
        }
    }

    #[test]
    fn index_filters_and_bodies() {
        assert_eq!(ready_filter(b"").unwrap(), None);
        assert_eq!(ready_filter(b" {} ").unwrap(), None);
        assert_eq!(ready_filter(br#"{"ready": false}"#).unwrap(), Some(false));
        for bad in [&b"[]"[..], br#"{"ready": null}"#, br#"{"x": 1}"#, b"{"] {
            let e = ready_filter(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }
}
