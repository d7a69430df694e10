//! Constructors, products and projection of the core on fuzzer-chosen sizes (small, zero or
//! huge) and values (NaN/Inf included): every call returns Ok or an Error, and an Ok result
//! has the shapes its arguments promise.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use monarch::ndarray::{Array1, Array2, Array3};
use monarch::num_complex::Complex64;
use monarch::{BlockDiag, Monarch, MonarchLinear, Par, Perm};

/// A size: usually small (zero included), sometimes huge enough that every element count
/// built from it overflows, or beyond any memory without overflowing (2^45..2^48: at least
/// 2^47 bytes, the whole x86-64 user address space), so the call must fail before allocating.
fn size(u: &mut Unstructured) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => usize::MAX - u.int_in_range(0usize..=3)?,
        1 => (1usize << 62) + u.int_in_range(0usize..=3)?,
        2 => (1usize << u.int_in_range(45u32..=48)?) + u.int_in_range(0usize..=3)?,
        _ => u.int_in_range(0usize..=9)?,
    })
}

/// True for the sizes that can never be allocated.
fn huge(v: usize) -> bool {
    v >= 1 << 45
}

fn small(u: &mut Unstructured) -> Result<usize> {
    u.int_in_range(0usize..=9)
}

fn value(u: &mut Unstructured) -> Result<f64> {
    Ok(match u.int_in_range(0u8..=9)? {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => f64::from_bits(u.arbitrary()?),
        _ => u.int_in_range(-1000i32..=1000)? as f64 / 100.0,
    })
}

fn array3(u: &mut Unstructured) -> Result<Array3<f64>> {
    let d = (small(u)? % 5, small(u)? % 5, small(u)? % 5);
    let mut v = Vec::with_capacity(d.0 * d.1 * d.2);
    for _ in 0..d.0 * d.1 * d.2 {
        v.push(value(u)?);
    }
    Ok(Array3::from_shape_vec(d, v).unwrap())
}

fn array2(u: &mut Unstructured, rows: usize, cols: usize) -> Result<Array2<f64>> {
    let mut v = Vec::with_capacity(rows * cols);
    for _ in 0..rows * cols {
        v.push(value(u)?);
    }
    Ok(Array2::from_shape_vec((rows, cols), v).unwrap())
}

fn exercise(u: &mut Unstructured, m: &Monarch<f64>) -> Result<()> {
    let batch = small(u)? % 4;
    let cols = if u.arbitrary()? {
        m.in_features()
    } else {
        small(u)?
    };
    let x = array2(u, batch, cols)?;
    let gcols = if u.arbitrary()? {
        m.out_features()
    } else {
        small(u)?
    };
    let g = array2(u, batch, gcols)?;
    match m.matmul(x.view()) {
        Ok(y) => assert_eq!(y.dim(), (batch, m.out_features())),
        Err(_) => assert_ne!(cols, m.in_features()),
    }
    let mut out = Array2::zeros((batch, gcols));
    let _ = m.matmul_into(x.view(), out.view_mut(), Par::Rayon);
    if let Ok(v) = m.vjp(x.view(), g.view()) {
        assert_eq!(v.x.dim(), x.dim());
        assert_eq!(v.w1.dim(), m.w1().dim());
        assert_eq!(v.w2.dim(), m.w2().dim());
    }
    let t = m.transpose();
    assert_eq!(t.in_features(), m.out_features());
    let _ = t.matmul(g.view());
    Ok(())
}

