//! Finding and loading the ONNX Runtime library at run time.
//!
//! The crate links nothing at build time (`ort`'s `load-dynamic`); the first use loads
//! `libonnxruntime` from the first of these places that holds a usable one:
//!
//! 1. `$ORT_DYLIB_PATH`, if set: only that file (or, for a bare name, what the system's
//!    dynamic loader finds under it). A bad value is an error, never skipped.
//! 2. Beside the executable: `libonnxruntime.so` or a versioned `libonnxruntime.so.1.x.y`
//!    (newest first) in the executable's folder, then in `../lib` next to it.
//! 3. The `.venv` of the checkout the program names in its
//!    [`SearchPlaces`](crate::models_dir::SearchPlaces)
//!    (`<checkout>/.venv/libonnxruntime.so`, which `scripts/setup` and
//!    `scripts/setup --runtime` create); the zoo's commands name the checkout they were
//!    built in, so binaries built or `cargo install`ed from a checkout work from anywhere
//!    while the checkout stays.
//! 4. The system library path: `dlopen("libonnxruntime.so")`, then the soname
//!    `libonnxruntime.so.1` (`LD_LIBRARY_PATH`, `/etc/ld.so.cache`, `/usr/lib`, ...).
//!
//! A file whose name says it is older than the 1.x this build needs is skipped; one that
//! fails to load is skipped with its reason. When nothing loads, the error lists every
//! place tried and why. The library in use ([`OrtLibrary`]) is reported by
//! [`crate::session::ort_library`] and by the commands' `--version`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Environment variable holding the path of `libonnxruntime.so`.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// Oldest ONNX Runtime minor version (1.x) this build can use (`ort`'s API level).
pub const MIN_MINOR_VERSION: u32 = ort::MINOR_VERSION;

/// The library's unversioned file name on this platform (`libonnxruntime.so` on Linux).
pub fn library_file_name() -> String {
    format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Where a candidate library comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Origin {
    /// `$ORT_DYLIB_PATH`.
    EnvVar,
    /// The executable's folder, or `../lib` beside it.
    BesideExecutable,
    /// `.venv/` of the checkout this crate was compiled in.
    CheckoutVenv,
    /// The dynamic loader's own search (`LD_LIBRARY_PATH`, `ld.so.cache`, system folders).
    SystemSearch,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::EnvVar => "ORT_DYLIB_PATH",
            Origin::BesideExecutable => "beside the executable",
            Origin::CheckoutVenv => "the checkout's .venv",
            Origin::SystemSearch => "the system library path",
        })
    }
}

/// One place to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// A file, or (for [`Origin::SystemSearch`] and bare names in `ORT_DYLIB_PATH`) a
    /// name for the dynamic loader to look up.
    pub path: PathBuf,
    /// Where the path comes from.
    pub origin: Origin,
}

/// One place tried, and why it was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The place tried.
    pub candidate: Candidate,
    /// Why it was not used (missing, not loadable, too old).
    pub reason: String,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.candidate.path.display(),
            self.candidate.origin,
            self.reason
        )
    }
}

/// The ONNX Runtime library in use.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OrtLibrary {
    /// The file loaded. For [`Origin::SystemSearch`] the file the loader picked when it
    /// can be told (Linux), else the name it was asked for.
    pub path: PathBuf,
    /// Where it was found.
    pub origin: Origin,
    /// Its version (`1.31.1`) when the file name or the library's build info tells it.
    pub version: Option<String>,
}

impl std::fmt::Display for OrtLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "ONNX Runtime {v} at {}", self.path.display())?,
            None => write!(f, "ONNX Runtime at {}", self.path.display())?,
        }
        write!(f, " ({})", self.origin)
    }
}

/// Why no library could be loaded; cached, so it must be cloneable.
#[derive(Clone, Debug)]
pub(crate) enum LoadFailure {
    /// `ORT_DYLIB_PATH` named something unusable.
    Explicit { path: PathBuf, reason: String },
    /// Nothing in the search order loaded.
    NotFound(Vec<Attempt>),
}

