//! Writes a [`ResNetSpec`] and its [`Weights`] as an ONNX model (IR 8, opset 17).
//!
//! No ONNX exporter exists for tch, so the few protobuf messages needed are declared
//! here with `prost` derives (field numbers from `onnx.proto`); no `protoc` is needed.
//!
//! The graph: `input` (N×3×32×32, RGB in [0, 1]) → Sub(mean) → Div(std) → stem Conv →
//! Relu → blocks → AveragePool(P) (MaxPool for `head_pool: max`) → Flatten → Gemm →
//! `logits` (N×classes). A residual block is Conv → Relu → Conv, shortcut Conv or
//! identity, Add, Relu; a plain block is Conv → Relu → MaxPool → Conv → Relu. Every
//! BatchNorm is folded into the convolution before it, so each conv carries a bias, except
//! a BatchNorm behind a max-pool (`plain_pool_first` and `pool_residual` blocks: Conv →
//! MaxPool → Mul → Add), which stays a per-channel scale and shift. A `pool_residual`
//! block continues with Conv → act → Conv, Add of the pooled activation, act. GELU is
//! written with Erf. The batch dimension is dynamic.
//!
//! ```
//! use tpsnet_zoo::{ResNetSpec, Weights, onnx};
//! let spec = ResNetSpec::paper(&[1, 1, 1], 4, 2);
//! let bytes = onnx::export(&spec, &Weights::random(&spec, 1), &onnx::ExportOptions::default()).unwrap();
//! assert!(bytes.len() > 1000);
//! ```

use prost::Message;

use crate::arch::{Activation, BN_EPS, BlockKind, BlockPlan, HeadPool, ResNetSpec};
use crate::manifest::{CIFAR10_MEAN, CIFAR10_STD};
use crate::weights::{WeightTensor, Weights, WeightsError};

/// ONNX operator set the writer targets.
pub const OPSET: i64 = 17;
/// ONNX IR version the writer targets.
pub const IR_VERSION: i64 = 8;

