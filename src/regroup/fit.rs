//! The calibrated, RoPE-aware merge of KV heads (G < G0): one layer's maps (`maps.rs`)
//! fitted on that layer's activations over a calibration text, without any training.
//!
//! Per merged KV head g replacing the native heads J (r = |J| of them):
//!
//! - **K and q.** Pair f of a head is a complex number; the merged `k'_f = Σ_j c_{j,f} k_{j,f}`
//!   and each native head is read back as `k_{j,f} ≈ a_{j,f} k'_f`. With `w_{j,f}² = Σ_{h→j}
//!   E|q_{h,f}|²` (the energy of the queries that read head j), `z_j = w_{j,f} k_{j,f}` and u
//!   the top eigenvector of the r × r Hermitian `E[z z*]`, the best rank-1 fit is
//!   `c_{j,f} = conj(u_j) w_{j,f}`, `a_{j,f} = u_j / w_{j,f}`. A query head h that read j then
//!   multiplies its pair f by `conj(a_{j,f})`, since `Re(q·conj(a k')) = Re(q·conj(a)·conj(k'))`:
//!   its scores survive up to the fit's error, weighted by where its queries put their energy.
//! - **V and O.** The output that matters is `Σ_h W_o,h · o_h`; with `L_j L_jᵀ = Σ_{h→j}
//!   W_o,hᵀ W_o,h` (Cholesky), `‖L_jᵀ δv_j‖` is the error a value error `δv_j` makes there. The
//!   top `head_dim` principal directions P of the stacked `y = [L_jᵀ v_j]_j` give the merged
//!   `v' = Σ_j P_jᵀ L_jᵀ v_j` and `v_j ≈ L_j⁻ᵀ P_j v'`, so head h (native j) maps its attention
//!   output through `L_j⁻ᵀ P_j` before `W_o`.
//! - **O, refitted.** The maps above are fitted one by one, each against its own proxy error.
//!   `orefit.rs` then refits every query head's O map jointly, by ridge least squares on
//!   the attention outputs the layer really gives with its fitted K, q and V against the
//!   native ones, towards `L_j⁻ᵀ P_j` (the NumPy prototype's O refit). It is part of the
//!   default fit ([`super::FitSettings`]): on SmolLM2-135M, 8192 tokens of the
//!   built-in text, it takes G = 1 from a perplexity of 64 to 38 and G = 2 from 26.5 to 21
//!   (ARCHITECTURE.md's regrouping section has the measurements).
//!
//! Statistics are second moments (uncentred) in f64; RoPE turns pair f of every head by the
//! same angle at a position, so the K statistics are the same before and after it. Fitting
//! layer l on the activations of the model already merged below l is the caller's loop
//! (`crate::engine::calibrate`, through `layer.rs`).

use super::maps::{LayerMaps, VMap};
use super::Grouping;
use super::KSlots;
use nalgebra::{Cholesky, Complex, DMatrix, SymmetricEigen};

/// The calibration statistics of one layer.
pub struct LayerStats {
    grouping: Grouping,
    n_heads: usize,
    hd: usize,
    tokens: usize,
    /// `Σ_t |q_{h,f}|²` summed over the query heads that natively read KV head j: `[G0][hd/2]`.
    q_energy: Vec<f64>,
    /// Per merged KV head g: `Σ_t k_{a,f} conj(k_{b,f})` over its sources a, b: `[hd/2][r][r]`.
    k_cross: Vec<Vec<[f64; 2]>>,
    /// Per merged KV head g: `Σ_t v vᵀ` of its sources' stacked values: `[r·hd][r·hd]`.
    v_moment: Vec<Vec<f64>>,
}

/// How well one layer's merge fits its calibration statistics (0 is exact).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct FitError {
    /// Query-energy-weighted K error, relative: `Σ w²|k − a k'|² / Σ w²|k|²`.
    pub k: f64,
    /// Output-weighted V error, relative: the stacked values' energy outside the kept
    /// directions.
    pub v: f64,
    /// The O refit (`orefit.rs`), where one was made: the error of the layer's attention
    /// contribution with the base O maps and with the refitted ones.
    pub o: Option<super::OutputFit>,
}

impl LayerStats {
    pub fn new(grouping: Grouping, head_dim: usize) -> Self {
        let (g0, pairs) = (grouping.native_groups(), head_dim / 2);
        let merged = |g: usize| grouping.sources(g).len();
        LayerStats {
            grouping,
            n_heads: grouping.n_heads(),
            hd: head_dim,
            tokens: 0,
            q_energy: vec![0.0; g0 * pairs],
            k_cross: (0..grouping.groups())
                .map(|g| vec![[0.0; 2]; pairs * merged(g) * merged(g)])
                .collect(),
            v_moment: (0..grouping.groups())
                .map(|g| vec![0.0; (merged(g) * head_dim).pow(2)])
                .collect(),
        }
    }

