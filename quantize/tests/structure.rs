//! The quantizer's graph work on zoo exports, without ONNX Runtime or data: what it
//! rewrites, how it lowers each node, what it writes, and what it refuses.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use tpsnet_quantize::Error;
use tpsnet_quantize::emit::{EmitOptions, emit, quantized_name};
use tpsnet_quantize::graph::Graph;
use tpsnet_quantize::params::{ActivationParams, WeightClip};
use tpsnet_quantize::pipeline::{first_conv_chains, prepare};
use tpsnet_quantize::plan::{Lowering, plan};
use tpsnet_quantize::rewrite::{fold_pooled_batchnorm, fuse_gelu};
use tpsnet_zoo::onnx::proto::{ModelProto, NodeProto, data_type};
use tpsnet_zoo::onnx::{ExportOptions, build_model};
use tpsnet_zoo::{ResNetSpec, Weights};

fn model(spec: &ResNetSpec, seed: u64) -> ModelProto {
    build_model(
        spec,
        &Weights::random(spec, seed),
        &ExportOptions::default(),
    )
    .unwrap()
}

fn decode(m: &ModelProto) -> Graph {
    Graph::decode(Path::new("test.onnx"), &m.encode_to_vec()).unwrap()
}

fn ops(m: &ModelProto) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for n in &m.graph.as_ref().unwrap().node {
        *c.entry(n.op_type.clone()).or_default() += 1;
    }
    c
}

/// Parameters for every planned tensor: a plausible range, 0-based where required.
fn fake_params(p: &tpsnet_quantize::plan::Plan) -> HashMap<String, ActivationParams> {
    p.calibrate
        .iter()
        .map(|t| {
            let lo = if p.non_negative.contains(t) {
                0.0
            } else {
                -3.0
            };
            (t.clone(), ActivationParams::from_range(lo, 5.0))
        })
        .collect()
}

fn emit_opts() -> EmitOptions {
    EmitOptions {
        weight_clip: WeightClip::MaxAbs,
        ..EmitOptions::default()
    }
}

