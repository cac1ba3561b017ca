//! Running a model (fp32 or int8) on training images with ONNX Runtime, through the
//! runtime crate's sessions: logits, or every named intermediate tensor.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorRef;
use tpsnet_runtime::SessionOptions;

use crate::error::{Error, Result};
use crate::images::TrainingImages;

/// Called with each batch's size and the values of the requested tensors.
pub type BatchVisitor<'a> = dyn FnMut(usize, &[&[f32]]) -> Result<()> + 'a;

/// One ONNX Runtime session on a model held in memory.
pub struct Engine {
    session: Session,
    path: PathBuf,
    input: String,
    output: String,
}

// ONNX Runtime's session has no Debug; name the model and its tensors instead.
impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.path)
            .field("input", &self.input)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A CPU session with `threads` intra-op threads (0: ONNX Runtime's default).
    /// `path` names the model in errors.
    pub fn new(
        path: &Path,
        bytes: &[u8],
        input: &str,
        output: &str,
        threads: usize,
    ) -> Result<Self> {
        let opts = SessionOptions::builder().threads(threads).build();
        let (session, _) = tpsnet_runtime::session::create_session(path, bytes, &opts)?;
        Ok(Engine {
            session,
            path: path.to_path_buf(),
            input: input.to_string(),
            output: output.to_string(),
        })
    }

    fn fail(&self, reason: impl std::fmt::Display) -> Error {
        Error::Output {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// Runs images `indices` in batches of `batch`; calls `visit` with each batch's size
    /// and the values of every tensor in `names` (in that order).
    pub fn for_each_batch(
        &mut self,
        images: &TrainingImages,
        indices: &[usize],
        batch: usize,
        names: &[String],
        visit: &mut BatchVisitor,
    ) -> Result<()> {
        for chunk in indices.chunks(batch.max(1)) {
            let data = images.batch(chunk);
            let input = TensorRef::from_array_view(([chunk.len(), 3, 32, 32], &data[..]))
                .map_err(|e| self.fail(e))?;
            let outputs = self
                .session
                .run(ort::inputs![self.input.as_str() => input])
                .map_err(|e| Error::Output {
                    path: self.path.clone(),
                    reason: format!("inference failed: {e}"),
                })?;
            let mut slices = Vec::with_capacity(names.len());
            for name in names {
                let value = outputs.get(name.as_str()).ok_or_else(|| Error::Output {
                    path: self.path.clone(),
                    reason: format!("no output `{name}`"),
                })?;
                let (_, v) = value
                    .try_extract_tensor::<f32>()
                    .map_err(|e| Error::Output {
                        path: self.path.clone(),
                        reason: format!("output `{name}`: {e}"),
                    })?;
                slices.push(v);
            }
            visit(chunk.len(), &slices)?;
        }
        Ok(())
    }

    /// Logits of images `indices` (`indices.len() × classes`, row-major).
    pub fn logits(
        &mut self,
        images: &TrainingImages,
        indices: &[usize],
        batch: usize,
    ) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        let name = vec![self.output.clone()];
        self.for_each_batch(images, indices, batch, &name, &mut |_, v| {
            out.extend_from_slice(v[0]);
            Ok(())
        })?;
        Ok(out)
    }
}