/// The protobuf messages of `onnx.proto` that the writer needs, with the fields a reader
/// of zoo-style graphs needs too (`tpsnet-quantize` decodes models with them). Fields
/// not declared here are skipped when decoding.
pub mod proto {
    /// An ONNX model: the file's top-level message.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        /// ONNX IR version ([`super::IR_VERSION`] when written here).
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        /// Operator sets the graph uses.
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
        /// Name of the tool that wrote the model.
        #[prost(string, tag = "2")]
        pub producer_name: String,
        /// Version of that tool.
        #[prost(string, tag = "3")]
        pub producer_version: String,
        /// Reverse-DNS namespace of the model.
        #[prost(string, tag = "4")]
        pub domain: String,
        /// Version of the model.
        #[prost(int64, tag = "5")]
        pub model_version: i64,
        /// Free-text description.
        #[prost(string, tag = "6")]
        pub doc_string: String,
        /// The graph.
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
        /// Key/value metadata (e.g. the model name).
        #[prost(message, repeated, tag = "14")]
        pub metadata_props: Vec<StringStringEntryProto>,
    }

    /// One operator set the model imports.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        /// Operator domain; empty for the default ONNX domain.
        #[prost(string, tag = "1")]
        pub domain: String,
        /// Operator set version.
        #[prost(int64, tag = "2")]
        pub version: i64,
    }

    /// A key/value pair (metadata, external-data locations).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringStringEntryProto {
        /// The key.
        #[prost(string, tag = "1")]
        pub key: String,
        /// The value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// The computation graph.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        /// Nodes in topological order.
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        /// Graph name.
        #[prost(string, tag = "2")]
        pub name: String,
        /// Constant tensors (weights), referenced by name.
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        /// Free-text description.
        #[prost(string, tag = "10")]
        pub doc_string: String,
        /// Graph inputs.
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        /// Graph outputs.
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
        /// Types of intermediate values, where known.
        #[prost(message, repeated, tag = "13")]
        pub value_info: Vec<ValueInfoProto>,
    }

    /// One operator application.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        /// Names of the values the node reads (empty string: an omitted optional input).
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        /// Names of the values the node writes.
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        /// Node name (unique in the graph, may be empty).
        #[prost(string, tag = "3")]
        pub name: String,
        /// Operator type, e.g. `Conv`.
        #[prost(string, tag = "4")]
        pub op_type: String,
        /// Operator domain; empty for the default ONNX domain.
        #[prost(string, tag = "7")]
        pub domain: String,
        /// The node's attributes.
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
        /// Free-text description.
        #[prost(string, tag = "6")]
        pub doc_string: String,
    }

    /// `AttributeProto.AttributeType` values.
    pub mod attribute_type {
        /// `f` holds the value.
        pub const FLOAT: i32 = 1;
        /// `i` holds the value.
        pub const INT: i32 = 2;
        /// `s` holds the value.
        pub const STRING: i32 = 3;
        /// `t` holds the value.
        pub const TENSOR: i32 = 4;
        /// `floats` holds the values.
        pub const FLOATS: i32 = 6;
        /// `ints` holds the values.
        pub const INTS: i32 = 7;
    }

    /// A named attribute of a node.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        /// Attribute name, e.g. `strides`.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Which of the value fields holds the value ([`attribute_type`]).
        #[prost(int32, tag = "20")]
        pub r#type: i32,
        /// Value of a FLOAT attribute.
        #[prost(float, tag = "2")]
        pub f: f32,
        /// Value of an INT attribute.
        #[prost(int64, tag = "3")]
        pub i: i64,
        /// Value of a STRING attribute (bytes).
        #[prost(bytes = "vec", tag = "4")]
        pub s: Vec<u8>,
        /// Value of a TENSOR attribute.
        #[prost(message, optional, tag = "5")]
        pub t: Option<TensorProto>,
        /// Values of a FLOATS attribute.
        #[prost(float, repeated, tag = "7")]
        pub floats: Vec<f32>,
        /// Values of an INTS attribute.
        #[prost(int64, repeated, tag = "8")]
        pub ints: Vec<i64>,
    }

    /// `TensorProto.DataType` values.
    pub mod data_type {
        /// 32-bit float.
        pub const FLOAT: i32 = 1;
        /// Unsigned 8-bit integer.
        pub const UINT8: i32 = 2;
        /// Signed 8-bit integer.
        pub const INT8: i32 = 3;
        /// Signed 32-bit integer.
        pub const INT32: i32 = 6;
        /// Signed 64-bit integer.
        pub const INT64: i32 = 7;
    }

    /// `TensorProto.DataLocation.EXTERNAL`: the data lives in another file.
    pub const DATA_LOCATION_EXTERNAL: i32 = 1;

    /// A constant tensor (weights, attribute values).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        /// Shape.
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        /// Element type ([`data_type`]).
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        /// Name the graph refers to it by.
        #[prost(string, tag = "8")]
        pub name: String,
        /// Values as little-endian bytes (the usual encoding).
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
        /// FLOAT values, when not in `raw_data`.
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        /// Also holds INT8/UINT8/INT16/... values, one per element.
        #[prost(int32, repeated, tag = "5")]
        pub int32_data: Vec<i32>,
        /// INT64 values, when not in `raw_data`.
        #[prost(int64, repeated, tag = "7")]
        pub int64_data: Vec<i64>,
        /// Where external data lives (`location`, `offset`, ...).
        #[prost(message, repeated, tag = "13")]
        pub external_data: Vec<StringStringEntryProto>,
        /// [`DATA_LOCATION_EXTERNAL`] when the data is in another file.
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }

    /// A named graph input, output or intermediate value with its type.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        /// The value's name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Its type.
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
        /// Free-text description.
        #[prost(string, tag = "3")]
        pub doc_string: String,
    }

    /// A value's type (only tensor types are declared).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        /// The tensor type.
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TypeProtoTensor>,
    }

    /// `TypeProto.Tensor`: element type and shape.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProtoTensor {
        /// Element type ([`data_type`]).
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        /// Shape, when known.
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    /// A tensor shape.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        /// One entry per dimension.
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dimension>,
    }

    /// `TensorShapeProto.Dimension`: a fixed size or a named (dynamic) one.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        /// Fixed size or symbolic name.
        #[prost(oneof = "DimensionValue", tags = "1, 2")]
        pub value: Option<DimensionValue>,
    }

    /// The value of a [`Dimension`].
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum DimensionValue {
        /// A fixed size.
        #[prost(int64, tag = "1")]
        DimValue(i64),
        /// A symbolic (dynamic) size, e.g. `N`.
        #[prost(string, tag = "2")]
        DimParam(String),
    }
}

