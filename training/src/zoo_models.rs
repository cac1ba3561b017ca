//! The models `train-zoo --all` trains and publishes, in training order.

/// `(model name, preset, recipe)`. TPSNet first: if a run is cut short, the paper's
/// headline model is the one that finished. `airnet` is the zoo's CPU-trainable model.
pub const PUBLISHED: &[(&str, &str, &str)] = &[
    ("tpsnet", "tpsnet", "fast"),
    ("model2", "model2", "fast"),
    ("model1", "model1", "fast"),
    ("airnet", "airnet", "cpu"),
];

/// Where published models live: `<workspace>/models`.
pub fn models_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("training/ has a parent")
        .join("models")
}
