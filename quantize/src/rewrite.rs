//! Exact fp32 rewrites made before quantizing.
//!
//! **BatchNorm behind a max-pool.** `plain_pool_first` blocks (airnet) export conv → max-pool → BatchNorm, the BatchNorm
//! as a per-channel `Mul` + `Add` because folding it into the conv does not commute with
//! the pool when a scale is negative. Where every scale is positive it does commute
//! (`max(s·x + t) = s·max(x) + t` for `s > 0`), and folding it lets the conv's integer
//! output feed the pool directly instead of going through two more float ops. The
//! rewrite changes the fp32 result only by float rounding.
//!
//! **GELU.** The zoo writes GELU as `0.5·x·(1 + erf(x/√2))` (opset 17 has no Gelu).
//! ONNX Runtime fuses that pattern into one kernel only when both reads of `x` are the
//! same tensor; in an int8 graph `x` comes out of a DequantizeLinear that ONNX Runtime
//! duplicates per reader, so the fusion is lost and five float kernels run instead of
//! one (measured: docs/quantization.md). Writing the fused `com.microsoft.Gelu` (same
//! function) keeps it one kernel.

use std::collections::HashMap;

use crate::graph::Graph;
pub use crate::graph::MS_DOMAIN;

/// What [`fold_pooled_batchnorm`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FoldReport {
    /// Convs that took in the scale and shift behind their max-pool.
    pub folded: Vec<String>,
    /// Convs whose scale/shift stayed separate, with the reason.
    pub kept: Vec<(String, String)>,
}

/// Folds `Conv → MaxPool → Mul(scale) → Add(shift)` into `Conv' → MaxPool` wherever the
/// per-channel scale is positive and each intermediate tensor has a single reader.
pub fn fold_pooled_batchnorm(g: &mut Graph) -> FoldReport {
    let mut report = FoldReport::default();
    while let Some(found) = find_pattern(g, &mut report) {
        report.folded.push(g.nodes[found.conv].name.clone());
        apply(g, found);
    }
    report
}

