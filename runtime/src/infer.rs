//! Classifying files and folders: what `tpsnet-infer` does, as library functions.

use std::path::{Path, PathBuf};

use crate::classify::{Classifier, Prediction};
use crate::error::Result;
use crate::preprocess::{self, ImageError};

/// File extensions picked up when walking a folder (case-insensitive). Files named on the
/// command line are always tried, whatever their name.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"];

/// Why the inputs cannot be classified at all.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("no inputs given; pass image files and/or folders")]
    /// No image file or folder was given.
    Nothing,
    #[error(
        "folder {0} contains no images (looked recursively for .png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff); point at a folder with images"
    )]
    /// A folder holds no file with an image extension ([`IMAGE_EXTENSIONS`]), searched recursively.
    EmptyFolder(PathBuf),
    #[error("cannot list folder {path}: {reason}")]
    /// A folder cannot be listed; `reason` is the I/O error.
    Folder {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
}

/// The files to classify, and the inputs that were rejected while collecting them.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Files in command-line order; each folder's files sorted by path.
    pub files: Vec<PathBuf>,
    /// Arguments that do not exist or are not files/folders.
    pub rejected: Vec<ImageError>,
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let entries = std::fs::read_dir(dir).map_err(|e| InputError::Folder {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        // Do not follow symlinked folders (no cycles); symlinked files are fine.
        let Ok(link_meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if link_meta.is_dir() {
            walk(&p, out)?;
        } else if has_image_extension(&p) {
            // Broken links, FIFOs and the like are kept so that they are reported.
            out.push(p);
        }
    }
    Ok(())
}

/// Expands files and folders (recursively) into the list of files to classify.
///
/// A folder without any image file is an error; a path that does not exist is rejected
/// (reported, not fatal).
pub fn collect_inputs(args: &[PathBuf]) -> Result<Inputs, InputError> {
    if args.is_empty() {
        return Err(InputError::Nothing);
    }
    let mut inputs = Inputs::default();
    for arg in args {
        match std::fs::metadata(arg) {
            Ok(m) if m.is_dir() => {
                let before = inputs.files.len();
                walk(arg, &mut inputs.files)?;
                if inputs.files.len() == before {
                    return Err(InputError::EmptyFolder(arg.clone()));
                }
            }
            Ok(_) => inputs.files.push(arg.clone()),
            Err(e) => inputs.rejected.push(ImageError::Read {
                source_name: arg.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }
    Ok(inputs)
}

/// Decodes (in parallel) and classifies `files` in batches of the classifier's batch
/// size, calling `on_result` once per file in order. Unreadable images are passed on as
/// errors; only an inference failure stops the run.
pub fn classify_files(
    classifier: &Classifier,
    files: &[PathBuf],
    top_k: usize,
    mut on_result: impl FnMut(&Path, std::result::Result<Prediction, ImageError>),
) -> Result<()> {
    for chunk in files.chunks(classifier.batch_size()) {
        let decoded = preprocess::load_files(chunk);
        let mut ok = Vec::with_capacity(decoded.len());
        let mut slots = Vec::with_capacity(decoded.len());
        for r in decoded {
            match r {
                Ok(img) => {
                    slots.push(Ok(ok.len()));
                    ok.push(img);
                }
                Err(e) => slots.push(Err(e)),
            }
        }
        let mut predictions = classifier
            .classify(&ok, top_k)?
            .into_iter()
            .map(Some)
            .collect::<Vec<_>>();
        for (path, slot) in chunk.iter().zip(slots) {
            match slot {
                Ok(i) => on_result(path, Ok(predictions[i].take().expect("each used once"))),
                Err(e) => on_result(path, Err(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_sorted_and_filtered() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("b/c")).unwrap();
        for f in [
            "b/c/z.PNG",
            "b/a.jpg",
            "b/notes.txt",
            "b/.hidden.png",
            "y.webp",
        ] {
            std::fs::write(d.path().join(f), b"x").unwrap();
        }
        let got = collect_inputs(&[d.path().to_path_buf()]).unwrap();
        let rel: Vec<_> = got
            .files
            .iter()
            .map(|p| {
                p.strip_prefix(d.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(rel, vec!["b/a.jpg", "b/c/z.PNG", "y.webp"]);

        std::fs::create_dir(d.path().join("empty")).unwrap();
        std::fs::write(d.path().join("empty/readme.txt"), b"x").unwrap();
        let e = collect_inputs(&[d.path().join("empty")]).unwrap_err();
        assert!(matches!(e, InputError::EmptyFolder(_)), "{e}");

        let got = collect_inputs(&[d.path().join("missing.png"), d.path().join("y.webp")]).unwrap();
        assert_eq!(got.files.len(), 1);
        assert_eq!(got.rejected.len(), 1);
        assert!(got.rejected[0].to_string().contains("missing.png"));
        assert!(matches!(collect_inputs(&[]), Err(InputError::Nothing)));
    }
}
