//! Streaming detokenization: a token may end in the middle of a UTF-8 character (byte-level
//! BPE splits multi-byte characters), so bytes are held back until the character completes.

/// Turns a stream of token bytes into text pieces that are always whole characters.
#[derive(Debug, Default, Clone)]
pub struct TokenStream {
    pending: Vec<u8>,
}

impl TokenStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token's bytes; returns the text that is now complete. Invalid bytes become
    /// U+FFFD; an incomplete character at the end waits for the next token.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete character at the end: keep it for later.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: whatever is still held back, as U+FFFD.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_a_split_character() {
        let mut s = TokenStream::new();
        let euro = "€".as_bytes(); // E2 82 AC
        assert_eq!(s.push(b"a"), "a");
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..2]), "");
        assert_eq!(s.push(&[euro[2], b'b']), "€b");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement() {
        let mut s = TokenStream::new();
        assert_eq!(s.push(&[0xFF, b'x']), "\u{FFFD}x");
        assert_eq!(s.push(&[0xE2]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }
}
