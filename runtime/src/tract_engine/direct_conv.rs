//! A 3×3, stride-1, pad-1 convolution computed directly with AVX-512 or AVX2, in place of
//! tract's im2col and matrix product, for the convolutions that make up nearly all of
//! every zoo model's work.
//!
//! Why: tract lowers a convolution to im2col and a matrix product. For one 32×32 image the
//! product's `m` is the output channels (16–384 in the zoo), so every panel of patches
//! tract gathers (lazy im2col) or copies out (eager) feeds only a few runs of its matrix
//! kernel, and the gathering costs about as much as the multiplying. Profiled on
//! `tpsnet` (2-core Xeon, AVX-512, `examples/tract_profile.rs`): each of its 3×3
//! convolutions of 9.4 M multiply-adds took 0.20–0.27 ms on tract (35–47 G/s); on these
//! kernels 0.115–0.145 ms (65–82 G/s), near ONNX Runtime's 84 G/s per core for the whole
//! network. tract ran `tpsnet` at 0.41× ONNX Runtime's batch-256 throughput before, 0.77×
//! with them (docs/benchmarks.md, "A direct convolution for the tract backend").
//!
//! How: the input is copied once into a zero-bordered buffer whose rows are `w + 1`
//! floats long (one zero column serves as both the left and the right border, since the
//! row after starts with it). In that layout every tap of the 3×3 kernel reads the input
//! at a fixed offset from the output position, so a run of consecutive output positions
//! reads a run of consecutive floats. Two register-blocked kernels use this:
//!
//! * *positions* (images at least 16 wide): a few vectors of consecutive output positions
//!   × a few output channels; each tap loads the input vectors and broadcasts one weight
//!   per channel. The one border column per row is computed and dropped (3 % of the work
//!   at 32 wide, 6 % at 16).
//! * *channels* (narrower images, where that column would cost 11 % or more): a few
//!   output positions × a few vectors of output channels; each tap loads the weights as
//!   vectors and broadcasts one input float per position, so no position is wasted.
//!
//! Both come in an AVX-512 flavour (32 vector registers of 16 floats) and an AVX2 + FMA
//! one (16 registers of 8), from one template, with blockings sized to the register file
//! ([`Blocking::for_shape`]).
//!
//! A lone image's convolution of 4 M multiply-adds or more shares its blocks of output
//! channels out over the rayon pool, so that one image uses every core, as ONNX Runtime's
//! does (`airnet-wide` at batch 1: 5.3 → 3.7 ms on 2 cores); at batch 256 every thread
//! has an image of its own and runs its own blocks.
//!
//! Each output is the bias plus the 9·`ci` products summed in a different order than
//! tract's or ONNX Runtime's, which moves the logits by float rounding only (the
//! full-test-set agreement in docs/benchmarks.md is measured with it on).
//!
//! On a CPU with neither instruction set, or with `TPSNET_TRACT_DIRECT_CONV=off` (for
//! comparisons), the model keeps tract's own convolutions; `=avx2` picks the AVX2 kernels
//! on an AVX-512 machine (to test and measure them there).

use std::cell::Cell;
use std::sync::Arc;

use rayon::prelude::*;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::PaddingSpec;
use tract_onnx::tract_core::ops::cnn::conv::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Environment variable choosing the kernels: unset or `auto` for the widest this CPU
/// has, `avx512` or `avx2` for those (none where the CPU lacks them), `off` (or `0`) for
/// tract's own convolutions.
pub const SWITCH: &str = "TPSNET_TRACT_DIRECT_CONV";

/// Narrowest image the positions kernel takes; narrower ones go to the channels kernel.
const POS_MIN_WIDTH: usize = 16;

/// The vector instruction set a kernel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F: 32 registers of 16 floats.
    Avx512,
    /// AVX2 and FMA: 16 registers of 8 floats.
    Avx2,
}

impl Isa {
    /// Floats per vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
        }
    }

    /// Whether this CPU runs it.
    pub fn available(self) -> bool {
        kernels::available(self)
    }

    /// The kernels [`rewrite`] uses on this machine, as [`SWITCH`] and the CPU decide;
    /// None for tract's own convolutions.
    pub fn chosen() -> Option<Isa> {
        let wanted = std::env::var(SWITCH).unwrap_or_default();
        match wanted.trim() {
            "0" | "off" | "false" => None,
            "avx512" => Some(Isa::Avx512).filter(|isa| isa.available()),
            "avx2" => Some(Isa::Avx2).filter(|isa| isa.available()),
            _ => [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .find(|isa| isa.available()),
        }
    }
}

/// Replaces every convolution of `model` that this module computes (f32, NCHW, 3×3,
/// stride 1, dilation 1, one pixel of zero padding on each side, one group, constant
/// weights and bias, concrete height and width) with a [`DirectConv3x3`] for `isa`.
/// Returns how many were replaced.
pub fn rewrite(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    ensure!(isa.available(), "this CPU lacks {isa:?}");
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some(op) = DirectConv3x3::for_conv(model, node, conv, isa)? else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &[node.inputs[0]], op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    if replaced > 0 {
        model.compact()?;
    }
    Ok(replaced)
}