impl From<&LoadFailure> for Error {
    fn from(f: &LoadFailure) -> Self {
        match f {
            LoadFailure::Explicit { path, reason } => Error::OrtLoad {
                path: path.clone(),
                reason: reason.clone(),
            },
            LoadFailure::NotFound(tried) => Error::OrtNotFound {
                tried: tried.clone(),
            },
        }
    }
}

/// The places to try, in order, for this process: its environment and executable, and
/// the checkout its [`SearchPlaces`](crate::models_dir::SearchPlaces) name, if any.
pub fn candidates() -> Vec<Candidate> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let places = crate::models_dir::SearchPlaces::installed();
    let venv_library = places.checkout.as_deref().map(checkout_venv_library);
    search_order(
        std::env::var_os(ORT_DYLIB_ENV),
        exe_dir.as_deref(),
        venv_library.as_deref(),
    )
}

/// `<checkout>/.venv/libonnxruntime.so`, where `scripts/setup` puts the library.
pub fn checkout_venv_library(checkout: &Path) -> PathBuf {
    checkout.join(".venv").join(library_file_name())
}

/// The search order for the given `ORT_DYLIB_PATH` value, executable folder and
/// checkout `.venv` library (see the module docs).
pub fn search_order(
    env_value: Option<OsString>,
    exe_dir: Option<&Path>,
    venv_library: Option<&Path>,
) -> Vec<Candidate> {
    if let Some(value) = env_value.filter(|v| !v.is_empty()) {
        return vec![Candidate {
            path: PathBuf::from(value),
            origin: Origin::EnvVar,
        }];
    }
    let mut out = Vec::new();
    if let Some(dir) = exe_dir {
        for folder in [dir.to_path_buf(), dir.join("..").join("lib")] {
            for path in libraries_in(&folder) {
                out.push(Candidate {
                    path,
                    origin: Origin::BesideExecutable,
                });
            }
        }
    }
    if let Some(venv_library) = venv_library {
        out.push(Candidate {
            path: venv_library.to_path_buf(),
            origin: Origin::CheckoutVenv,
        });
    }
    let name = library_file_name();
    let mut names = vec![name.clone()];
    if cfg!(target_os = "linux") {
        names.push(format!("{name}.1"));
    }
    for n in names {
        out.push(Candidate {
            path: PathBuf::from(n),
            origin: Origin::SystemSearch,
        });
    }
    out
}

/// What a file name says about an ONNX Runtime library: `None` if it is not one,
/// `Some(None)` for the unversioned name, `Some(Some([1, 31, 1]))` for a versioned one
/// (`libonnxruntime.so.1.31.1` on Linux, `libonnxruntime.1.31.1.dylib` on macOS).
pub fn version_in_name(file_name: &str) -> Option<Option<Vec<u32>>> {
    let prefix = format!("{}onnxruntime", std::env::consts::DLL_PREFIX);
    let suffix = std::env::consts::DLL_SUFFIX;
    let rest = file_name.strip_prefix(&prefix)?;
    if rest == suffix {
        return Some(None);
    }
    // Linux: `.so.1.31.1`; macOS: `.1.31.1.dylib`.
    let numbers = rest
        .strip_prefix(suffix)
        .and_then(|r| r.strip_prefix('.'))
        .or_else(|| rest.strip_suffix(suffix).and_then(|r| r.strip_prefix('.')))?;
    let parts: Option<Vec<u32>> = numbers.split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| !p.is_empty()).map(Some)
}

/// ONNX Runtime libraries in `folder`: the unversioned name first, then versioned ones,
/// newest first.
fn libraries_in(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut found: Vec<(Option<Vec<u32>>, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((version_in_name(&name)?, e.path()))
        })
        .collect();
    found.sort_by(|(va, pa), (vb, pb)| match (va, vb) {
        (None, None) => pa.cmp(pb),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(a).then_with(|| pa.cmp(pb)),
    });
    found.into_iter().map(|(_, p)| p).collect()
}

