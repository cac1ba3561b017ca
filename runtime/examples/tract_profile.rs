//! Where a tract run spends its time: every node of a model's one-image plan timed over a
//! number of runs, summed per operator and listed per node.
//!
//! ```text
//! cargo run --release -p tpsnet-runtime --features tract --example tract_profile -- \
//!     models/tpsnet-2d1cc128.onnx [RUNS] [--nodes]
//! ```
//!
//! The plan is built as the tract backend builds it (typed, decluttered, the 3×3
//! convolutions on the direct kernels where `TPSNET_TRACT_DIRECT_CONV` and the CPU allow,
//! then optimised for batches of one) but without the runtime's lazy/eager im2col choice:
//! tract's defaults, or its `TRACT_*` knobs from the environment. One thread, a
//! deterministic image; two untimed runs first. Timing each node adds a little to each,
//! so the total runs slightly above an untimed run (printed too). `--nodes` lists every
//! node in order with its shape, time and what tract says of it (the matrix kernel
//! chosen, for instance), instead of the 40 slowest.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tpsnet_runtime::tract_engine::direct_conv;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{SimpleState, eval};

fn main() -> Result<()> {
    let mut out = String::new();
    let mut path = None;
    let mut runs = 20usize;
    let mut all_nodes = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--nodes" => all_nodes = true,
            a if a.parse::<usize>().is_ok() => runs = a.parse()?,
            a if path.is_none() => path = Some(a.to_string()),
            a => {
                bail!("unexpected argument {a:?}; usage: tract_profile MODEL.onnx [RUNS] [--nodes]")
            }
        }
    }
    let Some(path) = path else {
        bail!("usage: tract_profile MODEL.onnx [RUNS] [--nodes]");
    };
    if runs == 0 {
        bail!("RUNS must be at least 1");
    }
    let mut model = tract_onnx::onnx()
        .model_for_path(&path)
        .with_context(|| format!("loading {path}"))?;
    model.set_input_fact(0, f32::fact([1, 3, 32, 32]).into())?;
    let mut typed = model.into_typed()?.into_decluttered()?;
    let isa = direct_conv::Isa::chosen();
    let direct = match isa {
        Some(isa) => direct_conv::rewrite(&mut typed, isa)?,
        None => 0,
    };
    writeln!(
        out,
        "{path}: {direct} convolution(s) on the direct kernels ({isa:?})"
    )?;
    let plan = typed.into_optimized()?.into_runnable()?;
    let image: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| ((i * 7919) % 256) as f32 / 64.0 - 2.0)
        .collect();
    let input = Tensor::from_shape(&[1, 3, 32, 32], &image)?;

    let mut state = SimpleState::new(&plan)?;
    let mut node_s: HashMap<usize, f64> = HashMap::new();
    let mut run_s = Vec::new();
    for run in 0..runs + 2 {
        let timed = run >= 2;
        let start = Instant::now();
        state.run_plan_with_eval(
            tvec!(input.clone().into_tvalue()),
            |ctx, st, node, inputs| {
                let t = Instant::now();
                let result = eval(ctx, st, node, inputs);
                if timed {
                    *node_s.entry(node.id).or_default() += t.elapsed().as_secs_f64();
                }
                result
            },
        )?;
        if timed {
            run_s.push(start.elapsed().as_secs_f64());
        }
    }
    // One untimed-per-node run for comparison.
    let start = Instant::now();
    plan.run(tvec!(input.clone().into_tvalue()))?;
    let plain_ms = start.elapsed().as_secs_f64() * 1e3;
    run_s.sort_by(f64::total_cmp);
    let ms = |s: f64| s / runs as f64 * 1e3;
    let total: f64 = node_s.values().sum();
    writeln!(
        out,
        "{runs} runs: median {:.2} ms per run with per-node timing, {plain_ms:.2} ms one run without",
        run_s[run_s.len() / 2] * 1e3
    )?;

    let graph = plan.model();
    let mut by_op: HashMap<String, f64> = HashMap::new();
    for (id, s) in &node_s {
        *by_op
            .entry(graph.node(*id).op().name().to_string())
            .or_default() += s;
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1.total_cmp(&a.1));
    writeln!(out, "\n| operator | ms per run | share |\n|---|---|---|")?;
    for (op, s) in ops {
        writeln!(out, "| {op} | {:.3} | {:.1} % |", ms(s), s / total * 100.0)?;
    }

    let describe = |id: usize| {
        let node = graph.node(id);
        let info = node.op().info().unwrap_or_default().join("; ");
        let shape = format!("{:?}", node.outputs[0].fact.shape);
        let s = node_s.get(&id).copied().unwrap_or(0.0);
        format!(
            "| {id} | {} | {} | {shape} | {:.3} | {info} |",
            node.name,
            node.op().name(),
            ms(s)
        )
    };
    writeln!(
        out,
        "\n| node | name | operator | output | ms per run | info |\n|---|---|---|---|---|---|"
    )?;
    if all_nodes {
        for id in 0..graph.nodes().len() {
            writeln!(out, "{}", describe(id))?;
        }
    } else {
        let mut ids: Vec<usize> = node_s.keys().copied().collect();
        ids.sort_by(|a, b| node_s[b].total_cmp(&node_s[a]));
        for id in ids.into_iter().take(40) {
            writeln!(out, "{}", describe(id))?;
        }
    }
    // Printed at once; a reader that stops early (`| head`) is not an error.
    match std::io::stdout().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
