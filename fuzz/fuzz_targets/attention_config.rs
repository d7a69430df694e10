//! MonarchAttention and exact attention on fuzzer-chosen configurations: sizes (zero included),
//! block sizes (including huge ones), rounds, padding side, scale, masks and values (NaN/Inf
//! included). Every call returns Ok or an Error; an Ok result has the promised shape and, for
//! finite inputs, finite entries; the Monarch attention matrix is row-stochastic over the live
//! keys; and with `b ≥ N` MonarchAttention equals exact softmax attention.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use monarch::attention::{softmax_attention, ExactAttention, MonarchAttention, Padding};
use monarch::ndarray::{Array2, Array4};
use monarch::Par;

fn value(u: &mut Unstructured, wild: bool) -> Result<f64> {
    if wild {
        return Ok(match u.int_in_range(0u8..=9)? {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => f64::from_bits(u.arbitrary()?),
            _ => u.int_in_range(-1000i32..=1000)? as f64 / 100.0,
        });
    }
    Ok(u.int_in_range(-400i32..=400)? as f64 / 100.0)
}

fn array4(
    u: &mut Unstructured,
    d: (usize, usize, usize, usize),
    wild: bool,
) -> Result<Array4<f64>> {
    let mut v = Vec::with_capacity(d.0 * d.1 * d.2 * d.3);
    for _ in 0..d.0 * d.1 * d.2 * d.3 {
        v.push(value(u, wild)?);
    }
    Ok(Array4::from_shape_vec(d, v).unwrap())
}

