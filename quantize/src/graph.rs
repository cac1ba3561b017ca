//! Reading an fp32 ONNX model into a graph the quantizer can rewrite, and refusing the
//! ones it cannot handle.
//!
//! The messages are `tpsnet_zoo::onnx::proto`'s hand-written prost structs (no `protoc`), so
//! fields they do not declare are dropped on reading; the checks here refuse every model
//! where that would lose meaning (other operator domains, external data, ops outside
//! the list below).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use prost::Message;
use tpsnet_zoo::onnx::proto::{
    DATA_LOCATION_EXTERNAL, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto,
    TypeProtoTensor, ValueInfoProto, data_type,
};

use crate::error::{Error, Result};

/// Operators of the default domain that the quantizer understands. Conv and Add (of two
/// activations) become integer ops; MaxPool runs on uint8 where its input is quantized;
/// the rest stay fp32 between a DequantizeLinear and a QuantizeLinear.
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "Relu",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Erf",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Gemm",
    "MatMul",
];

/// Operators that only occur in models that are already quantized.
const QUANTIZED_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "QLinearAdd",
    "QLinearMul",
    "QGemm",
];

/// Lowest default-domain operator set accepted (QuantizeLinear/DequantizeLinear with
/// their current semantics).
pub const MIN_OPSET: i64 = 13;

/// Operator domain of ONNX Runtime's contrib ops.
pub const MS_DOMAIN: &str = "com.microsoft";

/// A float32 constant.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatTensor {
    /// Shape.
    pub dims: Vec<i64>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl FloatTensor {
    /// Reads a FLOAT `TensorProto` (raw little-endian bytes or `float_data`).
    pub fn from_proto(t: &TensorProto) -> std::result::Result<Self, String> {
        if t.data_type != data_type::FLOAT {
            return Err(format!(
                "initializer `{}` has data type {}, not float",
                t.name, t.data_type
            ));
        }
        let data: Vec<f32> = if !t.raw_data.is_empty() {
            if t.raw_data.len() % 4 != 0 {
                return Err(format!(
                    "initializer `{}` has {} raw bytes, not a whole number of floats",
                    t.name,
                    t.raw_data.len()
                ));
            }
            t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            t.float_data.clone()
        };
        let expected: i64 = t.dims.iter().product();
        if t.dims.iter().any(|&d| d < 0) || expected as usize != data.len() {
            return Err(format!(
                "initializer `{}` has dims {:?} but {} values",
                t.name,
                t.dims,
                data.len()
            ));
        }
        Ok(FloatTensor {
            dims: t.dims.clone(),
            data,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when it holds no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The value of a one-element tensor (any rank), if it is one.
    pub fn scalar(&self) -> Option<f32> {
        (self.data.len() == 1).then(|| self.data[0])
    }

    /// The per-channel values of a tensor shaped `[C]`, `[C,1,1]` or `[1,C,1,1]`.
    pub fn per_channel(&self, channels: usize) -> Option<&[f32]> {
        let non_unit: Vec<i64> = self.dims.iter().copied().filter(|&d| d != 1).collect();
        let shape_ok = match self.dims.len() {
            1 => true,
            3 => self.dims[1] == 1 && self.dims[2] == 1,
            4 => self.dims[0] == 1 && self.dims[2] == 1 && self.dims[3] == 1,
            _ => false,
        };
        (shape_ok && self.data.len() == channels && non_unit.len() <= 1).then_some(&self.data[..])
    }
}

/// An fp32 model as the quantizer sees it.
#[derive(Clone, Debug)]
pub struct Graph {
    /// Where the model came from (for messages).
    pub path: PathBuf,
    /// The decoded model; its `graph` is taken apart into the fields below.
    pub model: ModelProto,
    /// Nodes in topological order, every one with a unique, non-empty name.
    pub nodes: Vec<NodeProto>,
    /// Float initializers by name.
    pub constants: BTreeMap<String, FloatTensor>,
    /// Initializers of other types (e.g. a Reshape's int64 shape), kept as they are.
    pub other_initializers: Vec<TensorProto>,
    /// The one graph input (float32 images).
    pub input: ValueInfoProto,
    /// The one graph output (float32 logits).
    pub output: ValueInfoProto,
    /// The graph's name.
    pub graph_name: String,
}

impl Graph {
    /// Decodes and checks an ONNX model. `path` is only used in messages.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Self> {
        let at = |r: Refusal| r.at(path);
        let mut model =
            ModelProto::decode(bytes).map_err(|e| at(Refusal::Decode(e.to_string())))?;
        let graph = model
            .graph
            .take()
            .ok_or_else(|| at(Refusal::Decode("it holds no graph".into())))?;
        if graph.node.is_empty() {
            return Err(at(Refusal::Decode("its graph has no nodes".into())));
        }
        check_opset(&model).map_err(at)?;
        let GraphProto {
            name: graph_name,
            initializer,
            input,
            output,
            node,
            ..
        } = graph;
        let (constants, other_initializers) = split_initializers(initializer).map_err(at)?;
        let is_init =
            |n: &str| constants.contains_key(n) || other_initializers.iter().any(|t| t.name == n);
        let (input, output) = single_float_io(input, output, is_init).map_err(at)?;
        let nodes = checked_nodes(path, node, &constants)?;
        check_topological(&nodes, &input.name, &constants, &other_initializers)
            .map_err(|r| at(Refusal::Unsupported(r)))?;
        Ok(Graph {
            path: path.to_path_buf(),
            model,
            nodes,
            constants,
            other_initializers,
            input,
            output,
            graph_name,
        })
    }

    /// The fp32 model of this graph (after any rewrite), with `extra_outputs` as further
    /// float32 graph outputs (what calibration reads).
    pub fn fp32_model(&self, extra_outputs: &[String]) -> ModelProto {
        let mut initializer: Vec<TensorProto> = self
            .constants
            .iter()
            .map(|(name, t)| f32_tensor(name, &t.dims, &t.data))
            .collect();
        initializer.extend(self.other_initializers.iter().cloned());
        let mut output = vec![self.output.clone()];
        output.extend(
            extra_outputs
                .iter()
                .filter(|o| **o != self.output.name)
                .map(|o| ValueInfoProto {
                    name: o.clone(),
                    r#type: Some(TypeProto {
                        tensor_type: Some(TypeProtoTensor {
                            elem_type: data_type::FLOAT,
                            shape: None,
                        }),
                    }),
                    ..Default::default()
                }),
        );
        let mut model = self.model.clone();
        let ms = MS_DOMAIN;
        if self.nodes.iter().any(|n| n.domain == ms)
            && !model.opset_import.iter().any(|o| o.domain == ms)
        {
            model
                .opset_import
                .push(tpsnet_zoo::onnx::proto::OperatorSetIdProto {
                    domain: ms.into(),
                    version: 1,
                });
        }
        model.graph = Some(GraphProto {
            node: self.nodes.clone(),
            name: self.graph_name.clone(),
            initializer,
            input: vec![self.input.clone()],
            output,
            ..Default::default()
        });
        model
    }

    /// Index of the node that produces `tensor`.
    pub fn producer_map(&self) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in &n.output {
                m.insert(o.as_str(), i);
            }
        }
        m
    }

    /// Indices of the nodes that read each tensor.
    pub fn consumer_map(&self) -> HashMap<&str, Vec<usize>> {
        let mut m: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for x in &n.input {
                if !x.is_empty() {
                    m.entry(x.as_str()).or_default().push(i);
                }
            }
        }
        m
    }

    /// True when `name` is a constant (initializer) rather than an activation.
    pub fn is_constant(&self, name: &str) -> bool {
        self.constants.contains_key(name) || self.other_initializers.iter().any(|t| t.name == name)
    }

    /// Names of the Conv nodes (what `--fp32` may keep in float besides other ops).
    pub fn node_names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }
}

