// Shared by every kernel: what changes per submit (written once per forward by the host).
struct Step {
    pos0: u32,      // position of the first token of this forward
    n_tokens: u32,  // tokens in this forward (T)
    n_chunks: u32,  // attention chunks covering positions 0..pos0+T
    _pad: u32,
}
