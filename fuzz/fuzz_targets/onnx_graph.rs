#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tpsnet_fuzz_entry::onnx_graph(data));