struct Pattern {
    conv: usize,
    pool: usize,
    mul: usize,
    add: usize,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

fn find_pattern(g: &Graph, report: &mut FoldReport) -> Option<Pattern> {
    let consumers = g.consumer_map();
    let only = |t: &str| -> Option<usize> {
        match consumers.get(t).map(|v| v.as_slice()) {
            Some([one]) if *t != g.output.name => Some(*one),
            _ => None,
        }
    };
    for (ci, conv) in g.nodes.iter().enumerate() {
        if conv.op_type != "Conv" || report.kept.iter().any(|(n, _)| *n == conv.name) {
            continue;
        }
        let Some(pi) = only(&conv.output[0]).filter(|&i| g.nodes[i].op_type == "MaxPool") else {
            continue;
        };
        let pool = &g.nodes[pi];
        let Some(mi) = only(&pool.output[0]).filter(|&i| g.nodes[i].op_type == "Mul") else {
            continue;
        };
        let mul = &g.nodes[mi];
        let Some(ai) = only(&mul.output[0]).filter(|&i| g.nodes[i].op_type == "Add") else {
            continue;
        };
        let add = &g.nodes[ai];
        let channels = g.constants[&conv.input[1]].dims[0] as usize;
        let constant_of =
            |node: &tpsnet_zoo::onnx::proto::NodeProto, x: &str| -> Option<Vec<f32>> {
                let other = node.input.iter().find(|i| i.as_str() != x)?;
                g.constants
                    .get(other)
                    .and_then(|t| t.per_channel(channels))
                    .map(|s| s.to_vec())
            };
        let (Some(scale), Some(shift)) = (
            constant_of(mul, &pool.output[0]),
            constant_of(add, &mul.output[0]),
        ) else {
            continue;
        };
        if let Some(bad) = scale.iter().position(|&s| s.is_nan() || s <= 0.0) {
            report.kept.push((
                conv.name.clone(),
                format!(
                    "channel {bad} has scale {} behind the max-pool (only positive scales commute with it)",
                    scale[bad]
                ),
            ));
            continue;
        }
        return Some(Pattern {
            conv: ci,
            pool: pi,
            mul: mi,
            add: ai,
            scale,
            shift,
        });
    }
    None
}

fn apply(g: &mut Graph, p: Pattern) {
    let conv = g.nodes[p.conv].clone();
    let channels = p.scale.len();
    // New constant names, so a weight shared with another node is never changed under it.
    let w_name = format!("{}.weight_pool_folded", conv.name);
    let b_name = format!("{}.bias_pool_folded", conv.name);
    let w = &g.constants[&conv.input[1]];
    let per = w.data.len() / channels;
    let mut wd = w.data.clone();
    for (o, row) in wd.chunks_exact_mut(per).enumerate() {
        for v in row {
            *v = (*v as f64 * p.scale[o] as f64) as f32;
        }
    }
    let old_bias = conv
        .input
        .get(2)
        .filter(|b| !b.is_empty())
        .map(|b| g.constants[b].data.clone())
        .unwrap_or_else(|| vec![0.0; channels]);
    let bd: Vec<f32> = (0..channels)
        .map(|o| (old_bias[o] as f64 * p.scale[o] as f64 + p.shift[o] as f64) as f32)
        .collect();
    let wdims = w.dims.clone();
    g.constants.insert(
        w_name.clone(),
        crate::graph::FloatTensor {
            dims: wdims,
            data: wd,
        },
    );
    g.constants.insert(
        b_name.clone(),
        crate::graph::FloatTensor {
            dims: vec![channels as i64],
            data: bd,
        },
    );
    let c = &mut g.nodes[p.conv];
    c.input.truncate(2);
    c.input[1] = w_name;
    c.input.push(b_name);
    // The pool now writes what the Add wrote.
    let add_out = g.nodes[p.add].output[0].clone();
    g.nodes[p.pool].output[0] = add_out;
    let (mul, add) = (p.mul.max(p.add), p.mul.min(p.add));
    g.nodes.remove(mul);
    g.nodes.remove(add);
    remove_unused_constants(g);
}

/// Replaces every `Div(x, √2) → Erf → Add(1) → Mul(x) → Mul(0.5)` (or with `Mul(x, 1/√2)`
/// first, or `Mul(x, 0.5)` before the product) by one `com.microsoft.Gelu` node named
/// after the pattern's last node. Returns those names.
pub fn fuse_gelu(g: &mut Graph) -> Vec<String> {
    let mut fused = Vec::new();
    while let Some((remove, x, out, name)) = find_gelu(g) {
        let last = *remove.iter().max().expect("pattern has nodes");
        g.nodes[last] = tpsnet_zoo::onnx::proto::NodeProto {
            input: vec![x],
            output: vec![out],
            name: name.clone(),
            op_type: "Gelu".into(),
            domain: MS_DOMAIN.into(),
            ..Default::default()
        };
        let mut others: Vec<usize> = remove.into_iter().filter(|&i| i != last).collect();
        others.sort_unstable_by(|a, b| b.cmp(a));
        for i in others {
            g.nodes.remove(i);
        }
        fused.push(name);
    }
    remove_unused_constants(g);
    fused
}

/// `(nodes of the pattern, x, output, name)` of the first GELU pattern.
fn find_gelu(g: &Graph) -> Option<(Vec<usize>, String, String, String)> {
    let m = Matcher {
        g,
        consumers: g.consumer_map(),
        producers: g.producer_map(),
    };
    (0..g.nodes.len()).find_map(|ei| m.gelu_at(ei))
}

/// The graph's wiring, for matching node patterns.
struct Matcher<'a> {
    g: &'a Graph,
    consumers: HashMap<&'a str, Vec<usize>>,
    producers: HashMap<&'a str, usize>,
}

