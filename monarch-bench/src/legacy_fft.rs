//! The mixed-radix FFT the core crate carried before it moved to `rustfft` (recursive
//! decimation in time, radix 2 specialised, any other prime factor by a direct `p`-point DFT,
//! so `O(n·p)` for a large prime factor `p`), kept only as the "before" column of
//! `examples/bench_libs.rs`.

use monarch::num_complex::Complex;
use monarch::RealScalar;

/// A precomputed plan for length-`n` complex FFTs.
#[derive(Debug, Clone)]
pub struct LegacyFft<R> {
    n: usize,
    factors: Vec<usize>,
    /// `tw[k] = exp(−2πi·k/n)`.
    tw: Vec<Complex<R>>,
}

impl<R: RealScalar> LegacyFft<R> {
    /// Plans transforms of length `n`.
    ///
    /// # Panics
    /// If `n == 0`.
    pub fn new(n: usize) -> Self {
        assert!(n > 0, "LegacyFft: n = 0");
        let mut factors = Vec::new();
        let mut m = n;
        let mut p = 2;
        while m > 1 {
            while m.is_multiple_of(p) {
                factors.push(p);
                m /= p;
            }
            p += 1;
            if p * p > m && m > 1 {
                factors.push(m);
                break;
            }
        }
        let tw = (0..n)
            .map(|k| {
                let ang = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                Complex::new(R::from_f64(ang.cos()), R::from_f64(ang.sin()))
            })
            .collect();
        LegacyFft { n, factors, tw }
    }

    /// Transform length.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false (plans have positive length).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// In-place unnormalised forward DFT, `X[k] = Σ_j x[j]·e^{−2πijk/n}`.
    ///
    /// # Panics
    /// If `data.len() != n`.
    pub fn forward(&self, data: &mut [Complex<R>]) {
        self.run(data, false);
    }

    /// In-place inverse DFT including the `1/n`, so `inverse(forward(x)) == x`.
    ///
    /// # Panics
    /// If `data.len() != n`.
    pub fn inverse(&self, data: &mut [Complex<R>]) {
        self.run(data, true);
        let s = R::one() / R::from_f64(self.n as f64);
        for v in data.iter_mut() {
            *v *= s;
        }
    }

    fn run(&self, data: &mut [Complex<R>], inv: bool) {
        assert_eq!(data.len(), self.n, "LegacyFft: length mismatch");
        let input = data.to_vec();
        self.rec(&input, 0, 1, data, &self.factors, inv);
    }

    /// Twiddle `exp(∓2πi·e/len)` for a sub-transform of length `len`.
    #[inline(always)]
    fn w(&self, e: usize, len: usize, inv: bool) -> Complex<R> {
        let t = self.tw[(e * (self.n / len)) % self.n];
        if inv {
            t.conj()
        } else {
            t
        }
    }

    fn rec(
        &self,
        input: &[Complex<R>],
        off: usize,
        stride: usize,
        out: &mut [Complex<R>],
        factors: &[usize],
        inv: bool,
    ) {
        let n = out.len();
        if n == 1 {
            out[0] = input[off];
            return;
        }
        let p = factors[0];
        let m = n / p;
        for q in 0..p {
            self.rec(
                input,
                off + q * stride,
                stride * p,
                &mut out[q * m..(q + 1) * m],
                &factors[1..],
                inv,
            );
        }
        // X[k + m·j] = Σ_q ω_n^{qk} · ω_p^{qj} · Y_q[k]; the index sets {k + m·j} and
        // {q·m + k} coincide, so each k is combined in place through a p-sized buffer.
        if p == 2 {
            for k in 0..m {
                let a = out[k];
                let b = out[m + k] * self.w(k, n, inv);
                out[k] = a + b;
                out[m + k] = a - b;
            }
            return;
        }
        let mut t = vec![Complex::new(R::zero(), R::zero()); p];
        for k in 0..m {
            for (q, tq) in t.iter_mut().enumerate() {
                *tq = out[q * m + k] * self.w(q * k, n, inv);
            }
            for j in 0..p {
                let mut acc = Complex::new(R::zero(), R::zero());
                for (q, &tq) in t.iter().enumerate() {
                    acc += tq * self.w(q * j, p, inv);
                }
                out[k + m * j] = acc;
            }
        }
    }
}