/// How the output is blocked into register tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Blocking {
    /// `vectors` vectors of consecutive output positions × `channels` output channels.
    Positions {
        /// Output channels per tile.
        channels: usize,
        /// Vectors of output positions per tile.
        vectors: usize,
    },
    /// `positions` output positions × `vectors` vectors of output channels.
    Channels {
        /// Output positions per tile.
        positions: usize,
        /// Vectors of output channels per tile.
        vectors: usize,
    },
}

impl Blocking {
    /// The blocking for `co` output channels on images `w` wide. Each keeps its
    /// accumulators, the vectors a tap loads and a broadcast in registers: 24 + 3 + 1 of
    /// AVX-512's 32, 12 + 3 + 1 of AVX2's 16. The AVX-512 channels tile covers 64 channels
    /// where there are more than 32 (a 128-channel 8×8 layer alone in a loop: 75 G
    /// multiply-adds/s, against 71–74 with tiles of 32 channels).
    pub fn for_shape(isa: Isa, co: usize, w: usize) -> Blocking {
        match (isa, w >= POS_MIN_WIDTH) {
            (Isa::Avx512, true) => Blocking::Positions {
                channels: 8,
                vectors: 3,
            },
            (Isa::Avx512, false) if co > 32 => Blocking::Channels {
                positions: 6,
                vectors: 4,
            },
            (Isa::Avx512, false) => Blocking::Channels {
                positions: 8,
                vectors: 2,
            },
            (Isa::Avx2, true) => Blocking::Positions {
                channels: 4,
                vectors: 3,
            },
            (Isa::Avx2, false) => Blocking::Channels {
                positions: 6,
                vectors: 2,
            },
        }
    }

    /// Output channels per block (the weights are packed, and zero-padded, in blocks of
    /// this many).
    fn channels(self, isa: Isa) -> usize {
        match self {
            Blocking::Positions { channels, .. } => channels,
            Blocking::Channels { vectors, .. } => vectors * isa.lanes(),
        }
    }
}

/// The operator that replaces a [`Conv`]: input `[N, ci, h, w]`, output `[N, co, h, w]`,
/// weights and bias baked in, packed for its [`Blocking`].
#[derive(Clone, Debug)]
pub struct DirectConv3x3 {
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    isa: Isa,
    blocking: Blocking,
    /// `[block][ci][tap][channels per block]`, zero past `co`.
    weights: Arc<[f32]>,
    /// `co` rounded up to a whole block, zero past `co`.
    bias: Arc<[f32]>,
}

impl PartialEq for DirectConv3x3 {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        (self.ci, self.co, self.h, self.w, self.isa, self.blocking)
            == (
                other.ci,
                other.co,
                other.h,
                other.w,
                other.isa,
                other.blocking,
            )
            && (Arc::ptr_eq(&self.weights, &other.weights) || same(&self.weights, &other.weights))
            && same(&self.bias, &other.bias)
    }
}

impl Eq for DirectConv3x3 {}

