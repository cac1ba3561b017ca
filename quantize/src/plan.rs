//! Which node runs how in the int8 graph, and which tensors need calibrated ranges.
//!
//! The layout is ONNX Runtime's *QOperator* format with uint8 activations (measured
//! fastest on x86 with VNNI, docs/quantization.md):
//!
//! * `Conv` → `QLinearConv` (uint8 in and out, int8 per-channel weights, int32 bias). A
//!   `Relu` that is the conv's only reader is dropped: the output range then starts at
//!   0, so the uint8 output saturates negative values to 0, which is the ReLU.
//! * `Add` of two activations (a residual join) → `com.microsoft.QLinearAdd`, with the
//!   same ReLU fusion.
//! * `MaxPool` whose input is uint8 runs on uint8 (max commutes with the monotone
//!   quantization), sharing its input's scale and zero point.
//! * `AveragePool` / `GlobalAveragePool` whose input is uint8 (the plain ResNets' head)
//!   → `com.microsoft.QLinearAveragePool` / `QLinearGlobalAveragePool`, its output with
//!   calibrated parameters of its own. In fp32 the pool needs its input dequantized and
//!   ONNX Runtime transposes that whole tensor back from its NHWC integer layout first;
//!   on uint8 only the pooled features are dequantized (measured: docs/quantization.md).
//! * Everything else (normalisation, GELU, the rest of the head) stays fp32. A
//!   `QuantizeLinear` is put where an fp32 tensor feeds an integer op, a
//!   `DequantizeLinear` where a uint8 tensor feeds an fp32 op or leaves the graph.

use std::collections::{BTreeSet, HashMap};

use crate::error::{Error, Result};
use crate::graph::Graph;
use tpsnet_zoo::onnx::proto::NodeProto;

/// How one node of the fp32 graph is lowered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lowering {
    /// Kept as it is, in fp32.
    Float,
    /// `QLinearConv`; `output` is the tensor it writes (the fused ReLU's output if any).
    Conv {
        /// The tensor it writes.
        output: String,
    },
    /// `QLinearAdd`; `output` as for [`Lowering::Conv`].
    Add {
        /// The tensor it writes.
        output: String,
    },
    /// `MaxPool` on uint8.
    MaxPool,
    /// `QLinearAveragePool` or `QLinearGlobalAveragePool` (the op's name without `QLinear`
    /// is the fp32 node's); its output has parameters of its own.
    AvgPool,
    /// A ReLU folded into the integer op before it.
    FusedRelu,
}

/// The lowering of a whole graph.
#[derive(Clone, Debug)]
pub struct Plan {
    /// One entry per node of the graph.
    pub lowering: Vec<Lowering>,
    /// Every tensor that exists in uint8 form, with the tensor whose quantization
    /// parameters it uses (itself, or for a uint8 MaxPool's output, the pool's input's).
    pub quantized: HashMap<String, String>,
    /// Tensors that need quantization parameters, in graph order.
    pub calibrate: Vec<String>,
    /// For each of those, the tensor whose values calibration measures: itself, or the
    /// output of the uint8 MaxPool that is its only reader. Max commutes with the
    /// (monotone) quantization, so only the values that survive the pool matter, and
    /// measuring the pooled tensor keeps resolution from being spent on values the pool
    /// throws away.
    pub measured: HashMap<String, String>,
    /// Of those, the ones whose range must start at 0 (a fused ReLU).
    pub non_negative: BTreeSet<String>,
    /// Tensors written by fp32 nodes (or the graph input) that get a `QuantizeLinear`.
    pub quantize_from_float: BTreeSet<String>,
}

impl Plan {
    /// Names of the fp32 graph's nodes that stay fp32 in the int8 graph.
    pub fn float_nodes(&self, g: &Graph) -> Vec<String> {
        g.nodes
            .iter()
            .zip(&self.lowering)
            .filter(|(_, l)| **l == Lowering::Float)
            .map(|(n, _)| n.name.clone())
            .collect()
    }

    /// Number of nodes lowered to integer ops (QLinearConv, QLinearAdd, uint8 pools).
    pub fn integer_nodes(&self) -> usize {
        self.lowering
            .iter()
            .filter(|l| {
                matches!(
                    l,
                    Lowering::Conv { .. }
                        | Lowering::Add { .. }
                        | Lowering::MaxPool
                        | Lowering::AvgPool
                )
            })
            .count()
    }
}

/// Nodes that may be lowered to integer ops, i.e. what `--fp32` can name (an average
/// pool is lowered only where its input is uint8).
pub fn quantizable_nodes(g: &Graph) -> Vec<String> {
    g.nodes
        .iter()
        .filter(|n| is_quantizable(g, n))
        .map(|n| n.name.clone())
        .collect()
}

fn is_quantizable(g: &Graph, n: &NodeProto) -> bool {
    match n.op_type.as_str() {
        "Conv" => true,
        "Add" => n.input.len() == 2 && n.input.iter().all(|i| !g.is_constant(i)),
        // Attributes the com.microsoft QLinear pools know (no `dilations`).
        "AveragePool" | "GlobalAveragePool" => {
            n.output.len() == 1
                && n.attribute.iter().all(|a| {
                    matches!(
                        a.name.as_str(),
                        "auto_pad"
                            | "ceil_mode"
                            | "count_include_pad"
                            | "kernel_shape"
                            | "pads"
                            | "strides"
                    )
                })
        }
        _ => false,
    }
}

