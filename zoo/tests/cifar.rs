//! CIFAR-10 reader: the real dataset when `CIFAR10_DIR` points at it, and synthetic files
//! in temporary folders for every failure mode (no CIFAR-10 data is ever written here).

use std::fs;
use std::path::{Path, PathBuf};

use tpsnet_zoo::cifar::{
    self, Cifar10, CifarError, ExpectedFile, FILE_BYTES, IMAGE_BYTES, RECORD_BYTES,
    RECORDS_PER_FILE, Split, TEST_FILE, TRAIN_FILES,
};

/// Record `i` of a synthetic file: label `i % 10`, pixels a function of position and `i`,
/// so a misplaced byte or record shows up as a wrong value.
fn synthetic_records(n: usize, seed: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * RECORD_BYTES);
    for i in 0..n {
        out.push((i % 10) as u8);
        out.extend((0..IMAGE_BYTES).map(|p| (p * 7 + i * 13 + seed) as u8));
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// A full-size synthetic batch file.
fn write_batch(dir: &Path, name: &str, seed: usize) -> PathBuf {
    write(dir, name, &synthetic_records(RECORDS_PER_FILE, seed))
}

/// The message must name the file and tell the user how to fix it.
fn assert_names_file_and_fix(err: &CifarError, file: &str) {
    let msg = err.to_string();
    assert!(msg.contains(file), "message does not name {file}: {msg}");
    assert!(
        msg.contains("CIFAR10_DIR") && msg.contains("download CIFAR-10 again"),
        "message gives no fix: {msg}"
    );
}

/// CI exports `TPSNET_REQUIRE_DATA=1`: there a real-data test without usable data fails
/// instead of skipping. Runs this test binary's real-data test as a child process.
#[test]
fn required_data_turns_a_skip_into_a_failure() {
    let run = |require: bool, data: Option<&str>| {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap());
        c.args(["--exact", "real_dataset_when_available", "--nocapture"]);
        match data {
            Some(d) => c.env("CIFAR10_DIR", d),
            None => c.env_remove("CIFAR10_DIR"),
        };
        match require {
            true => c.env("TPSNET_REQUIRE_DATA", "1"),
            false => c.env_remove("TPSNET_REQUIRE_DATA"),
        };
        let o = c.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    };
    let (ok, text) = run(false, None);
    assert!(ok && text.contains("skipping a real-data test"), "{text}");
    let (ok, text) = run(true, None);
    assert!(!ok && text.contains("TPSNET_REQUIRE_DATA=1"), "{text}");
    let missing = tempfile::tempdir().unwrap().path().join("gone");
    let (ok, text) = run(true, Some(missing.to_str().unwrap()));
    assert!(!ok && text.contains("does not exist"), "{text}");
}

#[test]
fn real_dataset_when_available() {
    let Some(dir) = tpsnet_test_support::data::cifar_dir_or_skip() else {
        return;
    };
    assert_eq!(cifar::resolve_dir(None).unwrap(), dir);

    let start = std::time::Instant::now();
    let (train, train_digest) = cifar::load_and_digest(&dir, Split::Train, true).unwrap();
    eprintln!("train split loaded and verified in {:?}", start.elapsed());
    assert_eq!(train.len(), 50_000);
    assert_eq!(train.images.len(), 50_000 * IMAGE_BYTES);
    assert_eq!(train.class_counts(), [5_000; 10]);

    let test = cifar::load(&dir, Split::Test).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.images.len(), 10_000 * IMAGE_BYTES);
    assert_eq!(test.class_counts(), [1_000; 10]);
    // Train and test must be different data, not the same file read twice.
    assert_ne!(train.image(0), test.image(0));

    cifar::verify_files(&dir, &cifar::official_files()).unwrap();

    // The digest comes from the files' actual md5s, so it must agree with the official
    // table, with itself on a second run, and with the one computed while loading.
    let official = |split: Split| {
        let pairs: Vec<(String, String)> = split
            .files()
            .iter()
            .map(|f| (f.to_string(), cifar::official_md5(f).unwrap().to_string()))
            .collect();
        cifar::digest_of(&pairs)
    };
    let test_digest = cifar::dataset_digest(&dir, Split::Test).unwrap();
    assert_eq!(test_digest, official(Split::Test));
    assert_eq!(
        test_digest,
        cifar::dataset_digest(&dir, Split::Test).unwrap()
    );
    assert_eq!(train_digest, official(Split::Train));
    assert_eq!(
        train_digest,
        cifar::dataset_digest(&dir, Split::Train).unwrap()
    );
    assert_ne!(train_digest, test_digest);
    assert_eq!(test_digest.len(), 64);
}

