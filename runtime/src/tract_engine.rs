//! The tract backend (feature `tract`): zoo models on tract, a pure-Rust ONNX engine, with
//! no native library.
//!
//! * Before tract builds anything, the graph is read and every node's operator is looked
//!   up in tract's ONNX operator table: an operator tract does not implement (the
//!   `com.microsoft` contrib operators of the int8 files, `QLinearAdd`,
//!   `QLinearAveragePool`, `Gelu`) is an [`Error::TractUnsupportedOp`] naming the file, the
//!   node and the operator, and pointing at the ONNX Runtime backend.
//! * The graph's input and output are checked against the manifest's contract, as on ONNX
//!   Runtime.
//! * The model is typed and decluttered once with a symbolic batch size. Each batch size
//!   actually run gets its own plan, optimised for that fixed shape (tract's
//!   `into_optimized` on the concretised model) and cached; past
//!   [`MAX_FIXED_SHAPE_PLANS`] sizes, further sizes share one plan optimised with the
//!   symbolic batch size, so a server fed every size from 1 to 256 does not hold 256
//!   copies of the weights.
//! * Before that, every 3×3, stride-1 convolution is replaced by a [`direct_conv`]
//!   operator, computed by AVX-512 or AVX2 kernels of this crate instead of tract's
//!   im2col and matrix product (1.3–1.9× the throughput on the zoo's models; where the CPU
//!   has neither, tract's own convolutions stay). A lone image's big convolutions share
//!   their work out over the rayon pool (the engine's own, if it has one).
//! * A tract run is single-threaded and gained nothing from batching (its convolutions
//!   cost more per image in a batch of 128 than one image at a time; with the direct
//!   kernels, runs of 1 to 16 images measure the same), so a batch is run
//!   [`IMAGES_PER_RUN`] image(s) per tract run, [`TractEngine::threads`] runs at once on a
//!   rayon pool (by default rayon's, one thread per core).
//! * tract reports errors as `anyhow` chains naming the node (`#12 "conv3" Conv`); they
//!   become [`Error::TractModel`] / [`Error::TractInference`] with the whole chain. A
//!   panic inside tract while loading is caught and reported the same way.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rayon::prelude::*;
use tpsnet_zoo::Manifest;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::knobs::KnobScope;

use crate::error::{Error, Result};
use crate::preprocess::{IMAGE_FLOATS, SIDE};

pub mod direct_conv;

/// How many batch sizes get a plan of their own (each holds the weights, packed for its
/// shape); further sizes share the symbolic-batch plan.
pub const MAX_FIXED_SHAPE_PLANS: usize = 8;

/// Images per tract run. Measured on a 2-core Xeon (docs/benchmarks.md, "tract vs ONNX
/// Runtime"): batches of 256 split into runs of 128, 32, 8 and 1 image(s) gave `tpsnet`
/// 44, 56, 83 and 107 img/s and `resnet20` 484, 894 and 1,285 img/s (128, 8, 1); for
/// `airnet-wide` 8 and 1 were within noise of each other (287 vs 278 img/s), both well
/// above 128 (256 img/s).
pub const IMAGES_PER_RUN: usize = 1;

type Plan = Arc<TypedRunnableModel>;

/// tract's knobs (read while a plan is optimised) that make every convolution copy its
/// patches out before the matrix product (eager im2col) instead of gathering them on the
/// fly: lazy only from a kernel of a million taps or a scratch of a TiB.
const EAGER_IM2COL: [(&str, &str); 2] = [
    ("TRACT_LAZY_IM2COL_MIN_KERNEL", "1000000"),
    ("TRACT_LAZY_IM2COL_MAX_EAGER_BYTES", "1099511627776"),
];

/// Timed runs of each candidate plan when a fixed-shape plan is chosen.
const PLAN_TRIALS: usize = 3;

/// A zoo model loaded into tract: the decluttered graph and its optimised plans.
pub struct TractEngine {
    path: PathBuf,
    classes: usize,
    /// Typed and decluttered, batch size symbolic.
    model: TypedModel,
    batch: Symbol,
    /// Convolutions computed by [`direct_conv`] instead of tract's im2col.
    direct_convolutions: usize,
    plans: Mutex<HashMap<usize, Plan>>,
    symbolic_plan: OnceLock<Plan>,
    /// Held while a fixed-shape plan is built and timed, so that runs asking for the same
    /// new size at once wait for it instead of each building (and timing) both plans.
    building: Mutex<()>,
    /// Its own pool when a thread count was asked for; else rayon's global pool.
    pool: Option<rayon::ThreadPool>,
}

