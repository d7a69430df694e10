//! The two places where the core crate hands work to a library, old against new in one run:
//! the mixer's FFT (the crate's former mixed-radix FFT, [`monarch_bench::legacy_fft`], against
//! `mixer::fft::FftPlan` over rustfft, and the long convolution built on each) and the
//! projection's SVD (the crate's one-sided Jacobi against faer's thin SVD, by size, which is
//! where `primitives::svd::JACOBI_MAX_SIDE_REAL` and `_COMPLEX` come from).
//!
//! `cargo run --release -p monarch-bench --example bench_libs` (a few minutes: the old FFT at
//! the prime length 65537 takes seconds per transform), `--svd` for the SVD table alone,
//! `--quick` for small sizes only.
//! Everything runs on one thread, so neighbours on the machine disturb it least.

use monarch::mixer::fft::FftPlan;
use monarch::mixer::{ConvMethod, ConvPlan, LongConv};
use monarch::ndarray::{Array2, Array3, Axis};
use monarch::num_complex::Complex;
use monarch::primitives::random::normal_matrix;
use monarch::primitives::svd::{svd, svd_jacobi};
use monarch::{RealScalar, Scalar};
use monarch_bench::legacy_fft::LegacyFft;
use monarch_bench::{calibrate, cpu_model, has_flag, trial};
use std::time::Instant;

/// Best seconds per call of three runs, each repeated until it lasts 0.2 s; a call that alone
/// takes longer than that is timed once.
fn secs(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    let once = t.elapsed().as_secs_f64();
    if once > 0.2 {
        return once;
    }
    let reps = calibrate(&mut f, 0.2);
    (0..3)
        .map(|_| trial(&mut f, reps))
        .fold(f64::INFINITY, f64::min)
}

fn signal(n: usize) -> Vec<Complex<f64>> {
    (0..n)
        .map(|i| Complex::new((i as f64 * 0.37).sin(), (i as f64 * 1.3).cos()))
        .collect()
}

fn fft_table(sizes: &[usize]) {
    println!("\n### Complex FFT, f64, forward, one thread\n");
    println!("| n | old (crate's own) ms | new (rustfft) ms | old / new | max rel. difference |");
    println!("|---|---|---|---|---|");
    for &n in sizes {
        let (old, new) = (LegacyFft::<f64>::new(n), FftPlan::<f64>::new(n).unwrap());
        let x = signal(n);
        let (mut a, mut b) = (x.clone(), x.clone());
        old.forward(&mut a);
        new.forward(&mut b);
        let scale = b.iter().map(|v| v.norm()).fold(0.0, f64::max);
        let diff = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).norm())
            .fold(0.0, f64::max);
        let t_old = secs(|| {
            let mut y = x.clone();
            old.forward(&mut y);
        });
        let t_new = secs(|| {
            let mut y = x.clone();
            new.forward(&mut y);
        });
        println!(
            "| {n} | {:.3} | {:.3} | {:.1}× | {:.1e} |",
            t_old * 1e3,
            t_new * 1e3,
            t_old / t_new,
            diff / scale
        );
    }
}

/// The long convolution as the crate computed it with its own FFT: full complex transforms of
/// length `2L` of the zero-padded rows, the spectral product, the inverse.
fn legacy_conv(conv: &LongConv<f32>, u: &Array3<f32>, fft: &LegacyFft<f32>) -> Array2<f32> {
    let (b, h, l) = u.dim();
    let n = 2 * l;
    let spectrum = |rows: Array2<f32>| {
        let mut out = Array2::from_elem((rows.nrows(), n), Complex::new(0.0f32, 0.0));
        for (src, mut dst) in rows.rows().into_iter().zip(out.rows_mut()) {
            dst.iter_mut().zip(src).for_each(|(d, &s)| d.re = s);
            fft.forward(dst.as_slice_mut().unwrap());
        }
        out
    };
    let rows = u.to_shape((b * h, l)).unwrap().to_owned();
    let mut p = spectrum(rows);
    let kf = spectrum(conv.combined_kernel());
    for (r, mut row) in p.axis_iter_mut(Axis(0)).enumerate() {
        row *= &kf.row(r % h);
    }
    for mut row in p.rows_mut() {
        fft.inverse(row.as_slice_mut().unwrap());
    }
    p.mapv(|v| v.re)
}