/// Why [`Graph::decode`] refuses a model, before the path is attached.
enum Refusal {
    /// Not an ONNX model this tool can read ([`Error::Decode`]).
    Decode(String),
    /// A model it reads but cannot quantize ([`Error::Unsupported`]).
    Unsupported(String),
}

impl Refusal {
    fn at(self, path: &Path) -> Error {
        let path = path.to_path_buf();
        match self {
            Refusal::Decode(reason) => Error::Decode { path, reason },
            Refusal::Unsupported(reason) => Error::Unsupported { path, reason },
        }
    }
}

/// Standard operators only, from operator set [`MIN_OPSET`] on.
fn check_opset(model: &ModelProto) -> std::result::Result<(), Refusal> {
    let mut default_opset = None;
    for o in &model.opset_import {
        match o.domain.as_str() {
            "" | "ai.onnx" => default_opset = Some(o.version),
            other => {
                return Err(Refusal::Unsupported(format!(
                    "it imports the operator domain `{other}`; only standard ONNX operators are handled"
                )));
            }
        }
    }
    match default_opset {
        Some(v) if v >= MIN_OPSET => Ok(()),
        Some(v) => Err(Refusal::Unsupported(format!(
            "it uses ONNX operator set {v}; {MIN_OPSET} or newer is needed (re-export it)"
        ))),
        None => Err(Refusal::Decode("it imports no ONNX operator set".into())),
    }
}