    /// Adds tokens' native projections (before RoPE): q `[t][H·hd]`, k0 and v0 `[t][G0·hd]`.
    pub fn add(&mut self, q: &[f32], k0: &[f32], v0: &[f32]) {
        let (hd, g0) = (self.hd, self.grouping.native_groups());
        let r0 = self.n_heads / g0;
        let rows = q
            .chunks_exact(self.n_heads * hd)
            .zip(k0.chunks_exact(g0 * hd));
        for ((qt, kt), vt) in rows.zip(v0.chunks_exact(g0 * hd)) {
            for (i, pair) in qt.chunks_exact(2).enumerate() {
                let (h, f) = (i / (hd / 2), i % (hd / 2));
                let e = (pair[0] as f64).powi(2) + (pair[1] as f64).powi(2);
                self.q_energy[(h / r0) * (hd / 2) + f] += e;
            }
            for g in 0..self.grouping.groups() {
                let src = self.grouping.sources(g);
                if src.len() > 1 {
                    self.add_k(g, src.clone(), kt);
                    self.add_v(g, src, vt);
                }
            }
            self.tokens += 1;
        }
    }

    fn add_k(&mut self, g: usize, src: std::ops::Range<usize>, kt: &[f32]) {
        let (hd, r) = (self.hd, src.len());
        let pair = |j: usize, f: usize| [kt[j * hd + 2 * f] as f64, kt[j * hd + 2 * f + 1] as f64];
        for f in 0..hd / 2 {
            for (a, ja) in src.clone().enumerate() {
                let ka = pair(ja, f);
                for (b, jb) in src.clone().enumerate() {
                    let kb = pair(jb, f);
                    // k_a · conj(k_b)
                    let s = &mut self.k_cross[g][(f * r + a) * r + b];
                    s[0] += ka[0] * kb[0] + ka[1] * kb[1];
                    s[1] += ka[1] * kb[0] - ka[0] * kb[1];
                }
            }
        }
    }

    fn add_v(&mut self, g: usize, src: std::ops::Range<usize>, vt: &[f32]) {
        let hd = self.hd;
        let v: Vec<f64> = src
            .flat_map(|j| vt[j * hd..(j + 1) * hd].to_vec())
            .map(f64::from)
            .collect();
        let n = v.len();
        let m = &mut self.v_moment[g];
        for (i, &vi) in v.iter().enumerate() {
            let row = &mut m[i * n..(i + 1) * n];
            row.iter_mut().zip(&v).for_each(|(a, &vj)| *a += vi * vj);
        }
    }

    /// Tokens added so far.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The layer's maps, from its statistics and its output projection `wo`
    /// (`[dim][H·hd]`, f32), and how well they fit, K's slots spent by `k_slots`. Groups that
    /// merge nothing keep their native head as it is.
    pub fn fit(&self, wo: &[f32], k_slots: KSlots) -> Result<(LayerMaps, FitError), String> {
        let (gr, hd) = (self.grouping, self.hd);
        let mut maps = LayerMaps::pooled(gr, hd);
        if !gr.merges() {
            return Ok((maps, FitError::default()));
        }
        if self.tokens == 0 {
            return Err("no calibration tokens".into());
        }
        let (g0, pairs, n_heads) = (gr.native_groups(), hd / 2, self.n_heads);
        let mut q = vec![[1.0f32, 0.0]; n_heads * pairs];
        let mut o: Vec<f32> = (0..n_heads).flat_map(|_| identity(hd)).collect();
        let mut v = vec![0.0f32; gr.groups() * hd * g0 * hd];
        let (mut err, mut weight) = (FitError::default(), 0.0);
        let chol = self.output_factors(wo)?;
        for g in 0..gr.groups() {
            let src = gr.sources(g);
            if src.len() == 1 {
                let j = src.start;
                for d in 0..hd {
                    v[((g * hd + d) * g0 + j) * hd + d] = 1.0;
                }
                continue;
            }
            let k_err = self.fit_k(g, k_slots, &mut maps, &mut q)?;
            let v_err = self.fit_v(g, &chol, &mut v, &mut o)?;
            err.k += k_err;
            err.v += v_err;
            weight += 1.0;
        }
        if maps.slots.as_deref() == Some(&identity_slots(gr, pairs)[..]) {
            maps.slots = None;
        }
        maps.v = VMap::Dense(v);
        maps.q = Some(q);
        maps.o = Some(o);
        Ok((
            maps,
            FitError {
                k: err.k / weight,
                v: err.v / weight,
                o: None,
            },
        ))
    }

