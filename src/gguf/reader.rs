//! A bounds-checked little-endian cursor over the file bytes. Every read either returns the
//! bytes that are really there or a [`GgufError::Truncated`] naming what was being read.

use super::GgufError;

pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(super) fn position(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// A capacity for `count` claimed items of at least `min_size` bytes each that the
    /// remaining bytes could really hold: a file can never make us reserve more than that.
    pub(super) fn capacity_for(&self, count: u64, min_size: usize) -> usize {
        let fit = self.remaining() / min_size.max(1);
        usize::try_from(count).map_or(fit, |c| c.min(fit))
    }

    pub(super) fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let truncated = || GgufError::Truncated {
            what: what.to_string(),
            offset: self.pos as u64,
            needed: n,
        };
        let n = usize::try_from(n).map_err(|_| truncated())?;
        if n > self.remaining() {
            return Err(truncated());
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let b = self.bytes(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(super) fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(super) fn u16(&mut self, what: &str) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub(super) fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(super) fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 length then that many UTF-8 bytes. `what` is built only on error.
    pub(super) fn string(&mut self, what: impl Fn() -> String) -> Result<&'a str, GgufError> {
        let at = self.pos as u64;
        let len = self
            .u64("string length")
            .map_err(|_| GgufError::Truncated {
                what: format!("length of {}", what()),
                offset: at,
                needed: 8,
            })?;
        let at = self.pos as u64;
        let raw = self
            .bytes(len, "string")
            .map_err(|_| GgufError::Truncated {
                what: what(),
                offset: at,
                needed: len,
            })?;
        std::str::from_utf8(raw).map_err(|_| GgufError::BadUtf8 {
            what: what(),
            offset: at,
        })
    }
}