impl std::fmt::Debug for TractEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractEngine")
            .field("path", &self.path)
            .field("threads", &self.threads())
            .finish_non_exhaustive()
    }
}

/// The text of a tract error with its whole chain of contexts.
fn chain(e: &TractError) -> String {
    format!("{e:#}")
}

/// The message of a caught panic.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("tract panicked: {what}")
}

impl TractEngine {
    /// Loads `bytes` (already hash-checked against `manifest`) for running `threads` tract
    /// runs at once (0: on rayon's global pool, one per core). `path` names the model in
    /// errors. The 3×3 convolutions run on [`direct_conv`]'s kernels where
    /// [`direct_conv::Isa::chosen`] names some.
    pub fn open(path: &Path, bytes: &[u8], manifest: &Manifest, threads: usize) -> Result<Self> {
        Self::open_with(path, bytes, manifest, threads, direct_conv::Isa::chosen())
    }

    /// [`TractEngine::open`] with the direct convolution kernels named (None: tract's own
    /// convolutions throughout).
    pub fn open_with(
        path: &Path,
        bytes: &[u8],
        manifest: &Manifest,
        threads: usize,
        direct: Option<direct_conv::Isa>,
    ) -> Result<Self> {
        let model_error = |stage: &'static str, reason: String| Error::TractModel {
            path: path.to_path_buf(),
            stage,
            reason,
        };
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| model_error("read", chain(&e)))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| model_error("read", "the file holds no graph".into()))?;
        check_operators(path, graph, &onnx.op_register.0)?;
        check_contract(path, graph, manifest)?;

        let loaded = catch_unwind(AssertUnwindSafe(
            || -> TractResult<(TypedModel, Symbol, usize)> {
                let mut model = onnx.model_for_proto_model(&proto)?;
                model.select_outputs_by_name([&manifest.output.name])?;
                let batch = model.symbols.sym("N");
                let shape: [TDim; 4] = [batch.clone().into(), 3.into(), SIDE.into(), SIDE.into()];
                model.set_input_fact(0, f32::fact(shape).into())?;
                let mut typed = model.into_typed()?.into_decluttered()?;
                let direct = match direct {
                    Some(isa) => direct_conv::rewrite(&mut typed, isa)?,
                    None => 0,
                };
                Ok((typed, batch, direct))
            },
        ));
        let (model, batch, direct_convolutions) = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => return Err(model_error("load", chain(&e))),
            Err(payload) => return Err(model_error("load", panic_text(&*payload))),
        };
        let classes = manifest.classes.len();
        let out = model
            .output_fact(0)
            .map_err(|e| model_error("load", chain(&e)))?;
        let dims: Vec<String> = out.shape.iter().map(|d| d.to_string()).collect();
        if out.datum_type != f32::datum_type()
            || dims.len() != 2
            || out.shape[1] != TDim::from(classes)
        {
            return Err(Error::Contract {
                path: path.to_path_buf(),
                reason: format!(
                    "output `{}` is a {:?} tensor of shape [{}], the manifest promises a Float32 tensor of shape [N, {classes}]",
                    manifest.output.name,
                    out.datum_type,
                    dims.join(", ")
                ),
            });
        }
        let pool = if threads == 0 {
            None
        } else {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("tpsnet-tract-{i}"))
                .build()
                .map_err(|e| {
                    model_error("start", format!("cannot start {threads} threads: {e}"))
                })?;
            Some(pool)
        };
        Ok(TractEngine {
            path: path.to_path_buf(),
            classes,
            model,
            batch,
            direct_convolutions,
            plans: Mutex::new(HashMap::new()),
            symbolic_plan: OnceLock::new(),
            building: Mutex::new(()),
            pool,
        })
    }

    /// How many tract runs go at once.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or_else(
            rayon::current_num_threads,
            rayon::ThreadPool::current_num_threads,
        )
    }

    /// How many of the model's convolutions run on [`direct_conv`]'s kernels instead of
    /// tract's im2col and matrix product (0 on a CPU with neither AVX-512F nor AVX2, or
    /// with `TPSNET_TRACT_DIRECT_CONV=off`).
    pub fn direct_convolutions(&self) -> usize {
        self.direct_convolutions
    }

    /// Batch sizes that have a fixed-shape plan so far, ascending.
    pub fn planned_batch_sizes(&self) -> Vec<usize> {
        let plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sizes: Vec<usize> = plans.keys().copied().collect();
        sizes.sort_unstable();
        sizes
    }

    /// An error of building a plan, naming the model.
    fn optimise_error(&self, reason: String) -> Error {
        Error::TractModel {
            path: self.path.clone(),
            stage: "optimise",
            reason,
        }
    }

    fn optimise(&self, model: TypedModel) -> Result<Plan> {
        let built = catch_unwind(AssertUnwindSafe(|| model.into_optimized()?.into_runnable()));
        match built {
            Ok(Ok(plan)) => Ok(plan),
            Ok(Err(e)) => Err(self.optimise_error(chain(&e))),
            Err(payload) => Err(self.optimise_error(panic_text(&*payload))),
        }
    }

    /// The faster of tract's two plans for the fixed-shape `model` (batches of `n`): its
    /// default, where 3×3 convolutions gather their patches on the fly (lazy im2col), and
    /// one where they copy the patches out first (eager im2col, [`EAGER_IM2COL`]; tract
    /// keeps a convolution whose output channels fit one row panel of its matrix kernel
    /// lazy either way). Which wins depends on the model: on a 2-core Xeon, eager took
    /// `airnet-wide` from 0.55× to 0.64× ONNX Runtime's throughput but `tpsnet` from
    /// 0.41× down to 0.36× (docs/benchmarks.md, "Lazy or eager im2col"). So both are
    /// built and timed, alternately, on blank images ([`PLAN_TRIALS`] runs each, the
    /// median kept), and the faster stays. Both compute the same sums; only the memory
    /// traffic differs.
    fn fastest_plan(&self, model: TypedModel, n: usize) -> Result<Plan> {
        let lazy = self.optimise(model.clone())?;
        let scope = KnobScope::new(EAGER_IM2COL).map_err(|e| self.optimise_error(chain(&e)))?;
        let eager = scope.enter(|| self.optimise(model))?;
        let blank =
            Tensor::zero::<f32>(&[n, 3, SIDE, SIDE]).map_err(|e| self.optimise_error(chain(&e)))?;
        let time = |plan: &Plan| -> Result<f64> {
            let t = std::time::Instant::now();
            plan.run(tvec!(blank.clone().into_tvalue()))
                .map_err(|e| Error::TractInference {
                    path: self.path.clone(),
                    reason: chain(&e),
                })?;
            Ok(t.elapsed().as_secs_f64())
        };
        // One untimed run each: first runs allocate.
        time(&lazy)?;
        time(&eager)?;
        let (mut lazy_s, mut eager_s) = (Vec::new(), Vec::new());
        for _ in 0..PLAN_TRIALS {
            lazy_s.push(time(&lazy)?);
            eager_s.push(time(&eager)?);
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Ok(if median(eager_s) < median(lazy_s) {
            eager
        } else {
            lazy
        })
    }

    /// The plan for batches of `n` images: a cached fixed-shape one, a new one while fewer
    /// than [`MAX_FIXED_SHAPE_PLANS`] exist, else the shared symbolic-batch one.
    fn plan(&self, n: usize) -> Result<Plan> {
        let cached = {
            let plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
            match plans.get(&n) {
                Some(plan) => return Ok(plan.clone()),
                None => plans.len() < MAX_FIXED_SHAPE_PLANS,
            }
        };
        if !cached {
            if let Some(plan) = self.symbolic_plan.get() {
                return Ok(plan.clone());
            }
            let plan = self.optimise(self.model.clone())?;
            return Ok(self.symbolic_plan.get_or_init(|| plan).clone());
        }
        // One build at a time; whoever waited finds the plan made meanwhile. The plans'
        // own lock is not held while building, so cached sizes keep running.
        let _building = self.building.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(plan) = self
            .plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&n)
        {
            return Ok(plan.clone());
        }
        let subs = HashMap::from([(self.batch.clone(), TDim::from(n))]);
        let fixed = self
            .model
            .set_symbols(&subs)
            .map_err(|e| self.optimise_error(chain(&e)))?;
        let plan = self.fastest_plan(fixed, n)?;
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(plans.entry(n).or_insert(plan).clone())
    }

    /// Logits of the images in `chw` (NCHW floats, already normalised as the graph
    /// expects), `classes` per image, row-major; the batch runs [`IMAGES_PER_RUN`]
    /// image(s) per tract run, [`TractEngine::threads`] runs at once.
    pub fn run(&self, chw: &[f32]) -> Result<Vec<f32>> {
        let n = chw.len() / IMAGE_FLOATS;
        if n == 0 {
            return Ok(Vec::new());
        }
        if n <= IMAGES_PER_RUN {
            // In the engine's pool, if it has one: a lone image's direct convolutions share
            // their blocks out over the pool's threads, never more.
            return match &self.pool {
                Some(pool) => pool.install(|| self.run_part(chw)),
                None => self.run_part(chw),
            };
        }
        let run_all = || {
            chw.par_chunks(IMAGES_PER_RUN * IMAGE_FLOATS)
                .map(|part| self.run_part(part))
                .collect::<Result<Vec<Vec<f32>>>>()
        };
        let outputs = match &self.pool {
            Some(pool) => pool.install(run_all),
            None => run_all(),
        }?;
        Ok(outputs.concat())
    }

    fn run_part(&self, chw: &[f32]) -> Result<Vec<f32>> {
        let n = chw.len() / IMAGE_FLOATS;
        let plan = self.plan(n)?;
        let fail = |e: TractError| Error::TractInference {
            path: self.path.clone(),
            reason: chain(&e),
        };
        let input = Tensor::from_shape(&[n, 3, SIDE, SIDE], chw).map_err(fail)?;
        let outputs = plan.run(tvec!(input.into_tvalue())).map_err(fail)?;
        let logits = &outputs[0];
        if logits.shape() != [n, self.classes] {
            return Err(Error::OutputShape {
                path: self.path.clone(),
                got: logits.shape().iter().map(|&d| d as i64).collect(),
                expected: [n as i64, self.classes as i64],
            });
        }
        let view = logits.try_as_plain_ram().map_err(fail)?;
        Ok(view.as_slice::<f32>().map_err(fail)?.to_vec())
    }
}