impl DirectConv3x3 {
    /// The replacement for `conv` at `node`, or None when this module does not compute
    /// that convolution.
    fn for_conv(
        model: &TypedModel,
        node: &TypedNode,
        conv: &Conv,
        isa: Isa,
    ) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&d| d == 1));
        let padded_by_one = matches!(&spec.padding,
            PaddingSpec::Explicit(before, after) if before[..] == [1, 1] && after[..] == [1, 1]);
        if conv.q_params.is_some()
            || conv.group != 1
            || conv.kernel_fmt != KernelFormat::OIHW
            || spec.data_format != DataFormat::NCHW
            || spec.kernel_shape[..] != [3, 3]
            || !ones(&spec.strides)
            || !ones(&spec.dilations)
            || !padded_by_one
            || node.inputs.len() != 3
        {
            return Ok(None);
        }
        let input = model.outlet_fact(node.inputs[0])?;
        let kernel = model.outlet_fact(node.inputs[1])?;
        let bias = model.outlet_fact(node.inputs[2])?;
        if input.datum_type != f32::datum_type() || input.rank() != 4 {
            return Ok(None);
        }
        let (Some(c), Some(h), Some(w)) = (
            input.shape[1].as_i64(),
            input.shape[2].as_i64(),
            input.shape[3].as_i64(),
        ) else {
            return Ok(None);
        };
        let (Some(kernel), Some(bias)) = (kernel.konst.as_ref(), bias.konst.as_ref()) else {
            return Ok(None);
        };
        let (ci, co) = (spec.input_channels, spec.output_channels);
        if ci == 0
            || co == 0
            || c != ci as i64
            || h < 1
            || w < 1
            || kernel.datum_type() != f32::datum_type()
            || kernel.shape() != [co, ci, 3, 3]
            || bias.datum_type() != f32::datum_type()
            || !(bias.len() == co || bias.len() == 1)
        {
            return Ok(None);
        }
        // Weights tract keeps in another form than a plain array stay tract's.
        let (Ok(kernel), Ok(bias)) = (kernel.try_as_plain_ram(), bias.try_as_plain_ram()) else {
            return Ok(None);
        };
        let (Ok(kernel), Ok(bias)) = (kernel.as_slice::<f32>(), bias.as_slice::<f32>()) else {
            return Ok(None);
        };
        Ok(Some(Self::new(
            isa,
            [ci, co, h as usize, w as usize],
            kernel,
            bias,
        )))
    }

    /// Packs `weights` (`[co][ci][3][3]`) and `bias` (`co` values, or one for all) for
    /// images of `ci` channels, `h` × `w`, on `isa`.
    pub fn new(isa: Isa, [ci, co, h, w]: [usize; 4], weights: &[f32], bias: &[f32]) -> Self {
        assert!(ci > 0 && co > 0 && h > 0 && w > 0, "empty convolution");
        assert_eq!(weights.len(), co * ci * 9, "weights are [co][ci][3][3]");
        assert!(
            bias.len() == co || bias.len() == 1,
            "one bias per channel, or one"
        );
        let blocking = Blocking::for_shape(isa, co, w);
        let cb = blocking.channels(isa);
        let blocks = co.div_ceil(cb);
        let mut packed = vec![0f32; blocks * ci * 9 * cb];
        for (o, filter) in weights.chunks_exact(ci * 9).enumerate() {
            let (block, lane) = (o / cb, o % cb);
            for (c, taps) in filter.chunks_exact(9).enumerate() {
                for (tap, &v) in taps.iter().enumerate() {
                    packed[((block * ci + c) * 9 + tap) * cb + lane] = v;
                }
            }
        }
        let mut padded_bias = vec![0f32; blocks * cb];
        for (o, b) in padded_bias.iter_mut().take(co).enumerate() {
            *b = if bias.len() == 1 { bias[0] } else { bias[o] };
        }
        DirectConv3x3 {
            ci,
            co,
            h,
            w,
            isa,
            blocking,
            weights: packed.into(),
            bias: padded_bias.into(),
        }
    }

    /// The register blocking chosen.
    pub fn blocking(&self) -> Blocking {
        self.blocking
    }

    /// Row length of the bordered input.
    fn row(&self) -> usize {
        self.w + 1
    }

    /// Floats per channel of the bordered input: a zero row above, `h` rows, a zero row
    /// below, and the zero that starts the row after.
    fn channel_stride(&self) -> usize {
        (self.h + 2) * self.row() + 1
    }

    /// Copies images (`[n][ci][h][w]`) into `bordered` (`[n][ci][channel_stride]`), zero
    /// around each, with `slack` more zeros at the end for the positions kernel's last,
    /// partly used tile. Only the border is zeroed; the copy fills the rest.
    fn border(&self, images: &[f32], bordered: &mut Vec<f32>, slack: usize) {
        let (row, cs, w) = (self.row(), self.channel_stride(), self.w);
        let channels = images.len() / (self.h * w);
        grow(bordered, channels * cs + slack);
        bordered[channels * cs..].fill(0.0);
        let planes = images.chunks_exact(self.h * w);
        for (plane, channel) in planes.zip(bordered.chunks_exact_mut(cs)) {
            // The zero row above, then each row: its zero column and its `w` values.
            channel[..row].fill(0.0);
            for (y, line) in plane.chunks_exact(w).enumerate() {
                let at = (y + 1) * row;
                channel[at] = 0.0;
                channel[at + 1..at + 1 + w].copy_from_slice(line);
            }
            // The zero row below and the zero that starts the row after it.
            channel[(self.h + 1) * row..].fill(0.0);
        }
    }

    /// A batch: `images` is `[n][ci][h][w]`, `out` is `[n][co][h][w]`.
    ///
    /// One image's blocks of output channels are shared out over the current rayon
    /// pool's threads (the tract backend runs one image per tract run, so this is how a
    /// lone image uses more than one core; when every thread already has an image of its
    /// own, each runs its blocks itself). Several images go block by block, each block
    /// over every image, so that a block's weights are read from memory once per batch.
    pub fn run(&self, images: &[f32], out: &mut [f32]) {
        let plane = self.h * self.w;
        let n = images.len() / (self.ci * plane);
        assert_eq!(images.len(), n * self.ci * plane);
        assert_eq!(out.len(), n * self.co * plane);
        let cb = self.blocking.channels(self.isa);
        let slack = match self.blocking {
            Blocking::Positions { vectors, .. } => vectors * self.isa.lanes(),
            Blocking::Channels { .. } => 0,
        };
        let mut bordered = take(&BORDERED);
        self.border(images, &mut bordered, slack);
        let block_weights = self.ci * 9 * cb;
        let macs = self.co * self.ci * 9 * plane;
        if n == 1 && self.co > cb && macs >= PARALLEL_MIN_MACS && rayon::current_num_threads() > 1 {
            out.par_chunks_mut(cb * plane)
                .zip(self.weights.par_chunks(block_weights))
                .zip(self.bias.par_chunks(cb))
                .for_each(|((out, weights), bias)| {
                    let mut sums = take(&SUMS);
                    self.block(&bordered, out, weights, bias, &mut sums);
                    put(&SUMS, sums);
                });
        } else {
            let mut sums = take(&SUMS);
            let (image_in, image_out) = (self.ci * self.channel_stride(), self.co * plane);
            for (block, weights) in self.weights.chunks_exact(block_weights).enumerate() {
                let bias = &self.bias[block * cb..(block + 1) * cb];
                let channels = (block * cb)..self.co.min((block + 1) * cb);
                for (i, out) in out.chunks_exact_mut(image_out).enumerate() {
                    let out = &mut out[channels.start * plane..channels.end * plane];
                    self.block(&bordered[i * image_in..], out, weights, bias, &mut sums);
                }
            }
            put(&SUMS, sums);
        }
        put(&BORDERED, bordered);
    }

    /// One block of output channels of one image: `bordered` starts at the image,
    /// `out` is the block's channels (`[channel][h][w]`, fewer than a block at the end).
    fn block(
        &self,
        bordered: &[f32],
        out: &mut [f32],
        weights: &[f32],
        bias: &[f32],
        sums: &mut Vec<f32>,
    ) {
        match self.blocking {
            Blocking::Positions { channels, vectors } => {
                self.positions_block(bordered, out, weights, bias, sums, [channels, vectors])
            }
            Blocking::Channels { positions, vectors } => {
                self.channels_block(bordered, out, weights, bias, sums, [positions, vectors])
            }
        }
    }

    fn positions_block(
        &self,
        bordered: &[f32],
        out: &mut [f32],
        weights: &[f32],
        bias: &[f32],
        sums: &mut Vec<f32>,
        [channels, vectors]: [usize; 2],
    ) {
        let row = self.row();
        let tile = vectors * self.isa.lanes();
        // Output positions on the bordered grid: `h` rows of `w` outputs and one dropped.
        let tiles = (self.h * row).div_ceil(tile);
        let grid_stride = tiles * tile;
        // Every tile writes all its sums, so the buffer need not be cleared.
        grow(sums, channels * grid_stride);
        let channel_stride = self.channel_stride();
        for t in 0..tiles {
            kernels::positions(
                self.isa,
                [channels, vectors],
                bordered,
                weights,
                bias,
                sums,
                kernels::Grid {
                    ci: self.ci,
                    channel_stride,
                    row,
                    grid_stride,
                    start: t * tile,
                },
            );
        }
        let plane = self.h * self.w;
        for (lane, dst) in out.chunks_exact_mut(plane).enumerate() {
            let src = &sums[lane * grid_stride..];
            for (y, line) in dst.chunks_exact_mut(self.w).enumerate() {
                line.copy_from_slice(&src[y * row..y * row + self.w]);
            }
        }
    }

    fn channels_block(
        &self,
        bordered: &[f32],
        out: &mut [f32],
        weights: &[f32],
        bias: &[f32],
        sums: &mut Vec<f32>,
        [positions, vectors]: [usize; 2],
    ) {
        let (row, cb) = (self.row(), vectors * self.isa.lanes());
        let plane = self.h * self.w;
        let tiles = plane.div_ceil(positions);
        grow(sums, tiles * positions * cb);
        let sums = &mut sums[..tiles * positions * cb];
        // Where each output position's 3×3 window starts in a bordered channel; a last,
        // short tile repeats the final position, and only `plane` positions are kept.
        let start = |p: usize| {
            let p = p.min(plane - 1);
            (p / self.w) * row + p % self.w
        };
        let mut starts = [0usize; MAX_TILE_POSITIONS];
        for (t, tile_sums) in sums.chunks_exact_mut(positions * cb).enumerate() {
            for (i, s) in starts.iter_mut().take(positions).enumerate() {
                *s = start(t * positions + i);
            }
            kernels::channels(
                self.isa,
                [positions, vectors],
                bordered,
                weights,
                bias,
                tile_sums,
                kernels::Windows {
                    ci: self.ci,
                    channel_stride: self.channel_stride(),
                    row,
                    starts: &starts[..positions],
                },
            );
        }
        // The sums are [position][channel]; the output is [channel][position].
        let lanes = out.len() / plane;
        for (p, values) in sums.chunks_exact(cb).take(plane).enumerate() {
            for (lane, &v) in values.iter().take(lanes).enumerate() {
                out[lane * plane + p] = v;
            }
        }
    }
}

