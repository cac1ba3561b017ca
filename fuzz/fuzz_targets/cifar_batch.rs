#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::cifar_batch(data));