fn conv_table(lens: &[usize]) {
    println!("\n### Bidirectional long convolution, f32, H = 16, batch 1, one thread\n");
    println!("| L | old FFT (2L) ms | new FFT (realfft, 2L) ms | old / new | Monarch DFT ms | Monarch / new FFT |");
    println!("|---|---|---|---|---|---|");
    let h = 16;
    for &l in lens {
        let conv = LongConv::<f32>::bidirectional(
            normal_matrix((h, l), 0.1, 1),
            normal_matrix((h, l), 0.1, 2),
            normal_matrix((1, h), 1.0, 3).row(0).to_owned(),
        )
        .unwrap();
        let u = normal_matrix::<f32>((1, h * l), 1.0, 4)
            .into_shape_with_order((1, h, l))
            .unwrap();
        let old = LegacyFft::<f32>::new(2 * l);
        let (fft, mon) = (
            ConvPlan::new(ConvMethod::Fft, l).unwrap(),
            ConvPlan::new(ConvMethod::MonarchDft, l).unwrap(),
        );
        let t_old = secs(|| {
            std::hint::black_box(legacy_conv(&conv, &u, &old));
        });
        let t_new = secs(|| {
            std::hint::black_box(conv.forward_with(u.view(), &fft).unwrap());
        });
        let t_mon = secs(|| {
            std::hint::black_box(conv.forward_with(u.view(), &mon).unwrap());
        });
        println!(
            "| {l} | {:.3} | {:.3} | {:.1}× | {:.3} | {:.1}× |",
            t_old * 1e3,
            t_new * 1e3,
            t_old / t_new,
            t_mon * 1e3,
            t_mon / t_new
        );
    }
}

/// faer's thin SVD of `a`, called directly (sequential, as the crate calls it).
fn faer_svd<T: Scalar, F: faer::traits::ComplexField>(a: &Array2<T>, to: impl Fn(T) -> F) {
    let m = faer::Mat::from_fn(a.nrows(), a.ncols(), |i, j| to(a[[i, j]]));
    std::hint::black_box(m.thin_svd().unwrap());
}

fn svd_row<T: Scalar, F: faer::traits::ComplexField>(
    name: &str,
    n: usize,
    to: impl Fn(T) -> F + Copy,
) where
    T::Real: RealScalar,
{
    let a = normal_matrix::<T>((n, n), 1.0, 7);
    let t_j = secs(|| {
        std::hint::black_box(svd_jacobi(a.view()));
    });
    let t_f = secs(|| faer_svd(&a, to));
    let t_d = secs(|| {
        std::hint::black_box(svd(a.view()));
    });
    println!(
        "| {name} | {n} | {:.4} | {:.4} | {:.2}× | {:.4} |",
        t_j * 1e3,
        t_f * 1e3,
        t_j / t_f,
        t_d * 1e3
    );
}

fn svd_table(real: &[usize], complex: &[usize]) {
    println!("\n### Thin SVD of an n × n Gaussian matrix, one thread\n");
    println!("| scalar | n | Jacobi ms | faer ms | Jacobi / faer | `svd()` (dispatched) ms |");
    println!("|---|---|---|---|---|---|");
    for &n in real {
        svd_row::<f64, f64>("f64", n, |x| x);
    }
    for &n in real {
        svd_row::<f32, f32>("f32", n, |x| x);
    }
    for &n in complex {
        svd_row::<Complex<f64>, faer::c64>("c64", n, |x| faer::c64::new(x.re, x.im));
    }
    for &n in complex {
        svd_row::<Complex<f32>, faer::c32>("c32", n, |x| faer::c32::new(x.re, x.im));
    }
}

fn main() {
    // The crate calls faer sequentially from inside its own rayon loops; the direct calls here
    // do the same, and one thread keeps all three columns comparable.
    faer::set_global_parallelism(faer::Par::Seq);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let quick = has_flag("--quick");
    println!(
        "Measured by `bench_libs` on **{}**, one thread.",
        cpu_model()
    );
    let svd_only = has_flag("--svd");
    pool.install(|| {
        if quick {
            fft_table(&[256, 257]);
            conv_table(&[64]);
            svd_table(&[2, 8, 16, 32], &[4, 16]);
            return;
        }
        if !svd_only {
            fft_table(&[4096, 65536, 4099, 65537]);
            conv_table(&[512, 4096]);
        }
        svd_table(
            &[2, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256, 512],
            &[2, 4, 6, 8, 12, 16, 32, 128],
        );
    });
}
