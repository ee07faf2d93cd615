#![no_main]
// Invariants and input format: mcpgate::fuzzing::path_route.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcpgate::fuzzing::path_route(data));