impl Matcher<'_> {
    /// The only node reading tensor `t` (not the graph output).
    fn only(&self, t: &str) -> Option<usize> {
        match self.consumers.get(t).map(|v| v.as_slice()) {
            Some([one]) if *t != self.g.output.name => Some(*one),
            _ => None,
        }
    }

    /// When node `i` is a binary `op` with one input `x` and the other a scalar ≈ `c`:
    /// x.
    fn binary_with(&self, i: usize, op: &str, c: f32) -> Option<String> {
        let g = self.g;
        let scalar = |name: &str| g.constants.get(name).and_then(|t| t.scalar());
        let near = |v: Option<f32>, want: f32| v.is_some_and(|v| (v - want).abs() < 1e-4);
        let n = &g.nodes[i];
        if n.op_type != op || n.input.len() != 2 {
            return None;
        }
        let (a, b) = (&n.input[0], &n.input[1]);
        if near(scalar(b), c) && !g.is_constant(a) {
            Some(a.clone())
        } else if op != "Div" && near(scalar(a), c) && !g.is_constant(b) {
            Some(b.clone())
        } else {
            None
        }
    }

    /// The input of two-input node `i` that is not `known`.
    fn other_input(&self, i: usize, known: &str) -> Option<String> {
        let n = &self.g.nodes[i];
        (n.input.len() == 2).then(|| {
            if n.input[0] == known {
                n.input[1].clone()
            } else {
                n.input[0].clone()
            }
        })
    }

    /// The GELU pattern around Erf node `ei`, if it is one: x / √2 (or x · 1/√2) → Erf →
    /// + 1 → · x → · 0.5, or with the 0.5 applied to x first.
    fn gelu_at(&self, ei: usize) -> Option<(Vec<usize>, String, String, String)> {
        let g = self.g;
        let erf = &g.nodes[ei];
        if erf.op_type != "Erf" {
            return None;
        }
        let &di = self.producers.get(erf.input[0].as_str())?;
        if self.only(&erf.input[0]) != Some(ei) {
            return None;
        }
        let x = self
            .binary_with(di, "Div", std::f32::consts::SQRT_2)
            .or_else(|| self.binary_with(di, "Mul", std::f32::consts::FRAC_1_SQRT_2))?;
        let ai = self.only(&erf.output[0])?;
        if self.binary_with(ai, "Add", 1.0).as_deref() != Some(erf.output[0].as_str()) {
            return None;
        }
        let add_out = &g.nodes[ai].output[0];
        let mi = self
            .only(add_out)
            .filter(|&i| g.nodes[i].op_type == "Mul")?;
        let partner = self.other_input(mi, add_out)?;
        if partner == x {
            // 0.5 applied after the product.
            let m_out = &g.nodes[mi].output[0];
            let hi = self.only(m_out)?;
            if self.binary_with(hi, "Mul", 0.5).as_deref() != Some(m_out.as_str()) {
                return None;
            }
            let h = &g.nodes[hi];
            return Some((
                vec![di, ei, ai, mi, hi],
                x,
                h.output[0].clone(),
                h.name.clone(),
            ));
        }
        // 0.5 applied to x first: partner = Mul(x, 0.5), read only here.
        let &hi = self.producers.get(partner.as_str())?;
        let halves_x = self.binary_with(hi, "Mul", 0.5).as_deref() == Some(x.as_str());
        if !(halves_x && self.only(&partner) == Some(mi)) {
            return None;
        }
        let m = &g.nodes[mi];
        Some((
            vec![di, ei, ai, hi, mi],
            x,
            m.output[0].clone(),
            m.name.clone(),
        ))
    }
}

/// Drops float constants no node reads any more.
pub fn remove_unused_constants(g: &mut Graph) {
    let mut used: HashMap<&str, ()> = HashMap::new();
    for n in &g.nodes {
        for i in &n.input {
            used.insert(i.as_str(), ());
        }
    }
    let keep: Vec<String> = g
        .constants
        .keys()
        .filter(|k| used.contains_key(k.as_str()))
        .cloned()
        .collect();
    g.constants.retain(|k, _| keep.contains(k));
}