fn block_size(u: &mut Unstructured) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => usize::MAX - u.int_in_range(0usize..=2)?,
        1 => (1usize << 62) + u.int_in_range(0usize..=2)?,
        2 => 0,
        _ => u.int_in_range(1usize..=12)?,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured) -> Result<()> {
    let wild = u.ratio(1u8, 4u8)?;
    let (b, h) = (u.int_in_range(0usize..=2)?, u.int_in_range(0usize..=2)?);
    let n = u.int_in_range(0usize..=24)?;
    let d = u.int_in_range(0usize..=4)?;
    let dv = u.int_in_range(0usize..=3)?;
    // Occasionally disagreeing sizes, to reach the shape checks.
    let nk = if u.ratio(1u8, 10u8)? { n + 1 } else { n };
    let dk = if u.ratio(1u8, 10u8)? { d + 1 } else { d };
    let q = array4(u, (b, h, n, d), wild)?;
    let k = array4(u, (b, h, nk, dk), wild)?;
    let v = array4(u, (b, h, nk, dv), wild)?;
    let g = array4(u, (b, h, n, dv), wild)?;
    let mask = match u.int_in_range(0u8..=3)? {
        0 | 1 => None,
        2 => {
            let mut m = Array2::from_elem((b, n), true);
            for e in m.iter_mut() {
                *e = u.ratio(3u8, 4u8)?;
            }
            Some(m)
        }
        _ => Some(Array2::from_elem((b, n + 1), true)),
    };
    let bs = block_size(u)?;
    // Rounds: usually 0..=4, sometimes above the cap (up to usize::MAX, which used to run
    // for ever): then every method must refuse.
    let steps = match u.int_in_range(0u8..=15)? {
        0 => usize::MAX - u.int_in_range(0usize..=2)?,
        1 => monarch::attention::MAX_STEPS + u.int_in_range(0usize..=2)?,
        _ => u.int_in_range(0usize..=4)?,
    };
    let mut ma = MonarchAttention::new(bs, steps)
        .padding(if u.arbitrary()? {
            Padding::Pre
        } else {
            Padding::Post
        })
        .par(if u.arbitrary()? { Par::Seq } else { Par::Rayon });
    let scale = if u.arbitrary()? {
        Some(value(u, true)?)
    } else {
        None
    };
    if let Some(s) = scale {
        ma = ma.scale(s);
    }
    let m = mask.as_ref().map(|m| m.view());
    let finite_in = [&q, &k, &v, &g]
        .iter()
        .all(|a| a.iter().all(|x| x.is_finite()))
        && scale.is_none_or(f64::is_finite);
    // Scores that overflow (|scale| near f64::MAX, or |q|, |k| ~ 1e238) are outside the value
    // checks (before the fix they gave all-zero attention rows and non-finite outputs; now both
    // attentions reject them), see docs/fuzzing.md.
    let tame = finite_in
        && scale.is_none_or(|s| s.abs() <= 1e6)
        && [&q, &k, &v]
            .iter()
            .all(|a| a.iter().all(|x| x.abs() <= 1e6));

    let exact = match scale {
        Some(s) => ExactAttention::new()
            .scale(s)
            .forward(q.view(), k.view(), v.view(), m),
        None => softmax_attention(q.view(), k.view(), v.view(), m),
    };
    if let Ok(o) = &exact {
        assert_eq!(o.dim(), (b, h, n, dv));
    }
    let fwd = ma.forward(q.view(), k.view(), v.view(), m);
    if let Ok(o) = &fwd {
        assert_eq!(o.dim(), (b, h, n, dv));
        if tame {
            assert!(
                o.iter().all(|x| x.is_finite()),
                "non-finite output for finite input: N={n}, d={d}, b={bs}, T={steps}, scale={scale:?}, max |q|={:e}, |k|={:e}, |v|={:e}",
                q.iter().fold(0.0f64, |m, x| m.max(x.abs())),
                k.iter().fold(0.0f64, |m, x| m.max(x.abs())),
                v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
            );
        }
    }
    // Ok exactly when the exact attention accepts the same input (same checks), given b, T > 0
    // and self-attention (exact attention also takes N_k ≠ N_q, MonarchAttention does not).
    if steps > monarch::attention::MAX_STEPS {
        assert!(fwd.is_err());
    }
    // Batch or heads 0 (empty batch): an empty result whenever the sizes are otherwise valid.
    if (b == 0 || h == 0) && exact.is_ok() {
        assert_eq!(exact.as_ref().unwrap().len(), 0);
    }
    if bs > 0 && steps > 0 && steps <= monarch::attention::MAX_STEPS && nk == n {
        assert_eq!(fwd.is_ok(), exact.is_ok(), "{fwd:?} vs {exact:?}");
    }
    if let (Ok(o), Ok(e)) = (&fwd, &exact) {
        // b ≥ N: one block holds every token, MonarchAttention is exact softmax attention.
        let big = o.iter().chain(e.iter()).all(|x| x.abs() < 1e100);
        if bs >= n && tame && big {
            for bb in 0..b {
                for hh in 0..h {
                    for i in 0..n {
                        // Masked queries carry an unspecified (finite) row: skip them.
                        if mask.as_ref().is_some_and(|mm| !mm[[bb, i]]) {
                            continue;
                        }
                        for c in 0..dv {
                            let (x, y) = (o[[bb, hh, i, c]], e[[bb, hh, i, c]]);
                            assert!((x - y).abs() <= 1e-9 * (1.0 + y.abs()), "b ≥ N: {x} vs {y}");
                        }
                    }
                }
            }
        }
    }
    let _ = ma.forward_with_objective(q.view(), k.view(), v.view(), m);
    if let Ok(a) = ma.attention_matrix(q.view(), k.view(), m) {
        assert_eq!(a.dim(), (b, h, n, n));
        if tame {
            for bb in 0..b {
                for hh in 0..h {
                    for i in 0..n {
                        let row = a.slice(monarch::ndarray::s![bb, hh, i, ..]);
                        let s: f64 = row.sum();
                        assert!(
                            (s - 1.0).abs() < 1e-9,
                            "row sum {s} at ({bb}, {hh}, {i}); N={n}, b={bs}, T={steps}, mask={mask:?}, scale={scale:?}, row={row:?}"
                        );
                        assert!(row.iter().all(|&x| x >= 0.0));
                        if let Some(mm) = &mask {
                            for j in 0..n {
                                if !mm[[bb, j]] {
                                    assert_eq!(row[j], 0.0, "masked key has weight");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if let Ok(gr) = ma.vjp(q.view(), k.view(), v.view(), m, g.view()) {
        assert_eq!(gr.q.dim(), q.dim());
        assert_eq!(gr.k.dim(), k.dim());
        assert_eq!(gr.v.dim(), v.dim());
    }
    Ok(())
}