#[test]
fn parses_records_channel_planar() {
    let bytes = synthetic_records(3, 5);
    let data = cifar::parse_records(Path::new("mem.bin"), &bytes).unwrap();
    assert_eq!(data.len(), 3);
    assert!(!data.is_empty());
    assert_eq!(data.labels, [0, 1, 2]);
    for i in 0..3 {
        assert_eq!(
            data.image(i),
            &bytes[i * RECORD_BYTES + 1..(i + 1) * RECORD_BYTES]
        );
    }
    let sub = data.subset(1..3);
    assert_eq!(sub.labels, [1, 2]);
    assert_eq!(sub.image(0), data.image(1));
    assert_eq!(data.class_counts()[..3], [1, 1, 1]);
    assert!(Cifar10::default().is_empty());
}

#[test]
fn partial_record_is_reported_with_file_name() {
    let mut bytes = synthetic_records(3, 0);
    bytes.truncate(bytes.len() - 5);
    let err = cifar::parse_records(Path::new("/data/fake_batch.bin"), &bytes).unwrap_err();
    assert!(matches!(err, CifarError::WrongSize { actual, expected, .. }
        if actual == 3 * RECORD_BYTES as u64 - 5 && expected == 3 * RECORD_BYTES as u64));
    assert_names_file_and_fix(&err, "fake_batch.bin");
    assert!(err.to_string().contains("truncated"));
}

#[test]
fn label_above_nine_is_rejected() {
    let mut bytes = synthetic_records(4, 0);
    bytes[2 * RECORD_BYTES] = 10;
    let err = cifar::parse_records(Path::new("small.bin"), &bytes).unwrap_err();
    assert!(matches!(
        err,
        CifarError::BadLabel {
            record: 2,
            label: 10,
            ..
        }
    ));
    assert_names_file_and_fix(&err, "small.bin");

    let tmp = tempfile::tempdir().unwrap();
    let mut full = synthetic_records(RECORDS_PER_FILE, 0);
    full[9_999 * RECORD_BYTES] = 255;
    write(tmp.path(), TEST_FILE, &full);
    let err = cifar::load_with(tmp.path(), Split::Test, false).unwrap_err();
    assert!(matches!(
        err,
        CifarError::BadLabel {
            record: 9_999,
            label: 255,
            ..
        }
    ));
    assert_names_file_and_fix(&err, TEST_FILE);
}

#[test]
fn synthetic_full_size_file_loads_without_md5_and_fails_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = synthetic_records(RECORDS_PER_FILE, 3);
    write(tmp.path(), TEST_FILE, &bytes);
    let data = cifar::load_with(tmp.path(), Split::Test, false).unwrap();
    assert_eq!(data.len(), RECORDS_PER_FILE);
    assert_eq!(data.class_counts(), [1_000; 10]);
    assert_eq!(
        data.image(1234),
        &bytes[1234 * RECORD_BYTES + 1..1235 * RECORD_BYTES]
    );

    // Same bytes, but not the official ones: the md5 check must catch that.
    let err = cifar::load(tmp.path(), Split::Test).unwrap_err();
    assert!(matches!(&err, CifarError::Md5Mismatch { expected, .. }
        if expected == cifar::official_md5(TEST_FILE).unwrap()));
    assert_names_file_and_fix(&err, TEST_FILE);

    let (again, digest) = cifar::load_and_digest(tmp.path(), Split::Test, false).unwrap();
    assert_eq!(again.labels, data.labels);
    let md5 = cifar::md5_file(&tmp.path().join(TEST_FILE)).unwrap();
    assert_eq!(digest, cifar::digest_of(&[(TEST_FILE.into(), md5)]));
    assert_eq!(
        digest,
        cifar::dataset_digest(tmp.path(), Split::Test).unwrap()
    );
}

#[test]
fn corrupted_byte_fails_md5() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "data_batch_3.bin", &synthetic_records(8, 1));
    let expected = ExpectedFile::new("data_batch_3.bin", cifar::md5_file(&path).unwrap());
    cifar::verify_file(tmp.path(), &expected).unwrap();

    let mut bytes = fs::read(&path).unwrap();
    bytes[5_000] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let err = cifar::verify_file(tmp.path(), &expected).unwrap_err();
    assert!(matches!(err, CifarError::Md5Mismatch { .. }));
    assert_names_file_and_fix(&err, "data_batch_3.bin");
}

