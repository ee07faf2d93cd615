#![no_main]
// Invariants and input format: mcpgate::fuzzing::resource_uri.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcpgate::fuzzing::resource_uri(data));
