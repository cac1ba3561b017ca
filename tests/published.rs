//! Every model the zoo ships in `models/` keeps its promises: its file matches the
//! manifest's sha256, and ONNX Runtime reproduces the manifest's accuracy claims on the
//! full 10,000-image CIFAR-10 test set within `verify`'s default tolerance.

use tpsnet_runtime::registry::Registry;
use tpsnet_runtime::verify::{VerifyOptions, check_test_set, verify_model};
use tpsnet_runtime::{Classifier, SessionOptions};
use tpsnet_zoo::cifar::{self, Split};

#[test]
fn shipped_models_reproduce_their_manifests() {
    let Some(data_dir) = tpsnet_e2e::cifar10_dir() else {
        return;
    };
    let models = tpsnet_test_support::shipped::models_dir();
    let registry = Registry::scan(&models).unwrap();
    assert!(
        registry.invalid.is_empty(),
        "unreadable manifests: {:?}",
        registry.invalid
    );
    assert!(
        !registry.models.is_empty(),
        "the zoo ships no model in {}",
        models.display()
    );
    let data = cifar::load(&data_dir, Split::Test).unwrap();
    check_test_set(&data).unwrap();
    for entry in &registry.models {
        let m = &entry.manifest;
        assert_eq!(
            m.metrics.images, 10_000,
            "{}: a published claim must use the full test set",
            m.name
        );
        assert_eq!(m.params, m.spec.params(), "{}: parameter count", m.name);
        let clf = Classifier::open(&entry.manifest_path, &SessionOptions::default()).unwrap();
        let report = verify_model(
            &clf,
            &data,
            &VerifyOptions {
                tta: Some(tpsnet_runtime::TtaMode::Flip),
                ..Default::default()
            },
            &|_, _| {},
        )
        .unwrap();
        for c in &report.checks {
            eprintln!("{}: {c:?}", m.name);
        }
        assert!(
            report.passed,
            "{}: a manifest claim does not hold: {:?}",
            m.name, report.checks
        );
    }
}