/// Refuses a graph with a node whose operator tract does not implement: one outside the
/// standard ONNX domain (ONNX Runtime's `com.microsoft` contrib operators), or a standard
/// one missing from tract's table. Subgraphs (`If`, `Loop`, `Scan` bodies) are searched
/// too.
fn check_operators<V>(
    path: &Path,
    graph: &pb::GraphProto,
    known: &HashMap<String, V>,
) -> Result<()> {
    for (i, node) in graph.node.iter().enumerate() {
        let standard = node.domain.is_empty() || node.domain == "ai.onnx";
        if !standard || !known.contains_key(&node.op_type) {
            let name = if !node.name.is_empty() {
                node.name.clone()
            } else if let Some(out) = node.output.first().filter(|o| !o.is_empty()) {
                out.clone()
            } else {
                format!("#{i}")
            };
            return Err(Error::TractUnsupportedOp {
                path: path.to_path_buf(),
                node: name,
                op: node.op_type.clone(),
                domain: node.domain.clone(),
            });
        }
        for attr in &node.attribute {
            for sub in attr.g.iter().chain(&attr.graphs) {
                check_operators(path, sub, known)?;
            }
        }
    }
    Ok(())
}

/// `[N, 3, 32, 32]`-style text of a value's declared type, and whether it is float32.
fn declared(value: &pb::ValueInfoProto) -> (bool, Vec<Option<i64>>, String) {
    use pb::tensor_shape_proto::dimension::Value as Dim;
    let Some(pb::type_proto::Value::TensorType(t)) =
        value.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return (false, Vec::new(), "value that is not a tensor".into());
    };
    let dims: Vec<(Option<i64>, String)> = t
        .shape
        .iter()
        .flat_map(|s| &s.dim)
        .map(|d| match &d.value {
            Some(Dim::DimValue(v)) => (Some(*v), v.to_string()),
            Some(Dim::DimParam(p)) => (None, p.clone()),
            None => (None, "?".into()),
        })
        .collect();
    let float = t.elem_type == pb::tensor_proto::DataType::Float as i32;
    let text = format!(
        "{} tensor of shape [{}]",
        pb::tensor_proto::DataType::try_from(t.elem_type)
            .map(|d| format!("{d:?}"))
            .unwrap_or_else(|_| format!("type {}", t.elem_type)),
        dims.iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    (float, dims.into_iter().map(|(v, _)| v).collect(), text)
}