/// Least work (multiply-adds) for which one image's blocks are shared out over threads:
/// about 25 µs on one core, well above what handing a block to another thread costs.
const PARALLEL_MIN_MACS: usize = 4 << 20;

/// Most output positions in a channels tile.
const MAX_TILE_POSITIONS: usize = 8;

thread_local! {
    /// The bordered input of the convolution running on this thread.
    static BORDERED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// A block's sums, on the thread computing the block.
    static SUMS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Makes `v` at least `len` long.
fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

/// This thread's buffer, taken out (an empty one if it is already out: a thread that
/// waits for rayon may run another convolution meanwhile), to be [`put`] back.
fn take(buffer: &'static std::thread::LocalKey<Cell<Vec<f32>>>) -> Vec<f32> {
    buffer.take()
}

/// Gives a buffer back for the next convolution on this thread.
fn put(buffer: &'static std::thread::LocalKey<Cell<Vec<f32>>>, v: Vec<f32>) {
    buffer.set(v);
}

impl Op for DirectConv3x3 {
    fn name(&self) -> StaticName {
        "DirectConv3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}→{} channels, {}×{}, {:?} {:?}",
            self.ci, self.co, self.h, self.w, self.isa, self.blocking
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for DirectConv3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "DirectConv3x3 takes one input");
        let input = &inputs[0];
        let shape = input.shape();
        ensure!(
            input.datum_type() == f32::datum_type()
                && shape.len() == 4
                && shape[1..] == [self.ci, self.h, self.w],
            "DirectConv3x3 expects [N, {}, {}, {}] f32, got {:?} {:?}",
            self.ci,
            self.h,
            self.w,
            shape,
            input.datum_type()
        );
        let mut output = Tensor::zero::<f32>(&[shape[0], self.co, self.h, self.w])?;
        {
            let view = input.try_as_plain_ram()?;
            let images = view.as_slice::<f32>()?;
            let mut out_view = output.try_as_plain_ram_mut()?;
            let outs = out_view.as_slice_mut::<f32>()?;
            self.run(images, outs);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for DirectConv3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let input = inputs[0];
        ensure!(input.rank() == 4, "DirectConv3x3 takes a 4-d input");
        let shape: TVec<TDim> = tvec![
            input.shape[0].clone(),
            self.co.into(),
            self.h.into(),
            self.w.into()
        ];
        Ok(tvec!(f32::fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let per_image = self.co * self.ci * 9 * self.h * self.w;
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            inputs[0].shape[0].clone() * per_image
        )))
    }

    as_op!();
}