use proto::*;

/// Settings of one export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Graph input name.
    pub input_name: String,
    /// Graph output name.
    pub output_name: String,
    /// Per-channel mean subtracted inside the graph.
    pub mean: [f32; 3],
    /// Per-channel std divided by inside the graph.
    pub std: [f32; 3],
    /// Key/value pairs stored as the model's `metadata_props` (e.g. model name).
    pub metadata: Vec<(String, String)>,
    /// Graph name.
    pub graph_name: String,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            input_name: "input".into(),
            output_name: "logits".into(),
            mean: CIFAR10_MEAN,
            std: CIFAR10_STD,
            metadata: Vec::new(),
            graph_name: "tpsnet_zoo_resnet".into(),
        }
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The spec is not a valid network.
    #[error("invalid spec: {0}")]
    Spec(#[from] crate::arch::SpecError),
    /// A weight tensor is missing, misshapen or not finite.
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

struct GraphBuilder<'a> {
    weights: &'a Weights,
    graph: GraphProto,
}

impl GraphBuilder<'_> {
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        let out = name.to_string();
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: name.to_string(),
            op_type: op.to_string(),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn initializer(&mut self, name: &str, shape: &[usize], data: &[f32]) -> String {
        let mut raw = Vec::with_capacity(data.len() * 4);
        for v in data {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.graph.initializer.push(TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            name: name.to_string(),
            raw_data: raw,
            ..Default::default()
        });
        name.to_string()
    }

    /// A BatchNorm's scale, shift, running mean and running variance.
    fn bn(&self, bn: &str) -> Result<[&WeightTensor; 4], WeightsError> {
        let get = |what: &str| self.weights.get(&format!("{bn}.{what}"));
        Ok([
            get("weight")?,
            get("bias")?,
            get("running_mean")?,
            get("running_var")?,
        ])
    }

    /// Conv with its BatchNorm folded in: `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`.
    fn conv_bn(
        &mut self,
        x: &str,
        conv: &str,
        bn: &str,
        stride: usize,
        pad: Option<usize>,
    ) -> Result<String, WeightsError> {
        let w = self.weights.get(&format!("{conv}.weight"))?;
        let [gamma, beta, mean, var] = self.bn(bn)?;
        let (folded_w, folded_b) = fold_bn(w, gamma, beta, mean, var);
        let k = w.shape[2];
        let wn = self.initializer(&format!("{conv}.weight"), &w.shape, &folded_w);
        let bn_name = self.initializer(&format!("{conv}.bias"), &[w.shape[0]], &folded_b);
        let pad = pad.unwrap_or(k / 2) as i64;
        Ok(self.node(
            "Conv",
            conv,
            &[x, &wn, &bn_name],
            vec![
                ints("kernel_shape", &[k as i64, k as i64]),
                ints("strides", &[stride as i64, stride as i64]),
                ints("pads", &[pad, pad, pad, pad]),
                ints("dilations", &[1, 1]),
                int("group", 1),
            ],
        ))
    }
}