    /// K and q maps of merged head g, its slots spent by `rule`; returns its relative K error.
    fn fit_k(
        &self,
        g: usize,
        rule: KSlots,
        maps: &mut LayerMaps,
        q: &mut [[f32; 2]],
    ) -> Result<f64, String> {
        let (gr, hd) = (self.grouping, self.hd);
        let (src, g0, pairs) = (gr.sources(g), gr.native_groups(), hd / 2);
        let r0 = self.n_heads / g0;
        let (components, total) = self.k_components(g)?;
        let chosen = choose_slots(components, rule, pairs);
        let kept: f64 = chosen.iter().map(|c| c.energy).sum();
        let slots = maps.slots.get_or_insert_with(|| identity_slots(gr, pairs));
        for (s, c) in chosen.iter().enumerate() {
            slots[g * pairs + s] = c.pair as u32;
            for (a, j) in src.clone().enumerate() {
                let (u, w) = (c.u[a], c.w[a]);
                // c = conj(u)·w: the merged head; q scaled by conj(u / w).
                maps.k[(g * g0 + j) * pairs + s] = [(u.re * w) as f32, (-u.im * w) as f32];
                for h in j * r0..(j + 1) * r0 {
                    q[h * pairs + s] = [(u.re / w) as f32, (-u.im / w) as f32];
                }
            }
        }
        Ok(if total > 0.0 {
            ((total - kept) / total).max(0.0)
        } else {
            0.0
        })
    }

    /// Every component merged head g's keys could keep: per pair f, the eigenvectors of the
    /// r × r Hermitian `H_ab = w_a w_b E[k_a conj(k_b)]` and their energies; and the total
    /// energy, `Σ_f tr H`.
    fn k_components(&self, g: usize) -> Result<(Vec<Component>, f64), String> {
        let (src, pairs) = (self.grouping.sources(g), self.hd / 2);
        let r = src.len();
        let t = self.tokens as f64;
        let (mut out, mut total) = (Vec::with_capacity(pairs * r), 0.0);
        for f in 0..pairs {
            let w: Vec<f64> = src
                .clone()
                .map(|j| (self.q_energy[j * pairs + f] / t).sqrt().max(1e-12))
                .collect();
            let m = DMatrix::<Complex<f64>>::from_fn(r, r, |a, b| {
                let s = self.k_cross[g][(f * r + a) * r + b];
                Complex::new(s[0], s[1]) * (w[a] * w[b] / t)
            });
            total += (0..r).map(|a| m[(a, a)].re).sum::<f64>();
            let eig = SymmetricEigen::try_new(m, 1e-14, 100_000).ok_or_else(|| {
                format!("a {r}×{r} Hermitian eigendecomposition did not converge")
            })?;
            for i in 0..r {
                let u: Vec<Complex<f64>> = eig.eigenvectors.column(i).iter().copied().collect();
                let norm = u
                    .iter()
                    .map(|x| x.norm_sqr())
                    .sum::<f64>()
                    .sqrt()
                    .max(1e-30);
                out.push(Component {
                    pair: f,
                    energy: eig.eigenvalues[i].max(0.0),
                    u: u.iter().map(|x| x / norm).collect(),
                    w: w.clone(),
                });
            }
        }
        Ok((out, total))
    }

    /// Cholesky factors L_j of `Σ_{h→j} W_o,hᵀ W_o,h` for every native head j (`[hd][hd]`).
    fn output_factors(&self, wo: &[f32]) -> Result<Vec<DMatrix<f64>>, String> {
        let (hd, g0) = (self.hd, self.grouping.native_groups());
        let width = self.n_heads * hd;
        let dim = wo.len() / width;
        let r0 = self.n_heads / g0;
        (0..g0)
            .map(|j| {
                let mut m = DMatrix::<f64>::zeros(hd, hd);
                for h in j * r0..(j + 1) * r0 {
                    let block =
                        DMatrix::<f64>::from_fn(dim, hd, |i, e| wo[i * width + h * hd + e] as f64);
                    m += block.transpose() * &block;
                }
                let ridge = 1e-9 * m.trace() / hd as f64;
                m += DMatrix::<f64>::identity(hd, hd) * ridge;
                Cholesky::new(m)
                    .map(|c| c.l())
                    .ok_or_else(|| format!("W_o of KV head {j} gives no Cholesky factor"))
            })
            .collect()
    }

