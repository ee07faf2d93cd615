#![no_main]
// Invariants and input format: mcpgate::fuzzing::list_filter.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcpgate::fuzzing::list_filter(data));