fn dims_fit(actual: &[Option<i64>], wanted: &[Option<i64>]) -> bool {
    actual.len() == wanted.len()
        && actual
            .iter()
            .zip(wanted)
            .all(|(a, w)| a.is_none() || w.is_none() || a == w)
}

/// The graph has exactly one input, the manifest's, a float32 `[N, 3, 32, 32]`, and the
/// manifest's output, a float32 `[N, classes]`, as declared in the file.
fn check_contract(path: &Path, graph: &pb::GraphProto, m: &Manifest) -> Result<()> {
    let bad = |reason: String| Error::Contract {
        path: path.to_path_buf(),
        reason,
    };
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .collect();
    let names = |v: &[&pb::ValueInfoProto]| {
        v.iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(input) = inputs.iter().find(|i| i.name == m.input.name) else {
        return Err(bad(format!(
            "the graph has no input `{}` (it has: {})",
            m.input.name,
            names(&inputs)
        )));
    };
    if inputs.len() != 1 {
        return Err(bad(format!(
            "the graph has {} inputs; a zoo model has exactly one",
            inputs.len()
        )));
    }
    let side = Some(SIDE as i64);
    let (float, dims, text) = declared(input);
    if !float || !dims_fit(&dims, &[None, Some(3), side, side]) {
        return Err(bad(format!(
            "input `{}` is a {text}, the manifest promises a Float32 tensor of shape [N, 3, {SIDE}, {SIDE}]",
            m.input.name
        )));
    }
    let outputs: Vec<&pb::ValueInfoProto> = graph.output.iter().collect();
    let Some(output) = outputs.iter().find(|o| o.name == m.output.name) else {
        return Err(bad(format!(
            "the graph has no output `{}` (it has: {})",
            m.output.name,
            names(&outputs)
        )));
    };
    let classes = m.classes.len();
    let (float, dims, text) = declared(output);
    if !float || !dims_fit(&dims, &[None, Some(classes as i64)]) {
        return Err(bad(format!(
            "output `{}` is a {text}, the manifest promises a Float32 tensor of shape [N, {classes}]",
            m.output.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shipped model's path, bytes and manifest.
    fn shipped(name: &str) -> (PathBuf, Vec<u8>, Manifest) {
        let models = tpsnet_test_support::shipped::models_dir();
        let registry = crate::registry::Registry::scan(&models).unwrap();
        let entry = registry.find(name).unwrap();
        let (model_path, _, manifest) =
            crate::classify::model_and_manifest_paths(&entry.manifest_path).unwrap();
        let bytes = std::fs::read(&model_path).unwrap();
        (model_path, bytes, manifest)
    }

    fn op_names(plan: &Plan) -> Vec<String> {
        plan.model()
            .nodes()
            .iter()
            .map(|n| n.op().name().to_string())
            .collect()
    }

    /// The plan choice is only real if [`EAGER_IM2COL`] changes the plan: tract's default
    /// gathers 3×3 patches lazily, the scope makes it copy them (`Im2col`) instead, where
    /// a convolution has more output channels than one row panel of the matrix kernel
    /// (tract keeps single-panel ones lazy whatever the knobs say): `airnet-wide`'s wide
    /// layers.
    #[test]
    fn the_eager_knobs_change_how_convolutions_are_planned() {
        let (model_path, bytes, manifest) = shipped("airnet-wide");
        // tract's own convolutions: the direct kernels would take the 3×3 ones.
        let engine = TractEngine::open_with(&model_path, &bytes, &manifest, 1, None).unwrap();
        let one = HashMap::from([(engine.batch.clone(), TDim::from(1))]);
        let fixed = engine.model.set_symbols(&one).unwrap();
        let lazy = op_names(&engine.optimise(fixed.clone()).unwrap());
        let scope = KnobScope::new(EAGER_IM2COL).unwrap();
        let eager = op_names(&scope.enter(|| engine.optimise(fixed)).unwrap());
        let count = |names: &[String], op: &str| names.iter().filter(|n| *n == op).count();
        assert_eq!(count(&lazy, "Im2col"), 0, "{lazy:?}");
        assert!(count(&eager, "Im2col") >= 1, "{eager:?}");
        assert!(
            count(&eager, "LazyIm2col") < count(&lazy, "LazyIm2col"),
            "{eager:?}"
        );
    }

    /// Every 3×3, stride-1 convolution of a shipped model goes to the direct kernels
    /// (`tpsnet`: 77 of its 82; the two strided 3×3 and three 1×1 ones stay tract's), and
    /// none when they are off.
    #[test]
    fn the_direct_kernels_take_every_stride_one_3x3_convolution() {
        let Some(isa) = direct_conv::Isa::chosen() else {
            eprintln!("no direct kernels on this CPU (or TPSNET_TRACT_DIRECT_CONV=off)");
            return;
        };
        let (model_path, bytes, manifest) = shipped("tpsnet");
        let open = |direct| TractEngine::open_with(&model_path, &bytes, &manifest, 1, direct);
        assert_eq!(open(Some(isa)).unwrap().direct_convolutions(), 77);
        assert_eq!(open(None).unwrap().direct_convolutions(), 0);
    }
}
