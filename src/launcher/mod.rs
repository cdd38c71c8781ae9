//! `offgrid run`: loading a GGUF model with llama.cpp (crate `llama-cpp-2`) and chatting.
//!
//! STUB: to be written (owner: launcher helper).