#[test]
fn residual_nets_lower_convs_and_adds_with_relus_fused() {
    let spec = ResNetSpec::paper(&[2, 1, 1], 4, 2);
    let g = decode(&model(&spec, 1));
    let convs = g.nodes.iter().filter(|n| n.op_type == "Conv").count();
    let adds = g.nodes.iter().filter(|n| n.op_type == "Add").count();
    let relus = g.nodes.iter().filter(|n| n.op_type == "Relu").count();
    let p = plan(&g, &[]).unwrap();
    let count = |f: &dyn Fn(&Lowering) -> bool| p.lowering.iter().filter(|l| f(l)).count();
    assert_eq!(count(&|l| matches!(l, Lowering::Conv { .. })), convs);
    assert_eq!(count(&|l| matches!(l, Lowering::Add { .. })), adds);
    assert_eq!(
        count(&|l| *l == Lowering::FusedRelu),
        relus,
        "every ReLU follows a conv or add"
    );
    assert_eq!(
        p.float_nodes(&g),
        ["normalize.sub", "normalize.div", "head.flatten", "head.fc"]
    );
    // The head's average pool reads the last (ReLU'd) uint8 tensor and runs on uint8,
    // its output calibrated, and non-negative like its input.
    let pool = g.nodes.iter().position(|n| n.name == "head.pool").unwrap();
    assert_eq!(p.lowering[pool], Lowering::AvgPool);
    assert!(p.calibrate.contains(&"head.pool".to_string()));
    assert!(p.non_negative.contains("head.pool"));
    // The normalised input is quantized from fp32; ReLU outputs start at zero.
    assert!(p.quantize_from_float.contains("normalize.div"));
    assert!(p.non_negative.contains("stem.relu"));
    assert!(!p.non_negative.contains("layer0.block0.conv2"));

    let q = emit(&g, &p, &fake_params(&p), &emit_opts()).unwrap();
    let c = ops(&q);
    assert_eq!(c["QLinearConv"], convs);
    assert_eq!(c["QLinearAdd"], adds);
    assert_eq!(c.get("Relu"), None);
    assert_eq!(c.get("Conv"), None);
    assert_eq!((c["QuantizeLinear"], c["DequantizeLinear"]), (1, 1));
    assert_eq!(c["QLinearAveragePool"], 1);
    assert_eq!(c.get("AveragePool"), None);
    let graph = q.graph.as_ref().unwrap();
    assert!(
        graph
            .node
            .iter()
            .filter(|n| n.op_type == "QLinearAdd" || n.op_type == "QLinearAveragePool")
            .all(|n| n.domain == "com.microsoft")
    );
    // Only the pooled features are dequantized, for the fp32 Flatten and Gemm.
    let dq = graph
        .node
        .iter()
        .find(|n| n.op_type == "DequantizeLinear")
        .unwrap();
    assert_eq!(dq.input[0], quantized_name("head.pool"));
    // The stem reads its 3 colour channels padded to 4 with the zero point, and zero
    // weights for the 4th; no other input is padded.
    assert_eq!(c["Pad"], 1);
    let pad = graph.node.iter().find(|n| n.op_type == "Pad").unwrap();
    assert_eq!(pad.input[0], quantized_name("normalize.div"));
    assert_eq!(pad.input[2], "normalize.div_zero_point");
    let stem = graph.node.iter().find(|n| n.name == "stem.conv").unwrap();
    assert_eq!(stem.input[0], pad.output[0]);
    let tensor = |name: &str| graph.initializer.iter().find(|t| t.name == name).unwrap();
    let pads = tensor(&pad.input[1]);
    let pads: Vec<i64> = pads
        .raw_data
        .chunks(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(pads, [0, 0, 0, 0, 0, 1, 0, 0]);
    // Convs with fewer than 16 filters whose output only convs read get zero filters up
    // to 16 (the stem's 4; each layer-0 block's first conv's 8), and their readers zero
    // weights for those channels; the rest keep their shapes.
    let per_channel = 9;
    let w = tensor("stem.conv.weight_quantized");
    assert_eq!(w.dims, [16, 4, 3, 3]);
    for (f, row) in w.raw_data.chunks(4 * per_channel).enumerate() {
        assert!(
            row[3 * per_channel..].iter().all(|&v| v == 0),
            "input channel 4"
        );
        assert_eq!(row.iter().any(|&v| v != 0), f < 4, "filter {f}");
    }
    assert_eq!(tensor("stem.conv.weight_scale").dims, [16]);
    assert_eq!(tensor("stem.conv.weight_zero_point").dims, [16]);
    let bias = tensor("stem.conv.bias_quantized");
    assert_eq!(bias.dims, [16]);
    assert!(bias.raw_data[4 * 4..].iter().all(|&v| v == 0));
    let dims = |name: &str| tensor(&format!("{name}.weight_quantized")).dims.clone();
    assert_eq!(dims("layer0.block0.conv1"), [16, 16, 3, 3]);
    assert_eq!(dims("layer0.block0.shortcut.conv"), [8, 16, 1, 1]);
    assert_eq!(dims("layer0.block0.conv2"), [8, 16, 3, 3]);
    assert_eq!(dims("layer0.block1.conv1"), [16, 8, 3, 3]);
    assert_eq!(
        dims("layer1.block0.conv1"),
        [16, 8, 3, 3],
        "16 filters already"
    );
    let w = tensor("layer0.block0.conv1.weight_quantized");
    for row in w.raw_data.chunks(16 * per_channel) {
        assert!(row[4 * per_channel..].iter().all(|&v| v == 0));
    }
    // Exactly those three write more channels than the fp32 model: every other output
    // meets an Add or the pool.
    let widened: Vec<&str> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "QLinearConv")
        .filter(|n| {
            let fp32 = g.nodes.iter().find(|f| f.name == n.name).unwrap();
            tensor(&n.input[3]).dims[0] > g.constants[&fp32.input[1]].dims[0]
        })
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(
        widened,
        ["stem.conv", "layer0.block0.conv1", "layer0.block1.conv1"]
    );
    // The stem reads the normalised image (zero point 96 here, about 120 in the zoo):
    // its codes stay within ±64 so that no pair of products saturates an int16 on CPUs
    // without VNNI; convs on ReLU outputs (zero point 0) use the full ±127.
    let max_code = |name: &str| {
        let t = tensor(name);
        t.raw_data.iter().map(|&v| (v as i8).unsigned_abs()).max()
    };
    assert_eq!(max_code("stem.conv.weight_quantized"), Some(64));
    assert_eq!(max_code("layer0.block0.conv1.weight_quantized"), Some(127));
    assert!(
        q.opset_import
            .iter()
            .any(|o| o.domain == "com.microsoft" && o.version == 1)
    );
    assert!(
        q.opset_import
            .iter()
            .any(|o| o.domain.is_empty() && o.version == 17)
    );
    // Weights int8, biases int32, no fp32 conv weight left.
    let init: HashMap<&str, i32> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t.data_type))
        .collect();
    assert_eq!(init["stem.conv.weight_quantized"], data_type::INT8);
    assert_eq!(init["stem.conv.bias_quantized"], data_type::INT32);
    assert_eq!(init["stem.relu_zero_point"], data_type::UINT8);
    assert!(!init.contains_key("stem.conv.weight"));
    assert!(init.contains_key("fc.weight"), "the head's Gemm stays fp32");
    // Inputs and outputs are the fp32 model's.
    assert_eq!(graph.input[0].name, "input");
    assert_eq!(graph.output[0].name, "logits");
}

