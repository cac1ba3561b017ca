//! fp32 ONNX bytes in, int8 ONNX bytes out: read, rewrite, plan, calibrate, choose the
//! range method on validation images, emit.

use std::path::Path;

use prost::Message;
use serde::Serialize;

use crate::calibrate::{Calibration, CalibrationRun, Measure, calibrate};
use crate::choose::Closest;
pub use crate::choose::{Candidate, ChosenBy, FirstConvChoice};
use crate::emit::{EmitOptions, emit};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::images::{Selection, TrainingImages};
use crate::params::WeightClip;
use crate::plan::{Lowering, Plan, plan};
use crate::ranges::RangeMethod;
use crate::rewrite::{FoldReport, fold_pooled_batchnorm, fuse_gelu};
use crate::validate::{Agreement, compare};

/// Calibration images used unless told otherwise (as in the onnxruntime runs).
pub const DEFAULT_CALIBRATION_IMAGES: usize = 512;
/// Validation images used to choose the range method unless told otherwise.
pub const DEFAULT_VALIDATION_IMAGES: usize = 2000;

/// The range methods tried when none is forced, in order of preference on ties.
pub fn default_methods() -> Vec<RangeMethod> {
    vec![
        RangeMethod::Mse,
        RangeMethod::Percentile { percentile: 99.999 },
        RangeMethod::Percentile { percentile: 99.99 },
        RangeMethod::MinMax,
    ]
}

/// Settings of one quantization.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// Training images the activation ranges are measured on.
    pub calibration_images: usize,
    /// Further training images the candidate methods are compared on (0: no comparison;
    /// then exactly one method must be given).
    pub validation_images: usize,
    /// Seed of the permutation both sets are drawn from.
    pub seed: u64,
    /// Candidate range methods; the one closest to fp32 on validation wins.
    pub methods: Vec<RangeMethod>,
    /// How conv weight ranges are chosen.
    pub weight_clip: WeightClip,
    /// Nodes (Conv or Add) to keep in fp32.
    pub keep_fp32: Vec<String>,
    /// Whether the first convolution runs in int8, fp32, or whichever the validation
    /// images prefer.
    pub first_conv: FirstConv,
    /// Images per ONNX Runtime call.
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads (0: one per physical core).
    pub threads: usize,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            calibration_images: DEFAULT_CALIBRATION_IMAGES,
            validation_images: DEFAULT_VALIDATION_IMAGES,
            seed: 0,
            methods: default_methods(),
            weight_clip: WeightClip::MaxAbs,
            keep_fp32: Vec::new(),
            first_conv: FirstConv::Choose,
            batch_size: 64,
            threads: 0,
        }
    }
}

/// Where the first convolution (the one reading the normalised image) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstConv {
    /// The first convolution in int8.
    Int8,
    /// The first convolution in fp32 (its output quantized after it).
    Fp32,
    /// Try both on the validation images. Int8 when the first conv's output feeds integer
    /// ops directly (see [`first_conv_chains`]: then int8 saves the fp32 convolution and a
    /// `QuantizeLinear`; batch-1 latency measured 3–18 % lower, docs/benchmarks.md) and
    /// the int8 candidate's validation top-1 is within [`FIRST_CONV_BUDGET_PP`] of the
    /// fp32 model's; otherwise whichever is closer to fp32 (lowest mean KL). Int8 when
    /// there are no validation images.
    #[default]
    Choose,
}

/// The largest validation top-1 drop (pp, against the fp32 model on the same training
/// images) for which [`FirstConv::Choose`] still takes an int8 first conv: issue 16's
/// accuracy budget for the whole model.
pub const FIRST_CONV_BUDGET_PP: f64 = 0.3;