fn run(u: &mut Unstructured) -> Result<()> {
    match u.int_in_range(0u8..=11)? {
        0 => {
            let (w1, w2) = (array3(u)?, array3(u)?);
            if let Ok(m) = Monarch::from_factors(w1, w2) {
                exercise(u, &m)?;
            }
        }
        1 => {
            let (n, nb) = (size(u)?, size(u)?);
            if huge(n) {
                assert!(Monarch::<f64>::random(n, nb, 0).is_err());
            }
            if let Ok(m) = Monarch::<f64>::random(n, nb, u.arbitrary()?) {
                assert_eq!(m.in_features(), n);
                exercise(u, &m)?;
            }
            if let Ok(m) = Monarch::<f64>::identity(n, nb) {
                exercise(u, &m)?;
            }
        }
        2 => {
            let w1 = (size(u)?, size(u)?, size(u)?);
            let w2 = (size(u)?, size(u)?, size(u)?);
            if let Ok(m) = Monarch::<f64>::random_factors(w1, w2, u.arbitrary()?) {
                exercise(u, &m)?;
            }
        }
        9 => {
            // Stride permutations and k-factor chains in both layouts.
            let (a, b) = (size(u)?, size(u)?);
            match Perm::stride(a, b) {
                Ok(p) => assert_eq!(Some(p.len()), a.checked_mul(b)),
                Err(_) => assert!(huge(a) || huge(b)),
            }
            let k = 2 + small(u)? % 3;
            let mut shapes = Vec::new();
            for _ in 0..k {
                shapes.push((size(u)?, size(u)?, size(u)?));
            }
            let _ = monarch::circuit::MonarchChain::<f64>::random(&shapes, u.arbitrary()?);
            // Square factors of b^(k-1) blocks of b × b: always chain.
            let bs = 1 + small(u)? % 3;
            let nb = bs.pow(k as u32 - 1);
            let ws: Vec<Array3<f64>> = (0..k)
                .map(|_| Array3::from_shape_fn((nb, bs, bs), |(a, i, j)| (a + i * 2 + j) as f64))
                .collect();
            let c = monarch::circuit::MonarchChain::from_factors_hmm(ws).unwrap();
            let rows = small(u)? % 3;
            let x = array2(u, rows, nb * bs)?;
            assert_eq!(c.matmul(x.view()).unwrap().nrows(), x.nrows());
        }
        10 => {
            // Projection of a matrix scaled to the ends of the float range: Ok must be finite.
            let (rows, cols) = (1 + small(u)?, 1 + small(u)?);
            let mut a = array2(u, rows, cols)?;
            let e = u.int_in_range(-320i32..=308)?;
            a.mapv_inplace(|v| v * 10f64.powi(e));
            let (k, l) = (1 + small(u)? % 3, 1 + small(u)? % 3);
            if let Ok(p) = Monarch::project_with_error(a.view(), k, l, 1) {
                assert!(p.error.is_finite() && p.relative_error.is_finite(), "{p:?}");
                assert!(p
                    .monarch
                    .w1()
                    .iter()
                    .chain(p.monarch.w2())
                    .all(|v| v.is_finite()));
            }
        }
        11 => {
            // Empty batches: an empty result of the right width.
            let m = Monarch::<f64>::random(16, 4, u.arbitrary()?).unwrap();
            let x = Array2::<f64>::zeros((0, 16));
            assert_eq!(m.matmul(x.view()).unwrap().dim(), (0, 16));
            let (i, o, nb) = (1 + small(u)?, 1 + small(u)?, 1 + small(u)?);
            let l = MonarchLinear::<f64>::new(i, o, nb, u.arbitrary()?, 0).unwrap();
            assert_eq!(
                l.forward(Array2::zeros((0, i)).view()).unwrap().dim(),
                (0, o)
            );
        }
        3 => {
            let (rows, cols) = (small(u)? + small(u)?, small(u)? + small(u)?);
            let a = array2(u, rows, cols)?;
            let (k, l, r) = (size(u)?, size(u)?, size(u)?);
            if let Ok(p) = Monarch::project_with_error(a.view(), k, l, r) {
                assert!(a.iter().all(|v| v.is_finite()));
                assert_eq!(
                    (p.monarch.out_features(), p.monarch.in_features()),
                    (rows, cols)
                );
                assert!(!(p.error < 0.0));
            }
        }
        4 => {
            let (n, k, p, inv) = (size(u)?, size(u)?, size(u)?, u.arbitrary()?);
            let _ = Monarch::<Complex64>::dft(n);
            let _ = Monarch::<Complex64>::dft_natural(n);
            let _ = Monarch::<Complex64>::dft_factored(k, p, inv);
            let _ = Monarch::<Complex64>::dft_natural_factored(n, k, inv);
            let _ = Monarch::<Complex64>::dft_input_perm(k, p);
        }
        5 => {
            let (i, o, nb, bias) = (size(u)?, size(u)?, size(u)?, u.arbitrary()?);
            if let Ok(l) = MonarchLinear::<f64>::new(i, o, nb, bias, u.arbitrary()?) {
                let batch = small(u)? % 3;
                let x = array2(u, batch, i)?;
                assert_eq!(l.forward(x.view()).unwrap().dim(), (batch, o));
                let g = array2(u, batch, o)?;
                assert!(l.vjp(x.view(), g.view()).is_ok());
            }
        }
        6 => {
            let (i, o) = (small(u)? * 3, small(u)? * 3);
            let (w1, w2) = (array3(u)?, array3(u)?);
            let b = if u.arbitrary()? {
                Some(Array1::zeros(small(u)? * 3))
            } else {
                None
            };
            if let Ok(l) = MonarchLinear::from_weights(i, o, w1, w2, b) {
                let x = array2(u, 1, i)?;
                assert_eq!(l.forward(x.view()).unwrap().dim(), (1, o));
            }
        }
        7 => {
            let len = small(u)?;
            let mut idx = Vec::with_capacity(len);
            for _ in 0..len {
                idx.push(if u.arbitrary()? {
                    small(u)?
                } else {
                    u.arbitrary()?
                });
            }
            if let Ok(p) = Perm::from_index(idx) {
                assert!(p.compose(&p.inverse()).is_identity());
                let q = Perm::random(small(u)?, u.arbitrary()?);
                assert_eq!(p.try_compose(&q).is_ok(), p.len() == q.len());
            }
        }
        _ => {
            let w = array3(u)?;
            if let Ok(b) = BlockDiag::new(w) {
                let batch = small(u)? % 3;
                let cols = if u.arbitrary()? {
                    b.in_features()
                } else {
                    small(u)?
                };
                let x = array2(u, batch, cols)?;
                let _ = b.matmul(x.view());
                let g = array2(u, batch, b.out_features())?;
                let _ = b.vjp(x.view(), g.view());
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});
