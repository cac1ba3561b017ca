//! Finding the models folder at run time, so that built and installed commands and
//! programs that embed the runtime find published models without configuration.
//!
//! In this order ([`locate_models_dir`]):
//!
//! 1. an explicit folder (`--models-dir`), or else `$TPSNET_MODELS`: used as given;
//! 2. otherwise the first of these that exists: `./models` (the current folder), `models/`
//!    beside the executable, and the `models/` of the checkout a program names in its
//!    [`SearchPlaces`] (the zoo's commands name the checkout they were built in, so that
//!    binaries built or `cargo install`ed from a checkout find the shipped zoo).
//!
//! The library compiles in no path: a program that wants the checkout searched says so
//! once at start-up, `SearchPlaces::for_workspace_member(env!("CARGO_MANIFEST_DIR")).install()`.
//! The same places are searched for ONNX Runtime ([`crate::ort_library`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Where a models folder comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ModelsDirOrigin {
    /// Given by the caller (a command's `--models-dir`).
    Explicit,
    /// `$TPSNET_MODELS`.
    EnvVar,
    /// `models/` in the current folder.
    CurrentDir,
    /// `models/` beside the executable.
    BesideExecutable,
    /// `models/` of the checkout this crate was compiled in.
    Checkout,
}

impl std::fmt::Display for ModelsDirOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelsDirOrigin::Explicit => "given explicitly",
            ModelsDirOrigin::EnvVar => "TPSNET_MODELS",
            ModelsDirOrigin::CurrentDir => "the current folder",
            ModelsDirOrigin::BesideExecutable => "beside the executable",
            ModelsDirOrigin::Checkout => "the checkout",
        })
    }
}

/// A models folder and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ModelsDir {
    /// The folder (it need not exist when given explicitly or by `$TPSNET_MODELS`).
    pub path: PathBuf,
    /// Where the path comes from.
    pub origin: ModelsDirOrigin,
}

impl std::fmt::Display for ModelsDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.origin)
    }
}

/// Places only the program knows, searched after the ones every process has (the current
/// folder, beside the executable) for the models folder and for ONNX Runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchPlaces {
    /// A source checkout: its `models/` and `.venv/` are searched.
    pub checkout: Option<PathBuf>,
}

static INSTALLED: OnceLock<SearchPlaces> = OnceLock::new();

impl SearchPlaces {
    /// The checkout that holds the workspace member `crate_dir` (a crate's
    /// `env!("CARGO_MANIFEST_DIR")`): its parent folder.
    pub fn for_workspace_member(crate_dir: &str) -> Self {
        let crate_dir = Path::new(crate_dir);
        SearchPlaces {
            checkout: Some(crate_dir.parent().unwrap_or(crate_dir).to_path_buf()),
        }
    }

    /// Makes these the places of this process, for every later search; call it at the
    /// start of `main`, before anything looks for models or ONNX Runtime. The first call
    /// wins; without one, only the places every process has are searched.
    pub fn install(self) {
        let _ = INSTALLED.set(self);
    }

    /// The places [`SearchPlaces::install`] made this process's (none by default).
    pub fn installed() -> &'static SearchPlaces {
        INSTALLED.get_or_init(SearchPlaces::default)
    }
}

/// The places a models folder is looked for, in order (see the module docs), with this
/// process's [`SearchPlaces`]; only the first is returned when it is explicit or from
/// `$TPSNET_MODELS`.
pub fn models_dir_candidates(explicit: Option<&Path>) -> Vec<ModelsDir> {
    models_dir_candidates_in(explicit, SearchPlaces::installed())
}

/// [`models_dir_candidates`] with the given places.
pub fn models_dir_candidates_in(explicit: Option<&Path>, places: &SearchPlaces) -> Vec<ModelsDir> {
    let dir = |path: PathBuf, origin| ModelsDir { path, origin };
    if let Some(p) = explicit {
        return vec![dir(p.to_path_buf(), ModelsDirOrigin::Explicit)];
    }
    if let Some(v) = std::env::var_os(crate::registry::MODELS_ENV).filter(|v| !v.is_empty()) {
        return vec![dir(PathBuf::from(v), ModelsDirOrigin::EnvVar)];
    }
    let mut out = Vec::new();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    out.push(dir(cwd.join("models"), ModelsDirOrigin::CurrentDir));
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir(
            exe_dir.join("models"),
            ModelsDirOrigin::BesideExecutable,
        ));
    }
    if let Some(checkout) = &places.checkout {
        out.push(dir(checkout.join("models"), ModelsDirOrigin::Checkout));
    }
    out
}

