#![no_main]
// Invariants and input format: mcpgate::fuzzing::dpop.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcpgate::fuzzing::dpop(data));