impl GraphBuilder<'_> {
    /// The spec's nonlinearity. GELU is written as `0.5·x·(1 + erf(x/√2))` (opset 17 has
    /// no Gelu operator; ONNX Runtime fuses this pattern back into one kernel).
    fn act(&mut self, act: Activation, name: &str, x: &str) -> String {
        match act {
            Activation::Relu => self.node("Relu", name, &[x], vec![]),
            Activation::Gelu => {
                let sqrt2 =
                    self.initializer(&format!("{name}.sqrt2"), &[], &[std::f32::consts::SQRT_2]);
                let one = self.initializer(&format!("{name}.one"), &[], &[1.0]);
                let half = self.initializer(&format!("{name}.half"), &[], &[0.5]);
                let d = self.node("Div", &format!("{name}.div"), &[x, &sqrt2], vec![]);
                let e = self.node("Erf", &format!("{name}.erf"), &[&d], vec![]);
                let a = self.node("Add", &format!("{name}.add"), &[&e, &one], vec![]);
                let m = self.node("Mul", &format!("{name}.mul"), &[x, &a], vec![]);
                self.node("Mul", name, &[&m, &half], vec![])
            }
        }
    }

    /// A bias-free Conv followed, after a max-pool, by its BatchNorm as a scale and shift
    /// (`PlainPoolFirst` blocks: folding into the conv would not commute with the pool
    /// where a BN scale is negative).
    fn conv_pool_bn(
        &mut self,
        x: &str,
        (conv, bn, pool): (&str, &str, &str),
        s: usize,
    ) -> Result<String, WeightsError> {
        let w = self.weights.get(&format!("{conv}.weight"))?;
        let [gamma, beta, mean, var] = self.bn(bn)?;
        let k = w.shape[2];
        let c = w.shape[0];
        let (w_shape, w_data) = (w.shape.clone(), w.data.clone());
        let (scale, shift): (Vec<f32>, Vec<f32>) = (0..c)
            .map(|o| {
                let sc = gamma.data[o] as f64 / (var.data[o] as f64 + BN_EPS).sqrt();
                (
                    sc as f32,
                    (beta.data[o] as f64 - mean.data[o] as f64 * sc) as f32,
                )
            })
            .unzip();
        let wn = self.initializer(&format!("{conv}.weight"), &w_shape, &w_data);
        let pad = (k / 2) as i64;
        let mut h = self.node(
            "Conv",
            conv,
            &[x, &wn],
            vec![
                ints("kernel_shape", &[k as i64, k as i64]),
                ints("strides", &[1, 1]),
                ints("pads", &[pad, pad, pad, pad]),
                ints("dilations", &[1, 1]),
                int("group", 1),
            ],
        );
        if s > 1 {
            let s = s as i64;
            h = self.node(
                "MaxPool",
                pool,
                &[&h],
                vec![ints("kernel_shape", &[s, s]), ints("strides", &[s, s])],
            );
        }
        let scale = self.initializer(&format!("{bn}.scale"), &[1, c, 1, 1], &scale);
        let shift = self.initializer(&format!("{bn}.shift"), &[1, c, 1, 1], &shift);
        let m = self.node("Mul", &format!("{bn}.mul"), &[&h, &scale], vec![]);
        Ok(self.node("Add", bn, &[&m, &shift], vec![]))
    }
}

/// Folds an inference-mode BatchNorm into the preceding bias-free convolution.
pub fn fold_bn(
    w: &WeightTensor,
    gamma: &WeightTensor,
    beta: &WeightTensor,
    mean: &WeightTensor,
    var: &WeightTensor,
) -> (Vec<f32>, Vec<f32>) {
    let out_ch = w.shape[0];
    let per_out = w.data.len() / out_ch;
    let mut fw = w.data.clone();
    let mut fb = vec![0f32; out_ch];
    for o in 0..out_ch {
        // Computed in f64 so the folding adds no error beyond the final f32 rounding.
        let scale = gamma.data[o] as f64 / (var.data[o] as f64 + BN_EPS).sqrt();
        for v in &mut fw[o * per_out..(o + 1) * per_out] {
            *v = (*v as f64 * scale) as f32;
        }
        fb[o] = (beta.data[o] as f64 - mean.data[o] as f64 * scale) as f32;
    }
    (fw, fb)
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: v,
        ..Default::default()
    }
}

fn tensor_value(name: &str, elem: i32, dims: &[Option<i64>], batch_param: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: elem,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => DimensionValue::DimValue(*v),
                                None => DimensionValue::DimParam(batch_param.into()),
                            }),
                        })
                        .collect(),
                }),
            }),
        }),
        ..Default::default()
    }
}

