//! Writing the int8 graph of a [`Plan`] with calibrated activation parameters.

use std::collections::{BTreeMap, HashMap, HashSet};

use tpsnet_zoo::onnx::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    data_type,
};

use crate::error::{Error, Result};
use crate::graph::{Graph, f32_tensor};
use crate::params::{
    ActivationParams, QuantizedWeights, WeightClip, quantize_bias, quantize_weights, weight_qmax,
};
use crate::plan::{Lowering, Plan};

pub use crate::graph::MS_DOMAIN;

/// Name of the uint8 form of tensor `t`.
pub fn quantized_name(t: &str) -> String {
    format!("{t}_quantized")
}

/// Settings of the emitted graph.
#[derive(Clone, Debug)]
pub struct EmitOptions {
    /// How each conv's per-channel weight range is chosen.
    pub weight_clip: WeightClip,
    /// Extra `metadata_props` (key, value) for the model.
    pub metadata: Vec<(String, String)>,
    /// Give each `QLinearConv` the channel counts ONNX Runtime's direct int8 convolution
    /// takes ([`CHANNEL_MULTIPLE`], [`MIN_OUTPUT_CHANNELS`]): extra input channels at the
    /// zero point with zero weights, extra filters of zeros. The results are the same either
    /// way; `false` exists to show that.
    pub pad_channels: bool,
}

impl Default for EmitOptions {
    fn default() -> Self {
        EmitOptions {
            weight_clip: WeightClip::MaxAbs,
            metadata: vec![("precision".into(), "int8".into())],
            pad_channels: true,
        }
    }
}

/// ONNX Runtime's x86 int8 convolutions run a direct kernel (MLAS `ConvSym`, in
/// onnxruntime's `core/mlas/lib/convsym.cpp`; weights with zero point 0, as ours) when the
/// input channels are a multiple of 4 and there are at least 16 output channels, a
/// multiple of 4 (AVX-512) or 8 (AVX2); other shapes take im2col and a general int8 GEMM.
/// So a `QLinearConv` whose input channels are not a multiple of this (the stem's 3
/// colour channels) reads its input padded with channels at the zero point (real 0), with
/// zero weights for them: every integer sum is unchanged (measured on `resnet20`,
/// `tpsnet`, `model1`: 3 → 4 channels raised batch-256 throughput by 2.6 %, 1.2 % and
/// 1.2 %; 8 and 16 helped less; docs/quantization.md).
pub const CHANNEL_MULTIPLE: usize = 4;

/// A `QLinearConv` with fewer filters than this, or a count that is not a multiple of
/// [`CHANNEL_MULTIPLE`], gets zero filters up to both when only group-1 convolutions read
/// its output: its extra output channels hold the zero point (real 0), and its readers
/// give them zero weights instead of reading a padded copy ([`CHANNEL_MULTIPLE`]). In the
/// zoo: the stems of `resnet20` (8 → 16 filters) and `model2` (22 → 24) take the direct
/// kernel then, `model1`'s (34 → 36) with AVX-512 only; the readers of the latter two no
/// longer wait for a `Pad` of the whole first activation (docs/quantization.md).
pub const MIN_OUTPUT_CHANNELS: usize = 16;

/// Builds the int8 model. `params` holds the quantization parameters of every tensor in
/// `plan.calibrate`.
pub fn emit(
    g: &Graph,
    plan: &Plan,
    params: &HashMap<String, ActivationParams>,
    opts: &EmitOptions,
) -> Result<ModelProto> {
    let consumers = g.consumer_map();
    let widths = if opts.pad_channels {
        widened_outputs(g, plan, &consumers)
    } else {
        HashMap::new()
    };
    let mut e = Emitter {
        g,
        plan,
        params,
        widths,
        nodes: Vec::new(),
        inits: BTreeMap::new(),
        emitted_params: HashSet::new(),
    };
    let float_reader = |t: &str| -> bool {
        t == g.output.name
            || consumers
                .get(t)
                .is_some_and(|v| v.iter().any(|&i| plan.lowering[i] == Lowering::Float))
    };

    // The graph input, if an integer op reads it directly.
    if plan.quantize_from_float.contains(&g.input.name) {
        e.quantize_linear(&g.input.name)?;
    }
    for (i, n) in g.nodes.iter().enumerate() {
        for t in e.lower(&plan.lowering[i], n, opts)? {
            if float_reader(&t) {
                e.dequantize_linear(&t)?;
            }
        }
    }
    let Emitter { nodes, inits, .. } = e;
    let initializer = used_initializers(g, &nodes, inits);
    Ok(int8_model(g, nodes, initializer, opts))
}