/// Plans the lowering of `g`, keeping the nodes named in `keep_fp32` in fp32.
pub fn plan(g: &Graph, keep_fp32: &[String]) -> Result<Plan> {
    let candidates = quantizable_nodes(g);
    for name in keep_fp32 {
        if !candidates.contains(name) {
            return Err(Error::UnknownNode {
                path: g.path.clone(),
                name: name.clone(),
                known: candidates.join(", "),
            });
        }
    }
    let mut planner = Planner {
        g,
        consumers: g.consumer_map(),
        keep_fp32,
        plan: Plan {
            lowering: vec![Lowering::Float; g.nodes.len()],
            quantized: HashMap::new(),
            calibrate: Vec::new(),
            measured: HashMap::new(),
            non_negative: BTreeSet::new(),
            quantize_from_float: BTreeSet::new(),
        },
    };
    for (i, n) in g.nodes.iter().enumerate() {
        if planner.plan.lowering[i] == Lowering::FusedRelu {
            continue;
        }
        let integer = is_quantizable(g, n) && !keep_fp32.contains(&n.name);
        let average_pool = matches!(n.op_type.as_str(), "AveragePool" | "GlobalAveragePool");
        if integer && average_pool {
            planner.average_pool(i, n);
        } else if integer {
            planner.integer_op(i, n);
        } else if n.op_type == "MaxPool" && n.output.len() == 1 {
            planner.max_pool(i, n);
        }
    }
    let mut plan = planner.plan;
    for t in &plan.calibrate {
        plan.measured.entry(t.clone()).or_insert_with(|| t.clone());
    }
    Ok(plan)
}

/// A [`Plan`] being made, node by node in topological order.
struct Planner<'a> {
    g: &'a Graph,
    consumers: HashMap<&'a str, Vec<usize>>,
    keep_fp32: &'a [String],
    plan: Plan,
}

impl Planner<'_> {
    /// An average pool, in uint8 only on an input that is uint8 already: quantizing an
    /// fp32 tensor just to pool it would add a conversion, not remove one.
    fn average_pool(&mut self, i: usize, n: &NodeProto) {
        let p = &mut self.plan;
        if let Some(root) = p.quantized.get(&n.input[0]).cloned() {
            if p.non_negative.contains(&root) {
                p.non_negative.insert(n.output[0].clone());
            }
            p.quantized.insert(n.output[0].clone(), n.output[0].clone());
            p.calibrate.push(n.output[0].clone());
            p.lowering[i] = Lowering::AvgPool;
        }
    }

    /// A Conv or Add as an integer op: its fp32 inputs quantized, and a ReLU that is the
    /// only reader of its output fused into the output's range.
    fn integer_op(&mut self, i: usize, n: &NodeProto) {
        let (g, p) = (self.g, &mut self.plan);
        let activations: Vec<&String> = match n.op_type.as_str() {
            "Conv" => vec![&n.input[0]],
            _ => n.input.iter().collect(),
        };
        for x in activations {
            if !p.quantized.contains_key(x) {
                p.quantized.insert(x.clone(), x.clone());
                p.calibrate.push(x.clone());
                p.quantize_from_float.insert(x.clone());
            }
        }
        let out = &n.output[0];
        let relu = match self.consumers.get(out.as_str()).map(|v| v.as_slice()) {
            Some([r])
                if g.nodes[*r].op_type == "Relu"
                    && *out != g.output.name
                    && !self.keep_fp32.contains(&g.nodes[*r].name) =>
            {
                Some(*r)
            }
            _ => None,
        };
        let output = match relu {
            Some(r) => {
                p.lowering[r] = Lowering::FusedRelu;
                p.non_negative.insert(g.nodes[r].output[0].clone());
                g.nodes[r].output[0].clone()
            }
            None => out.clone(),
        };
        p.quantized.insert(output.clone(), output.clone());
        p.calibrate.push(output.clone());
        p.lowering[i] = if n.op_type == "Conv" {
            Lowering::Conv { output }
        } else {
            Lowering::Add { output }
        };
    }

    /// A max pool on uint8 where its input is: it shares its input's parameters, and
    /// when it is that input's only reader, its output is what calibration measures.
    fn max_pool(&mut self, i: usize, n: &NodeProto) {
        let p = &mut self.plan;
        if let Some(root) = p.quantized.get(&n.input[0]).cloned() {
            let only_reader = self
                .consumers
                .get(n.input[0].as_str())
                .is_some_and(|v| v.len() == 1)
                && n.input[0] == root
                && root != self.g.output.name;
            if only_reader {
                p.measured.insert(root.clone(), n.output[0].clone());
            }
            p.quantized.insert(n.output[0].clone(), root);
            p.lowering[i] = Lowering::MaxPool;
        }
    }
}