/// The SIMD kernels, behind safe functions that check every bound the kernels rely on.
#[allow(unsafe_code)]
// SIMD loads and stores through raw pointers; see each SAFETY note.
// The AVX-512 intrinsics are stable since Rust 1.89, past the workspace's 1.85, but this
// module is built only with the `tract` feature, whose tract-onnx needs 1.91 anyway.
#[allow(clippy::incompatible_msrv)]
mod kernels {
    use super::Isa;

    /// Whether this CPU runs `isa`'s kernels.
    pub fn available(isa: Isa) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match isa {
                Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
                Isa::Avx2 => {
                    std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = isa;
            false
        }
    }

    /// Where a positions tile reads and writes.
    pub struct Grid {
        /// Input channels.
        pub ci: usize,
        /// Floats per bordered input channel.
        pub channel_stride: usize,
        /// Bordered row length (`w + 1`).
        pub row: usize,
        /// Floats per output channel in `sums`.
        pub grid_stride: usize,
        /// First grid position of the tile.
        pub start: usize,
    }

    /// Where a channels tile reads.
    pub struct Windows<'a> {
        /// Input channels.
        pub ci: usize,
        /// Floats per bordered input channel.
        pub channel_stride: usize,
        /// Bordered row length (`w + 1`).
        pub row: usize,
        /// Where each position's 3×3 window starts in a bordered channel.
        pub starts: &'a [usize],
    }

    /// Asserts what every kernel call relies on: the CPU has `isa`; `ci` channels
    /// (`[ci, channel_stride, row]` of the bordered layout) whose windows start at most at
    /// `last_start` stay inside `bordered` down to their bottom-right tap in the last
    /// channel; and `weights` holds 9 taps of `ci` channels for each of the block's
    /// `bias.len()` output channels.
    fn check_reads(
        isa: Isa,
        bordered: &[f32],
        [ci, channel_stride, row]: [usize; 3],
        last_start: usize,
        weights: &[f32],
        bias: &[f32],
    ) {
        assert!(available(isa), "this CPU lacks {isa:?}");
        assert!(ci > 0, "no input channels");
        let last_read = (ci - 1) * channel_stride + last_start + 2 * row + 2;
        assert!(last_read < bordered.len(), "bordered input too short");
        assert_eq!(weights.len(), ci * 9 * bias.len());
    }

    /// One positions tile: grid positions `start..start + vectors·lanes` of `channels`
    /// output channels, written to `sums` (`[channel][grid_stride]`). `bordered` is
    /// `[ci][channel_stride]` plus slack; `weights` is `[ci][9][channels]`.
    pub fn positions(
        isa: Isa,
        [channels, vectors]: [usize; 2],
        bordered: &[f32],
        weights: &[f32],
        bias: &[f32],
        sums: &mut [f32],
        g: Grid,
    ) {
        let tile = vectors * isa.lanes();
        let last_start = g.start + tile - 1;
        check_reads(
            isa,
            bordered,
            [g.ci, g.channel_stride, g.row],
            last_start,
            weights,
            bias,
        );
        assert_eq!(bias.len(), channels);
        assert!(g.start + tile <= g.grid_stride);
        assert!(sums.len() >= channels * g.grid_stride);
        let (b, w, s, o) = (
            bordered.as_ptr(),
            weights.as_ptr(),
            bias.as_ptr(),
            sums.as_mut_ptr(),
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `check_reads` asserted the instruction set and bounded every read of
        // `bordered`, `weights` and `bias` (`channels` of them); the asserts above bound
        // every write (`channels` rows of `grid_stride`, this tile inside the row).
        unsafe {
            match (isa, channels, vectors) {
                (Isa::Avx512, 8, 3) => avx512::positions::<8, 3>(b, w, s, o, &g),
                (Isa::Avx2, 4, 3) => avx2::positions::<4, 3>(b, w, s, o, &g),
                other => unreachable!("no positions kernel for {other:?}"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no kernel on this architecture ({b:?} {w:?} {s:?} {o:?})");
    }

    /// One channels tile: `starts.len()` output positions × `vectors`·lanes output
    /// channels, written `[position][channel]` to `sums`. `weights` is
    /// `[ci][9][vectors·lanes]`.
    pub fn channels(
        isa: Isa,
        [positions, vectors]: [usize; 2],
        bordered: &[f32],
        weights: &[f32],
        bias: &[f32],
        sums: &mut [f32],
        win: Windows,
    ) {
        let cb = vectors * isa.lanes();
        assert_eq!(win.starts.len(), positions);
        let last_start = win.starts.iter().copied().max().unwrap_or(0);
        let layout = [win.ci, win.channel_stride, win.row];
        check_reads(isa, bordered, layout, last_start, weights, bias);
        assert_eq!(bias.len(), cb);
        assert_eq!(sums.len(), positions * cb);
        let (b, w, s, o) = (
            bordered.as_ptr(),
            weights.as_ptr(),
            bias.as_ptr(),
            sums.as_mut_ptr(),
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as for `positions`: `check_reads` asserted the instruction set and
        // bounded the reads (`cb` biases), and the asserts above bound every write
        // (`positions` × `cb` floats).
        unsafe {
            match (isa, positions, vectors) {
                (Isa::Avx512, 6, 4) => avx512::channels::<6, 4>(b, w, s, o, &win),
                (Isa::Avx512, 8, 2) => avx512::channels::<8, 2>(b, w, s, o, &win),
                (Isa::Avx2, 6, 2) => avx2::channels::<6, 2>(b, w, s, o, &win),
                other => unreachable!("no channels kernel for {other:?}"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no kernel on this architecture ({b:?} {w:?} {s:?} {o:?})");
    }

    /// The two kernels for one instruction set: `$vector` registers of `$lanes` floats,
    /// with its unaligned load and store, broadcast and fused multiply-add.
    #[cfg(target_arch = "x86_64")]
    macro_rules! simd_kernels {
        ($isa:ident, $feature:literal, $lanes:literal, $vector:ty,
         $zero:ident, $load:ident, $store:ident, $splat:ident, $fma:ident) => {
            mod $isa {
                use super::{Grid, Windows};
                use std::arch::x86_64::*;

                const LANES: usize = $lanes;

                /// # Safety
                /// The CPU must have the instruction set, and the pointers must be valid
                /// for the reads and writes that [`super::positions`] checks.
                #[target_feature(enable = $feature)]
                #[allow(clippy::needless_range_loop)] // Indexed loops over registers unroll.
                pub unsafe fn positions<const C: usize, const V: usize>(
                    bordered: *const f32,
                    weights: *const f32,
                    bias: *const f32,
                    sums: *mut f32,
                    g: &Grid,
                ) {
                    unsafe {
                        let mut acc: [[$vector; V]; C] = [[$zero(); V]; C];
                        for o in 0..C {
                            acc[o] = [$splat(*bias.add(o)); V];
                        }
                        for c in 0..g.ci {
                            let input = bordered.add(c * g.channel_stride + g.start);
                            let taps = weights.add(c * 9 * C);
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let at = input.add(ky * g.row + kx);
                                    let mut x: [$vector; V] = [$zero(); V];
                                    for v in 0..V {
                                        x[v] = $load(at.add(v * LANES));
                                    }
                                    let tap = taps.add((ky * 3 + kx) * C);
                                    for o in 0..C {
                                        let weight = $splat(*tap.add(o));
                                        for v in 0..V {
                                            acc[o][v] = $fma(x[v], weight, acc[o][v]);
                                        }
                                    }
                                }
                            }
                        }
                        for o in 0..C {
                            for v in 0..V {
                                let at = sums.add(o * g.grid_stride + g.start + v * LANES);
                                $store(at, acc[o][v]);
                            }
                        }
                    }
                }

                /// # Safety
                /// The CPU must have the instruction set, and the pointers must be valid
                /// for the reads and writes that [`super::channels`] checks; `win.starts`
                /// holds `P` entries.
                #[target_feature(enable = $feature)]
                #[allow(clippy::needless_range_loop)]
                pub unsafe fn channels<const P: usize, const V: usize>(
                    bordered: *const f32,
                    weights: *const f32,
                    bias: *const f32,
                    sums: *mut f32,
                    win: &Windows,
                ) {
                    unsafe {
                        let cb = V * LANES;
                        let mut acc: [[$vector; V]; P] = [[$zero(); V]; P];
                        for v in 0..V {
                            let b = $load(bias.add(v * LANES));
                            for p in 0..P {
                                acc[p][v] = b;
                            }
                        }
                        let mut at = [0usize; P];
                        at.copy_from_slice(&win.starts[..P]);
                        for c in 0..win.ci {
                            let input = bordered.add(c * win.channel_stride);
                            let taps = weights.add(c * 9 * cb);
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let offset = ky * win.row + kx;
                                    let tap = taps.add((ky * 3 + kx) * cb);
                                    let mut wv: [$vector; V] = [$zero(); V];
                                    for v in 0..V {
                                        wv[v] = $load(tap.add(v * LANES));
                                    }
                                    for p in 0..P {
                                        let x = $splat(*input.add(at[p] + offset));
                                        for v in 0..V {
                                            acc[p][v] = $fma(wv[v], x, acc[p][v]);
                                        }
                                    }
                                }
                            }
                        }
                        for p in 0..P {
                            for v in 0..V {
                                $store(sums.add(p * cb + v * LANES), acc[p][v]);
                            }
                        }
                    }
                }
            }
        };
    }

    #[cfg(target_arch = "x86_64")]
    simd_kernels!(
        avx512,
        "avx512f",
        16,
        __m512,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps
    );
    #[cfg(target_arch = "x86_64")]
    simd_kernels!(
        avx2,
        "avx2,fma",
        8,
        __m256,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::PoolSpec;

    /// Floats in [-1, 1) from a fixed seed.
    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    struct Case {
        n: usize,
        ci: usize,
        co: usize,
        h: usize,
        w: usize,
        /// One bias for all channels instead of one each.
        shared_bias: bool,
    }

    fn conv(ci: usize, co: usize, stride: usize, kernel: usize, pad: usize, group: usize) -> Conv {
        Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![kernel, kernel],
                padding: PaddingSpec::Explicit(tvec![pad, pad], tvec![pad, pad]),
                dilations: None,
                strides: Some(tvec![stride, stride]),
                input_channels: ci,
                output_channels: co,
            },
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        }
    }

    /// A model of one convolution, its weights, bias and an input.
    fn one_conv(c: &Case, op: Conv, seed: u64) -> (TypedModel, Vec<f32>, Vec<f32>, Tensor) {
        let kernel = op.pool_spec.kernel_shape[0];
        let group = op.group;
        // Scaled so that outputs are about 1 whatever the channel count.
        let scale = 1.0 / ((c.ci / group * kernel * kernel) as f32).sqrt();
        let weights: Vec<f32> = random(c.co * c.ci / group * kernel * kernel, seed)
            .into_iter()
            .map(|v| v * scale)
            .collect();
        let bias = random(if c.shared_bias { 1 } else { c.co }, seed + 1);
        let input = random(c.n * c.ci * c.h * c.w, seed + 2);
        let mut model = TypedModel::default();
        let x = model
            .add_source("x", f32::fact([c.n, c.ci, c.h, c.w]))
            .unwrap();
        let k_shape = [c.co, c.ci / group, kernel, kernel];
        let k = model
            .add_const("k", Tensor::from_shape(&k_shape, &weights).unwrap())
            .unwrap();
        // tract takes a shared bias as a scalar.
        let b_shape: &[usize] = if c.shared_bias { &[] } else { &[c.co] };
        let b = model
            .add_const("b", Tensor::from_shape(b_shape, &bias).unwrap())
            .unwrap();
        let y = model.wire_node("conv", op, &[x, k, b]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let input = Tensor::from_shape(&[c.n, c.ci, c.h, c.w], &input).unwrap();
        (model, weights, bias, input)
    }

    fn run(model: TypedModel, input: &Tensor) -> (Vec<f32>, Vec<String>) {
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let ops = plan
            .model()
            .nodes()
            .iter()
            .map(|n| n.op().name().to_string())
            .collect();
        let out = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
        let out = out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        (out, ops)
    }

    /// The definition, in f64: 3×3, stride 1, zero padding of one.
    fn reference(c: &Case, input: &[f32], weights: &[f32], bias: &[f32]) -> Vec<f64> {
        let (ci, co, h, w) = (c.ci, c.co, c.h, c.w);
        let mut out = vec![0f64; c.n * co * h * w];
        for i in 0..c.n {
            for o in 0..co {
                for y in 0..h {
                    for x in 0..w {
                        let mut sum = f64::from(bias[if bias.len() == 1 { 0 } else { o }]);
                        for ch in 0..ci {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = ((y + ky) as isize - 1, (x + kx) as isize - 1);
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let v =
                                        input[((i * ci + ch) * h + iy as usize) * w + ix as usize];
                                    let k = weights[((o * ci + ch) * 3 + ky) * 3 + kx];
                                    sum += f64::from(v) * f64::from(k);
                                }
                            }
                        }
                        out[((i * co + o) * h + y) * w + x] = sum;
                    }
                }
            }
        }
        out
    }

    fn max_diff(a: &[f32], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - y).abs())
            .fold(0.0, f64::max)
    }

    /// Every kernel and blocking, on shapes that leave partial blocks and tiles (channel
    /// counts not a multiple of the block, odd sizes, one shared bias, two images), agrees
    /// with the definition and with tract's own convolution to float rounding.
    #[test]
    fn every_kernel_matches_the_definition_and_tracts_convolution() {
        let cases = [
            // (n, ci, co, h, w, shared bias)
            (1, 3, 16, 32, 32, false),
            (2, 34, 68, 32, 32, false),
            (1, 16, 20, 17, 19, true),
            (2, 68, 136, 8, 8, false),
            (1, 24, 20, 5, 7, false),
            (1, 1, 1, 1, 1, false),
            (1, 130, 12, 3, 16, true),
            // Lone images with enough work for their blocks to be shared out over threads.
            (1, 40, 72, 24, 24, false),
            (1, 96, 80, 12, 12, false),
        ];
        let isas: Vec<Isa> = [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .filter(|isa| isa.available())
            .collect();
        if isas.is_empty() {
            eprintln!("this CPU has neither AVX-512F nor AVX2 + FMA: nothing to test");
            return;
        }
        for isa in isas {
            let mut blockings = Vec::new();
            for (seed, &(n, ci, co, h, w, shared_bias)) in cases.iter().enumerate() {
                let c = Case {
                    n,
                    ci,
                    co,
                    h,
                    w,
                    shared_bias,
                };
                let (mut model, weights, bias, input) =
                    one_conv(&c, conv(ci, co, 1, 3, 1, 1), seed as u64 * 10);
                let (tract, _) = run(model.clone(), &input);
                assert_eq!(
                    rewrite(&mut model, isa).unwrap(),
                    1,
                    "{isa:?} {n}×{ci}→{co} {h}×{w}"
                );
                let (direct, ops) = run(model.clone(), &input);
                assert!(ops.iter().any(|o| o == "DirectConv3x3"), "{ops:?}");
                // One image's blocks shared out over three threads: the same floats.
                let (shared, _) = threads(3).install(|| run(model, &input));
                assert!(
                    direct
                        .iter()
                        .zip(&shared)
                        .all(|(a, b)| a.to_bits() == b.to_bits())
                );
                let want = reference(&c, &input_values(&input), &weights, &bias);
                let (d, t) = (max_diff(&direct, &want), max_diff(&tract, &want));
                let what = format!("{isa:?} {n}×{ci}→{co} {h}×{w}: direct {d:e}, tract {t:e}");
                assert!(d < 2e-5 && t < 2e-5, "{what}");
                blockings.push(Blocking::for_shape(isa, co, w));
            }
            // Both kernels ran.
            assert!(
                blockings
                    .iter()
                    .any(|b| matches!(b, Blocking::Positions { .. }))
            );
            assert!(
                blockings
                    .iter()
                    .any(|b| matches!(b, Blocking::Channels { .. }))
            );
        }
    }

    fn threads(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    }

    fn input_values(t: &Tensor) -> Vec<f32> {
        t.try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    /// Strides, other kernel sizes, other padding and groups stay tract's.
    #[test]
    fn other_convolutions_are_left_to_tract() {
        let Some(isa) = [Isa::Avx512, Isa::Avx2].into_iter().find(|i| i.available()) else {
            return;
        };
        let c = Case {
            n: 1,
            ci: 8,
            co: 8,
            h: 8,
            w: 8,
            shared_bias: false,
        };
        for op in [
            conv(8, 8, 2, 3, 1, 1),
            conv(8, 8, 1, 1, 0, 1),
            conv(8, 8, 1, 3, 0, 1),
            conv(8, 8, 1, 3, 1, 2),
        ] {
            let what = format!("{:?}", op.pool_spec);
            let (mut model, ..) = one_conv(&c, op, 7);
            assert_eq!(rewrite(&mut model, isa).unwrap(), 0, "{what}");
        }
    }

    /// A symbolic batch size stays symbolic, and the plan runs any batch.
    #[test]
    fn the_batch_size_may_be_symbolic() {
        let Some(isa) = [Isa::Avx512, Isa::Avx2].into_iter().find(|i| i.available()) else {
            return;
        };
        let c = Case {
            n: 3,
            ci: 5,
            co: 9,
            h: 16,
            w: 16,
            shared_bias: false,
        };
        let (_, weights, bias, input) = one_conv(&c, conv(5, 9, 1, 3, 1, 1), 3);
        let mut model = TypedModel::default();
        let n = model.symbols.sym("N");
        let shape: [TDim; 4] = [n.into(), 5.into(), 16.into(), 16.into()];
        let x = model.add_source("x", f32::fact(shape)).unwrap();
        let k = model
            .add_const("k", Tensor::from_shape(&[9, 5, 3, 3], &weights).unwrap())
            .unwrap();
        let b = model
            .add_const("b", Tensor::from_shape(&[9], &bias).unwrap())
            .unwrap();
        let y = model
            .wire_node("conv", conv(5, 9, 1, 3, 1, 1), &[x, k, b])
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        assert_eq!(rewrite(&mut model, isa).unwrap(), 1);
        let (direct, _) = run(model, &input);
        let want = reference(&c, &input_values(&input), &weights, &bias);
        assert!(max_diff(&direct, &want) < 2e-5);
    }
}