/// Whether running the first conv (`name`) in int8 keeps its output in uint8 all the way
/// to the integer ops that read it. `int8_first` and `fp32_first` are the same graph
/// planned with that conv in int8 and in fp32. True for the plain ResNets (stem Conv →
/// ReLU → QLinearConv): with an fp32 stem, its output needs a `QuantizeLinear` and
/// ONNX Runtime reorders the fp32 conv's layout around it. False when fp32 ops (a GELU,
/// a BatchNorm) come between the stem and the first integer op: there an int8 stem only
/// adds a `DequantizeLinear`.
pub fn first_conv_chains(int8_first: &Prepared, fp32_first: &Prepared, name: &str) -> bool {
    let Some(i) = int8_first.graph.nodes.iter().position(|n| n.name == name) else {
        return false;
    };
    match &int8_first.plan.lowering[i] {
        Lowering::Conv { output } => fp32_first.plan.quantize_from_float.contains(output),
        _ => false,
    }
}

/// The int8 model and how it was made.
#[derive(Clone, Debug)]
pub struct Quantized {
    /// The int8 ONNX file.
    pub bytes: Vec<u8>,
    /// The range method used.
    pub method: RangeMethod,
    /// Every method tried, with its validation result.
    pub candidates: Vec<Candidate>,
    /// The images used.
    pub selection: Selection,
    /// Nodes of the (rewritten) fp32 graph left in fp32.
    pub float_nodes: Vec<String>,
    /// Nodes lowered to integer ops.
    pub integer_nodes: usize,
    /// Convs and Adds kept in fp32 (asked for, or the first conv when `choose` kept it).
    pub kept_fp32: Vec<String>,
    /// The BatchNorm-behind-pool rewrite.
    pub folded: FoldReport,
    /// How the method was chosen (its `Display` is the manifest's sentence).
    pub chosen_by: ChosenBy,
}

/// Where a quantization is (for progress display).
#[derive(Clone, Copy, Debug)]
pub enum Stage<'a> {
    /// Calibration pass 1 (ranges) or 2 (histograms): images done of total.
    Calibrate {
        /// 1 (ranges) or 2 (histograms).
        pass: usize,
        /// Images done.
        done: usize,
        /// Images in the pass.
        total: usize,
    },
    /// The fp32 model's validation logits are being computed.
    Reference {
        /// Validation images.
        images: usize,
    },
    /// A candidate was measured on the validation images.
    Validated {
        /// The candidate measured.
        candidate: &'a Candidate,
        /// How it did against fp32.
        agreement: &'a Agreement,
    },
}

/// An fp32 graph after the exact rewrites, with its lowering planned.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The rewritten fp32 graph.
    pub graph: Graph,
    /// How each node is lowered.
    pub plan: Plan,
    /// What the BatchNorm-behind-pool rewrite folded.
    pub folded: FoldReport,
}

/// Reads `bytes`, makes the exact fp32 rewrites and plans the lowering (keeping the
/// nodes `keep_fp32` in fp32): everything short of calibration, so a model the
/// quantizer cannot handle is refused before any image is read.
pub fn prepare(path: &Path, bytes: &[u8], keep_fp32: &[String]) -> Result<Prepared> {
    let mut g = Graph::decode(path, bytes)?;
    let folded = fold_pooled_batchnorm(&mut g);
    fuse_gelu(&mut g);
    let plan = plan(&g, keep_fp32)?;
    if plan.integer_nodes() == 0 {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            reason: "it has no convolution or residual Add left to run in int8".into(),
        });
    }
    Ok(Prepared {
        graph: g,
        plan,
        folded,
    })
}

