//! Reader for the official binary CIFAR-10 layout (docs/design-notes.md#data).
//!
//! The folder `cifar-10-batches-bin/` holds `data_batch_1.bin` … `data_batch_5.bin`
//! (training), `test_batch.bin` and `batches.meta.txt`. Each batch file is exactly
//! 10,000 records of one label byte followed by 3,072 bytes of channel-planar RGB
//! (1,024 red, 1,024 green, 1,024 blue, each row-major 32x32).
//!
//! Every file is checked before use: size first (a truncated copy is the common failure
//! and deserves its own message), then md5 against the official value, then each label.
//! All errors name the file and say how to fix it.
//!
//! ```no_run
//! use tpsnet_zoo::cifar::{self, Split};
//! let dir = cifar::resolve_dir(None)?;
//! let test = cifar::load(&dir, Split::Test)?;
//! assert_eq!(test.len(), 10_000);
//! let first_pixel_red = test.image(0)[0];
//! # let _ = first_pixel_red;
//! # Ok::<(), cifar::CifarError>(())
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// Bytes per record: one label byte plus one image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Bytes per image: 3 channels of 32x32, channel-planar (CHW).
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Records in every official batch file.
pub const RECORDS_PER_FILE: usize = 10_000;
/// Exact size of every official batch file.
pub const FILE_BYTES: u64 = (RECORDS_PER_FILE * RECORD_BYTES) as u64;
/// Number of classes; labels are `0..NUM_CLASSES`.
pub const NUM_CLASSES: usize = 10;
/// Name of the folder the official archive extracts to.
pub const DIR_NAME: &str = "cifar-10-batches-bin";
/// Training batch files, in the order their records are concatenated.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch file.
pub const TEST_FILE: &str = "test_batch.bin";
/// Class names, one per line, in label order.
pub const META_FILE: &str = "batches.meta.txt";
/// Official md5 of every file of the binary release.
pub const OFFICIAL_MD5: [(&str, &str); 7] = [
    ("data_batch_1.bin", "5dd7e06a14cb22eb9f671a540d1b7c25"),
    ("data_batch_2.bin", "5ea93a67294ea407fff1d09f752e9692"),
    ("data_batch_3.bin", "942cd6a4bcdd0dd3c604fbe906cb4421"),
    ("data_batch_4.bin", "ae636b3ba5c66a11e91e8cb52e771fcb"),
    ("data_batch_5.bin", "53f37980c15c3d472c316c40844f3f0d"),
    ("test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d"),
    ("batches.meta.txt", "728051cd483f366e254dddb25bead8b3"),
];
/// Environment variable that points at an extracted `cifar-10-batches-bin` folder.
pub const ENV_DIR: &str = "CIFAR10_DIR";

/// What a user can do about a bad or missing data file; shared by every error message.
/// It names the environment variable this module reads, not any command's flags: the
/// commands add their own advice (how to download, which option names a folder).
const FIX: &str = "download CIFAR-10 again or point CIFAR10_DIR at an intact copy";

/// Which half of CIFAR-10 to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The 50,000 training images (`data_batch_1..5.bin`).
    Train,
    /// The 10,000 test images (`test_batch.bin`).
    Test,
}

impl Split {
    /// The batch files of this split, in record order.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Split::Train => &TRAIN_FILES,
            Split::Test => &[TEST_FILE],
        }
    }

    /// Number of images in the official split.
    pub fn official_len(self) -> usize {
        self.files().len() * RECORDS_PER_FILE
    }
}

/// A loaded split: images and labels in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cifar10 {
    /// `len() * IMAGE_BYTES` bytes; each image is channel-planar RGB (CHW), values 0..=255.
    pub images: Vec<u8>,
    /// One label per image, each `< NUM_CLASSES`.
    pub labels: Vec<u8>,
}