/// The initializers the int8 nodes read: the new ones, and the fp32 model's that are
/// still used, sorted by name.
fn used_initializers(
    g: &Graph,
    nodes: &[NodeProto],
    inits: BTreeMap<String, TensorProto>,
) -> Vec<TensorProto> {
    let used: HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.input.iter().map(|s| s.as_str()))
        .collect();
    let mut initializer: Vec<TensorProto> = inits.into_values().collect();
    for (name, t) in &g.constants {
        if used.contains(name.as_str()) {
            initializer.push(f32_tensor(name, &t.dims, &t.data));
        }
    }
    initializer.extend(
        g.other_initializers
            .iter()
            .filter(|t| used.contains(t.name.as_str()))
            .cloned(),
    );
    initializer.sort_by(|a, b| a.name.cmp(&b.name));
    initializer
}

/// The fp32 model with the int8 graph, the Microsoft domain imported and the metadata of
/// `opts`.
fn int8_model(
    g: &Graph,
    nodes: Vec<NodeProto>,
    initializer: Vec<TensorProto>,
    opts: &EmitOptions,
) -> ModelProto {
    let mut model = g.model.clone();
    model.opset_import.retain(|o| o.domain != MS_DOMAIN);
    model.opset_import.push(OperatorSetIdProto {
        domain: MS_DOMAIN.into(),
        version: 1,
    });
    model
        .metadata_props
        .retain(|p| !opts.metadata.iter().any(|(k, _)| *k == p.key));
    model
        .metadata_props
        .extend(opts.metadata.iter().map(|(k, v)| StringStringEntryProto {
            key: k.clone(),
            value: v.clone(),
        }));
    model.graph = Some(GraphProto {
        node: nodes,
        name: format!("{}_int8", g.graph_name),
        initializer,
        doc_string: "int8 (QOperator: QLinearConv, QLinearAdd; uint8 activations, int8 \
                     per-channel weights), made by tpsnet-quantize"
            .into(),
        input: vec![g.input.clone()],
        output: vec![g.output.clone()],
        value_info: Vec::new(),
    });
    model
}

/// The uint8 tensors written with more channels than the fp32 model's (zero filters up to
/// [`MIN_OUTPUT_CHANNELS`] and a multiple of [`CHANNEL_MULTIPLE`]), with their width: the
/// outputs of group-1 convolutions whose every reader is a group-1 convolution (which
/// reads it as its input: a conv's weights and bias are constants), so that zero weights
/// absorb the extra channels.
fn widened_outputs(
    g: &Graph,
    plan: &Plan,
    consumers: &HashMap<&str, Vec<usize>>,
) -> HashMap<String, usize> {
    let plain_conv =
        |i: usize| matches!(plan.lowering[i], Lowering::Conv { .. }) && group(&g.nodes[i]) == 1;
    let mut widths = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let Lowering::Conv { output } = &plan.lowering[i] else {
            continue;
        };
        let filters = g.constants[&n.input[1]].dims[0] as usize;
        let width = filters
            .next_multiple_of(CHANNEL_MULTIPLE)
            .max(MIN_OUTPUT_CHANNELS);
        let readers = consumers
            .get(output.as_str())
            .map_or(&[][..], Vec::as_slice);
        let only_conv_inputs = !readers.is_empty()
            && *output != g.output.name
            && readers.iter().all(|&j| plain_conv(j));
        if width != filters && plain_conv(i) && only_conv_inputs {
            widths.insert(output.clone(), width);
        }
    }
    widths
}