/// Why `candidate`, a file, should not even be tried; `None` if it should.
fn precheck(candidate: &Candidate) -> Option<String> {
    let path = &candidate.path;
    let bare_name = path.components().count() == 1 && !path.exists();
    if candidate.origin == Origin::SystemSearch || bare_name {
        return None;
    }
    if !path.exists() {
        return Some("no such file".into());
    }
    if path.is_dir() {
        return Some(format!(
            "is a folder, not the library file (look inside it for {}*)",
            library_file_name()
        ));
    }
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
    let name = real.file_name()?.to_str()?;
    if let Some(Some(v)) = version_in_name(name)
        && (v[0] != 1 || v.get(1).copied().unwrap_or(0) < MIN_MINOR_VERSION)
    {
        return Some(format!(
            "version {} is older than the 1.{MIN_MINOR_VERSION} this build needs",
            join_version(&v)
        ));
    }
    None
}

fn join_version(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

fn load_reason(e: ort::LoadDynamicError) -> String {
    match e {
        ort::LoadDynamicError::MissingApi { .. } => {
            "it is not an ONNX Runtime library (no OrtGetApiBase symbol)".to_string()
        }
        other => other.to_string(),
    }
}

/// Tries `candidates` in order; returns the first that loads, or every attempt.
fn load_first(candidates: &[Candidate]) -> std::result::Result<OrtLibrary, Vec<Attempt>> {
    let mut tried = Vec::new();
    for candidate in candidates {
        if let Some(reason) = precheck(candidate) {
            tried.push(Attempt {
                candidate: candidate.clone(),
                reason,
            });
            continue;
        }
        // An absolute path keeps `ort` from looking beside the executable first; names
        // for the system search go to the dynamic loader as they are.
        let is_file = candidate.origin != Origin::SystemSearch
            && (candidate.path.components().count() > 1 || candidate.path.exists());
        let target = if is_file {
            std::path::absolute(&candidate.path).unwrap_or_else(|_| candidate.path.clone())
        } else {
            candidate.path.clone()
        };
        match ort::init_from(&target) {
            Ok(_) => return Ok(describe_loaded(candidate)),
            Err(e) => tried.push(Attempt {
                candidate: candidate.clone(),
                reason: load_reason(e),
            }),
        }
    }
    Err(tried)
}

/// The [`OrtLibrary`] for a candidate that just loaded.
fn describe_loaded(candidate: &Candidate) -> OrtLibrary {
    // A name the dynamic loader looked up: report the file it picked.
    let path = if candidate.origin == Origin::SystemSearch || !candidate.path.exists() {
        loaded_file().unwrap_or_else(|| candidate.path.clone())
    } else {
        candidate.path.clone()
    };
    let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    let version = real
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(version_in_name)
        .flatten()
        .map(|v| join_version(&v))
        .or_else(version_from_build_info);
    OrtLibrary {
        path,
        origin: candidate.origin,
        version,
    }
}

/// The mapped file that holds ONNX Runtime, read from `/proc/self/maps` (Linux only).
fn loaded_file() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(PathBuf::from)
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(version_in_name)
                .is_some()
        })
}

/// `1.31.1` from the build info's `git-branch=rel-1.31.1`, when it has one.
fn version_from_build_info() -> Option<String> {
    let info = ort::info();
    let rest = info.split("rel-").nth(1)?;
    let v: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (!v.is_empty()).then_some(v)
}

static LOADED: OnceLock<std::result::Result<OrtLibrary, LoadFailure>> = OnceLock::new();