impl Cifar10 {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The `IMAGE_BYTES` bytes of image `i` (CHW planar RGB). Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// A copy of images `range` (e.g. to carve a validation split off the training set).
    /// Panics if the range is out of bounds.
    pub fn subset(&self, range: Range<usize>) -> Cifar10 {
        Cifar10 {
            images: self.images[range.start * IMAGE_BYTES..range.end * IMAGE_BYTES].to_vec(),
            labels: self.labels[range].to_vec(),
        }
    }

    /// Images per class, indexed by label.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// A file that must be present with a known md5 (and optionally a known size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedFile {
    /// File name inside the dataset folder.
    pub name: String,
    /// Lowercase hex md5 of the whole file.
    pub md5: String,
    /// Exact size in bytes, if known; checked before the md5 so truncation gets its own message.
    pub size: Option<u64>,
}

impl ExpectedFile {
    /// A file with the given name and md5, size unchecked.
    pub fn new(name: impl Into<String>, md5: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            md5: md5.into(),
            size: None,
        }
    }
}

/// The seven files of the official release with their md5s and sizes.
pub fn official_files() -> Vec<ExpectedFile> {
    OFFICIAL_MD5
        .iter()
        .map(|&(name, md5)| ExpectedFile {
            name: name.to_string(),
            md5: md5.to_string(),
            size: name.ends_with(".bin").then_some(FILE_BYTES),
        })
        .collect()
}

/// The official md5 of `name`, if it is one of the release's files.
pub fn official_md5(name: &str) -> Option<&'static str> {
    OFFICIAL_MD5
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, md5)| md5)
}

/// Everything that can go wrong finding, checking or reading CIFAR-10.
#[derive(Debug, thiserror::Error)]
pub enum CifarError {
    /// A required file does not exist.
    #[error("CIFAR-10 file {} is missing; {FIX}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read CIFAR-10 file {}: {source}; check its permissions, or {FIX}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file has the wrong size (usually a truncated copy).
    #[error(
        "CIFAR-10 file {} has {actual} bytes, expected {expected}{}; {FIX}",
        path.display(),
        if actual < expected { " (truncated)" } else { "" }
    )]
    WrongSize {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        actual: u64,
        /// The size it must have.
        expected: u64,
    },
    /// The file's md5 differs from the expected one (corrupted or a different release).
    #[error("CIFAR-10 file {} is corrupted: md5 {actual}, expected {expected}; {FIX}", path.display())]
    Md5Mismatch {
        /// The file.
        path: PathBuf,
        /// Its md5 (hex).
        actual: String,
        /// The official md5 (hex).
        expected: String,
    },
    /// A record's label byte is not a class index.
    #[error(
        "CIFAR-10 file {} is corrupted: record {record} has label {label} (must be 0..=9); {FIX}",
        path.display()
    )]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// Record index in the file (0-based).
        record: usize,
        /// The label byte found.
        label: u8,
    },
    /// A folder given by the caller or by CIFAR10_DIR is unusable.
    #[error(
        "CIFAR-10 folder {} ({origin}) {problem}; point it at the extracted \
         `cifar-10-batches-bin` folder",
        path.display()
    )]
    BadDir {
        /// The folder.
        path: PathBuf,
        /// Who named it.
        origin: DirOrigin,
        /// What is wrong with it (missing, not a folder, lacks the files).
        problem: &'static str,
    },
    /// No folder was given and none was found in the cache.
    #[error(
        "CIFAR-10 not found: no folder was given, CIFAR10_DIR is not set, and {} does not \
         exist; set CIFAR10_DIR to the extracted `cifar-10-batches-bin` folder or download \
         CIFAR-10 into that cache",
        cached.display()
    )]
    NotFound {
        /// The cache folder that was looked in.
        cached: PathBuf,
    },
}

/// Where a dataset folder came from, for [`CifarError::BadDir`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirOrigin {
    /// Given by the caller ([`resolve_dir`]'s `explicit`: a command's option).
    Explicit,
    /// The [`ENV_DIR`] environment variable.
    EnvVar,
}

impl std::fmt::Display for DirOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DirOrigin::Explicit => "given explicitly",
            DirOrigin::EnvVar => "from CIFAR10_DIR",
        })
    }
}

