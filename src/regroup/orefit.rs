//! The least-squares refit of a calibrated merge's O maps: after a layer's K, q and V maps are
//! fitted (`fit.rs`, which also gives the base O maps `M0_h = L_j⁻ᵀ P_j`), each query
//! head's `head_dim × head_dim` output map is fitted again, all heads jointly, to what the
//! layer's attention really puts into the residual stream.
//!
//! Over the calibration tokens t, with `o(t)` the layer's native attention output (native q, K,
//! V at its current input; `[H·hd]`), `y = W_o·o` its contribution to the residual stream, and
//! `a_h(t)` query head h's attention output through the fitted K, q and V maps (before any O
//! map), the refit is the ridge regression
//!
//! ```text
//! min over M_h of  E_t ‖y − Σ_h W_o,h M_h a_h‖²  +  λ Σ_h ‖M_h − M0_h‖²_F,   λ = ρ · tr(C) / (H·hd)
//! ```
//!
//! (`W_o,h` is head h's `[dim][hd]` column block of `W_o`, ρ the relative ridge). It is
//! quadratic in the M_h, so second moments suffice (means over the tokens, f64): `C = E[a aᵀ]`,
//! `E = E[o aᵀ]` and, for the error only, `F = E[o oᵀ]`, each `[H·hd][H·hd]`. With the blocks
//! `S_hh' = W_o,hᵀ W_o,h'` the normal equations are, per head h,
//!
//! ```text
//! Σ_h' S_hh' M_h' C_h'h + λ M_h  =  Σ_h' S_hh' E_h'h + λ M0_h,
//! ```
//!
//! a symmetric positive definite system in `H·hd²` unknowns, solved by conjugate gradients
//! (Hestenes & Stiefel 1952) from `M0`. Each iteration is `2H²` products of `hd × hd` matrices:
//! no per-token work. The preconditioner is the system's block diagonal `X ↦ S_hh X C_hh + λX`,
//! inverted exactly: with `S_hh = U diag(s) Uᵀ` and `C_hh = V diag(c) Vᵀ` its inverse is
//! `R ↦ U ((Uᵀ R V) ⊘ (s cᵀ + λ)) Vᵀ`.
//!
//! The method is the "joint least-squares" O refit of an independent NumPy prototype written
//! while the fit was designed (not in the repository; ARCHITECTURE.md compares its figures):
//! on SmolLM2-135M it is the largest single gain over the base fit (ARCHITECTURE.md has the
//! figures). The ridge pulls towards the base maps, which matters where the calibration is
//! short: at G = 1 all heads read one merged V, so `C` is nearly singular.

use nalgebra::{DMatrix, SymmetricEigen};

/// The relative residual `‖r‖ / ‖rhs‖` at which the conjugate gradients stop. Measured on
/// SmolLM2-135M (G = 1, 2048 tokens, ρ = 1): 1e-4 and 1e-6 give the same perplexity (46.83,
/// 46.82), 1e-4 in about a third fewer iterations.
const TOLERANCE: f64 = 1e-4;
/// Most conjugate-gradient iterations (the iterate is returned where it is).
const MAX_ITERATIONS: usize = 500;

/// `[H]` matrices of `hd × hd`: one per query head.
type Blocks = Vec<DMatrix<f64>>;

/// Second moments of one layer's attention outputs over the calibration tokens, f64:
/// native `o` and merged `a` (see the module doc).
pub struct OutputStats {
    n_heads: usize,
    hd: usize,
    tokens: usize,
    /// `Σ a aᵀ`, `Σ o aᵀ`, `Σ o oᵀ`: `[H·hd][H·hd]` each.
    aa: Vec<f64>,
    oa: Vec<f64>,
    oo: Vec<f64>,
    /// With a drift target: `Σ d aᵀ`, `Σ d oᵀ` (`[dim][H·hd]`) and `Σ ‖d‖²`.
    drift: Option<(Vec<f64>, Vec<f64>, f64)>,
}

/// How an O refit went.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct OutputFit {
    /// Relative error `E‖y − ŷ‖² / E‖y‖²` of the layer's attention contribution on the
    /// calibration tokens with the base O maps, and with the refitted ones.
    pub base: f64,
    pub refit: f64,
    /// Conjugate-gradient iterations taken.
    pub iterations: usize,
}