/// Builds the ONNX `ModelProto` for `spec` with `weights` (BN folded).
pub fn build_model(
    spec: &ResNetSpec,
    weights: &Weights,
    opts: &ExportOptions,
) -> Result<ModelProto, ExportError> {
    spec.validate()?;
    weights.check(spec)?;
    let mut g = GraphBuilder {
        weights,
        graph: GraphProto {
            name: opts.graph_name.clone(),
            ..Default::default()
        },
    };
    let side = spec.input_size as i64;
    g.graph.input.push(tensor_value(
        &opts.input_name,
        data_type::FLOAT,
        &[None, Some(spec.in_channels as i64), Some(side), Some(side)],
        "batch",
    ));
    let x = g.normalize(opts);
    let stem = g.conv_bn(&x, "stem.conv", "stem.bn", 1, spec.stem_padding)?;
    let mut x = g.act(spec.activation, "stem.relu", &stem);
    for b in spec.blocks() {
        x = g.block(&b, spec.activation, &x)?;
    }
    g.head(spec, opts, &x)?;
    g.graph.output.push(tensor_value(
        &opts.output_name,
        data_type::FLOAT,
        &[None, Some(spec.num_classes as i64)],
        "batch",
    ));
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "tpsnet-zoo".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: "Compact ResNet for CIFAR-10. Input: float32 NCHW RGB in [0, 1]; \
                     normalisation is inside the graph. Output: logits."
            .into(),
        graph: Some(g.graph),
        metadata_props: metadata_props(spec, opts),
        ..Default::default()
    })
}

/// The caller's metadata and the spec as JSON (what the runtime reads back).
fn metadata_props(spec: &ResNetSpec, opts: &ExportOptions) -> Vec<StringStringEntryProto> {
    let mut props: Vec<StringStringEntryProto> = opts
        .metadata
        .iter()
        .map(|(k, v)| StringStringEntryProto {
            key: k.clone(),
            value: v.clone(),
        })
        .collect();
    props.push(StringStringEntryProto {
        key: "spec".into(),
        value: serde_json::to_string(spec).expect("spec serialises"),
    });
    props
}

