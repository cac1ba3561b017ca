//! Embedding the inference server in a program: one shared `Classifier` behind
//! [`tpsnet_serve::Server`], which answers image uploads, KServe v2 inference requests
//! and metrics exactly as the `tpsnet-serve` command does (`docs/serving.md`).
//!
//! ```text
//! cargo run -p tpsnet-examples --example serve -- [MODEL] [ADDR]
//! curl --data-binary @cat.png 'http://127.0.0.1:8080/v2/models/NAME/classify?top_k=3'
//! ```
//! MODEL is an .onnx/.json path or a model name (default: the best shipped model);
//! ADDR defaults to 127.0.0.1:8080.
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tpsnet_runtime::{Classifier, SessionOptions, registry};
use tpsnet_serve::{Server, ServerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The checkout this command was built in: its models/ and .venv/ are searched last.
    tpsnet_runtime::models_dir::SearchPlaces::for_workspace_member(env!("CARGO_MANIFEST_DIR"))
        .install();
    let mut args = std::env::args().skip(1);
    let model = args.next();
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("`{addr}` is not an address such as 127.0.0.1:8080"))?;
    let path = registry::find_model(model.as_deref(), None)?;
    let config = ServerConfig::default();
    // One session per batching worker, each able to run a full batch.
    let options = SessionOptions::builder()
        .sessions(config.workers)
        .batch_size(config.max_batch)
        .build();
    let classifier = Classifier::open(&path, &options)?;
    if let Some(why) = &classifier.execution().fallback {
        eprintln!("warning: running on the CPU: {why}");
    }
    let name = classifier.name().to_string();
    let server = Server::bind(addr, Arc::new(classifier), config).await?;
    eprintln!(
        "serving {name} on http://{} — POST an image to /v2/models/{name}/classify",
        server.local_addr()
    );
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
