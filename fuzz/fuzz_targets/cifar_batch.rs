#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tpsnet_fuzz_entry::cifar_batch(data));
