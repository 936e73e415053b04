//! GPT-2's byte-level alphabet: each byte is shown as a printable character so that BPE
//! works on text. Bytes `!..~`, `¡..¬`, `®..ÿ` stand for themselves; the other 68 map, in
//! order, to U+0100 onwards (Radford et al. 2019, `bytes_to_unicode` in GPT-2's encoder.py).
//! Written here (16 lines) because the decoding must yield raw bytes, which the `tokenizers`
//! decoder only gives back as lossy strings.

fn is_printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The byte that a character of the byte-level alphabet stands for.
fn char_to_byte(c: char) -> Option<u8> {
    let c = c as u32;
    if c < 256 && is_printable(c as u8) {
        return Some(c as u8);
    }
    let n = c.checked_sub(256)?;
    (0..=255u8).filter(|&b| !is_printable(b)).nth(n as usize)
}

/// The character of the byte-level alphabet that stands for byte `b`.
pub(super) fn byte_to_char(b: u8) -> char {
    if is_printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !is_printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap_or('\u{FFFD}')
}

/// The raw bytes of a byte-level token text. Characters outside the alphabet (none in a
/// well-formed vocabulary) are kept as their UTF-8.
pub(super) fn decode_byte_level(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet() {
        assert_eq!(decode_byte_level("Ġhello"), b" hello");
        assert_eq!(decode_byte_level("Ċ"), b"\n");
        assert_eq!(decode_byte_level("Ā"), [0u8]);
        // "é" is C3 A9 in UTF-8, shown as "Ã©".
        assert_eq!(decode_byte_level("Ã©"), "é".as_bytes());
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
    }
}