impl OutputStats {
    pub fn new(n_heads: usize, head_dim: usize) -> Self {
        let n = (n_heads * head_dim).pow(2);
        OutputStats {
            n_heads,
            hd: head_dim,
            tokens: 0,
            aa: vec![0.0; n],
            oa: vec![0.0; n],
            oo: vec![0.0; n],
            drift: None,
        }
    }

    /// Adds the products of a block of tokens' drift d (`[dim]` per token: the native
    /// stream's input to the layer less the merged one's), which the target then includes,
    /// `y = W_o·o + d`: `Σ d aᵀ`, `Σ d oᵀ` (`[dim][H·hd]` each) and `Σ ‖d‖²`. Call it with
    /// every block or none, beside [`OutputStats::add_products`], which counts the tokens.
    pub fn add_drift(&mut self, da: &[f32], d_o: &[f32], dd: f64) {
        let (sa, so, sd) = self
            .drift
            .get_or_insert_with(|| (vec![0.0; da.len()], vec![0.0; d_o.len()], 0.0));
        sa.iter_mut().zip(da).for_each(|(s, &b)| *s += f64::from(b));
        so.iter_mut()
            .zip(d_o)
            .for_each(|(s, &b)| *s += f64::from(b));
        *sd += dd;
    }

    /// Adds `tokens` tokens' products `Σ a aᵀ`, `Σ o aᵀ`, `Σ o oᵀ` (each `[H·hd][H·hd]`,
    /// row-major: row index from the left factor), summed elsewhere in f32 over a block of
    /// tokens (one calibration sequence); they are added here in f64.
    pub fn add_products(&mut self, aa: &[f32], oa: &[f32], oo: &[f32], tokens: usize) {
        for (sum, block) in [(&mut self.aa, aa), (&mut self.oa, oa), (&mut self.oo, oo)] {
            sum.iter_mut()
                .zip(block)
                .for_each(|(s, &b)| *s += f64::from(b));
        }
        self.tokens += tokens;
    }

    /// Tokens added so far.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The refitted O maps (`[H][hd][hd]`, f32) from the layer's output projection `wo`
    /// (`[dim][H·hd]`), its base maps `base` (`[H][hd][hd]`) and the relative ridge `ridge`
    /// (ρ of the module doc, > 0), and how the fit went.
    pub fn refit(
        &self,
        wo: &[f32],
        base: &[f32],
        ridge: f64,
    ) -> Result<(Vec<f32>, OutputFit), String> {
        let (h, hd) = (self.n_heads, self.hd);
        if base.len() != h * hd * hd || wo.is_empty() || !wo.len().is_multiple_of(h * hd) {
            return Err("O refit: maps or W_o of the wrong size".into());
        }
        super::check_o_ridge(ridge)?;
        if self.tokens == 0 {
            return Err("O refit: no calibration tokens".into());
        }
        let system = System::new(self, wo, ridge);
        let m0 = blocks_of(base, h, hd);
        let rhs = system.rhs(&m0);
        let (m, iterations) = system.solve(m0.clone(), &rhs);
        let fit = OutputFit {
            base: system.error(&m0),
            refit: system.error(&m),
            iterations,
        };
        Ok((flatten(&m), fit))
    }

    /// Block `(r, c)` (`hd × hd`) of a `[H·hd][H·hd]` sum, as a mean over the tokens.
    fn block(&self, sum: &[f64], r: usize, c: usize) -> DMatrix<f64> {
        let (hd, width, t) = (self.hd, self.n_heads * self.hd, self.tokens as f64);
        DMatrix::from_fn(hd, hd, |i, j| sum[(r * hd + i) * width + c * hd + j] / t)
    }
}

/// The normal equations of the module doc, and their preconditioner.
struct System {
    /// `S_hh'` at `[h·H + h']`, `C_h'h` at `[h'·H + h]`.
    s: Vec<DMatrix<f64>>,
    c: Vec<DMatrix<f64>>,
    /// `B_h = Σ_h' S_hh' E_h'h`: `ŷ`'s correlation with y, per head.
    b: Blocks,
    /// `E‖y‖²`.
    yy: f64,
    lambda: f64,
    pre: Vec<Precondition>,
}