/// The models folder: `explicit`, else `$TPSNET_MODELS` (both used as given, existing or
/// not), else the first existing of `./models`, `models/` beside the executable and the
/// checkout's `models/` (when [`SearchPlaces`] name one); [`Error::ModelsDirNotFound`]
/// lists them when none exists.
pub fn locate_models_dir(explicit: Option<&Path>) -> Result<ModelsDir> {
    let candidates = models_dir_candidates(explicit);
    let given = matches!(
        candidates[0].origin,
        ModelsDirOrigin::Explicit | ModelsDirOrigin::EnvVar
    );
    if given {
        return Ok(candidates[0].clone());
    }
    match candidates.iter().find(|c| c.path.is_dir()) {
        Some(found) => Ok(found.clone()),
        None => Err(Error::ModelsDirNotFound { tried: candidates }),
    }
}

/// The models folder's path as [`locate_models_dir`] finds it; when no folder exists,
/// the first place searched (whose absence scanning then reports).
pub fn models_dir(explicit: Option<&Path>) -> PathBuf {
    match locate_models_dir(explicit) {
        Ok(dir) => dir.path,
        Err(_) => models_dir_candidates(explicit)[0].path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{find_model, resolve_model};

    #[test]
    fn an_explicit_folder_is_used_as_given() {
        let missing = Path::new("/nonexistent/models");
        let dir = locate_models_dir(Some(missing)).unwrap();
        assert_eq!(dir.path, missing);
        assert_eq!(dir.origin, ModelsDirOrigin::Explicit);
        assert_eq!(models_dir_candidates(Some(missing)).len(), 1);
        // Scanning it then says there is nothing there, naming it.
        let e = resolve_model(None, &dir.path).unwrap_err();
        assert!(matches!(e, Error::NoModels { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/models"), "{e}");
    }

    #[test]
    fn a_model_file_needs_no_models_folder() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("m.json");
        std::fs::write(&file, b"{}").unwrap();
        let arg = file.to_str().unwrap();
        // Even with a models folder that does not exist.
        let missing = d.path().join("none");
        assert_eq!(find_model(Some(arg), Some(&missing)).unwrap(), file);
        let e = find_model(Some("gone.onnx"), Some(&missing)).unwrap_err();
        assert!(matches!(e, Error::ModelMissing { .. }), "{e}");
        // A name is looked up in the folder.
        let e = find_model(Some("tpsnet"), Some(&missing)).unwrap_err();
        assert!(matches!(e, Error::NoModels { .. }), "{e}");
    }

    #[test]
    fn the_checkout_is_searched_only_when_a_program_names_it() {
        let none = models_dir_candidates_in(None, &SearchPlaces::default());
        assert!(none.iter().all(|c| c.origin != ModelsDirOrigin::Checkout));
        let places = SearchPlaces::for_workspace_member("/src/zoo/runtime");
        let with = models_dir_candidates_in(None, &places);
        let last = with.last().unwrap();
        assert_eq!(last.origin, ModelsDirOrigin::Checkout);
        assert_eq!(last.path, Path::new("/src/zoo/models"));
        assert_eq!(with.len(), none.len() + 1);
    }

    #[test]
    fn not_found_lists_every_place() {
        let tried = vec![
            ModelsDir {
                path: "/a/models".into(),
                origin: ModelsDirOrigin::CurrentDir,
            },
            ModelsDir {
                path: "/b/models".into(),
                origin: ModelsDirOrigin::BesideExecutable,
            },
        ];
        let msg = Error::ModelsDirNotFound { tried }.to_string();
        assert!(
            msg.contains("/a/models (the current folder), /b/models (beside the executable)"),
            "{msg}"
        );
        assert!(msg.contains("TPSNET_MODELS"), "{msg}");
    }
}