/// Lowercase hex md5 of a whole file.
pub fn md5_file(path: &Path) -> Result<String, CifarError> {
    let mut file = open(path)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks that `dir/<expected.name>` exists, has the expected size (if given) and md5.
pub fn verify_file(dir: &Path, expected: &ExpectedFile) -> Result<(), CifarError> {
    let path = dir.join(&expected.name);
    let len = file_len(&path)?;
    if let Some(size) = expected.size {
        check_size(&path, len, size)?;
    }
    let actual = md5_file(&path)?;
    check_md5(&path, &actual, &expected.md5)
}

/// [`verify_file`] for each entry, stopping at the first failure.
pub fn verify_files(dir: &Path, expected: &[ExpectedFile]) -> Result<(), CifarError> {
    expected.iter().try_for_each(|e| verify_file(dir, e))
}

/// Reads `split` from `dir`, checking every file's size, official md5 and labels.
pub fn load(dir: &Path, split: Split) -> Result<Cifar10, CifarError> {
    load_with(dir, split, true)
}

/// Like [`load`]; with `verify_md5 = false` the md5 check is skipped (sizes and labels
/// are still checked), for synthetic fixtures or when the caller verified already.
pub fn load_with(dir: &Path, split: Split, verify_md5: bool) -> Result<Cifar10, CifarError> {
    load_and_digest(dir, split, verify_md5).map(|(data, _)| data)
}

/// [`load_with`] that also returns the split's [`dataset_digest`], computed from the
/// bytes already in memory, so recording the digest costs no second read.
pub fn load_and_digest(
    dir: &Path,
    split: Split,
    verify_md5: bool,
) -> Result<(Cifar10, String), CifarError> {
    let files = split.files();
    let total = files.len() * RECORDS_PER_FILE;
    let mut out = Cifar10 {
        images: Vec::with_capacity(total * IMAGE_BYTES),
        labels: Vec::with_capacity(total),
    };
    let mut md5s = Vec::with_capacity(files.len());
    // One buffer reused for every file: the whole file is read in one go because the
    // md5 needs every byte anyway, and copying out of memory beats many small reads.
    let mut buf = Vec::with_capacity(FILE_BYTES as usize);
    for name in files {
        let path = dir.join(name);
        let len = file_len(&path)?;
        check_size(&path, len, FILE_BYTES)?;
        buf.clear();
        open(&path)?
            .read_to_end(&mut buf)
            .map_err(|e| io_err(&path, e))?;
        // The file may have changed between stat and read.
        check_size(&path, buf.len() as u64, FILE_BYTES)?;
        let md5 = hex::encode(Md5::digest(&buf));
        if verify_md5 {
            let expected = official_md5(name).expect("split files are official files");
            check_md5(&path, &md5, expected)?;
        }
        parse_records_into(&path, &buf, &mut out)?;
        md5s.push((name.to_string(), md5));
    }
    Ok((out, digest_of(&md5s)))
}

/// Parses a buffer of whole records (any count) read from `path` (used in messages).
pub fn parse_records(path: &Path, bytes: &[u8]) -> Result<Cifar10, CifarError> {
    let mut out = Cifar10::default();
    parse_records_into(path, bytes, &mut out)?;
    Ok(out)
}

fn parse_records_into(path: &Path, bytes: &[u8], out: &mut Cifar10) -> Result<(), CifarError> {
    if bytes.len() % RECORD_BYTES != 0 {
        // Round up to the next whole record so the message says what a complete file needs.
        let expected = bytes.len().div_ceil(RECORD_BYTES) * RECORD_BYTES;
        return Err(CifarError::WrongSize {
            path: path.to_path_buf(),
            actual: bytes.len() as u64,
            expected: expected as u64,
        });
    }
    let n = bytes.len() / RECORD_BYTES;
    out.images.reserve(n * IMAGE_BYTES);
    out.labels.reserve(n);
    for (record, chunk) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = chunk[0];
        if label as usize >= NUM_CLASSES {
            return Err(CifarError::BadLabel {
                path: path.to_path_buf(),
                record,
                label,
            });
        }
        out.labels.push(label);
        out.images.extend_from_slice(&chunk[1..]);
    }
    Ok(())
}

