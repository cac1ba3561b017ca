//! Classifies images with a TPSNet zoo model from a crate outside the zoo's workspace.
//!
//! ```text
//! cargo run --manifest-path examples/standalone/Cargo.toml -- [--model NAME|FILE] IMAGE...
//! ```
//!
//! Prints `file<TAB>class<TAB>index<TAB>probability` per image on stdout, and on stderr
//! the model and the engine in use. Built with `--no-default-features --features tract`
//! it runs on tract, pure Rust, and loads no native library. Nothing needs configuring:
//! the runtime finds ONNX Runtime (`ORT_DYLIB_PATH`, beside the executable, the zoo checkout's
//! `.venv`, the system library path) and the models folder (`$TPSNET_MODELS`,
//! `./models`, beside the executable, the zoo checkout's `models/`) by itself. Without
//! `--model` it uses the shipped model with the best claimed accuracy.

use std::path::PathBuf;
use std::process::ExitCode;

use tpsnet_runtime::{Classifier, SessionOptions, registry};

fn main() -> ExitCode {
    // Where to look for models and ONNX Runtime besides the current folder and the
    // executable's: a checkout named when this program was built, if any.
    if let Some(checkout) = option_env!("TPSNET_CHECKOUT") {
        tpsnet_runtime::models_dir::SearchPlaces {
            checkout: Some(checkout.into()),
        }
        .install();
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain: the runtime's message, then ONNX Runtime's own words.
            let mut msg = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let mut model = None;
    if args.peek().is_some_and(|a| a == "--model") {
        args.next();
        model = Some(args.next().ok_or("--model needs a model name or file")?);
    }
    let images: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if images.is_empty() {
        return Err("usage: tpsnet-standalone [--model NAME|FILE] IMAGE...".into());
    }

    let model = registry::find_model(model.as_deref(), None)?;
    // The default backend: ONNX Runtime when built in, else tract.
    let options = SessionOptions::builder().threads(1).batch_size(64).build();
    let classifier = Classifier::open(&model, &options)?;
    eprintln!(
        "model {} ({}) with {}",
        classifier.name(),
        classifier.model_path().display(),
        engine()?
    );

    let decoded: Vec<_> = images
        .iter()
        .map(|p| tpsnet_runtime::preprocess::load_file(p))
        .collect::<Result<_, _>>()?;
    let predictions = classifier.classify(&decoded, 1)?;
    for (path, p) in images.iter().zip(predictions) {
        // `{:?}` prints the shortest text that reads back as the same f32.
        println!(
            "{}\t{}\t{}\t{:?}",
            path.display(),
            p.class,
            p.index,
            p.probability
        );
    }
    Ok(())
}

#[cfg(feature = "ort")]
fn engine() -> Result<String, tpsnet_runtime::Error> {
    Ok(tpsnet_runtime::session::ort_library()?.to_string())
}

#[cfg(not(feature = "ort"))]
fn engine() -> Result<String, tpsnet_runtime::Error> {
    Ok("the tract backend (pure Rust, no native library)".into())
}
