//! Number formatting for people: thousands separators, binary byte units, counted nouns, an
//! element type's bytes, perplexities.

/// `1234567` → `"1,234,567"`.
pub fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in B, KiB, MiB, GiB or TiB.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// `n` and the noun, plural unless `n` is 1: `1 token`, `1,024 tokens`.
pub fn count(n: usize, noun: &str) -> String {
    format!("{} {}", int(n as u64), plural(n, noun))
}

/// The noun for `n` of it: `token` for 1, `tokens` otherwise (nouns with a plain plural).
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        noun.to_string()
    } else {
        format!("{noun}s")
    }
}

/// What a value of `t` costs: `4 bytes a value`, or for a block type `34 bytes per 32 values`.
pub fn value_bytes(t: crate::model::ElementType) -> String {
    match t.block_len {
        1 => format!(
            "{} {} a value",
            t.block_bytes,
            plural(t.block_bytes as usize, "byte")
        ),
        n => format!("{} bytes per {n} values", t.block_bytes),
    }
}

/// Bytes per value, as few digits as it needs: `4`, `2`, `1.0625`.
pub fn per_value(t: crate::model::ElementType) -> String {
    let v = t.bytes_per_value();
    match v.fract() == 0.0 {
        true => format!("{v:.0}"),
        false => format!("{v}"),
    }
}

/// A perplexity as the table shows it.
pub fn ppl(p: f64) -> String {
    match p {
        p if p >= 1000.0 => format!("≈{}", int(p.round() as u64)),
        p if p >= 100.0 => format!("{p:.0}"),
        p => format!("{p:.1}"),
    }
}