/// Identifies the exact data a model was trained or evaluated on: sha256 (hex) over
/// one `"<name> <md5>\n"` line per file of `split`, md5s computed from the files.
pub fn dataset_digest(dir: &Path, split: Split) -> Result<String, CifarError> {
    let md5s = split
        .files()
        .iter()
        .map(|name| Ok((name.to_string(), md5_file(&dir.join(name))?)))
        .collect::<Result<Vec<_>, CifarError>>()?;
    Ok(digest_of(&md5s))
}

/// The digest [`dataset_digest`] computes, from `(name, md5)` pairs.
pub fn digest_of(md5s: &[(String, String)]) -> String {
    let mut hasher = Sha256::new();
    for (name, md5) in md5s {
        hasher.update(format!("{name} {md5}\n").as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Finds the dataset folder: `explicit` if given, else `$CIFAR10_DIR` if set, else the
/// downloader's cache (`<default_cache_dir>/cifar-10-batches-bin`) if it was extracted
/// there. A given folder may also be the parent of `cifar-10-batches-bin/`.
pub fn resolve_dir(explicit: Option<&Path>) -> Result<PathBuf, CifarError> {
    if let Some(dir) = explicit {
        return check_dir(dir, DirOrigin::Explicit);
    }
    if let Some(dir) = std::env::var_os(ENV_DIR).filter(|v| !v.is_empty()) {
        return check_dir(Path::new(&dir), DirOrigin::EnvVar);
    }
    let cached = crate::cache::default_cache_dir().join(DIR_NAME);
    // The downloader renames the folder into place only once every file checked out,
    // so its presence means a complete extraction.
    if has_batches(&cached) {
        Ok(cached)
    } else {
        Err(CifarError::NotFound { cached })
    }
}

fn check_dir(dir: &Path, origin: DirOrigin) -> Result<PathBuf, CifarError> {
    let bad = |problem| CifarError::BadDir {
        path: dir.to_path_buf(),
        origin,
        problem,
    };
    if !dir.exists() {
        return Err(bad("does not exist"));
    }
    if !dir.is_dir() {
        return Err(bad("is not a folder"));
    }
    if has_batches(dir) {
        return Ok(dir.to_path_buf());
    }
    let nested = dir.join(DIR_NAME);
    if has_batches(&nested) {
        return Ok(nested);
    }
    Err(bad(
        "holds no CIFAR-10 batch files (data_batch_1.bin … test_batch.bin)",
    ))
}

/// True when `dir` holds at least one batch file; which ones are complete is for
/// [`load`] to report, with a message naming the bad file.
fn has_batches(dir: &Path) -> bool {
    TRAIN_FILES
        .iter()
        .chain(std::iter::once(&TEST_FILE))
        .any(|f| dir.join(f).is_file())
}

fn open(path: &Path) -> Result<File, CifarError> {
    File::open(path).map_err(|e| io_err(path, e))
}

fn file_len(path: &Path) -> Result<u64, CifarError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, source: io::Error) -> CifarError {
    if source.kind() == io::ErrorKind::NotFound {
        CifarError::Missing {
            path: path.to_path_buf(),
        }
    } else {
        CifarError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn check_size(path: &Path, actual: u64, expected: u64) -> Result<(), CifarError> {
    if actual == expected {
        Ok(())
    } else {
        Err(CifarError::WrongSize {
            path: path.to_path_buf(),
            actual,
            expected,
        })
    }
}

fn check_md5(path: &Path, actual: &str, expected: &str) -> Result<(), CifarError> {
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(CifarError::Md5Mismatch {
            path: path.to_path_buf(),
            actual: actual.to_string(),
            expected: expected.to_ascii_lowercase(),
        })
    }
}
