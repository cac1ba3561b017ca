//! A small HTTP classification service around one shared `Classifier`.
//!
//! ```text
//! cargo run -p tpsnet-examples --example serve -- [MODEL] [ADDR]
//! curl -F image=@cat.png 'http://127.0.0.1:8080/classify?top_k=3'
//! ```
//! MODEL is an .onnx/.json path or a model name (default: the best shipped model);
//! ADDR defaults to 127.0.0.1:8080.
use std::sync::Arc;

use anyhow::Context;
use runtime::{Classifier, SessionOptions, registry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The checkout this command was built in: its models/ and .venv/ are searched last.
    runtime::models_dir::SearchPlaces::for_workspace_member(env!("CARGO_MANIFEST_DIR")).install();
    let mut args = std::env::args().skip(1);
    let model = args.next();
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let path = registry::find_model(model.as_deref(), None)?;
    // Two sessions let two requests run inference at the same time.
    let options = SessionOptions::builder().sessions(2).build();
    let classifier = Arc::new(Classifier::open(&path, &options)?);
    if let Some(why) = &classifier.execution().fallback {
        eprintln!("warning: running on the CPU: {why}");
    }
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!(
        "serving {} ({}) on http://{addr} — POST /classify with multipart image files",
        classifier.name(),
        classifier.execution().provider
    );
    axum::serve(listener, tpsnet_examples::router(classifier))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