/// Quantizes the fp32 model `bytes` (read from `path`, which names it in messages).
pub fn quantize(
    path: &Path,
    bytes: &[u8],
    images: &TrainingImages,
    opts: &QuantizeOptions,
    progress: &dyn Fn(Stage),
) -> Result<Quantized> {
    if opts.methods.is_empty() || (opts.methods.len() > 1 && opts.validation_images == 0) {
        return Err(Error::MethodsNeedValidation {
            path: path.to_path_buf(),
            methods: opts.methods.len(),
        });
    }
    // The first conv's precision is one more candidate dimension.
    let first = Graph::decode(path, bytes)?
        .nodes
        .iter()
        .find(|n| n.op_type == "Conv")
        .map(|n| n.name.clone());
    let keeps = fp32_keeps(opts, first.as_ref());
    let variants: Vec<Prepared> = keeps
        .iter()
        .map(|k| prepare(path, bytes, k))
        .collect::<Result<_>>()?;
    let selection = Selection::new(
        images.len(),
        opts.seed,
        opts.calibration_images,
        opts.validation_images,
    )
    .ok_or(Error::NotEnoughImages {
        path: path.to_path_buf(),
        wanted: opts.calibration_images + opts.validation_images,
        available: images.len(),
    })?;
    let calibration =
        calibrate_variants(&variants, images, &selection.calibration, opts, progress)?;
    let run = Candidates {
        path,
        bytes,
        images,
        opts,
        validation: &selection.validation,
        variants: &variants,
        keeps: &keeps,
        calibration: &calibration,
    };
    let choice = if opts.validation_images == 0 {
        run.given()?
    } else {
        run.closest(first.as_deref(), progress)?
    };
    let v = &variants[choice.variant];
    Ok(Quantized {
        bytes: choice.bytes,
        method: choice.method,
        candidates: choice.candidates,
        float_nodes: v.plan.float_nodes(&v.graph),
        integer_nodes: v.plan.integer_nodes(),
        kept_fp32: keeps[choice.variant].clone(),
        selection,
        folded: variants[0].folded.clone(),
        chosen_by: choice.chosen_by,
    })
}

/// The nodes each variant keeps in fp32: those asked for, plus the first conv (`first`)
/// when it is to run in fp32, or as a second variant when `choose` has validation
/// images to decide on.
fn fp32_keeps(opts: &QuantizeOptions, first: Option<&String>) -> Vec<Vec<String>> {
    let base = opts.keep_fp32.clone();
    let with_first = |f: &String| {
        let mut k = base.clone();
        k.push(f.clone());
        k
    };
    match (opts.first_conv, first) {
        (FirstConv::Fp32, Some(f)) if !base.contains(f) => vec![with_first(f)],
        (FirstConv::Choose, Some(f)) if !base.contains(f) && opts.validation_images > 0 => {
            vec![base.clone(), with_first(f)]
        }
        _ => vec![base.clone()],
    }
}

/// One calibration for every variant: the union of the tensors they quantize, measured
/// on the training images `indices` with the first variant's graph.
fn calibrate_variants(
    variants: &[Prepared],
    images: &TrainingImages,
    indices: &[usize],
    opts: &QuantizeOptions,
    progress: &dyn Fn(Stage),
) -> Result<Calibration> {
    let mut tensors: Vec<(String, String)> = Vec::new();
    let mut non_negative = std::collections::BTreeSet::new();
    for v in variants {
        for t in &v.plan.calibrate {
            if !tensors.iter().any(|(x, _)| x == t) {
                tensors.push((t.clone(), v.plan.measured[t].clone()));
            }
        }
        non_negative.extend(v.plan.non_negative.iter().cloned());
    }
    let total = indices.len();
    let measure = Measure {
        tensors: &tensors,
        non_negative: &non_negative,
    };
    let run = CalibrationRun {
        images,
        indices,
        batch: opts.batch_size,
        threads: opts.threads,
    };
    calibrate(&variants[0].graph, &measure, &run, &|pass, done| {
        progress(Stage::Calibrate { pass, done, total });
    })
}

/// The chosen candidate: which variant, its method and int8 bytes, and why.
struct Choice {
    variant: usize,
    method: RangeMethod,
    bytes: Vec<u8>,
    chosen_by: ChosenBy,
    candidates: Vec<Candidate>,
}

/// What building and measuring the candidates needs.
struct Candidates<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    images: &'a TrainingImages,
    opts: &'a QuantizeOptions,
    validation: &'a [usize],
    variants: &'a [Prepared],
    /// The nodes each variant keeps in fp32.
    keeps: &'a [Vec<String>],
    calibration: &'a Calibration,
}