/// The graph's parts, in the order they are written: normalisation, one function per
/// block kind, the head.
impl GraphBuilder<'_> {
    /// Normalisation inside the graph, so callers feed RGB in [0, 1].
    fn normalize(&mut self, opts: &ExportOptions) -> String {
        let mean = self.initializer("normalize.mean", &[1, 3, 1, 1], &opts.mean);
        let std = self.initializer("normalize.std", &[1, 3, 1, 1], &opts.std);
        let centred = self.node("Sub", "normalize.sub", &[&opts.input_name, &mean], vec![]);
        self.node("Div", "normalize.div", &[&centred, &std], vec![])
    }

    fn block(&mut self, b: &BlockPlan, act: Activation, x: &str) -> Result<String, WeightsError> {
        match b.kind {
            BlockKind::PoolResidual => self.pool_residual_block(b, act, x),
            BlockKind::PlainPoolFirst => self.plain_pool_first_block(b, act, x),
            BlockKind::Plain => self.plain_block(b, act, x),
            BlockKind::Residual => self.residual_block(b, act, x),
        }
    }

    /// `conv1 → max-pool → BN`, the first step of the pool-first block kinds.
    fn pool_first_conv(&mut self, b: &BlockPlan, x: &str) -> Result<String, WeightsError> {
        let p = b.prefix();
        let names = (
            format!("{p}.conv1"),
            format!("{p}.bn1"),
            format!("{p}.pool"),
        );
        self.conv_pool_bn(x, (&names.0, &names.1, &names.2), b.stride)
    }

    /// airbench96's ConvGroup: head = act(BN(pool(conv1 x))); the pair's sum with the head
    /// goes through the last act.
    fn pool_residual_block(
        &mut self,
        b: &BlockPlan,
        act: Activation,
        x: &str,
    ) -> Result<String, WeightsError> {
        let p = b.prefix();
        let c1 = self.pool_first_conv(b, x)?;
        let head = self.act(act, &format!("{p}.relu1"), &c1);
        let c2 = self.conv_bn(&head, &format!("{p}.conv2"), &format!("{p}.bn2"), 1, None)?;
        let h = self.act(act, &format!("{p}.relu2"), &c2);
        let c3 = self.conv_bn(&h, &format!("{p}.conv3"), &format!("{p}.bn3"), 1, None)?;
        let sum = self.node("Add", &format!("{p}.add"), &[&c3, &head], vec![]);
        Ok(self.act(act, &format!("{p}.relu3"), &sum))
    }

    fn plain_pool_first_block(
        &mut self,
        b: &BlockPlan,
        act: Activation,
        x: &str,
    ) -> Result<String, WeightsError> {
        let p = b.prefix();
        let c1 = self.pool_first_conv(b, x)?;
        let h = self.act(act, &format!("{p}.relu1"), &c1);
        let c2 = self.conv_bn(&h, &format!("{p}.conv2"), &format!("{p}.bn2"), 1, None)?;
        Ok(self.act(act, &format!("{p}.relu2"), &c2))
    }

    fn plain_block(
        &mut self,
        b: &BlockPlan,
        act: Activation,
        x: &str,
    ) -> Result<String, WeightsError> {
        let p = b.prefix();
        let c1 = self.conv_bn(x, &format!("{p}.conv1"), &format!("{p}.bn1"), 1, None)?;
        let mut h = self.act(act, &format!("{p}.relu1"), &c1);
        if b.stride > 1 {
            let s = b.stride as i64;
            h = self.node(
                "MaxPool",
                &format!("{p}.pool"),
                &[&h],
                vec![ints("kernel_shape", &[s, s]), ints("strides", &[s, s])],
            );
        }
        let c2 = self.conv_bn(&h, &format!("{p}.conv2"), &format!("{p}.bn2"), 1, None)?;
        Ok(self.act(act, &format!("{p}.relu2"), &c2))
    }

    /// The paper's post-activation basic block, with a projection shortcut where the spec
    /// has one.
    fn residual_block(
        &mut self,
        b: &BlockPlan,
        act: Activation,
        x: &str,
    ) -> Result<String, WeightsError> {
        let p = b.prefix();
        let c1 = self.conv_bn(
            x,
            &format!("{p}.conv1"),
            &format!("{p}.bn1"),
            b.stride,
            None,
        )?;
        let r1 = self.act(act, &format!("{p}.relu1"), &c1);
        // Dropout is the identity at inference and is left out of the graph.
        let c2 = self.conv_bn(&r1, &format!("{p}.conv2"), &format!("{p}.bn2"), 1, None)?;
        let short = match b.skip_kernel {
            Some(_) => self.conv_bn(
                x,
                &format!("{p}.shortcut.conv"),
                &format!("{p}.shortcut.bn"),
                b.stride,
                None,
            )?,
            None => x.to_string(),
        };
        let sum = self.node("Add", &format!("{p}.add"), &[&c2, &short], vec![]);
        Ok(self.act(act, &format!("{p}.relu2"), &sum))
    }

    /// Pool, flatten and the linear layer, whose output is the graph's output.
    fn head(
        &mut self,
        spec: &ResNetSpec,
        opts: &ExportOptions,
        x: &str,
    ) -> Result<(), WeightsError> {
        let p = spec.pool as i64;
        let pool_op = match spec.head_pool {
            HeadPool::Avg => "AveragePool",
            HeadPool::Max => "MaxPool",
        };
        let pooled = self.node(
            pool_op,
            "head.pool",
            &[x],
            vec![ints("kernel_shape", &[p, p]), ints("strides", &[p, p])],
        );
        let flat = self.node("Flatten", "head.flatten", &[&pooled], vec![int("axis", 1)]);
        let fc_w = self.weights.get("fc.weight")?;
        let fc_b = self.weights.get("fc.bias")?;
        let wn = self.initializer("fc.weight", &fc_w.shape, &fc_w.data);
        let bn = self.initializer("fc.bias", &fc_b.shape, &fc_b.data);
        self.graph.node.push(NodeProto {
            input: vec![flat, wn, bn],
            output: vec![opts.output_name.clone()],
            name: "head.fc".into(),
            op_type: "Gemm".into(),
            attribute: vec![int("transB", 1)],
            ..Default::default()
        });
        Ok(())
    }
}