/// One head's diagonal block `X ↦ S X C + λX` in the eigenbases of S and C.
struct Precondition {
    u: DMatrix<f64>,
    s: Vec<f64>,
    v: DMatrix<f64>,
    c: Vec<f64>,
}

impl System {
    fn new(stats: &OutputStats, wo: &[f32], ridge: f64) -> Self {
        let h = stats.n_heads;
        let pairs = |f: &dyn Fn(usize, usize) -> DMatrix<f64>| -> Vec<DMatrix<f64>> {
            (0..h * h).map(|i| f(i / h, i % h)).collect()
        };
        let w = head_columns(wo, h, stats.hd);
        let s = pairs(&|a, b| w[a].tr_mul(&w[b]));
        let c = pairs(&|a, b| stats.block(&stats.aa, a, b));
        let e = pairs(&|a, b| stats.block(&stats.oa, a, b));
        let f = pairs(&|a, b| stats.block(&stats.oo, a, b));
        let mut b: Blocks = (0..h)
            .map(|hh| (0..h).map(|k| &s[hh * h + k] * &e[k * h + hh]).sum())
            .collect();
        // E‖y‖² = Σ_hh' tr(S_hh' F_h'h).
        let mut yy: f64 = (0..h * h)
            .map(|i| (&s[i] * &f[(i % h) * h + i / h]).trace())
            .sum();
        if let Some((da, d_o, dd)) = &stats.drift {
            // y = W_o·o + d: B_h += W_o,hᵀ E[d a_hᵀ]; E‖y‖² += 2 Σ_h ⟨W_o,h, E[d o_hᵀ]⟩ + E‖d‖².
            let t = stats.tokens as f64;
            let (hd, width) = (stats.hd, h * stats.hd);
            let dim = da.len() / width;
            let block =
                |x: &[f64], hh| DMatrix::from_fn(dim, hd, |i, j| x[i * width + hh * hd + j] / t);
            for (hh, bh) in b.iter_mut().enumerate() {
                *bh += w[hh].tr_mul(&block(da, hh));
                yy += 2.0 * w[hh].dot(&block(d_o, hh));
            }
            yy += dd / t;
        }
        let trace_c: f64 = (0..h).map(|k| c[k * h + k].trace()).sum();
        let lambda = ridge * trace_c / (h * stats.hd) as f64;
        let pre = (0..h)
            .map(|k| Precondition::new(&s[k * h + k], &c[k * h + k]))
            .collect();
        System {
            s,
            c,
            b,
            yy,
            lambda: lambda.max(f64::MIN_POSITIVE),
            pre,
        }
    }

    fn heads(&self) -> usize {
        self.b.len()
    }

    /// `A0(M)_h = Σ_h' S_hh' M_h' C_h'h`: the data term's Hessian (halved) applied to M.
    fn apply_data(&self, m: &Blocks) -> Blocks {
        let h = self.heads();
        (0..h)
            .map(|hh| {
                (0..h)
                    .map(|k| &self.s[hh * h + k] * (&m[k] * &self.c[k * h + hh]))
                    .sum()
            })
            .collect()
    }

    /// `A(M) = A0(M) + λM`.
    fn apply(&self, m: &Blocks) -> Blocks {
        let mut out = self.apply_data(m);
        axpy(&mut out, self.lambda, m);
        out
    }

    /// The right-hand side `B + λ M0`.
    fn rhs(&self, m0: &Blocks) -> Blocks {
        let mut rhs = self.b.clone();
        axpy(&mut rhs, self.lambda, m0);
        rhs
    }

