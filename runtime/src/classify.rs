//! [`Classifier`]: a hash-checked zoo model on ONNX Runtime or tract, safe to share
//! between threads.

use std::path::{Path, PathBuf};
#[cfg(feature = "ort")]
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(feature = "ort")]
use std::sync::{Mutex, MutexGuard};

#[cfg(feature = "ort")]
use ort::session::Session;
#[cfg(feature = "ort")]
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::Serialize;
use tpsnet_zoo::Manifest;
use tpsnet_zoo::tta::{self, TtaMode};

use crate::error::{Error, Result};
use crate::preprocess::{self, IMAGE_FLOATS, InputImage, SIDE};
#[cfg(feature = "ort")]
use crate::session::create_session;
use crate::session::{Backend, Execution, SessionOptions};

/// One class and its softmax probability.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    /// Class index (label).
    pub index: usize,
    /// Class name from the manifest.
    pub class: String,
    /// Softmax probability in [0, 1].
    pub probability: f32,
}

/// The answer for one image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// Most likely class index.
    pub index: usize,
    /// Its name.
    pub class: String,
    /// Its softmax probability.
    pub probability: f32,
    /// The `k` most likely classes, best first (the first is the prediction itself).
    pub top_k: Vec<ClassScore>,
}

/// A zoo model ready to classify images.
///
/// Opening checks the ONNX file's sha256 and size against its manifest *before* the
/// engine sees the bytes, and checks that the graph's input and output match the
/// manifest's contract. The classifier is `Send + Sync`. On ONNX Runtime
/// ([`Backend::Ort`]) it holds a pool of [`SessionOptions::sessions`] sessions, each
/// behind a mutex, and a call takes whichever session is free (waiting if all are busy).
/// On tract ([`Backend::Tract`]) it holds optimised plans shared by all callers and runs
/// a chunk's images one per tract run, [`SessionOptions::threads`] at once (the
/// `tract_engine` module, feature `tract`). Inputs of any length are split into chunks of
/// [`SessionOptions::batch_size`] images.
///
/// ```no_run
/// use tpsnet_runtime::{Classifier, SessionOptions, preprocess};
///
/// # fn main() -> Result<(), tpsnet_runtime::Error> {
/// // A model file with its manifest beside it (or the manifest itself).
/// let classifier = Classifier::open("models/tpsnet-0123abcd.onnx", &SessionOptions::default())?;
/// let image = preprocess::load_file("cat.png".as_ref())?;
/// let predictions = classifier.classify(&[image], 3)?;
/// println!(
///     "{} ({:.1} %) on {}",
///     predictions[0].class,
///     100.0 * predictions[0].probability,
///     classifier.execution().provider
/// );
/// # Ok(())
/// # }
/// ```
pub struct Classifier {
    manifest: Manifest,
    manifest_path: PathBuf,
    model_path: PathBuf,
    engine: Engine,
    execution: Execution,
    batch_size: usize,
    /// `Some((mean, std))` when the graph expects the caller to normalise.
    normalize: Option<([f32; 3], [f32; 3])>,
    /// Test-time augmentation of [`Classifier::logits`] and [`Classifier::classify`].
    tta: TtaMode,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("model", &self.model_path)
            .field("name", &self.manifest.name)
            .field("engine", &self.engine)
            .field("execution", &self.execution)
            .field("tta", &self.tta)
            .finish()
    }
}

/// The engine behind a classifier.
enum Engine {
    #[cfg(feature = "ort")]
    Ort {
        sessions: Vec<Mutex<Session>>,
        next_session: AtomicUsize,
    },
    #[cfg(feature = "tract")]
    Tract(Box<crate::tract_engine::TractEngine>),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "ort")]
            Engine::Ort { sessions, .. } => write!(f, "ort ({} sessions)", sessions.len()),
            #[cfg(feature = "tract")]
            Engine::Tract(t) => write!(f, "tract ({} threads)", t.threads()),
        }
    }
}