/// A conv node's `group` attribute (1 when absent).
fn group(n: &NodeProto) -> i64 {
    n.attribute
        .iter()
        .find(|a| a.name == "group")
        .map_or(1, |a| a.i)
}

/// A conv's float weight shape and the channel counts its int8 weights are written with.
struct WeightShape<'a> {
    dims: &'a [i64],
    /// Input channels per group of the float weights.
    channels: usize,
    /// Weights per (filter, input channel): the kernel's area.
    per_channel: usize,
    in_width: usize,
    out_width: usize,
}

struct Emitter<'a> {
    g: &'a Graph,
    plan: &'a Plan,
    params: &'a HashMap<String, ActivationParams>,
    /// [`widened_outputs`].
    widths: HashMap<String, usize>,
    nodes: Vec<NodeProto>,
    inits: BTreeMap<String, TensorProto>,
    emitted_params: HashSet<String>,
}

impl Emitter<'_> {
    /// Writes node `n` as `lowering` says; returns the tensors it produced in uint8 (for
    /// a `DequantizeLinear` where fp32 reads them).
    fn lower(
        &mut self,
        lowering: &Lowering,
        n: &NodeProto,
        opts: &EmitOptions,
    ) -> Result<Vec<String>> {
        Ok(match lowering {
            Lowering::FusedRelu => Vec::new(),
            Lowering::Float => {
                self.nodes.push(n.clone());
                for o in &n.output {
                    if self.plan.quantize_from_float.contains(o) {
                        self.quantize_linear(o)?;
                    }
                }
                Vec::new()
            }
            Lowering::Conv { output } => {
                self.conv(n, output, opts)?;
                vec![output.clone()]
            }
            Lowering::Add { output } => {
                self.add(n, output)?;
                vec![output.clone()]
            }
            Lowering::AvgPool => {
                self.average_pool(n)?;
                vec![n.output[0].clone()]
            }
            Lowering::MaxPool => {
                let mut pool = n.clone();
                pool.input = vec![quantized_name(&n.input[0])];
                pool.output = vec![quantized_name(&n.output[0])];
                self.nodes.push(pool);
                vec![n.output[0].clone()]
            }
        })
    }

    /// The (scale, zero point) initializer names of tensor `t`, and its parameters.
    fn activation(&mut self, t: &str) -> Result<(String, String, ActivationParams)> {
        let root = self.plan.quantized.get(t).ok_or_else(|| self.internal(t))?;
        let p = *self.params.get(root).ok_or_else(|| self.internal(root))?;
        let (s, z) = (format!("{root}_scale"), format!("{root}_zero_point"));
        if self.emitted_params.insert(root.clone()) {
            self.inits
                .insert(s.clone(), f32_tensor(&s, &[], &[p.scale]));
            self.inits.insert(
                z.clone(),
                TensorProto {
                    name: z.clone(),
                    data_type: data_type::UINT8,
                    raw_data: vec![p.zero_point],
                    ..Default::default()
                },
            );
        }
        Ok((s, z, p))
    }

    fn internal(&self, t: &str) -> Error {
        Error::Unsupported {
            path: self.g.path.clone(),
            reason: format!("internal: no quantization parameters for tensor `{t}`"),
        }
    }

    fn quantize_linear(&mut self, t: &str) -> Result<()> {
        let (s, z, _) = self.activation(t)?;
        self.nodes.push(NodeProto {
            input: vec![t.into(), s, z],
            output: vec![quantized_name(t)],
            name: format!("{t}_QuantizeLinear"),
            op_type: "QuantizeLinear".into(),
            ..Default::default()
        });
        Ok(())
    }

    fn dequantize_linear(&mut self, t: &str) -> Result<()> {
        let (s, z, _) = self.activation(t)?;
        self.nodes.push(NodeProto {
            input: vec![quantized_name(t), s, z],
            output: vec![t.into()],
            name: format!("{t}_DequantizeLinear"),
            op_type: "DequantizeLinear".into(),
            ..Default::default()
        });
        Ok(())
    }

    fn conv(&mut self, n: &NodeProto, output: &str, opts: &EmitOptions) -> Result<()> {
        let x = &n.input[0];
        let (xs, xz, xp) = self.activation(x)?;
        let (ys, yz, _) = self.activation(output)?;
        let w = &self.g.constants[&n.input[1]];
        let m = w.dims[0] as usize;
        let q = quantize_weights(&w.data, m, opts.weight_clip, weight_qmax(xp.zero_point));
        let channels = w.dims[1] as usize;
        let per_channel = w.data.len() / (m * channels);
        // The input as the integer graph holds it: written wider by its producer, padded
        // here, or as it is.
        let (x_quantized, in_width) = match self.widths.get(x.as_str()) {
            Some(&width) => (quantized_name(x), width),
            None if opts.pad_channels && group(n) == 1 && channels % CHANNEL_MULTIPLE != 0 => {
                let width = channels.next_multiple_of(CHANNEL_MULTIPLE);
                let padded = self.pad_channels(x, &xz, w.dims.len(), channels, width);
                (padded, width)
            }
            None => (quantized_name(x), channels),
        };
        let out_width = self.widths.get(output).copied().unwrap_or(m);
        let shape = WeightShape {
            dims: &w.dims,
            channels,
            per_channel,
            in_width,
            out_width,
        };
        let [wname, wscale, wzero] = self.conv_weights(&n.name, &q, &shape);
        let mut inputs = vec![x_quantized, xs, xz, wname, wscale, wzero, ys, yz];
        if let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) {
            inputs.push(self.conv_bias(n, b, xp.scale, &q.scales, out_width)?);
        }
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![quantized_name(output)],
            name: n.name.clone(),
            op_type: "QLinearConv".into(),
            attribute: n.attribute.clone(),
            ..Default::default()
        });
        Ok(())
    }

    /// The int8 weights of conv `name` (codes, per-filter scales, zero points) written
    /// `shape.in_width` channels wide and `shape.out_width` filters tall: zero weights
    /// for the extra input channels, then zero filters. Returns their names.
    fn conv_weights(
        &mut self,
        name: &str,
        q: &QuantizedWeights,
        shape: &WeightShape,
    ) -> [String; 3] {
        let (channels, per_channel) = (shape.channels, shape.per_channel);
        let (in_width, out_width) = (shape.in_width, shape.out_width);
        let mut weight_values = Vec::with_capacity(out_width * in_width * per_channel);
        for row in q.values.chunks(channels * per_channel) {
            weight_values.extend(row.iter().map(|&v| v as u8));
            weight_values.resize(weight_values.len() + (in_width - channels) * per_channel, 0);
        }
        weight_values.resize(out_width * in_width * per_channel, 0);
        let mut weight_dims = shape.dims.to_vec();
        weight_dims[0] = out_width as i64;
        weight_dims[1] = in_width as i64;
        // Any positive scale represents a zero filter exactly.
        let mut weight_scales = q.scales.clone();
        weight_scales.resize(out_width, 1.0);
        let wname = format!("{name}.weight_quantized");
        let wscale = format!("{name}.weight_scale");
        let wzero = format!("{name}.weight_zero_point");
        self.inits.insert(
            wname.clone(),
            TensorProto {
                dims: weight_dims,
                data_type: data_type::INT8,
                name: wname.clone(),
                raw_data: weight_values,
                ..Default::default()
            },
        );
        self.inits.insert(
            wscale.clone(),
            f32_tensor(&wscale, &[out_width as i64], &weight_scales),
        );
        self.inits.insert(
            wzero.clone(),
            TensorProto {
                dims: vec![out_width as i64],
                data_type: data_type::INT8,
                name: wzero.clone(),
                raw_data: vec![0; out_width],
                ..Default::default()
            },
        );
        [wname, wscale, wzero]
    }

    /// The int32 bias (constant `bias`) of conv `n`, at the input scale `x_scale` times
    /// each filter's weight scale, zeros for the extra filters. Returns its name.
    fn conv_bias(
        &mut self,
        n: &NodeProto,
        bias: &str,
        x_scale: f32,
        weight_scales: &[f32],
        out_width: usize,
    ) -> Result<String> {
        let values = &self.g.constants[bias].data;
        let mut qb =
            quantize_bias(values, x_scale, weight_scales).ok_or_else(|| Error::Unsupported {
                path: self.g.path.clone(),
                reason: format!(
                    "the bias of `{}` does not fit in int32 at input scale {} (its input range is degenerate)",
                    n.name, x_scale
                ),
            })?;
        qb.resize(out_width, 0);
        let bname = format!("{}.bias_quantized", n.name);
        self.inits.insert(
            bname.clone(),
            TensorProto {
                dims: vec![out_width as i64],
                data_type: data_type::INT32,
                name: bname.clone(),
                raw_data: qb.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            },
        );
        Ok(bname)
    }

    /// The uint8 form of `x` (rank `rank`, `existing` channels) with its channels (axis 1)
    /// padded to `channels` with the zero point `zero_point` (real 0), made once per
    /// tensor and width.
    fn pad_channels(
        &mut self,
        x: &str,
        zero_point: &str,
        rank: usize,
        existing: usize,
        channels: usize,
    ) -> String {
        let output = format!("{}_padded{channels}", quantized_name(x));
        if self.nodes.iter().any(|n| n.output.contains(&output)) {
            return output;
        }
        // ONNX Pad: all begins, then all ends; only the end of axis 1 grows.
        let mut pads = vec![0i64; 2 * rank];
        pads[rank + 1] = (channels - existing) as i64;
        let pads_name = format!("{output}.pads");
        self.inits.insert(
            pads_name.clone(),
            TensorProto {
                dims: vec![pads.len() as i64],
                data_type: data_type::INT64,
                name: pads_name.clone(),
                raw_data: pads.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            },
        );
        self.nodes.push(NodeProto {
            input: vec![quantized_name(x), pads_name, zero_point.into()],
            output: vec![output.clone()],
            name: format!("{x}_pad{channels}"),
            op_type: "Pad".into(),
            ..Default::default()
        });
        output
    }

    fn average_pool(&mut self, n: &NodeProto) -> Result<()> {
        let (x, y) = (&n.input[0], &n.output[0]);
        let (xs, xz, _) = self.activation(x)?;
        let (ys, yz, _) = self.activation(y)?;
        self.nodes.push(NodeProto {
            input: vec![quantized_name(x), xs, xz, ys, yz],
            output: vec![quantized_name(y)],
            name: n.name.clone(),
            op_type: format!("QLinear{}", n.op_type),
            domain: MS_DOMAIN.into(),
            attribute: n.attribute.clone(),
            ..Default::default()
        });
        Ok(())
    }

    fn add(&mut self, n: &NodeProto, output: &str) -> Result<()> {
        let (a, b) = (&n.input[0], &n.input[1]);
        let (a_s, a_z, _) = self.activation(a)?;
        let (b_s, b_z, _) = self.activation(b)?;
        let (c_s, c_z, _) = self.activation(output)?;
        self.nodes.push(NodeProto {
            input: vec![
                quantized_name(a),
                a_s,
                a_z,
                quantized_name(b),
                b_s,
                b_z,
                c_s,
                c_z,
            ],
            output: vec![quantized_name(output)],
            name: n.name.clone(),
            op_type: "QLinearAdd".into(),
            domain: MS_DOMAIN.into(),
            ..Default::default()
        });
        Ok(())
    }
}