    /// Preconditioned conjugate gradients for `A(M) = rhs` from `m`; returns M and the
    /// iterations taken.
    fn solve(&self, mut m: Blocks, rhs: &Blocks) -> (Blocks, usize) {
        let stop = TOLERANCE * dot(rhs, rhs).sqrt();
        let mut r = rhs.clone();
        axpy(&mut r, -1.0, &self.apply(&m));
        let mut z = self.precondition(&r);
        let mut p = z.clone();
        let mut rz = dot(&r, &z);
        for it in 0..MAX_ITERATIONS {
            if dot(&r, &r).sqrt() <= stop || rz <= 0.0 {
                return (m, it);
            }
            let ap = self.apply(&p);
            let alpha = rz / dot(&p, &ap);
            axpy(&mut m, alpha, &p);
            axpy(&mut r, -alpha, &ap);
            z = self.precondition(&r);
            let rz_next = dot(&r, &z);
            let beta = rz_next / rz;
            for (pk, zk) in p.iter_mut().zip(&z) {
                *pk = zk + &*pk * beta;
            }
            rz = rz_next;
        }
        (m, MAX_ITERATIONS)
    }

    fn precondition(&self, r: &Blocks) -> Blocks {
        r.iter()
            .zip(&self.pre)
            .map(|(rk, p)| p.solve(rk, self.lambda))
            .collect()
    }

    /// `E‖y − ŷ‖² / E‖y‖²` with the maps M: `(E‖y‖² − 2⟨M, B⟩ + ⟨M, A0(M)⟩) / E‖y‖²`.
    fn error(&self, m: &Blocks) -> f64 {
        if self.yy <= 0.0 {
            return 0.0;
        }
        let residual = self.yy - 2.0 * dot(m, &self.b) + dot(m, &self.apply_data(m));
        (residual / self.yy).max(0.0)
    }
}

impl Precondition {
    fn new(s: &DMatrix<f64>, c: &DMatrix<f64>) -> Self {
        let (es, ec) = (
            SymmetricEigen::new(s.clone()),
            SymmetricEigen::new(c.clone()),
        );
        // Both are positive semi-definite; rounding may leave tiny negative eigenvalues.
        let floor = |v: &nalgebra::DVector<f64>| v.iter().map(|x| x.max(0.0)).collect();
        Precondition {
            s: floor(&es.eigenvalues),
            c: floor(&ec.eigenvalues),
            u: es.eigenvectors,
            v: ec.eigenvectors,
        }
    }

    /// X with `S X C + λX = R`.
    fn solve(&self, r: &DMatrix<f64>, lambda: f64) -> DMatrix<f64> {
        let mut x = self.u.tr_mul(r) * &self.v;
        for (j, cj) in self.c.iter().enumerate() {
            for (i, si) in self.s.iter().enumerate() {
                x[(i, j)] /= si * cj + lambda;
            }
        }
        &self.u * x * self.v.transpose()
    }
}

/// `W_o,h` for each head h: `[dim][hd]` column blocks of `wo` (`[dim][H·hd]`, f32).
fn head_columns(wo: &[f32], n_heads: usize, hd: usize) -> Vec<DMatrix<f64>> {
    let width = n_heads * hd;
    let dim = wo.len() / width;
    (0..n_heads)
        .map(|h| DMatrix::from_fn(dim, hd, |i, e| f64::from(wo[i * width + h * hd + e])))
        .collect()
}

/// `[H][hd][hd]` row-major f32 as blocks.
fn blocks_of(maps: &[f32], n_heads: usize, hd: usize) -> Blocks {
    (0..n_heads)
        .map(|h| DMatrix::from_fn(hd, hd, |i, j| f64::from(maps[(h * hd + i) * hd + j])))
        .collect()
}

/// Blocks as `[H][hd][hd]` row-major f32.
fn flatten(m: &Blocks) -> Vec<f32> {
    m.iter()
        .flat_map(|b| b.transpose().iter().map(|&x| x as f32).collect::<Vec<_>>())
        .collect()
}

/// `Σ_h ⟨X_h, Y_h⟩_F`.
fn dot(x: &Blocks, y: &Blocks) -> f64 {
    x.iter().zip(y).map(|(a, b)| a.dot(b)).sum()
}

/// `y += α x`.
fn axpy(y: &mut Blocks, alpha: f64, x: &Blocks) {
    for (yk, xk) in y.iter_mut().zip(x) {
        yk.iter_mut()
            .zip(xk.iter())
            .for_each(|(y, x)| *y += alpha * x);
    }
}

#[cfg(test)]
mod tests;