/// Where a model's ONNX file and manifest are, given either of them.
pub fn model_and_manifest_paths(path: &Path) -> Result<(PathBuf, PathBuf, Manifest)> {
    if !path.exists() {
        return Err(Error::ModelMissing {
            path: path.to_path_buf(),
        });
    }
    let is_manifest = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let (model, manifest_path) = if is_manifest {
        let m = Manifest::load(path)?;
        (m.model_path(path), path.to_path_buf())
    } else {
        let manifest_path = Manifest::path_for_model(path);
        if !manifest_path.is_file() {
            return Err(Error::ManifestMissing {
                model: path.to_path_buf(),
                manifest: manifest_path,
            });
        }
        (path.to_path_buf(), manifest_path)
    };
    let manifest = Manifest::load(&manifest_path)?;
    if !model.exists() {
        return Err(Error::ModelMissing { path: model });
    }
    Ok((model, manifest_path, manifest))
}

/// Largest model file the runtime reads: protobuf messages, so ONNX models without
/// external data, cannot exceed 2 GiB.
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// Reads a model file and checks it against the manifest's sha256 and size.
pub fn read_verified(model: &Path, manifest_path: &Path, manifest: &Manifest) -> Result<Vec<u8>> {
    let read_error = |source| Error::ModelRead {
        path: model.to_path_buf(),
        source,
    };
    // Sizes first, so a file far larger than its manifest says (or than any ONNX model
    // can be) is refused without being read into memory.
    let size = std::fs::metadata(model).map_err(read_error)?.len();
    if size > MAX_MODEL_BYTES {
        return Err(read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is {size} bytes, over the {MAX_MODEL_BYTES} (2 GiB, protobuf's limit) an ONNX model can have"
            ),
        )));
    }
    if size != manifest.bytes {
        return Err(Error::HashMismatch {
            path: model.to_path_buf(),
            manifest: manifest_path.to_path_buf(),
            expected: manifest.sha256.clone(),
            actual: "not computed".into(),
            expected_bytes: manifest.bytes,
            actual_bytes: size,
        });
    }
    let bytes = std::fs::read(model).map_err(read_error)?;
    let actual = tpsnet_zoo::hashing::sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(&manifest.sha256) || bytes.len() as u64 != manifest.bytes {
        return Err(Error::HashMismatch {
            path: model.to_path_buf(),
            manifest: manifest_path.to_path_buf(),
            expected: manifest.sha256.clone(),
            actual,
            expected_bytes: manifest.bytes,
            actual_bytes: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

fn check_manifest_contract(model: &Path, m: &Manifest) -> Result<()> {
    let bad = |reason: String| Error::Contract {
        path: model.to_path_buf(),
        reason,
    };
    let i = &m.input;
    if i.dtype != "float32" || i.layout != "NCHW" || i.color != "RGB" {
        return Err(bad(format!(
            "manifest input is {} {} {}; this runtime feeds float32 NCHW RGB",
            i.dtype, i.layout, i.color
        )));
    }
    if i.shape[1..] != [3, SIDE as i64, SIDE as i64] {
        return Err(bad(format!(
            "manifest input shape {:?}; this runtime feeds [N, 3, {SIDE}, {SIDE}]",
            i.shape
        )));
    }
    if i.value_range != [0.0, 1.0] {
        return Err(bad(format!(
            "manifest input range {:?}; this runtime feeds values in [0, 1]",
            i.value_range
        )));
    }
    let classes = m.output.shape[1];
    if classes < 1 || classes as usize != m.classes.len() {
        return Err(bad(format!(
            "manifest output has {classes} classes but names {} classes",
            m.classes.len()
        )));
    }
    Ok(())
}

#[cfg(feature = "ort")]
fn describe(t: &ValueType) -> String {
    match t {
        ValueType::Tensor { ty, shape, .. } => format!("{ty:?} tensor of shape {:?}", &shape[..]),
        other => format!("{other:?}"),
    }
}

#[cfg(feature = "ort")]
fn dims_match(actual: &[i64], wanted: &[i64]) -> bool {
    actual.len() == wanted.len()
        && actual
            .iter()
            .zip(wanted)
            .all(|(&a, &w)| w < 0 || a < 0 || a == w)
}

#[cfg(feature = "ort")]
fn check_session_contract(model: &Path, m: &Manifest, s: &Session) -> Result<()> {
    let bad = |reason: String| Error::Contract {
        path: model.to_path_buf(),
        reason,
    };
    let want_in = [-1, 3, SIDE as i64, SIDE as i64];
    let input = s
        .inputs()
        .iter()
        .find(|o| o.name() == m.input.name)
        .ok_or_else(|| {
            bad(format!(
                "the graph has no input `{}` (it has: {})",
                m.input.name,
                s.inputs()
                    .iter()
                    .map(|o| o.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    if s.inputs().len() != 1 {
        return Err(bad(format!(
            "the graph has {} inputs; a zoo model has exactly one",
            s.inputs().len()
        )));
    }
    match input.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } if dims_match(shape, &want_in) => {}
        other => {
            return Err(bad(format!(
                "input `{}` is a {}, the manifest promises a Float32 tensor of shape [N, 3, {SIDE}, {SIDE}]",
                m.input.name,
                describe(other)
            )));
        }
    }
    let want_out = [-1, m.classes.len() as i64];
    let output = s
        .outputs()
        .iter()
        .find(|o| o.name() == m.output.name)
        .ok_or_else(|| {
            bad(format!(
                "the graph has no output `{}` (it has: {})",
                m.output.name,
                s.outputs()
                    .iter()
                    .map(|o| o.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    match output.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } if dims_match(shape, &want_out) => Ok(()),
        other => Err(bad(format!(
            "output `{}` is a {}, the manifest promises a Float32 tensor of shape [N, {}]",
            m.output.name,
            describe(other),
            m.classes.len()
        ))),
    }
}

/// Opens the engine the options ask for on hash-checked `bytes`.
fn open_engine(
    model_path: &Path,
    bytes: &[u8],
    manifest: &Manifest,
    opts: &SessionOptions,
) -> Result<(Engine, Execution)> {
    match opts.backend {
        #[cfg(feature = "ort")]
        Backend::Ort => {
            let pool = opts.sessions.max(1);
            let mut sessions = Vec::with_capacity(pool);
            let mut execution = None;
            for _ in 0..pool {
                let (session, exec) = create_session(model_path, bytes, opts)?;
                check_session_contract(model_path, manifest, &session)?;
                sessions.push(Mutex::new(session));
                execution = Some(exec);
            }
            let engine = Engine::Ort {
                sessions,
                next_session: AtomicUsize::new(0),
            };
            Ok((engine, execution.expect("pool has at least one session")))
        }
        #[cfg(feature = "tract")]
        Backend::Tract => {
            use crate::session::Device;
            let fallback = match opts.device {
                Device::Cpu => None,
                device if opts.allow_cpu_fallback => Some(format!(
                    "the tract backend runs on the CPU only, not on {device}"
                )),
                device => {
                    return Err(Error::BackendDevice {
                        backend: Backend::Tract,
                        device,
                    });
                }
            };
            let engine =
                crate::tract_engine::TractEngine::open(model_path, bytes, manifest, opts.threads)?;
            let execution = Execution {
                backend: Backend::Tract,
                requested: opts.device,
                provider: "tract".into(),
                device: Device::Cpu,
                fallback,
            };
            Ok((Engine::Tract(Box::new(engine)), execution))
        }
        #[allow(unreachable_patterns)]
        backend => Err(Error::BackendNotBuilt { backend }),
    }
}

/// A free session of the pool, else (all busy) the one in turn once it is free.
#[cfg(feature = "ort")]
fn free_session<'a>(sessions: &'a [Mutex<Session>], next: &AtomicUsize) -> MutexGuard<'a, Session> {
    let n = sessions.len();
    let start = next.fetch_add(1, Ordering::Relaxed);
    for i in 0..n {
        if let Ok(s) = sessions[(start + i) % n].try_lock() {
            return s;
        }
    }
    // A poisoned lock only means another thread panicked mid-call; the session itself
    // holds no Rust state to corrupt.
    sessions[start % n]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

impl Classifier {
    /// Opens a model from its manifest (`.json`) or from its ONNX file with the manifest
    /// beside it (`x.onnx` → `x.json`).
    pub fn open(path: impl AsRef<Path>, opts: &SessionOptions) -> Result<Self> {
        let (model_path, manifest_path, manifest) = model_and_manifest_paths(path.as_ref())?;
        if !opts.backend.is_built() {
            return Err(Error::BackendNotBuilt {
                backend: opts.backend,
            });
        }
        let bytes = read_verified(&model_path, &manifest_path, &manifest)?;
        check_manifest_contract(&model_path, &manifest)?;
        let (engine, execution) = open_engine(&model_path, &bytes, &manifest, opts)?;
        let n = &manifest.input.normalization;
        Ok(Classifier {
            normalize: (!n.in_graph).then_some((n.mean, n.std)),
            manifest,
            manifest_path,
            model_path,
            engine,
            execution,
            batch_size: opts.batch_size.max(1),
            tta: TtaMode::None,
        })
    }

    /// The same classifier averaging the views of `tta` in [`Classifier::logits`],
    /// [`Classifier::classify`] and [`Classifier::classify_file`] (`tpsnet_zoo::tta` defines
    /// the views and their weights; `6view` costs six forward passes per image).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), tpsnet_runtime::Error> {
    /// use tpsnet_runtime::{Classifier, SessionOptions, TtaMode};
    /// let clf = Classifier::open("models/airnet.json", &SessionOptions::default())?
    ///     .with_tta(TtaMode::SixView);
    /// println!("{}", clf.classify_file("cat.png".as_ref(), 1)?.class);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_tta(mut self, tta: TtaMode) -> Self {
        self.tta = tta;
        self
    }

    /// The test-time augmentation [`Classifier::logits`] and [`Classifier::classify`] use.
    pub fn tta(&self) -> TtaMode {
        self.tta
    }

    /// The model's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The model's short name (from the manifest).
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Path of the ONNX file.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// Path of the manifest.
    pub fn manifest_path(&self) -> &Path {
        &self.manifest_path
    }

    /// The execution provider actually in use (and any announced fallback).
    pub fn execution(&self) -> &Execution {
        &self.execution
    }

    /// Class names in label order.
    pub fn classes(&self) -> &[String] {
        &self.manifest.classes
    }

    /// Images per inference call.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Logits for `n` images given as one flat NCHW float slice (`n * 3072` values, RGB in
    /// [0, 1]); returns `n * classes` values, row-major. Single view; runs in chunks of
    /// [`Classifier::batch_size`].
    pub fn logits_chw(&self, chw: &[f32]) -> Result<Vec<f32>> {
        self.logits_chw_tta(chw, TtaMode::None)
    }

    /// [`Classifier::logits_chw`] averaged over the views of `tta`. Each chunk of
    /// [`Classifier::batch_size`] images runs as one ONNX Runtime call holding all its
    /// views (`views × images` inputs).
    pub fn logits_chw_tta(&self, chw: &[f32], tta: TtaMode) -> Result<Vec<f32>> {
        if chw.len() % IMAGE_FLOATS != 0 {
            return Err(Error::InputLength {
                got: chw.len(),
                per_image: IMAGE_FLOATS,
            });
        }
        let classes = self.classes().len();
        let n = chw.len() / IMAGE_FLOATS;
        let mut out = Vec::with_capacity(n * classes);
        let mut views = Vec::new();
        for chunk in chw.chunks(self.batch_size * IMAGE_FLOATS) {
            self.run_views(chunk, tta, &mut views, &mut out)?;
        }
        Ok(out)
    }

    /// Logits for preprocessed images (`images.len() * classes` values, row-major),
    /// averaged over the views of [`Classifier::tta`].
    pub fn logits(&self, images: &[InputImage]) -> Result<Vec<f32>> {
        self.logits_tta(images, self.tta)
    }

    /// [`Classifier::logits`] with the views of `tta`.
    pub fn logits_tta(&self, images: &[InputImage], tta: TtaMode) -> Result<Vec<f32>> {
        let classes = self.classes().len();
        let mut out = Vec::with_capacity(images.len() * classes);
        let mut buf = Vec::with_capacity(self.batch_size.min(images.len()) * IMAGE_FLOATS);
        let mut views = Vec::new();
        for chunk in images.chunks(self.batch_size) {
            buf.clear();
            for img in chunk {
                buf.extend_from_slice(img.as_slice());
            }
            self.run_views(&buf, tta, &mut views, &mut out)?;
        }
        Ok(out)
    }

    /// Runs one chunk of images with every view of `tta` in one call and appends the
    /// weighted mean of each image's view logits to `out`. `views` is scratch space.
    fn run_views(
        &self,
        chw: &[f32],
        tta: TtaMode,
        views: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        if tta == TtaMode::None {
            return self.run_chunk(chw, out);
        }
        let spec = tta.views();
        // Image-major: the views of image i are inputs i*V .. i*V+V-1.
        views.clear();
        views.resize(chw.len() * spec.len(), 0.0);
        for (img, dst) in chw
            .chunks_exact(IMAGE_FLOATS)
            .zip(views.chunks_exact_mut(IMAGE_FLOATS * spec.len()))
        {
            for (v, dst) in spec.iter().zip(dst.chunks_exact_mut(IMAGE_FLOATS)) {
                tta::apply_view(img, 3, SIDE, SIDE, *v, dst);
            }
        }
        let mut view_logits = Vec::with_capacity(views.len() / IMAGE_FLOATS * 10);
        self.run_chunk(views, &mut view_logits)?;
        let classes = self.classes().len();
        for per_image in view_logits.chunks_exact(classes * spec.len()) {
            let mut mean = vec![0.0f32; classes];
            for (v, row) in spec.iter().zip(per_image.chunks_exact(classes)) {
                for (m, l) in mean.iter_mut().zip(row) {
                    *m += v.weight * l;
                }
            }
            out.extend_from_slice(&mean);
        }
        Ok(())
    }

    fn run_chunk(&self, chw: &[f32], out: &mut Vec<f32>) -> Result<()> {
        let n = chw.len() / IMAGE_FLOATS;
        if n == 0 {
            return Ok(());
        }
        let normalized;
        let data = match &self.normalize {
            None => chw,
            Some((mean, std)) => {
                let plane = SIDE * SIDE;
                normalized = chw
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let c = (i / plane) % 3;
                        (v - mean[c]) / std[c]
                    })
                    .collect::<Vec<f32>>();
                &normalized[..]
            }
        };
        match &self.engine {
            #[cfg(feature = "ort")]
            Engine::Ort {
                sessions,
                next_session,
            } => self.run_ort(sessions, next_session, data, out),
            #[cfg(feature = "tract")]
            Engine::Tract(engine) => {
                out.extend_from_slice(&engine.run(data)?);
                Ok(())
            }
        }
    }

    #[cfg(feature = "ort")]
    fn run_ort(
        &self,
        sessions: &[Mutex<Session>],
        next_session: &AtomicUsize,
        data: &[f32],
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let mut session = free_session(sessions, next_session);
        self.run_ort_on(&mut session, data, out)
    }

    /// Runs `data` (normalised NCHW) on `session`; appends the logits to `out`.
    #[cfg(feature = "ort")]
    fn run_ort_on(&self, session: &mut Session, data: &[f32], out: &mut Vec<f32>) -> Result<()> {
        let n = data.len() / IMAGE_FLOATS;
        let fail = |source: ort::Error| Error::Inference {
            path: self.model_path.clone(),
            source,
        };
        let input = TensorRef::from_array_view(([n, 3, SIDE, SIDE], data)).map_err(fail)?;
        let outputs = session
            .run(ort::inputs![self.manifest.input.name.as_str() => input])
            .map_err(fail)?;
        let (shape, logits) = outputs[self.manifest.output.name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(fail)?;
        let classes = self.classes().len();
        if shape[..] != [n as i64, classes as i64] {
            return Err(Error::OutputShape {
                path: self.model_path.clone(),
                got: shape.to_vec(),
                expected: [n as i64, classes as i64],
            });
        }
        out.extend_from_slice(logits);
        Ok(())
    }

    /// Runs one full batch ([`Classifier::batch_size`] blank images) through every session
    /// of the pool, so that the memory and the kernel choices a first batch of that size
    /// costs are paid now, not by the first request (like Triton's model warm-up). With
    /// tract, one image per thread. A server may call it before it says the model is
    /// ready (`tpsnet-serve --warm-up`).
    pub fn warm_up(&self) -> Result<()> {
        match &self.engine {
            #[cfg(feature = "ort")]
            Engine::Ort { sessions, .. } => {
                let blank = vec![0.0f32; self.batch_size * IMAGE_FLOATS];
                let mut out = Vec::with_capacity(self.batch_size * self.classes().len());
                for session in sessions {
                    out.clear();
                    let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
                    self.run_ort_on(&mut session, &blank, &mut out)?;
                }
                Ok(())
            }
            #[cfg(feature = "tract")]
            Engine::Tract(engine) => {
                let images = engine.threads().clamp(1, self.batch_size);
                engine.run(&vec![0.0f32; images * IMAGE_FLOATS]).map(|_| ())
            }
        }
    }

    /// Classifies preprocessed images: one [`Prediction`] per image, with the `top_k` most
    /// likely classes (at least 1, at most the number of classes), averaging the views of
    /// [`Classifier::tta`].
    pub fn classify(&self, images: &[InputImage], top_k: usize) -> Result<Vec<Prediction>> {
        let logits = self.logits(images)?;
        Ok(self.predictions(&logits, top_k))
    }

    /// Decodes, preprocesses and classifies one image file.
    pub fn classify_file(&self, path: &Path, top_k: usize) -> Result<Prediction> {
        let img = preprocess::load_file(path)?;
        Ok(self.classify(&[img], top_k)?.remove(0))
    }

    /// Turns rows of logits into predictions.
    pub fn predictions(&self, logits: &[f32], top_k: usize) -> Vec<Prediction> {
        let classes = self.classes().len();
        logits
            .chunks_exact(classes)
            .map(|row| predict(row, self.classes(), top_k))
            .collect()
    }
}

/// Softmax of one row of logits (numerically stable).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Index of the largest value (the first one on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

fn predict(row: &[f32], classes: &[String], top_k: usize) -> Prediction {
    let probs = softmax(row);
    let mut order: Vec<usize> = (0..row.len()).collect();
    // Stable sort: ties keep the lower index first, matching `argmax`.
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let k = top_k.clamp(1, row.len());
    let top: Vec<ClassScore> = order[..k]
        .iter()
        .map(|&i| ClassScore {
            index: i,
            class: classes[i].clone(),
            probability: probs[i],
        })
        .collect();
    Prediction {
        index: top[0].index,
        class: top[0].class.clone(),
        probability: top[0].probability,
        top_k: top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_are_sorted_and_clamped() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let p = predict(&[0.0, 2.0, 1.0], &classes, 5);
        assert_eq!(p.index, 1);
        assert_eq!(p.class, "b");
        assert_eq!(
            p.top_k.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![1, 2, 0]
        );
        let total: f32 = p.top_k.iter().map(|s| s.probability).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(predict(&[0.0, 2.0, 1.0], &classes, 0).top_k.len(), 1);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        let s = softmax(&[1000.0, 1000.0]);
        assert_eq!(s, vec![0.5, 0.5]);
    }
}