/// The float initializers by name, and the others as they are; external data refused.
fn split_initializers(
    initializers: Vec<TensorProto>,
) -> std::result::Result<(BTreeMap<String, FloatTensor>, Vec<TensorProto>), Refusal> {
    let mut constants = BTreeMap::new();
    let mut other_initializers = Vec::new();
    for t in initializers {
        if t.data_location == DATA_LOCATION_EXTERNAL || !t.external_data.is_empty() {
            return Err(Refusal::Unsupported(format!(
                "initializer `{}` is stored in an external file; save the model with its weights inside",
                t.name
            )));
        }
        if t.data_type == data_type::FLOAT {
            let f = FloatTensor::from_proto(&t).map_err(Refusal::Decode)?;
            constants.insert(t.name.clone(), f);
        } else {
            other_initializers.push(t);
        }
    }
    Ok((constants, other_initializers))
}

/// The one float32 graph input that is not an initializer, and the one float32 output.
fn single_float_io(
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    is_init: impl Fn(&str) -> bool,
) -> std::result::Result<(ValueInfoProto, ValueInfoProto), Refusal> {
    let inputs: Vec<ValueInfoProto> = inputs.into_iter().filter(|i| !is_init(&i.name)).collect();
    let one = |v: Vec<ValueInfoProto>, what: &str, holds: &str| {
        <[ValueInfoProto; 1]>::try_from(v).map_err(|v| {
            Refusal::Unsupported(format!(
                "it has {} graph {what}s; a zoo model has one ({holds})",
                v.len()
            ))
        })
    };
    let float = |v: &ValueInfoProto, what: &str| {
        let elem = v
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .map(|t| t.elem_type);
        if elem == Some(data_type::FLOAT) {
            Ok(())
        } else {
            Err(Refusal::Unsupported(format!(
                "its {what} `{}` is not a float32 tensor",
                v.name
            )))
        }
    };
    let [input] = one(inputs, "input", "the images")?;
    float(&input, "input")?;
    let [output] = one(outputs, "output", "the logits")?;
    float(&output, "output")?;
    Ok((input, output))
}

/// The nodes, each given a unique name where it has none or a repeated one, once every
/// one is checked to be a supported standard op (and every Conv one the quantizer handles).
fn checked_nodes(
    path: &Path,
    mut nodes: Vec<NodeProto>,
    constants: &BTreeMap<String, FloatTensor>,
) -> Result<Vec<NodeProto>> {
    let mut seen = std::collections::HashSet::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        if n.name.is_empty() || seen.contains(&n.name) {
            n.name = format!("{}_{i}", n.op_type);
        }
        seen.insert(n.name.clone());
        let (node, op) = (n.name.clone(), n.op_type.clone());
        let path = path.to_path_buf();
        if QUANTIZED_OPS.contains(&op.as_str()) {
            return Err(Error::AlreadyQuantized { path, node, op });
        }
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            let op = format!("{op} (domain `{}`)", n.domain);
            return Err(Error::UnsupportedOp { path, node, op });
        }
        if !SUPPORTED_OPS.contains(&op.as_str()) {
            return Err(Error::UnsupportedOp { path, node, op });
        }
        if op == "Conv" {
            check_conv(n, constants).map_err(|reason| Error::Unsupported {
                path,
                reason: format!("Conv `{node}`: {reason}"),
            })?;
        }
    }
    Ok(nodes)
}

fn check_conv(
    n: &NodeProto,
    constants: &BTreeMap<String, FloatTensor>,
) -> std::result::Result<(), String> {
    let w = n
        .input
        .get(1)
        .and_then(|w| constants.get(w))
        .ok_or("its weights are not a float constant")?;
    if w.dims.len() != 4 {
        return Err(format!(
            "weights of rank {} (only 2-D convolutions)",
            w.dims.len()
        ));
    }
    if let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) {
        let b = constants.get(b).ok_or("its bias is not a float constant")?;
        if b.data.len() as i64 != w.dims[0] {
            return Err(format!(
                "bias of {} values for {} output channels",
                b.data.len(),
                w.dims[0]
            ));
        }
    }
    if let Some(a) = n.attribute.iter().find(|a| a.name == "auto_pad") {
        let v = String::from_utf8_lossy(&a.s);
        if v != "NOTSET" && !v.is_empty() {
            return Err(format!("auto_pad {v} (re-export with explicit pads)"));
        }
    }
    Ok(())
}

fn check_topological(
    nodes: &[NodeProto],
    input: &str,
    constants: &BTreeMap<String, FloatTensor>,
    others: &[TensorProto],
) -> std::result::Result<(), String> {
    let mut known: std::collections::HashSet<&str> = constants.keys().map(|s| s.as_str()).collect();
    known.extend(others.iter().map(|t| t.name.as_str()));
    known.insert(input);
    for n in nodes {
        for x in n.input.iter().filter(|x| !x.is_empty()) {
            if !known.contains(x.as_str()) {
                return Err(format!(
                    "node `{}` reads `{x}` before any node writes it (the graph is not in topological order)",
                    n.name
                ));
            }
        }
        for o in &n.output {
            known.insert(o);
        }
    }
    Ok(())
}

/// A float32 initializer (raw little-endian data).
pub fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        name: name.into(),
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}