#[test]
fn truncated_copy_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    // A small fake file, cut short: the size check fires before the md5 is computed.
    let small = synthetic_records(5, 2);
    let path = write(tmp.path(), "data_batch_1.bin", &small);
    let expected = ExpectedFile {
        name: "data_batch_1.bin".into(),
        md5: cifar::md5_file(&path).unwrap(),
        size: Some(small.len() as u64),
    };
    write(tmp.path(), "data_batch_1.bin", &small[..small.len() - 100]);
    let err = cifar::verify_file(tmp.path(), &expected).unwrap_err();
    assert!(matches!(err, CifarError::WrongSize { .. }));
    assert!(err.to_string().contains("truncated"));
    assert_names_file_and_fix(&err, "data_batch_1.bin");

    // A full-size batch missing its last byte.
    let mut full = synthetic_records(RECORDS_PER_FILE, 0);
    full.pop();
    write(tmp.path(), TEST_FILE, &full);
    let err = cifar::load_with(tmp.path(), Split::Test, false).unwrap_err();
    assert!(matches!(err, CifarError::WrongSize { actual, expected, .. }
        if actual == FILE_BYTES - 1 && expected == FILE_BYTES));
    assert_names_file_and_fix(&err, TEST_FILE);
}

#[test]
fn wrong_size_file_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = synthetic_records(RECORDS_PER_FILE, 0);
    bytes.extend_from_slice(&synthetic_records(1, 0));
    write(tmp.path(), TEST_FILE, &bytes);
    let err = cifar::load_with(tmp.path(), Split::Test, false).unwrap_err();
    assert!(matches!(err, CifarError::WrongSize { actual, .. }
        if actual == FILE_BYTES + RECORD_BYTES as u64));
    assert!(!err.to_string().contains("truncated"));
    assert_names_file_and_fix(&err, TEST_FILE);
}

#[test]
fn missing_file_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let err = cifar::load(tmp.path(), Split::Test).unwrap_err();
    assert!(matches!(err, CifarError::Missing { .. }));
    assert_names_file_and_fix(&err, TEST_FILE);

    // The first train file is fine; the loader must name the second, absent one.
    write_batch(tmp.path(), TRAIN_FILES[0], 0);
    let err = cifar::load_with(tmp.path(), Split::Train, false).unwrap_err();
    assert!(matches!(&err, CifarError::Missing { path } if path.ends_with(TRAIN_FILES[1])));
    assert_names_file_and_fix(&err, TRAIN_FILES[1]);

    let err = cifar::dataset_digest(tmp.path(), Split::Train).unwrap_err();
    assert_names_file_and_fix(&err, TRAIN_FILES[1]);
    let err = cifar::verify_files(tmp.path(), &cifar::official_files()).unwrap_err();
    assert!(matches!(err, CifarError::Md5Mismatch { .. }));
}

#[test]
fn resolve_dir_checks_an_explicit_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let err = cifar::resolve_dir(Some(&missing)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("nowhere") && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(msg.contains("given explicitly") && msg.contains("cifar-10-batches-bin"));

    let err = cifar::resolve_dir(Some(tmp.path())).unwrap_err();
    assert!(
        err.to_string().contains("holds no CIFAR-10 batch files"),
        "{err}"
    );

    let nested = tmp.path().join(cifar::DIR_NAME);
    fs::create_dir(&nested).unwrap();
    write(&nested, TEST_FILE, b"x");
    // The parent of `cifar-10-batches-bin/` is accepted too.
    assert_eq!(cifar::resolve_dir(Some(tmp.path())).unwrap(), nested);
    assert_eq!(cifar::resolve_dir(Some(&nested)).unwrap(), nested);
}

#[test]
fn official_tables_are_consistent() {
    assert_eq!(RECORD_BYTES, 3073);
    assert_eq!(IMAGE_BYTES, 3072);
    assert_eq!(FILE_BYTES, 30_730_000);
    assert_eq!(Split::Train.official_len(), 50_000);
    assert_eq!(Split::Test.files(), [TEST_FILE]);
    let files = cifar::official_files();
    assert_eq!(files.len(), 7);
    for f in &files {
        assert_eq!(f.md5.len(), 32);
        assert_eq!(
            f.size,
            (f.name != cifar::META_FILE).then_some(FILE_BYTES),
            "{}",
            f.name
        );
    }
    assert_eq!(
        cifar::official_md5("test_batch.bin"),
        Some("803d5f7f4d78ea53de84dbe85f74fb6d")
    );
    assert_eq!(cifar::official_md5("readme.html"), None);
}
