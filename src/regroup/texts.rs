//! The built-in texts: the one calibrated merges are fitted on, and the one the page scores
//! each regrouping on. Both public domain, both shipped in the repository (never fetched), and
//! neither is the fixtures' evaluation passage (Austen, `../shared/fixtures/perplexity.json`),
//! which the CLI and the tests score.

/// The calibration text: Jules Verne, *Around the World in Eighty Days* (1873 English
/// translation), chapters I–XIV (about 35,000 tokens of SmolLM2's vocabulary), public domain;
/// from Project Gutenberg eBook #103 as the `esaxx-rs` 0.1.10 crate ships it in its test data,
/// the Gutenberg header removed, its CRLF line ends as LF. Chapter XXXV of the same book is
/// one of the held-out passages of benches/README.md (`benches/texts/`).
pub const TEXT: &str = include_str!("../../static/calibration/around-the-world-in-80-days.txt");

/// Where [`TEXT`] comes from, for reports.
pub const TEXT_SOURCE: &str = "Jules Verne, Around the World in Eighty Days (1873), ch. I–XIV, public domain (Project Gutenberg #103)";

/// The passage the page scores each regrouping on: Wilkie Collins, *The Moonstone* (1868), the
/// prologue's opening, public domain, from Project Gutenberg eBook #155 as the `htmlescape`
/// 0.3.1 crate ships it. Another book than the calibration text.
pub const EVALUATION: &str = include_str!("../../static/calibration/evaluation.txt");

/// Where [`EVALUATION`] comes from, for reports.
pub const EVALUATION_SOURCE: &str =
    "Wilkie Collins, The Moonstone (1868), prologue, public domain (Project Gutenberg #155)";