#[test]
fn keeping_nodes_in_fp32_inserts_the_conversions() {
    let spec = ResNetSpec::paper(&[1, 1, 1], 4, 2);
    let g = decode(&model(&spec, 2));
    let p = plan(&g, &["stem.conv".to_string()]).unwrap();
    let q = emit(&g, &p, &fake_params(&p), &emit_opts()).unwrap();
    let c = ops(&q);
    assert_eq!(c["Conv"], 1);
    assert_eq!(c["Relu"], 1, "the stem's ReLU stays with the fp32 conv");
    // The stem's output is quantized for layer 0.
    let graph = q.graph.unwrap();
    assert!(
        graph
            .node
            .iter()
            .any(|n| n.op_type == "QuantizeLinear" && n.output[0] == quantized_name("stem.relu"))
    );

    // An average pool on an fp32 tensor stays fp32 (it would only add a conversion), and
    // one can be kept in fp32 by name.
    let last_add = g.nodes.iter().rev().find(|n| n.op_type == "Add").unwrap();
    for keep in [last_add.name.clone(), "head.pool".to_string()] {
        let p = plan(&g, std::slice::from_ref(&keep)).unwrap();
        assert!(
            p.float_nodes(&g).contains(&"head.pool".to_string()),
            "{keep}"
        );
        assert!(!p.calibrate.contains(&"head.pool".to_string()), "{keep}");
        let q = emit(&g, &p, &fake_params(&p), &emit_opts()).unwrap();
        assert_eq!(ops(&q)["AveragePool"], 1, "{keep}");
    }

    let e = plan(&g, &["head.fc".to_string()]).unwrap_err();
    assert!(matches!(e, Error::UnknownNode { .. }), "{e}");
    assert!(e.to_string().contains("stem.conv"), "{e}");
}

/// `choose` runs the first conv in int8 for its speed only where its output can stay
/// uint8 up to the next integer op: the plain ResNets' stem (Conv → ReLU → QLinearConv),
/// not airnet's (Conv → GELU, which stays fp32).
#[test]
fn the_first_conv_chains_into_integer_ops_only_in_plain_resnets() {
    let chains = |spec: &ResNetSpec| {
        let bytes = model(spec, 5).encode_to_vec();
        let path = Path::new("test.onnx");
        let int8_first = prepare(path, &bytes, &[]).unwrap();
        let fp32_first = prepare(path, &bytes, &["stem.conv".to_string()]).unwrap();
        first_conv_chains(&int8_first, &fp32_first, "stem.conv")
    };
    assert!(chains(&ResNetSpec::paper(&[1, 1, 1], 4, 2)));
    assert!(!chains(&ResNetSpec::airnet()));
    // Not the first conv, or a graph planned the other way round: no.
    let bytes = model(&ResNetSpec::paper(&[1, 1, 1], 4, 2), 5).encode_to_vec();
    let p = prepare(Path::new("t.onnx"), &bytes, &[]).unwrap();
    let f = prepare(Path::new("t.onnx"), &bytes, &["stem.conv".to_string()]).unwrap();
    assert!(!first_conv_chains(&f, &p, "stem.conv"));
    assert!(!first_conv_chains(&p, &f, "no.such.node"));
}

