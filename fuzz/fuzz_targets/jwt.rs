#![no_main]
// Invariants and input format: mcpgate::fuzzing::jwt.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcpgate::fuzzing::jwt(data));
