//! Classify one image from a Rust program:
//! `cargo run -p tpsnet-examples --example classify_one -- tpsnet cat.png`
//!
//! MODEL is a model name from the models folder (found at run time: `$TPSNET_MODELS`,
//! `./models`, beside the executable, the checkout's `models/`) or an .onnx/.json path.
use tpsnet_runtime::{Classifier, SessionOptions, registry};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The checkout this command was built in: its models/ and .venv/ are searched last.
    tpsnet_runtime::models_dir::SearchPlaces::for_workspace_member(env!("CARGO_MANIFEST_DIR"))
        .install();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, image] = args.as_slice() else {
        return Err("usage: classify_one MODEL|MODEL.onnx|MODEL.json IMAGE".into());
    };
    let model = registry::find_model(Some(model), None)?;
    let options = SessionOptions::builder().threads(1).batch_size(1).build();
    let classifier = Classifier::open(&model, &options)?;
    let prediction = classifier.classify_file(image.as_ref(), 3)?;
    println!(
        "{}: {} ({:.1} %)",
        image,
        prediction.class,
        100.0 * prediction.probability
    );
    for s in &prediction.top_k {
        println!("  {:<12} {:.3}", s.class, s.probability);
    }
    Ok(())
}