    /// V and O maps of merged head g (`v`: `[G][hd][G0·hd]`, `o`: `[H][hd][hd]`); returns its
    /// relative V error.
    fn fit_v(
        &self,
        g: usize,
        l: &[DMatrix<f64>],
        v: &mut [f32],
        o: &mut [f32],
    ) -> Result<f64, String> {
        let (gr, hd) = (self.grouping, self.hd);
        let (src, g0) = (gr.sources(g), gr.native_groups());
        let (r, r0) = (src.len(), self.n_heads / g0);
        let n = r * hd;
        let moment = DMatrix::<f64>::from_row_slice(n, n, &self.v_moment[g]) / self.tokens as f64;
        // D = blockdiag(L_j): y = Dᵀ v, E[y yᵀ] = Dᵀ E[v vᵀ] D.
        let mut d = DMatrix::<f64>::zeros(n, n);
        for (a, j) in src.clone().enumerate() {
            d.view_mut((a * hd, a * hd), (hd, hd)).copy_from(&l[j]);
        }
        let y = d.transpose() * moment * &d;
        let trace = y.trace();
        let (kept, p) = top_eigen(y, hd)?; // p: [r·hd][hd]
        for (a, j) in src.clone().enumerate() {
            let pj = p.rows(a * hd, hd).into_owned(); // [hd][hd]
            let enc = pj.transpose() * l[j].transpose(); // v' += P_jᵀ L_jᵀ v_j
            for dd in 0..hd {
                for e in 0..hd {
                    v[((g * hd + dd) * g0 + j) * hd + e] = enc[(dd, e)] as f32;
                }
            }
            let dec = l[j]
                .tr_solve_lower_triangular(&pj)
                .ok_or_else(|| format!("L of KV head {j} is singular"))?; // L_j⁻ᵀ P_j
            for h in j * r0..(j + 1) * r0 {
                for dd in 0..hd {
                    for e in 0..hd {
                        o[(h * hd + dd) * hd + e] = dec[(dd, e)] as f32;
                    }
                }
            }
        }
        let kept: f64 = kept.iter().sum();
        Ok(if trace > 0.0 {
            ((trace - kept) / trace).max(0.0)
        } else {
            0.0
        })
    }
}

/// One direction a merged head's keys could keep at one rotation pair.
struct Component {
    pair: usize,
    /// Query-weighted energy it keeps (its eigenvalue).
    energy: f64,
    /// Unit eigenvector over the merged sources, and their query weights.
    u: Vec<Complex<f64>>,
    w: Vec<f64>,
}

/// The `pairs` components a merged head keeps, in slot order (by pair, then energy): the
/// strongest at every pair ([`KSlots::PerPair`]), or the strongest of all ([`KSlots::ByEnergy`]).
fn choose_slots(mut all: Vec<Component>, rule: KSlots, pairs: usize) -> Vec<Component> {
    all.sort_by(|a, b| b.energy.total_cmp(&a.energy).then(a.pair.cmp(&b.pair)));
    let mut chosen: Vec<Component> = match rule {
        KSlots::ByEnergy => all.into_iter().take(pairs).collect(),
        KSlots::PerPair => {
            let mut seen = vec![false; pairs];
            all.into_iter()
                .filter(|c| !std::mem::replace(&mut seen[c.pair], true))
                .collect()
        }
    };
    chosen.sort_by(|a, b| a.pair.cmp(&b.pair).then(b.energy.total_cmp(&a.energy)));
    chosen
}

/// Slot f carries pair f, in every KV head of `grouping`: `[G][hd/2]`.
fn identity_slots(grouping: Grouping, pairs: usize) -> Vec<u32> {
    (0..grouping.groups() * pairs)
        .map(|i| (i % pairs) as u32)
        .collect()
}

/// The `k` largest eigenvalues of a symmetric matrix, descending, and their eigenvectors as
/// columns.
fn top_eigen(m: DMatrix<f64>, k: usize) -> Result<(Vec<f64>, DMatrix<f64>), String> {
    let n = m.nrows();
    let eig = SymmetricEigen::try_new(m, 1e-14, 100_000)
        .ok_or_else(|| format!("a {n}×{n} eigendecomposition did not converge"))?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let top = &order[..k.min(n)];
    let values = top.iter().map(|&i| eig.eigenvalues[i]).collect();
    let vectors = DMatrix::<f64>::from_fn(n, top.len(), |row, c| eig.eigenvectors[(row, top[c])]);
    Ok((values, vectors))
}

fn identity(hd: usize) -> Vec<f32> {
    (0..hd * hd).map(|i| f32::from(i % (hd + 1) == 0)).collect()
}

#[cfg(test)]
mod tests;