#[test]
fn airnet_pooled_batchnorm_folds_and_gelu_fuses() {
    let spec = ResNetSpec::airnet();
    let mut g = decode(&model(&spec, 3));
    let fold = fold_pooled_batchnorm(&mut g);
    assert_eq!(
        fold.folded,
        [
            "layer0.block0.conv1",
            "layer1.block0.conv1",
            "layer2.block0.conv1"
        ]
    );
    assert!(fold.kept.is_empty());
    let gelus = fuse_gelu(&mut g);
    assert_eq!(gelus.len(), 7);
    assert!(gelus.contains(&"stem.relu".to_string()));
    assert!(
        g.nodes
            .iter()
            .all(|n| n.op_type != "Erf" && n.op_type != "Mul")
    );
    // The pool now feeds the GELU directly and runs on uint8.
    let p = plan(&g, &[]).unwrap();
    let pools: Vec<&Lowering> = g
        .nodes
        .iter()
        .zip(&p.lowering)
        .filter(|(n, _)| n.op_type == "MaxPool")
        .map(|(_, l)| l)
        .collect();
    assert_eq!(
        pools,
        [
            &Lowering::MaxPool,
            &Lowering::MaxPool,
            &Lowering::MaxPool,
            &Lowering::Float
        ],
        "block pools on uint8; the head's pool reads a GELU (fp32)"
    );
    // A conv read only by its pool is calibrated on what survives the pool.
    assert_eq!(p.measured["layer0.block0.conv1"], "layer0.block0.bn1");
    assert_eq!(p.measured["layer0.block0.conv2"], "layer0.block0.conv2");
    let q = emit(&g, &p, &fake_params(&p), &emit_opts()).unwrap();
    let c = ops(&q);
    assert_eq!((c["QLinearConv"], c["Gelu"], c["MaxPool"]), (7, 7, 4));
    // Each GELU sits between one DequantizeLinear and one QuantizeLinear, except the
    // last (its reader is the fp32 head).
    assert_eq!((c["DequantizeLinear"], c["QuantizeLinear"]), (7, 7));
    // The fp32 model of the rewritten graph imports the contrib domain for Gelu.
    let f = g.fp32_model(&[]);
    assert!(f.opset_import.iter().any(|o| o.domain == "com.microsoft"));
}

#[test]
fn a_negative_scale_behind_a_pool_is_not_folded() {
    let spec = ResNetSpec::airnet();
    let mut w = Weights::random(&spec, 4);
    w.tensors.get_mut("layer1.block0.bn1.weight").unwrap().data[5] = -0.5;
    let m = build_model(&spec, &w, &ExportOptions::default()).unwrap();
    let mut g = decode(&m);
    let fold = fold_pooled_batchnorm(&mut g);
    assert_eq!(fold.folded, ["layer0.block0.conv1", "layer2.block0.conv1"]);
    assert_eq!(fold.kept.len(), 1);
    assert!(fold.kept[0].1.contains("channel 5"), "{:?}", fold.kept);
    assert!(g.nodes.iter().any(|n| n.name == "layer1.block0.bn1.mul"));
}

fn replace_op(m: &mut ModelProto, name: &str, op: &str, domain: &str) {
    let n: &mut NodeProto = m
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.name == name)
        .unwrap();
    n.op_type = op.into();
    n.domain = domain.into();
}

#[test]
fn what_it_cannot_handle_is_refused_by_name() {
    let spec = ResNetSpec::paper(&[1, 1, 1], 4, 2);
    let path = Path::new("bad.onnx");

    let mut m = model(&spec, 5);
    replace_op(&mut m, "layer1.block0.relu1", "Sigmoid", "");
    let e = Graph::decode(path, &m.encode_to_vec()).unwrap_err();
    assert!(matches!(e, Error::UnsupportedOp { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("bad.onnx") && msg.contains("layer1.block0.relu1") && msg.contains("Sigmoid"),
        "{msg}"
    );

    let mut m = model(&spec, 5);
    replace_op(&mut m, "stem.conv", "QLinearConv", "");
    let e = Graph::decode(path, &m.encode_to_vec()).unwrap_err();
    assert!(matches!(e, Error::AlreadyQuantized { .. }), "{e}");

    let mut m = model(&spec, 5);
    m.opset_import[0].version = 11;
    let e = Graph::decode(path, &m.encode_to_vec()).unwrap_err();
    assert!(e.to_string().contains("operator set 11"), "{e}");

    let e = Graph::decode(path, b"definitely not protobuf").unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");

    // A conv whose weights are computed, not stored.
    let mut m = model(&spec, 5);
    let g = m.graph.as_mut().unwrap();
    g.initializer.retain(|t| t.name != "stem.conv.weight");
    g.input.push(g.input[0].clone());
    g.input[1].name = "stem.conv.weight".into();
    let e = Graph::decode(path, &m.encode_to_vec()).unwrap_err();
    assert!(e.to_string().contains("2 graph inputs"), "{e}");
}