/// Loads ONNX Runtime once per process from the first usable place in the search order
/// (see the module docs) and returns which library that is.
pub fn load() -> Result<&'static OrtLibrary> {
    LOADED
        .get_or_init(|| {
            let candidates = candidates();
            let explicit = candidates.first().filter(|c| c.origin == Origin::EnvVar);
            load_first(&candidates).map_err(|mut tried| match explicit {
                Some(c) if tried.len() == 1 => LoadFailure::Explicit {
                    path: c.path.clone(),
                    reason: tried.remove(0).reason,
                },
                _ => LoadFailure::NotFound(tried),
            })
        })
        .as_ref()
        .map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recognised_with_their_versions() {
        if !cfg!(target_os = "linux") {
            return;
        }
        assert_eq!(version_in_name("libonnxruntime.so"), Some(None));
        assert_eq!(
            version_in_name("libonnxruntime.so.1.31.1"),
            Some(Some(vec![1, 31, 1]))
        );
        assert_eq!(version_in_name("libonnxruntime.so.1"), Some(Some(vec![1])));
        for other in [
            "libonnxruntime_providers_shared.so",
            "libonnxruntime.so.1.x",
            "libonnxruntime.so.",
            "onnxruntime.so",
            "libonnxruntime.so.bak",
        ] {
            assert_eq!(version_in_name(other), None, "{other}");
        }
    }

    #[test]
    fn search_order_follows_the_documented_places() {
        let venv = Path::new("/checkout/.venv/libonnxruntime.so");
        // An explicit variable is the only candidate.
        let c = search_order(Some("/opt/ort/lib.so".into()), None, Some(venv));
        assert_eq!(
            c,
            vec![Candidate {
                path: "/opt/ort/lib.so".into(),
                origin: Origin::EnvVar
            }]
        );
        // An empty one counts as unset.
        let c = search_order(Some("".into()), None, Some(venv));
        assert_eq!(c[0].origin, Origin::CheckoutVenv);

        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        let lib = d.path().join("lib");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&lib).unwrap();
        let name = library_file_name();
        for f in [
            format!("{name}.1.30.0"),
            format!("{name}.1.31.1"),
            "libonnxruntime_providers_shared.so".into(),
            "tpsnet-infer".into(),
        ] {
            std::fs::write(bin.join(f), b"").unwrap();
        }
        std::fs::write(bin.join(&name), b"").unwrap();
        std::fs::write(lib.join(format!("{name}.1.32.0")), b"").unwrap();
        let c = search_order(None, Some(&bin), Some(venv));
        let got: Vec<(String, Origin)> = c
            .iter()
            .map(|c| {
                let p = c.path.strip_prefix(d.path()).unwrap_or(&c.path);
                (p.display().to_string(), c.origin)
            })
            .collect();
        let beside = Origin::BesideExecutable;
        let mut want = vec![
            (format!("bin/{name}"), beside),
            (format!("bin/{name}.1.31.1"), beside),
            (format!("bin/{name}.1.30.0"), beside),
            (format!("bin/../lib/{name}.1.32.0"), beside),
            (venv.display().to_string(), Origin::CheckoutVenv),
            (name.clone(), Origin::SystemSearch),
        ];
        if cfg!(target_os = "linux") {
            want.push((format!("{name}.1"), Origin::SystemSearch));
        }
        assert_eq!(got, want);
    }

    #[test]
    fn unusable_places_are_skipped_with_their_reasons() {
        let d = tempfile::tempdir().unwrap();
        let name = library_file_name();
        let old = d.path().join(format!("{name}.1.2.0"));
        std::fs::write(&old, b"").unwrap();
        let fake = d.path().join(&name);
        std::fs::write(&fake, b"not a library").unwrap();
        let candidate = |path: PathBuf, origin| Candidate { path, origin };
        let tried = load_first(&[
            candidate(d.path().join("missing.so"), Origin::BesideExecutable),
            candidate(d.path().to_path_buf(), Origin::EnvVar),
            candidate(old.clone(), Origin::BesideExecutable),
            candidate(fake.clone(), Origin::CheckoutVenv),
            candidate(
                "libonnxruntime-that-does-not-exist.so".into(),
                Origin::SystemSearch,
            ),
        ])
        .unwrap_err();
        let reasons: Vec<&str> = tried.iter().map(|a| a.reason.as_str()).collect();
        assert_eq!(reasons[0], "no such file");
        assert!(reasons[1].starts_with("is a folder"), "{}", reasons[1]);
        assert!(
            reasons[2].contains("version 1.2.0 is older"),
            "{}",
            reasons[2]
        );
        assert!(
            reasons[3].contains(&*fake.to_string_lossy()),
            "{}",
            reasons[3]
        );
        assert!(
            reasons[4].contains("libonnxruntime-that-does-not-exist.so"),
            "{}",
            reasons[4]
        );
        // The error lists every place with where it came from.
        let msg = Error::OrtNotFound { tried }.to_string();
        for s in [
            "missing.so (beside the executable): no such file",
            "(ORT_DYLIB_PATH): is a folder",
            "(the checkout's .venv)",
            "(the system library path)",
            "ORT_DYLIB_PATH",
        ] {
            assert!(msg.contains(s), "{s:?} not in {msg}");
        }
    }
}