/// Serialises the model of [`build_model`] to ONNX bytes.
pub fn export(
    spec: &ResNetSpec,
    weights: &Weights,
    opts: &ExportOptions,
) -> Result<Vec<u8>, ExportError> {
    Ok(build_model(spec, weights, opts)?.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_has_expected_structure() {
        let spec = ResNetSpec::paper(&[2, 1, 1], 4, 2);
        let w = Weights::random(&spec, 3);
        let m = build_model(&spec, &w, &ExportOptions::default()).unwrap();
        let g = m.graph.as_ref().unwrap();
        let convs = g.node.iter().filter(|n| n.op_type == "Conv").count();
        // stem + 2 per block + 3 projections (one per layer, as C1 != 2·C1).
        assert_eq!(convs, 1 + 2 * 4 + 3);
        assert!(g.node.iter().all(|n| n.op_type != "BatchNormalization"));
        assert_eq!(g.output[0].name, "logits");
        // Round-trips through prost.
        let bytes = m.encode_to_vec();
        assert_eq!(ModelProto::decode(bytes.as_slice()).unwrap(), m);
    }

    #[test]
    fn pool_residual_blocks_export_three_convs_and_an_add() {
        let spec = ResNetSpec::airnet_res();
        let w = Weights::random(&spec, 5);
        let m = build_model(&spec, &w, &ExportOptions::default()).unwrap();
        let g = m.graph.as_ref().unwrap();
        let count = |op: &str| g.node.iter().filter(|n| n.op_type == op).count();
        assert_eq!(count("Conv"), 1 + 3 * 3);
        assert_eq!(count("BatchNormalization"), 0);
        // A pool per block plus the head's; each block's first BN a Mul + Add behind it.
        assert_eq!(count("MaxPool"), 3 + 1);
        for l in 0..3 {
            let node = |name: String| g.node.iter().find(|n| n.name == name).unwrap();
            let p = format!("layer{l}.block0");
            assert_eq!(node(format!("{p}.bn1")).op_type, "Add");
            // The residual sum: the pair's output plus the block's pooled activation.
            let sum = node(format!("{p}.add"));
            assert_eq!(sum.input, [format!("{p}.conv3"), format!("{p}.relu1")]);
        }
    }

    #[test]
    fn missing_or_bad_weights_are_reported() {
        let spec = ResNetSpec::paper(&[1, 1, 1], 4, 2);
        let mut w = Weights::random(&spec, 3);
        w.tensors.remove("layer1.block0.bn2.running_var");
        let e = export(&spec, &w, &ExportOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("layer1.block0.bn2.running_var"),
            "{e}"
        );
        let mut w = Weights::random(&spec, 3);
        w.tensors.get_mut("fc.bias").unwrap().data[0] = f32::NAN;
        assert!(export(&spec, &w, &ExportOptions::default()).is_err());
    }

    #[test]
    fn folding_matches_batchnorm() {
        let t = |shape: Vec<usize>, d: Vec<f32>| WeightTensor::new(shape, d);
        let w = t(vec![2, 1, 1, 1], vec![2.0, -1.0]);
        let (fw, fb) = fold_bn(
            &w,
            &t(vec![2], vec![1.5, 0.5]),
            &t(vec![2], vec![0.1, -0.2]),
            &t(vec![2], vec![0.3, 1.0]),
            &t(vec![2], vec![4.0, 0.25]),
        );
        // x = 1: conv → 2.0; BN → 1.5·(2 − 0.3)/√(4+ε) + 0.1
        let bn0 = 1.5 * (2.0 - 0.3) / (4.0f64 + BN_EPS).sqrt() + 0.1;
        assert!((fw[0] as f64 + fb[0] as f64 - bn0).abs() < 1e-6);
        let bn1 = 0.5 * (-1.0 - 1.0) / (0.25f64 + BN_EPS).sqrt() - 0.2;
        assert!((fw[1] as f64 + fb[1] as f64 - bn1).abs() < 1e-6);
    }
}