impl Candidates<'_> {
    /// The int8 model of variant `v` with `method`'s ranges.
    fn build(&self, v: &Prepared, method: RangeMethod) -> Result<Vec<u8>> {
        let params = self.calibration.params(method);
        let emit_opts = EmitOptions {
            weight_clip: self.opts.weight_clip,
            ..EmitOptions::default()
        };
        Ok(emit(&v.graph, &v.plan, &params, &emit_opts)?.encode_to_vec())
    }

    /// The logits of `bytes` on the validation images.
    fn logits(&self, bytes: &[u8]) -> Result<Vec<f32>> {
        let g = &self.variants[0].graph;
        Engine::new(
            self.path,
            bytes,
            &g.input.name,
            &g.output.name,
            self.opts.threads,
        )?
        .logits(self.images, self.validation, self.opts.batch_size)
    }

    /// The one method given, without validation.
    fn given(&self) -> Result<Choice> {
        let m = self.opts.methods[0];
        Ok(Choice {
            variant: 0,
            method: m,
            bytes: self.build(&self.variants[0], m)?,
            chosen_by: ChosenBy::Given,
            candidates: vec![Candidate {
                method: m.label(),
                fp32_nodes: self.keeps[0].clone(),
                validation: None,
            }],
        })
    }

    /// The closest candidate of each variant on the validation images (every one
    /// reported as it is measured), then between the variants: an int8 first conv where
    /// it chains into integer ops within [`FIRST_CONV_BUDGET_PP`], else the closer.
    fn closest(&self, first: Option<&str>, progress: &dyn Fn(Stage)) -> Result<Choice> {
        progress(Stage::Reference {
            images: self.validation.len(),
        });
        let reference = self.logits(self.bytes)?;
        let labels: Vec<u8> = self
            .validation
            .iter()
            .map(|&i| self.images.label(i))
            .collect();
        let classes = reference.len() / labels.len().max(1);
        let mut candidates = Vec::new();
        // Index 0 plans the first conv as asked or in int8, index 1 (under `choose`)
        // keeps it in fp32.
        let mut best = Vec::new();
        for (vi, v) in self.variants.iter().enumerate() {
            let mut closest = None;
            for &m in &self.opts.methods {
                let bytes = self.build(v, m)?;
                let agreement = compare(&reference, &self.logits(&bytes)?, &labels, classes);
                let candidate = Candidate {
                    method: m.label(),
                    fp32_nodes: self.keeps[vi].clone(),
                    validation: Some(agreement.clone()),
                };
                progress(Stage::Validated {
                    candidate: &candidate,
                    agreement: &agreement,
                });
                candidates.push(candidate);
                let c = Closest {
                    method: m,
                    bytes,
                    agreement,
                };
                Closest::keep_closer(&mut closest, c);
            }
            best.push(closest.expect("every variant has a candidate"));
        }
        let (variant, first_conv) = match (self.variants.len() > 1, first) {
            (true, Some(f)) => self.settle_first_conv(&best, f),
            _ => (0, None),
        };
        let c = best.swap_remove(variant);
        Ok(Choice {
            variant,
            method: c.method,
            bytes: c.bytes,
            chosen_by: ChosenBy::LowestKl {
                validation_images: self.validation.len(),
                tried: self.opts.methods.iter().map(|m| m.label()).collect(),
                first_conv,
            },
            candidates,
        })
    }

    /// Variant 0 (first conv `node` in int8) or 1 (in fp32), given each one's closest
    /// candidate.
    fn settle_first_conv(&self, best: &[Closest], node: &str) -> (usize, Option<FirstConvChoice>) {
        let int8_first = &best[0].agreement;
        let drop = int8_first.top1_fp32 - int8_first.top1_int8;
        let node = node.to_string();
        if first_conv_chains(&self.variants[0], &self.variants[1], &node)
            && drop <= FIRST_CONV_BUDGET_PP
        {
            let choice = FirstConvChoice::Int8Chains {
                node,
                top1_int8: int8_first.top1_int8,
                top1_fp32: int8_first.top1_fp32,
                budget_pp: FIRST_CONV_BUDGET_PP,
            };
            (0, Some(choice))
        } else {
            let fp32_closer = best[1].agreement.mean_kl < best[0].agreement.mean_kl;
            (
                usize::from(fp32_closer),
                Some(FirstConvChoice::Closer { node }),
            )
        }
    }
}
