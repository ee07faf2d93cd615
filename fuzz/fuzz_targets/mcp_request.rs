#![no_main]
// Invariants and input format: mcpgate::fuzzing::mcp_request.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcpgate::fuzzing::mcp_request(data));
