//! Classify one image from a Rust program:
//! `cargo run -p tpsnet-examples --example classify_one -- models/tpsnet-<sha8>.onnx cat.png`
use runtime::{Classifier, SessionOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, image] = args.as_slice() else {
        return Err("usage: classify_one MODEL.onnx|MODEL.json IMAGE".into());
    };
    let classifier = Classifier::open(model, &SessionOptions::default())?;
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
