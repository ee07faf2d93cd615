#![no_main]
// Invariants and input format: mcpgate::fuzzing::credentials.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcpgate::fuzzing::credentials(data));
